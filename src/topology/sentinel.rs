//! Sentinel targets (DESIGN §12.1), as the most careful Sentinel-aware client does it:
//!
//! - discovery, on every connect ([`Sentinel`] is the connection's [`Locate`]): ask the
//!   sentinels in turn for `SENTINEL get-master-addr-by-name`, starting with the one whose
//!   answer was last confirmed; `Conn::open` connects to the address and confirms with
//!   `ROLE` that it is a master, else asks the next sentinel;
//! - following ([`Sentinel::follow`]): one pub/sub connection to a reachable sentinel,
//!   subscribed to `+switch-master` and moved to another sentinel when that one dies; a
//!   switch of our master bumps the generation, so every pooled connection is dropped and
//!   located again before its next use. READONLY and dead connections bump it too (through
//!   [`Locate::lost`]), and every `sentinel_refresh` all sentinels are asked again (their
//!   `sentinel_up`, `sentinel_masters`, and a switch whose message was missed);
//! - with `nodes = "auto"`, every refresh also asks a reachable sentinel for the replicas it
//!   lists (`SENTINEL replicas`) and publishes their addresses ([`Sentinel::replicas`]);
//!   the node followers come and go with them ([`crate::workload::run_auto_nodes`]).
//!
//! The sentinels' query connections are kept open between connects (one per sentinel), so
//! a discovery costs one round trip on a healthy topology.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use crate::conn::{Conn, ConnError, Endpoint, Locate, Located, Subscription};
use crate::metrics::{Metrics, SentinelMetrics};
use crate::shutdown::Shutdown;

/// The channel on which sentinels announce a new master: `<name> <old ip> <old port> <new
/// ip> <new port>`.
const SWITCH_CHANNEL: &str = "+switch-master";

/// Byte budget of a sentinel reply: an address, or the replicas' field lists.
const REPLY_LIMIT: usize = 256 * 1024;

/// Pause before subscribing again after a subscription ended, so that a sentinel that
/// accepts and drops connections cannot make this loop spin.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

/// An address as the sentinels give it.
pub type Addr = (String, u16);

/// The replicas a sentinel lists: `None` until one has answered.
pub type Replicas = Option<BTreeSet<Addr>>;

/// Builds the endpoint of a data node at `host`, `port`: the target's data-node
/// credentials, database and TLS. An error (a TLS setting that cannot work) is logged and
/// the node skipped.
pub type NodeEndpoint = Box<dyn Fn(&str, u16) -> Result<Endpoint, String> + Send + Sync>;

/// `nodes = "auto"`: what the node followers need to follow the replicas the sentinels
/// list.
pub struct AutoNodes {
    /// The replicas listed at every refresh ([`Sentinel::replicas`]).
    pub replicas: tokio::sync::watch::Receiver<Replicas>,
    /// The endpoint of a listed replica.
    pub endpoint: NodeEndpoint,
}

/// One sentinel: where it is, its label, its query connection and its last answer.
struct Node {
    ep: Endpoint,
    label: String,
    conn: tokio::sync::Mutex<Option<Conn>>,
    answer: Mutex<Option<Addr>>,
}

/// The sentinel side of one sentinel target (see the module documentation).
pub struct Sentinel {
    target: String,
    master_name: String,
    nodes: Vec<Node>,
    /// The sentinel asked first: the one whose answer was last confirmed.
    preferred: AtomicUsize,
    /// Bumped when pooled connections must be dropped and located again.
    generation: AtomicU64,
    /// The master last confirmed or announced.
    master: Mutex<Option<Addr>>,
    metrics: SentinelMetrics,
    response_timeout: Duration,
    refresh: Duration,
    /// The replicas listed at the last refresh that got an answer, when they are followed
    /// (`nodes = "auto"`); `None` in the sender when they are not asked for.
    replicas: Option<tokio::sync::watch::Sender<Replicas>>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("target", &self.target)
            .field("master_name", &self.master_name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Sentinel {
    /// The sentinel side of target `target`: its sentinels' endpoints (their own
    /// credentials and TLS), the master name; creates the sentinel series at 0. With
    /// `list_replicas`, every refresh also asks for the replicas (see [`Self::replicas`]).
    pub fn new(
        target: &str,
        master_name: &str,
        sentinels: Vec<Endpoint>,
        metrics: &Metrics,
        response_timeout: Duration,
        refresh: Duration,
        list_replicas: bool,
    ) -> Arc<Sentinel> {
        let labels: Vec<String> = sentinels.iter().map(Endpoint::host_port).collect();
        Arc::new(Sentinel {
            target: target.to_string(),
            master_name: master_name.to_string(),
            metrics: metrics.sentinel(target, &labels),
            nodes: sentinels
                .into_iter()
                .zip(labels)
                .map(|(ep, label)| Node {
                    ep,
                    label,
                    conn: tokio::sync::Mutex::new(None),
                    answer: Mutex::new(None),
                })
                .collect(),
            preferred: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            master: Mutex::new(None),
            response_timeout,
            refresh,
            replicas: list_replicas.then(|| tokio::sync::watch::channel(None).0),
        })
    }

    /// The replicas the sentinels list, republished at every refresh that got an answer
    /// (even when unchanged, so that a follower set can age out the ones no longer
    /// listed); `None` unless the sentinel side was built with `list_replicas`.
    pub fn replicas(&self) -> Option<tokio::sync::watch::Receiver<Replicas>> {
        self.replicas.as_ref().map(|r| r.subscribe())
    }

    /// Asks the sentinels in turn, from the preferred one, for the replicas of our master:
    /// the first list that parses.
    async fn ask_replicas(&self) -> Option<BTreeSet<Addr>> {
        let len = self.nodes.len();
        let from = self.preferred.load(Ordering::Relaxed);
        for n in 0..len {
            let i = (from + n) % len;
            let reply = self
                .query(i, &[b"SENTINEL", b"replicas", self.master_name.as_bytes()])
                .await;
            match reply.map(|v| parse_replicas(&v)) {
                Ok(Some(list)) => return Some(list),
                Ok(None) => {
                    tracing::debug!(target_name = %self.target, sentinel = %self.nodes[i].label, "unparseable SENTINEL replicas reply")
                }
                Err(e) => {
                    tracing::debug!(target_name = %self.target, sentinel = %self.nodes[i].label, error = %e, "SENTINEL replicas failed")
                }
            }
        }
        None
    }

    /// Sends one command to sentinel `i` on its query connection (opened when needed) and
    /// keeps `sentinel_up` of it: 0 when it cannot be reached or refuses our credentials.
    async fn query(&self, i: usize, args: &[&[u8]]) -> Result<Value, ConnError> {
        let node = &self.nodes[i];
        let up = &self.metrics.up[i];
        let mut guard = node.conn.lock().await;
        let conn = match &mut *guard {
            Some(conn) => conn,
            None => match Conn::open(&node.ep).await {
                Ok(conn) => guard.insert(conn),
                Err(e) => {
                    up.set(0);
                    return Err(e);
                }
            },
        };
        match conn.call(args, REPLY_LIMIT, self.response_timeout).await {
            Ok(v) => {
                up.set(1);
                Ok(v)
            }
            Err(e) => {
                if e.drops_connection() {
                    up.set(0);
                    *guard = None;
                }
                Err(e)
            }
        }
    }

    /// Asks sentinel `i` where our master is; `None` when it does not know the name.
    async fn ask_master(&self, i: usize) -> Result<Option<Addr>, ConnError> {
        let reply = self
            .query(
                i,
                &[
                    b"SENTINEL",
                    b"get-master-addr-by-name",
                    self.master_name.as_bytes(),
                ],
            )
            .await;
        let answer = match reply {
            Ok(Value::Nil) => Ok(None),
            Ok(Value::Array(items)) if items.len() == 2 => {
                match (
                    text(&items[0]),
                    text(&items[1]).and_then(|p| p.parse().ok()),
                ) {
                    (Some(host), Some(port)) if !host.is_empty() => Ok(Some((host, port))),
                    _ => Err(ConnError::Unexpected("SENTINEL get-master-addr-by-name")),
                }
            }
            Ok(_) => Err(ConnError::Unexpected("SENTINEL get-master-addr-by-name")),
            Err(e) => Err(e),
        };
        *self.nodes[i]
            .answer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = answer.as_ref().ok().cloned().flatten();
        if let Err(e) = &answer {
            tracing::debug!(target_name = %self.target, sentinel = %self.nodes[i].label, error = %e, "sentinel did not answer");
        }
        answer
    }

    /// Notes the master: a different one than known is a switch (counted once, however it
    /// was learnt) and outdates every pooled connection.
    fn set_master(&self, addr: Addr, how: &'static str) {
        let mut master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        match &*master {
            Some(known) if *known == addr => return,
            Some(known) => {
                self.generation.fetch_add(1, Ordering::Relaxed);
                self.metrics.master_switches.inc();
                tracing::warn!(
                    target_name = %self.target,
                    from = %format_addr(known),
                    to = %format_addr(&addr),
                    how,
                    "sentinel master switched"
                );
            }
            None => {
                tracing::info!(target_name = %self.target, master = %format_addr(&addr), how, "sentinel master found");
            }
        }
        *master = Some(addr);
    }

    /// Follows the target's sentinels until shutdown: the `+switch-master` subscription
    /// (moved to the next sentinel when its sentinel goes) and the refresh every
    /// `sentinel_refresh` (the first at once).
    pub async fn follow(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut sub: Option<(usize, Subscription)> = None;
        let mut next_from = 0;
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if sub.is_none() {
                sub = self.subscribe(next_from).await;
            }
            let event = tokio::select! {
                _ = tick.tick() => Event::Refresh,
                msg = next_message(&mut sub) => Event::Message(msg),
                _ = shutdown.wait() => break,
            };
            match event {
                Event::Refresh => {
                    self.refresh_all().await;
                    if let Some((i, _)) = &sub
                        && self.metrics.up[*i].get() == 0
                    {
                        tracing::warn!(target_name = %self.target, sentinel = %self.nodes[*i].label, "the subscribed sentinel is down: subscribing elsewhere");
                        next_from = *i + 1;
                        sub = None;
                    }
                }
                Event::Message(Some(payload)) => self.on_switch_message(&payload),
                Event::Message(None) => {
                    if let Some((i, _)) = sub.take() {
                        tracing::warn!(target_name = %self.target, sentinel = %self.nodes[i].label, "the +switch-master subscription ended: subscribing elsewhere");
                        next_from = i + 1;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
                        _ = shutdown.wait() => break,
                    }
                }
            }
        }
    }

    /// Subscribes to `+switch-master` on the first sentinel that accepts, from `from` on.
    async fn subscribe(&self, from: usize) -> Option<(usize, Subscription)> {
        for n in 0..self.nodes.len() {
            let i = (from + n) % self.nodes.len();
            match Subscription::open(&self.nodes[i].ep, SWITCH_CHANNEL).await {
                Ok(s) => {
                    tracing::info!(target_name = %self.target, sentinel = %self.nodes[i].label, "following +switch-master");
                    return Some((i, s));
                }
                Err(e) => {
                    tracing::debug!(target_name = %self.target, sentinel = %self.nodes[i].label, error = %e, "cannot subscribe");
                }
            }
        }
        None
    }

    /// A `+switch-master` message: ours when it names our master.
    fn on_switch_message(&self, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        match parse_switch(&text) {
            Some((name, addr)) if name == self.master_name => {
                self.set_master(addr, "+switch-master");
            }
            Some(_) => {}
            None => {
                tracing::debug!(target_name = %self.target, "unparseable +switch-master message")
            }
        }
    }

    /// Asks every sentinel: `sentinel_up` of each, `sentinel_masters`, and when none of
    /// them names the known master any more, every pooled connection looks again.
    async fn refresh_all(&self) {
        let mut named = BTreeSet::new();
        for i in 0..self.nodes.len() {
            if let Ok(Some(addr)) = self.ask_master(i).await {
                named.insert(addr);
            }
        }
        self.metrics.masters.set(named.len() as i64);
        let known = self
            .master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(known) = known
            && !named.is_empty()
            && !named.contains(&known)
        {
            tracing::info!(target_name = %self.target, master = %format_addr(&known), "no sentinel names the known master any more: locating again");
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(replicas) = &self.replicas
            && let Some(list) = self.ask_replicas().await
        {
            replicas.send_replace(Some(list));
        }
    }
}

/// What woke the following loop.
enum Event {
    Refresh,
    Message(Option<Vec<u8>>),
}

/// The next message of the subscription; never, without one.
async fn next_message(sub: &mut Option<(usize, Subscription)>) -> Option<Vec<u8>> {
    match sub {
        Some((_, s)) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Locate for Sentinel {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn sources(&self) -> Vec<(String, bool)> {
        self.nodes
            .iter()
            .zip(&self.metrics.up)
            .map(|(n, up)| (n.label.clone(), up.get() == 1))
            .collect()
    }

    fn ask(&self, n: usize) -> Located<'_> {
        Box::pin(async move {
            let len = self.nodes.len();
            if n >= len {
                return None;
            }
            let i = (self.preferred.load(Ordering::Relaxed) + n) % len;
            Some(
                self.ask_master(i)
                    .await
                    .and_then(|a| a.ok_or(ConnError::NoMaster)),
            )
        })
    }

    fn confirmed(&self, host: &str, port: u16) {
        let len = self.nodes.len();
        let from = self.preferred.load(Ordering::Relaxed);
        let named_it = (0..len).map(|n| (from + n) % len).find(|&i| {
            self.nodes[i]
                .answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|(h, p)| h == host && *p == port)
        });
        if let Some(i) = named_it {
            self.preferred.store(i, Ordering::Relaxed);
        }
        self.set_master((host.to_string(), port), "a connect");
    }

    fn lost(&self, generation: u64) {
        let _ = self.generation.compare_exchange(
            generation,
            generation + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The text of a bulk or simple string reply.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `host:port`, bracketed for IPv6.
fn format_addr((host, port): &Addr) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A `SENTINEL replicas` reply: one field list per replica (flat `key value` pairs in
/// RESP2, a map in RESP3) → the `ip`/`port` addresses, every replica listed whatever its
/// `flags` (a down one is followed and shows `node_up` 0). `None` when it is not such a
/// reply.
fn parse_replicas(v: &Value) -> Option<BTreeSet<Addr>> {
    let Value::Array(replicas) = v else {
        return None;
    };
    let mut out = BTreeSet::new();
    for r in replicas {
        let pairs: Vec<(Option<String>, Option<String>)> = match r {
            Value::Array(flat) if flat.len() % 2 == 0 => flat
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
            _ => return None,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.as_deref() == Some(name))
                .and_then(|(_, v)| v.clone())
        };
        let host = field("ip").filter(|h| !h.is_empty())?;
        let port = field("port")?.parse().ok()?;
        out.insert((host, port));
    }
    Some(out)
}

/// `<name> <old ip> <old port> <new ip> <new port>` → the name and the new address.
fn parse_switch(text: &str) -> Option<(&str, Addr)> {
    let mut parts = text.split_ascii_whitespace();
    let name = parts.next()?;
    let (_old_ip, _old_port) = (parts.next()?, parts.next()?);
    let host = parts.next()?;
    let port = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then(|| (name, (host.to_string(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_message_names_the_master_and_its_new_address() {
        assert_eq!(
            parse_switch("mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some(("mymaster", ("127.0.0.1".to_string(), 6380)))
        );
        assert_eq!(parse_switch("mymaster 127.0.0.1 6379 127.0.0.1"), None);
        assert_eq!(parse_switch("m a 1 b x"), None);
        assert_eq!(parse_switch("m a 1 b 2 extra"), None);
    }

    fn sentinel() -> Arc<Sentinel> {
        let url: crate::config::RedisUrl = "redis://127.0.0.1:1".parse().expect("url");
        let ep = Endpoint::new(
            &url,
            None,
            &crate::config::PasswordSource::None,
            None,
            "t".into(),
            Duration::from_millis(100),
        );
        Sentinel::new(
            "t",
            "m",
            vec![ep],
            &Metrics::new(),
            Duration::from_millis(100),
            Duration::from_secs(1),
            false,
        )
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_replicas_reply_gives_every_listed_address_whatever_its_flags() {
        let replica = |ip: &str, port: &str, flags: &str| {
            Value::Array(
                [
                    "name", "x", "ip", ip, "port", port, "runid", "", "flags", flags,
                ]
                .iter()
                .map(|s| bulk(s))
                .collect(),
            )
        };
        let reply = Value::Array(vec![
            replica("127.0.0.1", "6380", "slave"),
            replica("127.0.0.1", "6381", "s_down,slave,disconnected"),
        ]);
        let want: BTreeSet<Addr> = [("127.0.0.1".into(), 6380), ("127.0.0.1".into(), 6381)]
            .into_iter()
            .collect();
        assert_eq!(parse_replicas(&reply), Some(want));
        assert_eq!(parse_replicas(&Value::Array(vec![])), Some(BTreeSet::new()));
        assert_eq!(
            parse_replicas(&Value::Array(vec![replica("h", "x", "slave")])),
            None
        );
        assert_eq!(parse_replicas(&bulk("ERR")), None);
        let map = Value::Array(vec![Value::Map(vec![
            (bulk("ip"), bulk("h")),
            (bulk("port"), bulk("1")),
        ])]);
        assert_eq!(parse_replicas(&map).map(|s| s.len()), Some(1));
    }

    #[test]
    fn a_new_master_is_one_switch_however_often_it_is_learnt() {
        let s = sentinel();
        s.set_master(("a".into(), 1), "a connect");
        assert_eq!((s.generation(), s.metrics.master_switches.get()), (0, 0));
        s.on_switch_message(b"m a 1 b 2");
        s.confirmed("b", 2);
        s.on_switch_message(b"other b 2 c 3");
        assert_eq!((s.generation(), s.metrics.master_switches.get()), (1, 1));
    }

    #[test]
    fn a_lost_connection_outdates_its_generation_once() {
        let s = sentinel();
        s.lost(0);
        s.lost(0);
        assert_eq!(s.generation(), 1);
    }
}
