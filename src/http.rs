//! The HTTP endpoints of DESIGN §5 on one hyper server: `/metrics` (OpenMetrics, or
//! Prometheus text on request), `/healthz`, `/readyz`, the `/` status page, 404 otherwise.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::canary::TargetState;
use crate::metrics::{Metrics, to_prometheus_text};
use crate::op::Op;
use crate::shutdown::Shutdown;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub targets: Vec<Arc<TargetState>>,
    /// Scheduling loops running now, and how many there should be (`/healthz`).
    pub loops_alive: AtomicUsize,
    pub loops_expected: usize,
    pub instance: String,
}

/// Serves until `shutdown`; connections in progress are served to the end of their request.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, mut shutdown: Shutdown) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => metrics(state, req),
        "/healthz" => {
            let alive = state.loops_alive.load(Ordering::Relaxed);
            if alive >= state.loops_expected {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "{alive} of {} scheduling loops alive\n",
                        state.loops_expected
                    ),
                )
            }
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/" => html(status_page(state)),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
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

fn html(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

/// Escapes text for HTML: server replies in error messages are untrusted.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn status_page(state: &AppState) -> String {
    let mut p = String::with_capacity(4096);
    let _ = write!(
        p,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>redis-canary</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}}\
         .ok{{color:#070}}.bad{{color:#b00;font-weight:bold}}</style></head><body>\
         <h1>redis-canary</h1><p>instance <code>{}</code> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>\
         <table><tr><th>target</th><th>endpoint</th><th>state</th><th>writes ok/recovered/failed</th>\
         <th>reads ok/recovered/failed</th><th>disruptions</th><th>last error</th></tr>",
        escape(&state.instance)
    );
    for t in &state.targets {
        let m = &t.metrics;
        let counts = |op: Op| {
            use crate::op::Outcome::*;
            let o = m.op(op);
            format!(
                "{}/{}/{}",
                o.outcome(Ok).get(),
                o.outcome(Recovered).get(),
                o.outcome(Failed).get()
            )
        };
        let (class, state_text) = if t.is_disrupted() {
            ("bad", "DISRUPTED")
        } else {
            ("ok", "ok")
        };
        let last_error = t
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| {
                format!(
                    "{} {} {}: {}",
                    format_unix(e.at_unix),
                    e.op,
                    e.result,
                    escape(&e.message)
                )
            })
            .unwrap_or_else(|| "none".into());
        let _ = write!(
            p,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{class}\">{state_text}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&t.url_display),
            counts(Op::Write),
            counts(Op::Read),
            m.disruptions.get(),
            last_error
        );
    }
    p.push_str("</table></body></html>\n");
    p
}

/// Formats a Unix time as RFC 3339 UTC, second precision.
pub fn format_unix(secs: f64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs.max(0.0)),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_inject_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
