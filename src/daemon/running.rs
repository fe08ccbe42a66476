//! The running targets: each one's loops started with a trigger of its own, published to
//! HTTP and the gauges, and, on a reload (DESIGN §14), the added ones started, the removed
//! ones stopped and the changed ones restarted, the unchanged ones left alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, Rate, Target};
use crate::fleet::{self, Plan};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::op::Op;
use crate::schedule::run_loop;
use crate::shutdown::{self, ReloadOutcome, Shutdown, Trigger};
use crate::target::{Shared, TargetState};
use crate::telemetry::Tracing;
use crate::workload::run_nodes;

use super::prepare::{Prepared, prepare_target};
use super::{CLEANUP_BUDGET, DRAIN_BUDGET, LOG_TARGET, Loader};

/// One running target: its resolved configuration, state, own shutdown and tasks.
pub(super) struct Running {
    pub(super) target: Target,
    pub(super) state: Arc<TargetState>,
    pub(super) stop: Trigger,
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// Its loops counted by `/healthz`.
    pub(super) loops: usize,
}

/// The targets running and what they share.
pub(super) struct Fleet {
    /// The configuration in effect: the last one applied, with the keys that need a restart
    /// as they were at start.
    pub(super) config: Config,
    pub(super) clock: Clock,
    pub(super) metrics: Arc<Metrics>,
    pub(super) with_stats: bool,
    pub(super) tracing: Option<Arc<Tracing>>,
    pub(super) state: Arc<AppState>,
    pub(super) running: BTreeMap<String, Running>,
}

/// Whether target `t` runs the fresh-connection probe loop.
fn probing(t: &TargetState) -> bool {
    !t.settings.connect_probe_interval.is_zero()
}

impl Fleet {
    pub(super) fn shared(&self) -> Shared<'_> {
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
    pub(super) fn start(
        &mut self,
        target: &Target,
        prepared: Prepared,
        index: usize,
        count: usize,
    ) {
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
    pub(super) fn publish(&self) {
        let targets: Vec<Arc<TargetState>> = fleet::owned(&self.config)
            .iter()
            .filter_map(|t| self.running.get(&t.name).map(|r| r.state.clone()))
            .collect();
        self.metrics.shard_targets.set(targets.len() as i64);
        self.state.set_targets(targets);
    }

    /// Reads the configuration again and applies it, or rejects it whole.
    pub(super) async fn reload(&mut self, load: &Loader, shutdown: &Shutdown) -> ReloadOutcome {
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
                tracing::error!(target: LOG_TARGET,
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
    pub(super) async fn try_reload(
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
                    tracing::error!(target: LOG_TARGET, target_name = %t.name, error = %e, "configuration reload: target not started");
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
            tracing::warn!(target: LOG_TARGET, keys = %keys, "configuration reload: these keys changed and need a restart; the running values stay");
            text.push_str(&format!(
                "needs a restart to apply: {keys} (the running values stay until then)\n"
            ));
        }
        tracing::info!(target: LOG_TARGET,
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
    pub(super) async fn retire(&self, targets: Vec<Running>, cleanup: bool, shutdown: &Shutdown) {
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
            tracing::info!(target: LOG_TARGET, target_name = %t.name, "target stopped and its series removed");
        }
    }
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
