//! Checking the merged tree, top down: the top-level keys, `[telemetry]`, and every target
//! (name, URL, credentials, nodes, key prefix), with the checks across targets (unique names,
//! key prefixes kept apart). Settings tables are read in [`super::settings`], single values
//! in [`super::values`], targets in `targets`. Every problem is recorded and the walk goes
//! on.

use std::net::SocketAddr;

use figment::Figment;
use figment::value::Dict;

use super::problems::{ConfigProblem, quote};
use super::settings::SettingsLayer;
use super::settings::SloLayer;
use super::{
    Config, DEFAULT_LISTEN, LogFormat, Settings, Slo, TELEMETRY_KEYS, TOP_LEVEL_KEYS, Telemetry,
};

mod targets;

/// The variable read when `telemetry.otlp_endpoint` is empty, as every OpenTelemetry SDK does.
const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Instance name used when neither the configuration nor the hostname gives one.
const FALLBACK_INSTANCE: &str = "redis-canary";

/// Walks the merged tree, turns it into a [`Config`] and records every problem on the way.
/// Bad values are replaced by their defaults so that the walk goes on; the config is thrown
/// away if any problem was recorded.
pub(super) struct Checker<'a> {
    pub(super) figment: &'a Figment,
    pub(super) env: &'a [(String, String)],
    pub(super) problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    pub(super) fn config(
        &mut self,
        tree: &Dict,
        ignored_env: Vec<String>,
        target_flags_failed: bool,
    ) -> Config {
        let mut listen = DEFAULT_LISTEN;
        let mut instance = None;
        let mut log_format = LogFormat::Text;
        let mut cleanup = false;
        let mut shard = None;
        let mut metrics_profile = crate::metrics::MetricsProfile::default();
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
                "shard" => {
                    if let Some(text) = self.text(key, value) {
                        match crate::fleet::Shard::parse(text, || self.hostname()) {
                            Ok(s) => shard = Some(s),
                            Err(message) => self.report(key, value, message),
                        }
                    }
                }
                "metrics_profile" => {
                    if let Some(text) = self.text(key, value) {
                        match crate::metrics::MetricsProfile::parse(text) {
                            Some(profile) => metrics_profile = profile,
                            None => self.report(key, value, "expected \"full\" or \"lean\""),
                        }
                    }
                }
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
            shard,
            metrics_profile,
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
}

pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `"targets[0].nodes[1]"` → `"nodes"`.
pub(super) fn last_segment(key: &str) -> &str {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.split('[').next().unwrap_or(last)
}

/// `[a-z0-9_-]{1,63}`: the `target` label and part of the key prefix.
pub(super) fn is_target_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[A-Za-z0-9._-]{1,63}`: fits a hostname, a pod name and a key prefix.
pub(super) fn is_instance_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn is_http_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
