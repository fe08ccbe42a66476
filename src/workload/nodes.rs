//! Replication convergence on the direct nodes (DESIGN §2.6): static `nodes`, the replicas
//! the sentinels list (`nodes = "auto"`), or the nodes DNS lists (`nodes = "dns://..."`,
//! DESIGN §14), each followed by a task of its own; listed nodes come and go.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attempt::bulk;
use crate::conn::{Conn, Endpoint};
use crate::ledger::Acked;
use crate::metrics::NodeLabels;
use crate::op::Kind;
use crate::shutdown::Shutdown;
use crate::target::TargetState;
use crate::topology::dns::{DnsNodes, Found};
use crate::topology::sentinel::{Addr, AutoNodes};
use tokio::task::JoinHandle;

/// How often a write is followed on the direct nodes (DESIGN §2.6).
pub(crate) const NODE_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// How often a failing or empty DNS discovery is logged: it is counted every round, but a
/// line every `discovery_interval` would drown the log during a DNS outage.
const DISCOVERY_LOG_EVERY: Duration = Duration::from_secs(60);

/// Nodes that come and go: the replicas the sentinels list, or what DNS lists.
pub enum ListedNodes {
    /// `nodes = "auto"` on a sentinel target.
    Sentinel(AutoNodes),
    /// `nodes = "dns://..."` or `"dns+srv://..."`.
    Dns(Box<DnsNodes>),
}

/// Follows one write a second on every direct node of `t` until shutdown; a second without
/// a write to follow is used to check that each node still answers. The nodes are the static
/// `nodes`, or the nodes `listed` by the sentinels ([`follow_listed`]) or by DNS
/// ([`follow_dns`]), which come and go.
pub async fn run_nodes(t: Arc<TargetState>, listed: Option<ListedNodes>, shutdown: Shutdown) {
    let mut followers: Vec<_> = t
        .nodes
        .iter()
        .map(|node| spawn_follower(&t, node.clone(), node.host_port(), &shutdown))
        .collect();
    match listed {
        Some(ListedNodes::Sentinel(auto)) => {
            followers.extend(follow_listed(&t, auto, shutdown).await);
        }
        Some(ListedNodes::Dns(dns)) => followers.extend(follow_dns(&t, *dns, shutdown).await),
        None => {}
    }
    for f in followers {
        let _ = f.await;
    }
}

/// Follows the nodes DNS lists until shutdown, resolving every `discovery_interval`: a
/// node that appears gets a follower and its series at 0; a node found under the same name
/// at a new address (a rescheduled pod behind an SRV name) is followed there under the same
/// label; one no longer listed for `backend_ttl` has its follower stopped and its series
/// removed. A failed round is counted in `discovery_errors_total` and keeps the last good
/// set (its nodes do not age); an empty answer (NXDOMAIN, NODATA) lists no node. Returns
/// the followers still running (they end with `shutdown`).
async fn follow_dns(
    t: &Arc<TargetState>,
    dns: DnsNodes,
    mut shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    /// One followed node: its follower, the address it follows, when it was last listed.
    struct Followed {
        task: JoinHandle<()>,
        ip: IpAddr,
        listed_us: u64,
    }
    let DnsNodes {
        mut discovery,
        endpoint,
        errors,
    } = dns;
    let source = discovery.source().to_string();
    let ttl_us = t.settings.backend_ttl.as_micros() as u64;
    let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
    let mut last_good: Vec<Found> = Vec::new();
    let mut logged_error: Option<Instant> = None;
    let mut logged_empty: Option<Instant> = None;
    let due = |logged: &mut Option<Instant>| {
        let now = Instant::now();
        let due = logged.is_none_or(|at| now.duration_since(at) >= DISCOVERY_LOG_EVERY);
        if due {
            *logged = Some(now);
        }
        due
    };
    let mut tick = tokio::time::interval(discovery.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => break,
        }
        let round = tokio::select! {
            round = discovery.round() => round,
            _ = shutdown.wait() => break,
        };
        match round {
            Ok((found, more)) => {
                if found.is_empty() && due(&mut logged_empty) {
                    tracing::warn!(target_name = %t.name, nodes = %source, "DNS lists no node (NXDOMAIN or no records)");
                }
                if more > 0 && due(&mut logged_empty) {
                    tracing::warn!(target_name = %t.name, nodes = %source, more, "DNS lists more nodes than are followed");
                }
                last_good = found;
            }
            Err(e) => {
                errors.inc();
                if due(&mut logged_error) {
                    tracing::warn!(target_name = %t.name, nodes = %source, error = %e, "DNS discovery failed: the nodes found before are kept");
                }
            }
        }
        let now = t.clock.now_us();
        for f in &last_good {
            let open = || match endpoint(&f.name, f.port) {
                Ok(mut node) => {
                    node.host = f.ip.to_string();
                    Some(node)
                }
                Err(e) => {
                    tracing::warn!(target_name = %t.name, node = %f.label, error = %e, "cannot follow a node DNS lists");
                    None
                }
            };
            match followed.get_mut(&f.label) {
                Some(node) if node.ip == f.ip => node.listed_us = now,
                Some(node) => {
                    let Some(endpoint) = open() else { continue };
                    tracing::info!(target_name = %t.name, node = %f.label, ip = %f.ip, "a node DNS lists has a new address: followed there");
                    node.task.abort();
                    let _ = (&mut node.task).await;
                    node.task = spawn_follower(t, endpoint, f.label.clone(), &shutdown);
                    node.ip = f.ip;
                    node.listed_us = now;
                }
                None => {
                    let Some(endpoint) = open() else { continue };
                    tracing::info!(target_name = %t.name, node = %f.label, "following a node DNS lists");
                    t.add_node(&f.label);
                    let task = spawn_follower(t, endpoint, f.label.clone(), &shutdown);
                    followed.insert(
                        f.label.clone(),
                        Followed {
                            task,
                            ip: f.ip,
                            listed_us: now,
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = followed
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.listed_us) > ttl_us)
            .map(|(label, _)| label.clone())
            .collect();
        for label in gone {
            let Some(f) = followed.remove(&label) else {
                continue;
            };
            // Stopped before its series go, so that it cannot create them again.
            f.task.abort();
            let _ = f.task.await;
            t.remove_node(&label);
            tracing::info!(target_name = %t.name, node = %label, "a node DNS no longer lists: not followed any more");
        }
    }
    followed.into_values().map(|f| f.task).collect()
}

/// Follows the replicas the sentinels list until shutdown: a replica that appears gets a
/// follower and its series at 0; one no longer listed for `backend_ttl` has its follower
/// stopped and its series removed. Returns the followers still running (they end with
/// `shutdown`).
async fn follow_listed(
    t: &Arc<TargetState>,
    auto: AutoNodes,
    mut shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    /// One followed replica: its `node` label, its follower, when it was last listed (µs).
    struct Followed {
        label: String,
        task: JoinHandle<()>,
        listed_us: u64,
    }
    let AutoNodes {
        mut replicas,
        endpoint,
    } = auto;
    let ttl_us = t.settings.backend_ttl.as_micros() as u64;
    let mut followed: BTreeMap<Addr, Followed> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = replicas.changed() => if changed.is_err() { break },
            _ = shutdown.wait() => break,
        }
        let Some(listed) = replicas.borrow_and_update().clone() else {
            continue;
        };
        let now = t.clock.now_us();
        for addr in listed {
            if let Some(f) = followed.get_mut(&addr) {
                f.listed_us = now;
                continue;
            }
            let node = match endpoint(&addr.0, addr.1) {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(target_name = %t.name, host = %addr.0, port = addr.1, error = %e, "cannot follow a listed replica");
                    continue;
                }
            };
            let label = node.host_port();
            tracing::info!(target_name = %t.name, node = %label, "following a replica the topology lists");
            t.add_node(&label);
            let task = spawn_follower(t, node, label.clone(), &shutdown);
            followed.insert(
                addr,
                Followed {
                    label,
                    task,
                    listed_us: now,
                },
            );
        }
        let gone: Vec<Addr> = followed
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.listed_us) > ttl_us)
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in gone {
            let Some(f) = followed.remove(&addr) else {
                continue;
            };
            // Stopped before its series go, so that it cannot create them again.
            f.task.abort();
            let _ = f.task.await;
            t.remove_node(&f.label);
            tracing::info!(target_name = %t.name, node = %f.label, "a replica the topology no longer lists: not followed any more");
        }
    }
    followed.into_values().map(|f| f.task).collect()
}

/// The follower of one node, labelled `label`: follows each published write on it, or
/// checks that it answers when none came for two intervals, until shutdown.
fn spawn_follower(
    t: &Arc<TargetState>,
    node: Endpoint,
    label: String,
    shutdown: &Shutdown,
) -> JoinHandle<()> {
    let (t, mut shutdown) = (t.clone(), shutdown.clone());
    let mut writes = t.follow.subscribe();
    tokio::spawn(async move {
        let mut conn = None;
        loop {
            let w = tokio::select! {
                changed = writes.changed() => match changed {
                    Ok(()) => *writes.borrow_and_update(),
                    Err(_) => break,
                },
                _ = tokio::time::sleep(NODE_FOLLOW_INTERVAL * 2) => None,
                _ = shutdown.wait() => break,
            };
            t.follow_on_node(&node, &label, w, &mut conn, &mut shutdown)
                .await;
        }
        if let Some(c) = conn {
            c.close(Duration::from_millis(100)).await;
        }
    })
}

impl TargetState {
    /// Follows write `w` on one direct node until it is visible there or
    /// `replication_timeout` passes (DESIGN §2.6). `conn` is the node's connection, kept
    /// between rounds and reopened after any failure. With no write to follow (`None`), it
    /// only checks that the node answers. `label` is the node's `node` label.
    pub async fn follow_on_node(
        &self,
        node: &Endpoint,
        label: &str,
        w: Option<Acked>,
        conn: &mut Option<Conn>,
        shutdown: &mut Shutdown,
    ) {
        let label = NodeLabels {
            target: self.name.clone(),
            node: label.to_string(),
        };
        let up = self.metrics.node_up.get_or_create_owned(&label);
        // A cluster replica holds only its shard's keys: another shard's write is not
        // followed there (the node is only checked to answer).
        let w = match &self.cluster {
            Some(c) => w.filter(|w| {
                let slot = self.slot(w.key_index).unwrap_or_default();
                c.replica_ranges(&node.host, node.port)
                    .is_some_and(|r| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            }),
            None => w,
        };
        let (key, deadline) = match w {
            Some(w) => (
                self.key(w.key_index),
                self.clock.instant_of(w.acked_us) + self.settings.replication_timeout,
            ),
            None => (Vec::new(), Instant::now()),
        };
        // Poll from 1 ms, doubling to 100 ms: sub-millisecond resolution where replication
        // is fast, at most ten GETs a second where it is slow.
        let mut pause = Duration::from_millis(1);
        loop {
            let c = match conn {
                Some(c) => c,
                None => match self.connect_to(Kind::Node, node).await {
                    // A cluster replica serves reads only to a connection that said READONLY.
                    Ok(mut c) if self.cluster.is_some() => {
                        match c
                            .call(&[b"READONLY"], 0, self.settings.response_timeout)
                            .await
                        {
                            Ok(_) => conn.insert(c),
                            Err(_) => {
                                up.set(0);
                                return;
                            }
                        }
                    }
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        if e.internal_cause().is_none() {
                            up.set(0);
                        }
                        return;
                    }
                },
            };
            let Some(w) = w else {
                let pong = c.call(&[b"PING"], 0, self.settings.response_timeout).await;
                up.set(i64::from(pong.is_ok()));
                if pong.is_err() {
                    *conn = None;
                }
                return;
            };
            let reply = c
                .call(
                    &[b"GET", &key],
                    self.reply_limit,
                    self.settings.response_timeout,
                )
                .await;
            match reply.as_ref().map(bulk) {
                Ok(Some(value)) => {
                    up.set(1);
                    if self.lock_ledger().shows(w.seq, value) {
                        let delay = Instant::now()
                            .saturating_duration_since(self.clock.instant_of(w.acked_us));
                        self.metrics
                            .replication_delay
                            .get_or_create(&label)
                            .observe(delay.as_secs_f64());
                        self.with_stats(|s| s.replication(&label.node, Some(delay)));
                        return;
                    }
                }
                Ok(_) => {
                    up.set(0);
                    *conn = None;
                    return;
                }
                Err(e) => {
                    // LOADING, MASTERDOWN...: reachable but not serving; others: gone.
                    up.set(0);
                    if e.drops_connection() {
                        if e.is_peer_close() {
                            self.metrics.kind(Kind::Node).drops.inc();
                        }
                        *conn = None;
                    }
                    return;
                }
            }
            if Instant::now() + pause > deadline {
                self.metrics
                    .replication_timeouts
                    .get_or_create(&label)
                    .inc();
                self.with_stats(|s| s.replication(&label.node, None));
                tracing::debug!(target_name = %self.name, node = %label.node, "replication timeout");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => return,
            }
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}
