//! Pre-resolved handles for one target's series, made by
//! [`Metrics::target`](super::Metrics::target) and its kin:
//! the hot path increments atomics without hashing label sets or taking a family lock.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{BackendLabels, F64Gauge, HistogramFamily, NodeLabels, TracedHistogram};
use crate::classify::{InternalCause, ResultKind};
use crate::ledger::Verdict;
use crate::op::{Kind, Op, Outcome};

/// Handles for one op of one target.
pub struct OpMetrics {
    pub(super) outcomes: Vec<Counter>,
    pub(super) attempts: Vec<Counter>,
    pub retries: Counter,
    pub operation_duration: TracedHistogram,
    pub attempt_duration: TracedHistogram,
    pub skipped_ticks: Counter,
    pub(super) reads: Vec<Counter>,
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
    pub(super) connects: Vec<Counter>,
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
    pub(super) ops: [OpMetrics; 3],
    pub(super) kinds: [KindMetrics; 3],
    pub disruptions: Counter,
    pub disruption_duration: Histogram,
    pub disrupted: Gauge,
    pub disruption_start: F64Gauge,
    pub backend_switches: Counter,
    /// By [`InternalCause`], in its `ALL` order.
    pub(super) internal_errors: Vec<Counter>,
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
