//! Wiring: builds every target's state from the configuration, serves HTTP, runs the
//! scheduling loops until shutdown, then drains them within the shutdown budget. Both the
//! `run` and the `soak` modes (and the tests) come through [`run`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{Config, Mode, Rate};
use crate::conn::Endpoint;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::op::Op;
use crate::schedule::run_loop;
use crate::shutdown::{self, Shutdown};
use crate::target::{Shared, TargetState};
use crate::telemetry::Tracing;
use crate::tls;
use crate::topology::dns::{Discovery, DnsNodes};
use crate::topology::sentinel::{AutoNodes, NodeEndpoint, Sentinel};
use crate::workload::{ListedNodes, node_endpoint, run_nodes};

/// How long the loops get to finish after shutdown begins; with the HTTP server and cleanup
/// this keeps the whole exit inside the 5 s of DESIGN §3.
const DRAIN_BUDGET: Duration = Duration::from_secs(3);
/// How long `cleanup = true` gets to delete keys on the way out.
const CLEANUP_BUDGET: Duration = Duration::from_secs(1);
/// How long span export gets to flush on the way out.
const TRACE_FLUSH_BUDGET: Duration = Duration::from_millis(500);
/// How often expired backends are removed from `backend_info`.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// A problem that stops the daemon from starting (exit 2): it names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct StartError {
    pub key: String,
    pub message: String,
}

/// Builds the per-target states; fails only on settings that cannot work (TLS files).
pub fn prepare(
    config: &Config,
    clock: Clock,
    metrics: &Metrics,
    with_stats: bool,
    tracing: Option<Arc<Tracing>>,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    let prepared = prepare_with_topology(config, clock, metrics, with_stats, tracing)?;
    Ok(prepared.into_iter().map(|(t, _, _)| t).collect())
}

/// A target's state and, for a sentinel target, its sentinel side to follow and, with
/// `nodes = "auto"` or `"dns://..."`, the nodes listed to follow.
type Prepared = (Arc<TargetState>, Option<Arc<Sentinel>>, Option<ListedNodes>);

/// Like [`prepare`], with the sentinel side of each sentinel target, to follow.
fn prepare_with_topology(
    config: &Config,
    clock: Clock,
    metrics: &Metrics,
    with_stats: bool,
    tracing: Option<Arc<Tracing>>,
) -> Result<Vec<Prepared>, StartError> {
    let shared = Shared {
        instance: &config.instance,
        clock,
        metrics,
        with_stats,
        tracing,
    };
    config
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let s = &t.settings;
            let tls_for = |url: &crate::config::RedisUrl| {
                url.tls
                    .then(|| tls::build(s.tls.as_ref(), &url.host))
                    .transpose()
                    .map_err(|e| StartError {
                        key: format!("targets[{i}].tls"),
                        message: e.to_string(),
                    })
            };
            if s.tls.as_ref().is_some_and(|x| x.insecure) && t.url.tls {
                tracing::warn!(target_name = %t.name, "tls.insecure = true: the server certificate is not verified");
            }
            let client_name = format!("redis-canary/{}/{}", config.instance, t.name);
            let endpoint_for = |url: &crate::config::RedisUrl| -> Result<Endpoint, StartError> {
                let mut ep = Endpoint::new(
                    url,
                    t.username.as_deref(),
                    &t.password,
                    tls_for(url)?,
                    client_name.clone(),
                    s.connect_timeout,
                );
                ep.resp3 = s.protocol == crate::config::Protocol::Resp3;
                Ok(ep)
            };
            let mut endpoint = endpoint_for(&t.url)?;
            let mut auto = None;
            let sentinel = match &t.mode {
                Mode::Standalone => None,
                Mode::Sentinel(st) => {
                    // The sentinels' own credentials; RESP2 (their pub/sub is RESP2 too).
                    let sentinels = st
                        .sentinels
                        .iter()
                        .map(|url| {
                            Ok(Endpoint::new(
                                url,
                                st.username.as_deref(),
                                &st.password,
                                tls_for(url)?,
                                client_name.clone(),
                                s.connect_timeout,
                            ))
                        })
                        .collect::<Result<Vec<_>, StartError>>()?;
                    let sentinel = Sentinel::new(
                        &t.name,
                        &st.master_name,
                        sentinels,
                        metrics,
                        s.response_timeout,
                        st.refresh,
                        st.nodes_auto,
                    );
                    // The listed replicas: the data nodes' credentials, database and TLS,
                    // like static nodes.
                    if let Some(replicas) = sentinel.replicas() {
                        let (target, client_name) = (t.clone(), client_name.clone());
                        let endpoint: NodeEndpoint = Box::new(move |host: &str, port: u16| {
                            let url = crate::config::RedisUrl {
                                host: host.to_string(),
                                port,
                                ..target.url.clone()
                            };
                            let s = &target.settings;
                            let tls = url
                                .tls
                                .then(|| tls::build(s.tls.as_ref(), &url.host))
                                .transpose()
                                .map_err(|e| e.to_string())?;
                            let mut ep = Endpoint::new(
                                &url,
                                target.username.as_deref(),
                                &target.password,
                                tls,
                                client_name.clone(),
                                s.connect_timeout,
                            );
                            ep.resp3 = s.protocol == crate::config::Protocol::Resp3;
                            Ok(ep)
                        });
                        auto = Some(ListedNodes::Sentinel(AutoNodes { replicas, endpoint }));
                    }
                    endpoint.locator = Some(sentinel.clone());
                    endpoint.tls_name_from_host =
                        s.tls.as_ref().is_none_or(|x| x.server_name.is_none());
                    Some(sentinel)
                }
            };
            if let Some(source) = &t.discovery {
                let discovery =
                    Discovery::new(source.clone(), s.discovery_resolver, s.discovery_interval);
                let endpoint = node_endpoint(t, client_name.clone());
                let errors = metrics.discovery(&t.name);
                auto = Some(ListedNodes::Dns(Box::new(DnsNodes {
                    discovery,
                    endpoint,
                    errors,
                })));
            }
            let nodes = t.nodes.iter().map(endpoint_for).collect::<Result<Vec<_>, _>>()?;
            Ok((
                Arc::new(TargetState::new(t, &shared, endpoint, nodes)),
                sentinel,
                auto,
            ))
        })
        .collect()
}

/// Runs the canary until `shutdown`, serving HTTP on `listener`; returns the targets'
/// final state (for the soak report) once everything has stopped.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    with_stats: bool,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::new());
    let tracing = Tracing::start(
        config.telemetry.otlp_endpoint.as_deref(),
        config.telemetry.sample_ratio,
    )
    .map_err(|e| StartError {
        key: "telemetry.otlp_endpoint".into(),
        message: e.to_string(),
    })?
    .map(Arc::new);
    let prepared = prepare_with_topology(config, clock, &metrics, with_stats, tracing.clone())?;
    let sentinels: Vec<Arc<Sentinel>> = prepared.iter().filter_map(|(_, s, _)| s.clone()).collect();
    let mut autos = Vec::new();
    let targets: Vec<Arc<TargetState>> = prepared
        .into_iter()
        .map(|(t, _, auto)| {
            autos.push(auto);
            t
        })
        .collect();
    let probing = |t: &TargetState| !t.settings.connect_probe_interval.is_zero();
    let loops_expected = targets.iter().map(|t| 2 + usize::from(probing(t))).sum();
    let state = Arc::new(AppState {
        metrics: metrics.clone(),
        targets: targets.clone(),
        loops_alive: Default::default(),
        loops_expected,
        instance: config.instance.clone(),
    });
    // HTTP keeps answering while the loops drain; it gets its own trigger.
    let (http_stop, http_shutdown) = shutdown::channel();
    // On a thread of its own, so that encoding /metrics never delays an operation.
    let http = listener
        .into_std()
        .and_then(|l| http::spawn(l, state.clone(), http_shutdown))
        .map_err(|e| StartError {
            key: "listen".into(),
            message: format!("cannot serve HTTP: {e}"),
        })?;
    tracing::info!(
        targets = targets.len(),
        instance = %config.instance,
        "redis-canary started"
    );

    let mut loops = Vec::new();
    for ((i, t), auto) in targets.iter().enumerate().zip(autos) {
        let period = match t.settings.rate {
            Rate::PerSecond(r) => 1.0 / r,
            Rate::Max => 0.0,
        };
        // Spread tick phases across targets, but in groups: waking the process is most of
        // what a canary at monitoring rates costs, and one wake-up can start the operations
        // of many targets. A group is up to TARGETS_PER_INSTANT targets, a target's writer,
        // reader and probe share its instant, and instants lie on a 20 ms grid.
        let phase = tick_phase(i, targets.len(), period);
        let mut ops = vec![(Op::Write, phase), (Op::Read, phase)];
        if probing(t) {
            ops.push((Op::Probe, phase));
        }
        for (op, phase) in ops {
            let (t, sd) = (t.clone(), shutdown.clone());
            let alive = AliveGuard::new(&state);
            loops.push(tokio::spawn(async move {
                let _alive = alive;
                run_loop(t, op, Duration::from_secs_f64(phase), sd).await;
            }));
        }
        if !t.nodes.is_empty() || auto.is_some() {
            loops.push(tokio::spawn(run_nodes(t.clone(), auto, shutdown.clone())));
        }
    }
    for s in sentinels {
        loops.push(tokio::spawn(s.follow(shutdown.clone())));
    }
    let maintenance = {
        let (targets, mut sd) = (targets.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sd.wait() => break,
                }
                for t in &targets {
                    t.expire_backends();
                }
            }
        })
    };

    let mut sd = shutdown.clone();
    sd.wait().await;
    let began = Instant::now();
    let drained = tokio::time::timeout(DRAIN_BUDGET, async {
        for l in loops {
            let _ = l.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some operations were still in flight at the end of the drain budget");
    }
    maintenance.abort();
    if with_stats {
        for t in &targets {
            t.close_open_episode();
        }
    }
    if config.cleanup {
        let deadline = Instant::now() + CLEANUP_BUDGET;
        for t in &targets {
            t.cleanup(deadline).await;
        }
    }
    if let Some(tracing) = &tracing {
        tracing.shutdown(TRACE_FLUSH_BUDGET).await;
    }
    http_stop.trigger();
    let _ = tokio::time::timeout(http::SHUTDOWN_GRACE * 2, http.finished()).await;
    tracing::info!(
        took_ms = began.elapsed().as_millis() as u64,
        "redis-canary stopped"
    );
    Ok(targets)
}

/// Most targets whose ticks share one instant (before the grid below merges instants): 16
/// targets start at most 48 operations at once, a burst no server or proxy notices.
const TARGETS_PER_INSTANT: usize = 16;

/// Tick phases are multiples of this: with 200 targets at 1 op/s, 13 instants a second; with
/// 1,000, 63 groups on 50 instants of about 20 targets each.
const PHASE_GRID: f64 = 0.020;

/// The phase, in seconds into its first period, of the ticks of target `index` of `targets`.
fn tick_phase(index: usize, targets: usize, period: f64) -> f64 {
    let groups = targets.div_ceil(TARGETS_PER_INSTANT).max(1);
    let phase = period * (index % groups) as f64 / groups as f64;
    (phase / PHASE_GRID).floor() * PHASE_GRID
}

/// Counts a scheduling loop as alive for `/healthz` while it exists, panics included.
struct AliveGuard(Arc<AppState>);

impl AliveGuard {
    fn new(state: &Arc<AppState>) -> AliveGuard {
        state.loops_alive.fetch_add(1, Ordering::Relaxed);
        AliveGuard(state.clone())
    }
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.loops_alive.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instants(targets: usize, period: f64) -> std::collections::BTreeMap<u64, usize> {
        let mut at = std::collections::BTreeMap::new();
        for i in 0..targets {
            let phase = tick_phase(i, targets, period);
            assert!((0.0..period.max(PHASE_GRID)).contains(&phase), "{phase}");
            *at.entry((phase * 1e6).round() as u64).or_default() += 1;
        }
        at
    }

    #[test]
    fn a_few_targets_share_one_instant() {
        assert_eq!(instants(1, 0.1).into_iter().collect::<Vec<_>>(), [(0, 1)]);
        assert_eq!(instants(10, 0.1).into_iter().collect::<Vec<_>>(), [(0, 10)]);
        assert_eq!(instants(16, 1.0).len(), 1);
    }

    #[test]
    fn many_targets_spread_in_groups_on_the_grid() {
        let at = instants(200, 1.0);
        assert_eq!(at.len(), 13, "{at:?}");
        assert!(at.values().all(|&n| n <= TARGETS_PER_INSTANT), "{at:?}");
        let at = instants(1000, 1.0);
        // 63 groups merge on the 50 instants of the 20 ms grid.
        assert_eq!(at.len(), 50, "{at:?}");
        assert!(at.values().all(|&n| n <= 2 * TARGETS_PER_INSTANT), "{at:?}");
        for us in at.keys() {
            assert_eq!(us % 20_000, 0, "{us} is off the grid");
        }
        // At rate "max" (period 0) everything starts at once.
        assert_eq!(instants(50, 0.0).into_iter().collect::<Vec<_>>(), [(0, 50)]);
    }
}
