//! Judging one target's soak statistics against its `[slo]` (DESIGN §4, §7): pure
//! arithmetic over [`Stats`], tested without a network.

use serde::Serialize;

use crate::ledger::Verdict;
use crate::stats::Stats;

/// One SLO judgement, as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    /// The `[slo]` key judged, e.g. `max_disruption`.
    pub name: &'static str,
    /// Its configured value, in the unit of `measured` (seconds for durations).
    pub threshold: f64,
    /// What the run measured.
    pub measured: f64,
    /// Whether the threshold held.
    pub pass: bool,
}

/// Every SLO of `stats`, in `[slo]` order. Durations are in seconds.
///
/// - `min_availability`: (ok + recovered) / all operations, skipped ticks included; a run
///   with no operation at all measures 0 and fails (nothing ran is not availability).
/// - `max_disruption`: the longest episode of the run, including the ones not kept.
/// - `p99_operation`: the worst op's p99.
/// - the others: counts, which pass while at most the threshold.
pub fn judge(stats: &Stats) -> Vec<Judgement> {
    let slo = &stats.slo;
    let (_, total, failed) = stats.totals();
    let availability = stats.availability().unwrap_or(0.0);
    let p99 = stats
        .ops
        .iter()
        .filter(|o| !o.operation_us.is_empty())
        .map(|o| o.operation_us.value_at_quantile(0.99) as f64 / 1e6)
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
            pass: total > 0 && availability >= slo.min_availability,
        },
        at_most(
            "max_failed_operations",
            slo.max_failed_operations as f64,
            failed as f64,
        ),
        at_most(
            "max_disruption",
            slo.max_disruption.as_secs_f64(),
            stats.longest_episode_seconds,
        ),
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

/// Whether every judgement passed.
pub fn all_pass(judgements: &[Judgement]) -> bool {
    judgements.iter().all(|j| j.pass)
}
