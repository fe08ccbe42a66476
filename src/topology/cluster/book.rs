//! Per-shard accounting of a cluster target (DESIGN §12.2): operations by outcome, episodes
//! and their lengths, per shard label; the metric families behind them and the cluster-wide
//! series (`cluster_slots_covered`, `cluster_nodes`, `cluster_refreshes_total`). A shard that
//! leaves the map (after a resharding) keeps its series for `backend_ttl`, then they go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{ClusterMetrics, Reason};
use crate::classify::ResultKind;
use crate::episode::{Ended, Episodes};
use crate::metrics::{DISRUPTION_BUCKETS, TargetLabels};
use crate::op::{Op, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub target: String,
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardOutcomeLabels {
    pub target: String,
    pub shard: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub target: String,
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub target: String,
    pub reason: String,
}

fn disruption_histogram() -> Histogram {
    Histogram::new(DISRUPTION_BUCKETS)
}

/// The cluster families, registered with the others.
#[derive(Clone)]
pub struct ClusterFamilies {
    operations: Family<ShardOutcomeLabels, Counter>,
    disrupted: Family<ShardLabels, Gauge>,
    disruptions: Family<ShardLabels, Counter>,
    duration: Family<ShardLabels, Histogram, fn() -> Histogram>,
    slots_covered: Family<TargetLabels, Gauge>,
    nodes: Family<RoleLabels, Gauge>,
    refreshes: Family<ReasonLabels, Counter>,
}

impl Default for ClusterFamilies {
    fn default() -> Self {
        Self::new(disruption_histogram)
    }
}

impl ClusterFamilies {
    /// The families, with shard episode lengths in the histograms `disruption` makes (the
    /// metrics profile's buckets, like the target-level ones).
    pub fn new(disruption: fn() -> Histogram) -> ClusterFamilies {
        ClusterFamilies {
            operations: Family::default(),
            disrupted: Family::default(),
            disruptions: Family::default(),
            duration: Family::new_with_constructor(disruption),
            slots_covered: Family::default(),
            nodes: Family::default(),
            refreshes: Family::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "shard_operations",
            "Operations of a cluster target by shard (its first slot range) and final outcome",
            self.operations.clone(),
        );
        r.register(
            "shard_disrupted",
            "1 while the shard is in a disruption episode",
            self.disrupted.clone(),
        );
        r.register(
            "shard_disruptions",
            "Disruption episodes of the shard",
            self.disruptions.clone(),
        );
        r.register_with_unit(
            "shard_disruption_duration",
            "Length of each ended disruption episode of the shard",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "cluster_slots_covered",
            "Slots whose master is in the map and reachable: below 16384 part of the keyspace is unserved",
            self.slots_covered.clone(),
        );
        r.register(
            "cluster_nodes",
            "Nodes in the cluster's slot map, by role",
            self.nodes.clone(),
        );
        r.register(
            "cluster_refreshes",
            "Refreshes of the cluster's slot map, by what asked for them",
            self.refreshes.clone(),
        );
    }

    /// Creates the cluster-wide series of `target` at 0.
    pub fn target(&self, target: &str) -> ClusterMetrics {
        let tl = TargetLabels {
            target: target.to_string(),
        };
        let role = |role: &str| {
            self.nodes.get_or_create_owned(&RoleLabels {
                target: target.to_string(),
                role: role.to_string(),
            })
        };
        ClusterMetrics {
            slots_covered: self.slots_covered.get_or_create_owned(&tl),
            masters: role("master"),
            replicas: role("replica"),
            refreshes: Reason::ALL
                .iter()
                .map(|r| {
                    self.refreshes.get_or_create_owned(&ReasonLabels {
                        target: target.to_string(),
                        reason: r.as_str().to_string(),
                    })
                })
                .collect(),
        }
    }

    /// Removes every cluster series of `target`.
    pub fn remove_target(&self, target: &str) {
        let tl = TargetLabels {
            target: target.to_string(),
        };
        self.slots_covered.remove(&tl);
        for role in ["master", "replica"] {
            self.nodes.remove(&RoleLabels {
                target: target.to_string(),
                role: role.to_string(),
            });
        }
        for r in Reason::ALL {
            self.refreshes.remove(&ReasonLabels {
                target: target.to_string(),
                reason: r.as_str().to_string(),
            });
        }
    }
}

/// What the soak report says of one shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardSummary {
    pub shard: String,
    pub ok: u64,
    pub recovered: u64,
    pub failed: u64,
    pub disruptions: u64,
    pub longest_disruption_secs: f64,
    pub disrupted_now: bool,
}

struct Entry {
    label: Arc<str>,
    /// This shard's lane in the target's episodes.
    lane: usize,
    episodes: Episodes,
    outcomes: [Counter; 3],
    disrupted: Gauge,
    disruptions: Counter,
    duration: Histogram,
    seen_us: u64,
    last_run_id: Option<String>,
    summary: ShardSummary,
}

/// The shards of one cluster target.
pub struct ShardBook {
    target: String,
    families: ClusterFamilies,
    shards: Mutex<BTreeMap<Arc<str>, Entry>>,
    next_lane: Mutex<usize>,
    clock: crate::clock::Clock,
}

/// What happened to a shard's episode.
pub enum Change {
    Started,
    Ended(Ended),
}

impl ShardBook {
    pub fn new(target: &str, families: &ClusterFamilies, clock: crate::clock::Clock) -> ShardBook {
        ShardBook {
            target: target.to_string(),
            families: families.clone(),
            shards: Mutex::new(BTreeMap::new()),
            next_lane: Mutex::new(0),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, Entry>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn labels(&self, shard: &str) -> ShardLabels {
        ShardLabels {
            target: self.target.clone(),
            shard: shard.to_string(),
        }
    }

    /// The interned label of shard `label`, its series created at 0 when it is new.
    pub fn label(&self, label: &str) -> Arc<str> {
        let mut shards = self.lock();
        if let Some((k, _)) = shards.get_key_value(label) {
            return k.clone();
        }
        let key: Arc<str> = Arc::from(label);
        let sl = self.labels(label);
        let lane = {
            let mut next = self.next_lane.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next - 1
        };
        let entry = Entry {
            label: key.clone(),
            lane,
            episodes: Episodes::default(),
            outcomes: [Outcome::Ok, Outcome::Recovered, Outcome::Failed].map(|outcome| {
                self.families
                    .operations
                    .get_or_create_owned(&ShardOutcomeLabels {
                        target: self.target.clone(),
                        shard: label.to_string(),
                        outcome,
                    })
            }),
            disrupted: self.families.disrupted.get_or_create_owned(&sl),
            disruptions: self.families.disruptions.get_or_create_owned(&sl),
            duration: self.families.duration.get_or_create_owned(&sl),
            seen_us: self.clock.now_us(),
            last_run_id: None,
            summary: ShardSummary {
                shard: label.to_string(),
                ..ShardSummary::default()
            },
        };
        shards.insert(key.clone(), entry);
        key
    }

    /// The map names shard `label` now.
    pub fn seen(&self, label: &str) {
        self.label(label);
        if let Some(e) = self.lock().get_mut(label) {
            e.seen_us = self.clock.now_us();
        }
    }

    /// The lane of `shard` in the target's episodes.
    pub fn lane(&self, shard: &str) -> usize {
        self.lock().get(shard).map_or(0, |e| e.lane)
    }

    /// An attempt on `shard` failed.
    pub fn failure(
        &self,
        shard: &str,
        op: Op,
        sent_us: u64,
        observed_us: u64,
        result: ResultKind,
    ) -> Option<Change> {
        let mut shards = self.lock();
        let e = shards.get_mut(shard)?;
        e.seen_us = e.seen_us.max(observed_us);
        e.episodes.failure(op, sent_us, observed_us, result)?;
        e.disrupted.set(1);
        e.disruptions.inc();
        e.summary.disruptions += 1;
        e.summary.disrupted_now = true;
        tracing::warn!(target_name = %self.target, shard = %e.label, op = %op, result = %result, "shard disruption started");
        Some(Change::Started)
    }

    /// Whether the last probe of `shard` failed and none has succeeded since.
    pub fn probe_failing(&self, shard: &str) -> bool {
        self.lock()
            .get(shard)
            .is_some_and(|e| e.episodes.is_failing(Op::Probe))
    }

    /// An attempt on `shard` succeeded.
    pub fn success(&self, shard: &str, op: Op, sent_us: u64, observed_us: u64) -> Option<Change> {
        let mut shards = self.lock();
        let e = shards.get_mut(shard)?;
        if !e.episodes.is_open() {
            return None;
        }
        let ended = e.episodes.success(op, sent_us, observed_us)?;
        Some(Self::ended(&self.target, e, ended))
    }

    fn ended(target: &str, e: &mut Entry, ended: Ended) -> Change {
        let secs = ended.duration_secs();
        e.disrupted.set(0);
        e.duration.observe(secs);
        e.summary.disrupted_now = false;
        e.summary.longest_disruption_secs = e.summary.longest_disruption_secs.max(secs);
        tracing::warn!(target_name = %target, shard = %e.label, duration_seconds = format_args!("{secs:.3}"), "shard disruption ended");
        Change::Ended(ended)
    }

    /// An operation on `shard` ended with `outcome`.
    pub fn outcome(&self, shard: &str, outcome: Outcome) {
        if let Some(e) = self.lock().get_mut(shard) {
            e.outcomes[outcome as usize].inc();
            match outcome {
                Outcome::Ok => e.summary.ok += 1,
                Outcome::Recovered => e.summary.recovered += 1,
                Outcome::Failed => e.summary.failed += 1,
            }
        }
    }

    /// An operation on `shard` was served by `run_id`: true when the shard's master changed
    /// (a promoted replica, a manual failover).
    pub fn served_by(&self, shard: &str, run_id: &str) -> bool {
        let mut shards = self.lock();
        let Some(e) = shards.get_mut(shard) else {
            return false;
        };
        match &e.last_run_id {
            Some(prev) if prev == run_id => false,
            Some(_) => {
                e.last_run_id = Some(run_id.to_string());
                true
            }
            None => {
                e.last_run_id = Some(run_id.to_string());
                false
            }
        }
    }

    /// Removes the series of shards not seen within `ttl_us` (a resharding removed them),
    /// unless an episode of theirs is open.
    pub fn expire(&self, now_us: u64, ttl_us: u64) {
        for k in self
            .remove_where(|e| now_us.saturating_sub(e.seen_us) > ttl_us && !e.episodes.is_open())
        {
            tracing::info!(target_name = %self.target, shard = %k, "a shard no longer in the map: its series are removed");
        }
    }

    /// Removes the shards `gone` picks, with their series; returns their labels.
    fn remove_where(&self, gone: impl Fn(&Entry) -> bool) -> Vec<Arc<str>> {
        let mut shards = self.lock();
        let gone: Vec<Arc<str>> = shards
            .iter()
            .filter(|(_, e)| gone(e))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            shards.remove(k);
            let sl = self.labels(k);
            self.families.disrupted.remove(&sl);
            self.families.disruptions.remove(&sl);
            self.families.duration.remove(&sl);
            for &outcome in Outcome::ALL {
                self.families.operations.remove(&ShardOutcomeLabels {
                    target: self.target.clone(),
                    shard: k.to_string(),
                    outcome,
                });
            }
        }
        gone
    }

    /// Ends every open shard episode at `now_us` (the end of a soak).
    pub fn close_open(&self, now_us: u64) {
        let mut shards = self.lock();
        for e in shards.values_mut() {
            if let Some(ended) = e.episodes.close_at(now_us) {
                Self::ended(&self.target, e, ended);
            }
        }
    }

    /// Every shard, in label order.
    pub fn summaries(&self) -> Vec<ShardSummary> {
        let mut all: Vec<ShardSummary> = self.lock().values().map(|e| e.summary.clone()).collect();
        all.sort_by_key(|s| {
            s.shard
                .split('-')
                .next()
                .and_then(|a| a.parse::<u32>().ok())
        });
        all
    }

    /// Removes every series of this target's shards, a disrupted one's too (the target is
    /// gone: removed or changed by a reload).
    pub fn remove_all(&self) {
        self.remove_where(|_| true);
        self.families.remove_target(&self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A book for `target` with its families registered; the target's cluster metrics are
    /// kept alive by the third value.
    fn book_of(target: &str) -> (Registry, ShardBook, ClusterMetrics) {
        let families = ClusterFamilies::default();
        let mut registry = Registry::with_prefix("redis_canary");
        families.register(&mut registry);
        let cm = families.target(target);
        let book = ShardBook::new(target, &families, crate::clock::Clock::new());
        (registry, book, cm)
    }

    #[test]
    fn a_shard_episode_is_its_own_and_its_series_go_when_it_is_gone() {
        let (registry, book, _cm) = book_of("c");
        let a = book.label("0-5460");
        let b = book.label("5461-16383");
        assert_ne!(book.lane(&a), book.lane(&b));
        assert!(matches!(
            book.failure(&a, Op::Write, 10, 20, ResultKind::Refused),
            Some(Change::Started)
        ));
        assert!(book.success(&b, Op::Write, 30, 40).is_none());
        assert!(matches!(
            book.success(&a, Op::Write, 50, 2_000_060),
            Some(Change::Ended(_))
        ));
        book.outcome(&a, Outcome::Recovered);
        book.outcome(&b, Outcome::Ok);
        let s = book.summaries();
        assert_eq!(s[0].shard, "0-5460");
        assert_eq!((s[0].recovered, s[0].disruptions), (1, 1));
        assert!((s[0].longest_disruption_secs - 2.00005).abs() < 1e-9);
        assert_eq!((s[1].ok, s[1].disruptions), (1, 0));
        assert!(!book.served_by(&a, "r1"));
        assert!(!book.served_by(&a, "r1"));
        assert!(book.served_by(&a, "r2"));

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"redis_canary_shard_disruptions_total{target="c",shard="0-5460"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"redis_canary_cluster_slots_covered{target="c"} 0"#));
        assert!(
            text.contains(r#"redis_canary_cluster_refreshes_total{target="c",reason="moved"} 0"#)
        );
        book.expire(u64::MAX, 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("shard=\"0-5460\""), "{text}");
    }

    #[test]
    fn a_disrupted_shard_outlives_expiry_but_not_its_target() {
        let (registry, book, _cm) = book_of("c");
        let a = book.label("0-5460");
        assert!(
            book.failure(&a, Op::Write, 10, 20, ResultKind::Refused)
                .is_some()
        );
        let encoded = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        // An open episode keeps the shard through expiry...
        book.expire(u64::MAX, 0);
        assert!(encoded().contains("shard=\"0-5460\""));
        // ...but a removed target takes every shard series with it.
        book.remove_all();
        assert!(!encoded().contains("shard=\"0-5460\""), "{}", encoded());
        assert!(book.summaries().is_empty());
    }
}
