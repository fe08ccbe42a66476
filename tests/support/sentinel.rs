//! Sentinel deployments on loopback (DESIGN §12.1): a [`Topology`] of a master and two
//! replicas (the shared password) watched by three real `redis-sentinel` processes, each
//! with a writable config file of its own (Sentinel rewrites it), a port from
//! [`reserve_port`], `announce-ip 127.0.0.1`, quorum 2, `down-after-milliseconds 1000` and
//! `failover-timeout 3000`, so that a master kill fails over in about 2-3 s.
//!
//! With `down-after-milliseconds 1000` on a loaded machine the sentinels sometimes fail
//! over twice after one kill: right after the switch they judge the master they just
//! promoted down too (its links are new) and promote the other replica (seen twice in CI, the
//! second `+switch-master` 1-2 s after the first). [`SentinelSet::settled`] waits until
//! they have stopped and says how many failovers they made.
//!
//! Faults: SIGKILL of a sentinel, `SENTINEL FAILOVER`, one sentinel told to monitor another
//! node under the same name (a split view). Every wait polls with a deadline; every process
//! is killed and reaped on drop, and the logs are printed when a test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::{ReservedPort, reserve_port};
use super::topology::{PASSWORD, Topology};
use super::{Client, tail, wait_until};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// How long the sentinels may take to find each other and the replicas (hello messages go
/// out every 2 s). Generous: tests run beside others on two cores.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// The `redis-sentinel` binary: `REDIS_SENTINEL_BIN`, else `redis-sentinel` from PATH.
pub fn redis_sentinel_bin() -> String {
    std::env::var("REDIS_SENTINEL_BIN").unwrap_or_else(|_| "redis-sentinel".into())
}

/// One `redis-sentinel` process.
pub struct SentinelProcess {
    pub port: u16,
    dir: PathBuf,
    _reservation: ReservedPort,
    child: Option<Child>,
}

impl SentinelProcess {
    fn start(dir: PathBuf, master_port: u16) -> SentinelProcess {
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let reservation = reserve_port();
        let port = reservation.port;
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel announce-ip 127.0.0.1\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel auth-pass {MASTER_NAME} {PASSWORD}\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sentinel.conf"), conf).expect("writing sentinel.conf");
        let child = Command::new(redis_sentinel_bin())
            .arg(dir.join("sentinel.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed ({e}); scripts/install-deps",
                    redis_sentinel_bin()
                )
            });
        let s = SentinelProcess {
            port,
            dir,
            _reservation: reservation,
            child: Some(child),
        };
        wait_until(
            &format!("sentinel :{port} to answer PING"),
            SETTLE_WITHIN,
            || s.try_call(&["PING"]).is_ok_and(|r| r == "PONG"),
        );
        s
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as in the `sentinel` label.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn try_call(&self, args: &[&str]) -> Result<String, String> {
        Client::connect(self.port)
            .map_err(|e| e.to_string())?
            .call(args)
    }

    pub fn call(&self, args: &[&str]) -> String {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("{args:?} on sentinel :{}: {e}", self.port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }

    /// This sentinel's settled view: the master's port and the config epoch, if it names a
    /// master that it sees up with no failover in progress.
    fn view(&self) -> Option<Settled> {
        let fields = self.master_fields()?;
        let field = |f: &str| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str());
        (field("flags")? == "master").then_some(())?;
        Some(Settled {
            port: field("port")?.parse().ok()?,
            failovers: field("config-epoch")?.parse().ok()?,
        })
    }

    /// A field of `SENTINEL master <name>`.
    fn master_field(&self, field: &str) -> Option<String> {
        self.master_fields()?
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
    }

    /// The fields of `SENTINEL master <name>` (field and value on alternate lines).
    fn master_fields(&self) -> Option<Vec<(String, String)>> {
        let reply = self.try_call(&["SENTINEL", "master", MASTER_NAME]).ok()?;
        let lines: Vec<&str> = reply.lines().collect();
        Some(
            lines
                .chunks_exact(2)
                .map(|kv| (kv[0].to_string(), kv[1].to_string()))
                .collect(),
        )
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-sentinel :{} log tail ---\n{}",
                self.port,
                tail(&self.dir.join("sentinel.log"), 40)
            );
        }
        self.kill();
    }
}

/// What the sentinels agree on once they have settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The master's port.
    pub port: u16,
    /// The config epoch: how many failovers the sentinels have made since the start.
    pub failovers: u64,
}

/// A master, two replicas and three sentinels that agree on them.
pub struct SentinelSet {
    // Declared first so that it drops first: the sentinels print their log tails on a
    // failure, and the logs live in the topology's temp dir.
    pub sentinels: Vec<SentinelProcess>,
    pub topology: Topology,
}

impl SentinelSet {
    /// Starts the nodes (`extra` goes to every redis-server) and the sentinels, and waits
    /// until every sentinel knows both replicas and both other sentinels.
    pub fn start(extra: &[&str]) -> SentinelSet {
        let topology = Topology::replicated(3, extra);
        let master_port = topology.nodes[0].port;
        let sentinels: Vec<SentinelProcess> = (0..3)
            .map(|i| {
                SentinelProcess::start(
                    topology.dir.path().join(format!("sentinel{i}")),
                    master_port,
                )
            })
            .collect();
        let set = SentinelSet {
            topology,
            sentinels,
        };
        set.wait_settled();
        set
    }

    /// Waits until every running sentinel sees two replicas and the other running sentinels.
    pub fn wait_settled(&self) {
        let running = self.sentinels.iter().filter(|s| s.is_running()).count();
        let others = (running - 1).to_string();
        wait_until(
            "the sentinels to know the replicas and each other",
            SETTLE_WITHIN,
            || {
                self.sentinels.iter().filter(|s| s.is_running()).all(|s| {
                    s.master_field("num-slaves").as_deref() == Some("2")
                        && s.master_field("num-other-sentinels").as_deref() == Some(&others)
                })
            },
        );
    }

    /// The sentinels' URLs, for the canary's `sentinels`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(SentinelProcess::url).collect()
    }

    /// A `mode = "sentinel"` target named `name` over these sentinels, with `extra` lines.
    pub fn target_toml(&self, name: &str, extra: &str) -> String {
        let sentinels: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[[targets]]\nname = \"{name}\"\nmode = \"sentinel\"\nsentinels = [{}]\n\
             master_name = \"{MASTER_NAME}\"\npassword_file = \"{}\"\n{extra}\n",
            sentinels.join(", "),
            self.topology.password_file().display()
        )
    }

    /// The master's port as the first running sentinel names it.
    pub fn master_port(&self) -> u16 {
        let s = self
            .sentinels
            .iter()
            .find(|s| s.is_running())
            .expect("a running sentinel");
        let reply = s.call(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
        reply
            .lines()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no master address in {reply:?}"))
    }

    /// The master every running sentinel names, once they have all agreed on it (see
    /// [`SentinelSet::settled`]).
    pub fn settled_master_port(&self, within: Duration) -> u16 {
        self.settled(within).port
    }

    /// Waits until every running sentinel names the same master with the same config epoch
    /// and flags `master` (not down, no failover in progress), without a change for 3 s:
    /// longer than `down-after-milliseconds` plus an election, so that a second failover
    /// would have shown. The config epoch is how many failovers the sentinels have made.
    pub fn settled(&self, within: Duration) -> Settled {
        const QUIET: Duration = Duration::from_secs(3);
        let deadline = Instant::now() + within;
        let mut agreed: Option<(Settled, Instant)> = None;
        loop {
            let views: Vec<Option<Settled>> = self
                .sentinels
                .iter()
                .filter(|s| s.is_running())
                .map(SentinelProcess::view)
                .collect();
            match views.first() {
                Some(Some(first)) if views.iter().all(|v| v.as_ref() == Some(first)) => {
                    match &agreed {
                        Some((view, since)) if view == first => {
                            if since.elapsed() >= QUIET {
                                return first.clone();
                            }
                        }
                        _ => agreed = Some((first.clone(), Instant::now())),
                    }
                }
                _ => agreed = None,
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not settle on a master within {within:?}: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index in `topology.nodes` of the node on `port`.
    pub fn node_on(&self, port: u16) -> usize {
        self.topology
            .nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on :{port}"))
    }

    /// `+switch-master` lines in every running sentinel's log.
    pub fn switch_lines(&self) -> usize {
        self.sentinels
            .iter()
            .map(|s| s.log().matches("+switch-master").count())
            .sum()
    }

    /// Polls the sentinels' logs every 10 ms until one more `+switch-master` than `before`
    /// appears; returns when it was seen (within about 10 ms of the sentinel's own event).
    pub fn wait_switch(&self, before: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if self.switch_lines() > before {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "no +switch-master within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
