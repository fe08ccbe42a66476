//! redis-canary: measures what clients of a Redis/KeyDB/Valkey endpoint go through when a
//! pod dies, restarts or stalls — failed and rescued operations, disruption lengths, lost,
//! stale or corrupt data, and which backend answered — and exports it to Prometheus.
//!
//! Modules, from the entry down (pure logic at the bottom, nothing reaches up):
//!
//! - entry: [`cli`] (command line: `run`, `soak`, `check-config`).
//! - modes: [`daemon`] (wiring: builds targets, serves HTTP, runs and drains the loops,
//!   applies reloads; `prepare` builds a target, `running` holds the running ones),
//!   [`soak`] (judges a fixed-length run and writes its report), [`http`] (`/metrics`,
//!   `/healthz`, `/readyz` and the status page, on a thread and runtime of their own;
//!   `connections` caps and evicts connections).
//! - topology: [`topology`] (where a connect goes when the endpoint is not one address:
//!   Sentinel discovery, `+switch-master` following; direct nodes listed by DNS).
//! - per target: [`target`] (its state, as data), [`schedule`] (timetables, the pending
//!   set, skipped ticks, drain), [`workload`] (what a write, read, probe, node follower and
//!   cleanup send and how each reply is judged).
//! - one attempt: [`attempt`] (the engine: connect, send under a deadline, classify, back
//!   off, retry), [`pool`] (slots lent out under a guard, reconnect pacing), [`conn`]
//!   (connections the canary owns, on the `redis` crate, with byte budgets and async DNS),
//!   [`record`] (one recorder fanning results out to metrics, episodes, stats, spans, logs),
//!   [`tls`] (rustls for `rediss://`).
//! - pure logic: [`retry`] (backoff), [`classify`] and [`op`] (closed label vocabularies,
//!   error → result, canary-side causes), [`payload`] (the checksummed value), [`ledger`]
//!   (writes remembered, read verdicts), [`episode`] (disruptions from attempt times),
//!   [`history`] (bounded rings of per-interval aggregates and the last day's episodes, for
//!   the status page and API; `sketch` is their latency histogram), [`backend`] (who
//!   answered), [`stats`] (soak counts and HdrHistograms), [`svg`] (charts for the status
//!   page and the HTML report; `canvas`, `axis` and `labels` beside the chart types),
//!   [`fleet`] (which replica owns a target, what a reload changes).
//! - plumbing: [`config`] and [`secret`] (layered settings, every problem at once, masked
//!   secrets), [`metrics`] (families and per-target handles; `labels`, `handles`,
//!   `prometheus_text` beside them), [`telemetry`] (logs, OTLP), [`shutdown`], [`clock`].

pub mod attempt;
pub mod backend;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod episode;
pub mod fleet;
pub mod history;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod op;
pub mod payload;
pub mod pool;
pub mod record;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod soak;
pub mod stats;
pub mod svg;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod workload;
