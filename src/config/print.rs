//! `check-config`'s output: the effective configuration as TOML in the shape of the file,
//! every default filled in, every target fully resolved, secrets masked, so that it loads
//! back as the same configuration (bar the masked passwords).

use std::path::Path;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::problems::escape_controls;
use super::{Config, LogFormat, Mode, PasswordSource, Protocol, Rate, Settings, Slo, Target};
use crate::secret::MASK;

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::PerSecond(rate) => serializer.serialize_f64(*rate),
            Self::Max => serializer.serialize_str("max"),
        }
    }
}

impl Serialize for Protocol {
    /// As written in the file: `protocol = 2` or `3`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.version())
    }
}

pub(super) fn serialize_duration<S: Serializer>(
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
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    metrics_profile: crate::metrics::MetricsProfile,
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
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(flatten)]
    sentinel: Option<SentinelView<'a>>,
    #[serde(flatten)]
    cluster: Option<ClusterView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_env: Option<&'a str>,
    nodes: NodesView,
    key_prefix: &'a str,
    #[serde(flatten)]
    settings: &'a Settings,
    slo: &'a Slo,
}

/// `nodes`: a list, `"auto"` (sentinel targets), or a `dns://` / `dns+srv://` source.
#[derive(Serialize)]
#[serde(untagged)]
enum NodesView {
    List(Vec<String>),
    Text(String),
}

/// The sentinel keys of a `mode = "sentinel"` target, secrets masked.
#[derive(Serialize)]
struct SentinelView<'a> {
    sentinels: Vec<String>,
    master_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinel_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinel_password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinel_password_file: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sentinel_password_env: Option<&'a str>,
    #[serde(serialize_with = "serialize_duration")]
    sentinel_refresh: &'a Duration,
}

/// The cluster keys of a `mode = "cluster"` target (a single seed prints as `url`).
#[derive(Serialize)]
struct ClusterView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seeds: Option<Vec<String>>,
    #[serde(serialize_with = "serialize_duration")]
    cluster_refresh: &'a Duration,
}

/// A password source as the three keys that name it, the inline one masked. `in_url`: a
/// password given in a URL is masked there already and not repeated.
fn password_keys(
    source: &PasswordSource,
    in_url: bool,
) -> (Option<&'static str>, Option<&Path>, Option<&str>) {
    match source {
        PasswordSource::Inline(_) if in_url => (None, None, None),
        PasswordSource::Inline(_) => (Some(MASK), None, None),
        PasswordSource::File(path) => (None, Some(path.as_path()), None),
        PasswordSource::Env(name) => (None, None, Some(name.as_str())),
        PasswordSource::None => (None, None, None),
    }
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
            shard: self.shard.map(|s| s.to_string()),
            metrics_profile: self.metrics_profile,
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
                escape_controls(&self.ignored_env.join(", "))
            ));
        }
        text.push_str(&body);
        text
    }
}

impl Config {
    /// Comment lines for `check-config`: every `password_file` or `password_env` (a target's
    /// or its sentinels') that cannot be read here and now. The configuration is still valid
    /// (the secret may only exist where the canary runs), but where it runs every operation
    /// would fail as `auth` until it can be read. The lines name the file or variable, never
    /// a password.
    pub fn password_warnings(&self) -> String {
        let mut text = String::new();
        for (i, t) in self.targets.iter().enumerate() {
            let mut sources = vec![("password", &t.password)];
            if let Mode::Sentinel(s) = &t.mode {
                sources.push(("sentinel password", &s.password));
            }
            for (what, source) in sources {
                if let Err(e) = source.resolve() {
                    text.push_str(&format!(
                        "# warning: targets[{i}] ({}): {what} cannot be read here: {}; every \
                         operation fails as auth until it can\n",
                        escape_controls(&t.name),
                        escape_controls(&e.to_string()),
                    ));
                }
            }
        }
        text
    }
}

impl<'a> From<&'a Target> for TargetView<'a> {
    fn from(target: &'a Target) -> Self {
        // A password from the URL is already masked in the URL.
        let (password, password_file, password_env) =
            password_keys(&target.password, target.url.password.is_some());
        let mut cluster = None;
        let (mode, url, sentinel, nodes_auto) = match &target.mode {
            Mode::Standalone => ("standalone", Some(target.url.to_string()), None, false),
            Mode::Cluster(c) => {
                let many = c.seeds.len() > 1;
                cluster = Some(ClusterView {
                    seeds: many.then(|| c.seeds.iter().map(ToString::to_string).collect()),
                    cluster_refresh: &c.refresh,
                });
                (
                    "cluster",
                    (!many).then(|| target.url.to_string()),
                    None,
                    c.nodes_auto,
                )
            }
            Mode::Sentinel(s) => {
                let in_url = s.sentinels.iter().any(|u| u.password.is_some());
                let (sentinel_password, sentinel_password_file, sentinel_password_env) =
                    password_keys(&s.password, in_url);
                let view = SentinelView {
                    sentinels: s.sentinels.iter().map(ToString::to_string).collect(),
                    master_name: &s.master_name,
                    sentinel_username: s.username.as_deref(),
                    sentinel_password,
                    sentinel_password_file,
                    sentinel_password_env,
                    sentinel_refresh: &s.refresh,
                };
                ("sentinel", None, Some(view), s.nodes_auto)
            }
        };
        Self {
            name: &target.name,
            mode,
            url,
            sentinel,
            cluster,
            username: target.username.as_deref(),
            password,
            password_file,
            password_env,
            nodes: if nodes_auto {
                NodesView::Text("auto".into())
            } else if let Some(found) = &target.discovery {
                NodesView::Text(found.to_string())
            } else {
                NodesView::List(target.nodes.iter().map(ToString::to_string).collect())
            },
            key_prefix: &target.key_prefix,
            settings: &target.settings,
            slo: &target.slo,
        }
    }
}
