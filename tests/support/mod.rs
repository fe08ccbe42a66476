//! Shared fixtures for the integration tests (STYLE.md, Tests):
//!
//! - [`Canary`] / [`spawn_canary`] (canary.rs): the real `redis-canary` binary, bound to
//!   `127.0.0.1:0`, its address read from its log.
//! - [`RedisServer`] and [`Client`] (redis.rs): the one `redis-server` fixture and a tiny
//!   synchronous RESP client for arranging faults.
//! - [`http_get`] and [`HttpRecorder`] (http.rs): the one HTTP client and the one HTTP
//!   server (OTLP receiver, Alertmanager webhook).
//! - [`DeadAddr`], [`reserve_port`] (ports.rs): addresses without races.
//! - [`Scrape`]: `/metrics` parsed; [`Prometheus`], [`Alertmanager`], [`Webhook`]: the
//!   observability kit's real processes; `topology`: multi-node setups and proxies;
//!   `sentinel` and `cluster`: Sentinel deployments and Redis Clusters;
//!   [`dnsmasq::Dnsmasq`]: a DNS server whose A and SRV records a test changes.
//!
//! Every wait polls with a deadline; every process is killed and reaped on drop, and its
//! log is printed when a test fails.

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod canary;
pub mod cluster;
pub mod dnsmasq;
pub mod hostile;
pub mod http;
pub mod ports;
pub mod redis;
pub mod sentinel;
pub mod topology;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use canary::{
    Canary, CanaryProcess, canary_bin, canary_listen_addr, spawn_canary, spawn_canary_in,
};
pub use http::{HttpRecorder, Request, http_get, http_request};
pub use ports::{DeadAddr, ReservedPort, free_port, logged_addr, reserve_port};
pub use redis::{Client, RedisServer, redis_server_bin};

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

pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The last `n` lines of a log file, for failure output.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

/// Operations of the writer and the reader of `target` (the ones with retries) that ended in
/// `outcome`. The fresh-connection probe has no retries by design (DESIGN §2.8): see
/// [`probe_failed`].
pub fn loop_ops(m: &Scrape, target: &str, outcome: &str) -> f64 {
    ["write", "read"]
        .iter()
        .map(|op| {
            m.sum(
                names::OPS,
                &[names::t(target), ("op", op), ("outcome", outcome)],
            )
        })
        .sum()
}

/// Failed fresh-connection probes of `target`.
pub fn probe_failed(m: &Scrape, target: &str) -> f64 {
    m.sum(
        names::OPS,
        &[names::t(target), ("op", "probe"), ("outcome", "failed")],
    )
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

/// Waits until a Prometheus-family program started with `--web.listen-address=
/// 127.0.0.1:0` has logged the address it bound (`msg="Listening on" address=...`) and
/// answers `GET /-/ready` with 200; returns its port. Panics with the log if it exits first
/// or `within` passes.
fn wait_listening_and_ready(what: &str, child: &mut Child, log: &Path, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    let mut port = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}:\n{}", read(log));
        }
        port =
            port.or_else(|| logged_addr(&read(log), "Listening on", "address").map(|a| a.port()));
        if let Some(port) = port
            && matches!(http_get(port, "/-/ready", None), Ok((200, _)))
        {
            return port;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} not ready after {within:?} (port {port:?}):\n{}",
                read(log)
            );
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
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            // Port 0: it logs the address it bound.
            "--web.listen-address=127.0.0.1:0".into(),
            "--log.level=info".into(),
        ]
        .into_iter()
        .chain(flags.iter().map(|f| f.to_string()))
        .collect::<Vec<_>>();
        let log = dir.path().join("prometheus.log");
        let mut child = spawn_logged(&bin, &args, &log, "is it installed? scripts/install-deps");
        let port =
            wait_listening_and_ready("prometheus", &mut child, &log, Duration::from_secs(30));
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
        let bin =
            std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| "prometheus-alertmanager".into());
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            // Port 0: it logs the address it bound.
            "--web.listen-address=127.0.0.1:0".into(),
            // Empty: no gossip listener, a single stand-alone instance.
            "--cluster.listen-address=".into(),
            "--log.level=info".into(),
        ];
        let log = dir.path().join("alertmanager.log");
        let mut child = spawn_logged(&bin, &args, &log, "is it installed? scripts/install-deps");
        let port =
            wait_listening_and_ready("alertmanager", &mut child, &log, Duration::from_secs(30));
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

/// An Alertmanager webhook receiver: an [`HttpRecorder`] whose POST bodies are JSON.
pub struct Webhook {
    pub port: u16,
    server: HttpRecorder,
}

impl Webhook {
    pub fn start() -> Webhook {
        let server = HttpRecorder::start();
        Webhook {
            port: server.port,
            server,
        }
    }

    /// Every notification received so far (a body that is not JSON is kept as a JSON
    /// string, so that failure messages show it).
    pub fn received(&self) -> Vec<Notification> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| Notification {
                at: r.at,
                body: serde_json::from_slice(&r.body)
                    .unwrap_or(serde_json::Value::String(r.text())),
            })
            .collect()
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
