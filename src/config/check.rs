//! Checking the merged tree, top down: the top-level keys, `[telemetry]`, and every target
//! (name, URL, credentials, nodes, key prefix), with the checks across targets (unique names,
//! key prefixes kept apart). Settings tables are read in [`super::settings`], single values
//! in [`super::values`]. Every problem is recorded and the walk goes on.

use std::net::SocketAddr;

use figment::Figment;
use figment::value::{Dict, Value};

use super::cluster::ClusterLayer;
use super::discovery::{is_dns_text, parse_node_discovery};
use super::problems::{ConfigProblem, quote};
use super::sentinel::{ModeKind, SentinelLayer, data_url};
use super::settings::SettingsLayer;
use super::settings::SloLayer;
use super::url::ParsedUrl;
use super::{
    Config, DEFAULT_KEY_PREFIX, DEFAULT_LISTEN, LogFormat, Mode, PasswordSource, SETTINGS_KEYS,
    Settings, Slo, TARGET_KEYS, TELEMETRY_KEYS, TOP_LEVEL_KEYS, Target, Telemetry,
};
use crate::secret::Secret;

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

/// What a target contributes to the checks across targets, even when it is not valid itself.
struct TargetParts {
    name: Option<String>,
    key_prefix: Option<String>,
    target: Option<Target>,
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
        let mut mode = ModeKind::default();
        let mut sentinel = SentinelLayer::default();
        let mut cluster = ClusterLayer::default();
        let mut nodes_auto: Option<(String, &Value)> = None;
        let mut discovery = None;

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
                "mode" => mode = self.mode(&at, value).unwrap_or(mode),
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
                    Value::String(_, text) if text == "auto" => nodes_auto = Some((at, value)),
                    Value::String(_, text) if is_dns_text(text) => {
                        match parse_node_discovery(text.trim()) {
                            Ok(found) => discovery = Some(found),
                            Err(message) => self.report(&at, value, message),
                        }
                    }
                    _ => self.report(
                        &at,
                        value,
                        "expected an array of urls, \"auto\", \"dns://NAME:PORT\" or \"dns+srv://_SERVICE._tcp.NAME\"",
                    ),
                },
                "key_prefix" => key_prefix = self.text(&at, value).map(|text| (text, value)),
                "slo" => {
                    if let Some(table) = self.table(&at, value) {
                        slo = self.slo_table(&at, table);
                    }
                }
                _ => {
                    if !self.sentinel_key(&mut sentinel, path, key, value)
                        && !self.cluster_key(&mut cluster, path, key, value)
                        && !self.settings_key(&mut settings, path, key, value)
                    {
                        self.unknown(&at, value, &[TARGET_KEYS, SETTINGS_KEYS]);
                    }
                }
            }
        }
        if !dict.contains_key("name") {
            self.problems.push(ConfigProblem::new(
                child(path, "name"),
                "",
                "missing: every target needs a name and a url",
            ));
        }
        let is_cluster = mode == ModeKind::Cluster;
        let mode = match mode {
            ModeKind::Standalone => {
                if !dict.contains_key("url") {
                    self.problems.push(ConfigProblem::new(
                        child(path, "url"),
                        "",
                        "missing: every target needs a name and a url",
                    ));
                }
                self.no_sentinel_keys(&sentinel);
                self.no_cluster_keys(&cluster);
                if let Some((at, value)) = &nodes_auto {
                    self.report(
                        at,
                        value,
                        "\"auto\" is only for mode = \"sentinel\" or \"cluster\": list the nodes",
                    );
                }
                Some(Mode::Standalone)
            }
            ModeKind::Cluster => {
                self.no_sentinel_keys(&sentinel);
                self.cluster_target(
                    path,
                    cluster,
                    &mut url,
                    dict.get("url"),
                    nodes_auto.is_some(),
                )
                .map(Mode::Cluster)
            }
            ModeKind::Sentinel => {
                self.no_cluster_keys(&cluster);
                if let Some(value) = dict.get("url") {
                    self.report(
                        &child(path, "url"),
                        value,
                        "a sentinel target finds its master through the sentinels: remove url",
                    );
                }
                self.sentinel_target(path, sentinel, nodes_auto.is_some())
                    .map(Mode::Sentinel)
            }
        };
        if let Some(Mode::Sentinel(s)) = &mode {
            url = Some(ParsedUrl {
                url: data_url(s),
                db_given: false,
            });
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

        let key_prefix_value = key_prefix.map(|(_, value)| value);
        let key_prefix = match &name {
            Some(name) if !instance.is_empty() => {
                self.key_prefix(&child(path, "key_prefix"), key_prefix, instance, name)
            }
            _ => None, // a bad name or instance was reported already
        };

        if let (true, Some(prefix)) = (is_cluster, &key_prefix) {
            self.cluster_key_prefix(path, prefix, key_prefix_value);
        }
        let settings_resolved = settings.over(default_settings);
        self.check_settings(path, &settings_resolved, &settings, false);
        let slo = slo.over(default_slo);
        let valid = self.problems.len() == before;

        let target = match (valid, &name, url, &key_prefix, mode) {
            (true, Some(name), Some(url), Some(key_prefix), Some(mode)) => Some(Target {
                name: name.clone(),
                url: url.url,
                mode,
                username,
                password,
                nodes: node_urls,
                discovery,
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
