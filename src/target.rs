//! One target's state as data ([`TargetState`]): its settings, endpoints, keys, ledger,
//! episodes, backends, metric handles and soak statistics, shared by its loops and the HTTP
//! server. What happens to it lives elsewhere: [`crate::attempt`] runs operations,
//! [`crate::record`] records their results, [`crate::schedule`] starts them and
//! [`crate::workload`] says what each one sends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::Backends;
use crate::classify::ResultKind;
use crate::clock::Clock;
use crate::config::{Settings, Target};
use crate::conn::Endpoint;
use crate::episode::Episodes;
use crate::history::History;
use crate::ledger::{Acked, Ledger};
use crate::metrics::{Metrics, NodeLabels, TargetMetrics};
use crate::op::Op;
use crate::payload::owner_hash;
use crate::stats::Stats;
use crate::telemetry::Tracing;
use crate::topology::cluster::{Cluster, tags};

/// The last failure of a target, for the status page.
#[derive(Clone, Debug)]
pub struct LastError {
    pub at_unix: f64,
    pub op: Op,
    pub result: ResultKind,
    pub message: String,
}

/// Everything one target needs at run time, shared by its loops and the HTTP server.
pub struct TargetState {
    pub name: String,
    /// The URL with any password masked.
    pub url_display: String,
    pub settings: Settings,
    pub endpoint: Endpoint,
    /// Direct nodes whose replication is followed (DESIGN §2.6).
    pub nodes: Vec<Endpoint>,
    /// Whether any node is followed: static `nodes`, or `nodes = "auto"` (the replicas the
    /// sentinels list, which come and go). Writes are published for following only then.
    pub(crate) follows_nodes: bool,
    /// The write the node followers should follow next, published at its acknowledgement
    /// so the delay is measured from the ack, not from when a follower looked.
    pub(crate) follow: tokio::sync::watch::Sender<Option<Acked>>,
    /// When (µs) the next write is to be followed: one a second.
    pub(crate) follow_due_us: AtomicU64,
    pub metrics: TargetMetrics,
    pub clock: Clock,
    pub(crate) key_prefix: Vec<u8>,
    pub(crate) owner: u64,
    pub(crate) ttl_ms: Vec<u8>,
    /// Most bytes a reply may take (DESIGN §11): a canary value with room to spare; a
    /// larger one (someone else's, or a hostile stream) drops the connection.
    pub(crate) reply_limit: usize,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) episodes: Mutex<Episodes>,
    /// Mirrors `episodes.is_open()` so the success path skips the lock in steady state.
    pub(crate) episode_open: AtomicBool,
    pub backends: Mutex<Backends>,
    /// `node` labels with series now (static, sentinel-listed or discovered nodes), so that
    /// a target removed by a reload can take them all away.
    pub(crate) node_labels: Mutex<std::collections::BTreeSet<String>>,
    /// `sentinel` labels of a sentinel target's sentinels.
    sentinel_labels: Vec<String>,
    /// Bounded history for the status page and `/api/v1/status` (DESIGN §13).
    pub history: Mutex<History>,
    pub last_error: Mutex<Option<LastError>>,
    pub(crate) last_bad_read_log_us: AtomicU64,
    pub(crate) last_internal_log_us: AtomicU64,
    /// The last probe failed: probe at the operation pace until one succeeds.
    pub(crate) probe_failing: AtomicBool,
    /// Soak statistics (latency histograms, episodes), when running `soak`.
    pub stats: Option<Mutex<Stats>>,
    /// Span export, when configured.
    pub(crate) tracing: Option<Arc<Tracing>>,
    /// The cluster side of a cluster target (DESIGN §12.2): routing and per-shard books.
    pub cluster: Option<Arc<Cluster>>,
    /// Spreads the round-robin of writes over the slot space (see [`tags::stride`]).
    pub(crate) slot_stride: u32,
}

/// What every target of a process shares.
pub struct Shared<'a> {
    pub instance: &'a str,
    pub clock: Clock,
    pub metrics: &'a Metrics,
    /// Keep soak statistics.
    pub with_stats: bool,
    pub tracing: Option<Arc<Tracing>>,
}

impl TargetState {
    /// Builds the state of `target`, creating its metric series at 0.
    pub fn new(
        target: &Target,
        shared: &Shared<'_>,
        endpoint: Endpoint,
        nodes: Vec<Endpoint>,
    ) -> TargetState {
        let Shared {
            instance,
            clock,
            metrics,
            with_stats,
            ..
        } = *shared;
        let tracing = shared.tracing.clone();
        let s = &target.settings;
        let tm = metrics.target(&target.name);
        // The target's start: the process start, or the reload that added it (a target
        // added later must not look as if it had not succeeded since the process began).
        let start = clock.unix_secs(clock.now_us());
        for op in Op::ALL {
            tm.op(*op).last_success.set(start);
        }
        // Node series exist from startup like every other closed label set; `node_up`
        // stays 0 until the node has answered.
        for node in &nodes {
            create_node_series(&tm, &target.name, &node.host_port());
        }
        let node_labels = nodes.iter().map(Endpoint::host_port).collect();
        let nodes_auto = match &target.mode {
            crate::config::Mode::Sentinel(s) => s.nodes_auto,
            crate::config::Mode::Cluster(c) => c.nodes_auto,
            crate::config::Mode::Standalone => false,
        };
        TargetState {
            name: target.name.clone(),
            url_display: match &target.mode {
                crate::config::Mode::Standalone => target.url.to_string(),
                crate::config::Mode::Cluster(c) => format!(
                    "cluster via {}",
                    c.seeds
                        .iter()
                        .map(|u| u.host_port())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                crate::config::Mode::Sentinel(s) => format!(
                    "sentinel {} via {}",
                    s.master_name,
                    s.sentinels
                        .iter()
                        .map(|u| u.host_port())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            settings: s.clone(),
            endpoint,
            follows_nodes: nodes_auto || target.discovery.is_some() || !nodes.is_empty(),
            nodes,
            follow: tokio::sync::watch::channel(None).0,
            follow_due_us: AtomicU64::new(0),
            metrics: tm,
            clock,
            key_prefix: target.key_prefix.as_bytes().to_vec(),
            owner: owner_hash(instance, &target.name),
            ttl_ms: s.ttl.as_millis().to_string().into_bytes(),
            reply_limit: (2 * s.value_size + 1024).max(crate::conn::MIN_REPLY_LIMIT),
            ledger: Mutex::new(Ledger::new(
                owner_hash(instance, &target.name),
                clock.epoch_us(),
                s.keys,
                s.ttl.as_micros() as u64,
                s.stale_grace.as_micros() as u64,
            )),
            episodes: Mutex::new(Episodes::default()),
            episode_open: AtomicBool::new(false),
            backends: Mutex::new(Backends::default()),
            node_labels: Mutex::new(node_labels),
            sentinel_labels: match &target.mode {
                crate::config::Mode::Standalone | crate::config::Mode::Cluster(_) => Vec::new(),
                crate::config::Mode::Sentinel(s) => {
                    s.sentinels.iter().map(|u| u.host_port()).collect()
                }
            },
            history: Mutex::new(History::new()),
            last_error: Mutex::new(None),
            last_bad_read_log_us: AtomicU64::new(0),
            last_internal_log_us: AtomicU64::new(0),
            probe_failing: AtomicBool::new(false),
            stats: with_stats.then(|| Mutex::new(Stats::with_clock(&target.slo, clock))),
            tracing,
            cluster: None,
            slot_stride: tags::stride(s.keys),
        }
    }

    /// Whether the target is in a disruption episode now.
    pub fn is_disrupted(&self) -> bool {
        self.episode_open.load(Ordering::Relaxed)
    }

    /// The key name of `index`. A cluster target's keys carry a hash tag after the prefix
    /// that puts key `index` into slot `floor(index * 16384 / keys)` (DESIGN §12.2).
    pub fn key(&self, index: u32) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_prefix.len() + 18);
        key.extend_from_slice(&self.key_prefix);
        if let Some(slot) = self.slot(index) {
            key.push(b'{');
            key.extend_from_slice(tags::tag(slot).as_bytes());
            key.extend_from_slice(b"}:");
        }
        key.extend_from_slice(index.to_string().as_bytes());
        key
    }

    /// The cluster slot of key `index` (cluster targets only).
    pub(crate) fn slot(&self, index: u32) -> Option<u16> {
        let keys = self.settings.keys;
        self.cluster
            .as_ref()
            .map(|_| tags::slot_of(tags::spread(index, keys, self.slot_stride), keys))
    }

    /// The highest sequence number written (for cleanup).
    pub fn last_seq(&self) -> u64 {
        self.lock_ledger().last_seq()
    }

    /// Creates the series of node `node` (`host:port`) at 0: a node followed from now on.
    pub(crate) fn add_node(&self, node: &str) {
        self.lock_node_labels().insert(node.to_string());
        create_node_series(&self.metrics, &self.name, node);
    }

    /// Removes the series of node `node`: a node no longer followed.
    pub(crate) fn remove_node(&self, node: &str) {
        let label = NodeLabels {
            target: self.name.clone(),
            node: node.to_string(),
        };
        self.metrics.node_up.remove(&label);
        self.metrics.replication_delay.remove(&label);
        self.metrics.replication_timeouts.remove(&label);
        self.lock_node_labels().remove(node);
    }

    /// The label sets of this target's series that configuration does not fix (nodes,
    /// backends, sentinels), for removing all its series once its loops have stopped.
    pub fn open_series(&self) -> crate::metrics::OpenSeries {
        let backends = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            // Everything counts as expired at the end of time.
            .expire(u64::MAX, 0);
        crate::metrics::OpenSeries {
            nodes: self.lock_node_labels().iter().cloned().collect(),
            backends,
            sentinels: self.sentinel_labels.clone(),
        }
    }

    fn lock_node_labels(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.node_labels.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the history (a short lock: it is on the measuring path).
    pub(crate) fn with_history(&self, f: impl FnOnce(&mut History)) {
        f(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn with_stats(&self, f: impl FnOnce(&mut Stats)) {
        if let Some(stats) = &self.stats {
            f(&mut stats.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

/// The series of one followed node, at 0: `node_up` stays 0 until the node has answered.
fn create_node_series(tm: &TargetMetrics, target: &str, node: &str) {
    let label = NodeLabels {
        target: target.to_string(),
        node: node.to_string(),
    };
    tm.node_up.get_or_create(&label).set(0);
    drop(tm.replication_delay.get_or_create(&label));
    drop(tm.replication_timeouts.get_or_create(&label));
}
