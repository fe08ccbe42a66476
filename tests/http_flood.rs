//! The HTTP server under a connection flood, end to end: the real binary against a real
//! `redis-server`, flooded by 2,000 clients that each keep a half-sent request open (and
//! reconnect whenever the canary closes them). A fresh scrape must still answer at once,
//! the canary's descriptors stay bounded, a healthy target sees no disruption even under a
//! low descriptor limit, and SIGTERM still ends the process within 5 s.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::names::*;
use support::{RedisServer, Scrape, canary_bin, one_target_config, read, wait_until};

/// Flooding clients: each holds one connection with a request head that never ends.
const FLOOD_CLIENTS: usize = 2000;

/// The start of a request whose head never ends (no blank line).
const HALF_SENT: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";

/// How long a fresh scrape may take under the flood. Unflooded it takes milliseconds; a
/// server that queued it behind the stalled clients would answer after their 5 s header
/// timeout, or never.
const SCRAPE_WITHIN: Duration = Duration::from_secs(1);

/// Most descriptors the canary may hold under the flood: 256 HTTP connections (the cap),
/// one being accepted, the listener, and some 20 of its own (stdio, two runtimes, Redis
/// connections); without the cap it would hold one per flooding client, over 2,000.
const FD_BOUND: usize = 300;

/// The canary's descriptor limit in the low-limit test: its HTTP server may then use 32
/// (a quarter); the connect probe needs a fresh one every 100 ms.
const LOW_FD_LIMIT: u64 = 128;

/// How long each flood lasts while the test watches.
const FLOOD_FOR: Duration = Duration::from_secs(3);

/// A canary started with `--listen 127.0.0.1:0`; the address is read from its log.
struct Canary {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Canary {
    /// Starts `redis-canary run` with `toml`, under the descriptor limits `open_files` (soft,
    /// hard) when given (set by `prlimit`, which then execs the canary: same pid).
    fn start(toml: &str, open_files: Option<(u64, u64)>) -> Canary {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("canary.toml");
        std::fs::write(&config, toml).expect("writing config");
        let log = std::fs::File::create(dir.path().join("canary.log")).expect("log file");
        let mut cmd = match open_files {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}"))
                    .arg("--")
                    .arg(canary_bin());
                c
            }
            None => Command::new(canary_bin()),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting redis-canary (and prlimit from util-linux)");
        let mut c = Canary {
            addr: "127.0.0.1:0".parse().expect("an address"),
            dir,
            child: Some(child),
        };
        wait_until(
            "the canary to log its address",
            Duration::from_secs(10),
            || {
                c.check_running();
                match listening_addr(&c.log()) {
                    Some(addr) => {
                        c.addr = addr;
                        true
                    }
                    None => false,
                }
            },
        );
        wait_until("the canary's /readyz", Duration::from_secs(10), || {
            c.check_running();
            matches!(get(c.addr, "/readyz", SCRAPE_WITHIN), Ok((200, _)))
        });
        c
    }

    fn check_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("redis-canary exited early with {status}:\n{}", self.log());
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log(&self) -> String {
        read(&self.dir.path().join("canary.log"))
    }

    /// Descriptors open in the canary now.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Scrapes `/metrics` within [`SCRAPE_WITHIN`]; returns the parse and the time taken.
    fn scrape(&self) -> (Scrape, Duration) {
        let started = Instant::now();
        let (status, body) = get(self.addr, "/metrics", SCRAPE_WITHIN)
            .unwrap_or_else(|e| panic!("scraping {} failed: {e}", self.addr));
        assert_eq!(status, 200, "{body}");
        (Scrape::parse(&body), started.elapsed())
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit.
    fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let mut exit = None;
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until("the canary to exit after SIGTERM", within, || {
                exit = child.try_wait().ok().flatten();
                exit.is_some()
            })
        }));
        if waited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the canary did not exit within {within:?}:\n{}", self.log());
        }
        (exit.expect("exited"), started.elapsed())
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-canary log ---\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The address in the canary's `listening addr=...` log line (text format).
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("listening"))
        .find_map(|l| {
            l.split_once("addr=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// A plain HTTP/1.1 GET that must finish (connect, send, read to the end) within `within`.
fn get(addr: SocketAddr, path: &str, within: Duration) -> Result<(u16, String), String> {
    let deadline = Instant::now() + within;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("GET {path}: no answer within {within:?}"))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, body.to_string()))
}

/// Raises this test process's soft descriptor limit to its hard limit, for the flooding
/// sockets (with `prlimit --pid`, as the tests take no libc).
fn raise_own_fd_limit() {
    let limits = read(std::path::Path::new("/proc/self/limits"));
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let (soft, hard) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let enough =
        |v: &str| v == "unlimited" || v.parse::<usize>().is_ok_and(|n| n >= FLOOD_CLIENTS + 500);
    if enough(soft) {
        return;
    }
    assert!(
        enough(hard),
        "the hard descriptor limit ({hard}) is too low for {FLOOD_CLIENTS} clients"
    );
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit could not raise the soft limit");
}

/// What the flood saw.
#[derive(Default)]
struct FloodStats {
    /// Connections opened (each sent [`HALF_SENT`]).
    opened: AtomicUsize,
    /// Connections the canary closed.
    closed: AtomicUsize,
    /// Connections open at the end of the last pass.
    held: AtomicUsize,
}

/// [`FLOOD_CLIENTS`] clients on one thread: each connects, sends [`HALF_SENT`] and waits;
/// a client the canary closes connects again on the next pass.
struct Flood {
    stats: Arc<FloodStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Time between two passes over the clients: keeps reconnecting at a flood's pace without
/// taking a whole core from the canary on a two-core machine.
const FLOOD_PASS: Duration = Duration::from_millis(50);

impl Flood {
    fn start(addr: SocketAddr) -> Flood {
        let stats = Arc::new(FloodStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut clients: Vec<Option<TcpStream>> = (0..FLOOD_CLIENTS).map(|_| None).collect();
            let mut buf = [0u8; 1024];
            while !sp.load(Ordering::Relaxed) {
                let mut held = 0;
                for (i, slot) in clients.iter_mut().enumerate() {
                    if let Some(s) = slot {
                        match s.read(&mut buf) {
                            Err(e) if e.kind() == ErrorKind::WouldBlock => held += 1,
                            // The canary answered (it should not) or closed: gone.
                            _ => {
                                *slot = None;
                                st.closed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else if let Some(s) = half_sent(addr, i) {
                        *slot = Some(s);
                        st.opened.fetch_add(1, Ordering::Relaxed);
                        held += 1;
                    }
                }
                st.held.store(held, Ordering::Relaxed);
                std::thread::sleep(FLOOD_PASS);
            }
        });
        Flood {
            stats,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until every client has connected and sent its half request at least once.
    fn wait_all_connected(&self) {
        wait_until(
            &format!("{FLOOD_CLIENTS} flooding connections"),
            Duration::from_secs(20),
            || self.stats.opened.load(Ordering::Relaxed) >= FLOOD_CLIENTS,
        );
    }

    fn stop(mut self) -> Arc<FloodStats> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the flood thread");
        }
        self.stats.clone()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One flooding connection: connected and sent [`HALF_SENT`], or `None` (the canary's
/// backlog was full, say; the next pass tries again). Client `i` connects from
/// 127.0.0.(2 + i % 250): tens of thousands of flood connections (and their TIME_WAIT
/// entries) spread over many source addresses and never use up the ephemeral ports of
/// 127.0.0.1, from which the test's own scrapes and the canary's connects to Redis come.
fn half_sent(addr: SocketAddr, i: usize) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let source = SocketAddr::from(([127, 0, 0, 2 + (i % 250) as u8], 0));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket.bind(&source.into()).ok()?;
    socket
        .connect_timeout(&addr.into(), Duration::from_millis(200))
        .ok()?;
    let mut s: TcpStream = socket.into();
    s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(HALF_SENT).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Largest descriptor count of `pid` seen until stopped, sampled every few milliseconds.
struct FdWatch {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdWatch {
    fn start(pid: u32) -> FdWatch {
        let max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, sp) = (max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    m.fetch_max(d.count(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        FdWatch {
            max,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Scrapes back to back for [`FLOOD_FOR`]; every scrape must answer within
/// [`SCRAPE_WITHIN`]. Returns the scrape latencies and the last scrape.
fn scrape_through_the_flood(canary: &Canary) -> (Vec<Duration>, Scrape) {
    let until = Instant::now() + FLOOD_FOR;
    let mut took = Vec::new();
    let mut last = None;
    while Instant::now() < until || last.is_none() {
        let (m, t) = canary.scrape();
        assert!(t < SCRAPE_WITHIN, "a scrape took {t:?}");
        took.push(t);
        last = Some(m);
    }
    (took, last.expect("scraped"))
}

fn summary(took: &mut [Duration]) -> String {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    format!(
        "{} scrapes, p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        at(0.5),
        at(0.99),
        took[took.len() - 1]
    )
}

#[test]
fn a_fresh_scrape_answers_within_a_second_while_2000_clients_hold_half_sent_requests() {
    raise_own_fd_limit();
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""), None);
    wait_until("a successful write", Duration::from_secs(10), || {
        canary
            .scrape()
            .0
            .sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")])
            >= 1.0
    });
    let idle_fds = canary.fds();

    let fds = FdWatch::start(canary.pid());
    let flood = Flood::start(canary.addr);
    flood.wait_all_connected();
    let (mut took, m) = scrape_through_the_flood(&canary);
    let (status, health) = get(canary.addr, "/healthz", SCRAPE_WITHIN).expect("/healthz");
    let max_fds = fds.stop();
    let seen = flood.stop();

    eprintln!(
        "under the flood: {}; canary fds idle {idle_fds}, max {max_fds}; flood opened {}, \
         closed by the canary {}, held at the end {}",
        summary(&mut took),
        seen.opened.load(Ordering::Relaxed),
        seen.closed.load(Ordering::Relaxed),
        seen.held.load(Ordering::Relaxed),
    );
    assert_eq!(status, 200, "{health}");
    assert!(health.lines().any(|l| l == "internal_errors 0"), "{health}");
    assert!(max_fds < FD_BOUND, "the canary held {max_fds} descriptors");
    // The cap, not luck, kept the descriptors down: the canary closed flooding clients.
    assert!(seen.closed.load(Ordering::Relaxed) >= FLOOD_CLIENTS - 256);
    // And the target went on being measured meanwhile.
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 0.0);
    assert_eq!(m.sum(OPS, &[t("a"), ("outcome", "failed")]), 0.0);
}

#[test]
fn a_flood_under_a_low_descriptor_limit_causes_no_disruption_of_a_healthy_target() {
    raise_own_fd_limit();
    let redis = RedisServer::start(&[]);
    // The probe opens a fresh connection every 100 ms: descriptors the flood must not take.
    let config = one_target_config("a", &redis.url(), r#"connect_probe_interval = "100ms""#);
    let canary = Canary::start(&config, Some((LOW_FD_LIMIT, LOW_FD_LIMIT)));
    let limits = read(std::path::Path::new(&format!(
        "/proc/{}/limits",
        canary.pid()
    )));
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&LOW_FD_LIMIT.to_string())),
        "{limits}"
    );
    let probes_ok = |m: &Scrape| m.sum(OPS, &[t("a"), ("op", "probe"), ("outcome", "ok")]);
    wait_until("successful probes", Duration::from_secs(10), || {
        probes_ok(&canary.scrape().0) >= 3.0
    });
    let before = canary.scrape().0;

    let fds = FdWatch::start(canary.pid());
    let flood = Flood::start(canary.addr);
    flood.wait_all_connected();
    let (mut took, after) = scrape_through_the_flood(&canary);
    let (status, health) = get(canary.addr, "/healthz", SCRAPE_WITHIN).expect("/healthz");
    let max_fds = fds.stop();
    let seen = flood.stop();

    let probed = probes_ok(&after) - probes_ok(&before);
    eprintln!(
        "under the flood at {LOW_FD_LIMIT} descriptors: {}; canary fds max {max_fds}; \
         {probed} probes connected; flood opened {}, closed by the canary {}",
        summary(&mut took),
        seen.opened.load(Ordering::Relaxed),
        seen.closed.load(Ordering::Relaxed),
    );
    assert_eq!(after.sum(DISRUPTIONS, &[t("a")]), 0.0);
    assert_eq!(after.sum(DISRUPTED, &[t("a")]), 0.0);
    assert_eq!(after.sum(OPS, &[t("a"), ("outcome", "failed")]), 0.0);
    // The probe kept opening connections all through the flood (about 10 a second).
    assert!(probed >= 10.0, "only {probed} probes during the flood");
    assert!(max_fds < LOW_FD_LIMIT as usize, "{max_fds} descriptors");
    assert_eq!(status, 200, "{health}");
    assert!(health.lines().any(|l| l == "internal_errors 0"), "{health}");
}

#[test]
fn sigterm_during_a_flood_exits_cleanly_within_five_seconds() {
    raise_own_fd_limit();
    let redis = RedisServer::start(&[]);
    let mut canary = Canary::start(&one_target_config("a", &redis.url(), ""), None);
    let flood = Flood::start(canary.addr);
    flood.wait_all_connected();
    let (status, took) = canary.terminate(Duration::from_secs(5));
    drop(flood);
    eprintln!("exited {status} {took:?} after SIGTERM during the flood");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Reads from `s` until the canary closes it or `within` passes; returns when it closed.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Instant> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64 * 1024];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match s.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
    None
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""), None);
    // One connection kept alive after a complete request, one that never ends its head.
    let mut idle = TcpStream::connect_timeout(&canary.addr, SCRAPE_WITHIN).expect("connect");
    idle.set_read_timeout(Some(SCRAPE_WITHIN)).expect("timeout");
    idle.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut answer = [0u8; 1024];
    let n = idle.read(&mut answer).expect("an answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let mut half = TcpStream::connect_timeout(&canary.addr, SCRAPE_WITHIN).expect("connect");
    half.write_all(HALF_SENT).expect("half a request");
    let started = Instant::now();

    // 5 s, with room for a slow machine either way.
    let within = Duration::from_secs(8);
    let idle_closed = closed_within(&mut idle, within).expect("the idle connection closed");
    let half_closed = closed_within(&mut half, within).expect("the half-sent one closed");
    for (what, at) in [("idle", idle_closed), ("half-sent", half_closed)] {
        let after = at - started;
        assert!(
            (Duration::from_millis(4500)..within).contains(&after),
            "the {what} connection closed after {after:?}"
        );
    }
    // The status page keeps the canary's own failures apart from the target's.
    let (status, page) = get(canary.addr, "/", SCRAPE_WITHIN).expect("/");
    assert_eq!(status, 200);
    assert!(
        page.contains(
            "canary-side errors (this process, not the targets): <span class=\"ok\">0</span>"
        ),
        "{page}"
    );
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
fn a_soft_descriptor_limit_below_the_hard_one_is_raised_at_start() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""), Some((256, 4096)));
    let limits = read(std::path::Path::new(&format!(
        "/proc/{}/limits",
        canary.pid()
    )));
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    assert_eq!(fields[..2], ["4096", "4096"], "{line}");
    let log = canary.log();
    assert!(
        log.contains("raised the open files limit") && log.contains("256"),
        "{log}"
    );
}
