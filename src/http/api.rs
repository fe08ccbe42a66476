//! `/api/v1/status` (DESIGN §13): what the status page shows, as versioned JSON (schema in
//! README, "Status API (schema)"). [`TargetView`] gathers one target's state once, under
//! short locks; the page ([`super::status_page`]) and the API both render from it.

use std::time::Duration;

use serde_json::{Value, json};

use super::AppState;
use crate::backend::BackendRecord;
use crate::history::{COARSE_US, EpisodeMark, FINE_SLOTS, FINE_US, Point};
use crate::ledger::Verdict;
use crate::metrics::NodeLabels;
use crate::op::{Op, Outcome};
use crate::target::{LastError, TargetState};

/// Version of the document; bumped only when a field changes meaning or goes away (new
/// fields may appear in the same version).
pub const SCHEMA: u32 = 1;

/// The window of the latency chart and series: 15 minutes (DESIGN §13).
pub const LATENCY_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The short availability window.
pub const SHORT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The long availability window.
pub const LONG_WINDOW: Duration = Duration::from_secs(3600);

/// One point of a series: an interval's start (Unix seconds) and its aggregate.
#[derive(Clone, Copy, Debug)]
pub struct SeriesPoint {
    pub start_unix: f64,
    pub point: Point,
}

/// One followed node.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub addr: String,
    pub up: bool,
    /// Writes seen on the node and the delay from ack to visible, p50 and p99 since
    /// start: counted in soak runs only (the daemon has them in `/metrics`).
    pub replications: Option<u64>,
    pub delay_p50_seconds: Option<f64>,
    pub delay_p99_seconds: Option<f64>,
    pub timeouts: u64,
}

/// One backend, with its read verdicts when they are counted (soak runs).
#[derive(Clone, Debug)]
pub struct BackendView {
    pub record: BackendRecord,
    pub first_seen_unix: f64,
    pub last_seen_unix: f64,
    pub reads: Option<Vec<(Verdict, u64)>>,
}

/// One episode, in Unix seconds.
#[derive(Clone, Debug)]
pub struct EpisodeView {
    pub start_unix: f64,
    pub end_unix: Option<f64>,
    pub length_seconds: f64,
    pub mark: EpisodeMark,
}

/// One shard of a cluster target: its counts since start and its place in the slot map.
#[derive(Clone, Debug)]
pub struct ShardView {
    pub summary: crate::topology::cluster::book::ShardSummary,
    /// The master the map names (`None`: none healthy, or the shard left the map).
    pub master: Option<String>,
    pub replicas: usize,
    /// Slots the shard serves in the map.
    pub slots: u32,
    /// The slot ranges it serves now (its label is its first range when first seen).
    pub ranges: Vec<(u16, u16)>,
    /// Whether the map still has this shard (a resharding may have renamed it).
    pub in_map: bool,
}

/// Everything the page and the API show of one target, read at one instant.
#[derive(Clone, Debug)]
pub struct TargetView {
    pub name: String,
    pub endpoint: String,
    pub mode: &'static str,
    pub disrupted: bool,
    pub availability_5m: Option<f64>,
    pub availability_1h: Option<f64>,
    /// Since start, from the counters: per op, ok/recovered/failed/skipped.
    pub operations: Vec<(Op, [u64; 4])>,
    pub disruptions: u64,
    pub canary_errors: u64,
    pub last_error: Option<LastError>,
    /// 10 s points of the last 15 min, the open interval last.
    pub latency: Vec<SeriesPoint>,
    /// 1 s points of the last 3 min, the open interval last.
    pub recent: Vec<SeriesPoint>,
    /// Episodes of the last 24 h, the open one last.
    pub episodes: Vec<EpisodeView>,
    pub episodes_dropped: u64,
    pub backends: Vec<BackendView>,
    pub nodes: Vec<NodeView>,
    /// A cluster target's shards (DESIGN §12.2); empty otherwise.
    pub shards: Vec<ShardView>,
    /// A cluster target's `cluster_slots_covered`.
    pub slots_covered: Option<i64>,
    /// A sentinel target's sentinels (`host:port`) and whether each answers.
    pub sentinels: Vec<(String, bool)>,
}

impl TargetView {
    /// Reads `t` now.
    pub fn of(t: &TargetState) -> TargetView {
        let clock = t.clock;
        let now = clock.now_us();
        let series = |v: Vec<(u64, Point)>| -> Vec<SeriesPoint> {
            v.into_iter()
                .map(|(start, point)| SeriesPoint {
                    start_unix: clock.unix_secs(start),
                    point,
                })
                .collect()
        };
        let (latency, recent, availability_5m, availability_1h, marks, episodes_dropped) = {
            let mut h = t.history.lock().unwrap_or_else(|p| p.into_inner());
            (
                h.coarse(now, LATENCY_WINDOW.as_micros() as u64),
                h.fine(now, FINE_SLOTS as u64 * FINE_US),
                h.availability(now, SHORT_WINDOW.as_micros() as u64),
                h.availability(now, LONG_WINDOW.as_micros() as u64),
                h.episodes(now),
                h.episodes_dropped(),
            )
        };
        let episodes = marks
            .into_iter()
            .map(|mark| EpisodeView {
                start_unix: clock.unix_secs(mark.start_us()),
                end_unix: mark.end_us().map(|e| clock.unix_secs(e)),
                length_seconds: mark.length_us(now) as f64 / 1e6,
                mark,
            })
            .collect();
        let m = &t.metrics;
        let operations = Op::ALL
            .iter()
            .map(|op| {
                let o = m.op(*op);
                (
                    *op,
                    [
                        o.outcome(Outcome::Ok).get(),
                        o.outcome(Outcome::Recovered).get(),
                        o.outcome(Outcome::Failed).get(),
                        o.skipped_ticks.get(),
                    ],
                )
            })
            .collect();
        let records: Vec<BackendRecord> = t
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .history()
            .to_vec();
        let reads_of = |b: &BackendRecord| -> Option<Vec<(Verdict, u64)>> {
            let stats = t.stats.as_ref()?;
            let s = stats.lock().unwrap_or_else(|p| p.into_inner());
            let key = if b.identity.is_known() {
                &b.identity.run_id
            } else {
                &b.identity.addr
            };
            let counts = s.reads_by_backend.get(key)?;
            Some(counts.iter().map(|(v, n)| (*v, *n)).collect())
        };
        let backends = records
            .into_iter()
            .map(|record| BackendView {
                first_seen_unix: clock.unix_secs(record.first_seen_us),
                last_seen_unix: clock.unix_secs(record.last_seen_us),
                reads: reads_of(&record),
                record,
            })
            .collect();
        // Every node with series: static, listed by the topology (`nodes = "auto"`) or
        // discovered.
        let node_labels: Vec<String> = t
            .node_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let nodes = node_labels
            .into_iter()
            .map(|node| {
                let label = NodeLabels {
                    target: t.name.clone(),
                    node,
                };
                // The Prometheus histogram cannot be read back; the soak statistics can.
                let (replications, delay_p50_seconds, delay_p99_seconds) = t
                    .stats
                    .as_ref()
                    .and_then(|stats| {
                        let s = stats.lock().unwrap_or_else(|p| p.into_inner());
                        let (h, _) = s.replication.get(&label.node)?;
                        let q =
                            |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6);
                        Some((Some(h.len()), q(0.5), q(0.99)))
                    })
                    .unwrap_or((None, None, None));
                NodeView {
                    up: m.node_up.get(&label).is_some_and(|g| g.get() == 1),
                    timeouts: m.replication_timeouts.get(&label).map_or(0, |c| c.get()),
                    replications,
                    delay_p50_seconds,
                    delay_p99_seconds,
                    addr: label.node,
                }
            })
            .collect();
        TargetView {
            name: t.name.clone(),
            endpoint: t.url_display.clone(),
            mode: if t.cluster.is_some() {
                "cluster"
            } else if t.endpoint.locator.is_some() {
                "sentinel"
            } else {
                "standalone"
            },
            shards: t.cluster.as_ref().map_or_else(Vec::new, |c| {
                let map = c.map();
                c.book
                    .summaries()
                    .into_iter()
                    .map(|summary| {
                        let shard = map.shards.iter().find(|s| s.label == summary.shard);
                        ShardView {
                            master: shard
                                .and_then(|s| s.master.as_ref())
                                .map(ToString::to_string),
                            replicas: shard.map_or(0, |s| s.replicas.len()),
                            slots: shard.map_or(0, |s| {
                                s.ranges
                                    .iter()
                                    .map(|&(a, b)| u32::from(b) + 1 - u32::from(a))
                                    .sum()
                            }),
                            ranges: shard.map_or_else(Vec::new, |s| s.ranges.clone()),
                            in_map: shard.is_some(),
                            summary,
                        }
                    })
                    .collect()
            }),
            slots_covered: t.cluster.as_ref().map(|c| c.metrics.slots_covered.get()),
            sentinels: t
                .endpoint
                .locator
                .as_ref()
                .map_or_else(Vec::new, |l| l.sources()),
            disrupted: t.is_disrupted(),
            availability_5m,
            availability_1h,
            operations,
            disruptions: m.disruptions.get(),
            canary_errors: m.internal_total(),
            last_error: t
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            latency: series(latency),
            recent: series(recent),
            episodes,
            episodes_dropped,
            backends,
            nodes,
        }
    }
}

/// Every target, read once per request (the one place a handler takes the target set).
pub(super) fn views(state: &AppState) -> Vec<TargetView> {
    let targets = state.targets();
    targets.iter().map(|t| TargetView::of(t)).collect()
}

/// The `/api/v1/status` document.
pub(super) fn render(state: &AppState) -> String {
    let views = views(state);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let doc = json!({
        "schema": SCHEMA,
        "instance": state.instance,
        "generated_at": super::format_unix(now),
        "generated_at_unix": now,
        "canary_errors": views.iter().map(|v| v.canary_errors).sum::<u64>(),
        "targets": views.iter().map(target_json).collect::<Vec<_>>(),
    });
    let mut body = serde_json::to_string_pretty(&doc).expect("a Value always serializes");
    body.push('\n');
    body
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| {
        json!((d.as_secs_f64() * 1e6).round() / 1e3)
    })
}

fn point_json(p: &SeriesPoint) -> Value {
    let q = &p.point;
    json!({
        "t": p.start_unix,
        "p50_ms": ms(q.p50()),
        "p99_ms": ms(q.p99()),
        "max_ms": ms(q.max()),
        "ok": q.ok(),
        "recovered": q.recovered(),
        "failed": q.failed(),
        "skipped": q.skipped(),
        "reads": { "fresh": q.fresh(), "lagging": q.lagging(), "bad": q.bad() },
        "disrupted": q.disrupted(),
        "exact": q.is_exact(),
    })
}

fn target_json(v: &TargetView) -> Value {
    let operations: serde_json::Map<String, Value> = v
        .operations
        .iter()
        .map(|(op, [ok, recovered, failed, skipped])| {
            (
                op.as_str().to_string(),
                json!({ "ok": ok, "recovered": recovered, "failed": failed, "skipped": skipped }),
            )
        })
        .collect();
    let last_error = v.last_error.as_ref().map_or(Value::Null, |e| {
        json!({
            "at": super::format_unix(e.at_unix),
            "at_unix": e.at_unix,
            "op": e.op.as_str(),
            "result": e.result.as_str(),
            "message": e.message,
        })
    });
    let episodes: Vec<Value> = v
        .episodes
        .iter()
        .map(|e| {
            let results: serde_json::Map<String, Value> = e
                .mark
                .results()
                .map(|(r, n)| (r.as_str().to_string(), json!(n)))
                .collect();
            json!({
                "start": super::format_unix(e.start_unix),
                "start_unix": e.start_unix,
                "end": e.end_unix.map(super::format_unix),
                "end_unix": e.end_unix,
                "open": e.end_unix.is_none(),
                "length_seconds": e.length_seconds,
                "failures": e.mark.failures(),
                "results": results,
                "other_failures": e.mark.other_failures(),
            })
        })
        .collect();
    let backends: Vec<Value> = v
        .backends
        .iter()
        .map(|b| {
            let id = &b.record.identity;
            let mut o = json!({
                "role": id.role,
                "addr": id.addr,
                "run_id": id.run_id,
                "version": id.version,
                "first_seen": super::format_unix(b.first_seen_unix),
                "last_seen": super::format_unix(b.last_seen_unix),
                "first_seen_unix": b.first_seen_unix,
                "last_seen_unix": b.last_seen_unix,
            });
            if let Some(reads) = &b.reads {
                let r: serde_json::Map<String, Value> = reads
                    .iter()
                    .map(|(verdict, n)| (verdict.as_str().to_string(), json!(n)))
                    .collect();
                o["reads"] = Value::Object(r);
            }
            o
        })
        .collect();
    let nodes: Vec<Value> = v
        .nodes
        .iter()
        .map(|n| {
            json!({
                "addr": n.addr,
                "up": n.up,
                "replications": n.replications,
                "replication_delay_p50_seconds": n.delay_p50_seconds,
                "replication_delay_p99_seconds": n.delay_p99_seconds,
                "replication_timeouts": n.timeouts,
            })
        })
        .collect();
    json!({
        "name": v.name,
        "endpoint": v.endpoint,
        "mode": v.mode,
        "state": if v.disrupted { "disrupted" } else { "ok" },
        "availability": { "5m": v.availability_5m, "1h": v.availability_1h },
        "operations": operations,
        "disruptions": v.disruptions,
        "canary_errors": v.canary_errors,
        "last_error": last_error,
        "latency": {
            "interval_seconds": COARSE_US / 1_000_000,
            "points": v.latency.iter().map(point_json).collect::<Vec<_>>(),
        },
        "recent": {
            "interval_seconds": FINE_US / 1_000_000,
            "points": v.recent.iter().map(point_json).collect::<Vec<_>>(),
        },
        "episodes": episodes,
        "episodes_dropped": v.episodes_dropped,
        "backends": backends,
        "nodes": nodes,
        "slots_covered": v.slots_covered,
        "shards": v.shards.iter().map(|s| json!({
            "shard": s.summary.shard,
            "state": if s.summary.disrupted_now { "disrupted" } else { "ok" },
            "master": s.master,
            "replicas": s.replicas,
            "slots": s.slots,
            "ranges": s.ranges.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "in_map": s.in_map,
            "operations": {
                "ok": s.summary.ok,
                "recovered": s.summary.recovered,
                "failed": s.summary.failed,
            },
            "disruptions": s.summary.disruptions,
            "longest_disruption_seconds": s.summary.longest_disruption_secs,
        })).collect::<Vec<_>>(),
        "sentinels": v.sentinels.iter().map(|(addr, up)| json!({ "addr": addr, "up": up })).collect::<Vec<_>>(),
    })
}
