//! Shutdown plumbing: one signal handler for the process (SIGTERM from Kubernetes, SIGINT
//! from a terminal, SIGHUP ignored with a log line), and a cheap cloneable [`Shutdown`] handle that every loop selects on.

use tokio::sync::watch;

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

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on the
/// first of them. Call it before any work starts, so a signal during startup is not lost.
pub fn signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP's default action ends the process; an operator who sends it expecting a reload
    // must not lose the daemon. Until reloads exist it is logged and ignored.
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => break tracing::info!("SIGINT received, shutting down"),
                _ = hup.recv() => tracing::warn!(
                    "SIGHUP received and ignored: configuration reload is not supported yet, restart to apply a new configuration"
                ),
            }
        }
    })
}
