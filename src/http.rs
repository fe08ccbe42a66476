//! The HTTP endpoints of DESIGN §5: `/metrics` (OpenMetrics, or Prometheus text on request),
//! `/healthz`, `/readyz`, the `/` status page and its JSON twin `/api/v1/status` (DESIGN
//! §13), `POST /-/reload` (DESIGN §14), 404 otherwise.
//!
//! The server runs on an OS thread of its own with a current-thread Tokio runtime
//! ([`spawn`]): encoding `/metrics` (23.5 MB at 1,000 targets) never runs on the runtime
//! that times the operations. It cannot be starved by its clients: a request head must
//! arrive within [`HEADER_READ_TIMEOUT`] (which also ends idle keep-alive connections), a
//! response must be taken within [`RESPONSE_WRITE_TIMEOUT`], and at most
//! [`connection_limit`] connections are open at once; past that a new connection evicts the
//! oldest idle or half-sent one (see [`serve`] for why that and not refusing; the
//! bookkeeping of open connections and the write deadline are in `connections`).

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Metrics, to_prometheus_text};
use crate::shutdown::{ReloadOutcome, ReloadRequest, Shutdown};
use crate::target::TargetState;

mod api;
mod connections;
mod status_page;

pub use api::{SCHEMA as STATUS_SCHEMA, TargetView};
use connections::{Connections, Registered, WriteDeadline};
pub use status_page::{escape, format_unix};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client gets to send a whole request head. Prometheus and kubelet send theirs
/// in one packet, so only a stalled or hostile client ever meets it. hyper starts the same
/// timer while a kept-alive connection waits for its next request, so this is also the idle
/// keep-alive timeout: a scraper every 10-15 s reconnects for each scrape (one cheap
/// loopback or LAN handshake) instead of the canary holding a socket for a client that may
/// never come back.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a response may take to be handed to the kernel, from its first byte. A slow or
/// stopped reader otherwise pins its task and its socket for ever. 30 s is three times
/// Prometheus' default scrape timeout (a scrape that slow is discarded by Prometheus anyway)
/// and moves the largest exposition (23.5 MB at 1,000 targets) at under 1 MB/s.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections open at once. Scrapers, probes and people need a handful; 256 leaves
/// room for many Prometheus replicas and dashboards while keeping the worst case at 256
/// sockets and 256 small read buffers.
pub const MAX_CONNECTIONS: usize = 256;

/// The HTTP server uses at most 1/`FD_SHARE` of the process's file descriptor limit, so a
/// flood of connections never takes the descriptors the measuring loops connect with (a
/// failed connect there would read as a disruption of a healthy target).
pub const FD_SHARE: u64 = 4;

/// Fewest connections allowed even under a tiny descriptor limit: a scraper, a probe, a
/// person and one spare.
pub const MIN_CONNECTIONS: usize = 4;

/// How long requests in flight get to finish once the server is told to stop. It runs after
/// the daemon's drain (3 s), cleanup (1 s) and trace flush (0.5 s): 0.25 s keeps the exit
/// inside the 5 s of DESIGN §3, and serving a scrape on loopback takes milliseconds.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`, 4096 by
/// default). Connections wait here until accepted; when it is full the kernel drops SYNs
/// and a scraper's connect waits for a retransmission (1 s, then 3 s), whatever the server
/// does. Tokio binds with 1,024; 4,096 outlasts a flood of several thousand clients that
/// reconnect as fast as they are evicted.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Read buffer bound per connection. Requests here are header-only GETs of well under 1 KiB;
/// hyper's default (about 400 KB) would let [`MAX_CONNECTIONS`] half-sent heads hold 100 MB.
const MAX_BUF_SIZE: usize = 16 * 1024;

/// Pause after an `accept` error (out of descriptors, mostly) so the loop does not spin
/// while the pending connection waits in the backlog.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Least time between two warnings about failing `accept`s.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How long `POST /-/reload` waits for its turn and for the reload: a reload stops removed
/// targets within the drain and cleanup budgets (4 s); a queue of a few is well inside this.
pub const RELOAD_ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// What the endpoints read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The targets running now; a reload swaps the whole list (see [`AppState::targets`]).
    targets: RwLock<Arc<Vec<Arc<TargetState>>>>,
    /// Scheduling loops running now, and how many there should be (`/healthz`).
    pub loops_alive: AtomicUsize,
    pub loops_expected: AtomicUsize,
    pub instance: String,
    /// Where `POST /-/reload` sends its request; `None` where reloads do not exist (soak).
    pub reloads: Option<mpsc::Sender<ReloadRequest>>,
}

impl AppState {
    /// State for `targets`, no loop alive or expected yet.
    pub fn new(
        metrics: Arc<Metrics>,
        targets: Vec<Arc<TargetState>>,
        instance: String,
        reloads: Option<mpsc::Sender<ReloadRequest>>,
    ) -> AppState {
        AppState {
            metrics,
            targets: RwLock::new(Arc::new(targets)),
            loops_alive: AtomicUsize::new(0),
            loops_expected: AtomicUsize::new(0),
            instance,
            reloads,
        }
    }

    /// The targets running now: a snapshot that a reload does not change under the reader.
    pub fn targets(&self) -> Arc<Vec<Arc<TargetState>>> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the list of running targets (after a reload).
    pub fn set_targets(&self, targets: Vec<Arc<TargetState>>) {
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(targets);
    }
}

/// The running server thread.
pub struct Server {
    finished: oneshot::Receiver<()>,
}

impl Server {
    /// Resolves once the server thread is done: at most [`SHUTDOWN_GRACE`] (plus closing the
    /// sockets) after its `shutdown` was triggered.
    pub async fn finished(self) {
        let _ = self.finished.await;
    }
}

/// Serves HTTP on `listener` from a new OS thread with a current-thread runtime of its own
/// until `shutdown`; then lets requests in flight finish for up to [`SHUTDOWN_GRACE`] and
/// closes every connection. Fails only if the runtime or the thread cannot be created.
pub fn spawn(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> io::Result<Server> {
    listener.set_nonblocking(true)?;
    // listen(2) again on a listening socket only changes its backlog.
    socket2::SockRef::from(&listener).listen(LISTEN_BACKLOG)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = connection_limit(open_files_limit());
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("redis-canary-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, state, shutdown, limit).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
                }
            });
            // Connections still open past the grace are cut off here.
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(Server { finished })
}

/// How many connections the server keeps open under a descriptor limit of `open_files`
/// (`None`: unlimited or unknown).
pub fn connection_limit(open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => usize::try_from(n / FD_SHARE)
            .unwrap_or(usize::MAX)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
        None => MAX_CONNECTIONS,
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux); `None` when
/// unlimited or unreadable.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The accept loop.
///
/// When `limit` connections are open, a new one is still accepted and the oldest idle
/// (kept alive between requests) or half-sent (still sending its head) connection is
/// closed to make room; only if every connection is mid-response does the oldest of those
/// go. The alternatives starve the scraper: leaving new connections in the backlog queues
/// a fresh scrape behind every stalled client until their header timeouts expire (5 s, far
/// past a scrape timeout), and accepting-and-closing refuses it outright. Evicting the
/// oldest keeps the newest, which a real scraper is (it sends its request at once and is
/// served in microseconds); a flood only ever evicts itself. The descriptors in use stay
/// at `limit` + 1: the loop yields after each eviction so the evicted task closes its
/// socket before the next `accept`.
async fn serve(listener: TcpListener, state: Arc<AppState>, mut shutdown: Shutdown, limit: usize) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_SIZE);
    let builder = Arc::new(builder);
    let open = Arc::new(Connections::default());
    let mut next_id = 0u64;
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_INTERVAL) {
                        tracing::warn!(error = %e, open = open.len(), "accepting an HTTP connection failed");
                        last_warning = Some(Instant::now());
                    }
                    if is_out_of_descriptors(&e) && open.evict_oldest(None) {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        let ctl = open.add(id);
        tokio::spawn(connection(
            stream,
            Registered(open.clone(), id, ctl),
            builder.clone(),
            state.clone(),
            shutdown.clone(),
        ));
        if open.len() > limit && open.evict_oldest(Some(id)) {
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await;
}

/// EMFILE (24) or ENFILE (23), Linux errno values.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// One connection: served until it ends, is evicted (closed at once), or shutdown begins
/// (the request in flight finishes, then it closes).
async fn connection(
    stream: TcpStream,
    registered: Registered,
    builder: Arc<http1::Builder>,
    state: Arc<AppState>,
    mut shutdown: Shutdown,
) {
    let ctl = registered.2.clone();
    let io = TokioIo::new(WriteDeadline {
        stream,
        ctl: ctl.clone(),
        deadline: None,
    });
    let busy = ctl.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        busy.busy.store(true, Ordering::Relaxed);
        let state = state.clone();
        async move {
            let response = if req.uri().path() == "/-/reload" {
                reload(&state, &req).await
            } else {
                route(&state, &req)
            };
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = ctl.evict.notified() => return,
        _ = shutdown.wait() => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = ctl.evict.notified() => {}
    }
}

fn route(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => metrics(state, req),
        "/healthz" => healthz(state),
        // Browsers ask for it on every page: no content, rather than a 404 in their console.
        "/favicon.ico" => empty(StatusCode::NO_CONTENT),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/" => html(status_page::render(state)),
        "/api/v1/status" => json(api::render(state)),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `POST /-/reload`: asks the daemon to re-read the configuration and answers with what it
/// did: 200 and a summary when applied, 400 and every problem when rejected (the old
/// configuration keeps running), 503 when reloads are not possible now.
async fn reload(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use POST\n",
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return response;
    }
    let Some(reloads) = &state.reloads else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available in this mode (soak): restart to apply a new configuration\n",
        );
    };
    let (reply, answer) = oneshot::channel();
    let request = ReloadRequest {
        from: "POST /-/reload",
        reply: Some(reply),
    };
    let asked = async {
        reloads.send(request).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(RELOAD_ANSWER_WITHIN, asked).await {
        Ok(Some(ReloadOutcome {
            applied,
            text: body,
        })) => {
            let status = if applied {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            text(status, &body)
        }
        Ok(None) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down: not reloaded\n",
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the daemon in time: the reload may still happen\n",
        ),
    }
}

/// 200 while every scheduling loop is alive, whatever the targets do. The canary's own
/// failures are reported on a line of their own (`internal_errors N`) and do not fail the
/// check: restarting the pod would not give it more descriptors or memory.
fn healthz(state: &AppState) -> Response<Full<Bytes>> {
    let alive = state.loops_alive.load(Ordering::Relaxed);
    let expected = state.loops_expected.load(Ordering::Relaxed);
    let internal: u64 = state
        .targets()
        .iter()
        .map(|t| t.metrics.internal_total())
        .sum();
    let (status, first) = if alive >= expected {
        (StatusCode::OK, "ok".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{alive} of {expected} scheduling loops alive"),
        )
    };
    text(status, &format!("{first}\ninternal_errors {internal}\n"))
}

fn metrics(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wants_text = accept.contains("text/plain") && !accept.contains("openmetrics");
    let body = state.metrics.encode_openmetrics();
    let (body, ct) = if wants_text {
        (to_prometheus_text(&body), PROMETHEUS_TEXT)
    } else {
        (body, OPENMETRICS)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, ct)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static headers are valid")
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("static headers are valid")
}

fn json(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

fn html(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_takes_a_quarter_of_the_descriptor_limit() {
        assert_eq!(connection_limit(None), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(1024)), 256);
        assert_eq!(connection_limit(Some(128)), 32);
        assert_eq!(connection_limit(Some(8)), MIN_CONNECTIONS);
    }

    #[test]
    fn the_descriptor_limit_is_read_from_proc() {
        // The test process has some finite or unlimited limit; either way it parses.
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let line = limits.lines().find(|l| l.starts_with("Max open files"));
            let unlimited = line.is_some_and(|l| l.contains("unlimited"));
            assert_eq!(open_files_limit().is_some(), !unlimited, "{line:?}");
        }
    }
}
