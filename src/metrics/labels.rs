//! The label sets of the metric families (DESIGN §6): one struct per set, closed label
//! values as enums from `op`, `classify` and `ledger`.

use prometheus_client::encoding::EncodeLabelSet;

use crate::classify::{InternalCause, ResultKind};
use crate::ledger::Verdict;
use crate::op::{Kind, Op, Outcome};

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
pub(super) struct BuildLabels {
    pub(super) version: String,
    pub(super) revision: String,
}

/// The exemplar of a traced operation: its trace id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}
