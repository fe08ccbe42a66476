//! Redis Cluster on loopback (DESIGN §12.2): real `redis-server --cluster-enabled yes`
//! nodes, each a [`RedisServer`] (port from [`reserve_port`], data, log and `nodes.conf`
//! in its own dir, killed and reaped on drop, its log tail printed when a test fails) with
//! its cluster bus on a second reserved port (`--cluster-port`: the default, port + 10000,
//! may land in the kernel's ephemeral range), `--cluster-node-timeout 1000` (a master
//! kill fails over in about 2-3 s here) and no persistence. The cluster is made by
//! `redis-cli --cluster create` (three masters, a replica each, or three masters alone),
//! then polled until every node reports `cluster_state:ok`, all of them describe the same
//! shards in `CLUSTER SHARDS` and every replica is in sync.
//!
//! Faults: SIGKILL of a master (returns the failover time measured by polling `CLUSTER
//! SHARDS` on a survivor), restart of a node (it rejoins with its `nodes.conf`), `CLUSTER
//! FAILOVER` on a replica, slots migrated between masters with `CLUSTER SETSLOT` and
//! `MIGRATE` while clients write (a window of ASK, then MOVED), and `redis-cli --cluster
//! reshard`. Every wait polls with a deadline; nothing sleeps to synchronise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::RedisServer;
use super::ports::{ReservedPort, reserve_port};

/// The number of hash slots of every Redis Cluster.
pub const SLOTS: u32 = 16384;

/// How long a created or disturbed cluster may take to settle (every node `ok`, one view,
/// replicas in sync). Generous: tests run beside others on two shared cores.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// How long a failover may take from the kill (node timeout 1 s, then an election; about
/// 2-3 s when idle, more on a loaded machine).
pub const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

/// `cluster-node-timeout` of every node: a master unreachable this long is suspected, and
/// its replica is promoted within about another second.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// The `redis-cli` binary: `REDIS_CLI_BIN`, else `redis-cli` from PATH.
pub fn redis_cli_bin() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".into())
}

/// A RESP reply as a tree (the plain [`super::Client`] flattens arrays).
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Text(String),
    Int(i64),
    Nil,
    Array(Vec<Resp>),
}

impl Resp {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Resp::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Int(n) => Some(*n),
            Resp::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Resp] {
        match self {
            Resp::Array(a) => a,
            _ => &[],
        }
    }

    /// The value after `key` in a RESP2 map (a flat array of key, value, ...).
    pub fn field(&self, key: &str) -> Option<&Resp> {
        self.as_array()
            .chunks(2)
            .find(|kv| kv[0].as_str() == Some(key))
            .and_then(|kv| kv.get(1))
    }
}

/// One command on a new connection to `127.0.0.1:port`, the reply as a tree; an error
/// reply or an I/O failure as `Err`. Every read waits 5 s at most.
pub fn call_tree(port: u16, args: &[&str]) -> Result<Resp, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut reader = BufReader::new(s);
    reader
        .get_mut()
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())?;
    read_tree(&mut reader)
}

fn read_tree(r: &mut BufReader<TcpStream>) -> Result<Resp, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (tag, rest) = line.split_at(1.min(line.len()));
    let len = || {
        rest.parse::<i64>()
            .map_err(|_| format!("bad length {line:?}"))
    };
    match tag {
        "+" => Ok(Resp::Text(rest.to_string())),
        ":" => Ok(Resp::Int(len()?)),
        "-" => Err(rest.to_string()),
        "$" => {
            let n = len()?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(Resp::Text(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let n = len()?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            (0..n)
                .map(|_| read_tree(r))
                .collect::<Result<_, _>>()
                .map(Resp::Array)
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// One command on a new connection, the reply as text (arrays joined by newlines).
pub fn call(port: u16, args: &[&str]) -> Result<String, String> {
    fn text(r: &Resp) -> String {
        match r {
            Resp::Text(s) => s.clone(),
            Resp::Int(n) => n.to_string(),
            Resp::Nil => "(nil)".into(),
            Resp::Array(a) => a.iter().map(text).collect::<Vec<_>>().join("\n"),
        }
    }
    call_tree(port, args).map(|r| text(&r))
}

/// One field of a `CLUSTER INFO` or `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_string)
    })
}

/// A node as `CLUSTER SHARDS` describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardNode {
    pub id: String,
    pub port: u16,
    /// `online`, `failed` or `loading`.
    pub health: String,
}

/// A shard as `CLUSTER SHARDS` describes it: its slot ranges (inclusive), its master and
/// its replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shard {
    pub slots: Vec<(u16, u16)>,
    pub master: ShardNode,
    pub replicas: Vec<ShardNode>,
}

impl Shard {
    /// The canary's `shard` label: the first slot range, e.g. `0-5460` (DESIGN §12.2).
    pub fn label(&self) -> String {
        let (a, b) = self.slots[0];
        format!("{a}-{b}")
    }

    pub fn first_slot(&self) -> u16 {
        self.slots[0].0
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(|(a, b)| u32::from(b - a) + 1).sum()
    }
}

/// Parses a `CLUSTER SHARDS` reply (Redis 7): the shards that own slots, sorted by their
/// first slot, each with its replicas sorted by port. Masters that own nothing (a failed
/// master whose replica was promoted, before it rejoins) are left out.
pub fn parse_shards(reply: &Resp) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    for s in reply.as_array() {
        let ints: Vec<i64> = s
            .field("slots")
            .ok_or("a shard without slots")?
            .as_array()
            .iter()
            .filter_map(Resp::as_int)
            .collect();
        let slots: Vec<(u16, u16)> = ints
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0] as u16, p[1] as u16))
            .collect();
        if slots.is_empty() {
            continue;
        }
        let mut master = None;
        let mut replicas = Vec::new();
        for n in s.field("nodes").ok_or("a shard without nodes")?.as_array() {
            let get = |k: &str| n.field(k).and_then(Resp::as_str).unwrap_or_default();
            let node = ShardNode {
                id: get("id").to_string(),
                port: n.field("port").and_then(Resp::as_int).unwrap_or(0) as u16,
                health: get("health").to_string(),
            };
            if get("role") == "master" {
                master = Some(node);
            } else {
                replicas.push(node);
            }
        }
        replicas.sort();
        let mut slots = slots;
        slots.sort();
        shards.push(Shard {
            slots,
            master: master.ok_or("a shard without a master")?,
            replicas,
        });
    }
    shards.sort();
    Ok(shards)
}

/// One `redis-server --cluster-enabled yes` of a [`Cluster`].
pub struct ClusterNode {
    pub server: RedisServer,
    /// The node id (`CLUSTER MYID`); kept across restarts by its `nodes.conf`.
    pub id: String,
    pub bus_port: u16,
    _bus: ReservedPort,
}

impl ClusterNode {
    fn start(dir: PathBuf, full_coverage: bool) -> ClusterNode {
        let bus = reserve_port();
        let conf = dir.join("nodes.conf");
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf.display().to_string(),
            "--cluster-port",
            &bus.port.to_string(),
            "--cluster-node-timeout",
            &NODE_TIMEOUT_MS.to_string(),
            "--cluster-require-full-coverage",
            if full_coverage { "yes" } else { "no" },
            // A replica that lost its master during a test is always eligible: the data
            // age check would otherwise depend on how loaded the machine was.
            "--cluster-replica-validity-factor",
            "0",
            // Replicas stay with the master they were given (no migration to orphans).
            "--cluster-allow-replica-migration",
            "no",
            // Without this a master waits 5 s for more replicas before a full sync.
            "--repl-diskless-sync-delay",
            "0",
            // CLUSTER SHARDS calls a replica `loading` until its offset moves; on an idle
            // master only its pings move it (every 10 s by default).
            "--repl-ping-replica-period",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = RedisServer::start_in(dir, &args);
        let id = call(server.port, &["CLUSTER", "MYID"])
            .unwrap_or_else(|e| panic!("CLUSTER MYID on :{}: {e}", server.port));
        ClusterNode {
            server,
            id,
            bus_port: bus.port,
            _bus: bus,
        }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    pub fn try_call(&self, args: &[&str]) -> Result<String, String> {
        call(self.port(), args)
    }

    pub fn call(&self, args: &[&str]) -> String {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("{args:?} on :{}: {e}", self.port()))
    }

    /// `cluster_state` of `CLUSTER INFO` (`ok` or `fail`), `None` when unreachable.
    pub fn state(&self) -> Option<String> {
        self.try_call(&["CLUSTER", "INFO"])
            .ok()
            .and_then(|i| info_field(&i, "cluster_state"))
    }

    /// The shards as this node describes them.
    pub fn shards(&self) -> Result<Vec<Shard>, String> {
        parse_shards(&call_tree(self.port(), &["CLUSTER", "SHARDS"])?)
    }

    /// The first word of `ROLE`: `master` or `slave`.
    pub fn role(&self) -> Option<String> {
        self.try_call(&["ROLE"])
            .ok()
            .and_then(|r| r.lines().next().map(str::to_string))
    }

    /// This process's `run_id` (new on every start).
    pub fn run_id(&self) -> String {
        info_field(&self.call(&["INFO", "server"]), "run_id").expect("INFO server has run_id")
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// What [`Cluster::kill_master`] saw.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The shard's label before the kill (it keeps it: the slots move with the promotion).
    pub shard: String,
    pub old_port: u16,
    pub new_port: u16,
    /// When the master was killed.
    pub killed: Instant,
    /// When a survivor's `CLUSTER SHARDS` first named the promoted replica as the shard's
    /// online master (polled every 10 ms).
    pub promoted: Instant,
}

impl Failover {
    /// Kill → promotion, as the cluster itself reported it.
    pub fn duration(&self) -> Duration {
        self.promoted.duration_since(self.killed)
    }
}

/// A Redis Cluster on loopback (see the module documentation).
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub dir: tempfile::TempDir,
    replicas: usize,
}

impl Cluster {
    /// Six nodes: three masters with a replica each, `cluster-require-full-coverage no`
    /// (a shard that is down leaves the rest of the keyspace served, as in production
    /// setups that want per-shard failure), settled.
    pub fn start() -> Cluster {
        Self::create(6, 1, false)
    }

    /// Three masters and no replica, `cluster-require-full-coverage yes`: a master lost is
    /// the whole cluster answering `CLUSTERDOWN` until it is back.
    pub fn start_without_replicas() -> Cluster {
        Self::create(3, 0, true)
    }

    fn create(n: usize, replicas: usize, full_coverage: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<ClusterNode> = (0..n)
            .map(|i| ClusterNode::start(dir.path().join(format!("node{i}")), full_coverage))
            .collect();
        let cluster = Cluster {
            nodes,
            dir,
            replicas,
        };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        cluster.redis_cli(&args, Duration::from_secs(60));
        cluster.wait_settled();
        cluster
    }

    /// Runs `redis-cli ARGS` to completion (at most `within`, then it is killed); panics
    /// with its output if it fails. Returns its stdout.
    pub fn redis_cli(&self, args: &[String], within: Duration) -> String {
        let out = self.dir.path().join("redis-cli.out");
        let file = std::fs::File::create(&out).expect("redis-cli output file");
        let err = file.try_clone().expect("output handle");
        let mut child = Command::new(redis_cli_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed ({e}); scripts/install-deps",
                    redis_cli_bin()
                )
            });
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for redis-cli") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli {args:?} did not finish within {within:?}:\n{}",
                    super::read(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = super::read(&out);
        assert!(
            status.success(),
            "redis-cli {args:?} failed ({status}):\n{text}"
        );
        text
    }

    /// The running nodes.
    pub fn running(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// The shards as the first running node describes them.
    pub fn shards(&self) -> Vec<Shard> {
        let n = self.running().next().expect("a running node");
        n.shards()
            .unwrap_or_else(|e| panic!("CLUSTER SHARDS on :{}: {e}", n.port()))
    }

    /// The shard that owns `slot`.
    pub fn shard_of(&self, slot: u16) -> Shard {
        self.shards()
            .into_iter()
            .find(|s| s.owns(slot))
            .unwrap_or_else(|| panic!("no shard owns slot {slot}"))
    }

    /// The index in `nodes` of the node on `port`.
    pub fn node_on(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on :{port}"))
    }

    /// Any running node, as the canary's seed: `redis://127.0.0.1:PORT`.
    pub fn seed_url(&self) -> String {
        let n = self.running().next().expect("a running node");
        format!("redis://127.0.0.1:{}", n.port())
    }

    /// A `mode = "cluster"` target named `name` seeded by the first node, with `extra`
    /// lines.
    pub fn target_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[targets]]\nname = \"{name}\"\nmode = \"cluster\"\nurl = \"{}\"\n{extra}\n",
            self.seed_url()
        )
    }

    /// Whether every running node says `cluster_state:ok`, every one describes the same
    /// shards (all 16384 slots, masters online, the expected replicas online) and every
    /// replica's link to its master is up.
    pub fn is_settled(&self) -> bool {
        let mut views = Vec::new();
        for n in self.running() {
            if n.state().as_deref() != Some("ok") {
                return false;
            }
            match n.shards() {
                Ok(s) => views.push(s),
                Err(_) => return false,
            }
        }
        let Some(first) = views.first() else {
            return false;
        };
        let covered: u32 = first.iter().map(Shard::slot_count).sum();
        let healthy = first.iter().all(|s| {
            s.master.health == "online"
                && s.replicas.iter().filter(|r| r.health == "online").count() >= self.replicas
        });
        let in_sync = first.iter().all(|s| {
            s.replicas.iter().filter(|r| r.health == "online").all(|r| {
                call(r.port, &["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            })
        });
        covered == SLOTS && healthy && in_sync && views.iter().all(|v| v == first)
    }

    /// Waits (at most [`SETTLE_WITHIN`]) until [`Cluster::is_settled`].
    pub fn wait_settled(&self) {
        let deadline = Instant::now() + SETTLE_WITHIN;
        while !self.is_settled() {
            if Instant::now() > deadline {
                let views: Vec<String> = self
                    .running()
                    .map(|n| format!(":{} {:?} {:?}", n.port(), n.state(), n.shards()))
                    .collect();
                panic!(
                    "the cluster did not settle within {SETTLE_WITHIN:?}:\n{}\n{}",
                    views.join("\n"),
                    self.log_tails(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of the master of the shard that owns `slot`; returns once a survivor's
    /// `CLUSTER SHARDS` names one of its replicas as the shard's online master and every
    /// running node says `cluster_state:ok` again, with the kill → promotion time.
    pub fn kill_master(&mut self, slot: u16) -> Failover {
        let shard = self.shard_of(slot);
        let old_port = shard.master.port;
        assert!(
            !shard.replicas.is_empty(),
            "the shard of slot {slot} has no replica to promote"
        );
        let i = self.node_on(old_port);
        let killed = Instant::now();
        self.nodes[i].server.kill();
        let survivor = self
            .running()
            .find(|n| shard.replicas.iter().all(|r| r.port != n.port()))
            .expect("a node outside the shard")
            .port();
        let deadline = killed + FAILOVER_WITHIN;
        let (new_port, promoted) = loop {
            let now = Instant::now();
            let seen = call_tree(survivor, &["CLUSTER", "SHARDS"])
                .and_then(|r| parse_shards(&r))
                .ok()
                .and_then(|shards| shards.into_iter().find(|s| s.owns(slot)))
                .filter(|s| s.master.port != old_port && s.master.health == "online");
            if let Some(s) = seen {
                break (s.master.port, now);
            }
            if now > deadline {
                panic!(
                    "no replica of :{old_port} promoted within {FAILOVER_WITHIN:?}:\n{}",
                    self.log_tails(30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.wait_state_ok();
        Failover {
            shard: shard.label(),
            old_port,
            new_port,
            killed,
            promoted,
        }
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_state_ok(&self) {
        self.wait_state("ok");
    }

    /// Waits until every running node says `cluster_state:<want>`.
    pub fn wait_state(&self, want: &str) {
        let deadline = Instant::now() + SETTLE_WITHIN;
        while !self.running().all(|n| n.state().as_deref() == Some(want)) {
            if Instant::now() > deadline {
                panic!(
                    "cluster_state is not {want} on every node within {SETTLE_WITHIN:?}:\n{}",
                    self.log_tails(20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL of node `i` (no failover awaited).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].server.kill();
    }

    /// Starts node `i` again (after a kill) on its port, with its `nodes.conf` (so with
    /// its id: an old master rejoins as a replica of the one promoted in its place) and
    /// no data; waits until the cluster has settled again.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].is_running() {
            self.nodes[i].server.kill();
        }
        self.nodes[i].server.start_again();
        self.wait_settled();
    }

    /// `CLUSTER FAILOVER` on the replica on `port`; returns once it is the master of its
    /// shard in every running node's view, the old master its replica, and the cluster
    /// settled; with the time from the command to that view.
    pub fn manual_failover(&self, replica_port: u16) -> Duration {
        let i = self.node_on(replica_port);
        let node = &self.nodes[i];
        let started = Instant::now();
        node.call(&["CLUSTER", "FAILOVER"]);
        let deadline = started + FAILOVER_WITHIN;
        loop {
            let everywhere = node.role().as_deref() == Some("master")
                && self.running().all(|n| {
                    n.shards().is_ok_and(|s| {
                        s.iter()
                            .any(|s| s.master.port == replica_port && s.master.health == "online")
                    })
                });
            if everywhere {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "CLUSTER FAILOVER on :{replica_port} not done within {FAILOVER_WITHIN:?}:\n{}",
                    self.log_tails(30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        self.wait_settled();
        took
    }

    /// Starts moving the slots `first..=last` from the master on `from` to the master on
    /// `to`, as `redis-cli --cluster reshard` does: `SETSLOT IMPORTING` on the target,
    /// `SETSLOT MIGRATING` on the source, then the keys they hold with `MIGRATE`. Until
    /// [`Migration::finish`], clients get ASK for keys that moved (or are new).
    pub fn begin_migration(&self, first: u16, last: u16, from: u16, to: u16) -> Migration {
        let from_id = self.nodes[self.node_on(from)].id.clone();
        let to_id = self.nodes[self.node_on(to)].id.clone();
        for slot in first..=last {
            let s = slot.to_string();
            call(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
                .unwrap_or_else(|e| panic!("SETSLOT {s} IMPORTING on :{to}: {e}"));
            call(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
                .unwrap_or_else(|e| panic!("SETSLOT {s} MIGRATING on :{from}: {e}"));
        }
        let m = Migration {
            first,
            last,
            from,
            to,
            to_id,
            moved: 0,
        };
        let mut m = m;
        m.move_keys();
        m
    }

    /// `redis-cli --cluster reshard` of `n` slots from the master on `from` to the master
    /// on `to` (redis-cli takes the source's lowest slots); waits until settled.
    pub fn reshard(&self, from: u16, to: u16, n: u32) -> String {
        let from_id = self.nodes[self.node_on(from)].id.clone();
        let to_id = self.nodes[self.node_on(to)].id.clone();
        let args: Vec<String> = [
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{from}"),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &n.to_string(),
            "--cluster-yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = self.redis_cli(&args, Duration::from_secs(120));
        self.wait_settled();
        out
    }

    /// The last `n` lines of every node's log, for failure output.
    pub fn log_tails(&self, n: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- node :{} {} log tail ---\n{}",
                    node.port(),
                    node.id,
                    super::tail(&node.server.dir().join("redis.log"), n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The lines of every node's log that contain any of `needles` (e.g. "FAIL message",
    /// "Failover election won"), prefixed with the node's port: what the cluster itself
    /// recorded of a failover.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for l in n.log().lines() {
                if needles.iter().any(|x| l.contains(x)) {
                    out.push(format!(":{} {l}", n.port()));
                }
            }
        }
        out
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Slots on their way from one master to another (see [`Cluster::begin_migration`]).
pub struct Migration {
    pub first: u16,
    pub last: u16,
    pub from: u16,
    pub to: u16,
    to_id: String,
    /// Keys moved with MIGRATE so far.
    pub moved: usize,
}

impl Migration {
    /// MIGRATEs every key the source still holds in the slots (a client may have created
    /// more since); returns how many it moved now.
    pub fn move_keys(&mut self) -> usize {
        let mut now = 0;
        for slot in self.first..=self.last {
            let s = slot.to_string();
            loop {
                let keys = call_tree(self.from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])
                    .unwrap_or_else(|e| panic!("GETKEYSINSLOT {s} on :{}: {e}", self.from));
                let keys: Vec<&str> = keys.as_array().iter().filter_map(Resp::as_str).collect();
                if keys.is_empty() {
                    break;
                }
                let port = self.to.to_string();
                let mut args = vec![
                    "MIGRATE",
                    "127.0.0.1",
                    &port,
                    "",
                    "0",
                    "5000",
                    "REPLACE",
                    "KEYS",
                ];
                args.extend(keys.iter().copied());
                call(self.from, &args)
                    .unwrap_or_else(|e| panic!("MIGRATE of slot {s} from :{}: {e}", self.from));
                now += keys.len();
            }
        }
        self.moved += now;
        now
    }

    /// Moves what is left and assigns the slots to the target on every master (target
    /// first, then source, then the others, as redis-cli does); from then on clients of
    /// the old map get MOVED.
    pub fn finish(mut self, cluster: &Cluster) {
        self.move_keys();
        let masters: Vec<u16> = cluster.shards().iter().map(|s| s.master.port).collect();
        let mut order = vec![self.to, self.from];
        order.extend(
            masters
                .into_iter()
                .filter(|p| *p != self.to && *p != self.from),
        );
        for slot in self.first..=self.last {
            let s = slot.to_string();
            for port in &order {
                call(*port, &["CLUSTER", "SETSLOT", &s, "NODE", &self.to_id])
                    .unwrap_or_else(|e| panic!("SETSLOT {s} NODE on :{port}: {e}"));
            }
        }
        cluster.wait_settled();
    }
}

/// The slot of each of `keys` as the canary spreads them (DESIGN §12.2): key *i* is in
/// slot `floor(i * 16384 / keys)`.
pub fn canary_slots(keys: u32) -> Vec<u16> {
    (0..keys)
        .map(|i| (u64::from(i) * u64::from(SLOTS) / u64::from(keys)) as u16)
        .collect()
}

/// How many of the canary's `keys` keys fall in each shard, by label.
pub fn canary_keys_per_shard(shards: &[Shard], keys: u32) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for slot in canary_slots(keys) {
        if let Some(s) = shards.iter().find(|s| s.owns(slot)) {
            *out.entry(s.label()).or_insert(0) += 1;
        }
    }
    out
}

/// Writes `n` keys (`populate:<i>`, spread over the slots by their hash) the way a cluster
/// client does: each SET goes to the seed and follows the MOVED it may get. Returns how many
/// keys each master holds then (DBSIZE), by port.
pub fn populate(cluster: &Cluster, n: usize) -> BTreeMap<u16, usize> {
    let seed = cluster.running().next().expect("a running node").port();
    for i in 0..n {
        let key = format!("populate:{i}");
        let mut port = seed;
        for _ in 0..3 {
            match call(port, &["SET", &key, "x"]) {
                Ok(_) => break,
                Err(e) if e.starts_with("MOVED ") => {
                    port = e
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_else(|| panic!("unparsable redirect {e:?}"));
                }
                Err(e) => panic!("SET {key} on :{port}: {e}"),
            }
        }
    }
    cluster
        .shards()
        .iter()
        .map(|s| {
            let keys = call(s.master.port, &["DBSIZE"])
                .ok()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            (s.master.port, keys)
        })
        .collect()
}
