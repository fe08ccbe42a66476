//! The closed label vocabularies of DESIGN §6 other than results and verdicts: which loop
//! (`op`), how an operation ended (`outcome`), which kind of connection (`kind`).

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Implements `as_str`, `ALL` and the label encoding for a closed enum.
macro_rules! closed_label {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in label order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// The three loops every target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Write,
    Read,
    Probe,
}
closed_label!(Op { Write => "write", Read => "read", Probe => "probe" });

impl Op {
    /// A dense index for per-op arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How an operation ended after its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    Recovered,
    Failed,
}
closed_label!(Outcome { Ok => "ok", Recovered => "recovered", Failed => "failed" });

/// Which kind of connection a connect or a drop concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pool,
    Probe,
    Node,
}
closed_label!(Kind { Pool => "pool", Probe => "probe", Node => "node" });

impl EncodeLabelValue for crate::ledger::Verdict {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}
