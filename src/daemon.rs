//! Wiring: builds every owned target's state from the configuration, serves HTTP, runs the
//! scheduling loops until shutdown, then drains them within the shutdown budget. Reloads
//! (DESIGN §14) start added targets, stop removed ones and restart changed ones, each with
//! a shutdown trigger of its own, and leave unchanged ones alone. Both the `run` and the
//! `soak` modes (and the tests) come through [`run`] or [`run_reloadable`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, Mode, Rate, Target};
use crate::conn::Endpoint;
use crate::fleet::{self, Plan};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::op::Op;
use crate::schedule::run_loop;
use crate::shutdown::{self, ReloadOutcome, ReloadRequest, Shutdown, Trigger};
use crate::target::{Shared, TargetState};
use crate::telemetry::Tracing;
use crate::tls;
use crate::topology::cluster::Cluster;
use crate::topology::cluster::book::ShardBook;
use crate::topology::cluster::map::Addr;
use crate::topology::dns::{Discovery, DnsNodes};
use crate::topology::sentinel::{AutoNodes, NodeEndpoint, Sentinel};
use crate::workload::{ListedNodes, run_nodes};

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

/// Builds the per-target states of the targets this replica owns; fails only on settings
/// that cannot work (TLS files).
pub fn prepare(
    config: &Config,
    clock: Clock,
    metrics: &Metrics,
    with_stats: bool,
    tracing: Option<Arc<Tracing>>,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    let shared = Shared {
        instance: &config.instance,
        clock,
        metrics,
        with_stats,
        tracing,
    };
    fleet::owned_with_index(config)
        .into_iter()
        .map(|(i, t)| prepare_target(i, t, &shared).map(|(t, _, _)| t))
        .collect()
}

/// A target's state and, for a sentinel target, its sentinel side to follow and, with
/// `nodes = "auto"` or `"dns://..."`, the nodes listed to follow.
type Prepared = (Arc<TargetState>, Option<Arc<Sentinel>>, Option<ListedNodes>);

/// Builds the state of target `t` (`targets[i]` of the configuration, for messages) and its
/// topology side, creating its series at 0. Fails only on settings that cannot work.
fn prepare_target(i: usize, t: &Target, shared: &Shared<'_>) -> Result<Prepared, StartError> {
    let metrics = shared.metrics;
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
    let client_name = format!("redis-canary/{}/{}", shared.instance, t.name);
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
    let mut cluster = None;
    let sentinel = match &t.mode {
        Mode::Standalone => None,
        Mode::Cluster(c) => {
            let seeds = c
                .seeds
                .iter()
                .map(|u| Addr {
                    host: u.host.clone(),
                    port: u.port,
                })
                .collect();
            let book = Arc::new(ShardBook::new(&t.name, &metrics.cluster, shared.clock));
            let c = Cluster::new(
                &t.name,
                endpoint.clone(),
                seeds,
                c.refresh,
                s.response_timeout,
                metrics.cluster.target(&t.name),
                book,
                c.nodes_auto,
            );
            if let Some(replicas) = c.replicas() {
                let endpoint = node_endpoint(t, &client_name);
                auto = Some(ListedNodes::Sentinel(AutoNodes { replicas, endpoint }));
            }
            cluster = Some(c);
            None
        }
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
                let endpoint = node_endpoint(t, &client_name);
                auto = Some(ListedNodes::Sentinel(AutoNodes { replicas, endpoint }));
            }
            endpoint.locator = Some(sentinel.clone());
            endpoint.tls_name_from_host = s.tls.as_ref().is_none_or(|x| x.server_name.is_none());
            Some(sentinel)
        }
    };
    if let Some(source) = &t.discovery {
        let discovery = Discovery::new(source.clone(), s.discovery_resolver, s.discovery_interval);
        let endpoint = node_endpoint(t, &client_name);
        let errors = metrics.discovery(&t.name);
        auto = Some(ListedNodes::Dns(Box::new(DnsNodes {
            discovery,
            endpoint,
            errors,
        })));
    }
    let nodes = t
        .nodes
        .iter()
        .map(endpoint_for)
        .collect::<Result<Vec<_>, _>>()?;
    let mut state = TargetState::new(t, shared, endpoint, nodes);
    state.cluster = cluster;
    Ok((Arc::new(state), sentinel, auto))
}

/// The endpoint of a data node the topology lists (`nodes = "auto"`): the target's
/// credentials, database and TLS, like static nodes.
fn node_endpoint(target: &Target, client_name: &str) -> NodeEndpoint {
    let (target, client_name) = (target.clone(), client_name.to_string());
    Box::new(move |host: &str, port: u16| {
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
    })
}

/// How `run_reloadable` re-reads the configuration: from the sources it came from at start
/// (file, environment, flags). Given `Some(instance)`, the instance is pinned to it, so that
/// targets resolve against the instance that runs (it changes only with a restart).
pub type Loader = Box<dyn Fn(Option<&str>) -> Result<Config, ConfigErrors> + Send + Sync>;

/// Runs the canary until `shutdown`, serving HTTP on `listener`; returns the targets'
/// final state (for the soak report) once everything has stopped. No reloads.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    with_stats: bool,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    serve(config, listener, shutdown, with_stats, None).await
}

/// Like [`run`] (without soak statistics), reloading the configuration with `load` on every
/// request received on `requests`, which `sender` (for `POST /-/reload`) also feeds.
pub async fn run_reloadable(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    requests: mpsc::Receiver<ReloadRequest>,
    sender: mpsc::Sender<ReloadRequest>,
    load: Loader,
) -> Result<(), StartError> {
    serve(
        config,
        listener,
        shutdown,
        false,
        Some((requests, sender, load)),
    )
    .await
    .map(drop)
}

/// One running target: its resolved configuration, state, own shutdown and tasks.
struct Running {
    target: Target,
    state: Arc<TargetState>,
    stop: Trigger,
    tasks: Vec<JoinHandle<()>>,
    /// Its loops counted by `/healthz`.
    loops: usize,
}

/// The targets running and what they share.
struct Fleet {
    /// The configuration in effect: the last one applied, with the keys that need a restart
    /// as they were at start.
    config: Config,
    clock: Clock,
    metrics: Arc<Metrics>,
    with_stats: bool,
    tracing: Option<Arc<Tracing>>,
    state: Arc<AppState>,
    running: BTreeMap<String, Running>,
}

/// Whether target `t` runs the fresh-connection probe loop.
fn probing(t: &TargetState) -> bool {
    !t.settings.connect_probe_interval.is_zero()
}

impl Fleet {
    fn shared(&self) -> Shared<'_> {
        Shared {
            instance: &self.config.instance,
            clock: self.clock,
            metrics: &self.metrics,
            with_stats: self.with_stats,
            tracing: self.tracing.clone(),
        }
    }

    /// Starts the loops of a prepared target, `index` of `count` owned targets (for its
    /// tick phase).
    fn start(&mut self, target: &Target, prepared: Prepared, index: usize, count: usize) {
        let (t, sentinel, auto) = prepared;
        let (stop, shutdown) = shutdown::channel();
        let period = match t.settings.rate {
            Rate::PerSecond(r) => 1.0 / r,
            Rate::Max => 0.0,
        };
        // Spread tick phases across targets, but in groups: waking the process is most of
        // what a canary at monitoring rates costs, and one wake-up can start the operations
        // of many targets. A group is up to TARGETS_PER_INSTANT targets, a target's writer,
        // reader and probe share its instant, and instants lie on a 20 ms grid.
        let phase = tick_phase(index, count, period);
        let mut ops = vec![(Op::Write, phase), (Op::Read, phase)];
        if probing(&t) {
            ops.push((Op::Probe, phase));
        }
        let loops = ops.len();
        let mut tasks = Vec::new();
        // A cluster target operates once it knows its slot map (or its first refresh gave
        // up): operations sent before would all go to a seed and be redirected.
        let learned_by = tokio::time::Instant::now()
            + t.settings.connect_timeout
            + 2 * t.settings.response_timeout;
        if let Some(c) = &t.cluster {
            tasks.push(tokio::spawn(c.clone().follow(shutdown.clone())));
        }
        for (op, phase) in ops {
            let (t, mut sd) = (t.clone(), shutdown.clone());
            let alive = AliveGuard::new(&self.state);
            tasks.push(tokio::spawn(async move {
                let _alive = alive;
                if let Some(c) = &t.cluster {
                    tokio::select! {
                        _ = c.learned(learned_by) => {}
                        _ = sd.wait() => return,
                    }
                }
                run_loop(t, op, Duration::from_secs_f64(phase), sd).await;
            }));
        }
        if !t.nodes.is_empty() || auto.is_some() {
            tasks.push(tokio::spawn(run_nodes(t.clone(), auto, shutdown.clone())));
        }
        if let Some(s) = sentinel {
            tasks.push(tokio::spawn(s.follow(shutdown)));
        }
        self.state
            .loops_expected
            .fetch_add(loops, Ordering::Relaxed);
        self.running.insert(
            t.name.clone(),
            Running {
                target: target.clone(),
                state: t,
                stop,
                tasks,
                loops,
            },
        );
    }

    /// Publishes the running targets, in configuration order, to HTTP and the gauges.
    fn publish(&self) {
        let targets: Vec<Arc<TargetState>> = fleet::owned(&self.config)
            .iter()
            .filter_map(|t| self.running.get(&t.name).map(|r| r.state.clone()))
            .collect();
        self.metrics.shard_targets.set(targets.len() as i64);
        self.state.set_targets(targets);
    }

    /// Reads the configuration again and applies it, or rejects it whole.
    async fn reload(&mut self, load: &Loader, shutdown: &Shutdown) -> ReloadOutcome {
        match self.try_reload(load, shutdown).await {
            Ok(text) => {
                self.metrics.config_reload_ok.set(1);
                self.metrics
                    .config_reload_at
                    .set(self.clock.unix_secs(self.clock.now_us()));
                ReloadOutcome {
                    applied: true,
                    text,
                }
            }
            Err(problems) => {
                self.metrics.config_reload_ok.set(0);
                tracing::error!(
                    problems = %problems.join("; "),
                    "configuration reload rejected: the previous configuration keeps running"
                );
                let mut text = String::from(
                    "configuration rejected, the previous configuration keeps running:\n",
                );
                for p in problems {
                    text.push_str(&p);
                    text.push('\n');
                }
                ReloadOutcome {
                    applied: false,
                    text,
                }
            }
        }
    }

    /// Applies a new configuration; every problem, masked, when it cannot be applied.
    async fn try_reload(
        &mut self,
        load: &Loader,
        shutdown: &Shutdown,
    ) -> Result<String, Vec<String>> {
        let lines = |e: ConfigErrors| e.0.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mut new = load(None).map_err(lines)?;
        let restart = fleet::needs_restart(&self.config, &new);
        if new.instance != self.config.instance {
            // Resolve the targets (key prefixes) against the instance that runs.
            new = load(Some(&self.config.instance)).map_err(lines)?;
        }
        new.listen = self.config.listen;
        new.instance = self.config.instance.clone();
        new.log_format = self.config.log_format;
        new.telemetry = self.config.telemetry.clone();

        let old: Vec<&Target> = self.running.values().map(|r| &r.target).collect();
        let owned = fleet::owned_with_index(&new);
        let count = owned.len();
        let plan = Plan::between(&old, &owned.iter().map(|(_, t)| *t).collect::<Vec<_>>());
        let starting: std::collections::HashSet<&str> = plan
            .added
            .iter()
            .chain(&plan.changed)
            .map(String::as_str)
            .collect();
        // (index in the file, index among the owned targets, target)
        let to_start: Vec<(usize, usize, &Target)> = owned
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| starting.contains(t.name.as_str()))
            .map(|(index, (i, t))| (*i, index, *t))
            .collect();
        // Everything that can fail is tried before anything stops, one target at a time
        // against a registry of its own (a changed target's series are still the running
        // one's), so that the trial never holds more than one target's state.
        let problems: Vec<String> = to_start
            .iter()
            .filter_map(|(i, _, t)| {
                let scratch = Metrics::with_profile(self.config.metrics_profile);
                let trial = Shared {
                    instance: &new.instance,
                    clock: self.clock,
                    metrics: &scratch,
                    with_stats: false,
                    tracing: None,
                };
                prepare_target(*i, t, &trial).err()
            })
            .map(|e| e.to_string())
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }

        let retiring: Vec<Running> = plan
            .removed
            .iter()
            .chain(&plan.changed)
            .filter_map(|name| self.running.remove(name))
            .collect();
        self.retire(retiring, new.cleanup, shutdown).await;
        let mut failed = Vec::new();
        for (i, index, t) in &to_start {
            match prepare_target(*i, t, &self.shared()) {
                Ok(prepared) => self.start(t, prepared, *index, count),
                // The trial passed a moment ago; a TLS file changed since. The next reload
                // tries it again (it is not running, so it counts as added).
                Err(e) => {
                    tracing::error!(target_name = %t.name, error = %e, "configuration reload: target not started");
                    failed.push(e.to_string());
                }
            }
        }
        let shard = new.shard;
        self.config = new;
        self.publish();
        let mut text = format!("configuration reloaded: {}\n", plan.summary());
        if let Some(s) = shard {
            text.push_str(&format!(
                "shard {s}: this replica runs {count} of {} targets\n",
                self.config.targets.len()
            ));
        }
        for e in &failed {
            text.push_str(&format!("not started: {e}\n"));
        }
        if !restart.is_empty() {
            let keys = restart.join(", ");
            tracing::warn!(keys = %keys, "configuration reload: these keys changed and need a restart; the running values stay");
            text.push_str(&format!(
                "needs a restart to apply: {keys} (the running values stay until then)\n"
            ));
        }
        tracing::info!(
            added = plan.added.len(),
            removed = plan.removed.len(),
            changed = plan.changed.len(),
            unchanged = plan.unchanged.len(),
            "configuration reloaded: {}",
            plan.summary()
        );
        Ok(text)
    }

    /// Stops `targets`: their loops end through their own triggers (within the drain
    /// budget, or at once when shutdown begins meanwhile), their keys are deleted when
    /// `cleanup`, and then every series of theirs goes.
    async fn retire(&self, targets: Vec<Running>, cleanup: bool, shutdown: &Shutdown) {
        if targets.is_empty() {
            return;
        }
        let loops: usize = targets.iter().map(|r| r.loops).sum();
        self.state
            .loops_expected
            .fetch_sub(loops, Ordering::Relaxed);
        for r in &targets {
            r.stop.trigger();
        }
        let mut sd = shutdown.clone();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut states = Vec::new();
        for r in targets {
            tasks.extend(r.tasks);
            states.push(r.state);
        }
        let all = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(DRAIN_BUDGET, all) => {}
            _ = sd.wait() => {}
        }
        // What is still running (shutdown began, or an attempt outlived the budget) is
        // stopped now, before its series go, so that it cannot create them again.
        for t in tasks {
            if !t.is_finished() {
                t.abort();
                let _ = t.await;
            }
        }
        if cleanup && !shutdown.is_triggered() {
            let deadline = Instant::now() + CLEANUP_BUDGET;
            for t in &states {
                t.cleanup(deadline).await;
            }
        }
        for t in &states {
            self.metrics.remove_target(&t.name, &t.open_series());
            if let Some(c) = &t.cluster {
                c.book.remove_all();
            }
            tracing::info!(target_name = %t.name, "target stopped and its series removed");
        }
    }
}

/// The reload side of [`serve`]: requests, the sender HTTP uses, and the loader.
type Reloads = (
    mpsc::Receiver<ReloadRequest>,
    mpsc::Sender<ReloadRequest>,
    Loader,
);

async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
    with_stats: bool,
    reloads: Option<Reloads>,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::with_profile(config.metrics_profile));
    let tracing = Tracing::start(
        config.telemetry.otlp_endpoint.as_deref(),
        config.telemetry.sample_ratio,
    )
    .map_err(|e| StartError {
        key: "telemetry.otlp_endpoint".into(),
        message: e.to_string(),
    })?
    .map(Arc::new);
    let (mut requests, sender, load) = match reloads {
        Some((r, s, l)) => (Some(r), Some(s), Some(l)),
        None => (None, None, None),
    };
    let state = Arc::new(AppState::new(
        metrics.clone(),
        Vec::new(),
        config.instance.clone(),
        sender,
    ));
    let mut fleet = Fleet {
        config: config.clone(),
        clock,
        metrics: metrics.clone(),
        with_stats,
        tracing: tracing.clone(),
        state: state.clone(),
        running: BTreeMap::new(),
    };
    let owned = fleet::owned_with_index(config);
    let mut prepared = Vec::new();
    for (i, t) in &owned {
        prepared.push(prepare_target(*i, t, &fleet.shared())?);
    }
    metrics.config_reload_ok.set(1);
    metrics.config_reload_at.set(clock.unix_secs(0));
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
    let count = owned.len();
    for (index, ((_, t), p)) in owned.iter().zip(prepared).enumerate() {
        fleet.start(t, p, index, count);
    }
    fleet.publish();
    match config.shard {
        Some(s) => tracing::info!(
            targets = count,
            of = config.targets.len(),
            shard = %s,
            instance = %config.instance,
            "redis-canary started"
        ),
        None => tracing::info!(
            targets = count,
            instance = %config.instance,
            "redis-canary started"
        ),
    }

    let maintenance = {
        let (state, mut sd) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = sd.wait() => break,
                }
                for t in state.targets().iter() {
                    t.expire_backends();
                }
            }
        })
    };

    // This loop runs in the caller's task: in the binary that is the main thread under
    // `block_on`, not a runtime worker, so parsing and building a new configuration of
    // thousands of targets never delays the measuring loops.
    let mut sd = shutdown.clone();
    loop {
        let request = async {
            match requests.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = sd.wait() => break,
            request = request => {
                let Some(request) = request else { continue };
                let Some(load) = &load else { continue };
                tracing::info!(from = request.from, "reloading the configuration");
                let outcome = fleet.reload(load, &shutdown).await;
                if let Some(reply) = request.reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
    // No more reloads: a POST waiting for its turn gets a 503.
    drop(requests);
    let began = Instant::now();
    let running: Vec<Running> = std::mem::take(&mut fleet.running).into_values().collect();
    for r in &running {
        r.stop.trigger();
    }
    let targets: Vec<Arc<TargetState>> = fleet.state.targets().iter().cloned().collect();
    let drained = tokio::time::timeout(DRAIN_BUDGET, async {
        for r in running {
            for t in r.tasks {
                let _ = t.await;
            }
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
    if fleet.config.cleanup {
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
