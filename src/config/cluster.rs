//! The keys of `mode = "cluster"` targets (DESIGN §12.2): the seed (`url`, or `seeds`), and
//! `cluster_refresh`; checked together with the target's other keys (one seed source, no
//! database but 0, no braces in the key prefix: the canary's hash tags must be the only
//! ones in its keys).

use std::time::Duration;

use figment::value::Value;

use super::check::{Checker, child};
use super::problems::ConfigProblem;
use super::url::ParsedUrl;
use super::values::Bound;
use super::{CLUSTER_KEYS, ClusterTarget, DEFAULT_CLUSTER_REFRESH, RedisUrl};

/// Shortest `cluster_refresh`: every refresh is a connect and a `CLUSTER SHARDS`.
const MIN_CLUSTER_REFRESH: Duration = Duration::from_millis(100);
/// Most seeds: they are asked in turn when no known node answers.
const MAX_SEEDS: usize = 64;

/// What one target table says about the cluster, before the checks across its keys.
#[derive(Default)]
pub(super) struct ClusterLayer<'v> {
    /// `(key, value)` of every cluster key set, for "only for mode = cluster".
    given: Vec<(String, &'v Value)>,
    seeds: Option<Vec<(String, &'v Value, ParsedUrl)>>,
    refresh: Option<Duration>,
}

impl<'v> Checker<'_> {
    /// Reads one cluster key of a target into `layer`; false if `key` is not one.
    pub(super) fn cluster_key(
        &mut self,
        layer: &mut ClusterLayer<'v>,
        path: &str,
        key: &str,
        value: &'v Value,
    ) -> bool {
        if !CLUSTER_KEYS.contains(&key) {
            return false;
        }
        let at = child(path, key);
        layer.given.push((at.clone(), value));
        match key {
            "seeds" => match value {
                Value::Array(_, items) => {
                    if items.is_empty() {
                        self.report(&at, value, "expected at least one seed url");
                    } else if items.len() > MAX_SEEDS {
                        self.report(&at, value, format!("at most {MAX_SEEDS} seeds"));
                    }
                    let mut list = Vec::new();
                    for (index, item) in items.iter().enumerate().take(MAX_SEEDS) {
                        let at = format!("{at}[{index}]");
                        if let Some(url) = self.url(&at, item) {
                            list.push((at, item, url));
                        }
                    }
                    layer.seeds = Some(list);
                }
                _ => self.report(&at, value, "expected an array of urls"),
            },
            "cluster_refresh" => {
                layer.refresh = self.duration(&at, value, Bound::AtLeast(MIN_CLUSTER_REFRESH));
            }
            _ => unreachable!("every CLUSTER_KEYS entry is handled"),
        }
        true
    }

    /// A target of another mode sets no cluster key.
    pub(super) fn no_cluster_keys(&mut self, layer: &ClusterLayer<'_>) {
        for (at, value) in &layer.given {
            self.report(at, value, "only for mode = \"cluster\"");
        }
    }

    /// Checks a cluster target's keys together. `url` is the target's `url`, if given; on
    /// success it is the first seed. `None` when a problem was recorded.
    pub(super) fn cluster_target(
        &mut self,
        path: &str,
        layer: ClusterLayer<'_>,
        url: &mut Option<ParsedUrl>,
        url_given: Option<&Value>,
        nodes_auto: bool,
    ) -> Option<ClusterTarget> {
        let before = self.problems.len();
        let mut seeds: Vec<RedisUrl> = Vec::new();
        match (&layer.seeds, url_given) {
            (Some(_), Some(value)) => self.report(
                &child(path, "url"),
                value,
                "give the seed as url or the seeds as seeds, not both",
            ),
            (None, None) => self.problems.push(ConfigProblem::new(
                child(path, "url"),
                "",
                "missing: a cluster target needs a seed (url) or seeds",
            )),
            _ => {}
        }
        if let Some(list) = &layer.seeds {
            for (i, (at, value, parsed)) in list.iter().enumerate() {
                if i > 0 && (parsed.url.username.is_some() || parsed.url.password.is_some()) {
                    self.report(
                        at,
                        value,
                        "only the first seed may carry a user and password (they apply to every node): remove them",
                    );
                }
                if let Some(first) = seeds.first()
                    && first.tls != parsed.url.tls
                {
                    self.report(
                        at,
                        value,
                        "all seeds must use the same scheme (redis:// or rediss://)",
                    );
                }
                if parsed.url.db != 0 {
                    self.report(at, value, "a cluster has only database 0: remove the /db");
                }
                seeds.push(parsed.url.clone());
            }
            if let Some((_, _, first)) = list.first() {
                *url = Some(ParsedUrl {
                    url: first.url.clone(),
                    db_given: false,
                });
            }
        } else if let (Some(parsed), Some(value)) = (url.as_ref(), url_given) {
            if parsed.url.db != 0 {
                self.report(
                    &child(path, "url"),
                    value,
                    "a cluster has only database 0: remove the /db",
                );
            }
            seeds.push(parsed.url.clone());
        }
        if self.problems.len() != before || seeds.is_empty() {
            return None;
        }
        Some(ClusterTarget {
            seeds,
            refresh: layer.refresh.unwrap_or(DEFAULT_CLUSTER_REFRESH),
            nodes_auto,
        })
    }

    /// A cluster target's key prefix must hold no brace: the canary puts its own hash tag
    /// after the prefix, and the server hashes the first `{...}` of a key.
    pub(super) fn cluster_key_prefix(&mut self, path: &str, prefix: &str, value: Option<&Value>) {
        if prefix.contains('{') || prefix.contains('}') {
            let at = child(path, "key_prefix");
            match value {
                Some(value) => self.report(
                    &at,
                    value,
                    "a cluster target's key prefix must not contain { or }: the canary adds its own hash tag",
                ),
                None => self.problems.push(ConfigProblem::new(
                    at,
                    prefix,
                    "a cluster target's key prefix must not contain { or }: the canary adds its own hash tag",
                )),
            }
        }
    }
}
