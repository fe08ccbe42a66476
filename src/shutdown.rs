//! Shutdown and reload plumbing: one signal handler for the process (SIGTERM from
//! Kubernetes, SIGINT from a terminal, SIGHUP asking for a reload), a cheap cloneable
//! [`Shutdown`] handle that every loop selects on, and the [`ReloadRequest`]s that SIGHUP
//! and `POST /-/reload` send to the daemon (DESIGN §14).

use tokio::sync::{mpsc, oneshot, watch};

/// Triggers shutdown for every [`Shutdown`] handle cloned from it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A handle that resolves once shutdown has been triggered.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new handle for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown begins (at once if it already has). A dropped trigger counts
    /// as shutdown, so nothing waits forever.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A request to re-read the configuration; the daemon handles one at a time.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked, for the log: `"SIGHUP"` or `"POST /-/reload"`.
    pub from: &'static str,
    /// Where the outcome goes (`POST /-/reload` waits for it; SIGHUP does not).
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// What a reload did, for the one who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Whether the new configuration was applied (false: rejected whole, the old one runs).
    pub applied: bool,
    /// One line per fact: the summary, or every problem (secrets masked); and the keys that
    /// need a restart.
    pub text: String,
}

/// Reload requests queued at most: one running and a few waiting is more than any
/// operator sends; SIGHUPs beyond it are merged into the one already waiting.
pub const RELOAD_QUEUE: usize = 4;

/// A connected sender (for SIGHUP and HTTP) and receiver (for the daemon) of reloads.
pub fn reload_channel() -> (mpsc::Sender<ReloadRequest>, mpsc::Receiver<ReloadRequest>) {
    mpsc::channel(RELOAD_QUEUE)
}

/// Installs the SIGTERM, SIGINT and SIGHUP handlers now and returns a future that resolves
/// on the first SIGTERM or SIGINT. SIGHUP is logged and ignored (SIGHUP's default action
/// ends the process, which must not happen to an operator expecting a reload); use
/// [`signals_with_reload`] where reloads exist. Call it before any work starts, so a signal
/// during startup is not lost.
pub fn signals() -> std::io::Result<impl Future<Output = ()>> {
    signals_with_reload(None)
}

/// Like [`signals`], with every SIGHUP sent to `reloads` as a [`ReloadRequest`].
pub fn signals_with_reload(
    reloads: Option<mpsc::Sender<ReloadRequest>>,
) -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => break tracing::info!("SIGINT received, shutting down"),
                _ = hup.recv() => hangup(reloads.as_ref()),
            }
        }
    })
}

fn hangup(reloads: Option<&mpsc::Sender<ReloadRequest>>) {
    let Some(reloads) = reloads else {
        return tracing::warn!(
            "SIGHUP received and ignored: this mode does not reload, restart to apply a new configuration"
        );
    };
    let request = ReloadRequest {
        from: "SIGHUP",
        reply: None,
    };
    match reloads.try_send(request) {
        Ok(()) => tracing::info!("SIGHUP received, reloading the configuration"),
        Err(mpsc::error::TrySendError::Full(_)) => tracing::info!(
            "SIGHUP received while reloads are queued: the queued reload will read the configuration"
        ),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::warn!("SIGHUP received while shutting down: ignored")
        }
    }
}
