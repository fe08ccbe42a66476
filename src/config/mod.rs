//! Configuration (DESIGN §4): layers built-in defaults, the TOML file, `REDIS_CANARY_*`
//! environment variables and command-line flags, checks every key of the merged tree and
//! reports all problems at once, and prints the effective configuration with secrets masked.
//!
//! figment does the layering: later layers win, tables merge key by key, arrays (`targets`,
//! `nodes`) are replaced whole. The checking is done here by walking the merged tree rather
//! than by serde, because serde stops at the first problem. Built-in defaults are the
//! `Default` impls below; they fill in whatever no layer set.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Serialize, Serializer};

use crate::cli::CommonArgs;
use crate::secret::{MASK, Secret};

/// Smallest `value_size`: the self-describing header of every value (DESIGN §2.1). The
/// payload codec owns the real layout and must assert that its header length equals this
/// constant, so that a configured size can never be too small for it.
pub const VALUE_HEADER_SIZE: usize = 48;

/// Prefix of the environment variables that take part in the configuration.
pub const ENV_PREFIX: &str = "REDIS_CANARY_";

/// Separates nesting levels in variable names: `REDIS_CANARY_DEFAULTS__RATE` is `defaults.rate`
/// (a single `_` is part of key names such as `value_size`).
const ENV_SEPARATOR: &str = "__";

/// The variable read when `telemetry.otlp_endpoint` is empty, as every OpenTelemetry SDK does.
const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Top-level keys. Only environment variables naming one of them take part: Kubernetes
/// injects `REDIS_CANARY_PORT`, `REDIS_CANARY_SERVICE_HOST`... for a Service of that name.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "instance",
    "log_format",
    "cleanup",
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
    "retry",
    "tls",
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
];

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

/// Where the daemon listens unless told otherwise: the canary's registered default port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9736);

/// Default key prefix: the instance and the target in it keep the keyspaces of canaries and
/// of targets that reach the same store apart (and match the documented ACL `~redis-canary:*`).
pub const DEFAULT_KEY_PREFIX: &str = "redis-canary:{instance}:{target}:";

/// Redis' own default port, used when a URL names none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Instance name used when neither the configuration nor the hostname gives one.
const FALLBACK_INSTANCE: &str = "redis-canary";

/// Highest fixed rate: a canary beside production must stay a small load; use `"max"` for
/// load tests.
const MAX_RATE: f64 = 100_000.0;
/// Largest keyspace per target: bounds the ledger's memory and the store's.
const MAX_KEYS: u64 = 10_000_000;
/// Largest value: one MiB is already far beyond what a canary needs.
const MAX_VALUE_SIZE: u64 = 1 << 20;
/// Most attempts in flight per loop.
const MAX_CONNECTIONS: u64 = 1024;
/// Most retries per operation: more would hide any outage the canary exists to show.
const MAX_RETRIES: u64 = 100;
/// Redis' default number of databases is 16.
const MAX_DB: u32 = 15;
/// Largest counter threshold: TOML integers are signed 64-bit, and the effective
/// configuration must print back as TOML.
const MAX_COUNT: u64 = i64::MAX as u64;
/// Shortest `ttl`: `SET ... PX` of less than a second would expire keys before reads.
const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest duration anywhere: far beyond any sensible setting, and small enough that adding
/// it to an `Instant` can never overflow (which panics).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// [`MAX_DURATION`] as written in messages (humantime would print months and hours).
const MAX_DURATION_TEXT: &str = "365days";
/// Metadata name of a value set by an environment variable: problem messages name the
/// variable, and its text is read as the type the key needs.
const ENV_LAYER: &str = "environment variable";
/// Metadata name of a value set by a flag: problem messages name the flag.
const FLAG_LAYER: &str = "command-line flag";

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
    /// The endpoint (a proxy, a load balancer or a node).
    pub url: RedisUrl,
    /// ACL user, from `username` or the URL.
    pub username: Option<String>,
    /// Where the password comes from (a password in the URL is [`PasswordSource::Inline`]).
    pub password: PasswordSource,
    /// Nodes behind the endpoint, polled directly for replication convergence (DESIGN §2.6).
    /// They carry no credentials and use the target's database: they inherit both.
    pub nodes: Vec<RedisUrl>,
    /// Prefix of every key, with `{instance}` and `{target}` substituted; no other target's
    /// prefix equals it, starts with it or is started by it.
    pub key_prefix: String,
    /// Workload settings: `[defaults]` with this target's overrides applied.
    pub settings: Settings,
    /// SLO thresholds: `[slo]` with this target's overrides applied.
    pub slo: Slo,
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
    /// Database index (`SELECT`), 0..=15.
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
    /// Retry policy of every operation.
    pub retry: RetryPolicy,
    /// TLS options for `rediss://` connections; `None` when none were configured (system
    /// roots, server name from the URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
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
            retry: RetryPolicy::default(),
            tls: None,
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

// ---------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One problem: which key, which value (secrets masked), what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `"targets[1].rate"`, `"defaults.retry.base"`, `"listen"`, `"--target"`, `"--config"`.
    pub key: String,
    /// The offending value as written in TOML (`"\"fast\""`, `"0"`), masked if secret;
    /// empty when the problem is a missing key or is about several keys.
    pub value: String,
    /// What is wrong, lowercase; names the layer when the value came from the environment
    /// or a flag.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "invalid configuration: {}: {}", self.key, self.message)
        } else {
            write!(
                f,
                "invalid configuration: {} = {}: {}",
                self.key, self.value, self.message
            )
        }
    }
}

impl std::error::Error for ConfigProblem {}

impl std::error::Error for ConfigErrors {}

impl ConfigProblem {
    fn new(key: impl Into<String>, value: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Loads the configuration from the file named by `--config`, the process environment and
/// the flags.
pub fn load(args: &CommonArgs) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect();
    load_from(args, &env)
}

/// Like [`load`], with the environment given explicitly (`HOSTNAME` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` are read from it too).
pub fn load_from(args: &CommonArgs, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let file = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((path.as_path(), text)),
            Err(error) => {
                return Err(ConfigErrors(vec![ConfigProblem::new(
                    "--config",
                    quote(&path.display().to_string()),
                    format!("cannot read the file: {error}"),
                )]));
            }
        },
        None => None,
    };
    load_layers(
        file.as_ref().map(|(path, text)| (*path, text.as_str())),
        args,
        env,
    )
}

/// Layers the file's text, the environment and the flags, then checks the merged tree.
fn load_layers(
    file: Option<(&Path, &str)>,
    args: &CommonArgs,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some((path, text)) = file {
        // figment would report the same error, but over several lines with a source
        // snippet; one line naming the position is what a problem list needs.
        if let Err(error) = text.parse::<toml::Table>() {
            return Err(ConfigErrors(vec![toml_problem(path, text, &error)]));
        }
        figment = figment.merge(Toml::string(text));
    }

    // Ignored variables are returned in `Config::ignored_env`; main logs them once,
    // after logging is set up.
    let env = EnvLayers::split(env);
    for layer in env.layers {
        figment = figment.merge(layer);
    }
    if let Some(listen) = &args.listen {
        figment = figment.merge(Layer::flag("--listen", "listen", listen));
    }
    if let Some(log_format) = &args.log_format {
        figment = figment.merge(Layer::flag("--log-format", "log_format", log_format));
    }

    let mut tree = match figment.find_value("") {
        Ok(Value::Dict(_, dict)) => dict,
        Ok(_) => Dict::new(),
        Err(error) => {
            let path = file.map_or_else(String::new, |(path, _)| path.display().to_string());
            return Err(ConfigErrors(vec![ConfigProblem::new(
                "--config",
                quote(&path),
                one_line(&error.to_string()),
            )]));
        }
    };

    let mut checker = Checker {
        figment: &figment,
        env: env.all,
        problems: env.problems,
    };
    let target_flags_failed = apply_target_flags(&mut tree, &args.targets, &mut checker.problems);
    let config = checker.config(&tree, env.ignored, target_flags_failed);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(checker.problems))
    }
}

/// A TOML syntax error as one problem naming the file and the line and column.
fn toml_problem(path: &Path, text: &str, error: &toml::de::Error) -> ConfigProblem {
    let position = error.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    ConfigProblem::new(
        "--config",
        quote(&path.display().to_string()),
        format!(
            "cannot parse the file as toml{}: {}",
            position.unwrap_or_default(),
            one_line(error.message())
        ),
    )
}

/// `--target NAME=URL` flags, the last layer: a name already present gets its URL replaced,
/// a new name is appended. Bad flags are reported under `--target` and left out. Returns
/// whether any flag was bad.
fn apply_target_flags(
    tree: &mut Dict,
    flags: &[String],
    problems: &mut Vec<ConfigProblem>,
) -> bool {
    let mut failed = false;
    for flag in flags {
        let mut reject = |message: String| {
            problems.push(ConfigProblem::new(
                "--target",
                quote(&mask_url_text(flag)),
                message,
            ));
            failed = true;
        };
        let Some((name, url)) = flag.split_once('=') else {
            reject("expected NAME=URL".into());
            continue;
        };
        if !is_target_name(name) {
            reject(format!(
                "invalid target name {}: expected 1 to 63 of [a-z0-9_-]",
                quote(name)
            ));
            continue;
        }
        if let Err(error) = parse_url(url) {
            reject(error.to_string());
            continue;
        }
        let targets = tree
            .entry("targets".to_string())
            .or_insert_with(|| Value::Array(Tag::Default, Vec::new()));
        // Anything but an array is reported by the check of the tree.
        let Value::Array(_, list) = targets else {
            continue;
        };
        let existing = list.iter_mut().find_map(|item| match item {
            Value::Dict(_, dict) if dict.get("name").and_then(Value::as_str) == Some(name) => {
                Some(dict)
            }
            _ => None,
        });
        let url = Value::from(url.to_string());
        match existing {
            Some(dict) => {
                dict.insert("url".into(), url);
            }
            None => {
                let mut dict = Dict::new();
                dict.insert("name".into(), Value::from(name.to_string()));
                dict.insert("url".into(), url);
                list.push(Value::Dict(Tag::Default, dict));
            }
        }
    }
    failed
}

/// The environment split into configuration layers, ignored names and malformed names.
struct EnvLayers<'e> {
    all: &'e [(String, String)],
    layers: Vec<Layer>,
    ignored: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl<'e> EnvLayers<'e> {
    /// Does what figment's `Env::prefixed(ENV_PREFIX).split("__")` does (prefix matched
    /// without regard to case, keys lowercased), but over an explicit list so that tests need
    /// not touch the process environment, and one layer per variable so that a problem can
    /// name the variable its value came from. Variables are applied sorted by name, so
    /// `REDIS_CANARY_DEFAULTS__RATE` refines `REDIS_CANARY_DEFAULTS`.
    fn split(env: &'e [(String, String)]) -> Self {
        let mut vars: Vec<&(String, String)> = env.iter().collect();
        vars.sort();
        let mut split = Self {
            all: env,
            layers: Vec::new(),
            ignored: Vec::new(),
            problems: Vec::new(),
        };
        for (name, value) in vars {
            let Some(rest) = strip_prefix_ignore_case(name.trim(), ENV_PREFIX) else {
                continue;
            };
            let segments: Vec<String> = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if !TOP_LEVEL_KEYS.contains(&segments[0].as_str()) {
                split.ignored.push(name.clone());
            } else if segments.iter().any(|s| s.is_empty() || s.contains('.')) {
                split.problems.push(ConfigProblem::new(
                    name.clone(),
                    "",
                    "malformed variable name: expected REDIS_CANARY_KEY or REDIS_CANARY_TABLE__KEY",
                ));
            } else {
                split.layers.push(Layer {
                    kind: ENV_LAYER,
                    source: name.clone(),
                    key: segments.join("."),
                    value: env_value(value),
                });
            }
        }
        split
    }
}

/// An environment variable's value: inline tables, arrays and quoted strings in figment's
/// syntax (`[{name="a", url="redis://h:6379"}]`), anything else as the raw text, which
/// the checks then read as the type the key needs (so `REDIS_CANARY_INSTANCE=007` stays
/// `"007"`).
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with(['[', '{', '"']) {
        // figment's parser is infallible: what it cannot parse comes back as a string.
        Value::from_str(trimmed).unwrap_or_else(|never| match never {})
    } else {
        Value::from(raw.to_string())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// One value set by one environment variable or one flag. Its metadata names the variable
/// or the flag, so that problem messages can say where a bad value came from.
struct Layer {
    kind: &'static str,
    source: String,
    key: String,
    value: Value,
}

impl Layer {
    fn flag(flag: &str, key: &str, value: &str) -> Self {
        Self {
            kind: FLAG_LAYER,
            source: flag.to_string(),
            key: key.to_string(),
            value: Value::from(value.to_string()),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.kind, Source::Custom(self.source.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = match figment::util::nest(&self.key, self.value.clone()) {
            Value::Dict(_, dict) => dict,
            _ => Dict::new(),
        };
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

// ---------------------------------------------------------------------------------------
// Checking the merged tree
// ---------------------------------------------------------------------------------------

/// Walks the merged tree, turns it into a [`Config`] and records every problem on the way.
/// Bad values are replaced by their defaults so that the walk goes on; the config is thrown
/// away if any problem was recorded.
struct Checker<'a> {
    figment: &'a Figment,
    env: &'a [(String, String)],
    problems: Vec<ConfigProblem>,
}

/// Lower bound of a duration.
#[derive(Clone, Copy)]
enum Bound {
    /// Zero allowed.
    Any,
    /// Must be > 0.
    Positive,
    /// Must be at least this.
    AtLeast(Duration),
}

/// Settings that one table (`[defaults]` or a target) sets; unset ones are inherited.
#[derive(Default)]
struct SettingsLayer {
    rate: Option<Rate>,
    keys: Option<u32>,
    value_size: Option<usize>,
    ttl: Option<Duration>,
    connections: Option<usize>,
    connect_probe_interval: Option<Duration>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    stale_grace: Option<Duration>,
    replication_timeout: Option<Duration>,
    backend_ttl: Option<Duration>,
    retry: RetryLayer,
    tls: Option<TlsLayer>,
}

#[derive(Default)]
struct RetryLayer {
    max_retries: Option<u32>,
    base: Option<Duration>,
    max: Option<Duration>,
}

/// TLS keys one table sets; an empty string unsets an inherited path or name.
#[derive(Default)]
struct TlsLayer {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    server_name: Option<String>,
    insecure: Option<bool>,
}

#[derive(Default)]
struct SloLayer {
    min_availability: Option<f64>,
    max_failed_operations: Option<u64>,
    max_disruption: Option<Duration>,
    max_stale_reads: Option<u64>,
    max_missing_reads: Option<u64>,
    max_corrupt_reads: Option<u64>,
    p99_operation: Option<Duration>,
}

impl SettingsLayer {
    fn over(&self, base: &Settings) -> Settings {
        Settings {
            rate: self.rate.unwrap_or(base.rate),
            keys: self.keys.unwrap_or(base.keys),
            value_size: self.value_size.unwrap_or(base.value_size),
            ttl: self.ttl.unwrap_or(base.ttl),
            connections: self.connections.unwrap_or(base.connections),
            connect_probe_interval: self
                .connect_probe_interval
                .unwrap_or(base.connect_probe_interval),
            connect_timeout: self.connect_timeout.unwrap_or(base.connect_timeout),
            response_timeout: self.response_timeout.unwrap_or(base.response_timeout),
            stale_grace: self.stale_grace.unwrap_or(base.stale_grace),
            replication_timeout: self.replication_timeout.unwrap_or(base.replication_timeout),
            backend_ttl: self.backend_ttl.unwrap_or(base.backend_ttl),
            retry: RetryPolicy {
                max_retries: self.retry.max_retries.unwrap_or(base.retry.max_retries),
                base: self.retry.base.unwrap_or(base.retry.base),
                max: self.retry.max.unwrap_or(base.retry.max),
            },
            tls: match &self.tls {
                None => base.tls.clone(),
                Some(layer) => Some(layer.over(base.tls.clone().unwrap_or_default())),
            },
        }
    }
}

impl TlsLayer {
    fn over(&self, base: TlsSettings) -> TlsSettings {
        fn pick<T: From<String>>(set: &Option<String>, inherited: Option<T>) -> Option<T> {
            match set {
                None => inherited,
                Some(text) if text.is_empty() => None,
                Some(text) => Some(T::from(text.clone())),
            }
        }
        TlsSettings {
            ca_file: pick(&self.ca_file, base.ca_file),
            cert_file: pick(&self.cert_file, base.cert_file),
            key_file: pick(&self.key_file, base.key_file),
            server_name: pick(&self.server_name, base.server_name),
            insecure: self.insecure.unwrap_or(base.insecure),
        }
    }
}

impl SloLayer {
    fn over(&self, base: &Slo) -> Slo {
        Slo {
            min_availability: self.min_availability.unwrap_or(base.min_availability),
            max_failed_operations: self
                .max_failed_operations
                .unwrap_or(base.max_failed_operations),
            max_disruption: self.max_disruption.unwrap_or(base.max_disruption),
            max_stale_reads: self.max_stale_reads.unwrap_or(base.max_stale_reads),
            max_missing_reads: self.max_missing_reads.unwrap_or(base.max_missing_reads),
            max_corrupt_reads: self.max_corrupt_reads.unwrap_or(base.max_corrupt_reads),
            p99_operation: self.p99_operation.unwrap_or(base.p99_operation),
        }
    }
}

/// What a target contributes to the checks across targets, even when it is not valid itself.
struct TargetParts {
    name: Option<String>,
    key_prefix: Option<String>,
    target: Option<Target>,
}

impl Checker<'_> {
    fn config(
        &mut self,
        tree: &Dict,
        ignored_env: Vec<String>,
        target_flags_failed: bool,
    ) -> Config {
        let mut listen = DEFAULT_LISTEN;
        let mut instance = None;
        let mut log_format = LogFormat::Text;
        let mut cleanup = false;
        let mut defaults = SettingsLayer::default();
        let mut slo = SloLayer::default();
        let mut telemetry = Telemetry::default();
        let mut targets = None;

        for (key, value) in tree {
            match key.as_str() {
                "listen" => {
                    if let Some(text) = self.text(key, value) {
                        match text.trim().parse::<SocketAddr>() {
                            Ok(address) => listen = address,
                            Err(_) => self.report(
                                key,
                                value,
                                "expected a socket address ip:port such as 0.0.0.0:9736",
                            ),
                        }
                    }
                }
                "instance" => {
                    if let Some(text) = self.text(key, value) {
                        if is_instance_name(text) {
                            instance = Some(text.to_string());
                        } else {
                            self.report(key, value, "expected 1 to 63 of [A-Za-z0-9._-]");
                        }
                    }
                }
                "log_format" => match self.text(key, value) {
                    Some("text") => log_format = LogFormat::Text,
                    Some("json") => log_format = LogFormat::Json,
                    Some(_) => self.report(key, value, "expected \"text\" or \"json\""),
                    None => {}
                },
                "cleanup" => cleanup = self.boolean(key, value).unwrap_or(cleanup),
                "defaults" => {
                    if let Some(dict) = self.table(key, value) {
                        defaults = self.settings_table(key, dict);
                    }
                }
                "slo" => {
                    if let Some(dict) = self.table(key, value) {
                        slo = self.slo_table(key, dict);
                    }
                }
                "telemetry" => {
                    if let Some(dict) = self.table(key, value) {
                        telemetry = self.telemetry_table(key, dict);
                    }
                }
                "targets" => targets = Some(value),
                _ => self.unknown(key, value, &[TOP_LEVEL_KEYS]),
            }
        }

        let instance = instance.unwrap_or_else(|| {
            if tree.contains_key("instance") {
                return String::new(); // already reported
            }
            let hostname = self.hostname();
            if !is_instance_name(&hostname) {
                self.problems.push(ConfigProblem::new(
                    "instance",
                    quote(&hostname),
                    "the hostname is not a valid instance name (1 to 63 of [A-Za-z0-9._-]): set instance",
                ));
            }
            hostname
        });

        if telemetry.otlp_endpoint.is_none() {
            telemetry.otlp_endpoint = self.otlp_endpoint_from_env();
        }
        let default_settings = defaults.over(&Settings::default());
        self.check_settings("defaults", &default_settings, &defaults, true);
        let default_slo = slo.over(&Slo::default());
        let targets = self.targets(
            targets,
            &instance,
            &default_settings,
            &default_slo,
            target_flags_failed,
        );

        Config {
            listen,
            instance,
            log_format,
            cleanup,
            telemetry,
            targets,
            ignored_env,
        }
    }

    /// `[telemetry]`; an empty `otlp_endpoint` is left `None`.
    fn telemetry_table(&mut self, path: &str, dict: &Dict) -> Telemetry {
        let mut telemetry = Telemetry::default();
        for (key, value) in dict {
            let at = child(path, key);
            match key.as_str() {
                "otlp_endpoint" => match self.text(&at, value) {
                    Some("") | None => {}
                    Some(text) if is_http_url(text) => {
                        telemetry.otlp_endpoint = Some(text.to_string());
                    }
                    Some(_) => self.report(&at, value, "expected an http:// or https:// url"),
                },
                "sample_ratio" => {
                    if let Some(ratio) = self.ratio(&at, value) {
                        telemetry.sample_ratio = ratio;
                    }
                }
                _ => self.unknown(&at, value, &[TELEMETRY_KEYS]),
            }
        }
        telemetry
    }

    /// The standard OpenTelemetry variable, used when `telemetry.otlp_endpoint` is empty.
    fn otlp_endpoint_from_env(&mut self) -> Option<String> {
        let endpoint = self.env_var(OTEL_ENDPOINT_VAR)?.trim().to_string();
        if endpoint.is_empty() {
            None
        } else if is_http_url(&endpoint) {
            Some(endpoint)
        } else {
            self.problems.push(ConfigProblem::new(
                OTEL_ENDPOINT_VAR,
                quote(&endpoint),
                "expected an http:// or https:// url (read because telemetry.otlp_endpoint is empty)",
            ));
            None
        }
    }

    /// `instance` when the configuration sets none: the hostname.
    fn hostname(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|name| !name.is_empty())
            .or_else(|| {
                self.env_var("HOSTNAME")
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| FALLBACK_INSTANCE.to_string())
    }

    fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn targets(
        &mut self,
        value: Option<&Value>,
        instance: &str,
        settings: &Settings,
        slo: &Slo,
        target_flags_failed: bool,
    ) -> Vec<Target> {
        let list: &[Value] = match value {
            None => &[],
            Some(Value::Array(_, list)) => list,
            Some(other) => {
                self.report(
                    "targets",
                    other,
                    "expected an array of tables ([[targets]] in toml)",
                );
                return Vec::new();
            }
        };
        // A bad --target flag was reported already; "no targets" would only repeat it.
        if list.is_empty() && !target_flags_failed {
            self.problems.push(ConfigProblem::new(
                "targets",
                "",
                "at least one target is required",
            ));
        }

        let mut targets = Vec::new();
        let mut names: Vec<(String, String)> = Vec::new(); // (path, name)
        let mut prefixes: Vec<(String, String)> = Vec::new(); // (name, prefix)
        for (index, item) in list.iter().enumerate() {
            let path = format!("targets[{index}]");
            let Some(dict) = self.table(&path, item) else {
                continue;
            };
            let parts = self.target(&path, dict, instance, settings, slo);
            targets.extend(parts.target);
            let Some(name) = parts.name else {
                continue;
            };
            if let Some((first, _)) = names.iter().find(|(_, other)| *other == name) {
                self.problems.push(ConfigProblem::new(
                    format!("{path}.name"),
                    quote(&name),
                    format!("duplicate target name (also {first}.name)"),
                ));
                // Its default prefix is the same too; saying so would add nothing.
                continue;
            }
            if let Some(prefix) = parts.key_prefix {
                self.check_prefix_apart(&path, &name, &prefix, &prefixes);
                prefixes.push((name.clone(), prefix));
            }
            names.push((path, name));
        }
        targets
    }

    /// Two targets' keys must never collide: no prefix may equal another or start it.
    fn check_prefix_apart(
        &mut self,
        path: &str,
        name: &str,
        prefix: &str,
        earlier: &[(String, String)],
    ) {
        for (other_name, other_prefix) in earlier {
            let relation = if prefix == other_prefix {
                "is the same as"
            } else if prefix.starts_with(other_prefix.as_str()) {
                "starts with"
            } else if other_prefix.starts_with(prefix) {
                "is the start of"
            } else {
                continue;
            };
            self.problems.push(ConfigProblem::new(
                format!("{path}.key_prefix"),
                quote(prefix),
                format!(
                    "the key prefix of target {} {relation} the key prefix of target {} ({}): \
                     key prefixes must keep targets apart",
                    quote(name),
                    quote(other_name),
                    quote(other_prefix)
                ),
            ));
        }
    }

    fn target(
        &mut self,
        path: &str,
        dict: &Dict,
        instance: &str,
        default_settings: &Settings,
        default_slo: &Slo,
    ) -> TargetParts {
        let mut name = None;
        let mut url: Option<ParsedUrl> = None;
        let mut username: Option<(String, &Value)> = None;
        let mut sources: Vec<(&str, PasswordSource)> = Vec::new();
        let mut nodes: Vec<(String, &Value, ParsedUrl)> = Vec::new();
        let mut key_prefix: Option<(&str, &Value)> = None;
        let mut settings = SettingsLayer::default();
        let mut slo = SloLayer::default();

        let before = self.problems.len();
        for (key, value) in dict {
            let at = child(path, key);
            match key.as_str() {
                "name" => {
                    if let Some(text) = self.text(&at, value) {
                        if is_target_name(text) {
                            name = Some(text.to_string());
                        } else {
                            self.report(&at, value, "expected 1 to 63 of [a-z0-9_-]");
                        }
                    }
                }
                "url" => url = self.url(&at, value),
                "username" => {
                    username = self.non_empty_text(&at, value).map(|text| (text, value));
                }
                "password" => {
                    if let Some(text) = self.non_empty_text(&at, value) {
                        sources.push(("password", PasswordSource::Inline(Secret::new(text))));
                    }
                }
                "password_file" => {
                    if let Some(text) = self.non_empty_text(&at, value) {
                        sources.push(("password_file", PasswordSource::File(text.into())));
                    }
                }
                "password_env" => {
                    if let Some(text) = self.text(&at, value) {
                        if is_env_name(text) {
                            sources.push(("password_env", PasswordSource::Env(text.to_string())));
                        } else {
                            self.report(
                                &at,
                                value,
                                "expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                            );
                        }
                    }
                }
                "nodes" => match value {
                    Value::Array(_, items) => {
                        for (index, item) in items.iter().enumerate() {
                            let at = format!("{at}[{index}]");
                            if let Some(node) = self.url(&at, item) {
                                nodes.push((at, item, node));
                            }
                        }
                    }
                    _ => self.report(&at, value, "expected an array of urls"),
                },
                "key_prefix" => key_prefix = self.text(&at, value).map(|text| (text, value)),
                "slo" => {
                    if let Some(table) = self.table(&at, value) {
                        slo = self.slo_table(&at, table);
                    }
                }
                _ => {
                    if !self.settings_key(&mut settings, path, key, value) {
                        self.unknown(&at, value, &[TARGET_KEYS, SETTINGS_KEYS]);
                    }
                }
            }
        }
        for required in ["name", "url"] {
            if !dict.contains_key(required) {
                self.problems.push(ConfigProblem::new(
                    child(path, required),
                    "",
                    "missing: every target needs a name and a url",
                ));
            }
        }

        // Credentials: the URL's and the keys' must agree, with at most one password source.
        if let Some(url) = &url {
            if let Some(password) = &url.url.password {
                sources.insert(0, ("url", PasswordSource::Inline(password.clone())));
            }
            if let (Some(from_url), Some((from_key, value))) = (&url.url.username, &username)
                && from_url != from_key
            {
                self.report(
                    &child(path, "username"),
                    value,
                    format!("differs from the user in the url ({})", quote(from_url)),
                );
            }
        }
        if sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
            self.problems.push(ConfigProblem::new(
                child(path, "password"),
                "",
                format!(
                    "more than one password source ({}): give at most one",
                    names.join(", ")
                ),
            ));
        }
        let username = username
            .map(|(text, _)| text)
            .or_else(|| url.as_ref().and_then(|url| url.url.username.clone()));
        let password = sources
            .into_iter()
            .next()
            .map_or(PasswordSource::None, |(_, source)| source);

        // Nodes inherit the target's credentials and database.
        let mut node_urls = Vec::new();
        for (at, value, node) in nodes {
            if node.url.username.is_some() || node.url.password.is_some() {
                self.report(
                    &at,
                    value,
                    "a node inherits the target's credentials: remove the user and password from its url",
                );
                continue;
            }
            let mut node_url = node.url;
            if let Some(url) = &url {
                if node.db_given && node_url.db != url.url.db {
                    self.report(
                        &at,
                        value,
                        format!("a node must use the target's database (db {})", url.url.db),
                    );
                }
                node_url.db = url.url.db;
            }
            node_urls.push(node_url);
        }

        let key_prefix = match &name {
            Some(name) if !instance.is_empty() => {
                self.key_prefix(&child(path, "key_prefix"), key_prefix, instance, name)
            }
            _ => None, // a bad name or instance was reported already
        };

        let settings_resolved = settings.over(default_settings);
        self.check_settings(path, &settings_resolved, &settings, false);
        let slo = slo.over(default_slo);
        let valid = self.problems.len() == before;

        let target = match (valid, &name, url, &key_prefix) {
            (true, Some(name), Some(url), Some(key_prefix)) => Some(Target {
                name: name.clone(),
                url: url.url,
                username,
                password,
                nodes: node_urls,
                key_prefix: key_prefix.clone(),
                settings: settings_resolved,
                slo,
            }),
            _ => None,
        };
        TargetParts {
            name,
            key_prefix,
            target,
        }
    }

    /// The key prefix with `{instance}` and `{target}` substituted.
    fn key_prefix(
        &mut self,
        at: &str,
        template: Option<(&str, &Value)>,
        instance: &str,
        name: &str,
    ) -> Option<String> {
        let substitute = |template: &str| {
            template
                .replace("{instance}", instance)
                .replace("{target}", name)
        };
        // The default is always valid: instance and name have been checked.
        let Some((template, value)) = template else {
            return Some(substitute(DEFAULT_KEY_PREFIX));
        };
        let prefix = substitute(template);
        if prefix.is_empty() {
            self.report(at, value, "must not be empty: every key carries the prefix");
            None
        } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                at,
                value,
                "must not contain whitespace or control characters",
            );
            None
        } else {
            Some(prefix)
        }
    }

    /// Checks across keys of resolved settings. A target is checked only for what it sets
    /// itself, so that a bad default is reported once, under `defaults`.
    fn check_settings(
        &mut self,
        path: &str,
        settings: &Settings,
        layer: &SettingsLayer,
        own: bool,
    ) {
        let retry = &settings.retry;
        if (own || layer.retry.base.is_some() || layer.retry.max.is_some())
            && retry.max < retry.base
        {
            let (key, value, message) = if own || layer.retry.max.is_some() {
                (
                    "max",
                    retry.max,
                    format!(
                        "must be at least retry.base ({})",
                        humantime::format_duration(retry.base)
                    ),
                )
            } else {
                (
                    "base",
                    retry.base,
                    format!(
                        "must be at most retry.max ({})",
                        humantime::format_duration(retry.max)
                    ),
                )
            };
            self.problems.push(ConfigProblem::new(
                format!("{path}.retry.{key}"),
                quote(&humantime::format_duration(value).to_string()),
                message,
            ));
        }
        let touched_client_certificate = own
            || layer
                .tls
                .as_ref()
                .is_some_and(|tls| tls.cert_file.is_some() || tls.key_file.is_some());
        let half_a_certificate =
            settings
                .tls
                .as_ref()
                .and_then(|tls| match (&tls.cert_file, &tls.key_file) {
                    (Some(file), None) => Some(("cert_file", file)),
                    (None, Some(file)) => Some(("key_file", file)),
                    _ => None,
                });
        if touched_client_certificate && let Some((key, file)) = half_a_certificate {
            self.problems.push(ConfigProblem::new(
                format!("{path}.tls.{key}"),
                quote(&file.display().to_string()),
                "cert_file and key_file must be given together",
            ));
        }
    }

    /// `[defaults]`: settings keys only.
    fn settings_table(&mut self, path: &str, dict: &Dict) -> SettingsLayer {
        let mut layer = SettingsLayer::default();
        for (key, value) in dict {
            if !self.settings_key(&mut layer, path, key, value) {
                self.unknown(&child(path, key), value, &[SETTINGS_KEYS]);
            }
        }
        layer
    }

    /// Reads one settings key into `layer`; false if `key` is not a settings key.
    fn settings_key(
        &mut self,
        layer: &mut SettingsLayer,
        path: &str,
        key: &str,
        value: &Value,
    ) -> bool {
        let at = child(path, key);
        match key {
            "rate" => layer.rate = self.rate(&at, value),
            "keys" => layer.keys = self.integer(&at, value, 1, MAX_KEYS),
            "value_size" => layer.value_size = self.value_size(&at, value),
            "ttl" => layer.ttl = self.duration(&at, value, Bound::AtLeast(MIN_TTL)),
            "connections" => layer.connections = self.integer(&at, value, 1, MAX_CONNECTIONS),
            "connect_probe_interval" => {
                layer.connect_probe_interval = self.duration(&at, value, Bound::Any);
            }
            "connect_timeout" => layer.connect_timeout = self.duration(&at, value, Bound::Positive),
            "response_timeout" => {
                layer.response_timeout = self.duration(&at, value, Bound::Positive)
            }
            "stale_grace" => layer.stale_grace = self.duration(&at, value, Bound::Any),
            "replication_timeout" => {
                layer.replication_timeout = self.duration(&at, value, Bound::Positive);
            }
            "backend_ttl" => layer.backend_ttl = self.duration(&at, value, Bound::Positive),
            "retry" => {
                if let Some(dict) = self.table(&at, value) {
                    for (key, value) in dict {
                        let at = child(&at, key);
                        match key.as_str() {
                            "max_retries" => {
                                layer.retry.max_retries = self.integer(&at, value, 0, MAX_RETRIES);
                            }
                            "base" => layer.retry.base = self.duration(&at, value, Bound::Positive),
                            "max" => layer.retry.max = self.duration(&at, value, Bound::Positive),
                            _ => self.unknown(&at, value, &[RETRY_KEYS]),
                        }
                    }
                }
            }
            "tls" => {
                if let Some(dict) = self.table(&at, value) {
                    let mut tls = TlsLayer::default();
                    for (key, value) in dict {
                        let at = child(&at, key);
                        let text = |this: &mut Self| this.text(&at, value).map(str::to_string);
                        match key.as_str() {
                            "ca_file" => tls.ca_file = text(self),
                            "cert_file" => tls.cert_file = text(self),
                            "key_file" => tls.key_file = text(self),
                            "server_name" => tls.server_name = text(self),
                            "insecure" => tls.insecure = self.boolean(&at, value),
                            _ => self.unknown(&at, value, &[TLS_KEYS]),
                        }
                    }
                    layer.tls = Some(tls);
                }
            }
            _ => return false,
        }
        true
    }

    fn slo_table(&mut self, path: &str, dict: &Dict) -> SloLayer {
        let mut slo = SloLayer::default();
        for (key, value) in dict {
            let at = child(path, key);
            match key.as_str() {
                "min_availability" => slo.min_availability = self.ratio(&at, value),
                "max_failed_operations" => {
                    slo.max_failed_operations = self.integer(&at, value, 0, MAX_COUNT);
                }
                "max_disruption" => slo.max_disruption = self.duration(&at, value, Bound::Any),
                "max_stale_reads" => slo.max_stale_reads = self.integer(&at, value, 0, MAX_COUNT),
                "max_missing_reads" => {
                    slo.max_missing_reads = self.integer(&at, value, 0, MAX_COUNT)
                }
                "max_corrupt_reads" => {
                    slo.max_corrupt_reads = self.integer(&at, value, 0, MAX_COUNT)
                }
                "p99_operation" => slo.p99_operation = self.duration(&at, value, Bound::Positive),
                _ => self.unknown(&at, value, &[SLO_KEYS]),
            }
        }
        slo
    }

    // --- reporting ----------------------------------------------------------------------

    /// Records a problem with `value`, masked if `key` names a secret, and says which
    /// environment variable or flag set it.
    fn report(&mut self, key: &str, value: &Value, message: impl fmt::Display) {
        let secret = is_secret_key(last_segment(key));
        self.report_shown(key, value, message, secret);
    }

    fn report_shown(&mut self, key: &str, value: &Value, message: impl fmt::Display, secret: bool) {
        let shown = if secret {
            mask_value(value)
        } else {
            render(value)
        };
        let hint = self.origin_hint(value);
        self.problems
            .push(ConfigProblem::new(key, shown, format!("{message}{hint}")));
    }

    fn unknown(&mut self, key: &str, value: &Value, known: &[&[&str]]) {
        let name = last_segment(key);
        let suggestion = known
            .iter()
            .flat_map(|keys| keys.iter())
            .map(|candidate| (edit_distance(name, candidate), *candidate))
            .filter(|(distance, _)| *distance <= 2)
            .min();
        // A misspelt `password` is still a password.
        let secret = is_secret_key(name)
            || suggestion.is_some_and(|(_, candidate)| is_secret_key(candidate));
        let message = match suggestion {
            Some((_, candidate)) => format!("unknown key (did you mean {}?)", quote(candidate)),
            None => "unknown key".to_string(),
        };
        self.report_shown(key, value, message, secret);
    }

    fn origin_hint(&self, value: &Value) -> String {
        let Some(metadata) = self.figment.get_metadata(value.tag()) else {
            return String::new();
        };
        match (
            metadata.name.as_ref(),
            metadata.source.as_ref().and_then(Source::custom),
        ) {
            (ENV_LAYER, Some(name)) => format!(" (from environment variable {name})"),
            (FLAG_LAYER, Some(flag)) => format!(" (from {flag})"),
            _ => String::new(),
        }
    }

    /// Environment variables carry text only: their values are read as the type the key needs.
    fn is_from_env(&self, value: &Value) -> bool {
        self.figment
            .get_metadata(value.tag())
            .is_some_and(|metadata| metadata.name == ENV_LAYER)
    }

    // --- typed values ---------------------------------------------------------------------

    fn table<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v Dict> {
        match value {
            Value::Dict(_, dict) => Some(dict),
            _ => {
                self.report(key, value, "expected a table");
                None
            }
        }
    }

    fn text<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::String(_, text) => Some(text),
            _ => {
                self.report(key, value, "expected a string");
                None
            }
        }
    }

    fn non_empty_text(&mut self, key: &str, value: &Value) -> Option<String> {
        match self.text(key, value)? {
            "" => {
                self.report(key, value, "must not be empty (leave the key out instead)");
                None
            }
            text => Some(text.to_string()),
        }
    }

    fn boolean(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(_, flag) => Some(*flag),
            Value::String(_, text) if self.is_from_env(value) && text.trim() == "true" => {
                Some(true)
            }
            Value::String(_, text) if self.is_from_env(value) && text.trim() == "false" => {
                Some(false)
            }
            _ => {
                self.report(key, value, "expected true or false");
                None
            }
        }
    }

    /// An integer in `min..=max`, converted to the field's type (which the bounds fit).
    fn integer<T: TryFrom<u64>>(
        &mut self,
        key: &str,
        value: &Value,
        min: u64,
        max: u64,
    ) -> Option<T> {
        let number: Option<i128> = match value {
            Value::Num(_, num) => num
                .to_u128()
                .and_then(|n| i128::try_from(n).ok())
                .or_else(|| num.to_i128()),
            Value::String(_, text) if self.is_from_env(value) => text.trim().parse().ok(),
            _ => None,
        };
        let in_range = number
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok());
        if in_range.is_none() {
            let expected = if max == MAX_COUNT {
                format!("expected an integer >= {min}")
            } else {
                format!("expected an integer from {min} to {max}")
            };
            self.report(key, value, expected);
        }
        in_range
    }

    /// A finite number, integer or not; `None` without reporting if it is not one.
    fn number(&self, value: &Value) -> Option<f64> {
        let number = match value {
            Value::Num(_, num) => num.to_f64().or_else(|| {
                num.to_u128()
                    .map(|n| n as f64)
                    .or_else(|| num.to_i128().map(|n| n as f64))
            }),
            Value::String(_, text) if self.is_from_env(value) => text.trim().parse().ok(),
            _ => None,
        };
        number.filter(|n: &f64| n.is_finite())
    }

    fn ratio(&mut self, key: &str, value: &Value) -> Option<f64> {
        let ratio = self.number(value).filter(|n| (0.0..=1.0).contains(n));
        if ratio.is_none() {
            self.report(key, value, "expected a number from 0.0 to 1.0");
        }
        ratio
    }

    fn rate(&mut self, key: &str, value: &Value) -> Option<Rate> {
        if let Value::String(_, text) = value
            && text.trim() == "max"
        {
            return Some(Rate::Max);
        }
        match self.number(value) {
            Some(rate) if rate > 0.0 && rate <= MAX_RATE => Some(Rate::PerSecond(rate)),
            Some(rate) if rate > MAX_RATE => {
                self.report(
                    key,
                    value,
                    format!("must be at most {MAX_RATE} operations per second (or \"max\")"),
                );
                None
            }
            _ => {
                self.report(key, value, "expected a number > 0 or \"max\"");
                None
            }
        }
    }

    fn value_size(&mut self, key: &str, value: &Value) -> Option<usize> {
        let size: u64 = self.integer(key, value, 0, MAX_COUNT)?;
        if size < VALUE_HEADER_SIZE as u64 {
            self.report(
                key,
                value,
                format!("must be at least {VALUE_HEADER_SIZE} bytes, the size of the value header"),
            );
            None
        } else if size > MAX_VALUE_SIZE {
            self.report(
                key,
                value,
                format!("must be at most {MAX_VALUE_SIZE} bytes (1 MiB)"),
            );
            None
        } else {
            usize::try_from(size).ok()
        }
    }

    fn duration(&mut self, key: &str, value: &Value, bound: Bound) -> Option<Duration> {
        let text = match value {
            Value::String(_, text) => text,
            Value::Num(..) => {
                self.report(
                    key,
                    value,
                    "expected a duration string such as \"500ms\" (a bare number has no unit)",
                );
                return None;
            }
            _ => {
                self.report(key, value, "expected a duration string such as \"500ms\"");
                return None;
            }
        };
        let duration = match parse_duration(text) {
            Ok(duration) => duration,
            Err(message) => {
                self.report(key, value, message);
                return None;
            }
        };
        let problem = match bound {
            _ if duration > MAX_DURATION => Some(format!("must be at most {MAX_DURATION_TEXT}")),
            Bound::Positive if duration.is_zero() => Some("must be greater than 0s".to_string()),
            Bound::AtLeast(min) if duration < min => Some(format!(
                "must be at least {}",
                humantime::format_duration(min)
            )),
            _ => None,
        };
        match problem {
            Some(message) => {
                self.report(key, value, message);
                None
            }
            None => Some(duration),
        }
    }

    fn url(&mut self, key: &str, value: &Value) -> Option<ParsedUrl> {
        let text = self.text(key, value)?;
        match parse_url(text) {
            Ok(url) => Some(url),
            Err(error) => {
                self.report(key, value, error);
                None
            }
        }
    }
}

/// A humantime duration such as `"250ms"` or `"1h30m"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("expected a duration such as \"500ms\" or \"1h30m\": {error}"))
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `"targets[0].nodes[1]"` → `"nodes"`.
fn last_segment(key: &str) -> &str {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.split('[').next().unwrap_or(last)
}

/// `[a-z0-9_-]{1,63}`: the `target` label and part of the key prefix.
fn is_target_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[A-Za-z0-9._-]{1,63}`: fits a hostname, a pod name and a key prefix.
fn is_instance_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_http_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Keys whose values are secrets. `password_file` and `password_env` hold a path and a
/// variable name, which are not.
fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(name.ends_with("_file") || name.ends_with("_env"))
        && ["pass", "pwd", "secret", "token", "credential"]
            .iter()
            .any(|word| name.contains(word))
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------
// Showing values
// ---------------------------------------------------------------------------------------

/// A string as a TOML basic string.
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest value shown in a problem; a whole misplaced table is not worth more.
const MAX_SHOWN: usize = 200;

/// A value as TOML-like text for a problem, with URL passwords and secret keys masked.
fn render(value: &Value) -> String {
    let mut text = String::new();
    render_into(&mut text, value);
    if text.chars().count() > MAX_SHOWN {
        text = text.chars().take(MAX_SHOWN).collect::<String>() + "…";
    }
    text
}

fn render_into(out: &mut String, value: &Value) {
    match value {
        Value::String(_, text) => out.push_str(&quote(&mask_url_text(text))),
        Value::Char(_, c) => out.push_str(&quote(&c.to_string())),
        Value::Bool(_, flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Num(_, num) => {
            let text = num
                .to_u128()
                .map(|n| n.to_string())
                .or_else(|| num.to_i128().map(|n| n.to_string()))
                .or_else(|| num.to_f64().map(|n| n.to_string()))
                .unwrap_or_default();
            out.push_str(&text);
        }
        Value::Empty(..) => {}
        Value::Array(_, items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render_into(out, item);
            }
            out.push(']');
        }
        Value::Dict(_, dict) => {
            out.push_str("{ ");
            for (index, (key, item)) in dict.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push_str(" = ");
                if is_secret_key(key) {
                    out.push_str(&mask_value(item));
                } else {
                    render_into(out, item);
                }
            }
            out.push_str(" }");
        }
    }
}

/// A secret value as shown: masked, unless it is empty (nothing to hide, and telling).
fn mask_value(value: &Value) -> String {
    match value {
        Value::String(_, text) if text.is_empty() => "\"\"".to_string(),
        _ => quote(MASK),
    }
}

/// Masks the password of anything URL-like (`scheme://user:password@host...`), even when it
/// does not parse, for showing user input in problems.
fn mask_url_text(text: &str) -> String {
    let start = text.find("://").map_or(0, |at| at + 3);
    let rest = &text[start..];
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:{MASK}{}", &text[..start], &rest[..colon], &rest[at..]),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Redis URLs
// ---------------------------------------------------------------------------------------

/// A URL that is not a valid `redis://` or `rediss://` URL; the message never contains its
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUrl(String);

struct ParsedUrl {
    url: RedisUrl,
    /// Whether the URL named its database (nodes must then name the target's).
    db_given: bool,
}

impl FromStr for RedisUrl {
    type Err = InvalidUrl;

    /// Parses `redis://[user:password@]host[:port][/db]` or `rediss://...`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_url(text).map(|parsed| parsed.url)
    }
}

fn parse_url(text: &str) -> Result<ParsedUrl, InvalidUrl> {
    let fail = |message: String| Err(InvalidUrl(message));
    let Some((scheme, rest)) = text.split_once("://") else {
        return fail("expected redis://host:port or rediss://host:port".into());
    };
    let tls = if scheme.eq_ignore_ascii_case("redis") {
        false
    } else if scheme.eq_ignore_ascii_case("rediss") {
        true
    } else {
        return fail(format!(
            "unsupported scheme {}: expected redis or rediss (tls)",
            quote(scheme)
        ));
    };

    // The last '@' ends the credentials, so that an unencoded '@' or '/' in a password
    // still parses.
    let (userinfo, location) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (authority, path) = match location.find('/') {
        Some(slash) => (&location[..slash], Some(&location[slash + 1..])),
        None => (location, None),
    };
    if location.contains(['?', '#']) {
        return fail("query parameters and fragments are not supported".into());
    }

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return fail("missing ] after the ipv6 address".into());
        };
        let Ok(address) = address.parse::<Ipv6Addr>() else {
            return fail(format!("invalid ipv6 address {}", quote(address)));
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return fail("expected :port after the ipv6 address".into()),
            },
        };
        (address.to_string(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.contains(':') {
            return fail("an ipv6 address must be in brackets, e.g. redis://[::1]:6379".into());
        }
        check_host(host).map_err(InvalidUrl)?;
        (host.to_string(), port)
    };
    let port = match port {
        None => DEFAULT_REDIS_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return fail(format!("invalid port {}: expected 1 to 65535", quote(port))),
        },
    };

    let (db, db_given) = match path {
        None | Some("") => (0, false),
        Some(db) => match db.parse::<u32>() {
            Ok(db) if db <= MAX_DB => (db, true),
            _ => {
                return fail(format!(
                    "invalid database {}: expected an integer from 0 to {MAX_DB}",
                    quote(db)
                ));
            }
        },
    };

    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user =
                percent_decode(user).map_err(|message| InvalidUrl(format!("user: {message}")))?;
            let password = password
                .map(percent_decode)
                .transpose()
                .map_err(|message| InvalidUrl(format!("password: {message}")))?;
            (
                Some(user).filter(|user| !user.is_empty()),
                password.filter(|p| !p.is_empty()).map(Secret::new),
            )
        }
    };

    Ok(ParsedUrl {
        url: RedisUrl {
            tls,
            host,
            port,
            username,
            password,
            db,
        },
        db_given,
    })
}

/// A DNS name or an IPv4 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host".into());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(drop)
            .map_err(|_| format!("invalid ipv4 address {}", quote(host)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("invalid host {}", quote(host)))
    }
}

/// Decodes `%XX` escapes; the message never repeats the text (it may be a password).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("invalid percent-encoding (expected %XX)")?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "percent-encoding does not decode to utf-8".to_string())
}

/// Escapes what would otherwise end the user part of a URL.
fn percent_encode_user(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl RedisUrl {
    /// `host:port`, with brackets around an IPv6 address (`[::1]:6379`): for connecting and
    /// for the `node` label, never carrying credentials.
    pub fn host_port(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RedisUrl {
    /// `redis://user:****@host:port/db`: the password is always masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        if let Some(user) = &self.username {
            f.write_str(&percent_encode_user(user))?;
        }
        if self.password.is_some() {
            write!(f, ":{MASK}")?;
        }
        if self.username.is_some() || self.password.is_some() {
            f.write_str("@")?;
        }
        write!(f, "{}/{}", self.host_port(), self.db)
    }
}

impl PasswordSource {
    /// The password now: a file or variable is read at every call (every connect), so a
    /// rotated password is picked up. One trailing newline is trimmed from a file.
    pub fn resolve(&self) -> Result<Option<Secret>, std::io::Error> {
        match self {
            Self::None => Ok(None),
            Self::Inline(secret) => Ok(Some(secret.clone())),
            Self::File(path) => {
                let mut text = std::fs::read_to_string(path).map_err(|error| {
                    std::io::Error::new(
                        error.kind(),
                        format!("cannot read password_file {}: {error}", path.display()),
                    )
                })?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Ok(Some(Secret::new(text)))
            }
            Self::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(Some(Secret::new(value))),
                Err(error) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("password_env {name}: {error}"),
                )),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Printing the effective configuration
// ---------------------------------------------------------------------------------------

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::PerSecond(rate) => serializer.serialize_f64(*rate),
            Self::Max => serializer.serialize_str("max"),
        }
    }
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// The effective configuration in the shape of the file, so that it loads back.
#[derive(Serialize)]
struct ConfigView<'a> {
    listen: String,
    instance: &'a str,
    log_format: LogFormat,
    cleanup: bool,
    telemetry: TelemetryView<'a>,
    targets: Vec<TargetView<'a>>,
}

#[derive(Serialize)]
struct TelemetryView<'a> {
    otlp_endpoint: &'a str,
    sample_ratio: f64,
}

#[derive(Serialize)]
struct TargetView<'a> {
    name: &'a str,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_env: Option<&'a str>,
    nodes: Vec<String>,
    key_prefix: &'a str,
    #[serde(flatten)]
    settings: &'a Settings,
    slo: &'a Slo,
}

impl Config {
    /// The effective configuration as TOML: every default filled in, every target fully
    /// resolved, secrets shown as `"****"` (a `password_file` path and a `password_env`
    /// name are shown: they are not secrets). It loads back as the same configuration, bar
    /// the masked passwords.
    pub fn to_masked_toml(&self) -> String {
        let view = ConfigView {
            listen: self.listen.to_string(),
            instance: &self.instance,
            log_format: self.log_format,
            cleanup: self.cleanup,
            telemetry: TelemetryView {
                otlp_endpoint: self.telemetry.otlp_endpoint.as_deref().unwrap_or(""),
                sample_ratio: self.telemetry.sample_ratio,
            },
            targets: self.targets.iter().map(TargetView::from).collect(),
        };
        let body = toml::to_string(&view)
            .expect("the effective configuration is plain strings, numbers and tables");
        let mut text = String::from("# effective configuration, secrets masked\n");
        if !self.ignored_env.is_empty() {
            text.push_str(&format!(
                "# ignored environment variables: {}\n",
                self.ignored_env.join(", ")
            ));
        }
        text.push_str(&body);
        text
    }
}

impl<'a> From<&'a Target> for TargetView<'a> {
    fn from(target: &'a Target) -> Self {
        let (password, password_file, password_env) = match &target.password {
            // A password from the URL is already masked in the URL.
            PasswordSource::Inline(_) if target.url.password.is_some() => (None, None, None),
            PasswordSource::Inline(_) => (Some(MASK), None, None),
            PasswordSource::File(path) => (None, Some(path.as_path()), None),
            PasswordSource::Env(name) => (None, None, Some(name.as_str())),
            PasswordSource::None => (None, None, None),
        };
        Self {
            name: &target.name,
            url: target.url.to_string(),
            username: target.username.as_deref(),
            password,
            password_file,
            password_env,
            nodes: target.nodes.iter().map(ToString::to_string).collect(),
            key_prefix: &target.key_prefix,
            settings: &target.settings,
            slo: &target.slo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> RedisUrl {
        text.parse()
            .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
    }

    fn url_error(text: &str) -> String {
        match text.parse::<RedisUrl>() {
            Ok(url) => panic!("{text} should not parse, got {url:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn load_toml(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        load_layers(
            Some((Path::new("test.toml"), toml)),
            &CommonArgs::default(),
            &env,
        )
    }

    fn problems(toml: &str) -> Vec<ConfigProblem> {
        match load_toml(toml, &[]) {
            Ok(config) => panic!("should be rejected: {config:?}"),
            Err(errors) => errors.0,
        }
    }

    const ONE_TARGET: &str = "[[targets]]\nname = \"a\"\nurl = \"redis://h:6379\"\n";

    #[test]
    fn a_url_without_port_uses_6379_and_db_0() {
        let parsed = url("redis://cache.svc");
        assert_eq!(
            parsed,
            RedisUrl {
                tls: false,
                host: "cache.svc".into(),
                port: 6379,
                username: None,
                password: None,
                db: 0,
            }
        );
        assert_eq!(parsed.host_port(), "cache.svc:6379");
    }

    #[test]
    fn rediss_means_tls_and_the_path_is_the_database() {
        let parsed = url("rediss://10.0.0.1:6380/15");
        assert!(parsed.tls);
        assert_eq!(parsed.host, "10.0.0.1");
        assert_eq!(parsed.port, 6380);
        assert_eq!(parsed.db, 15);
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_urls_and_stored_without_brackets() {
        let parsed = url("redis://[::1]:7000/2");
        assert_eq!(parsed.host, "::1");
        assert_eq!(parsed.port, 7000);
        assert_eq!(parsed.host_port(), "[::1]:7000");
        assert_eq!(parsed.to_string(), "redis://[::1]:7000/2");
        assert_eq!(url("redis://[fe80::1]").port, 6379);
        assert!(url_error("redis://::1:6379").contains("brackets"));
        assert!(url_error("redis://[::1:6379").contains("]"));
        assert!(url_error("redis://[zz::1]:6379").contains("ipv6"));
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let parsed = url("redis://can%40ary:p%40ss%3Aw%2Frd@h:1");
        assert_eq!(parsed.username.as_deref(), Some("can@ary"));
        assert_eq!(
            parsed.password.as_ref().map(Secret::expose),
            Some("p@ss:w/rd")
        );
        let only_password = url("redis://:s3cret@h");
        assert_eq!(only_password.username, None);
        assert_eq!(
            only_password.password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        let unencoded = url("redis://u:a@b/c@h:1/3");
        assert_eq!(
            unencoded.password.as_ref().map(Secret::expose),
            Some("a@b/c")
        );
        assert_eq!(unencoded.db, 3);
        assert!(url_error("redis://u:bad%zzsecret@h").contains("percent"));
        assert!(!url_error("redis://u:bad%zzsecret@h").contains("secret"));
    }

    #[test]
    fn bad_schemes_ports_hosts_and_databases_are_rejected() {
        assert!(url_error("http://h:6379").contains("unsupported scheme \"http\""));
        assert!(url_error("h:6379").contains("redis://"));
        assert!(url_error("redis://h:0").contains("invalid port \"0\""));
        assert!(url_error("redis://h:65536").contains("invalid port \"65536\""));
        assert!(url_error("redis://h:").contains("invalid port \"\""));
        assert!(url_error("redis://h:x1").contains("invalid port"));
        assert!(url_error("redis://h:1/16").contains("invalid database \"16\""));
        assert!(url_error("redis://h:1/a").contains("invalid database"));
        assert!(url_error("redis://:1").contains("missing host"));
        assert!(url_error("redis://300.1.1.1").contains("invalid ipv4"));
        assert!(url_error("redis://bad host").contains("invalid host"));
        assert!(url_error("redis://h:1?protocol=resp3").contains("query"));
    }

    #[test]
    fn display_and_debug_of_a_url_never_contain_the_password() {
        let parsed = url("redis://canary:hunter2@h:6379/1");
        assert_eq!(parsed.to_string(), "redis://canary:****@h:6379/1");
        assert!(!format!("{parsed:?}").contains("hunter2"));
        assert_eq!(
            url("redis://:hunter2@h").to_string(),
            "redis://:****@h:6379/0"
        );
        assert_eq!(url("redis://u%3Ax@h").to_string(), "redis://u%3Ax@h:6379/0");
        let target_debug = format!("{:?}", PasswordSource::Inline(Secret::new("hunter2")));
        assert!(!target_debug.contains("hunter2"));
    }

    #[test]
    fn url_like_text_in_problems_is_masked_even_when_it_does_not_parse() {
        assert_eq!(mask_url_text("http://u:hunter2@h"), "http://u:****@h");
        assert_eq!(
            mask_url_text("a=redis://u:hunter2@h:x"),
            "a=redis://u:****@h:x"
        );
        assert_eq!(mask_url_text("a=u:hunter2@h"), "a=u:****@h");
        assert_eq!(mask_url_text("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_url_text("redis://user@h"), "redis://user@h");
    }

    #[test]
    fn durations_parse_with_humantime() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn a_number_where_a_duration_belongs_is_rejected_with_a_hint() {
        let problems = problems(&format!("[defaults]\nresponse_timeout = 500\n{ONE_TARGET}"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "defaults.response_timeout");
        assert_eq!(problems[0].value, "500");
        assert!(
            problems[0].message.contains("\"500ms\""),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn duration_bounds_are_enforced() {
        let problems = problems(&format!(
            "[defaults]\nttl = \"500ms\"\nconnect_timeout = \"0s\"\nstale_grace = \"0s\"\nbackend_ttl = \"400days\"\n{ONE_TARGET}"
        ));
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "defaults.backend_ttl",
                "defaults.connect_timeout",
                "defaults.ttl"
            ]
        );
        assert!(problems[2].message.contains("at least 1s"));
    }

    #[test]
    fn secret_values_are_masked_in_problems() {
        let problems = problems(
            "[[targets]]\nname = \"a\"\nurl = \"redis://u:hunter2@h:99999\"\npassword = 42\npasword = \"hunter3\"\n",
        );
        let text = ConfigErrors(problems.clone()).to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
        assert!(text.contains("targets[0].password = \"****\""), "{text}");
        assert!(text.contains("did you mean \"password\"?"), "{text}");
        assert!(text.contains("redis://u:****@h:99999"), "{text}");
    }

    #[test]
    fn environment_text_is_read_as_the_type_the_key_needs() {
        let config = load_toml(
            ONE_TARGET,
            &[
                ("REDIS_CANARY_INSTANCE", "007"),
                ("REDIS_CANARY_CLEANUP", "true"),
                ("REDIS_CANARY_DEFAULTS__KEYS", "50"),
                ("REDIS_CANARY_SLO__MIN_AVAILABILITY", "0.99"),
                ("REDIS_CANARY_DEFAULTS__RATE", "max"),
            ],
        )
        .expect("valid");
        assert_eq!(config.instance, "007");
        assert!(config.cleanup);
        assert_eq!(config.targets[0].settings.keys, 50);
        assert_eq!(config.targets[0].settings.rate, Rate::Max);
        assert_eq!(config.targets[0].slo.min_availability, 0.99);
    }

    #[test]
    fn a_bad_environment_value_names_its_variable() {
        let errors = load_toml(ONE_TARGET, &[("REDIS_CANARY_DEFAULTS__RATE", "fast")])
            .expect_err("rejected");
        assert_eq!(
            errors.to_string(),
            "invalid configuration: defaults.rate = \"fast\": expected a number > 0 or \"max\" \
             (from environment variable REDIS_CANARY_DEFAULTS__RATE)"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_one_problem_with_line_and_column() {
        let problems = problems("listen = \"x\"\nrate = [1,\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "--config");
        assert_eq!(problems[0].value, "\"test.toml\"");
        assert!(
            problems[0].message.contains("line 2, column 11"),
            "{}",
            problems[0].message
        );
        assert!(!problems[0].message.contains('\n'));
    }

    #[test]
    fn retry_max_below_base_and_half_a_client_certificate_are_rejected() {
        let problems = problems(&format!(
            "[defaults]\nretry = {{ base = \"2s\", max = \"1s\" }}\n{ONE_TARGET}tls = {{ cert_file = \"/c.pem\" }}\n"
        ));
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["defaults.retry.max", "targets[0].tls.cert_file"]);
    }

    #[test]
    fn target_overrides_merge_key_by_key_into_the_defaults() {
        let config = load_toml(
            &format!(
                "[defaults]\nretry = {{ max_retries = 2, base = \"50ms\" }}\ntls = {{ ca_file = \"/ca.pem\" }}\n\
                 [slo]\nmax_stale_reads = 3\n{ONE_TARGET}retry = {{ max = \"1s\" }}\ntls = {{ server_name = \"s\" }}\nslo = {{ p99_operation = \"10ms\" }}\n"
            ),
            &[],
        )
        .expect("valid");
        let target = &config.targets[0];
        assert_eq!(
            target.settings.retry,
            RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(50),
                max: Duration::from_secs(1)
            }
        );
        let tls = target.settings.tls.as_ref().expect("tls configured");
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("s"));
        assert_eq!(target.slo.max_stale_reads, 3);
        assert_eq!(target.slo.p99_operation, Duration::from_millis(10));
    }

    #[test]
    fn nodes_inherit_the_targets_database_and_may_not_carry_credentials() {
        let config = load_toml(
            "[[targets]]\nname = \"a\"\nurl = \"redis://h/3\"\nnodes = [\"redis://n1\", \"redis://n2:7000/3\"]\n",
            &[],
        )
        .expect("valid");
        let dbs: Vec<u32> = config.targets[0].nodes.iter().map(|n| n.db).collect();
        assert_eq!(dbs, [3, 3]);
        let problems = problems(
            "[[targets]]\nname = \"a\"\nurl = \"redis://h/3\"\nnodes = [\"redis://u:pw@n1\", \"redis://n2/4\"]\n",
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["targets[0].nodes[0]", "targets[0].nodes[1]"]);
    }

    #[test]
    fn password_sources_resolve_at_call_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").expect("write");
        let source = PasswordSource::File(file.clone());
        assert_eq!(
            source
                .resolve()
                .expect("readable")
                .map(|s| s.expose().to_string())
                .as_deref(),
            Some("from-file")
        );
        std::fs::write(&file, "rotated\r\n\n").expect("write");
        assert_eq!(
            source
                .resolve()
                .expect("readable")
                .map(|s| s.expose().to_string())
                .as_deref(),
            Some("rotated\r\n")
        );
        std::fs::remove_file(&file).expect("remove");
        assert!(source.resolve().is_err());
        assert_eq!(PasswordSource::None.resolve().expect("none"), None);
        let missing = PasswordSource::Env("REDIS_CANARY_TEST_SURELY_UNSET_VARIABLE".into());
        assert_eq!(
            missing.resolve().expect_err("unset").kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn unknown_variables_are_collected_by_name_and_take_no_part() {
        // main logs them once, by name, after logging is set up (tests/cli.rs checks that).
        let config = load_toml(
            ONE_TARGET,
            &[
                ("REDIS_CANARY_PORT", "tcp://10.9.8.7:9736"),
                ("REDIS_CANARY_SERVICE_HOST", "10.9.8.7"),
                ("REDIS_CANARY_LISTEN", "127.0.0.1:0"),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.ignored_env,
            ["REDIS_CANARY_PORT", "REDIS_CANARY_SERVICE_HOST"]
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("rate", "rate"), 0);
        assert_eq!(edit_distance("rat", "rate"), 1);
        assert_eq!(edit_distance("pasword", "password"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
