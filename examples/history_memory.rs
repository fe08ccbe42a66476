//! Memory of the status history (DESIGN §13) at 1,000 targets: resident memory before and
//! after creating 1,000 [`History`] values and filling every ring slot and episode, and the
//! cost of recording one operation. Run: `cargo run --release --example history_memory`.

use std::time::{Duration, Instant};

use redis_canary::classify::ResultKind;
use redis_canary::episode::Ended;
use redis_canary::history::History;
use redis_canary::ledger::Verdict;
use redis_canary::op::Outcome;

const TARGETS: usize = 1000;

/// Resident set size in bytes, from /proc/self/statm (pages of 4 KiB).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let before = rss();
    let mut all: Vec<History> = (0..TARGETS).map(|_| History::new()).collect();
    // Two hours of one operation and one verdict a second, and an episode every 100 s:
    // every slot of both rings and every episode slot has been written.
    let mut results = [0u64; ResultKind::ALL.len()];
    results[2] = 5;
    for h in &mut all {
        for sec in 0..7200u64 {
            let now = sec * 1_000_000;
            h.operation(now, Outcome::Ok, Duration::from_micros(300 + sec % 900));
            h.verdict(now, Verdict::Fresh);
            if sec % 100 == 99 {
                h.episode_ended(&Ended {
                    start_us: now - 500_000,
                    end_us: now,
                    results,
                });
            }
        }
    }
    let after = rss();
    let per_target = all[0].memory_bytes();
    println!(
        "targets={TARGETS} history_bytes_per_target={per_target} computed_total_bytes={} \
         rss_before={before} rss_after={after} rss_delta_bytes={} rss_delta_per_target={}",
        per_target * TARGETS,
        after.saturating_sub(before),
        after.saturating_sub(before) / TARGETS as u64
    );
    // Cost of one record on the measuring path (lock not included).
    let h = &mut all[0];
    let n = 5_000_000u64;
    let start = Instant::now();
    for i in 0..n {
        h.operation(
            7_200_000_000 + i * 200,
            Outcome::Ok,
            Duration::from_micros(100 + i % 5000),
        );
    }
    let per_op = start.elapsed().as_nanos() as f64 / n as f64;
    println!("record_operation_ns={per_op:.1}");
}
