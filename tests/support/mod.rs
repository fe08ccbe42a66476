//! Shared fixtures for the integration tests: real `redis-server` processes on ports from
//! port 0, the real `redis-canary` binary, a tiny synchronous RESP client for arranging
//! faults, and scraping/parsing `/metrics`. Every wait polls with a deadline; every process
//! is killed and reaped on drop, and its log is printed when a test fails.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
