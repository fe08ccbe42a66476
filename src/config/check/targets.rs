//! Checking `[[targets]]`: each target's name, mode, URL, credentials, nodes and key
//! prefix, and across targets unique names and key prefixes kept apart.

use figment::value::{Dict, Value};

use super::{Checker, child, is_env_name, is_target_name};
use crate::config::cluster::ClusterLayer;
use crate::config::discovery::{is_dns_text, parse_node_discovery};
use crate::config::problems::{ConfigProblem, quote};
use crate::config::sentinel::{ModeKind, SentinelLayer, data_url};
use crate::config::settings::SettingsLayer;
use crate::config::settings::SloLayer;
use crate::config::url::ParsedUrl;
use crate::config::{
    DEFAULT_KEY_PREFIX, Mode, PasswordSource, SETTINGS_KEYS, Settings, Slo, TARGET_KEYS, Target,
};
use crate::secret::Secret;

/// What a target contributes to the checks across targets, even when it is not valid itself.
struct TargetParts {
    name: Option<String>,
    key_prefix: Option<String>,
    target: Option<Target>,
}

impl Checker<'_> {
    pub(super) fn targets(
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
