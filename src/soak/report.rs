//! The soak report (DESIGN §7) as typed data: [`Report`] serializes to the versioned JSON
//! document of README's "Soak report" section, and [`Report::summary`] renders the same
//! numbers as the human tables printed on stdout. Built from [`Stats`] without I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::judge::{self, Judgement};
use crate::classify::ResultKind;
use crate::http::format_unix;
use crate::ledger::Verdict;
use crate::op::{Kind, Op};
use crate::stats::{EpisodeRecord, OpStats, Stats};

/// Version of the report layout; bumped on any incompatible change. Added fields are not
/// incompatible: readers ignore what they do not know.
pub const SCHEMA: u32 = 1;

/// A whole soak run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    /// RFC 3339, seconds.
    pub started_at: String,
    pub ended_at: String,
    pub duration_seconds: f64,
    /// Stopped by SIGTERM/SIGINT before `--duration` ran out: the run fails.
    pub interrupted: bool,
    /// Every target passed and the run was not interrupted.
    pub pass: bool,
    pub targets: Vec<TargetReport>,
}

impl Report {
    /// The report of a run from `started_unix` to `ended_unix` (seconds since the epoch).
    pub fn new(
        started_unix: f64,
        ended_unix: f64,
        interrupted: bool,
        targets: Vec<TargetReport>,
    ) -> Report {
        Report {
            schema: SCHEMA,
            started_at: format_unix(started_unix),
            ended_at: format_unix(ended_unix),
            duration_seconds: ended_unix - started_unix,
            interrupted,
            pass: !interrupted && targets.iter().all(|t| t.pass),
            targets,
        }
    }

    /// The JSON document, pretty-printed, ending in a newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report of strings and numbers serializes")
            + "\n"
    }

    /// The human summary: per target, the op table, failures, reads, episodes and SLOs,
    /// then the verdict.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            t.write_summary(&mut out);
        }
        let _ = writeln!(
            out,
            "\nverdict: {}{}",
            if self.pass { "PASS" } else { "FAIL" },
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        out
    }
}

/// One value per op.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerOp<T> {
    pub write: T,
    pub read: T,
    pub probe: T,
}

impl<T> PerOp<T> {
    fn from_fn(mut f: impl FnMut(Op) -> T) -> PerOp<T> {
        PerOp {
            write: f(Op::Write),
            read: f(Op::Read),
            probe: f(Op::Probe),
        }
    }

    fn get(&self, op: Op) -> &T {
        match op {
            Op::Write => &self.write,
            Op::Read => &self.read,
            Op::Probe => &self.probe,
        }
    }
}

/// Counts per label value (`result`, `verdict`): every value of the closed set for
/// attempts and reads, only those seen for connects.
pub type Counts = BTreeMap<&'static str, u64>;

/// Everything reported about one target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// Every SLO of the target held.
    pub pass: bool,
    pub availability: Availability,
    pub operations: PerOp<Operations>,
    /// Attempts per op and result.
    pub attempts: PerOp<Counts>,
    pub latency_seconds: Latencies,
    /// The first [`crate::stats::MAX_EPISODES`] episodes.
    pub episodes: Vec<Episode>,
    /// Episodes past that, counted only.
    pub episodes_dropped: u64,
    /// The longest episode, kept or dropped (0 without any): what `max_disruption` judges.
    pub longest_episode_seconds: f64,
    /// Reads (read loop and probe) per verdict.
    pub reads: Counts,
    /// The same per backend (run_id, or addr when the run_id is unknown).
    pub reads_by_backend: BTreeMap<String, Counts>,
    /// Reads left out of `reads_by_backend` once [`crate::stats::MAX_READ_BACKENDS`] backends
    /// were known (they still count in `reads`).
    pub reads_by_backend_dropped: u64,
    /// Connects per kind and result.
    pub connects: PerKind<Counts>,
    /// Replication delay per direct node.
    pub replication: BTreeMap<String, Replication>,
    /// Every backend seen, as far as the target keeps them.
    pub backends: Vec<Backend>,
    /// Backends seen but not kept in `backends`; absent where the count is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends_dropped: Option<u64>,
    pub slo: Vec<Judgement>,
    /// Failures of the canary itself by cause (out of file descriptors, memory, local
    /// ports): not server behaviour, so they stay out of `attempts` and out of the SLOs.
    pub internal_errors: BTreeMap<&'static str, u64>,
    /// A cluster target's shards (DESIGN §12.2), by first slot range; absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardReport>,
}

/// One shard of a cluster target over the run.
#[derive(Clone, Debug, Serialize)]
pub struct ShardReport {
    /// The shard label: its first slot range.
    pub shard: String,
    pub operations: ShardOperations,
    /// Episodes of this shard.
    pub disruptions: u64,
    pub longest_disruption_seconds: f64,
}

/// Operations of one shard by outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ShardOperations {
    pub ok: u64,
    pub recovered: u64,
    pub failed: u64,
}

impl ShardReport {
    pub fn of(s: &crate::topology::cluster::book::ShardSummary) -> ShardReport {
        ShardReport {
            shard: s.shard.clone(),
            operations: ShardOperations {
                ok: s.ok,
                recovered: s.recovered,
                failed: s.failed,
            },
            disruptions: s.disruptions,
            longest_disruption_seconds: s.longest_disruption_secs,
        }
    }
}

impl TargetReport {
    /// Judges `stats` and reports them with the `backends` the target saw.
    pub fn new(
        name: &str,
        stats: &Stats,
        backends: Vec<Backend>,
        backends_dropped: Option<u64>,
    ) -> TargetReport {
        let slo = judge::judge(stats);
        let ops = |f: &dyn Fn(&OpStats) -> _| PerOp::from_fn(|op| f(&stats.ops[op.index()]));
        TargetReport {
            name: name.to_string(),
            pass: judge::all_pass(&slo),
            availability: Availability {
                write: stats.ops[Op::Write.index()].availability(),
                read: stats.ops[Op::Read.index()].availability(),
                probe: stats.ops[Op::Probe.index()].availability(),
                all: stats.availability(),
            },
            operations: PerOp::from_fn(|op| Operations::of(&stats.ops[op.index()])),
            attempts: PerOp::from_fn(|op| {
                stats.ops[op.index()]
                    .attempts
                    .iter()
                    .map(|(r, n)| (r.as_str(), *n))
                    .collect()
            }),
            latency_seconds: Latencies {
                operation: ops(&|o| Percentiles::of(&o.operation_us)),
                attempt: ops(&|o| Percentiles::of(&o.attempt_us)),
            },
            episodes: stats.episodes.iter().map(Episode::of).collect(),
            episodes_dropped: stats.episodes_dropped,
            longest_episode_seconds: stats.longest_episode_seconds,
            reads: verdicts(&stats.reads),
            reads_by_backend: stats
                .reads_by_backend
                .iter()
                .map(|(b, v)| (b.clone(), verdicts(v)))
                .collect(),
            reads_by_backend_dropped: stats.reads_by_backend_dropped,
            connects: PerKind::from_fn(|kind| {
                stats
                    .connects
                    .iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|((_, r), n)| (r.as_str(), *n))
                    .collect()
            }),
            replication: stats
                .replication
                .iter()
                .map(|(node, (h, timeouts))| (node.clone(), Replication::of(h, *timeouts)))
                .collect(),
            backends,
            backends_dropped,
            slo,
            internal_errors: BTreeMap::new(),
            shards: Vec::new(),
        }
    }

    fn write_summary(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n== target {}: {} ==",
            self.name,
            if self.pass { "PASS" } else { "FAIL" }
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
        let ms = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.1}", s * 1e3));
        for op in [Op::Write, Op::Read, Op::Probe] {
            let o = self.operations.get(op);
            if o.total() == 0 {
                continue;
            }
            let l = self.latency_seconds.operation.get(op);
            let _ = writeln!(
                out,
                "{:<6} {:>8.4}% {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}",
                op.as_str(),
                self.availability.get(op).unwrap_or(0.0) * 100.0,
                o.ok,
                o.recovered,
                o.failed,
                o.skipped,
                ms(l.p50),
                ms(l.p99),
                ms(l.p99_9),
                ms(l.max),
            );
        }
        let ok = ResultKind::Ok.as_str();
        let mut failed_attempts = Counts::new();
        for op in [Op::Write, Op::Read, Op::Probe] {
            for (r, n) in self.attempts.get(op) {
                if *r != ok && *n > 0 {
                    *failed_attempts.entry(r).or_default() += n;
                }
            }
        }
        let failed_attempts: Vec<String> = failed_attempts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let _ = writeln!(out, "failed attempts: {}", or_none(&failed_attempts));
        if !self.shards.is_empty() {
            let _ = writeln!(
                out,
                "{:<13} {:>8} {:>9} {:>7} {:>11} {:>12}",
                "shard", "ok", "recovered", "failed", "disruptions", "longest s"
            );
            for s in &self.shards {
                let _ = writeln!(
                    out,
                    "{:<13} {:>8} {:>9} {:>7} {:>11} {:>12.3}",
                    s.shard,
                    s.operations.ok,
                    s.operations.recovered,
                    s.operations.failed,
                    s.disruptions,
                    s.longest_disruption_seconds
                );
            }
        }
        let failed_connects: Vec<String> = Kind::ALL
            .iter()
            .flat_map(|k| {
                self.connects
                    .get(*k)
                    .iter()
                    .filter(|(r, _)| **r != ok)
                    .map(move |(r, n)| format!("{k}/{r}={n}"))
            })
            .collect();
        let _ = writeln!(out, "failed connects: {}", or_none(&failed_connects));
        let reads: Vec<String> = Verdict::ALL
            .iter()
            .map(|v| {
                format!(
                    "{}={}",
                    v.as_str(),
                    self.reads.get(v.as_str()).unwrap_or(&0)
                )
            })
            .collect();
        let _ = writeln!(out, "reads: {}", reads.join(" "));
        if self.reads_by_backend_dropped > 0 {
            let _ = writeln!(
                out,
                "reads not attributed to a backend (too many backends): {}",
                self.reads_by_backend_dropped
            );
        }
        let _ = writeln!(
            out,
            "disruption episodes: {}{}",
            self.episodes.len(),
            if self.episodes_dropped > 0 {
                format!(
                    " (+{} not kept; longest {:.3} s)",
                    self.episodes_dropped, self.longest_episode_seconds
                )
            } else {
                String::new()
            }
        );
        for e in &self.episodes {
            let results: Vec<String> = e.results.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let _ = writeln!(
                out,
                "  {} -> {}  {:>8.3} s  {}",
                e.start,
                e.end,
                e.duration_seconds,
                results.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>12}  result",
            "slo", "threshold", "measured"
        );
        for j in &self.slo {
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
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(" ")
    }
}

fn verdicts(counts: &BTreeMap<Verdict, u64>) -> Counts {
    Verdict::ALL
        .iter()
        .map(|v| (v.as_str(), counts.get(v).copied().unwrap_or(0)))
        .collect()
}

/// (ok + recovered) / all per op and over every op; `null` where nothing was scheduled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Availability {
    pub write: Option<f64>,
    pub read: Option<f64>,
    pub probe: Option<f64>,
    pub all: Option<f64>,
}

impl Availability {
    fn get(&self, op: Op) -> Option<f64> {
        match op {
            Op::Write => self.write,
            Op::Read => self.read,
            Op::Probe => self.probe,
        }
    }
}

/// Operations of one op per outcome, and its skipped ticks.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Operations {
    pub ok: u64,
    pub recovered: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Operations {
    fn of(o: &OpStats) -> Operations {
        Operations {
            ok: o.outcomes[crate::op::Outcome::Ok as usize],
            recovered: o.outcomes[crate::op::Outcome::Recovered as usize],
            failed: o.failed(),
            skipped: o.skipped,
        }
    }

    fn total(&self) -> u64 {
        self.ok + self.recovered + self.failed + self.skipped
    }
}

/// Operation latency (from the scheduled start) and attempt latency.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latencies {
    pub operation: PerOp<Percentiles>,
    pub attempt: PerOp<Percentiles>,
}

/// Percentiles of an HdrHistogram of µs, in seconds; all `null` when it is empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let q = |q: f64| quantile(h, q);
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: max(h),
        }
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn quantile(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| secs(h.value_at_quantile(q)))
}

fn max(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| secs(h.max()))
}

/// One disruption episode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Episode {
    /// RFC 3339, seconds.
    pub start: String,
    pub end: String,
    pub duration_seconds: f64,
    /// Failed attempts during the episode, per result (only those that happened).
    pub results: Counts,
}

impl Episode {
    fn of(e: &EpisodeRecord) -> Episode {
        Episode {
            start: format_unix(secs(e.start_unix_us)),
            end: format_unix(secs(e.end_unix_us)),
            duration_seconds: e.duration_seconds,
            results: e.results.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
        }
    }
}

/// One value per connection kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerKind<T> {
    pub pool: T,
    pub probe: T,
    pub node: T,
}

impl<T> PerKind<T> {
    fn from_fn(mut f: impl FnMut(Kind) -> T) -> PerKind<T> {
        PerKind {
            pool: f(Kind::Pool),
            probe: f(Kind::Probe),
            node: f(Kind::Node),
        }
    }

    fn get(&self, kind: Kind) -> &T {
        match kind {
            Kind::Pool => &self.pool,
            Kind::Probe => &self.probe,
            Kind::Node => &self.node,
        }
    }
}

/// Replication delay to one direct node, in seconds; `null` without a sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Replication {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Followed writes that did not show within `replication_timeout`.
    pub timeouts: u64,
}

impl Replication {
    fn of(h: &Histogram<u64>, timeouts: u64) -> Replication {
        Replication {
            p50: quantile(h, 0.5),
            p99: quantile(h, 0.99),
            max: max(h),
            timeouts,
        }
    }
}

/// One backend that answered the target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    pub run_id: String,
    pub role: String,
    pub version: String,
    pub addr: String,
    /// RFC 3339, seconds.
    pub first_seen: String,
    pub last_seen: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::backend::Identity;
    use crate::config::Slo;
    use crate::op::Outcome;

    pub(crate) const RUN_A: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A target's statistics touching every part of the report.
    pub(crate) fn rich_stats() -> Stats {
        let mut s = Stats::new(&Slo::default());
        let ms = Duration::from_millis;
        for _ in 0..3 {
            s.operation(Op::Write, Outcome::Ok, ms(2));
        }
        s.operation(Op::Write, Outcome::Recovered, ms(300));
        s.operation(Op::Write, Outcome::Failed, ms(3000));
        s.operation(Op::Read, Outcome::Ok, ms(1));
        s.operation(Op::Read, Outcome::Ok, ms(4));
        s.skipped(Op::Read);
        s.attempt(Op::Write, ResultKind::Ok, ms(1));
        s.attempt(Op::Write, ResultKind::Timeout, ms(500));
        s.attempt(Op::Write, ResultKind::Refused, ms(1));
        s.connect(Kind::Pool, ResultKind::Ok);
        s.connect(Kind::Pool, ResultKind::Refused);
        s.connect(Kind::Node, ResultKind::Timeout);
        let a = Identity {
            run_id: RUN_A.into(),
            ..Identity::default()
        };
        s.verdict(Verdict::Fresh, Some(&a));
        s.verdict(Verdict::Fresh, Some(&a));
        s.verdict(Verdict::Stale, None);
        s.replication("10.0.0.1:6379", Some(ms(2)));
        s.replication("10.0.0.1:6379", None);
        s.replication("10.0.0.2:6379", None);
        s.episodes.push(EpisodeRecord {
            start_unix_us: 1_700_000_000_000_000,
            end_unix_us: 1_700_000_003_250_000,
            duration_seconds: 3.25,
            results: [(ResultKind::Timeout, 1), (ResultKind::Refused, 1)].into(),
        });
        s.episodes_dropped = 2;
        s.longest_episode_seconds = 4.5;
        s
    }

    fn backend() -> Backend {
        Backend {
            run_id: RUN_A.into(),
            role: "master".into(),
            version: "7.0.15".into(),
            addr: "127.0.0.1:6379".into(),
            first_seen: "2023-11-14T22:13:20Z".into(),
            last_seen: "2023-11-14T22:13:23Z".into(),
        }
    }

    /// Every result at 0, with the given counts.
    fn attempts(counts: &[(&'static str, u64)]) -> serde_json::Value {
        let mut all: Counts = ResultKind::ALL.iter().map(|r| (r.as_str(), 0)).collect();
        all.extend(counts.iter().copied());
        json!(all)
    }

    fn verdicts(fresh: u64, stale: u64) -> serde_json::Value {
        json!({ "fresh": fresh, "lagging": 0, "stale": stale, "missing": 0, "corrupt": 0 })
    }

    #[test]
    fn a_target_reports_the_documented_schema() {
        let t = TargetReport::new("a", &rich_stats(), vec![backend()], None);
        let none = json!({ "p50": null, "p90": null, "p99": null, "p99_9": null, "max": null });
        let judged = |name: &str, threshold: f64, measured: f64, pass: bool| json!({ "name": name, "threshold": threshold, "measured": measured, "pass": pass });
        let expected = json!({
            "name": "a",
            "pass": false,
            "availability": { "write": 0.8, "read": 2.0 / 3.0, "probe": null, "all": 0.75 },
            "operations": {
                "write": { "ok": 3, "recovered": 1, "failed": 1, "skipped": 0 },
                "read": { "ok": 2, "recovered": 0, "failed": 0, "skipped": 1 },
                "probe": { "ok": 0, "recovered": 0, "failed": 0, "skipped": 0 },
            },
            "attempts": {
                "write": attempts(&[("ok", 1), ("timeout", 1), ("refused", 1)]),
                "read": attempts(&[]),
                "probe": attempts(&[]),
            },
            "latency_seconds": {
                // HdrHistogram with 3 significant digits: each value is its bucket's top.
                "operation": {
                    "write": { "p50": 0.002, "p90": 3.000319, "p99": 3.000319,
                               "p99_9": 3.000319, "max": 3.000319 },
                    "read": { "p50": 0.001, "p90": 0.004001, "p99": 0.004001,
                              "p99_9": 0.004001, "max": 0.004001 },
                    "probe": none,
                },
                "attempt": {
                    "write": { "p50": 0.001, "p90": 0.500223, "p99": 0.500223,
                               "p99_9": 0.500223, "max": 0.500223 },
                    "read": none,
                    "probe": none,
                },
            },
            "episodes": [{
                "start": "2023-11-14T22:13:20Z",
                "end": "2023-11-14T22:13:23Z",
                "duration_seconds": 3.25,
                "results": { "refused": 1, "timeout": 1 },
            }],
            "episodes_dropped": 2,
            "longest_episode_seconds": 4.5,
            "reads": verdicts(2, 1),
            "reads_by_backend": { RUN_A: verdicts(2, 0), "unknown": verdicts(0, 1) },
            "reads_by_backend_dropped": 0,
            "connects": { "pool": { "ok": 1, "refused": 1 }, "probe": {}, "node": { "timeout": 1 } },
            "replication": {
                "10.0.0.1:6379": { "p50": 0.002, "p99": 0.002, "max": 0.002, "timeouts": 1 },
                "10.0.0.2:6379": { "p50": null, "p99": null, "max": null, "timeouts": 1 },
            },
            "backends": [{
                "run_id": RUN_A, "role": "master", "version": "7.0.15", "addr": "127.0.0.1:6379",
                "first_seen": "2023-11-14T22:13:20Z", "last_seen": "2023-11-14T22:13:23Z",
            }],
            "slo": [
                judged("min_availability", 1.0, 0.75, false),
                judged("max_failed_operations", 0.0, 1.0, false),
                judged("max_disruption", 0.0, 4.5, false),
                judged("max_stale_reads", 0.0, 1.0, false),
                judged("max_missing_reads", 0.0, 0.0, true),
                judged("max_corrupt_reads", 0.0, 0.0, true),
                judged("p99_operation", 0.05, 3.000319, false),
            ],
            "internal_errors": {},
        });
        assert_eq!(serde_json::to_value(&t).unwrap(), expected);
        // Fields are written in the documented order, not alphabetically.
        let text = serde_json::to_string(&t).unwrap();
        let at = |field: &str| text.find(&format!("\"{field}\":")).expect(field);
        assert!(at("name") < at("availability") && at("availability") < at("slo"));
    }

    #[test]
    fn a_known_backend_count_is_reported_and_an_unknown_one_left_out() {
        let stats = Stats::new(&Slo::default());
        let known = serde_json::to_value(TargetReport::new("a", &stats, vec![], Some(3))).unwrap();
        assert_eq!(known["backends_dropped"], 3);
        let unknown = serde_json::to_value(TargetReport::new("a", &stats, vec![], None)).unwrap();
        assert!(unknown.get("backends_dropped").is_none());
    }

    #[test]
    fn the_run_passes_only_when_every_target_passes_and_it_was_not_interrupted() {
        let mut good = Stats::new(&Slo::default());
        good.operation(Op::Write, Outcome::Ok, Duration::from_millis(1));
        let pass = || TargetReport::new("good", &good, vec![], None);
        let fail = TargetReport::new("bad", &rich_stats(), vec![], None);
        assert!(pass().pass && !fail.pass);

        let r = Report::new(1_700_000_000.0, 1_700_000_030.5, false, vec![pass()]);
        assert!(r.pass);
        let top = serde_json::to_value(&r).unwrap();
        assert_eq!(top["schema"], 1);
        assert_eq!(top["started_at"], "2023-11-14T22:13:20Z");
        assert_eq!(top["ended_at"], "2023-11-14T22:13:50Z");
        assert_eq!(top["duration_seconds"], 30.5);
        assert_eq!(top["interrupted"], false);
        assert_eq!(top["pass"], true);
        assert_eq!(top["targets"][0]["name"], "good");
        assert!(r.to_json().ends_with("}\n"));
        assert!(
            r.summary().ends_with("\nverdict: PASS\n"),
            "{}",
            r.summary()
        );

        let r = Report::new(0.0, 1.0, false, vec![pass(), fail.clone()]);
        assert!(!r.pass);
        assert!(r.summary().ends_with("\nverdict: FAIL\n"));
        let r = Report::new(0.0, 1.0, true, vec![pass()]);
        assert!(!r.pass);
        assert!(r.summary().ends_with("\nverdict: FAIL (interrupted)\n"));
        // No target at all is a pass unless interrupted: there was nothing to judge.
        assert!(Report::new(0.0, 1.0, false, vec![]).pass);
    }

    #[test]
    fn the_summary_shows_the_tables_of_each_target() {
        let t = TargetReport::new("a", &rich_stats(), vec![backend()], None);
        let summary = Report::new(0.0, 1.0, false, vec![t]).summary();
        let expected = [
            "== target a: FAIL ==",
            "write   80.0000%        3         1       1       0      2.0   3000.3   3000.3    3000.3",
            "read    66.6667%        2         0       0       1      1.0      4.0      4.0       4.0",
            "failed attempts: refused=1 timeout=1",
            "failed connects: pool/refused=1 node/timeout=1",
            "reads: fresh=2 lagging=0 stale=1 missing=0 corrupt=0",
            "disruption episodes: 1 (+2 not kept; longest 4.500 s)",
            "  2023-11-14T22:13:20Z -> 2023-11-14T22:13:23Z     3.250 s  refused=1 timeout=1",
            "max_disruption               0.0000       4.5000  FAIL",
            "max_missing_reads            0.0000       0.0000  pass",
        ];
        for line in expected {
            assert!(summary.lines().any(|l| l == line), "{line:?} in\n{summary}");
        }
        // An op that never ran has no row.
        assert!(
            !summary.lines().any(|l| l.starts_with("probe")),
            "{summary}"
        );
    }
}
