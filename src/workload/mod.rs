//! What each operation sends and how its reply is judged, one file each: a write, a read,
//! a fresh-connection probe, the replication follower of the direct nodes, and the cleanup
//! of the canary's own keys at shutdown.

mod cleanup;
mod nodes;
mod probe;
mod read;
mod write;

pub(crate) use nodes::NODE_FOLLOW_INTERVAL;
pub use nodes::{ListedNodes, run_nodes};
