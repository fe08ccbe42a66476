//! A resolver that never answers (DESIGN §2.9: DNS is resolved on every connect). The canary
//! runs in a network namespace of its own whose `/etc/resolv.conf` (bind-mounted by `ip
//! netns exec` from `/etc/netns/NAME/`) names a silent server on 127.0.0.1:53: it takes
//! every query over UDP and TCP and answers none. With 50 targets whose names only that
//! server could resolve, `getaddrinfo` hangs for its whole timeout on every connect, and no
//! deadline can stop a blocking lookup: the canary must keep its threads and descriptors
//! bounded, classify the connects, answer scrapes, and still exit promptly on SIGTERM.
//!
//! Needs root (network namespaces), `ip` and `python3`: skipped, never passed, without them.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::hostile::{Peak, proc_sample};
use support::names::*;
use support::*;

/// Prefix of the namespaces this test makes; the suffix is the test process's pid, so a
/// leftover of a dead run is recognised and removed, and a live run's is left alone.
const NS_PREFIX: &str = "rc-dns-";

/// How many targets: each has a writer, a reader and a probe connecting over and over.
const TARGETS: usize = 50;

/// Threads the canary may have while every lookup hangs: the runtime's workers, the HTTP
/// server, and at most 16 blocked lookups (src/conn.rs). Without the bound it was 514.
const THREAD_BOUND: u64 = 40;

/// Descriptors the canary may hold: no connect gets as far as a socket.
const FD_BOUND: u64 = 64;

/// How long the process is watched while the lookups hang.
const WATCH_FOR: Duration = Duration::from_secs(10);

/// How long the canary may take to exit after SIGTERM (DESIGN §3).
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// The silent resolver: binds 127.0.0.1:53 over UDP and TCP, says `ready`, prints `q` for
/// every query it swallows, answers nothing, and ends by itself after three minutes.
const SILENT_DNS: &str = r#"
import select, socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 53))
t.listen(128)
conns = []
print("ready", flush=True)
end = time.time() + 180
while time.time() < end:
    r, _, _ = select.select([u, t] + conns, [], [], 0.5)
    for s in r:
        if s is u:
            u.recvfrom(4096)
            print("q", flush=True)
        elif s is t:
            c, _ = t.accept()
            conns.append(c)
        else:
            if not s.recv(4096):
                conns.remove(s)
                s.close()
"#;

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"))
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up and a resolv.conf of its own; deleted (with
/// its `/etc/netns` dir) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn etc(name: &str) -> PathBuf {
        PathBuf::from("/etc/netns").join(name)
    }

    fn remove(name: &str) {
        let _ = ip(&["netns", "del", name]);
        let _ = std::fs::remove_dir_all(Self::etc(name));
    }

    /// Removes the namespaces of runs whose process is gone, then makes a new one.
    fn create(resolv_conf: &str) -> Netns {
        let list = String::from_utf8_lossy(&ip(&["netns", "list"]).stdout).into_owned();
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some(pid) = name.strip_prefix(NS_PREFIX)
                && !PathBuf::from(format!("/proc/{pid}")).exists()
            {
                eprintln!("removing leftover namespace {name}");
                Self::remove(name);
            }
        }
        let name = format!("{NS_PREFIX}{}", std::process::id());
        Self::remove(&name);
        ip_ok(&["netns", "add", &name]);
        let ns = Netns { name };
        std::fs::create_dir_all(Self::etc(&ns.name)).expect("/etc/netns dir");
        std::fs::write(Self::etc(&ns.name).join("resolv.conf"), resolv_conf)
            .expect("writing resolv.conf");
        ip_ok(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program args...` (which execs: the child's pid is the program's).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// GET `path` on `127.0.0.1:port` inside the namespace (with curl, 2 s at most): status,
    /// body and the time it took, process start included.
    fn http_get(&self, port: u16, path: &str) -> (u16, String, Duration) {
        let started = Instant::now();
        let out = self
            .command("curl")
            .args(["-sS", "-m", "2", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .expect("running curl in the namespace");
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string(), took)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Self::remove(&self.name);
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian's python3 when present (a version manager's shim on PATH costs a shell per start).
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn config() -> String {
    let mut toml = String::from(
        r#"instance = "test"
[defaults]
rate = 5
keys = 10
connect_timeout = "1s"
response_timeout = "500ms"
"#,
    );
    for i in 0..TARGETS {
        toml.push_str(&format!(
            "\n[[targets]]\nname = \"t{i}\"\nurl = \"redis://t{i}.invalid-never-answers.test:6379\"\n"
        ));
    }
    toml
}

#[test]
#[cfg_attr(not(is_root), ignore = "needs root (network namespaces)")]
#[cfg_attr(not(have_ip), ignore = "needs ip (iproute2: scripts/install-deps)")]
#[cfg_attr(not(have_python3), ignore = "needs python3 (scripts/install-deps)")]
fn a_resolver_that_never_answers_keeps_threads_bounded_and_sigterm_prompt() {
    never_answers(WATCH_FOR, false);
}

/// The connects of a lookup that never finishes say so: `dns`, not `timeout` (the server
/// was never reached, so nothing about it timed out).
#[test]
#[cfg_attr(not(is_root), ignore = "needs root (network namespaces)")]
#[cfg_attr(not(have_ip), ignore = "needs ip (iproute2: scripts/install-deps)")]
#[cfg_attr(not(have_python3), ignore = "needs python3 (scripts/install-deps)")]
fn a_lookup_that_never_finishes_is_classified_dns() {
    never_answers(Duration::from_secs(4), true);
}

/// The scenario: 50 targets behind a silent resolver, watched for `watch_for`, then SIGTERM.
/// With `want_dns`, the connects must also be classified `dns`.
fn never_answers(watch_for: Duration, want_dns: bool) {
    let ns = Netns::create("nameserver 127.0.0.1\noptions timeout:5 attempts:2\n");
    let dir = tempfile::tempdir().expect("temp dir");

    // The silent resolver, inside the namespace.
    let dns_log = dir.path().join("dns.txt");
    let mut dns = Reaped(Some(
        ns.command(python())
            .args(["-c", SILENT_DNS])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&dns_log).expect("dns log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the silent resolver"),
    ));
    wait_until(
        "the silent resolver to bind",
        Duration::from_secs(10),
        || {
            assert!(
                dns.child().try_wait().ok().flatten().is_none(),
                "the silent resolver exited"
            );
            read(&dns_log).starts_with("ready")
        },
    );
    let queries = || read(&dns_log).lines().filter(|l| *l == "q").count();

    // The canary, inside the namespace too.
    let config_path = dir.path().join("canary.toml");
    std::fs::write(&config_path, config()).expect("writing config");
    let log_path = dir.path().join("canary.log");
    let mut canary = Reaped(Some(
        ns.command(canary_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("starting redis-canary in the namespace"),
    ));
    let pid = canary.child().id();
    let log = || read(&log_path);
    let mut port = None;
    wait_until("the canary to listen", Duration::from_secs(15), || {
        assert!(
            canary.child().try_wait().ok().flatten().is_none(),
            "the canary exited:\n{}",
            log()
        );
        port = canary_listen_addr(&log()).map(|a| a.port());
        port.is_some()
    });
    let port = port.expect("port");
    // `ip netns exec` execs: the pid is the canary's own.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "redis-canary", "pid {pid} is not the canary");

    let started = Instant::now();
    let mut peak = Peak::default();
    let mut worst_scrape = Duration::ZERO;
    let mut last = Scrape::default();
    let mut next_scrape = started;
    while started.elapsed() < watch_for {
        let s = proc_sample(pid).unwrap_or_else(|| panic!("the canary died:\n{}", log()));
        peak.add(s);
        assert!(
            s.threads <= THREAD_BOUND,
            "{} threads after {:?} (bound {THREAD_BOUND})",
            s.threads,
            started.elapsed()
        );
        assert!(
            s.fds <= FD_BOUND,
            "{} descriptors after {:?} (bound {FD_BOUND})",
            s.fds,
            started.elapsed()
        );
        if Instant::now() >= next_scrape {
            let (status, body, took) = ns.http_get(port, "/metrics");
            assert_eq!(
                status,
                200,
                "/metrics answered {status}:\n{body}\n{}",
                log()
            );
            worst_scrape = worst_scrape.max(took);
            last = Scrape::parse(&body);
            next_scrape += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = &last;
    let by_result = |name: &str| {
        let mut v: Vec<String> = ["ok", "timeout", "refused", "reset", "dns", "error", "auth"]
            .iter()
            .map(|r| format!("{r}={}", m.sum(name, &[("result", r)])))
            .collect();
        v.sort();
        v.join(" ")
    };
    eprintln!(
        "silent resolver: {} queries; canary threads <= {}, fds <= {}, RSS <= {:.1} MiB over \
         {} samples; worst scrape (curl in the namespace) {worst_scrape:?}\n  connects: {}\n  \
         attempts: {}",
        queries(),
        peak.threads,
        peak.fds,
        support::hostile::mib(peak.rss),
        peak.samples,
        by_result(CONNECTS),
        by_result(ATTEMPTS),
    );
    // The lookups really went to the silent server (and not, say, to a hosts file).
    assert!(queries() > 0, "the silent resolver saw no query");
    // Nothing was reached, so nothing but the lookup can have failed.
    let connects = m.sum(CONNECTS, &[]);
    assert!(connects >= TARGETS as f64, "{connects} connects");
    assert_eq!(
        m.sum(CONNECTS, &[("result", "timeout")]) + m.sum(CONNECTS, &[("result", "dns")]),
        connects,
        "connects {}",
        by_result(CONNECTS)
    );
    // Every target is failing, none is forgotten.
    assert_eq!(m.count(DISRUPTED, &[]), TARGETS);
    assert_eq!(m.sum(DISRUPTED, &[]), TARGETS as f64);
    assert_eq!(ns.http_get(port, "/healthz").0, 200);

    // SIGTERM while lookups hang on blocking threads: a bounded shutdown.
    let term = Instant::now();
    send_signal(pid, "TERM");
    let mut status = None;
    wait_until(
        "the canary to exit after SIGTERM",
        EXIT_BOUND + Duration::from_secs(20),
        || {
            status = canary.child().try_wait().ok().flatten();
            status.is_some()
        },
    );
    let took = term.elapsed();
    eprintln!("exit {status:?} {took:?} after SIGTERM");
    canary.0 = None;
    let status = status.expect("exited");
    assert!(status.success(), "exit status {status}:\n{}", log());
    assert!(
        took < EXIT_BOUND,
        "exit took {took:?} after SIGTERM:\n{}",
        log()
    );
    if !want_dns {
        return;
    }
    // The name did not resolve: classified as such.
    let dns_connects = m.sum(CONNECTS, &[("result", "dns")]);
    let dns_attempts = m.sum(ATTEMPTS, &[("result", "dns")]);
    assert!(
        dns_connects + dns_attempts > 0.0,
        "no connect or attempt classified dns: connects {}, attempts {}",
        by_result(CONNECTS),
        by_result(ATTEMPTS)
    );
}
