//! Cluster targets (DESIGN §12.2), as a careful cluster client does it:
//!
//! - the slot map ([`map`]) is learned from any node — the last known nodes first, then the
//!   seeds — by `CLUSTER SHARDS`, falling back to `CLUSTER SLOTS`; refreshed at start, on
//!   `MOVED`, on a failure to reach a master, after `CLUSTERDOWN` and every
//!   `cluster_refresh`, by one task ([`Cluster::follow`]): at most one refresh in flight,
//!   each counted by the reason that asked for it;
//! - routing: an operation goes to the master of its key's slot. A `MOVED` reply moves that
//!   slot to the named node at once (until the next refresh confirms or corrects it);
//! - keys carry hash tags ([`tags`]) so that every slot range gets writes in proportion to
//!   its size;
//! - accounting per shard ([`book`]): operations, episodes and their lengths per shard,
//!   the target-level series being their union.

pub mod book;
pub mod map;
pub mod tags;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::Value;

use crate::conn::{Conn, ConnError, Endpoint};
use crate::shutdown::Shutdown;
use map::{Addr, Map, Shard};

/// Byte budget of a topology reply: `CLUSTER SHARDS` of a large cluster is tens of KiB.
const REPLY_LIMIT: usize = 4 * 1024 * 1024;

/// Shortest pause between two refreshes asked for by operations (a resharding answers
/// `MOVED` to many operations a second; one refresh covers them all).
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);

/// Why the slot map was asked for again: the `reason` label of `cluster_refreshes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Start,
    Moved,
    Unreachable,
    Clusterdown,
    Periodic,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Start,
        Reason::Moved,
        Reason::Unreachable,
        Reason::Clusterdown,
        Reason::Periodic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Moved => "moved",
            Reason::Unreachable => "unreachable",
            Reason::Clusterdown => "clusterdown",
            Reason::Periodic => "periodic",
        }
    }
}

/// The cluster-wide series of one target.
pub struct ClusterMetrics {
    pub slots_covered: Gauge,
    /// `cluster_nodes{role="master"}`, `{role="replica"}`.
    pub masters: Gauge,
    pub replicas: Gauge,
    /// By [`Reason`], in `ALL` order.
    pub refreshes: Vec<Counter>,
}

/// Where one operation goes.
#[derive(Clone, Debug)]
pub struct Route {
    pub addr: Addr,
    /// The shard that owns the slot in the map (`None` before the map knows the slot).
    pub shard: Option<Arc<str>>,
}

/// Where a probe goes: a master, its shard, the shard's slot ranges.
pub type ProbeRoute = (Addr, Arc<str>, map::Ranges);

/// The cluster side of one target.
pub struct Cluster {
    target: String,
    /// Credentials, TLS and timeouts of every data node; host and port come from the map.
    template: Endpoint,
    seeds: Vec<Addr>,
    refresh_every: Duration,
    response_timeout: Duration,
    map: RwLock<Arc<Map>>,
    /// Slots that a `MOVED` sent elsewhere since the last refresh.
    moved: Mutex<HashMap<u16, Addr>>,
    /// Masters the canary failed to reach since they last answered.
    down: Mutex<HashSet<Addr>>,
    /// The reason of the refresh asked for and not yet run.
    pending: Mutex<Option<Reason>>,
    wake: tokio::sync::Notify,
    /// Which master the next probe connects to.
    next_probe: AtomicUsize,
    pub metrics: ClusterMetrics,
    /// With `nodes = "auto"`: the replicas of every shard, republished at each refresh.
    replicas: Option<tokio::sync::watch::Sender<crate::topology::sentinel::Replicas>>,
    /// Label of each shard in the map, for the per-shard series.
    pub(crate) book: Arc<book::ShardBook>,
    /// True once a slot map was learned.
    learned: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("target", &self.target)
            .finish()
    }
}

impl Cluster {
    /// The cluster side of `target`: `template` carries the data nodes' credentials and TLS.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &str,
        template: Endpoint,
        seeds: Vec<Addr>,
        refresh_every: Duration,
        response_timeout: Duration,
        metrics: ClusterMetrics,
        book: Arc<book::ShardBook>,
        list_replicas: bool,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            target: target.to_string(),
            template,
            seeds,
            refresh_every,
            response_timeout,
            map: RwLock::new(Arc::new(Map::default())),
            moved: Mutex::new(HashMap::new()),
            down: Mutex::new(HashSet::new()),
            pending: Mutex::new(Some(Reason::Start)),
            wake: tokio::sync::Notify::new(),
            next_probe: AtomicUsize::new(0),
            metrics,
            replicas: list_replicas.then(|| tokio::sync::watch::channel(None).0),
            book,
            learned: tokio::sync::watch::channel(false).0,
        })
    }

    /// The replicas of every shard, for `nodes = "auto"`.
    pub fn replicas(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<crate::topology::sentinel::Replicas>> {
        self.replicas.as_ref().map(|r| r.subscribe())
    }

    /// Waits until the first slot map is learned, at most until `deadline`: operations sent
    /// before would go to a seed and be redirected, which a client with a map does not see.
    pub async fn learned(&self, deadline: tokio::time::Instant) {
        let mut rx = self.learned.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|l| *l)).await;
    }

    /// The map as last learned.
    pub fn map(&self) -> Arc<Map> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where an operation on `slot` goes: a slot moved by `MOVED`, else the master of its
    /// shard, else (the map does not know the slot, or its shard has no master) any known
    /// node, whose answer (`MOVED`, `CLUSTERDOWN`) tells what a client meets.
    pub fn route(&self, slot: u16) -> Route {
        let map = self.map();
        let shard = map.shard_of(slot);
        let label = shard.map(|s| self.book.label(&s.label));
        let moved = {
            let moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
            (!moved.is_empty())
                .then(|| moved.get(&slot).cloned())
                .flatten()
        };
        let addr = moved
            .or_else(|| shard.and_then(|s| s.master.clone()))
            .or_else(|| map.nodes().next().cloned())
            .unwrap_or_else(|| self.seeds[0].clone());
        Route { addr, shard: label }
    }

    /// The master the next probe connects to: each in turn, so every shard is probed; while
    /// the probe of some shards is failing, every other probe goes to those in turn. A
    /// shard's failed probe keeps its episode open until a probe of that shard succeeds,
    /// and in plain turns that probe came one probe interval per shard later: with three
    /// shards, an episode lasted up to 2 s past the recovery (seen: 1.90 s for a 0.98 s
    /// CLUSTERDOWN), with ten up to 9 s. The other half of the probes keeps every shard
    /// probed during a long outage of one.
    pub fn probe_route(&self) -> Option<ProbeRoute> {
        let map = self.map();
        let with_master: Vec<&Shard> = map.shards.iter().filter(|s| s.master.is_some()).collect();
        let failing: Vec<&Shard> = with_master
            .iter()
            .copied()
            .filter(|s| self.book.probe_failing(&s.label))
            .collect();
        if with_master.is_empty() {
            return None;
        }
        let n = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let s = if n % 2 == 1 && !failing.is_empty() {
            failing[(n / 2) % failing.len()]
        } else {
            with_master[n % with_master.len()]
        };
        Some((
            s.master.clone()?,
            self.book.label(&s.label),
            s.ranges.clone(),
        ))
    }

    /// The slot ranges of the shard that lists `host:port` as a replica.
    pub fn replica_ranges(&self, host: &str, port: u16) -> Option<map::Ranges> {
        self.map()
            .shards
            .iter()
            .find(|s| s.replicas.iter().any(|r| r.host == host && r.port == port))
            .map(|s| s.ranges.clone())
    }

    /// Opens a connection to the node at `addr` with the target's credentials.
    pub async fn open(&self, addr: &Addr) -> Result<Conn, ConnError> {
        Conn::open_at(&self.template, &addr.host, addr.port).await
    }

    /// A `MOVED` sent `slot` to `addr`: the next operations on it go there at once, and the
    /// map is asked for again.
    pub fn moved(&self, slot: u16, addr: Addr) {
        self.moved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, addr);
        self.ask_refresh(Reason::Moved);
    }

    /// A master could not be reached (connect failed, connection lost): its slots count as
    /// not covered until it answers again or the map names another master.
    pub fn unreachable(&self, addr: &Addr) {
        let is_master = self
            .map()
            .shards
            .iter()
            .any(|s| s.master.as_ref() == Some(addr));
        if !is_master {
            return;
        }
        let new = self
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone());
        if new {
            self.update_covered();
        }
        self.ask_refresh(Reason::Unreachable);
    }

    /// A node answered: it counts as reachable again.
    pub fn reached(&self, addr: &Addr) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if !down.is_empty() && down.remove(addr) {
            drop(down);
            self.update_covered();
        }
    }

    /// `CLUSTERDOWN`: the map is asked for again.
    pub fn clusterdown(&self) {
        self.ask_refresh(Reason::Clusterdown);
    }

    fn ask_refresh(&self, reason: Reason) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_none() {
            *pending = Some(reason);
            drop(pending);
            self.wake.notify_one();
        }
    }

    fn update_covered(&self) {
        let map = self.map();
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        self.metrics
            .slots_covered
            .set(i64::from(map.covered(|a| down.contains(a))));
    }

    /// Refreshes the map until shutdown: at start, when asked, and every `cluster_refresh`.
    pub async fn follow(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: the start refresh covers it
        loop {
            let reason = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let reason = match reason {
                Some(r) => r,
                None => tokio::select! {
                    _ = tick.tick() => Reason::Periodic,
                    _ = self.wake.notified() => continue,
                    _ = shutdown.wait() => break,
                },
            };
            self.metrics.refreshes[reason as usize].inc();
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = self.refresh(reason) => {}
                _ = shutdown.wait() => break,
            }
            // Asked-for refreshes are paced; the periodic one restarts its period.
            if reason != Reason::Periodic {
                tick.reset();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + MIN_REFRESH_GAP) => {}
                _ = shutdown.wait() => break,
            }
        }
    }

    /// Asks the known nodes, then the seeds, for the map; the first usable answer wins.
    async fn refresh(&self, reason: Reason) {
        let old = self.map();
        let mut sources: Vec<Addr> = Vec::new();
        for a in old.nodes().chain(self.seeds.iter()) {
            if !sources.contains(a) {
                sources.push(a.clone());
            }
        }
        let mut last_error = None;
        for addr in sources {
            match self.ask(&addr).await {
                Ok(map) if !map.is_empty() => {
                    self.install(map, &old, reason);
                    return;
                }
                Ok(_) => last_error = Some(format!("{addr}: no slot assigned")),
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        tracing::warn!(
            target_name = %self.target,
            reason = reason.as_str(),
            error = %last_error.unwrap_or_default(),
            "cannot learn the cluster's slot map from any node"
        );
    }

    /// The map as the node at `addr` sees it.
    async fn ask(&self, addr: &Addr) -> Result<Map, ConnError> {
        let deadline = self.template.connect_timeout + 2 * self.response_timeout;
        let work = async {
            let mut conn = self.open(addr).await?;
            let tls = self.template.tls.is_some();
            let shards = match conn
                .call(&[b"CLUSTER", b"SHARDS"], REPLY_LIMIT, self.response_timeout)
                .await
            {
                Ok(reply) => map::parse_shards(&reply, tls),
                // An unknown subcommand (Redis < 7, KeyDB): the older form.
                Err(ConnError::Redis(e)) if e.code().is_some() => None,
                Err(e) => return Err(e),
            };
            let shards = match shards {
                Some(s) => s,
                None => {
                    let reply = conn
                        .call(&[b"CLUSTER", b"SLOTS"], REPLY_LIMIT, self.response_timeout)
                        .await?;
                    map::parse_slots(&reply).ok_or(ConnError::Unexpected("CLUSTER SLOTS"))?
                }
            };
            conn.close(Duration::from_millis(100)).await;
            Ok(Map::new(shards))
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or(Err(ConnError::Timeout))
    }

    fn install(&self, mut map: Map, old: &Map, reason: Reason) {
        map::carry_labels(&mut map.shards, &old.shards);
        let changed = map.shards != old.shards;
        let masters = map.shards.iter().filter(|s| s.master.is_some()).count();
        let replicas: usize = map.shards.iter().map(|s| s.replicas.len()).sum();
        self.metrics.masters.set(masters as i64);
        self.metrics.replicas.set(replicas as i64);
        for s in &map.shards {
            self.book.seen(&s.label);
        }
        if let Some(tx) = &self.replicas {
            let listed: BTreeSet<(String, u16)> = map
                .shards
                .iter()
                .flat_map(|s| s.replicas.iter())
                .map(|a| (a.host.clone(), a.port))
                .collect();
            tx.send_replace(Some(listed));
        }
        let map = Arc::new(map);
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = map.clone();
        self.moved.lock().unwrap_or_else(|p| p.into_inner()).clear();
        {
            // A master the map no longer names is no longer ours to miss.
            let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
            down.retain(|a| map.shards.iter().any(|s| s.master.as_ref() == Some(a)));
        }
        self.update_covered();
        self.learned.send_replace(true);
        if changed {
            let shards: Vec<String> = map
                .shards
                .iter()
                .map(|s| {
                    format!(
                        "{} master {}",
                        s.label,
                        s.master
                            .as_ref()
                            .map_or("none".to_string(), Addr::to_string)
                    )
                })
                .collect();
            tracing::info!(
                target_name = %self.target,
                reason = reason.as_str(),
                shards = %shards.join(", "),
                "cluster slot map learned"
            );
        }
    }
}

/// A `MOVED` or `ASK` reply: the slot and where to go.
pub fn redirect(e: &ConnError) -> Option<(u16, Addr)> {
    let ConnError::Redis(e) = e else {
        return None;
    };
    let (addr, slot) = e.redirect_node()?;
    Some((slot, Addr::parse(addr)?))
}

/// `ASKING` sent before the command an `ASK` redirected.
pub const ASKING: &[&[u8]] = &[b"ASKING"];

/// Whether `v` is the `OK` of `ASKING`.
pub fn is_ok(v: &Value) -> bool {
    matches!(v, Value::Okay)
}
