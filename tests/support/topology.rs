//! Topologies for the fault matrix (DESIGN §1, §9): several real `redis-server` nodes (a
//! master with replicas, or independent masters) that share one password; the project's
//! role-checking HAProxy started from `deploy/haproxy/haproxy.cfg`; a LoadBalancer-like
//! round-robin proxy without health checks (HAProxy with a tiny generated config); a
//! userspace [`DelayProxy`] that injects exact latency or blackholes a link (this kernel has
//! no netem, and it needs no root); and [`SoakRun`], `redis-canary soak` as a child process
//! whose `/metrics` can be polled while it runs.
//!
//! Faults: SIGKILL, SIGSTOP/SIGCONT, restarts (with the node's data, empty, or from an
//! older snapshot), promotion of a replica, password rotation, proxy restarts, latency,
//! partitions. Every wait polls with a deadline; every process is killed and reaped on
//! drop, and the logs are printed when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::ports::{ReservedPort, reserve_port};
use super::{
    Client, RedisServer, Scrape, http_get, send_signal, spawn_canary_in, tail, wait_until,
};

/// The password every node starts with, and the one the HAProxy health check sends. Plain
/// ASCII without spaces: the check sends it as an inline command.
pub const PASSWORD: &str = "topology-pw-0";

/// How long to wait for a process to come up or for a topology to settle. Generous: the
/// tests run in parallel on two cores.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// One value of an `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_string)
    })
}

fn client_with(port: u16, password: &str) -> Result<Client, String> {
    let mut c = Client::connect(port).map_err(|e| e.to_string())?;
    c.call(&["AUTH", password])?;
    Ok(c)
}

fn call_with(port: u16, password: &str, args: &[&str]) -> Result<String, String> {
    client_with(port, password)?.call(args)
}

/// An RDB file saved from a node at some moment, to restart a node from later.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub path: PathBuf,
    /// When `SAVE` returned.
    pub taken: Instant,
}

/// One `redis-server` of a [`Topology`] (a [`RedisServer`]): password required (also
/// towards its master), no automatic persistence (unless `extra` says otherwise), data and
/// log in its own dir.
pub struct Node {
    pub port: u16,
    pub dir: PathBuf,
    server: RedisServer,
    password: String,
    /// The master this node follows, by port; `None` for a master.
    replica_of: Option<u16>,
    extra: Vec<String>,
    snapshots: u32,
}

impl Node {
    fn new(dir: PathBuf, replica_of: Option<u16>, extra: &[&str]) -> Node {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let args = Self::args(PASSWORD, replica_of, &extra);
        let server = RedisServer::start_in(dir.clone(), &args);
        Node {
            port: server.port,
            dir,
            server,
            password: PASSWORD.to_string(),
            replica_of,
            extra,
            snapshots: 0,
        }
    }

    /// The arguments of a start with this password and role.
    fn args(password: &str, replica_of: Option<u16>, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--requirepass",
            password,
            "--masterauth",
            password,
            // Without this a master waits 5 s for more replicas before a full sync; tests
            // that want that window back set it with CONFIG SET.
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(master) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// Starts the process (after [`Node::kill`]) on the same port with the current
    /// password and role; it loads whatever data its dir holds. Waits until it answers.
    pub fn start(&mut self) {
        assert!(!self.server.is_running(), "node :{} is running", self.port);
        self.server
            .set_args(&Self::args(&self.password, self.replica_of, &self.extra));
        self.server.start_again();
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// `redis://127.0.0.1:PORT` (credentials come from the canary's password source).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as in `node` labels and `laddr`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The current role as configured here (`None`: master).
    pub fn replica_of(&self) -> Option<u16> {
        self.replica_of
    }

    /// An authenticated client.
    pub fn client(&self) -> Result<Client, String> {
        client_with(self.port, &self.password)
    }

    /// One command on a new authenticated connection.
    pub fn try_call(&self, args: &[&str]) -> Result<String, String> {
        call_with(self.port, &self.password, args)
    }

    /// One command that must succeed.
    pub fn call(&self, args: &[&str]) -> String {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("{args:?} on :{}: {e}", self.port))
    }

    pub fn info(&self, section: &str) -> String {
        self.call(&["INFO", section])
    }

    /// This process's `run_id` (new on every start).
    pub fn run_id(&self) -> String {
        info_field(&self.info("server"), "run_id").expect("INFO server has run_id")
    }

    /// SIGKILL and reap: no shutdown save, sockets closed by the kernel.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// SIGKILL, then start again with the data the node has on disk (its AOF when started
    /// with `--appendonly yes`, else the last RDB in its dir: a replica keeps the one its
    /// last full sync received).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGKILL, remove every data file, start: a pod restarted without a volume.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.remove_data();
        self.start();
    }

    fn remove_data(&self) {
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
    }

    /// `SAVE`, and a copy of the RDB kept aside for [`Node::restart_from`].
    pub fn save_snapshot(&mut self) -> Snapshot {
        self.call(&["SAVE"]);
        let taken = Instant::now();
        self.snapshots += 1;
        let path = self
            .dir
            .with_file_name(format!("snapshot-{}-{}.rdb", self.port, self.snapshots));
        std::fs::copy(self.dir.join("dump.rdb"), &path).expect("copying the snapshot");
        Snapshot { path, taken }
    }

    /// SIGKILL, replace the node's data with `snapshot`, start: a pod restarted from an
    /// old volume. RDB only: a node started with `--appendonly yes` would ignore it.
    pub fn restart_from(&mut self, snapshot: &Snapshot) {
        assert!(
            !self
                .extra
                .windows(2)
                .any(|w| w[0] == "--appendonly" && w[1] == "yes"),
            "snapshots are RDB files; this node would load its AOF instead"
        );
        self.kill();
        self.remove_data();
        std::fs::copy(&snapshot.path, self.dir.join("dump.rdb")).expect("restoring the snapshot");
        self.start();
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing answers.
    pub fn pause(&mut self) {
        self.server.pause();
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.server.resume();
    }

    /// `REPLICAOF` at run time (`None`: `REPLICAOF NO ONE`); remembered for restarts.
    pub fn set_replica_of(&mut self, master: Option<u16>) {
        if self.is_running() {
            match master {
                Some(port) => self.call(&["REPLICAOF", "127.0.0.1", &port.to_string()]),
                None => self.call(&["REPLICAOF", "NO", "ONE"]),
            };
        }
        self.replica_of = master;
    }

    /// Whether this replica's link to its master is up and its initial sync is done.
    pub fn in_sync(&self) -> bool {
        self.try_call(&["INFO", "replication"]).is_ok_and(|i| {
            i.contains("master_link_status:up") && !i.contains("master_sync_in_progress:1")
        })
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Several nodes sharing one password, a password file for the canary, and a temp dir
/// for data, snapshots and proxy configs.
pub struct Topology {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
    password: String,
}

impl Topology {
    /// Node 0 a master, nodes 1.. its replicas, all in sync. `extra` goes to every node.
    pub fn replicated(n: usize, extra: &[&str]) -> Topology {
        assert!(n >= 1);
        let dir = tempfile::tempdir().expect("temp dir");
        let master = Node::new(dir.path().join("node0"), None, extra);
        let mport = master.port;
        let mut nodes = vec![master];
        for i in 1..n {
            nodes.push(Node::new(
                dir.path().join(format!("node{i}")),
                Some(mport),
                extra,
            ));
        }
        let t = Topology::with(nodes, dir);
        t.wait_in_sync();
        t
    }

    /// `n` masters that know nothing of each other.
    pub fn independent(n: usize, extra: &[&str]) -> Topology {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = (0..n)
            .map(|i| Node::new(dir.path().join(format!("node{i}")), None, extra))
            .collect();
        Topology::with(nodes, dir)
    }

    fn with(nodes: Vec<Node>, dir: tempfile::TempDir) -> Topology {
        let t = Topology {
            nodes,
            dir,
            password: PASSWORD.to_string(),
        };
        t.write_password_file(PASSWORD);
        t
    }

    /// The password the servers require now.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A file holding the password, for the canary's `password_file`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// Replaces the password file's content (the canary re-reads it on every connect).
    pub fn write_password_file(&self, password: &str) {
        // Write then rename: a reader never sees a half-written file.
        let tmp = self.dir.path().join("password.tmp");
        std::fs::write(&tmp, format!("{password}\n")).expect("writing the password file");
        std::fs::rename(&tmp, self.password_file()).expect("replacing the password file");
    }

    /// Rotates the password on every running node (`CONFIG SET masterauth`, then
    /// `requirepass`); connections already authenticated stay so. Restarts use it too.
    pub fn set_server_password(&mut self, password: &str) {
        for n in self.nodes.iter_mut() {
            if n.is_running() {
                n.call(&["CONFIG", "SET", "masterauth", password]);
            }
        }
        for n in self.nodes.iter_mut() {
            if n.is_running() {
                n.call(&["CONFIG", "SET", "requirepass", password]);
            }
            n.password = password.to_string();
        }
        self.password = password.to_string();
    }

    /// Puts [`PASSWORD`] back on the servers and in the file.
    pub fn restore_password(&mut self) {
        self.set_server_password(PASSWORD);
        self.write_password_file(PASSWORD);
    }

    /// Closes every normal client connection of node `i` (the canary's, not replication
    /// links): its clients must reconnect, with whatever credentials they have now.
    pub fn kill_client_connections(&self, i: usize) {
        self.nodes[i].call(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    }

    /// The node that is currently master (configured without a master).
    pub fn master(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| n.replica_of.is_none())
            .expect("a master")
    }

    /// Fails over to node `i`: `REPLICAOF NO ONE` on it, then every other node follows it
    /// (nodes that are down follow it when they start). No pause of the old master:
    /// writes it acknowledges in between are lost, as in a real unmanaged failover.
    pub fn promote(&mut self, i: usize) {
        self.nodes[i].set_replica_of(None);
        let port = self.nodes[i].port;
        for (j, n) in self.nodes.iter_mut().enumerate() {
            if j != i {
                n.set_replica_of(Some(port));
            }
        }
    }

    /// Waits until every running replica has finished its sync.
    pub fn wait_in_sync(&self) {
        for n in &self.nodes {
            if n.replica_of.is_some() && n.is_running() {
                wait_until(
                    &format!("replica :{} in sync", n.port),
                    READY_WITHIN,
                    || n.in_sync(),
                );
            }
        }
    }

    /// The project's HAProxy (`deploy/haproxy/haproxy.cfg`) in front of the three nodes,
    /// checking for `role:<role>` (`master` for Redis; `active-replica` is for KeyDB).
    /// Returns once its stats page shows the expected node states.
    pub fn haproxy(&self, role: &str) -> Haproxy {
        assert_eq!(
            self.nodes.len(),
            3,
            "deploy/haproxy/haproxy.cfg has three nodes"
        );
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
        let mut env = vec![
            ("REDIS_PASSWORD".to_string(), self.password.clone()),
            ("REDIS_ROLE".to_string(), role.to_string()),
        ];
        for (i, n) in self.nodes.iter().enumerate() {
            env.push((format!("REDIS_NODE_{i}"), n.addr()));
        }
        let mut h = Haproxy::new(env, HaproxyConfig::File(config));
        h.start();
        if role == "master" {
            h.wait_status(&self.expected_status(), READY_WITHIN);
        }
        h
    }

    /// What the role-checking HAProxy should show for each node (REDIS_ROLE=master).
    pub fn expected_status(&self) -> Vec<&'static str> {
        self.nodes
            .iter()
            .map(|n| {
                if n.is_running() && n.replica_of.is_none() {
                    "UP"
                } else {
                    "DOWN"
                }
            })
            .collect()
    }

    /// A LoadBalancer-like proxy over every node: plain round robin, no health check.
    pub fn round_robin(&self) -> Haproxy {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.round_robin_over(&all)
    }

    /// A plain round robin over the nodes `which`. `retries 0`: a connection that lands
    /// on a dead node is accepted and closed at once (what a client of a LoadBalancer
    /// whose endpoint just died sees), not retried elsewhere behind the client's back.
    pub fn round_robin_over(&self, which: &[usize]) -> Haproxy {
        let servers: String = which
            .iter()
            .map(|&i| format!("    server node{i} {}\n", self.nodes[i].addr()))
            .collect();
        let text = format!(
            "# Generated by tests/support/topology.rs: a LoadBalancer-like round robin.\n\
             global\n    log stderr format raw local0 notice\n    maxconn 4096\n\
             defaults\n    mode tcp\n    log global\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n    retries 0\n\
             frontend redis\n    bind \"${{HAPROXY_BIND}}\"\n    default_backend redis_nodes\n\
             backend redis_nodes\n    balance roundrobin\n{servers}\
             frontend stats\n    mode http\n    bind \"${{HAPROXY_STATS_BIND}}\"\n    timeout client 30s\n    stats enable\n    stats uri /\n"
        );
        let mut h = Haproxy::new(Vec::new(), HaproxyConfig::Generated(text));
        h.start();
        h
    }

    /// A [`DelayProxy`] in front of node `i`.
    pub fn delay_proxy(&self, i: usize) -> DelayProxy {
        DelayProxy::start(self.nodes[i].port)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                // Each node's log tail follows, printed by its RedisServer.
                eprintln!("--- node :{} is a replica of {:?}", n.port, n.replica_of);
            }
        }
    }
}

/// Where an HAProxy's configuration comes from.
enum HaproxyConfig {
    /// The project's file, used as it is.
    File(PathBuf),
    /// A config written into the proxy's temp dir.
    Generated(String),
}

/// A real HAProxy in the foreground, its config, its environment and its log. Its two
/// ports come from [`reserve_port`] (HAProxy cannot report a port it bound on port 0) and
/// stay reserved for restarts; a first start that fails to bind retries on new ones.
pub struct Haproxy {
    pub port: u16,
    pub stats_port: u16,
    ports: (ReservedPort, ReservedPort),
    config: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    started: bool,
}

impl Haproxy {
    fn new(mut env: Vec<(String, String)>, config: HaproxyConfig) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = match config {
            HaproxyConfig::File(path) => path,
            HaproxyConfig::Generated(text) => {
                let path = dir.path().join("haproxy.cfg");
                std::fs::write(&path, text).expect("writing the haproxy config");
                path
            }
        };
        env.push(("HAPROXY_BIND".into(), String::new()));
        env.push(("HAPROXY_STATS_BIND".into(), String::new()));
        let mut h = Haproxy {
            port: 0,
            stats_port: 0,
            ports: (reserve_port(), reserve_port()),
            config,
            env,
            dir,
            child: None,
            started: false,
        };
        h.use_reserved_ports();
        h
    }

    fn use_reserved_ports(&mut self) {
        self.port = self.ports.0.port;
        self.stats_port = self.ports.1.port;
        for (k, v) in self.env.iter_mut() {
            if k == "HAPROXY_BIND" {
                *v = format!("127.0.0.1:{}", self.ports.0.port);
            } else if k == "HAPROXY_STATS_BIND" {
                *v = format!("127.0.0.1:{}", self.ports.1.port);
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    /// Checks the config (`haproxy -c`), starts it, waits for its stats page.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "haproxy is running");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running haproxy -c (is haproxy installed? scripts/install-deps)");
        assert!(
            check.status.success(),
            "haproxy rejected {}:\n{}",
            self.config.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        for attempt in 1..=5 {
            match self.try_start() {
                Ok(()) => {
                    self.started = true;
                    return;
                }
                // Only the first start may move: restarts keep their (reserved) ports.
                Err(log) if !self.started && attempt < 5 && log.contains("cannot bind") => {
                    eprintln!(
                        "haproxy could not bind :{}/:{}; new ports",
                        self.port, self.stats_port
                    );
                    self.ports = (reserve_port(), reserve_port());
                    self.use_reserved_ports();
                }
                Err(log) => panic!("haproxy did not start:\n{log}"),
            }
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("haproxy log");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting haproxy");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "exited with {status}:\n{}",
                    tail(&self.log_path(), 30)
                ));
            }
            if self.servers().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no stats page after {READY_WITHIN:?}:\n{}",
                    tail(&self.log_path(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (HAProxy's hard stop: every connection is closed at once) and reap.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts again on the same ports (a proxy pod restarted).
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Changes the health check's password for the next start.
    pub fn set_password(&mut self, password: &str) {
        for (k, v) in self.env.iter_mut() {
            if k == "REDIS_PASSWORD" {
                *v = password.to_string();
            }
        }
    }

    /// Each server of the backend and its status word (`UP`, `DOWN`, `no`...), from the
    /// stats page's CSV export.
    pub fn servers(&self) -> Result<Vec<(String, String)>, String> {
        let (status, csv) = http_get(self.stats_port, "/;csv", None)?;
        if status != 200 {
            return Err(format!("stats page answered {status}"));
        }
        Ok(csv
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.len() > 17 && f[0] == "redis_nodes" && f[1] != "BACKEND" && f[1] != "FRONTEND"
            })
            .map(|f| {
                let word = f[17].split_whitespace().next().unwrap_or("").to_string();
                (f[1].to_string(), word)
            })
            .collect())
    }

    /// Waits until the servers' statuses are exactly `want`, in order.
    pub fn wait_status(&self, want: &[&str], within: Duration) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = self.servers() {
                seen = s.into_iter().map(|(_, st)| st).collect::<Vec<_>>();
                if seen == want {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "haproxy servers are {seen:?}, not {want:?}, after {within:?}:\n{}",
                    tail(&self.log_path(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- haproxy log tail ---\n{}", tail(&self.log_path(), 25));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Longest a partition may last, however it was started: a test that forgets to heal
/// one must not hang the suite.
pub const MAX_PARTITION: Duration = Duration::from_secs(60);

struct ProxyState {
    /// Added to every chunk going from the client to the server, in µs: one round trip.
    delay_us: AtomicU64,
    /// While true nothing gets through in either direction; new connections are accepted
    /// (by the kernel, as a listening socket does) but never answered.
    blackhole: tokio::sync::watch::Sender<bool>,
    /// Counts partitions, so that the safety timer of an old one cannot heal a new one.
    generation: AtomicU64,
    accepted: AtomicU64,
}

/// A userspace TCP proxy on loopback in front of one upstream port: injects an exact
/// latency (added to each client→server chunk, so to each round trip) or blackholes the
/// link. Data held during a partition is delivered after it heals, as TCP would
/// retransmit it. Runs on its own small tokio runtime; dropping it closes everything.
pub struct DelayProxy {
    pub port: u16,
    pub upstream: u16,
    state: Arc<ProxyState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Listens on a port chosen by binding port 0 and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> DelayProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("delay-proxy")
            .enable_all()
            .build()
            .expect("a tokio runtime for the proxy");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(ProxyState {
            delay_us: AtomicU64::new(0),
            blackhole: tokio::sync::watch::channel(false).0,
            generation: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let st = state.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(relay(client, upstream, st.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        DelayProxy {
            port,
            upstream,
            state,
            rt: Some(rt),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sets the latency added to every round trip from now on (`ZERO` to remove it).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Cuts the link until the returned guard is dropped, or [`MAX_PARTITION`] at most.
    pub fn partition(&self) -> Partition<'_> {
        let generation = self.state.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.state.blackhole.send_replace(true);
        let st = self.state.clone();
        self.rt.as_ref().expect("running").spawn(async move {
            tokio::time::sleep(MAX_PARTITION).await;
            if st.generation.load(Ordering::Relaxed) == generation {
                st.blackhole.send_replace(false);
            }
        });
        Partition {
            proxy: self,
            started: Instant::now(),
        }
    }

    /// Cuts the link for `length` (the calling thread holds it), then heals it; returns
    /// how long it really was cut.
    pub fn blackhole_for(&self, length: Duration) -> Duration {
        let p = self.partition();
        std::thread::sleep(length.min(MAX_PARTITION));
        p.heal()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.state.blackhole.send_replace(false);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

/// A link cut by [`DelayProxy::partition`]; healed on drop.
pub struct Partition<'a> {
    proxy: &'a DelayProxy,
    started: Instant,
}

impl Partition<'_> {
    /// Heals the link now; returns how long it was cut.
    pub fn heal(self) -> Duration {
        self.started.elapsed()
        // Drop heals.
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        self.proxy.state.generation.fetch_add(1, Ordering::Relaxed);
        self.proxy.state.blackhole.send_replace(false);
    }
}

async fn relay(client: tokio::net::TcpStream, upstream: u16, st: Arc<ProxyState>) {
    let mut gate = st.blackhole.subscribe();
    // Partitioned: the connection was accepted, but the server is not even contacted.
    if gate.wait_for(|cut| !*cut).await.is_err() {
        return;
    }
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return; // dropping the client closes it: what a dead upstream looks like
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::join!(
        pipe(client_r, server_w, st.clone(), true),
        pipe(server_r, client_w, st, false),
    );
}

/// Copies one direction: each chunk is stamped when read and written at stamp + delay
/// (so pipelined data is not delayed twice), and nothing moves while the link is cut.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, st: Arc<ProxyState>, delayed: bool) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let mut read_gate = st.blackhole.subscribe();
    let mut write_gate = st.blackhole.subscribe();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if read_gate.wait_for(|cut| !*cut).await.is_err() {
                break;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = if delayed {
                Duration::from_micros(st.delay_us.load(Ordering::Relaxed))
            } else {
                Duration::ZERO
            };
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if write_gate.wait_for(|cut| !*cut).await.is_err() {
                return;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// `redis-canary soak` running as a child process, its `/metrics` reachable meanwhile.
pub struct SoakRun {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub duration: Duration,
    pub started: Instant,
}

/// How a soak ended.
pub struct SoakResult {
    pub status: ExitStatus,
    pub report: serde_json::Value,
    pub stdout: String,
}

impl SoakResult {
    /// The report of target `name`.
    pub fn target(&self, name: &str) -> &serde_json::Value {
        self.report["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .unwrap_or_else(|| panic!("no target {name} in the report: {}", self.report))
    }

    /// The names of the SLOs of `target` that failed.
    pub fn failed_slos(&self, target: &str) -> Vec<String> {
        self.target(target)["slo"]
            .as_array()
            .expect("slo list")
            .iter()
            .filter(|s| s["pass"] == false)
            .map(|s| s["name"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

impl SoakRun {
    /// Starts `redis-canary soak --duration <duration>` with `toml` as its config and a
    /// report file, bound to `127.0.0.1:0` (the address read from its log); returns once it
    /// serves `/readyz`.
    pub fn start(toml: &str, duration: Duration) -> SoakRun {
        let duration_arg = format!("{}ms", duration.as_millis());
        let dir = tempfile::tempdir().expect("temp dir");
        let report_arg = dir.path().join("report.json").display().to_string();
        let p = spawn_canary_in(
            dir,
            &["soak"],
            toml,
            &["--duration", &duration_arg, "--report", &report_arg],
            &[],
        );
        SoakRun {
            port: p.addr.port(),
            dir: p.dir,
            child: Some(p.child),
            duration,
            started: p.spawned,
        }
    }

    /// Scrapes and parses `/metrics` of the running soak.
    pub fn metrics(&self) -> Scrape {
        let (status, body) = http_get(self.port, "/metrics", None)
            .unwrap_or_else(|e| panic!("scraping the soak failed: {e}\n{}", self.log()));
        assert_eq!(status, 200);
        Scrape::parse(&body)
    }

    /// Time left until the soak's end.
    pub fn remaining(&self) -> Duration {
        self.duration.saturating_sub(self.started.elapsed())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("canary.log")).unwrap_or_default()
    }

    /// Waits for the exit (its duration plus `slack` at most); returns status and report.
    pub fn finish(mut self, slack: Duration) -> SoakResult {
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_until("the soak to end", self.remaining() + slack, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let stdout =
            std::fs::read_to_string(self.dir.path().join("stdout.txt")).unwrap_or_default();
        let text = std::fs::read_to_string(self.dir.path().join("report.json")).unwrap_or_default();
        let report = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}\n{}", self.log()));
        SoakResult {
            status: status.expect("exited"),
            report,
            stdout,
        }
    }
}

impl Drop for SoakRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-canary soak log ---\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
