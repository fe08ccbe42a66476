//! The metric families of DESIGN §6: [`Metrics`] owns the registry and every family;
//! [`TargetMetrics`] holds pre-resolved handles for one target, so the hot path increments
//! atomics without hashing label sets or taking the family lock.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::classify::{InternalCause, ResultKind};
use crate::ledger::Verdict;
use crate::op::{Kind, Op, Outcome};

/// Bucket edges for operation, attempt, connect and replication latencies: a 1-2-5 series
/// from 100 µs (a loopback round trip) to 10 s (the default retry cap). SLO thresholds such
/// as 50 ms fall on bucket edges, so `histogram_quantile` and `le` selectors are exact there
/// instead of interpolated across a wide bucket.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    10.0,
];

/// Bucket edges for disruption lengths: a 1-2-5 series from 100 ms (a blip absorbed by one
/// retry) to 1 h (an outage nobody should still be measuring with a canary).
pub const DISRUPTION_BUCKETS: [f64; 15] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 3600.0,
];

/// Latency bucket edges of the lean profile: the edges that alerts, defaults and SLOs use,
/// and little else. 1 ms (a healthy loopback or same-zone round trip below it), 5 ms and
/// 10 ms (common p99 SLOs), 50 ms (the default `p99_operation` and the latency alert), 100 ms,
/// 500 ms (the default `response_timeout`: an attempt past it is a timeout), 1 s (the default
/// `connect_timeout` and `stale_grace`, the replication-delay alert) and 5 s (the default
/// `replication_timeout`). Every edge is also an edge of [`LATENCY_BUCKETS`], so a query
/// written for one profile reads the same `le` values under the other.
pub const LEAN_LATENCY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Disruption bucket edges of the lean profile: under a second (absorbed by a retry or
/// two), 10 s (the failover alert's edge), 100 s, 1,000 s and 1 h; all are edges of
/// [`DISRUPTION_BUCKETS`].
pub const LEAN_DISRUPTION_BUCKETS: [f64; 6] = [1.0, 5.0, 10.0, 100.0, 1000.0, 3600.0];

/// How much `/metrics` says per target (global `metrics_profile`). `Full` is DESIGN §6;
/// `Lean` keeps every metric name and label of it but the attempt and connect latency
/// histograms, and uses the coarser buckets above: about half the series and bytes per
/// target, for processes with thousands of targets (README "Sizing").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsProfile {
    #[default]
    Full,
    Lean,
}

impl MetricsProfile {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsProfile::Full => "full",
            MetricsProfile::Lean => "lean",
        }
    }

    /// The profile named `text` in the configuration.
    pub fn parse(text: &str) -> Option<MetricsProfile> {
        match text {
            "full" => Some(MetricsProfile::Full),
            "lean" => Some(MetricsProfile::Lean),
            _ => None,
        }
    }

    /// Latency bucket edges (operation, attempt, connect, replication).
    pub fn latency_buckets(self) -> &'static [f64] {
        match self {
            MetricsProfile::Full => &LATENCY_BUCKETS,
            MetricsProfile::Lean => &LEAN_LATENCY_BUCKETS,
        }
    }

    /// Disruption-length bucket edges.
    pub fn disruption_buckets(self) -> &'static [f64] {
        match self {
            MetricsProfile::Full => &DISRUPTION_BUCKETS,
            MetricsProfile::Lean => &LEAN_DISRUPTION_BUCKETS,
        }
    }
}

/// The wall-clock gauges hold fractional seconds.
pub type F64Gauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub target: String,
    pub op: Op,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub target: String,
    pub op: Op,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub target: String,
    pub op: Op,
    pub result: ResultKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub target: String,
    pub op: Op,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub target: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectLabels {
    pub target: String,
    pub kind: Kind,
    pub result: ResultKind,
}

/// Identity of a backend, validated before it becomes a label (see [`crate::backend`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub target: String,
    pub run_id: String,
    pub role: String,
    pub version: String,
    pub addr: String,
}

impl BackendLabels {
    /// The labels of backend `id` of `target` (its fields are validated by `backend`).
    pub fn of(target: &str, id: &crate::backend::Identity) -> BackendLabels {
        BackendLabels {
            target: target.to_string(),
            run_id: id.run_id.clone(),
            role: id.role.clone(),
            version: id.version.clone(),
            addr: id.addr.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InternalLabels {
    pub target: String,
    pub cause: InternalCause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub target: String,
    pub node: String,
}

/// One sentinel of a sentinel target: `sentinel` is host:port, never credentials.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentinelLabels {
    pub target: String,
    pub sentinel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

/// The exemplar of a traced operation: its trace id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

/// A duration histogram whose samples may carry the trace id of a traced operation.
pub type TracedHistogram = HistogramWithExemplars<TraceLabels>;

type HistogramCtor = fn() -> Histogram;
type TracedCtor = fn() -> TracedHistogram;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type TracedFamily<L> = Family<L, TracedHistogram, fn() -> TracedHistogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn traced_latency_histogram() -> TracedHistogram {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

fn disruption_histogram() -> Histogram {
    Histogram::new(DISRUPTION_BUCKETS)
}

fn lean_latency_histogram() -> Histogram {
    Histogram::new(LEAN_LATENCY_BUCKETS)
}

fn lean_traced_latency_histogram() -> TracedHistogram {
    HistogramWithExemplars::new(LEAN_LATENCY_BUCKETS.into_iter())
}

fn lean_disruption_histogram() -> Histogram {
    Histogram::new(LEAN_DISRUPTION_BUCKETS)
}

/// A histogram that belongs to no family, for what a profile does not export: observing it
/// costs a few atomic adds on its one (+Inf) bucket and nothing reads it.
fn unexported_histogram() -> Histogram {
    Histogram::new(std::iter::empty())
}

fn unexported_traced_histogram() -> TracedHistogram {
    HistogramWithExemplars::new(std::iter::empty())
}

/// Every family, registered under the `redis_canary` prefix.
pub struct Metrics {
    registry: Registry,
    profile: MetricsProfile,
    operations: Family<OutcomeLabels, Counter>,
    attempts: Family<ResultLabels, Counter>,
    retries: Family<OpLabels, Counter>,
    operation_duration: TracedFamily<OpLabels>,
    attempt_duration: TracedFamily<OpLabels>,
    skipped_ticks: Family<OpLabels, Counter>,
    reads: Family<VerdictLabels, Counter>,
    disruptions: Family<TargetLabels, Counter>,
    disruption_duration: HistogramFamily<TargetLabels>,
    disrupted: Family<TargetLabels, Gauge>,
    disruption_start: Family<TargetLabels, F64Gauge>,
    last_success: Family<OpLabels, F64Gauge>,
    connects: Family<ConnectLabels, Counter>,
    connect_duration: HistogramFamily<KindLabels>,
    connection_drops: Family<KindLabels, Counter>,
    backend_info: Family<BackendLabels, Gauge>,
    backend_switches: Family<TargetLabels, Counter>,
    internal_errors: Family<InternalLabels, Counter>,
    backend_restarts: Family<TargetLabels, Counter>,
    node_up: Family<NodeLabels, Gauge>,
    replication_delay: HistogramFamily<NodeLabels>,
    replication_timeouts: Family<NodeLabels, Counter>,
    sentinel_up: Family<SentinelLabels, Gauge>,
    sentinel_master_switches: Family<TargetLabels, Counter>,
    sentinel_masters: Family<TargetLabels, Gauge>,
    discovery_errors: Family<TargetLabels, Counter>,
    /// The shard and cluster families of cluster targets (DESIGN §12.2).
    pub cluster: crate::topology::cluster::book::ClusterFamilies,
    /// Reloads (DESIGN §14): whether the last one was applied, and when one last was.
    pub config_reload_ok: Gauge,
    pub config_reload_at: F64Gauge,
    /// Targets this replica owns and runs (all of them without `shard`).
    pub shard_targets: Gauge,
}

/// The label sets of one target's series that configuration alone does not fix, which
/// [`Metrics::remove_target`] must be told.
#[derive(Debug, Default)]
pub struct OpenSeries {
    /// `node` labels (host:port) of its followed nodes.
    pub nodes: Vec<String>,
    /// Identities of its backends in `backend_info`.
    pub backends: Vec<crate::backend::Identity>,
    /// `sentinel` labels (host:port) of a sentinel target.
    pub sentinels: Vec<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family of the full profile (DESIGN §6).
    pub fn new() -> Metrics {
        Self::with_profile(MetricsProfile::Full)
    }

    /// Creates and registers every family `profile` exports. Names are given without
    /// `_total` and unit suffixes: prometheus-client appends them (and panics in debug
    /// builds if we do).
    pub fn with_profile(profile: MetricsProfile) -> Metrics {
        let mut registry = Registry::with_prefix("redis_canary");
        let lean = profile == MetricsProfile::Lean;
        let (traced, latency, disruption): (TracedCtor, HistogramCtor, HistogramCtor) = if lean {
            (
                lean_traced_latency_histogram,
                lean_latency_histogram,
                lean_disruption_histogram,
            )
        } else {
            (
                traced_latency_histogram,
                latency_histogram,
                disruption_histogram,
            )
        };
        let m = Metrics {
            registry: Registry::default(),
            profile,
            operations: Family::default(),
            attempts: Family::default(),
            retries: Family::default(),
            operation_duration: Family::new_with_constructor(traced),
            attempt_duration: Family::new_with_constructor(traced),
            skipped_ticks: Family::default(),
            reads: Family::default(),
            disruptions: Family::default(),
            disruption_duration: Family::new_with_constructor(disruption),
            disrupted: Family::default(),
            disruption_start: Family::default(),
            last_success: Family::default(),
            connects: Family::default(),
            connect_duration: Family::new_with_constructor(latency),
            connection_drops: Family::default(),
            backend_info: Family::default(),
            backend_switches: Family::default(),
            internal_errors: Family::default(),
            backend_restarts: Family::default(),
            node_up: Family::default(),
            replication_delay: Family::new_with_constructor(latency),
            replication_timeouts: Family::default(),
            sentinel_up: Family::default(),
            sentinel_master_switches: Family::default(),
            sentinel_masters: Family::default(),
            discovery_errors: Family::default(),
            cluster: crate::topology::cluster::book::ClusterFamilies::new(disruption),
            config_reload_ok: Gauge::default(),
            config_reload_at: F64Gauge::default(),
            shard_targets: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "operations",
            "Operations by final outcome: ok on the first try, recovered after at least one retry, failed when retries ran out or the server refused for good",
            m.operations.clone(),
        );
        r.register(
            "internal_errors",
            "Failures of the canary itself (out of file descriptors, memory or local ports), by cause: never counted against the target",
            m.internal_errors.clone(),
        );
        r.register(
            "attempts",
            "Every attempt on an open connection, by classified result",
            m.attempts.clone(),
        );
        r.register("retries", "Attempts beyond the first", m.retries.clone());
        r.register_with_unit(
            "operation_duration",
            "Scheduled start to final outcome, retries and backoff included",
            Unit::Seconds,
            m.operation_duration.clone(),
        );
        // The lean profile does not export these two (README "Sizing"): operation latency
        // and the attempt and connect counters stay.
        if !lean {
            r.register_with_unit(
                "attempt_duration",
                "Request sent to reply or timeout",
                Unit::Seconds,
                m.attempt_duration.clone(),
            );
        }
        r.register(
            "skipped_ticks",
            "Scheduled operations that could not start because the pending set was full",
            m.skipped_ticks.clone(),
        );
        r.register(
            "reads",
            "Reads by verdict against the ledger of acknowledged writes",
            m.reads.clone(),
        );
        r.register(
            "disruptions",
            "Disruption episodes started",
            m.disruptions.clone(),
        );
        r.register_with_unit(
            "disruption_duration",
            "Length of each ended disruption episode",
            Unit::Seconds,
            m.disruption_duration.clone(),
        );
        r.register(
            "disrupted",
            "1 while the target is in a disruption episode",
            m.disrupted.clone(),
        );
        r.register_with_unit(
            "disruption_start_timestamp",
            "Start of the current or last disruption episode (Unix time)",
            Unit::Seconds,
            m.disruption_start.clone(),
        );
        r.register_with_unit(
            "last_success_timestamp",
            "Wall clock of the last successful attempt (the target's start at first: process start or the reload that added it)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        r.register(
            "connects",
            "Connection attempts, reconnects included, by result",
            m.connects.clone(),
        );
        if !lean {
            r.register_with_unit(
                "connect_duration",
                "TCP + TLS + AUTH/SELECT/CLIENT SETNAME and backend identification",
                Unit::Seconds,
                m.connect_duration.clone(),
            );
        }
        r.register(
            "connection_drops",
            "Connections the peer or the network closed",
            m.connection_drops.clone(),
        );
        r.register(
            "backend_info",
            "Backends seen within backend_ttl, by validated identity",
            m.backend_info.clone(),
        );
        r.register(
            "backend_switches",
            "Pooled connection slots that reconnected to a different run_id",
            m.backend_switches.clone(),
        );
        r.register(
            "backend_restarts",
            "New run_id seen at an address already known",
            m.backend_restarts.clone(),
        );
        r.register(
            "node_up",
            "1 while the direct node answers",
            m.node_up.clone(),
        );
        r.register_with_unit(
            "replication_delay",
            "Write acknowledged through the endpoint to value visible on the node",
            Unit::Seconds,
            m.replication_delay.clone(),
        );
        r.register(
            "replication_timeouts",
            "Writes not visible on the node within replication_timeout",
            m.replication_timeouts.clone(),
        );
        r.register(
            "sentinel_up",
            "1 while the sentinel answers (sentinel targets, DESIGN §12.1)",
            m.sentinel_up.clone(),
        );
        r.register(
            "sentinel_master_switches",
            "Changes of the master of a sentinel target: a +switch-master message, or a new master found by a connect or a refresh",
            m.sentinel_master_switches.clone(),
        );
        r.register(
            "sentinel_masters",
            "Distinct master addresses the reachable sentinels name: 1 when they agree, more is a split view",
            m.sentinel_masters.clone(),
        );
        m.cluster.register(r);
        r.register(
            "config_last_reload_successful",
            "1 when the last configuration reload (SIGHUP or POST /-/reload) was applied, 0 when it was rejected and the previous configuration kept running",
            m.config_reload_ok.clone(),
        );
        r.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the configuration was last loaded successfully, at start or by a reload (Unix time)",
            Unit::Seconds,
            m.config_reload_at.clone(),
        );
        r.register(
            "shard_targets",
            "Targets this replica owns and measures (all of them without shard)",
            m.shard_targets.clone(),
        );
        r.register(
            "discovery_errors",
            "Rounds of DNS node discovery that failed (timeout, SERVFAIL, refused): the last good set of nodes is kept",
            m.discovery_errors.clone(),
        );
        r.register(
            "build",
            "Version and revision of this binary",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                revision: option_env!("REDIS_CANARY_REVISION")
                    .unwrap_or("unknown")
                    .to_string(),
            }),
        );
        Metrics { registry, ..m }
    }

    /// The profile this registry exports.
    pub fn profile(&self) -> MetricsProfile {
        self.profile
    }

    /// Creates every closed-label series of one target at 0 and returns its handles.
    pub fn target(&self, name: &str) -> TargetMetrics {
        let full = self.profile == MetricsProfile::Full;
        let t = || name.to_string();
        let tl = TargetLabels { target: t() };
        let op = |op: Op| {
            let ol = OpLabels { target: t(), op };
            OpMetrics {
                outcomes: Outcome::ALL
                    .iter()
                    .map(|&outcome| {
                        self.operations.get_or_create_owned(&OutcomeLabels {
                            target: t(),
                            op,
                            outcome,
                        })
                    })
                    .collect(),
                attempts: ResultKind::ALL
                    .iter()
                    .map(|&result| {
                        self.attempts.get_or_create_owned(&ResultLabels {
                            target: t(),
                            op,
                            result,
                        })
                    })
                    .collect(),
                retries: self.retries.get_or_create_owned(&ol),
                operation_duration: self.operation_duration.get_or_create_owned(&ol),
                attempt_duration: if full {
                    self.attempt_duration.get_or_create_owned(&ol)
                } else {
                    unexported_traced_histogram()
                },
                skipped_ticks: self.skipped_ticks.get_or_create_owned(&ol),
                reads: Verdict::ALL
                    .iter()
                    .map(|&verdict| {
                        if op == Op::Write {
                            Counter::default() // writes have no verdicts: not exported
                        } else {
                            self.reads.get_or_create_owned(&VerdictLabels {
                                target: t(),
                                op,
                                verdict,
                            })
                        }
                    })
                    .collect(),
                last_success: self.last_success.get_or_create_owned(&ol),
            }
        };
        let kind = |kind: Kind| {
            let kl = KindLabels { target: t(), kind };
            KindMetrics {
                connects: ResultKind::ALL
                    .iter()
                    .map(|&result| {
                        self.connects.get_or_create_owned(&ConnectLabels {
                            target: t(),
                            kind,
                            result,
                        })
                    })
                    .collect(),
                connect_duration: if full {
                    self.connect_duration.get_or_create_owned(&kl)
                } else {
                    unexported_histogram()
                },
                drops: self.connection_drops.get_or_create_owned(&kl),
            }
        };
        TargetMetrics {
            name: name.to_string(),
            ops: [op(Op::Write), op(Op::Read), op(Op::Probe)],
            kinds: [kind(Kind::Pool), kind(Kind::Probe), kind(Kind::Node)],
            disruptions: self.disruptions.get_or_create_owned(&tl),
            disruption_duration: self.disruption_duration.get_or_create_owned(&tl),
            disrupted: self.disrupted.get_or_create_owned(&tl),
            disruption_start: self.disruption_start.get_or_create_owned(&tl),
            backend_switches: self.backend_switches.get_or_create_owned(&tl),
            internal_errors: InternalCause::ALL
                .iter()
                .map(|&cause| {
                    self.internal_errors
                        .get_or_create_owned(&InternalLabels { target: t(), cause })
                })
                .collect(),
            backend_restarts: self.backend_restarts.get_or_create_owned(&tl),
            backend_info: self.backend_info.clone(),
            node_up: self.node_up.clone(),
            replication_delay: self.replication_delay.clone(),
            replication_timeouts: self.replication_timeouts.clone(),
        }
    }

    /// Creates the sentinel series of a sentinel target at 0 (one `sentinel_up` per
    /// host:port in `sentinels`) and returns their handles.
    pub fn sentinel(&self, target: &str, sentinels: &[String]) -> SentinelMetrics {
        let tl = TargetLabels {
            target: target.to_string(),
        };
        SentinelMetrics {
            up: sentinels
                .iter()
                .map(|s| {
                    self.sentinel_up.get_or_create_owned(&SentinelLabels {
                        target: target.to_string(),
                        sentinel: s.clone(),
                    })
                })
                .collect(),
            master_switches: self.sentinel_master_switches.get_or_create_owned(&tl),
            masters: self.sentinel_masters.get_or_create_owned(&tl),
        }
    }

    /// Creates `discovery_errors_total` of a target whose nodes DNS lists, at 0, and
    /// returns its handle.
    pub fn discovery(&self, target: &str) -> Counter {
        self.discovery_errors.get_or_create_owned(&TargetLabels {
            target: target.to_string(),
        })
    }

    /// Removes every series of the target `name`: the closed label sets, plus the open ones
    /// in `open`. Its loops must have stopped first, or they could create some again.
    pub fn remove_target(&self, name: &str, open: &OpenSeries) {
        let t = || name.to_string();
        let tl = TargetLabels { target: t() };
        for &op in Op::ALL.iter() {
            let ol = OpLabels { target: t(), op };
            for &outcome in Outcome::ALL.iter() {
                self.operations.remove(&OutcomeLabels {
                    target: t(),
                    op,
                    outcome,
                });
            }
            for &result in ResultKind::ALL.iter() {
                self.attempts.remove(&ResultLabels {
                    target: t(),
                    op,
                    result,
                });
            }
            for &verdict in Verdict::ALL.iter() {
                self.reads.remove(&VerdictLabels {
                    target: t(),
                    op,
                    verdict,
                });
            }
            self.retries.remove(&ol);
            self.operation_duration.remove(&ol);
            self.attempt_duration.remove(&ol);
            self.skipped_ticks.remove(&ol);
            self.last_success.remove(&ol);
        }
        for kind in [Kind::Pool, Kind::Probe, Kind::Node] {
            let kl = KindLabels { target: t(), kind };
            for &result in ResultKind::ALL.iter() {
                self.connects.remove(&ConnectLabels {
                    target: t(),
                    kind,
                    result,
                });
            }
            self.connect_duration.remove(&kl);
            self.connection_drops.remove(&kl);
        }
        for &cause in InternalCause::ALL.iter() {
            self.internal_errors
                .remove(&InternalLabels { target: t(), cause });
        }
        self.disruptions.remove(&tl);
        self.disruption_duration.remove(&tl);
        self.disrupted.remove(&tl);
        self.disruption_start.remove(&tl);
        self.backend_switches.remove(&tl);
        self.backend_restarts.remove(&tl);
        self.sentinel_master_switches.remove(&tl);
        self.sentinel_masters.remove(&tl);
        for node in &open.nodes {
            let nl = NodeLabels {
                target: t(),
                node: node.clone(),
            };
            self.node_up.remove(&nl);
            self.replication_delay.remove(&nl);
            self.replication_timeouts.remove(&nl);
        }
        for id in &open.backends {
            self.backend_info.remove(&BackendLabels::of(name, id));
        }
        for sentinel in &open.sentinels {
            self.sentinel_up.remove(&SentinelLabels {
                target: t(),
                sentinel: sentinel.clone(),
            });
        }
        self.discovery_errors.remove(&TargetLabels { target: t() });
    }

    /// The exposition in OpenMetrics text.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Handles for one op of one target.
pub struct OpMetrics {
    outcomes: Vec<Counter>,
    attempts: Vec<Counter>,
    pub retries: Counter,
    pub operation_duration: TracedHistogram,
    pub attempt_duration: TracedHistogram,
    pub skipped_ticks: Counter,
    reads: Vec<Counter>,
    pub last_success: F64Gauge,
}

impl OpMetrics {
    pub fn outcome(&self, o: Outcome) -> &Counter {
        &self.outcomes[o as usize]
    }
    pub fn attempt(&self, r: ResultKind) -> &Counter {
        &self.attempts[r as usize]
    }
    pub fn read(&self, v: Verdict) -> &Counter {
        &self.reads[v as usize]
    }
}

/// Handles for one connection kind of one target.
pub struct KindMetrics {
    connects: Vec<Counter>,
    pub connect_duration: Histogram,
    pub drops: Counter,
}

impl KindMetrics {
    pub fn connect(&self, r: ResultKind) -> &Counter {
        &self.connects[r as usize]
    }
}

/// Handles for the sentinel side of one sentinel target.
pub struct SentinelMetrics {
    /// By sentinel, in configuration order.
    pub up: Vec<Gauge>,
    pub master_switches: Counter,
    pub masters: Gauge,
}

/// Handles for one target.
pub struct TargetMetrics {
    pub name: String,
    ops: [OpMetrics; 3],
    kinds: [KindMetrics; 3],
    pub disruptions: Counter,
    pub disruption_duration: Histogram,
    pub disrupted: Gauge,
    pub disruption_start: F64Gauge,
    pub backend_switches: Counter,
    /// By [`InternalCause`], in its `ALL` order.
    internal_errors: Vec<Counter>,
    pub backend_restarts: Counter,
    pub backend_info: Family<BackendLabels, Gauge>,
    pub node_up: Family<NodeLabels, Gauge>,
    pub replication_delay: HistogramFamily<NodeLabels>,
    pub replication_timeouts: Family<NodeLabels, Counter>,
}

impl TargetMetrics {
    pub fn op(&self, op: Op) -> &OpMetrics {
        &self.ops[op.index()]
    }
    pub fn kind(&self, kind: Kind) -> &KindMetrics {
        &self.kinds[kind as usize]
    }
    pub fn internal(&self, cause: InternalCause) -> &Counter {
        &self.internal_errors[cause as usize]
    }
    /// Canary-side failures of this target's loops so far, all causes.
    pub fn internal_total(&self) -> u64 {
        self.internal_errors.iter().map(Counter::get).sum()
    }
}

/// Rewrites OpenMetrics text into the Prometheus text format 0.0.4, for scrapers that ask
/// for `text/plain`: counters are named with their `_total` suffix in HELP/TYPE, `info`
/// becomes a gauge named `*_info`, and UNIT lines, exemplars and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut renamed: Vec<(&str, &str, &str)> = Vec::new(); // (family, suffix, type)
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, ty) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match ty {
                "counter" => renamed.push((name, "_total", "counter")),
                "info" => renamed.push((name, "_info", "gauge")),
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some((kind, rest)) = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)))
        {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((_, suffix, ty)) = renamed.iter().find(|(n, _, _)| *n == name) {
                let tail = if kind == "TYPE" { ty } else { tail };
                out.push_str(&format!("# {kind} {name}{suffix} {tail}\n"));
                continue;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Exemplars follow the value after " # ".
        let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_closed_series_of_a_target_exists_at_zero() {
        let m = Metrics::new();
        let _t = m.target("a");
        let text = m.encode_openmetrics();
        for line in [
            r#"redis_canary_operations_total{target="a",op="write",outcome="recovered"} 0"#,
            r#"redis_canary_attempts_total{target="a",op="read",result="masterdown"} 0"#,
            r#"redis_canary_reads_total{target="a",op="probe",verdict="corrupt"} 0"#,
            r#"redis_canary_connects_total{target="a",kind="node",result="auth"} 0"#,
            r#"redis_canary_skipped_ticks_total{target="a",op="write"} 0"#,
            r#"redis_canary_disrupted{target="a"} 0"#,
            r#"redis_canary_operation_duration_seconds_bucket{le="0.05",target="a",op="read"} 0"#,
            r#"redis_canary_disruption_duration_seconds_bucket{le="3600.0",target="a"} 0"#,
            r#"redis_canary_build_info{version=""#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(!text.contains(r#"op="write",verdict"#));
    }

    #[test]
    fn the_sentinel_series_of_a_sentinel_target_exist_at_zero() {
        let m = Metrics::new();
        let s = m.sentinel("c", &["10.0.0.1:26379".into(), "10.0.0.2:26379".into()]);
        s.up[1].set(1);
        let text = m.encode_openmetrics();
        for line in [
            r#"redis_canary_sentinel_up{target="c",sentinel="10.0.0.1:26379"} 0"#,
            r#"redis_canary_sentinel_up{target="c",sentinel="10.0.0.2:26379"} 1"#,
            r#"redis_canary_sentinel_master_switches_total{target="c"} 0"#,
            r#"redis_canary_sentinel_masters{target="c"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn discovery_errors_exist_at_zero_and_count() {
        let m = Metrics::new();
        let errors = m.discovery("d");
        let line = |n: u64| format!(r#"redis_canary_discovery_errors_total{{target="d"}} {n}"#);
        assert!(m.encode_openmetrics().contains(&line(0)));
        errors.inc();
        assert!(m.encode_openmetrics().contains(&line(1)));
    }

    #[test]
    fn handles_update_the_exported_series() {
        let m = Metrics::new();
        let t = m.target("a");
        t.op(Op::Read).outcome(Outcome::Recovered).inc();
        t.op(Op::Read).attempt(ResultKind::Timeout).inc_by(2);
        t.kind(Kind::Pool).connect(ResultKind::Refused).inc();
        let text = m.encode_openmetrics();
        assert!(text.contains(
            r#"redis_canary_operations_total{target="a",op="read",outcome="recovered"} 1"#
        ));
        assert!(
            text.contains(
                r#"redis_canary_attempts_total{target="a",op="read",result="timeout"} 2"#
            )
        );
        assert!(
            text.contains(
                r#"redis_canary_connects_total{target="a",kind="pool",result="refused"} 1"#
            )
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_drops_openmetrics_only_lines() {
        let m = Metrics::new();
        let _t = m.target("a");
        let text = to_prometheus_text(&m.encode_openmetrics());
        assert!(text.contains("# TYPE redis_canary_operations_total counter\n"));
        assert!(text.contains("# TYPE redis_canary_build_info gauge\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }

    #[test]
    fn removing_a_target_removes_every_one_of_its_series_and_no_other() {
        let m = Metrics::new();
        let a = m.target("a");
        let _b = m.target("b");
        let _s = m.sentinel("a", &["10.0.0.1:26379".into()]);
        a.node_up
            .get_or_create(&NodeLabels {
                target: "a".into(),
                node: "n:1".into(),
            })
            .set(1);
        let id = crate::backend::Identity {
            run_id: "r1".into(),
            role: "master".into(),
            version: "7.2.0".into(),
            addr: "h:1".into(),
        };
        a.backend_info
            .get_or_create(&BackendLabels::of("a", &id))
            .set(1);
        let before = m.encode_openmetrics();
        assert!(before.contains(r#"target="a""#));
        m.remove_target(
            "a",
            &OpenSeries {
                nodes: vec!["n:1".into()],
                backends: vec![id],
                sentinels: vec!["10.0.0.1:26379".into()],
            },
        );
        let after = m.encode_openmetrics();
        assert!(!after.contains(r#"target="a""#), "{after}");
        let b_lines = |text: &str| text.lines().filter(|l| l.contains(r#"target="b""#)).count();
        assert_eq!(b_lines(&after), b_lines(&before));
        assert!(b_lines(&after) > 100);
    }

    #[test]
    fn buckets_are_increasing_and_include_the_default_slo() {
        for profile in [MetricsProfile::Full, MetricsProfile::Lean] {
            for set in [profile.latency_buckets(), profile.disruption_buckets()] {
                for w in set.windows(2) {
                    assert!(w[0] < w[1], "{profile:?}");
                }
            }
            // The default p99_operation SLO and the replication-delay alert (stale_grace).
            assert!(profile.latency_buckets().contains(&0.05), "{profile:?}");
            assert!(profile.latency_buckets().contains(&1.0), "{profile:?}");
            assert!(profile.disruption_buckets().contains(&10.0), "{profile:?}");
        }
        // Lean edges are full edges: `le` selectors read the same under both profiles.
        for le in LEAN_LATENCY_BUCKETS {
            assert!(LATENCY_BUCKETS.contains(&le), "{le}");
        }
        for le in LEAN_DISRUPTION_BUCKETS {
            assert!(DISRUPTION_BUCKETS.contains(&le), "{le}");
        }
    }

    /// One target with a direct node and a sentinel, every kind of series touched once, the
    /// exposition under `profile`.
    /// The exposition of one standalone target "a" and, to cover every family the alerts
    /// and the dashboard use, one cluster target "c".
    fn exposition(profile: MetricsProfile) -> String {
        let m = Metrics::with_profile(profile);
        let t = m.target("a");
        let _cluster = m.cluster.target("c");
        let shards = crate::topology::cluster::book::ShardBook::new(
            "c",
            &m.cluster,
            crate::clock::Clock::new(),
        );
        shards.label("0-16383");
        let node = NodeLabels {
            target: "a".into(),
            node: "10.0.0.9:6379".into(),
        };
        t.node_up.get_or_create(&node).set(1);
        t.replication_delay.get_or_create(&node).observe(0.01);
        t.replication_timeouts.get_or_create(&node).inc();
        t.backend_info
            .get_or_create(&BackendLabels {
                target: "a".into(),
                run_id: "0".repeat(40),
                role: "master".into(),
                version: "7.0.15".into(),
                addr: "10.0.0.9:6379".into(),
            })
            .set(1);
        t.disruption_duration.observe(3.0);
        t.op(Op::Read).attempt_duration.observe(0.001, None, None);
        t.kind(Kind::Pool).connect_duration.observe(0.001);
        let _s = m.sentinel("a", &["10.0.0.1:26379".into()]);
        m.encode_openmetrics()
    }

    /// Sample names (`name{...} value` or `name value`) of an exposition.
    fn sample_names(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    }

    /// `redis_canary_*` names in a rules file or a dashboard.
    fn names_in(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("redis_canary_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
        out
    }

    /// `le="..."` values a rules file or a dashboard selects.
    fn le_values_in(text: &str) -> BTreeSet<String> {
        text.split("le=")
            .skip(1)
            .filter_map(|s| s.trim_start_matches('\\').strip_prefix('"'))
            .filter_map(|s| s.split(['"', '\\']).next())
            .map(str::to_string)
            .collect()
    }

    use std::collections::BTreeSet;

    const RULES: &str = include_str!("../alerts/redis-canary.rules.yml");
    const DASHBOARD: &str = include_str!("../grafana/redis-canary.json");

    #[test]
    fn the_lean_profile_exports_about_half_the_series_of_the_full_one() {
        let full = exposition(MetricsProfile::Full);
        let lean = exposition(MetricsProfile::Lean);
        // Per standalone target: the cluster target's lines, and every HELP/TYPE line, left out.
        let lines = |t: &str| -> String {
            t.lines()
                .filter(|l| !l.starts_with('#') && !l.contains("target=\"c\""))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let (full, lean) = (lines(&full), lines(&lean));
        let series = |t: &str| t.lines().count();
        let (f, l) = (series(&full), series(&lean));
        assert!(l * 100 <= f * 60, "lean {l} series, full {f}");
        assert!(
            lean.len() * 100 <= full.len() * 60,
            "{} vs {} bytes",
            lean.len(),
            full.len()
        );
        // What lean drops: the attempt and connect latency histograms, nothing else.
        let dropped: BTreeSet<String> = sample_names(&full)
            .difference(&sample_names(&lean))
            .cloned()
            .collect();
        let expected: BTreeSet<String> = ["attempt", "connect"]
            .iter()
            .flat_map(|h| {
                ["bucket", "sum", "count"].map(|s| format!("redis_canary_{h}_duration_seconds_{s}"))
            })
            .collect();
        assert_eq!(dropped, expected);
        assert!(lean.contains(
            r#"redis_canary_operation_duration_seconds_bucket{le="0.05",target="a",op="write"} 0"#
        ));
        assert!(!lean.contains(r#"le="0.0001""#));
    }

    #[test]
    fn the_lean_profile_exports_every_metric_and_bucket_the_shipped_alerts_use() {
        let used = names_in(RULES);
        assert!(used.len() >= 10, "the rules name metrics: {used:?}");
        for profile in [MetricsProfile::Full, MetricsProfile::Lean] {
            let text = exposition(profile);
            let exported = sample_names(&text);
            for name in &used {
                assert!(exported.contains(name), "{profile:?} lacks {name}");
            }
            let les = le_values_in(RULES);
            assert!(les.contains("10.0"), "{les:?}");
            for le in les {
                assert!(
                    text.contains(&format!(r#"le="{le}""#)),
                    "{profile:?} lacks le={le}"
                );
            }
        }
    }

    #[test]
    fn under_lean_the_dashboard_loses_only_its_attempt_and_connect_latency_panels() {
        let lean = sample_names(&exposition(MetricsProfile::Lean));
        let missing: BTreeSet<String> = names_in(DASHBOARD)
            .into_iter()
            .filter(|n| !lean.contains(n) && !lean.iter().any(|e| e.starts_with(n.as_str())))
            .collect();
        assert_eq!(
            missing,
            BTreeSet::from([
                "redis_canary_attempt_duration_seconds_bucket".to_string(),
                "redis_canary_connect_duration_seconds_bucket".to_string(),
            ])
        );
        for le in le_values_in(DASHBOARD) {
            assert!(
                LEAN_LATENCY_BUCKETS
                    .iter()
                    .any(|b| format!("{b}") == le || format!("{b:?}") == le),
                "{le}"
            );
        }
    }
}
