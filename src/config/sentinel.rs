//! The keys of `mode = "sentinel"` targets (DESIGN §12.1): `mode`, `sentinels`,
//! `master_name`, the sentinels' own credentials and `sentinel_refresh`, read key by key
//! like every other key, then checked together (required keys, one password source, URL
//! credentials that agree with the separate keys, one scheme for all sentinels).

use std::time::Duration;

use figment::value::Value;

use super::check::{Checker, child, is_env_name};
use super::problems::{ConfigProblem, quote};
use super::url::ParsedUrl;
use super::values::Bound;
use super::{
    DEFAULT_SENTINEL_PORT, DEFAULT_SENTINEL_REFRESH, PasswordSource, RedisUrl, SENTINEL_KEYS,
    SentinelTarget,
};
use crate::secret::Secret;

/// Shortest `sentinel_refresh`: every refresh asks every sentinel once.
const MIN_SENTINEL_REFRESH: Duration = Duration::from_millis(100);

/// Longest `master_name`: Sentinel accepts any name, but it becomes part of log lines.
const MAX_MASTER_NAME: usize = 256;

/// `mode` as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum ModeKind {
    #[default]
    Standalone,
    Sentinel,
    Cluster,
}

/// What one target table says about sentinels, before the checks across its keys.
#[derive(Default)]
pub(super) struct SentinelLayer<'v> {
    /// `(key, value)` of every sentinel key set, for "only for mode = sentinel".
    given: Vec<(String, &'v Value)>,
    sentinels: Option<Vec<(String, &'v Value, ParsedUrl, bool)>>,
    master_name: Option<String>,
    username: Option<(String, &'v Value)>,
    sources: Vec<(&'static str, PasswordSource)>,
    refresh: Option<Duration>,
}

impl<'v> Checker<'_> {
    /// `mode = "standalone" | "sentinel" | "cluster"`.
    pub(super) fn mode(&mut self, at: &str, value: &Value) -> Option<ModeKind> {
        match self.text(at, value)? {
            "standalone" => Some(ModeKind::Standalone),
            "sentinel" => Some(ModeKind::Sentinel),
            "cluster" => Some(ModeKind::Cluster),
            _ => {
                self.report(
                    at,
                    value,
                    "expected \"standalone\", \"sentinel\" or \"cluster\"",
                );
                None
            }
        }
    }

    /// Reads one sentinel key of a target into `layer`; false if `key` is not one.
    pub(super) fn sentinel_key(
        &mut self,
        layer: &mut SentinelLayer<'v>,
        path: &str,
        key: &str,
        value: &'v Value,
    ) -> bool {
        if !SENTINEL_KEYS.contains(&key) {
            return false;
        }
        let at = child(path, key);
        layer.given.push((at.clone(), value));
        match key {
            "sentinels" => match value {
                Value::Array(_, items) => {
                    let mut list = Vec::new();
                    for (index, item) in items.iter().enumerate() {
                        let at = format!("{at}[{index}]");
                        if let Some(url) = self.url(&at, item) {
                            let port_given = item.as_str().is_some_and(names_a_port);
                            list.push((at, item, url, port_given));
                        }
                    }
                    if items.is_empty() {
                        self.report(&at, value, "expected at least one sentinel url");
                    }
                    layer.sentinels = Some(list);
                }
                _ => self.report(&at, value, "expected an array of urls"),
            },
            "master_name" => {
                if let Some(text) = self.non_empty_text(&at, value) {
                    if text.len() > MAX_MASTER_NAME
                        || text.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        self.report(
                            &at,
                            value,
                            format!(
                                "expected the name the sentinels monitor: at most {MAX_MASTER_NAME} characters, no whitespace"
                            ),
                        );
                    } else {
                        layer.master_name = Some(text);
                    }
                }
            }
            "sentinel_username" => {
                layer.username = self.non_empty_text(&at, value).map(|text| (text, value));
            }
            "sentinel_password" => {
                if let Some(text) = self.non_empty_text(&at, value) {
                    layer.sources.push((
                        "sentinel_password",
                        PasswordSource::Inline(Secret::new(text)),
                    ));
                }
            }
            "sentinel_password_file" => {
                if let Some(text) = self.non_empty_text(&at, value) {
                    layer
                        .sources
                        .push(("sentinel_password_file", PasswordSource::File(text.into())));
                }
            }
            "sentinel_password_env" => {
                if let Some(text) = self.text(&at, value) {
                    if is_env_name(text) {
                        layer.sources.push((
                            "sentinel_password_env",
                            PasswordSource::Env(text.to_string()),
                        ));
                    } else {
                        self.report(
                            &at,
                            value,
                            "expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        );
                    }
                }
            }
            "sentinel_refresh" => {
                layer.refresh = self.duration(&at, value, Bound::AtLeast(MIN_SENTINEL_REFRESH));
            }
            _ => unreachable!("every SENTINEL_KEYS entry is handled"),
        }
        true
    }

    /// A standalone target sets no sentinel key.
    pub(super) fn no_sentinel_keys(&mut self, layer: &SentinelLayer<'_>) {
        for (at, value) in &layer.given {
            self.report(at, value, "only for mode = \"sentinel\"");
        }
    }

    /// Checks a sentinel target's keys together; `None` when a problem was recorded.
    pub(super) fn sentinel_target(
        &mut self,
        path: &str,
        layer: SentinelLayer<'_>,
        nodes_auto: bool,
    ) -> Option<SentinelTarget> {
        let before = self.problems.len();
        for (key, given) in [
            ("sentinels", layer.sentinels.is_some()),
            ("master_name", layer.master_name.is_some()),
        ] {
            if !given && !layer.given.iter().any(|(at, _)| *at == child(path, key)) {
                self.problems.push(ConfigProblem::new(
                    child(path, key),
                    "",
                    "missing: a sentinel target needs sentinels and master_name",
                ));
            }
        }
        let mut sources = layer.sources;
        let mut url_users: Vec<&str> = Vec::new();
        let mut sentinels = Vec::new();
        let mut url_password: Option<Secret> = None;
        for (at, value, parsed, port_given) in layer.sentinels.iter().flatten() {
            if parsed.db_given && parsed.url.db != 0 {
                self.report(at, value, "a sentinel has no database: remove the /db");
            }
            if let Some(first) = sentinels.first().map(|s: &RedisUrl| s.tls)
                && first != parsed.url.tls
            {
                self.report(
                    at,
                    value,
                    "all sentinels must use the same scheme (redis:// or rediss://)",
                );
            }
            if let Some(user) = &parsed.url.username {
                url_users.push(user);
            }
            if let Some(password) = &parsed.url.password {
                match &url_password {
                    Some(seen) if seen != password => self.report(
                        at,
                        value,
                        "the sentinels' urls give different passwords: give one (sentinel_password*)",
                    ),
                    Some(_) => {}
                    None => url_password = Some(password.clone()),
                }
            }
            let mut url = parsed.url.clone();
            if !port_given {
                url.port = DEFAULT_SENTINEL_PORT;
            }
            sentinels.push(url);
        }
        if let Some(password) = url_password {
            sources.insert(0, ("the sentinel urls", PasswordSource::Inline(password)));
        }
        if sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
            self.problems.push(ConfigProblem::new(
                child(path, "sentinel_password"),
                "",
                format!(
                    "more than one sentinel password source ({}): give at most one",
                    names.join(", ")
                ),
            ));
        }
        let mut users = url_users.clone();
        users.dedup();
        if users.len() > 1 {
            self.problems.push(ConfigProblem::new(
                child(path, "sentinels"),
                "",
                "the sentinels' urls give different users: give one (sentinel_username)",
            ));
        }
        if let (Some(from_url), Some((from_key, value))) = (users.first(), &layer.username)
            && from_url != from_key
        {
            self.report(
                &child(path, "sentinel_username"),
                value,
                format!(
                    "differs from the user in the sentinel urls ({})",
                    quote(from_url)
                ),
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(SentinelTarget {
            sentinels,
            master_name: layer.master_name?,
            username: layer
                .username
                .map(|(text, _)| text)
                .or_else(|| users.first().map(|u| u.to_string())),
            password: sources
                .into_iter()
                .next()
                .map_or(PasswordSource::None, |(_, source)| source),
            refresh: layer.refresh.unwrap_or(DEFAULT_SENTINEL_REFRESH),
            nodes_auto,
        })
    }
}

/// The data nodes' template URL of a sentinel target (see [`super::Target::url`]).
pub(super) fn data_url(target: &SentinelTarget) -> RedisUrl {
    RedisUrl {
        tls: target.sentinels.first().is_some_and(|s| s.tls),
        host: target.master_name.clone(),
        port: 0,
        username: None,
        password: None,
        db: 0,
    }
}

/// Whether a URL's text names its port (`host:port`, `[v6]:port`), so that a sentinel URL
/// without one gets 26379 rather than the data port 6379.
fn names_a_port(text: &str) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let location = rest.rsplit_once('@').map_or(rest, |(_, location)| location);
    let authority = location.split('/').next().unwrap_or(location);
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    authority[host_end..].contains(':')
}

#[cfg(test)]
mod tests {
    use super::names_a_port;

    #[test]
    fn a_port_is_named_only_after_the_host() {
        assert!(names_a_port("redis://h:26380"));
        assert!(names_a_port("redis://u:p@h:1/"));
        assert!(names_a_port("rediss://[::1]:26379"));
        assert!(!names_a_port("redis://h"));
        assert!(!names_a_port("redis://u:p@h/"));
        assert!(!names_a_port("redis://[::1]"));
    }
}
