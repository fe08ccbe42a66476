//! Topologies (DESIGN §12): which node an operation goes to when the endpoint is not one
//! fixed address. `standalone` needs nothing here (the URL is the endpoint); [`sentinel`]
//! asks sentinels for the master on every connect and follows their `+switch-master`;
//! [`dns`] lists a target's direct nodes from DNS (A/AAAA or SRV records);
//! [`cluster`] routes each operation to the master of its key's slot.

pub mod cluster;
pub mod dns;
pub mod sentinel;
