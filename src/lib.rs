//! redis-canary: measures what clients of a Redis/KeyDB/Valkey endpoint go through when a
//! pod dies, restarts or stalls — failed and rescued operations, disruption lengths, lost,
//! stale or corrupt data, and which backend answered — and exports it to Prometheus.
//!
//! Modules, from the entry down (pure logic at the bottom, nothing reaches up):
//!
//! - [`cli`]: command line (`run`, `soak`, `check-config`).
//! - [`daemon`]: wiring; builds targets, serves HTTP, runs and drains the loops.
//! - [`soak`]: judges a fixed-length run against the SLOs and writes the report.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, the status page.
//! - [`canary`]: one target's state, operations with retries, and the timetables.
//! - [`conn`]: connections the canary owns: connect, authenticate, identify, deadlines.
//! - [`tls`]: rustls client configuration for `rediss://`.
//! - [`backend`]: who answered: validated identities and `backend_info`.
//! - [`stats`]: soak-only exact counts and HdrHistograms.
//! - [`metrics`]: the metric families and per-target handles.
//! - [`config`], [`secret`]: layered configuration with every problem reported at once;
//!   secrets that never print.
//! - [`telemetry`], [`shutdown`], [`clock`]: logging, signals, time.
//! - [`ledger`]: writes remembered and read verdicts.
//! - [`episode`]: disruption episodes from attempt times.
//! - [`retry`]: capped exponential backoff with jitter.
//! - [`classify`], [`op`]: the closed label vocabularies and error → result mapping.
//! - [`payload`]: the self-describing, checksummed value.

pub mod backend;
pub mod canary;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod episode;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod op;
pub mod payload;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod soak;
pub mod stats;
pub mod telemetry;
pub mod tls;
