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
/// - `p99_operation`: the worst op's p99, as the report shows it: the top of its
///   HdrHistogram bucket (3 significant digits), so a p99 within 0.1 % of the threshold
///   fails.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Slo;
    use crate::op::{Op, Outcome};

    const MS: Duration = Duration::from_millis(1);

    /// `ok` writes of 1 ms each, judged against `slo`.
    fn stats(slo: Slo, ok: u64) -> Stats {
        let mut s = Stats::new(&slo);
        for _ in 0..ok {
            s.operation(Op::Write, Outcome::Ok, MS);
        }
        s
    }

    fn find<'a>(judgements: &'a [Judgement], name: &str) -> &'a Judgement {
        judgements.iter().find(|j| j.name == name).expect(name)
    }

    /// Judges `s` and returns the judgement `name`, checking the others passed.
    fn only(s: &Stats, name: &str) -> Judgement {
        let all = judge(s);
        for j in &all {
            assert!(j.name == name || j.pass, "{j:?} should pass");
        }
        find(&all, name).clone()
    }

    #[test]
    fn every_slo_is_judged_in_config_order() {
        let names: Vec<_> = judge(&stats(Slo::default(), 1))
            .iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(
            names,
            [
                "min_availability",
                "max_failed_operations",
                "max_disruption",
                "max_stale_reads",
                "max_missing_reads",
                "max_corrupt_reads",
                "p99_operation"
            ]
        );
        assert!(all_pass(&judge(&stats(Slo::default(), 1))));
    }

    #[test]
    fn an_empty_run_fails_availability_and_passes_the_rest() {
        let j = only(&stats(Slo::default(), 0), "min_availability");
        assert_eq!((j.measured, j.pass), (0.0, false));
        // Even a threshold of 0: nothing ran is not availability.
        let slo = Slo {
            min_availability: 0.0,
            ..Slo::default()
        };
        assert!(!only(&stats(slo, 0), "min_availability").pass);
    }

    #[test]
    fn availability_passes_at_the_threshold_and_fails_below_it() {
        let slo = Slo {
            min_availability: 0.75,
            max_failed_operations: 10,
            ..Slo::default()
        };
        let mut s = stats(slo, 3);
        s.operation(Op::Read, Outcome::Failed, MS);
        let j = only(&s, "min_availability");
        assert_eq!((j.threshold, j.measured, j.pass), (0.75, 0.75, true));
        s.operation(Op::Read, Outcome::Failed, MS);
        let j = only(&s, "min_availability");
        assert_eq!((j.measured, j.pass), (0.6, false));
    }

    #[test]
    fn skipped_ticks_count_against_availability_but_not_as_failures() {
        let slo = Slo {
            min_availability: 0.5,
            ..Slo::default()
        };
        let mut s = stats(slo, 1);
        s.skipped(Op::Read);
        assert_eq!(only(&s, "min_availability").measured, 0.5);
        assert!(find(&judge(&s), "max_failed_operations").pass);
        s.skipped(Op::Probe);
        let j = only(&s, "min_availability");
        assert_eq!((j.measured, j.pass), (1.0 / 3.0, false));
        // Only skipped ticks: something was scheduled and none of it ran.
        let mut s = stats(Slo::default(), 0);
        s.skipped(Op::Write);
        let j = only(&s, "min_availability");
        assert_eq!((j.measured, j.pass), (0.0, false));
    }

    #[test]
    fn recovered_operations_are_available() {
        let mut s = stats(Slo::default(), 1);
        s.operation(Op::Write, Outcome::Recovered, MS);
        let j = find(&judge(&s), "min_availability").clone();
        assert_eq!((j.measured, j.pass), (1.0, true));
    }

    #[test]
    fn failed_operations_pass_up_to_the_threshold() {
        let slo = Slo {
            min_availability: 0.0,
            max_failed_operations: 2,
            ..Slo::default()
        };
        let mut s = stats(slo, 1);
        for n in 1..=3 {
            s.operation(Op::Read, Outcome::Failed, MS);
            let j = only(&s, "max_failed_operations");
            assert_eq!((j.measured, j.pass), (n as f64, n <= 2));
        }
    }

    #[test]
    fn max_disruption_is_judged_on_the_longest_episode_kept_or_not() {
        let slo = Slo {
            max_disruption: Duration::from_secs(2),
            ..Slo::default()
        };
        let mut s = stats(slo, 1);
        assert_eq!(only(&s, "max_disruption").measured, 0.0);
        s.longest_episode_seconds = 2.0;
        let j = only(&s, "max_disruption");
        assert_eq!((j.threshold, j.pass), (2.0, true));
        // Only counted past the 1,000 kept, yet it fails the run.
        s.episodes_dropped = 1;
        s.longest_episode_seconds = 2.001;
        assert!(!only(&s, "max_disruption").pass);
        // The default allows no episode at all.
        let mut s = stats(Slo::default(), 1);
        s.longest_episode_seconds = 0.000_001;
        assert!(!only(&s, "max_disruption").pass);
    }

    #[test]
    fn bad_reads_pass_up_to_their_thresholds() {
        for (verdict, name) in [
            (Verdict::Stale, "max_stale_reads"),
            (Verdict::Missing, "max_missing_reads"),
            (Verdict::Corrupt, "max_corrupt_reads"),
        ] {
            let slo = Slo {
                max_stale_reads: 1,
                max_missing_reads: 1,
                max_corrupt_reads: 1,
                ..Slo::default()
            };
            let mut s = stats(slo, 1);
            // Lagging reads are never judged.
            s.verdict(Verdict::Lagging, None);
            s.verdict(verdict, None);
            let j = only(&s, name);
            assert_eq!(
                (j.threshold, j.measured, j.pass),
                (1.0, 1.0, true),
                "{name}"
            );
            s.verdict(verdict, None);
            let j = only(&s, name);
            assert_eq!((j.measured, j.pass), (2.0, false), "{name}");
        }
    }

    #[test]
    fn p99_is_judged_on_the_worst_op() {
        let slo = Slo {
            p99_operation: Duration::from_millis(50),
            ..Slo::default()
        };
        // The histogram keeps 3 significant digits and reports a bucket's top: a p99 in the
        // threshold's own bucket (16 µs wide at 50 ms) cannot be told from a larger one and
        // fails; one a bucket below passes.
        let mut s = stats(slo.clone(), 100);
        for _ in 0..100 {
            s.operation(Op::Read, Outcome::Ok, Duration::from_micros(49_950));
        }
        let j = only(&s, "p99_operation");
        assert_eq!((j.threshold, j.measured, j.pass), (0.05, 0.049951, true));
        s.operation(Op::Read, Outcome::Ok, 50 * MS);
        s.operation(Op::Read, Outcome::Ok, 50 * MS);
        s.operation(Op::Read, Outcome::Ok, 50 * MS);
        let j = only(&s, "p99_operation");
        assert_eq!((j.measured, j.pass), (0.050015, false));
        // Of 101 probes, one slow one is not the p99; of 102, two are.
        let mut s = stats(slo, 0);
        for _ in 0..100 {
            s.operation(Op::Probe, Outcome::Ok, MS);
        }
        s.operation(Op::Probe, Outcome::Ok, 60 * MS);
        assert!(only(&s, "p99_operation").pass);
        s.operation(Op::Probe, Outcome::Ok, 60 * MS);
        let j = only(&s, "p99_operation");
        assert!(!j.pass && (0.06..0.0601).contains(&j.measured), "{j:?}");
    }
}
