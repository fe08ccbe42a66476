//! Wiring: builds every owned target's state from the configuration, serves HTTP, runs the
//! scheduling loops until shutdown, then drains them within the shutdown budget. Reloads
//! (DESIGN §14) start added targets, stop removed ones and restart changed ones, each with
//! a shutdown trigger of its own, and leave unchanged ones alone. Both the `run` and the
//! `soak` modes (and the tests) come through [`run`] or [`run_reloadable`].
//!
//! Parts: this file holds the entry points and the start, serve and drain sequence;
//! `prepare` builds a target's state and topology side; `running` holds the running
//! targets and applies reloads to them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors};
use crate::fleet;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::shutdown::{self, ReloadRequest, Shutdown};
use crate::target::TargetState;
use crate::telemetry::Tracing;

mod prepare;
mod running;

pub use prepare::prepare;
use prepare::prepare_target;
use running::{Fleet, Running};

/// The `target` of the daemon's log lines, its parts' included: the one they had before
/// the module was split into files (JSON logs show it, `RUST_LOG` filters name it).
const LOG_TARGET: &str = "redis_canary::daemon";

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
