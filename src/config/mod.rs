//! Configuration (DESIGN §4): the effective configuration's types, and the map of the
//! modules that build it. figment layers built-in defaults, the TOML file, `REDIS_CANARY_*`
//! environment variables and command-line flags ([`layers`]); the merged tree is walked key
//! by key and every problem is collected ([`check`], [`settings`], [`values`]) into one list
//! ([`problems`]); `redis://` URLs are parsed by the `redis` crate ([`url`]); `check-config`
//! prints the result with secrets masked ([`print`]).
//!
//! figment does the layering: later layers win, tables merge key by key, arrays (`targets`,
//! `nodes`) are replaced whole. The checking walks the merged tree rather than using serde,
//! because serde stops at the first problem. Built-in defaults are the `Default` impls below;
//! they fill in whatever no layer set.

mod check;
mod cluster;
mod discovery;
mod layers;
mod print;
mod problems;
mod sentinel;
mod settings;
mod url;
mod values;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::secret::Secret;

use self::print::serialize_duration;

pub use self::discovery::{DEFAULT_DISCOVERY_INTERVAL, NodeDiscovery};
pub use self::layers::{MAX_CONFIG_FILE_SIZE, load, load_from};
pub use self::problems::{ConfigErrors, ConfigProblem};
pub use self::url::InvalidUrl;

/// Smallest `value_size`: the self-describing header of every value (DESIGN §2.1). The
/// payload codec owns the real layout and must assert that its header length equals this
/// constant, so that a configured size can never be too small for it.
pub const VALUE_HEADER_SIZE: usize = 48;

/// Prefix of the environment variables that take part in the configuration.
pub const ENV_PREFIX: &str = "REDIS_CANARY_";

/// Where the daemon listens unless told otherwise: the canary's registered default port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9736);

/// Default key prefix: the instance and the target in it keep the keyspaces of canaries and
/// of targets that reach the same store apart (and match the documented ACL `~redis-canary:*`).
pub const DEFAULT_KEY_PREFIX: &str = "redis-canary:{instance}:{target}:";

/// Default key prefix of a `soak` run: `soak:` before the target. A soak beside a daemon on
/// one host has the same instance (the hostname) and usually the same targets; on the same
/// keys, each judged the other's values `corrupt` (an epoch newer than its own).
pub const SOAK_KEY_PREFIX: &str = "redis-canary:{instance}:soak:{target}:";

impl Config {
    /// For `soak`: every target on the default key prefix moves to [`SOAK_KEY_PREFIX`]. An
    /// explicit `key_prefix` is kept as written, and so is a default one whose soak prefix
    /// would overlap another target's (prefixes must keep targets apart).
    pub fn use_soak_key_prefixes(&mut self) {
        let substitute = |template: &str, name: &str| {
            template
                .replace("{instance}", &self.instance)
                .replace("{target}", name)
        };
        let overlap = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
        for i in 0..self.targets.len() {
            let name = &self.targets[i].name;
            if self.targets[i].key_prefix != substitute(DEFAULT_KEY_PREFIX, name) {
                continue;
            }
            let soak = substitute(SOAK_KEY_PREFIX, name);
            let clashes = self
                .targets
                .iter()
                .enumerate()
                .any(|(j, t)| j != i && overlap(&t.key_prefix, &soak));
            if !clashes {
                self.targets[i].key_prefix = soak;
            }
        }
    }
}

/// Redis' own default port, used when a URL names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Longest password file read: a password is a line, and a file that is not one (a log, a
/// device) must not be read whole into memory on every connect.
pub const MAX_PASSWORD_FILE_SIZE: u64 = 64 * 1024;

/// Top-level keys. Only environment variables naming one of them take part: Kubernetes
/// injects `REDIS_CANARY_PORT`, `REDIS_CANARY_SERVICE_HOST`... for a Service of that name.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "instance",
    "log_format",
    "cleanup",
    "shard",
    "metrics_profile",
    "defaults",
    "slo",
    "telemetry",
    "targets",
];

/// Keys of `[defaults]`, which every target may also set to override them.
const SETTINGS_KEYS: &[&str] = &[
    "rate",
    "keys",
    "value_size",
    "ttl",
    "connections",
    "connect_probe_interval",
    "connect_timeout",
    "response_timeout",
    "stale_grace",
    "replication_timeout",
    "backend_ttl",
    "protocol",
    "retry",
    "tls",
    "discovery_interval",
    "discovery_resolver",
];

/// Keys of a `[[targets]]` entry besides the [`SETTINGS_KEYS`].
const TARGET_KEYS: &[&str] = &[
    "name",
    "url",
    "username",
    "password",
    "password_file",
    "password_env",
    "nodes",
    "key_prefix",
    "slo",
    "mode",
    "sentinels",
    "master_name",
    "sentinel_username",
    "sentinel_password",
    "sentinel_password_file",
    "sentinel_password_env",
    "sentinel_refresh",
    "seeds",
    "cluster_refresh",
];

/// Keys of a `[[targets]]` entry that only `mode = "cluster"` takes (DESIGN §12.2).
const CLUSTER_KEYS: &[&str] = &["seeds", "cluster_refresh"];

/// Default `cluster_refresh` (DESIGN §12.2): how often the slot map is asked for again.
pub const DEFAULT_CLUSTER_REFRESH: Duration = Duration::from_secs(10);

/// Keys of a `[[targets]]` entry that only `mode = "sentinel"` takes (DESIGN §12.1).
const SENTINEL_KEYS: &[&str] = &[
    "sentinels",
    "master_name",
    "sentinel_username",
    "sentinel_password",
    "sentinel_password_file",
    "sentinel_password_env",
    "sentinel_refresh",
];

/// Port of a sentinel URL that names none: Sentinel's own default.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Default `sentinel_refresh` (DESIGN §12.1): how often every sentinel is asked again, in
/// case a `+switch-master` message was missed.
pub const DEFAULT_SENTINEL_REFRESH: Duration = Duration::from_secs(10);

/// Keys of a `retry` table.
const RETRY_KEYS: &[&str] = &["max_retries", "base", "max"];
/// Keys of a `tls` table.
const TLS_KEYS: &[&str] = &[
    "ca_file",
    "cert_file",
    "key_file",
    "server_name",
    "insecure",
];
/// Keys of `[slo]` and of a target's `slo` table.
const SLO_KEYS: &[&str] = &[
    "min_availability",
    "max_failed_operations",
    "max_disruption",
    "max_stale_reads",
    "max_missing_reads",
    "max_corrupt_reads",
    "p99_operation",
];
/// Keys of `[telemetry]`.
const TELEMETRY_KEYS: &[&str] = &["otlp_endpoint", "sample_ratio"];

// ---------------------------------------------------------------------------------------
// The effective configuration
// ---------------------------------------------------------------------------------------

/// The effective configuration: every layer applied, every key checked, every target fully
/// resolved against `[defaults]` and `[slo]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// Name of this canary: hashed into every value and part of the default key prefix.
    pub instance: String,
    /// Format of the log lines.
    pub log_format: LogFormat,
    /// Whether to `DEL` the canary's own keys on shutdown.
    pub cleanup: bool,
    /// `shard = "INDEX/COUNT"`: run only the targets this replica owns (DESIGN §14);
    /// `None` runs them all.
    pub shard: Option<crate::fleet::Shard>,
    /// How much `/metrics` exports per target (README "Sizing").
    pub metrics_profile: crate::metrics::MetricsProfile,
    /// OpenTelemetry export.
    pub telemetry: Telemetry,
    /// The endpoints to measure; never empty.
    pub targets: Vec<Target>,
    /// Names (never values) of `REDIS_CANARY_*` variables that are not configuration and were
    /// ignored. [`load`] already warned about them once; this is for callers whose logging is
    /// set up after loading, and for `check-config`.
    pub ignored_env: Vec<String>,
}

/// Format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// OpenTelemetry export (DESIGN §8).
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// OTLP/HTTP endpoint; `None` turns tracing export off.
    pub otlp_endpoint: Option<String>,
    /// Share of successful operations traced; failed and retried ones always are.
    pub sample_ratio: f64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 0.01,
        }
    }
}

/// One measured endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The `target` label: `[a-z0-9_-]{1,63}`, unique.
    pub name: String,
    /// The endpoint (a proxy, a load balancer or a node). For a sentinel target, the data
    /// nodes' template: host `master_name`, port 0 (both replaced by the master the
    /// sentinels name on every connect), no credentials in it, database 0, TLS when the
    /// sentinels are `rediss://`.
    pub url: RedisUrl,
    /// How the endpoint is found (DESIGN §12): given, or asked of sentinels.
    pub mode: Mode,
    /// ACL user, from `username` or the URL.
    pub username: Option<String>,
    /// Where the password comes from (a password in the URL is [`PasswordSource::Inline`]).
    pub password: PasswordSource,
    /// Nodes behind the endpoint, polled directly for replication convergence (DESIGN §2.6).
    /// They carry no credentials and use the target's database: they inherit both.
    pub nodes: Vec<RedisUrl>,
    /// `nodes = "dns://..."` or `"dns+srv://..."`: the nodes are what DNS lists, resolved
    /// every `discovery_interval` (DESIGN §14); [`Target::nodes`] is then empty.
    pub discovery: Option<NodeDiscovery>,
    /// Prefix of every key, with `{instance}` and `{target}` substituted; no other target's
    /// prefix equals it, starts with it or is started by it.
    pub key_prefix: String,
    /// Workload settings: `[defaults]` with this target's overrides applied.
    pub settings: Settings,
    /// SLO thresholds: `[slo]` with this target's overrides applied.
    pub slo: Slo,
}

/// How a target's endpoint is found (DESIGN §12): `mode = "standalone" | "sentinel" |
/// "cluster"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// The URL is the endpoint, whatever stands behind it.
    Standalone,
    /// The master is asked of sentinels on every connect and followed (DESIGN §12.1).
    Sentinel(SentinelTarget),
    /// Every operation goes to the master of its key's slot (DESIGN §12.2).
    Cluster(ClusterTarget),
}

/// The cluster side of a `mode = "cluster"` target.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTarget {
    /// Where the slot map is first asked for: `url`, or `seeds`; never empty. The first is
    /// also [`Target::url`] (credentials, TLS).
    pub seeds: Vec<RedisUrl>,
    /// How often the slot map is asked for again (`cluster_refresh`).
    pub refresh: Duration,
    /// `nodes = "auto"`: follow every replica of every shard.
    pub nodes_auto: bool,
}

/// The sentinel side of a `mode = "sentinel"` target.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelTarget {
    /// The sentinels, asked in turn; never empty, all `redis://` or all `rediss://`. A URL
    /// without a port means 26379.
    pub sentinels: Vec<RedisUrl>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// The sentinels' own ACL user (`sentinel_username`, or the user in their URLs).
    pub username: Option<String>,
    /// The sentinels' own password (`sentinel_password*`, or the password in a URL).
    pub password: PasswordSource,
    /// How often every sentinel is asked again (`sentinel_refresh`).
    pub refresh: Duration,
    /// `nodes = "auto"`: follow every replica the sentinels list (`SENTINEL replicas`, asked
    /// at every refresh); [`Target::nodes`] is then empty.
    pub nodes_auto: bool,
}

/// A parsed `redis://[user:password@]host[:port][/db]` or `rediss://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisUrl {
    /// `rediss://`: connect with TLS.
    pub tls: bool,
    /// DNS name, IPv4 address, or IPv6 address without brackets.
    pub host: String,
    /// Port; 6379 when the URL names none.
    pub port: u16,
    /// User given in the URL, percent-decoded.
    pub username: Option<String>,
    /// Password given in the URL, percent-decoded.
    pub password: Option<Secret>,
    /// Database index (`SELECT`); the server decides how many it has.
    pub db: u32,
}

/// Where a target's password comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    /// No password: no `AUTH`.
    None,
    /// Given in the configuration (`password`, or in the URL).
    Inline(Secret),
    /// Read from this file on every connect, so that a rotated Secret is picked up.
    File(PathBuf),
    /// Read from this environment variable on every connect.
    Env(String),
}

/// Rate of the writer and of the reader loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Operations per second on a fixed timetable (open loop); > 0, may be fractional.
    PerSecond(f64),
    /// Closed loop, as fast as the connections allow (for load tests).
    Max,
}

/// The RESP version a connection speaks (DESIGN §11): `protocol = 2 | 3`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, what every Redis-protocol server speaks; the default.
    #[default]
    Resp2,
    /// RESP3, negotiated with `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The version number as written in the configuration: 2 or 3.
    pub fn version(self) -> u8 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// Workload settings of one target (`[defaults]` and the target's own overrides).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Writes per second, and reads per second.
    pub rate: Rate,
    /// Size of the keyspace.
    pub keys: u32,
    /// Minimum size of each value in bytes; at least [`VALUE_HEADER_SIZE`].
    pub value_size: usize,
    /// Expiry of every key (`PX`).
    #[serde(serialize_with = "serialize_duration")]
    pub ttl: Duration,
    /// Attempts in flight per loop.
    pub connections: usize,
    /// Period of the fresh-connection probe; zero turns it off.
    #[serde(serialize_with = "serialize_duration")]
    pub connect_probe_interval: Duration,
    /// Deadline of TCP + TLS + AUTH/HELLO/SELECT.
    #[serde(serialize_with = "serialize_duration")]
    pub connect_timeout: Duration,
    /// Deadline of one attempt.
    #[serde(serialize_with = "serialize_duration")]
    pub response_timeout: Duration,
    /// Acknowledgements younger than this make a read `lagging`, not `stale`.
    #[serde(serialize_with = "serialize_duration")]
    pub stale_grace: Duration,
    /// How long a write may take to show up on every node.
    #[serde(serialize_with = "serialize_duration")]
    pub replication_timeout: Duration,
    /// How long a backend stays in `backend_info` after it was last seen.
    #[serde(serialize_with = "serialize_duration")]
    pub backend_ttl: Duration,
    /// RESP version spoken on every connection (`HELLO 3` for RESP3).
    pub protocol: Protocol,
    /// Retry policy of every operation.
    pub retry: RetryPolicy,
    /// TLS options for `rediss://` connections; `None` when none were configured (system
    /// roots, server name from the URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// How often DNS-discovered nodes are resolved again (DESIGN §14).
    #[serde(serialize_with = "serialize_duration")]
    pub discovery_interval: Duration,
    /// The DNS server asked for discovered nodes; `None`: the system's (`/etc/resolv.conf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_resolver: Option<SocketAddr>,
}

impl Default for Settings {
    /// The built-in defaults of DESIGN §4.
    fn default() -> Self {
        Self {
            rate: Rate::PerSecond(10.0),
            keys: 1000,
            value_size: 64,
            ttl: Duration::from_secs(3600),
            connections: 2,
            connect_probe_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            stale_grace: Duration::from_secs(1),
            replication_timeout: Duration::from_secs(5),
            backend_ttl: Duration::from_secs(300),
            protocol: Protocol::Resp2,
            retry: RetryPolicy::default(),
            tls: None,
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            discovery_resolver: None,
        }
    }
}

/// Capped exponential backoff with jitter: the delay before retry *n* (0-based) is
/// `min(max, base × (2^n + U[0,1)))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff unit.
    #[serde(serialize_with = "serialize_duration")]
    pub base: Duration,
    /// Longest backoff; at least `base`.
    #[serde(serialize_with = "serialize_duration")]
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// The policy of the original experiment: 5 retries, 100 ms base, 10 s cap.
    fn default() -> Self {
        Self {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// TLS options; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    /// CA bundle (PEM) to verify the server with, instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM); given together with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM); given together with `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name to verify the certificate against, instead of the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Skip certificate verification (tests only).
    pub insecure: bool,
}

/// Thresholds that `soak` judges per target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// Lowest `(ok + recovered) / all` operations, skipped ticks included.
    pub min_availability: f64,
    /// Most operations that failed after their retries.
    pub max_failed_operations: u64,
    /// Longest disruption episode.
    #[serde(serialize_with = "serialize_duration")]
    pub max_disruption: Duration,
    /// Most `stale` reads.
    pub max_stale_reads: u64,
    /// Most `missing` reads.
    pub max_missing_reads: u64,
    /// Most `corrupt` reads.
    pub max_corrupt_reads: u64,
    /// Highest p99 of operation latency.
    #[serde(serialize_with = "serialize_duration")]
    pub p99_operation: Duration,
}

impl Default for Slo {
    /// The built-in defaults of DESIGN §4: clients must not notice anything.
    fn default() -> Self {
        Self {
            min_availability: 1.0,
            max_failed_operations: 0,
            max_disruption: Duration::ZERO,
            max_stale_reads: 0,
            max_missing_reads: 0,
            max_corrupt_reads: 0,
            p99_operation: Duration::from_millis(50),
        }
    }
}

impl PasswordSource {
    /// The password now: a file or variable is read at every call (every connect), so a
    /// rotated password is picked up. One trailing newline is trimmed from a file, which may
    /// hold at most [`MAX_PASSWORD_FILE_SIZE`] bytes. Blocks on the file: on the async
    /// runtime use [`PasswordSource::resolve_async`].
    pub fn resolve(&self) -> std::io::Result<Option<Secret>> {
        match self {
            Self::File(path) => {
                use std::io::Read;
                let read = std::fs::File::open(path).and_then(|file| {
                    let mut bytes = Vec::new();
                    file.take(MAX_PASSWORD_FILE_SIZE + 1)
                        .read_to_end(&mut bytes)
                        .map(|_| bytes)
                });
                password_from_file(path, read).map(Some)
            }
            Self::None => Ok(None),
            Self::Inline(secret) => Ok(Some(secret.clone())),
            Self::Env(name) => env_password(name).map(Some),
        }
    }

    /// Like [`PasswordSource::resolve`], but reads a `password_file` with `tokio::fs`, so
    /// that a slow volume never blocks a runtime thread.
    pub async fn resolve_async(&self) -> std::io::Result<Option<Secret>> {
        match self {
            Self::File(path) => {
                use tokio::io::AsyncReadExt;
                let read = async {
                    let file = tokio::fs::File::open(path).await?;
                    let mut bytes = Vec::new();
                    file.take(MAX_PASSWORD_FILE_SIZE + 1)
                        .read_to_end(&mut bytes)
                        .await?;
                    Ok(bytes)
                };
                password_from_file(path, read.await).map(Some)
            }
            Self::None => Ok(None),
            Self::Inline(secret) => Ok(Some(secret.clone())),
            Self::Env(name) => env_password(name).map(Some),
        }
    }
}

/// The password in an environment variable, read now.
fn env_password(name: &str) -> std::io::Result<Secret> {
    std::env::var(name).map(Secret::new).map_err(|error| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("password_env {name}: {error}"),
        )
    })
}

/// The password in a file's bytes (read up to one byte past the limit): at most
/// [`MAX_PASSWORD_FILE_SIZE`] bytes of UTF-8, one trailing newline (`\n` or `\r\n`) trimmed.
/// Errors name the file, never its content.
fn password_from_file(
    path: &std::path::Path,
    read: std::io::Result<Vec<u8>>,
) -> std::io::Result<Secret> {
    let fail = |kind: std::io::ErrorKind, why: &dyn std::fmt::Display| {
        std::io::Error::new(
            kind,
            format!(
                "cannot read password_file {}: {why}",
                path.display().to_string().escape_debug()
            ),
        )
    };
    let bytes = read.map_err(|error| fail(error.kind(), &error))?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE_SIZE {
        return Err(fail(
            std::io::ErrorKind::InvalidData,
            &format_args!("larger than {MAX_PASSWORD_FILE_SIZE} bytes"),
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| fail(std::io::ErrorKind::InvalidData, &"not utf-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret::new(text))
}
