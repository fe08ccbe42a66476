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

/// Backends whose read verdicts are counted apart per target; past this a read still counts
/// in `reads` and in [`Stats::reads_by_backend_dropped`]. Run_ids are validated and a target
/// has a handful of backends, so 64 is reached only by a restart loop.
pub const MAX_READ_BACKENDS: usize = 64;

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

    /// Operations that succeeded, at once or after retries.
    pub fn good(&self) -> u64 {
        self.outcomes[Outcome::Ok as usize] + self.outcomes[Outcome::Recovered as usize]
    }

    /// Operations that failed after their retries.
    pub fn failed(&self) -> u64 {
        self.outcomes[Outcome::Failed as usize]
    }

    /// Operations scheduled: finished ones plus skipped ticks.
    pub fn total(&self) -> u64 {
        self.outcomes.iter().sum::<u64>() + self.skipped
    }

    /// (ok + recovered) / all, skipped ticks included; `None` when nothing was scheduled.
    pub fn availability(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.good() as f64 / total as f64)
    }
}

/// Everything `soak` reports about one target.
#[derive(Debug)]
pub struct Stats {
    pub slo: Slo,
    pub ops: [OpStats; 3],
    pub reads: BTreeMap<Verdict, u64>,
    pub reads_by_backend: BTreeMap<String, BTreeMap<Verdict, u64>>,
    /// Reads not counted in `reads_by_backend` because [`MAX_READ_BACKENDS`] were known.
    pub reads_by_backend_dropped: u64,
    /// The first [`MAX_EPISODES`] episodes.
    pub episodes: Vec<EpisodeRecord>,
    /// Episodes past [`MAX_EPISODES`], counted but not kept.
    pub episodes_dropped: u64,
    /// The longest episode of the run, kept or not: what `max_disruption` is judged on.
    pub longest_episode_seconds: f64,
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
            reads_by_backend_dropped: 0,
            episodes: Vec::new(),
            episodes_dropped: 0,
            longest_episode_seconds: 0.0,
            replication: BTreeMap::new(),
            connects: BTreeMap::new(),
        }
    }

    /// Operations of every op: (succeeded, scheduled, failed), skipped ticks included in
    /// the scheduled ones.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.ops.iter().fold((0, 0, 0), |(g, t, f), o| {
            (g + o.good(), t + o.total(), f + o.failed())
        })
    }

    /// (ok + recovered) / all operations of every op, skipped ticks included; `None` when
    /// nothing was scheduled.
    pub fn availability(&self) -> Option<f64> {
        let (good, total, _) = self.totals();
        (total > 0).then(|| good as f64 / total as f64)
    }

    /// One attempt of `op` ended with `result` after `took`.
    pub fn attempt(&mut self, op: Op, result: ResultKind, took: Duration) {
        let s = &mut self.ops[op.index()];
        *s.attempts.entry(result).or_default() += 1;
        s.attempt_us.saturating_record(took.as_micros() as u64);
    }

    /// One operation of `op` ended with `outcome`, `took` after its scheduled start.
    pub fn operation(&mut self, op: Op, outcome: Outcome, took: Duration) {
        let s = &mut self.ops[op.index()];
        s.outcomes[outcome as usize] += 1;
        s.operation_us.saturating_record(took.as_micros() as u64);
    }

    /// One connect of `kind` ended with `result`.
    pub fn connect(&mut self, kind: Kind, result: ResultKind) {
        *self.connects.entry((kind, result)).or_default() += 1;
    }

    /// A tick of `op` was skipped: an operation that never ran, counted as unavailable.
    pub fn skipped(&mut self, op: Op) {
        self.ops[op.index()].skipped += 1;
    }

    /// A read (or probe) got `verdict` from `backend`; counted per backend up to
    /// [`MAX_READ_BACKENDS`] backends.
    pub fn verdict(&mut self, verdict: Verdict, backend: Option<&Identity>) {
        *self.reads.entry(verdict).or_default() += 1;
        let key = backend.map_or(
            "unknown",
            |b| {
                if b.is_known() { &b.run_id } else { &b.addr }
            },
        );
        if let Some(counts) = self.reads_by_backend.get_mut(key) {
            *counts.entry(verdict).or_default() += 1;
        } else if self.reads_by_backend.len() < MAX_READ_BACKENDS {
            let counts = self.reads_by_backend.entry(key.to_string()).or_default();
            *counts.entry(verdict).or_default() += 1;
        } else {
            self.reads_by_backend_dropped += 1;
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

    /// An episode ended. Only the first [`MAX_EPISODES`] are kept, but the longest of all
    /// is remembered, so an outage late in a flapping run still fails `max_disruption`.
    pub fn episode(&mut self, clock: &Clock, e: &Ended) {
        self.longest_episode_seconds = self.longest_episode_seconds.max(e.duration_secs());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(start_us: u64, end_us: u64) -> Ended {
        let mut results = [0; ResultKind::ALL.len()];
        results[1] = 1;
        Ended {
            start_us,
            end_us,
            results,
        }
    }

    #[test]
    fn the_longest_episode_is_remembered_past_the_kept_ones() {
        let clock = Clock::new();
        let mut s = Stats::new(&Slo::default());
        for i in 0..MAX_EPISODES as u64 {
            s.episode(&clock, &ended(i * 1_000_000, i * 1_000_000 + 1_000));
        }
        // The 1,001st episode is not kept, but it is the longest: 7 s.
        s.episode(&clock, &ended(5_000_000_000, 5_007_000_000));
        s.episode(&clock, &ended(6_000_000_000, 6_000_002_000));
        assert_eq!(s.episodes.len(), MAX_EPISODES);
        assert_eq!(s.episodes_dropped, 2);
        assert_eq!(s.longest_episode_seconds, 7.0);
        assert!(s.episodes.iter().all(|e| e.duration_seconds < 0.01));
    }

    #[test]
    fn reads_past_the_backend_cap_are_counted_as_dropped() {
        let mut s = Stats::new(&Slo::default());
        let backend = |i: usize| Identity {
            run_id: format!("{i:040x}"),
            ..Identity::default()
        };
        for i in 0..MAX_READ_BACKENDS + 3 {
            s.verdict(Verdict::Fresh, Some(&backend(i)));
        }
        // A known backend still counts once the cap is reached.
        s.verdict(Verdict::Stale, Some(&backend(0)));
        s.verdict(Verdict::Fresh, None);
        assert_eq!(s.reads_by_backend.len(), MAX_READ_BACKENDS);
        assert_eq!(s.reads_by_backend_dropped, 4);
        assert_eq!(s.reads_by_backend[&backend(0).run_id][&Verdict::Stale], 1);
        assert_eq!(s.reads[&Verdict::Fresh], MAX_READ_BACKENDS as u64 + 4);
    }

    #[test]
    fn availability_counts_skipped_ticks_as_unavailable() {
        let mut s = Stats::new(&Slo::default());
        assert_eq!(s.availability(), None);
        s.operation(Op::Write, Outcome::Ok, Duration::from_millis(1));
        s.operation(Op::Read, Outcome::Recovered, Duration::from_millis(1));
        s.operation(Op::Read, Outcome::Failed, Duration::from_millis(1));
        s.skipped(Op::Probe);
        assert_eq!(s.totals(), (2, 4, 1));
        assert_eq!(s.availability(), Some(0.5));
        assert_eq!(s.ops[Op::Probe.index()].availability(), Some(0.0));
    }
}
