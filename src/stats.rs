//! Per-target statistics kept during `soak` (DESIGN §7): exact counts, HdrHistogram latency
//! distributions, the episode list and per-backend verdicts. The daemon does not keep them:
//! Prometheus histograms serve it, and a canary that runs for months must not grow.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::backend::Identity;
use crate::classify::ResultKind;
use crate::clock::Clock;
use crate::config::Slo;
use crate::episode::Ended;
use crate::ledger::Verdict;
use crate::op::{Kind, Op, Outcome};

/// Episodes kept per target; past this only a count is kept (DESIGN §7).
pub const MAX_EPISODES: usize = 1000;

/// Highest latency recorded exactly, in µs: one hour, far beyond any retry budget.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One ended episode, as reported.
#[derive(Clone, Debug)]
pub struct EpisodeRecord {
    pub start_unix_us: u64,
    pub end_unix_us: u64,
    pub duration_seconds: f64,
    pub results: BTreeMap<ResultKind, u64>,
}

/// Counts and distributions of one op.
#[derive(Debug)]
pub struct OpStats {
    pub outcomes: [u64; 3],
    pub skipped: u64,
    pub attempts: BTreeMap<ResultKind, u64>,
    pub operation_us: Histogram<u64>,
    pub attempt_us: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        let h = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        OpStats {
            outcomes: [0; 3],
            skipped: 0,
            attempts: ResultKind::ALL.iter().map(|r| (*r, 0)).collect(),
            operation_us: h(),
            attempt_us: h(),
        }
    }

    /// Operations scheduled: finished ones plus skipped ticks.
    pub fn total(&self) -> u64 {
        self.outcomes.iter().sum::<u64>() + self.skipped
    }

    /// (ok + recovered) / all, skipped ticks included; `None` when nothing was scheduled.
    pub fn availability(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| (self.outcomes[0] + self.outcomes[1]) as f64 / total as f64)
    }
}

/// Everything `soak` reports about one target.
#[derive(Debug)]
pub struct Stats {
    pub slo: Slo,
    pub ops: [OpStats; 3],
    pub reads: BTreeMap<Verdict, u64>,
    pub reads_by_backend: BTreeMap<String, BTreeMap<Verdict, u64>>,
    pub episodes: Vec<EpisodeRecord>,
    pub episodes_dropped: u64,
    /// Connects per kind (pool, probe, node) and result: failures behind a proxy show up
    /// here rather than as attempts.
    pub connects: BTreeMap<(Kind, ResultKind), u64>,
    /// Per direct node: replication delays, and how many writes never showed in time.
    pub replication: BTreeMap<String, (Histogram<u64>, u64)>,
}

impl Stats {
    /// Empty statistics, judged later against `slo`.
    pub fn new(slo: &Slo) -> Stats {
        Stats {
            slo: slo.clone(),
            ops: [OpStats::new(), OpStats::new(), OpStats::new()],
            reads: Verdict::ALL.iter().map(|v| (*v, 0)).collect(),
            reads_by_backend: BTreeMap::new(),
            episodes: Vec::new(),
            episodes_dropped: 0,
            replication: BTreeMap::new(),
            connects: BTreeMap::new(),
        }
    }

    pub fn attempt(&mut self, op: Op, result: ResultKind, took: Duration) {
        let s = &mut self.ops[op.index()];
        *s.attempts.entry(result).or_default() += 1;
        s.attempt_us.saturating_record(took.as_micros() as u64);
    }

    pub fn operation(&mut self, op: Op, outcome: Outcome, took: Duration) {
        let s = &mut self.ops[op.index()];
        s.outcomes[outcome as usize] += 1;
        s.operation_us.saturating_record(took.as_micros() as u64);
    }

    pub fn connect(&mut self, kind: Kind, result: ResultKind) {
        *self.connects.entry((kind, result)).or_default() += 1;
    }

    pub fn skipped(&mut self, op: Op) {
        self.ops[op.index()].skipped += 1;
    }

    pub fn verdict(&mut self, verdict: Verdict, backend: Option<&Identity>) {
        *self.reads.entry(verdict).or_default() += 1;
        let key = backend.map_or(
            "unknown",
            |b| {
                if b.is_known() { &b.run_id } else { &b.addr }
            },
        );
        // Bounded: run_ids are validated and backends per target are few.
        if self.reads_by_backend.len() < 64 || self.reads_by_backend.contains_key(key) {
            *self
                .reads_by_backend
                .entry(key.to_string())
                .or_default()
                .entry(verdict)
                .or_default() += 1;
        }
    }

    /// A followed write became visible on `node` after `delay`, or (`None`) did not in time.
    pub fn replication(&mut self, node: &str, delay: Option<Duration>) {
        let entry = self.replication.entry(node.to_string()).or_insert_with(|| {
            (
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
                0,
            )
        });
        match delay {
            Some(d) => entry.0.saturating_record(d.as_micros() as u64),
            None => entry.1 += 1,
        }
    }

    pub fn episode(&mut self, clock: &Clock, e: &Ended) {
        if self.episodes.len() >= MAX_EPISODES {
            self.episodes_dropped += 1;
            return;
        }
        self.episodes.push(EpisodeRecord {
            start_unix_us: clock.unix_us(e.start_us),
            end_unix_us: clock.unix_us(e.end_us),
            duration_seconds: e.duration_secs(),
            results: e.nonzero_results().collect(),
        });
    }
}
