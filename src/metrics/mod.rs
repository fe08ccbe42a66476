//! The metric families of DESIGN §6: [`Metrics`] owns the registry and every family;
//! [`TargetMetrics`] holds pre-resolved handles for one target, so the hot path increments
//! atomics without hashing label sets or taking the family lock.
//!
//! Parts: this file holds the buckets, the profiles and the registered families; `labels`
//! the label sets; `handles` the per-target handles; `prometheus_text` the rewrite of the
//! exposition for scrapers that ask for the Prometheus text format.

use std::sync::atomic::AtomicU64;

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

mod handles;
mod labels;
mod prometheus_text;
#[cfg(test)]
mod tests;

pub use handles::{KindMetrics, OpMetrics, SentinelMetrics, TargetMetrics};
use labels::BuildLabels;
pub use labels::{
    BackendLabels, ConnectLabels, InternalLabels, KindLabels, NodeLabels, OpLabels, OutcomeLabels,
    ResultLabels, SentinelLabels, TargetLabels, TraceLabels, VerdictLabels,
};
pub use prometheus_text::to_prometheus_text;

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
