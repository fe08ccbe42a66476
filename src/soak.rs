//! The `soak` mode (DESIGN §3, §7): run the workload for a fixed time, then judge every
//! target against its `[slo]`, print a human summary and write the versioned JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::canary::TargetState;
use crate::classify::ResultKind;
use crate::http::format_unix;
use crate::ledger::Verdict;
use crate::op::{Op, Outcome};
use crate::stats::{EpisodeRecord, OpStats, Stats};

/// Version of the report layout; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

/// One SLO judgement.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub name: &'static str,
    pub threshold: f64,
    pub measured: f64,
    pub pass: bool,
}

/// Judges and reports a finished soak.
pub struct Report {
    pub json: Value,
    pub summary: String,
    pub pass: bool,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "p50": null, "p90": null, "p99": null, "p99_9": null, "max": null });
    }
    json!({
        "p50": secs(h.value_at_quantile(0.5)),
        "p90": secs(h.value_at_quantile(0.9)),
        "p99": secs(h.value_at_quantile(0.99)),
        "p99_9": secs(h.value_at_quantile(0.999)),
        "max": secs(h.max()),
    })
}

const OPS: [Op; 3] = [Op::Write, Op::Read, Op::Probe];

fn judge(stats: &Stats) -> Vec<Judgement> {
    let slo = &stats.slo;
    let (good, total, failed) = stats.ops.iter().fold((0, 0, 0), |(g, t, f), o: &OpStats| {
        (
            g + o.outcomes[Outcome::Ok as usize] + o.outcomes[Outcome::Recovered as usize],
            t + o.total(),
            f + o.outcomes[Outcome::Failed as usize],
        )
    });
    let availability = if total == 0 {
        0.0
    } else {
        good as f64 / total as f64
    };
    let longest = stats
        .episodes
        .iter()
        .map(|e| e.duration_seconds)
        .fold(0.0, f64::max);
    let p99 = stats
        .ops
        .iter()
        .filter(|o| !o.operation_us.is_empty())
        .map(|o| secs(o.operation_us.value_at_quantile(0.99)))
        .fold(0.0, f64::max);
    let reads = |v: Verdict| stats.reads.get(&v).copied().unwrap_or(0) as f64;
    let at_most = |name, threshold: f64, measured: f64| Judgement {
        name,
        threshold,
        measured,
        pass: measured <= threshold,
    };
    vec![
        Judgement {
            name: "min_availability",
            threshold: slo.min_availability,
            measured: availability,
            // No operation at all is not availability.
            pass: total > 0 && availability >= slo.min_availability,
        },
        at_most(
            "max_failed_operations",
            slo.max_failed_operations as f64,
            failed as f64,
        ),
        at_most("max_disruption", slo.max_disruption.as_secs_f64(), longest),
        at_most(
            "max_stale_reads",
            slo.max_stale_reads as f64,
            reads(Verdict::Stale),
        ),
        at_most(
            "max_missing_reads",
            slo.max_missing_reads as f64,
            reads(Verdict::Missing),
        ),
        at_most(
            "max_corrupt_reads",
            slo.max_corrupt_reads as f64,
            reads(Verdict::Corrupt),
        ),
        at_most("p99_operation", slo.p99_operation.as_secs_f64(), p99),
    ]
}

fn episode_json(e: &EpisodeRecord) -> Value {
    json!({
        "start": format_unix(secs(e.start_unix_us)),
        "end": format_unix(secs(e.end_unix_us)),
        "duration_seconds": e.duration_seconds,
        "results": e.results.iter().map(|(r, n)| (r.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Builds the report of a soak that ran from `started_unix` to `ended_unix`.
pub fn report(
    targets: &[Arc<TargetState>],
    started_unix: f64,
    ended_unix: f64,
    interrupted: bool,
) -> Report {
    let mut all_pass = !interrupted;
    let mut target_reports = Vec::new();
    let mut summary = String::new();
    for t in targets {
        let Some(stats) = &t.stats else { continue };
        let stats = stats.lock().unwrap_or_else(|p| p.into_inner());
        let judgements = judge(&stats);
        let pass = judgements.iter().all(|j| j.pass);
        all_pass &= pass;
        let per_op = |f: &dyn Fn(&OpStats) -> Value| {
            OPS.iter()
                .map(|op| (op.as_str().to_string(), f(&stats.ops[op.index()])))
                .collect::<serde_json::Map<_, _>>()
        };
        let mut availability = per_op(&|o| json!(o.availability()));
        let (good, total) = stats.ops.iter().fold((0u64, 0u64), |(g, t), o| {
            (g + o.outcomes[0] + o.outcomes[1], t + o.total())
        });
        availability.insert(
            "all".into(),
            json!((total > 0).then(|| good as f64 / total as f64)),
        );
        let backends: Vec<Value> = t
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .history()
            .iter()
            .map(|b| {
                json!({
                    "run_id": b.identity.run_id, "role": b.identity.role,
                    "version": b.identity.version, "addr": b.identity.addr,
                    "first_seen": format_unix(t.clock.unix_secs(b.first_seen_us)),
                    "last_seen": format_unix(t.clock.unix_secs(b.last_seen_us)),
                })
            })
            .collect();
        target_reports.push(json!({
            "name": t.name,
            "pass": pass,
            "availability": availability,
            "operations": per_op(&|o| json!({
                "ok": o.outcomes[0], "recovered": o.outcomes[1],
                "failed": o.outcomes[2], "skipped": o.skipped,
            })),
            "attempts": per_op(&|o| json!(o.attempts.iter()
                .map(|(r, n)| (r.as_str().to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>())),
            "latency_seconds": {
                "operation": per_op(&|o| percentiles(&o.operation_us)),
                "attempt": per_op(&|o| percentiles(&o.attempt_us)),
            },
            "episodes": stats.episodes.iter().map(episode_json).collect::<Vec<_>>(),
            "episodes_dropped": stats.episodes_dropped,
            "reads": verdicts_json(&stats.reads),
            "reads_by_backend": stats.reads_by_backend.iter()
                .map(|(b, v)| (b.clone(), verdicts_json(v)))
                .collect::<serde_json::Map<_, _>>(),
            "connects": crate::op::Kind::ALL.iter().map(|k| {
                let by_result = stats.connects.iter()
                    .filter(|((kind, _), _)| kind == k)
                    .map(|((_, r), n)| (r.as_str().to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>();
                (k.as_str().to_string(), Value::Object(by_result))
            }).collect::<serde_json::Map<_, _>>(),
            "replication": stats.replication.iter().map(|(node, (h, timeouts))| {
                let q = |q: f64| (!h.is_empty()).then(|| secs(h.value_at_quantile(q)));
                (node.clone(), json!({
                    "p50": q(0.5), "p99": q(0.99), "max": (!h.is_empty()).then(|| secs(h.max())),
                    "timeouts": timeouts,
                }))
            }).collect::<serde_json::Map<_, _>>(),
            "backends": backends,
            "slo": judgements.iter().map(|j| json!({
                "name": j.name, "threshold": j.threshold, "measured": j.measured, "pass": j.pass,
            })).collect::<Vec<_>>(),
        }));
        write_summary(&mut summary, &t.name, &stats, &judgements, pass);
    }
    let json = json!({
        "schema": SCHEMA,
        "started_at": format_unix(started_unix),
        "ended_at": format_unix(ended_unix),
        "duration_seconds": ended_unix - started_unix,
        "interrupted": interrupted,
        "pass": all_pass,
        "targets": target_reports,
    });
    let _ = writeln!(
        summary,
        "\nverdict: {}{}",
        if all_pass { "PASS" } else { "FAIL" },
        if interrupted { " (interrupted)" } else { "" }
    );
    Report {
        json,
        summary,
        pass: all_pass,
    }
}

fn verdicts_json(v: &BTreeMap<Verdict, u64>) -> Value {
    Value::Object(
        Verdict::ALL
            .iter()
            .map(|k| {
                (
                    k.as_str().to_string(),
                    json!(v.get(k).copied().unwrap_or(0)),
                )
            })
            .collect(),
    )
}

fn write_summary(out: &mut String, name: &str, s: &Stats, judgements: &[Judgement], pass: bool) {
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    let _ = writeln!(
        out,
        "\n== target {name}: {} ==",
        if pass { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(
        out,
        "{:<6} {:>9} {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}",
        "op",
        "avail",
        "ok",
        "recovered",
        "failed",
        "skipped",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for op in OPS {
        let o = &s.ops[op.index()];
        if o.total() == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<6} {:>8.4}% {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}",
            op.as_str(),
            o.availability().unwrap_or(0.0) * 100.0,
            o.outcomes[0],
            o.outcomes[1],
            o.outcomes[2],
            o.skipped,
            ms(&o.operation_us, 0.5),
            ms(&o.operation_us, 0.99),
            ms(&o.operation_us, 0.999),
            ms(&o.operation_us, 1.0),
        );
    }
    let failed_attempts: Vec<String> = s
        .ops
        .iter()
        .flat_map(|o| o.attempts.iter())
        .filter(|(r, n)| **r != ResultKind::Ok && **n > 0)
        .fold(BTreeMap::<ResultKind, u64>::new(), |mut acc, (r, n)| {
            *acc.entry(*r).or_default() += n;
            acc
        })
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "failed attempts: {}",
        if failed_attempts.is_empty() {
            "none".into()
        } else {
            failed_attempts.join(" ")
        }
    );
    let failed_connects: Vec<String> = s
        .connects
        .iter()
        .filter(|((_, r), _)| *r != ResultKind::Ok)
        .map(|((k, r), n)| format!("{k}/{r}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "failed connects: {}",
        if failed_connects.is_empty() {
            "none".into()
        } else {
            failed_connects.join(" ")
        }
    );
    let verdicts: Vec<String> = s
        .reads
        .iter()
        .map(|(v, n)| format!("{}={n}", v.as_str()))
        .collect();
    let _ = writeln!(out, "reads: {}", verdicts.join(" "));
    let _ = writeln!(
        out,
        "disruption episodes: {}{}",
        s.episodes.len(),
        if s.episodes_dropped > 0 {
            format!(" (+{} not kept)", s.episodes_dropped)
        } else {
            String::new()
        }
    );
    for e in &s.episodes {
        let results: Vec<String> = e.results.iter().map(|(r, n)| format!("{r}={n}")).collect();
        let _ = writeln!(
            out,
            "  {} -> {}  {:>8.3} s  {}",
            format_unix(secs(e.start_unix_us)),
            format_unix(secs(e.end_unix_us)),
            e.duration_seconds,
            results.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12}  result",
        "slo", "threshold", "measured"
    );
    for j in judgements {
        let _ = writeln!(
            out,
            "{:<22} {:>12.4} {:>12.4}  {}",
            j.name,
            j.threshold,
            j.measured,
            if j.pass { "pass" } else { "FAIL" }
        );
    }
}
