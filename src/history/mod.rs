//! What the status page and `/api/v1/status` show over time (DESIGN §13), in bounded memory
//! per target: fixed rings of per-interval aggregates (1 s for the last
//! [`FINE_SLOTS`] seconds, 10 s for the last hour) and the episodes of the last 24 h.
//!
//! - [`Sketch`]: a small log-scale latency histogram (power-of-√2 buckets from 100 µs to
//!   about 10 s), mergeable, with [`Sketch::quantile`]; used instead of raw samples.
//! - [`Interval`]: the aggregate of one interval while it is open: operations by outcome,
//!   skipped ticks, read verdicts, whether a disruption touched it, and a [`Sketch`].
//! - [`Point`]: a closed interval packed into 24 bytes for the rings.
//! - [`History`]: the rings and the episode list of one target. Intervals close lazily when
//!   time moves on (a record or a read with a later time), so there is no timer per target.
//!
//! Budget: [`History::memory_bytes`] is at most [`BUDGET_BYTES`] (16 KiB), checked by a
//! unit test; the rings and the episode list are allocated once, in [`History::new`].
//!
//! Parts: this file holds the intervals, the rings and the episodes; `sketch` the latency
//! histogram.

use std::collections::VecDeque;
use std::time::Duration;

use crate::classify::ResultKind;
use crate::episode::Ended;
use crate::ledger::Verdict;
use crate::op::Outcome;
mod sketch;
#[cfg(test)]
mod tests;

use sketch::representative_us;
pub use sketch::{SKETCH_BUCKETS, Sketch};

/// Most bytes one target's history may take, everything included (DESIGN §13).
pub const BUDGET_BYTES: usize = 16 * 1024;

/// Length of a fine interval: one second resolves the start of an outage as an on-call
/// reads it ("at 03:12:07").
pub const FINE_US: u64 = 1_000_000;
/// Fine intervals kept: three minutes at one second, the minutes before "now" in detail.
pub const FINE_SLOTS: usize = 180;
/// Length of a coarse interval: 10 s draws an hour in 360 points and 15 min in 90.
pub const COARSE_US: u64 = 10_000_000;
/// Coarse intervals kept: one hour (the availability window of the page) at 10 s.
pub const COARSE_SLOTS: usize = 360;
/// How far back episodes are shown (DESIGN §13).
pub const EPISODE_WINDOW_US: u64 = 24 * 3600 * 1_000_000;
/// Most episodes kept; the oldest goes first. A target that flaps more than 64 times a day
/// is read from the count of dropped episodes and the metrics, not from a table.
pub const MAX_EPISODES: usize = 64;

/// Results a failed try can have, as in [`ResultKind::ALL`].
const RESULTS: usize = ResultKind::ALL.len();
/// Result kinds kept per closed episode, the most frequent first; the rest count as other.
pub const EPISODE_TOP_RESULTS: usize = 3;

/// One interval's aggregate while it is open (and the unit the soak report can keep per
/// interval): operations by outcome, skipped ticks, read verdicts, whether a disruption
/// touched it, and the operation latency as a [`Sketch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Operations that succeeded at the first try.
    pub ok: u32,
    /// Operations that succeeded after at least one retry.
    pub recovered: u32,
    /// Operations that failed after their retries.
    pub failed: u32,
    /// Scheduled operations that could not start (DESIGN §2.7).
    pub skipped: u32,
    /// Reads (and probes) that found the latest write or newer.
    pub fresh: u32,
    /// Reads that found an older value still within `stale_grace`.
    pub lagging: u32,
    /// Reads judged stale, missing or corrupt.
    pub bad: u32,
    /// An episode was open at some time during the interval.
    pub disrupted: bool,
    /// Scheduled start to final outcome of every finished operation, failed ones included
    /// (their time is the time until the canary gave up, which is what a client waited).
    pub latency: Sketch,
}

impl Interval {
    /// A finished operation.
    pub fn operation(&mut self, outcome: Outcome, took: Duration) {
        let n = match outcome {
            Outcome::Ok => &mut self.ok,
            Outcome::Recovered => &mut self.recovered,
            Outcome::Failed => &mut self.failed,
        };
        *n = n.saturating_add(1);
        self.latency.record(took);
    }

    /// A scheduled operation that could not start.
    pub fn skip(&mut self) {
        self.skipped = self.skipped.saturating_add(1);
    }

    /// A read verdict.
    pub fn verdict(&mut self, v: Verdict) {
        let n = match v {
            Verdict::Fresh => &mut self.fresh,
            Verdict::Lagging => &mut self.lagging,
            Verdict::Stale | Verdict::Missing | Verdict::Corrupt => &mut self.bad,
        };
        *n = n.saturating_add(1);
    }

    /// Adds `other` (a later or parallel interval) into this one.
    pub fn merge(&mut self, other: &Interval) {
        self.ok = self.ok.saturating_add(other.ok);
        self.recovered = self.recovered.saturating_add(other.recovered);
        self.failed = self.failed.saturating_add(other.failed);
        self.skipped = self.skipped.saturating_add(other.skipped);
        self.fresh = self.fresh.saturating_add(other.fresh);
        self.lagging = self.lagging.saturating_add(other.lagging);
        self.bad = self.bad.saturating_add(other.bad);
        self.disrupted |= other.disrupted;
        self.latency.merge(&other.latency);
    }

    /// The interval packed for a ring.
    pub fn point(&self) -> Point {
        let counts = [
            self.ok,
            self.recovered,
            self.failed,
            self.skipped,
            self.fresh,
            self.lagging,
            self.bad,
        ];
        let largest = counts.iter().copied().max().unwrap_or(0);
        let shift = (32 - largest.leading_zeros()).saturating_sub(16) as u8;
        let code = |q: f64| {
            self.latency
                .quantile_bucket(q)
                .map_or(0, |b| u8::try_from(b + 1).unwrap_or(u8::MAX))
        };
        Point {
            max_us: self.latency.max_us,
            counts: counts.map(|c| {
                // Rounded, so that a non-zero count never packs to 0.
                let scaled = if shift == 0 {
                    c
                } else {
                    ((u64::from(c) + (1 << (shift - 1))) >> shift).max(u64::from(c > 0)) as u32
                };
                u16::try_from(scaled).unwrap_or(u16::MAX)
            }),
            shift,
            disrupted: self.disrupted,
            p50: code(0.5),
            p99: code(0.99),
        }
    }
}

/// A closed interval in 24 bytes: the counts of [`Interval`] as 16-bit numbers under one
/// shared scale (exact while every count of the interval is below 65,536; past that all are
/// divided by the same power of two, so ratios such as availability stay right to 1/32,768),
/// the buckets of p50 and p99, and the exact maximum latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Point {
    max_us: u32,
    counts: [u16; 7],
    shift: u8,
    disrupted: bool,
    /// Sketch bucket + 1 of the quantile; 0 when no operation finished.
    p50: u8,
    p99: u8,
}

impl Point {
    fn count(&self, i: usize) -> u64 {
        u64::from(self.counts[i]) << self.shift
    }
    /// Operations that succeeded at the first try.
    pub fn ok(&self) -> u64 {
        self.count(0)
    }
    /// Operations that succeeded after retries.
    pub fn recovered(&self) -> u64 {
        self.count(1)
    }
    /// Operations that failed after their retries.
    pub fn failed(&self) -> u64 {
        self.count(2)
    }
    /// Scheduled operations that could not start.
    pub fn skipped(&self) -> u64 {
        self.count(3)
    }
    /// Fresh reads.
    pub fn fresh(&self) -> u64 {
        self.count(4)
    }
    /// Lagging reads.
    pub fn lagging(&self) -> u64 {
        self.count(5)
    }
    /// Stale, missing or corrupt reads.
    pub fn bad(&self) -> u64 {
        self.count(6)
    }
    /// ok + recovered.
    pub fn good(&self) -> u64 {
        self.ok() + self.recovered()
    }
    /// Everything scheduled: finished operations and skipped ticks.
    pub fn scheduled(&self) -> u64 {
        self.good() + self.failed() + self.skipped()
    }
    /// Whether the counts are exact (no count of the interval reached 65,536).
    pub fn is_exact(&self) -> bool {
        self.shift == 0
    }
    /// An episode was open during the interval.
    pub fn disrupted(&self) -> bool {
        self.disrupted
    }
    /// Median operation latency (within the sketch's bucket error).
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(self.p50)
    }
    /// 99th percentile operation latency (within the sketch's bucket error).
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(self.p99)
    }
    /// Largest operation latency (exact).
    pub fn max(&self) -> Option<Duration> {
        (self.p50 > 0).then(|| Duration::from_micros(u64::from(self.max_us)))
    }
    fn quantile(&self, code: u8) -> Option<Duration> {
        (code > 0).then(|| {
            Duration::from_micros(u64::from(representative_us(
                usize::from(code - 1),
                self.max_us,
            )))
        })
    }
}

/// A fixed ring of closed intervals of one length, indexed by interval number
/// (time / length); slots are allocated once.
#[derive(Debug)]
struct Ring {
    slots: Box<[Point]>,
    /// One past the newest interval number written.
    next: u64,
}

impl Ring {
    fn new(len: usize) -> Ring {
        Ring {
            slots: vec![Point::default(); len].into_boxed_slice(),
            next: 0,
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Writes interval `no`; intervals skipped since the last write are written as empty
    /// (disrupted if `gap_disrupted`). An interval older than the newest is ignored.
    fn push(&mut self, no: u64, p: Point, gap_disrupted: bool) {
        if no < self.next {
            return;
        }
        self.fill_to(no, gap_disrupted);
        let i = (no % self.len()) as usize;
        self.slots[i] = p;
        self.next = no + 1;
    }

    /// Writes the intervals from the newest written up to (not including) `no` as empty:
    /// nothing was recorded in them (disrupted if `gap_disrupted`).
    fn fill_to(&mut self, no: u64, gap_disrupted: bool) {
        let gap = Point {
            disrupted: gap_disrupted,
            ..Point::default()
        };
        let from = self.next.max(no.saturating_sub(self.len()));
        for n in from..no {
            let i = (n % self.len()) as usize;
            self.slots[i] = gap;
        }
        self.next = self.next.max(no);
    }

    fn get_mut(&mut self, no: u64) -> Option<&mut Point> {
        if no >= self.next || no + self.len() < self.next {
            return None;
        }
        let i = (no % self.len()) as usize;
        Some(&mut self.slots[i])
    }

    /// The intervals numbered `from..self.next` still held, oldest first.
    fn since(&self, from: u64) -> impl Iterator<Item = (u64, Point)> + '_ {
        let from = from.max(self.next.saturating_sub(self.len()));
        (from..self.next).map(|n| (n, self.slots[(n % self.len()) as usize]))
    }
}

/// An episode as the history keeps it: 40 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpisodeMark {
    start_us: u64,
    /// `u64::MAX` while open.
    end_us: u64,
    failures: u32,
    top_results: [ResultKind; EPISODE_TOP_RESULTS],
    top_counts: [u32; EPISODE_TOP_RESULTS],
}

impl EpisodeMark {
    /// Start, in µs of the process clock.
    pub fn start_us(&self) -> u64 {
        self.start_us
    }

    /// End, in µs of the process clock; `None` while it is open.
    pub fn end_us(&self) -> Option<u64> {
        (self.end_us != u64::MAX).then_some(self.end_us)
    }

    /// Length in µs, up to `now_us` while open.
    pub fn length_us(&self, now_us: u64) -> u64 {
        self.end_us()
            .unwrap_or(now_us)
            .saturating_sub(self.start_us)
    }

    /// Failed tries during the episode, all results.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The most frequent results of its failed tries with their counts, most frequent
    /// first (at most [`EPISODE_TOP_RESULTS`]).
    pub fn results(&self) -> impl Iterator<Item = (ResultKind, u32)> + '_ {
        self.top_results
            .iter()
            .copied()
            .zip(self.top_counts)
            .filter(|(_, n)| *n > 0)
    }

    /// Failed tries whose result is not among [`EpisodeMark::results`].
    pub fn other_failures(&self) -> u32 {
        let kept: u32 = self.top_counts.iter().sum();
        self.failures.saturating_sub(kept)
    }

    fn from_counts(start_us: u64, end_us: Option<u64>, counts: &[u64; RESULTS]) -> EpisodeMark {
        let mut order: [usize; RESULTS] = std::array::from_fn(|i| i);
        // Stable: equal counts keep the order of ResultKind::ALL.
        order.sort_by(|a, b| counts[*b].cmp(&counts[*a]));
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        EpisodeMark {
            start_us,
            end_us: end_us.unwrap_or(u64::MAX),
            failures: sat(counts.iter().sum()),
            top_results: std::array::from_fn(|k| ResultKind::ALL[order[k]]),
            top_counts: std::array::from_fn(|k| sat(counts[order[k]])),
        }
    }
}

/// The open episode: its start and its failed tries per result so far.
#[derive(Debug)]
struct OpenEpisode {
    start_us: u64,
    results: [u64; RESULTS],
}

/// One target's history: two rings, the intervals still open, and the episodes.
#[derive(Debug)]
pub struct History {
    fine: Ring,
    coarse: Ring,
    open_fine: Interval,
    open_fine_no: u64,
    open_coarse: Interval,
    open_coarse_no: u64,
    episodes: VecDeque<EpisodeMark>,
    /// Episodes dropped because [`MAX_EPISODES`] were kept.
    episodes_dropped: u64,
    open_episode: Option<OpenEpisode>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history with every ring allocated.
    pub fn new() -> History {
        History {
            fine: Ring::new(FINE_SLOTS),
            coarse: Ring::new(COARSE_SLOTS),
            open_fine: Interval::default(),
            open_fine_no: 0,
            open_coarse: Interval::default(),
            open_coarse_no: 0,
            episodes: VecDeque::with_capacity(MAX_EPISODES),
            episodes_dropped: 0,
            open_episode: None,
        }
    }

    /// Bytes this history takes: the struct and its heap parts (fixed from creation on).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<History>()
            + std::mem::size_of_val(&*self.fine.slots)
            + std::mem::size_of_val(&*self.coarse.slots)
            + self.episodes.capacity() * std::mem::size_of::<EpisodeMark>()
    }

    /// Closes the open intervals if `now_us` is past them.
    pub fn advance(&mut self, now_us: u64) {
        let open = self.open_episode.is_some();
        let fine_no = now_us / FINE_US;
        if fine_no > self.open_fine_no {
            let closed = std::mem::take(&mut self.open_fine);
            self.fine.push(self.open_fine_no, closed.point(), open);
            self.fine.fill_to(fine_no, open);
            self.open_fine_no = fine_no;
            self.open_fine.disrupted = open;
        }
        let coarse_no = now_us / COARSE_US;
        if coarse_no > self.open_coarse_no {
            let closed = std::mem::take(&mut self.open_coarse);
            self.coarse.push(self.open_coarse_no, closed.point(), open);
            self.coarse.fill_to(coarse_no, open);
            self.open_coarse_no = coarse_no;
            self.open_coarse.disrupted = open;
        }
    }

    fn both(&mut self, now_us: u64, f: impl Fn(&mut Interval)) {
        self.advance(now_us);
        f(&mut self.open_fine);
        f(&mut self.open_coarse);
    }

    /// An operation finished at `now_us` after `took`.
    pub fn operation(&mut self, now_us: u64, outcome: Outcome, took: Duration) {
        self.both(now_us, |i| i.operation(outcome, took));
    }

    /// A tick was skipped at `now_us`.
    pub fn skipped(&mut self, now_us: u64) {
        self.both(now_us, Interval::skip);
    }

    /// A read verdict at `now_us`.
    pub fn verdict(&mut self, now_us: u64, v: Verdict) {
        self.both(now_us, |i| i.verdict(v));
    }

    /// A try failed with `result`, seen at `now_us`; `started` is the start of the episode
    /// it began, if it began one.
    pub fn failure(&mut self, now_us: u64, started: Option<u64>, result: ResultKind) {
        self.advance(now_us);
        if let Some(start_us) = started {
            self.open_episode = Some(OpenEpisode {
                start_us,
                results: [0; RESULTS],
            });
            self.mark_disrupted(start_us);
        }
        if let Some(open) = &mut self.open_episode {
            let i = ResultKind::ALL
                .iter()
                .position(|r| *r == result)
                .unwrap_or(RESULTS - 1);
            open.results[i] += 1;
        }
    }

    /// Marks every interval from `start_us` on as disrupted (an episode starts at the send
    /// of its first failed try, up to a timeout before it is seen).
    fn mark_disrupted(&mut self, start_us: u64) {
        self.open_fine.disrupted = true;
        self.open_coarse.disrupted = true;
        for no in start_us / FINE_US..self.open_fine_no {
            if let Some(p) = self.fine.get_mut(no) {
                p.disrupted = true;
            }
        }
        for no in start_us / COARSE_US..self.open_coarse_no {
            if let Some(p) = self.coarse.get_mut(no) {
                p.disrupted = true;
            }
        }
    }

    /// An episode ended (or was closed at the end of a soak).
    pub fn episode_ended(&mut self, e: &Ended) {
        self.open_episode = None;
        self.mark_disrupted(e.start_us);
        if self.episodes.len() == MAX_EPISODES {
            self.episodes.pop_front();
            self.episodes_dropped += 1;
        }
        self.episodes.push_back(EpisodeMark::from_counts(
            e.start_us,
            Some(e.end_us),
            &e.results,
        ));
    }

    /// Whether an episode is open.
    pub fn episode_open(&self) -> bool {
        self.open_episode.is_some()
    }

    /// The episodes that ended within 24 h of `now_us`, then the open one, oldest first.
    pub fn episodes(&self, now_us: u64) -> Vec<EpisodeMark> {
        let since = now_us.saturating_sub(EPISODE_WINDOW_US);
        let mut v: Vec<EpisodeMark> = self
            .episodes
            .iter()
            .filter(|e| e.end_us().is_some_and(|end| end >= since))
            .copied()
            .collect();
        if let Some(o) = &self.open_episode {
            v.push(EpisodeMark::from_counts(o.start_us, None, &o.results));
        }
        v
    }

    /// Episodes dropped from the list because [`MAX_EPISODES`] were kept.
    pub fn episodes_dropped(&self) -> u64 {
        self.episodes_dropped
    }

    /// The 1 s intervals of the last `window_us` up to `now_us` (the open one last), as
    /// (start µs, point), oldest first.
    pub fn fine(&mut self, now_us: u64, window_us: u64) -> Vec<(u64, Point)> {
        self.advance(now_us);
        let from = now_us.saturating_sub(window_us) / FINE_US;
        let mut v: Vec<(u64, Point)> = self
            .fine
            .since(from)
            .map(|(n, p)| (n * FINE_US, p))
            .collect();
        v.push((self.open_fine_no * FINE_US, self.open_fine.point()));
        v
    }

    /// The 10 s intervals of the last `window_us` up to `now_us` (the open one last), as
    /// (start µs, point), oldest first.
    pub fn coarse(&mut self, now_us: u64, window_us: u64) -> Vec<(u64, Point)> {
        self.advance(now_us);
        let from = now_us.saturating_sub(window_us) / COARSE_US;
        let mut v: Vec<(u64, Point)> = self
            .coarse
            .since(from)
            .map(|(n, p)| (n * COARSE_US, p))
            .collect();
        v.push((self.open_coarse_no * COARSE_US, self.open_coarse.point()));
        v
    }

    /// (ok + recovered) / scheduled over the last `window_us` (10 s resolution, the open
    /// interval included); `None` when nothing was scheduled.
    pub fn availability(&mut self, now_us: u64, window_us: u64) -> Option<f64> {
        let (good, all) = self
            .coarse(now_us, window_us)
            .iter()
            .fold((0u64, 0u64), |(g, a), (_, p)| {
                (g + p.good(), a + p.scheduled())
            });
        (all > 0).then(|| good as f64 / all as f64)
    }
}
