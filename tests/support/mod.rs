//! Shared fixtures for the integration tests: real `redis-server` processes on ports from
//! port 0, the real `redis-canary` binary, a tiny synchronous RESP client for arranging
//! faults, and scraping/parsing `/metrics`. Every wait polls with a deadline; every process
//! is killed and reaped on drop, and its log is printed when a test fails.

#![allow(dead_code)] // each test binary uses its own subset

pub mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Metric names the tests read, as exported (DESIGN §6).
pub mod names {
    pub const OPS: &str = "redis_canary_operations_total";
    pub const ATTEMPTS: &str = "redis_canary_attempts_total";
    pub const RETRIES: &str = "redis_canary_retries_total";
    pub const READS: &str = "redis_canary_reads_total";
    pub const DISRUPTIONS: &str = "redis_canary_disruptions_total";
    pub const DISRUPTED: &str = "redis_canary_disrupted";
    pub const EPISODE_SUM: &str = "redis_canary_disruption_duration_seconds_sum";
    pub const EPISODE_COUNT: &str = "redis_canary_disruption_duration_seconds_count";
    pub const CONNECTS: &str = "redis_canary_connects_total";
    pub const DROPS: &str = "redis_canary_connection_drops_total";
    pub const SWITCHES: &str = "redis_canary_backend_switches_total";
    pub const RESTARTS: &str = "redis_canary_backend_restarts_total";
    pub const BACKEND_INFO: &str = "redis_canary_backend_info";
    pub const NODE_UP: &str = "redis_canary_node_up";
    pub const ATTEMPT_BUCKET: &str = "redis_canary_attempt_duration_seconds_bucket";
    pub const ATTEMPT_COUNT: &str = "redis_canary_attempt_duration_seconds_count";

    /// The `target` label pair.
    pub fn t(name: &str) -> (&'static str, &str) {
        ("target", name)
    }
}

/// A port that was free a moment ago (bound on port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding port 0 on loopback")
}

/// Polls `check` until it returns true or `within` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A real `redis-server` on loopback. The binary comes from `REDIS_SERVER_BIN` if set.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    stopped: bool,
}

impl RedisServer {
    /// Starts a server with `extra` arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            port: free_port(),
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            stopped: false,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let log = self.dir.path().join("redis.log");
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (is it installed? scripts/install-deps)");
        self.child = Some(child);
        self.stopped = false;
        let password = self.password();
        let port = self.port;
        if self.args.iter().any(|a| a == "--tls-port") {
            // TLS only: accepting connections is as far as this plain client can see.
            wait_until(
                "redis-server to accept TLS connections",
                Duration::from_secs(10),
                || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            );
            return;
        }
        wait_until(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                let mut args = vec![];
                if let Some(pw) = &password {
                    args = vec!["AUTH", pw.as_str()];
                }
                match Client::connect(port) {
                    Ok(mut c) => {
                        if !args.is_empty() && c.call(&args).is_err() {
                            return false;
                        }
                        matches!(c.call(&["PING"]), Ok(r) if r == "PONG")
                    }
                    Err(_) => false,
                }
            },
        );
    }

    fn password(&self) -> Option<String> {
        self.args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1).cloned())
    }

    /// A server that speaks only TLS on its port, with a certificate for `localhost` and
    /// `127.0.0.1` signed by a fresh CA; returns the server and the CA certificate's path.
    pub fn start_tls() -> (RedisServer, PathBuf) {
        let certs = tempfile::tempdir().expect("temp dir").keep();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&certs)
                .output()
                .expect("running openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=redis-canary test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            certs.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let path = |f: &str| certs.join(f).display().to_string();
        let port = free_port().to_string();
        let server = RedisServer::start_with_port(
            port.parse().unwrap(),
            &[
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &path("server.crt"),
                "--tls-key-file",
                &path("server.key"),
                "--tls-ca-cert-file",
                &path("ca.crt"),
                "--tls-auth-clients",
                "no",
            ],
        );
        (server, certs.join("ca.crt"))
    }

    fn start_with_port(port: u16, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            port,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            stopped: false,
        };
        s.spawn();
        s
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A client connection, authenticated when the server wants a password.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.port).expect("connecting to redis-server");
        if let Some(pw) = self.password() {
            c.call(&["AUTH", &pw]).expect("AUTH");
        }
        c
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                let _ = send_signal_quiet(c.id(), "CONT");
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the process stays, stops answering, sockets stay open.
    pub fn pause(&mut self) {
        send_signal(self.pid(), "STOP");
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        send_signal(self.pid(), "CONT");
        self.stopped = false;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Waits until this replica has finished its sync with the master (Redis delays a
    /// diskless full sync by 5 s by default).
    pub fn wait_in_sync(&self) {
        wait_until("the replica to be in sync", Duration::from_secs(20), || {
            self.client()
                .call(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"))
        });
    }
}

fn send_signal_quiet(pid: u32, signal: &str) -> std::io::Result<ExitStatus> {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-server :{} log ---\n{}", self.port, self.log());
        }
        self.kill();
    }
}

/// A minimal synchronous RESP client for arranging scenarios (not for measuring).
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            reader: BufReader::new(s),
        })
    }

    /// Sends a command; returns a simple/bulk reply as text, an error reply as `Err`.
    pub fn call(&mut self, args: &[&str]) -> Result<String, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader
            .get_mut()
            .write_all(out.as_bytes())
            .map_err(|e| e.to_string())?;
        self.read()
    }

    fn read(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (tag, rest) = line.split_at(1.min(line.len()));
        match tag {
            "+" | ":" => Ok(rest.to_string()),
            "-" => Err(rest.to_string()),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| "bad length".to_string())?;
                if n < 0 {
                    return Ok("(nil)".into());
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader
                    .read_exact(&mut buf)
                    .map_err(|e| e.to_string())?;
                buf.truncate(n as usize);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| "bad length".to_string())?;
                let items: Result<Vec<_>, _> = (0..n.max(0)).map(|_| self.read()).collect();
                Ok(items?.join("\n"))
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }
}

/// The `redis-canary` binary under test.
pub fn canary_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redis-canary"))
}

/// A running canary daemon with its config and log in a temp dir.
pub struct Canary {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Canary {
    /// Starts `redis-canary run` with `toml` as its config file (`listen` is set by us).
    pub fn start(toml: &str) -> Canary {
        Self::start_with(toml, &[], &[])
    }

    /// Like [`Canary::start`], with extra arguments and environment.
    pub fn start_with(toml: &str, args: &[&str], env: &[(&str, &str)]) -> Canary {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("canary.toml");
        std::fs::write(&config, toml).expect("writing config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("canary.log")).expect("log file");
        let child = Command::new(canary_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting redis-canary");
        let mut c = Canary {
            port,
            dir,
            child: Some(child),
        };
        wait_until("the canary's /readyz", Duration::from_secs(10), || {
            if let Some(status) = c.try_exit_status() {
                panic!("redis-canary exited early with {status}:\n{}", c.log());
            }
            matches!(http_get(port, "/readyz", None), Ok((200, _)))
        });
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("canary.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// GET `path`; panics if the daemon does not answer within 5 s.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path, None)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}\n{}", self.log()))
    }

    /// Waits until `target` has at least `n` operations of `op` that succeeded at once.
    pub fn wait_ok(&self, target: &str, op: &str, n: f64) {
        wait_until(
            &format!("{n} successful {op}s on {target}"),
            Duration::from_secs(10),
            || {
                self.metrics().sum(
                    "redis_canary_operations_total",
                    &[("target", target), ("op", op), ("outcome", "ok")],
                ) >= n
            },
        );
    }

    /// Scrapes and parses `/metrics`.
    pub fn metrics(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        Scrape::parse(&body)
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit; returns status and time taken.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().expect("running");
        let started = Instant::now();
        send_signal(child.id(), "TERM");
        let mut status = None;
        wait_until("the canary to exit after SIGTERM", within, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        self.child = None;
        (status.expect("exited"), started.elapsed())
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

/// A plain HTTP/1.1 GET with a 5 s deadline; returns status and body.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A parsed exposition: series (name plus sorted labels) to value.
#[derive(Debug, Default)]
pub struct Scrape {
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
            let Some((key, value)) = sample.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match key.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (key, BTreeMap::new()),
            };
            series.push((name.to_string(), labels, value));
        }
        Scrape {
            series,
            text: text.to_string(),
        }
    }

    /// Sum of every series named `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    /// How many series named `name` include all of `want`.
    pub fn count(&self, name: &str, want: &[(&str, &str)]) -> usize {
        self.matching(name, want).count()
    }

    /// The label sets of matching series.
    pub fn labels(&self, name: &str, want: &[(&str, &str)]) -> Vec<BTreeMap<String, String>> {
        self.matching(name, want).map(|(l, _)| l.clone()).collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.series
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(
            k.trim_start_matches(',').to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    out
}

/// A canary config for one target named `name` at `url`, with `extra` TOML lines appended
/// to the target table. Fast defaults keep tests short: 20 ops/s, short timeouts.
pub fn one_target_config(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"instance = "test"
[defaults]
rate = 20
keys = 100
connect_timeout = "500ms"
response_timeout = "300ms"
connect_probe_interval = "0s"

[[targets]]
name = "{name}"
url = "{url}"
{extra}
"#
    )
}

/// Reads a file in full (empty when missing).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// =====================================================================================
// Observability kit fixtures (used by tests/observability.rs): real `prometheus` and
// `prometheus-alertmanager` processes on loopback, the Prometheus HTTP API, and a
// webhook receiver that records what Alertmanager sends. Like the fixtures above, every
// process is killed and reaped on drop and its log printed when a test fails.
// =====================================================================================

/// Percent-encodes `s` for a URL query string (everything but RFC 3986 unreserved).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Starts `bin` with `args`, its stdout and stderr in `log`; panics with `hint` if it
/// cannot be started.
fn spawn_logged(bin: &str, args: &[String], log: &Path, hint: &str) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file handle");
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin} failed ({e}); {hint}"))
}

/// Polls `GET /-/ready` on `port` until it answers 200, panicking with the log if the
/// process exits first or `within` passes.
fn wait_ready(what: &str, port: u16, child: &mut Child, log: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}:\n{}", read(log));
        }
        if matches!(http_get(port, "/-/ready", None), Ok((200, _))) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what} not ready after {within:?}:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A real Prometheus server (`/usr/bin/prometheus` from Debian's `prometheus` package;
/// `PROMETHEUS_BIN` overrides) with its TSDB in a temp dir.
pub struct Prometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) as its configuration and waits until ready.
    pub fn start(config: &str) -> Prometheus {
        Self::start_with_flags(config, &[])
    }

    /// Like [`Prometheus::start`], with extra command-line flags (e.g. feature flags).
    pub fn start_with_flags(config: &str, flags: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let port = free_port();
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=info".into(),
        ]
        .into_iter()
        .chain(flags.iter().map(|f| f.to_string()))
        .collect::<Vec<_>>();
        let log = dir.path().join("prometheus.log");
        let mut child = spawn_logged(&bin, &args, &log, "is it installed? scripts/install-deps");
        wait_ready(
            "prometheus",
            port,
            &mut child,
            &log,
            Duration::from_secs(30),
        );
        Prometheus {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn log(&self) -> String {
        read(&self.dir.path().join("prometheus.log"))
    }

    /// GET an API path (with its query string); returns `data` of a successful answer.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, path_and_query, None)
            .unwrap_or_else(|e| panic!("GET {path_and_query} from prometheus: {e}"));
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered non-JSON ({e}): {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "prometheus {path_and_query} answered {status}: {body}"
        );
        v["data"].clone()
    }

    /// An instant query at the current time; returns the result vector.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query (Unix seconds, step such as "1s"); returns the result matrix.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: &str,
    ) -> Vec<serde_json::Value> {
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            url_encode(expr)
        ));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alerts Prometheus currently holds (pending or firing).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus :{} log ---\n{}", self.port, self.log());
        }
        kill_and_reap(&mut self.child);
    }
}

/// A real Alertmanager (`/usr/bin/prometheus-alertmanager` from Debian's
/// `prometheus-alertmanager`; `ALERTMANAGER_BIN` overrides), clustering disabled.
pub struct Alertmanager {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (YAML) and waits until ready.
    pub fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("writing alertmanager.yml");
        let port = free_port();
        let bin =
            std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| "prometheus-alertmanager".into());
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Empty: no gossip listener, a single stand-alone instance.
            "--cluster.listen-address=".into(),
            "--log.level=info".into(),
        ];
        let log = dir.path().join("alertmanager.log");
        let mut child = spawn_logged(&bin, &args, &log, "is it installed? scripts/install-deps");
        wait_ready(
            "alertmanager",
            port,
            &mut child,
            &log,
            Duration::from_secs(30),
        );
        Alertmanager {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn log(&self) -> String {
        read(&self.dir.path().join("alertmanager.log"))
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- alertmanager :{} log ---\n{}", self.port, self.log());
        }
        kill_and_reap(&mut self.child);
    }
}

/// One notification Alertmanager posted to the [`Webhook`], with its arrival time.
#[derive(Clone, Debug)]
pub struct Notification {
    pub at: Instant,
    pub body: serde_json::Value,
}

/// A webhook receiver on a loopback port: a thread that accepts HTTP POSTs, answers 200
/// and records each JSON body.
pub struct Webhook {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Notification>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("webhook address").port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rx, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(body) = Self::serve(stream) {
                            // Kept as a JSON string when it does not parse, so that
                            // wait_for's failure message shows it.
                            let body = serde_json::from_str(&body)
                                .unwrap_or(serde_json::Value::String(body));
                            rx.lock().expect("webhook lock").push(Notification {
                                at: Instant::now(),
                                body,
                            });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => {
                        eprintln!("webhook: accept failed, receiver stops: {e}");
                        break;
                    }
                }
            }
        });
        Webhook {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Reads one request (Content-Length body) and answers 200; returns the body.
    fn serve(mut stream: TcpStream) -> Option<String> {
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut length = 0usize;
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok()?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().ok()?;
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .ok()?;
        request_line
            .starts_with("POST")
            .then(|| String::from_utf8_lossy(&body).into_owned())
    }

    /// Every notification received so far.
    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().expect("webhook lock").clone()
    }

    /// Waits (at most `within`) for a notification holding an alert named `alertname`
    /// whose labels include `labels` and whose status is `status` ("firing" or
    /// "resolved"); returns when it arrived.
    pub fn wait_for(
        &self,
        alertname: &str,
        labels: &[(&str, &str)],
        status: &str,
        within: Duration,
    ) -> Instant {
        let mut at = None;
        let what = format!("alertmanager to post {alertname} {labels:?} {status}");
        let deadline = Instant::now() + within;
        while at.is_none() {
            at = self.received().into_iter().find_map(|n| {
                let alerts = n.body["alerts"].as_array()?;
                alerts
                    .iter()
                    .any(|a| {
                        a["status"] == status
                            && a["labels"]["alertname"] == alertname
                            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                    })
                    .then_some(n.at)
            });
            if at.is_none() && Instant::now() > deadline {
                let got: Vec<String> = self
                    .received()
                    .iter()
                    .flat_map(|n| n.body["alerts"].as_array().cloned().unwrap_or_default())
                    .map(|a| {
                        format!(
                            "{} {} {}",
                            a["labels"]["alertname"], a["labels"]["target"], a["status"]
                        )
                    })
                    .collect();
                panic!("timed out after {within:?} waiting for {what}; received: {got:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        at.expect("found")
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
