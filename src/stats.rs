//! Per-target statistics kept during `soak` (DESIGN §7): exact counts, HdrHistogram latency
//! distributions, the episode list, per-backend verdicts, and a run-long [`RunSeries`] of
//! per-interval aggregates for the charts of the HTML report (DESIGN §13). The daemon does
//! not keep them: Prometheus histograms serve it, and a canary that runs for months must not
//! grow.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::backend::Identity;
use crate::classify::ResultKind;
use crate::clock::Clock;
use crate::config::Slo;
use crate::episode::Ended;
use crate::history::Interval;
use crate::ledger::Verdict;
use crate::op::{Kind, Op, Outcome};

/// Episodes kept per target; past this only a count is kept (DESIGN §7).
pub const MAX_EPISODES: usize = 1000;

/// Backends whose read verdicts are counted apart per target; past this a read still counts
/// in `reads` and in [`Stats::reads_by_backend_dropped`]. Run_ids are validated and a target
/// has a handful of backends, so 64 is reached only by a restart loop.
pub const MAX_READ_BACKENDS: usize = 64;

/// Most intervals the run-long series keeps per target. When one more would be needed,
/// neighbours are merged in pairs and the interval doubles: a 24 h soak ends with 1,350
/// intervals of 64 s, about 250 KiB per target, and a chart of 1,500 points still resolves
/// single pixels at the report's width.
pub const MAX_SERIES_INTERVALS: usize = 1500;

/// The first interval of the run-long series: one second, like the status page's fine ring,
/// so a short soak shows an outage to the second.
pub const SERIES_FIRST_INTERVAL_US: u64 = 1_000_000;

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
    /// Operations, latency, verdicts and disruption per interval over the whole run.
    pub series: RunSeries,
    /// The clock the series is timed with (the target's).
    clock: Clock,
}

impl Stats {
    /// Empty statistics, judged later against `slo`, timed on a clock started now.
    pub fn new(slo: &Slo) -> Stats {
        Stats::with_clock(slo, Clock::new())
    }

    /// Empty statistics on the target's `clock`: the series starts at the current second.
    pub fn with_clock(slo: &Slo, clock: Clock) -> Stats {
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
            series: RunSeries::new(clock.unix_us(clock.now_us())),
            clock,
        }
    }

    fn now_unix_us(&self) -> u64 {
        self.clock.unix_us(self.clock.now_us())
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
        let now = self.now_unix_us();
        self.series.at(now).operation(outcome, took);
    }

    /// One connect of `kind` ended with `result`.
    pub fn connect(&mut self, kind: Kind, result: ResultKind) {
        *self.connects.entry((kind, result)).or_default() += 1;
    }

    /// A tick of `op` was skipped: an operation that never ran, counted as unavailable.
    pub fn skipped(&mut self, op: Op) {
        self.ops[op.index()].skipped += 1;
        let now = self.now_unix_us();
        self.series.at(now).skip();
    }

    /// A read (or probe) got `verdict` from `backend`; counted per backend up to
    /// [`MAX_READ_BACKENDS`] backends.
    pub fn verdict(&mut self, verdict: Verdict, backend: Option<&Identity>) {
        *self.reads.entry(verdict).or_default() += 1;
        let now = self.now_unix_us();
        self.series.at(now).verdict(verdict);
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
        self.series
            .disrupted(clock.unix_us(e.start_us), clock.unix_us(e.end_us));
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

/// Per-interval aggregates of one target over a whole soak ([`Interval`]: operations by
/// outcome, skipped ticks, read verdicts, disruption, a latency sketch), in bounded memory:
/// intervals start at [`SERIES_FIRST_INTERVAL_US`] and double, merging neighbours, whenever
/// the run would need more than [`MAX_SERIES_INTERVALS`] of them.
#[derive(Clone, Debug)]
pub struct RunSeries {
    /// Start of the first interval, µs since the epoch, on a whole second.
    origin_unix_us: u64,
    /// Length of every interval, µs.
    width_us: u64,
    /// From the origin on; the last one is still open.
    intervals: Vec<Interval>,
}

impl RunSeries {
    /// An empty series whose first interval starts at the second holding `start_unix_us`.
    pub fn new(start_unix_us: u64) -> RunSeries {
        RunSeries {
            origin_unix_us: start_unix_us - start_unix_us % 1_000_000,
            width_us: SERIES_FIRST_INTERVAL_US,
            intervals: Vec::new(),
        }
    }

    /// The interval holding `at_unix_us` (µs since the epoch), created if needed, after
    /// coarsening if it would be past [`MAX_SERIES_INTERVALS`]. A time before the origin
    /// counts in the first interval.
    pub fn at(&mut self, at_unix_us: u64) -> &mut Interval {
        let i = self.index(at_unix_us);
        if self.intervals.len() <= i {
            self.intervals.resize(i + 1, Interval::default());
        }
        &mut self.intervals[i]
    }

    /// Index of the interval of `at_unix_us`, coarsening until it fits.
    fn index(&mut self, at_unix_us: u64) -> usize {
        let since = at_unix_us.saturating_sub(self.origin_unix_us);
        while since / self.width_us >= MAX_SERIES_INTERVALS as u64 {
            self.coarsen();
        }
        (since / self.width_us) as usize
    }

    /// Doubles the interval: neighbours 2k and 2k+1 become interval k.
    fn coarsen(&mut self) {
        let merged = self
            .intervals
            .chunks(2)
            .map(|pair| {
                let mut m = pair[0].clone();
                if let Some(next) = pair.get(1) {
                    m.merge(next);
                }
                m
            })
            .collect();
        self.intervals = merged;
        self.width_us = self.width_us.saturating_mul(2);
    }

    /// Marks every interval from `from_unix_us` to `to_unix_us` (an episode) as disrupted.
    pub fn disrupted(&mut self, from_unix_us: u64, to_unix_us: u64) {
        let last = self.index(to_unix_us.max(from_unix_us));
        let first = self.index(from_unix_us);
        for i in first..=last {
            self.at_index(i).disrupted = true;
        }
    }

    fn at_index(&mut self, i: usize) -> &mut Interval {
        if self.intervals.len() <= i {
            self.intervals.resize(i + 1, Interval::default());
        }
        &mut self.intervals[i]
    }

    /// Length of every interval, in seconds.
    pub fn interval_seconds(&self) -> f64 {
        self.width_us as f64 / 1e6
    }

    /// Start of the first interval, in Unix seconds.
    pub fn origin_unix_secs(&self) -> f64 {
        self.origin_unix_us as f64 / 1e6
    }

    /// Every interval with its start in Unix seconds, oldest first.
    pub fn intervals(&self) -> impl Iterator<Item = (f64, &Interval)> + '_ {
        self.intervals.iter().enumerate().map(|(i, iv)| {
            (
                (self.origin_unix_us + i as u64 * self.width_us) as f64 / 1e6,
                iv,
            )
        })
    }

    /// How many intervals there are.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
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

    #[test]
    fn the_series_has_one_second_intervals_until_it_must_coarsen() {
        let origin = 1_700_000_000_250_000; // a quarter second past a whole second
        let mut series = RunSeries::new(origin);
        assert_eq!(series.origin_unix_secs(), 1_700_000_000.0);
        let ms = Duration::from_millis;
        series.at(origin).operation(Outcome::Ok, ms(2));
        series
            .at(origin + 800_000)
            .operation(Outcome::Failed, ms(300));
        series.at(origin + 2_000_000).verdict(Verdict::Stale);
        series.at(origin + 2_000_000).skip();
        assert_eq!(series.len(), 3);
        assert_eq!(series.interval_seconds(), 1.0);
        let v: Vec<_> = series.intervals().collect();
        assert_eq!(
            (v[0].0, v[0].1.ok, v[0].1.failed, v[0].1.bad),
            (1_700_000_000.0, 1, 0, 0)
        );
        assert_eq!((v[1].0, v[1].1.failed), (1_700_000_001.0, 1));
        assert_eq!((v[2].1.bad, v[2].1.skipped), (1, 1));
        // An interval with nothing in it is an empty interval, not a missing one.
        assert_eq!(v[0].1.latency.count() + v[1].1.latency.count(), 2);

        // Past the cap, pairs merge and the interval doubles: counts and extremes are kept.
        let end = origin + MAX_SERIES_INTERVALS as u64 * 1_000_000;
        series.at(end).operation(Outcome::Ok, ms(1));
        assert_eq!(series.interval_seconds(), 2.0);
        assert!(series.len() <= MAX_SERIES_INTERVALS);
        let first = series.intervals().next().unwrap().1.clone();
        assert_eq!((first.ok, first.failed), (1, 1));
        assert_eq!(first.latency.max(), Some(ms(300)));
        let totals = series.intervals().fold((0, 0), |(ops, bad), (_, i)| {
            (ops + i.ok + i.failed, bad + i.bad)
        });
        assert_eq!(totals, (3, 1));
    }

    #[test]
    fn a_day_of_seconds_stays_under_the_cap_and_episodes_mark_their_intervals() {
        let origin = 1_700_000_000_000_000;
        let mut series = RunSeries::new(origin);
        for s in 0..86_400u64 {
            series
                .at(origin + s * 1_000_000)
                .operation(Outcome::Ok, Duration::from_millis(1));
        }
        assert!(series.len() <= MAX_SERIES_INTERVALS, "{}", series.len());
        assert_eq!(series.interval_seconds(), 64.0);
        let ops: u32 = series.intervals().map(|(_, i)| i.ok).sum();
        assert_eq!(ops, 86_400);
        // A 200 s episode an hour in marks the intervals it overlaps, and only those.
        let from = origin + 3600 * 1_000_000;
        series.disrupted(from, from + 200 * 1_000_000);
        let marked: Vec<f64> = series
            .intervals()
            .filter(|(_, i)| i.disrupted)
            .map(|(t, _)| t - 1_700_000_000.0)
            .collect();
        assert_eq!(marked, vec![3584.0, 3648.0, 3712.0, 3776.0]);
        // A time far in the future coarsens further but never overflows or grows past the cap.
        series.at(u64::MAX).skip();
        assert!(series.len() <= MAX_SERIES_INTERVALS);
    }

    #[test]
    fn stats_feed_the_series_at_the_current_time() {
        let clock = Clock::new();
        let mut s = Stats::with_clock(&Slo::default(), clock);
        s.operation(Op::Write, Outcome::Ok, Duration::from_millis(1));
        s.skipped(Op::Read);
        s.verdict(Verdict::Lagging, None);
        s.episode(&clock, &ended(0, 1_000));
        assert_eq!(s.series.len(), 1);
        let (start, i) = s.series.intervals().next().unwrap();
        assert_eq!((i.ok, i.skipped, i.lagging, i.disrupted), (1, 1, 1, true));
        assert!((start - clock.unix_secs(0)).abs() <= 1.0);
    }
}
