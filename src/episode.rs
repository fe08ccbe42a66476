//! Disruption episodes (DESIGN §2.4), as pure bookkeeping over attempt send and arrival times.
//!
//! An op is *failing* from the send time of its first failed attempt until the success of an
//! attempt sent after that failure was observed: a success of an attempt already in flight
//! proves nothing about the server now. The target is in an episode while any op is failing;
//! the episode ends when the last failing op closes, at the arrival of that success.

use crate::classify::ResultKind;
use crate::op::Op;

#[derive(Clone, Copy, Debug)]
struct Failing {
    /// First failure seen at this time; only attempts sent after it can close the op.
    observed_us: u64,
}

/// An episode that just began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub start_us: u64,
    pub op: Op,
    pub result: ResultKind,
}

/// An episode that just ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub start_us: u64,
    pub end_us: u64,
    /// Failed attempts during the episode, per result, indexed like [`ResultKind::ALL`].
    pub results: [u64; ResultKind::ALL.len()],
}

impl Ended {
    /// Length of the episode in seconds.
    pub fn duration_secs(&self) -> f64 {
        (self.end_us.saturating_sub(self.start_us)) as f64 / 1e6
    }

    /// The non-zero result counts, for logs and reports.
    pub fn nonzero_results(&self) -> impl Iterator<Item = (ResultKind, u64)> + '_ {
        ResultKind::ALL
            .iter()
            .zip(self.results)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
    }
}

/// Per-target episode state.
#[derive(Debug, Default)]
pub struct Episodes {
    /// By lane: `op.index()` for a standalone or sentinel target; `op.index() + 3 * shard`
    /// for a cluster target, so that the target is in an episode while any op of any
    /// shard is failing (the union of the shards' episodes).
    failing: Vec<Option<Failing>>,
    open: Option<(u64, [u64; ResultKind::ALL.len()])>,
    last_end_us: u64,
}

impl Episodes {
    /// Whether the target is in an episode now.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether `op` (of lane 0) is failing now.
    pub fn is_failing(&self, op: Op) -> bool {
        self.failing.get(op.index()).is_some_and(Option::is_some)
    }

    /// An attempt of `op` sent at `sent_us` failed with `result`, seen at `observed_us`.
    /// Returns the episode it started, if it started one.
    pub fn failure(
        &mut self,
        op: Op,
        sent_us: u64,
        observed_us: u64,
        result: ResultKind,
    ) -> Option<Started> {
        self.failure_in(0, op, sent_us, observed_us, result)
    }

    /// Like [`Episodes::failure`], for op `op` of shard `lane` (see `failing`).
    pub fn failure_in(
        &mut self,
        lane: usize,
        op: Op,
        sent_us: u64,
        observed_us: u64,
        result: ResultKind,
    ) -> Option<Started> {
        // An attempt sent before the previous episode ended belongs to that past; the new
        // episode cannot reach back into it.
        let start = sent_us.max(self.last_end_us);
        let index = op.index() + Op::ALL.len() * lane;
        if self.failing.len() <= index {
            self.failing.resize(index + 1, None);
        }
        let slot = &mut self.failing[index];
        if slot.is_none() {
            *slot = Some(Failing { observed_us });
        }
        let result_index = result_index(result);
        match &mut self.open {
            Some((open_start, results)) => {
                *open_start = (*open_start).min(start);
                results[result_index] += 1;
                None
            }
            None => {
                let mut results = [0; ResultKind::ALL.len()];
                results[result_index] = 1;
                self.open = Some((start, results));
                Some(Started {
                    start_us: start,
                    op,
                    result,
                })
            }
        }
    }

    /// An attempt of `op` sent at `sent_us` succeeded, seen at `observed_us`. Returns the
    /// episode it ended, if it ended one.
    pub fn success(&mut self, op: Op, sent_us: u64, observed_us: u64) -> Option<Ended> {
        self.success_in(0, op, sent_us, observed_us)
    }

    /// Like [`Episodes::success`], for op `op` of shard `lane`.
    pub fn success_in(
        &mut self,
        lane: usize,
        op: Op,
        sent_us: u64,
        observed_us: u64,
    ) -> Option<Ended> {
        let index = op.index() + Op::ALL.len() * lane;
        if let Some(slot) = self.failing.get_mut(index)
            && let Some(f) = slot
            && sent_us >= f.observed_us
        {
            *slot = None;
        }
        if self.failing.iter().any(Option::is_some) {
            return None;
        }
        let (start_us, results) = self.open.take()?;
        self.last_end_us = observed_us;
        Some(Ended {
            start_us,
            end_us: observed_us.max(start_us),
            results,
        })
    }
}

impl Episodes {
    /// Ends the open episode at `now_us`, whatever its ops say: a soak that ends during
    /// an outage must still report it (as lasting at least until the end).
    pub fn close_at(&mut self, now_us: u64) -> Option<Ended> {
        let (start_us, results) = self.open.take()?;
        self.failing.iter_mut().for_each(|f| *f = None);
        self.last_end_us = now_us;
        Some(Ended {
            start_us,
            end_us: now_us.max(start_us),
            results,
        })
    }
}

fn result_index(result: ResultKind) -> usize {
    ResultKind::ALL
        .iter()
        .position(|r| *r == result)
        .expect("ALL lists every result")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    #[test]
    fn a_stall_measures_from_first_failed_send_to_closing_success() {
        let mut e = Episodes::default();
        let started = e.failure(Op::Write, 1000 * MS, 1500 * MS, ResultKind::Timeout);
        assert_eq!(started.map(|s| s.start_us), Some(1000 * MS));
        assert!(e.is_open());
        assert!(
            e.failure(Op::Write, 1600 * MS, 2100 * MS, ResultKind::Timeout)
                .is_none()
        );
        let ended = e.success(Op::Write, 4000 * MS, 4001 * MS).expect("ends");
        assert_eq!(ended.duration_secs(), 3.001);
        assert_eq!(
            ended.nonzero_results().collect::<Vec<_>>(),
            [(ResultKind::Timeout, 2)]
        );
        assert!(!e.is_open());
    }

    #[test]
    fn a_success_sent_before_the_failure_was_seen_does_not_end_it() {
        let mut e = Episodes::default();
        e.failure(Op::Read, 100 * MS, 600 * MS, ResultKind::Timeout);
        assert!(e.success(Op::Read, 500 * MS, 650 * MS).is_none());
        assert!(e.is_open());
        assert!(e.success(Op::Read, 700 * MS, 710 * MS).is_some());
    }

    #[test]
    fn the_episode_is_the_union_of_failing_ops() {
        let mut e = Episodes::default();
        assert!(e.failure(Op::Write, 0, 10, ResultKind::Refused).is_some());
        assert!(e.failure(Op::Read, 5, 12, ResultKind::Refused).is_none());
        assert!(e.success(Op::Write, 20, 25).is_none(), "read still failing");
        let ended = e.success(Op::Read, 30, 40).expect("last op closed");
        assert_eq!((ended.start_us, ended.end_us), (0, 40));
        assert_eq!(
            ended.nonzero_results().collect::<Vec<_>>(),
            [(ResultKind::Refused, 2)]
        );
    }

    #[test]
    fn a_late_failure_from_before_the_end_starts_no_earlier_than_the_end() {
        let mut e = Episodes::default();
        e.failure(Op::Write, 0, 10, ResultKind::Reset);
        e.success(Op::Write, 20, 30);
        let s = e
            .failure(Op::Write, 15, 35, ResultKind::Reset)
            .expect("new episode");
        assert_eq!(s.start_us, 30);
    }

    #[test]
    fn an_episode_open_at_the_end_is_closed_there() {
        let mut e = Episodes::default();
        e.failure(Op::Write, 10, 20, ResultKind::Timeout);
        let ended = e.close_at(100).expect("was open");
        assert_eq!((ended.start_us, ended.end_us), (10, 100));
        assert!(!e.is_open());
        assert!(e.close_at(200).is_none());
    }

    #[test]
    fn the_episode_is_the_union_of_failing_shards() {
        let mut e = Episodes::default();
        assert!(
            e.failure_in(2, Op::Write, 0, 10, ResultKind::Refused)
                .is_some()
        );
        // Another shard's success says nothing about the failing one.
        assert!(e.success_in(0, Op::Write, 20, 25).is_none());
        assert!(e.is_open());
        assert!(
            e.failure_in(0, Op::Read, 30, 35, ResultKind::Clusterdown)
                .is_none()
        );
        assert!(
            e.success_in(2, Op::Write, 40, 45).is_none(),
            "shard 0 still failing"
        );
        let ended = e
            .success_in(0, Op::Read, 50, 55)
            .expect("last shard closed");
        assert_eq!((ended.start_us, ended.end_us), (0, 55));
    }

    #[test]
    fn successes_without_failures_change_nothing() {
        let mut e = Episodes::default();
        assert!(e.success(Op::Write, 1, 2).is_none());
        assert!(!e.is_open());
    }
}
