//! `check-config`'s output: the effective configuration as TOML in the shape of the file,
//! every default filled in, every target fully resolved, secrets masked, so that it loads
//! back as the same configuration (bar the masked passwords).

use std::path::Path;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::problems::escape_controls;
use super::{Config, LogFormat, PasswordSource, Protocol, Rate, Settings, Slo, Target};
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
                escape_controls(&self.ignored_env.join(", "))
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
