//! The `/` status page: each target, its state and counts, its last error (HTML-escaped:
//! server replies are untrusted text), and the canary's own failures in a column and a total
//! of their own, so that an instrument short of file descriptors is not read as a target
//! in trouble.

use std::fmt::Write as _;

use super::AppState;
use crate::op::{Op, Outcome};

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

/// Formats a Unix time as RFC 3339 UTC, second precision.
pub fn format_unix(secs: f64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs.max(0.0)),
    )
    .to_string()
}

/// The whole page.
pub(super) fn render(state: &AppState) -> String {
    let targets = state.targets();
    let internal: Vec<u64> = targets.iter().map(|t| t.metrics.internal_total()).collect();
    let internal_total: u64 = internal.iter().sum();
    let mut p = String::with_capacity(4096 + 512 * targets.len());
    let _ = write!(
        p,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>redis-canary</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}}\
         .ok{{color:#070}}.bad{{color:#b00;font-weight:bold}}.warn{{color:#a60;font-weight:bold}}</style></head><body>\
         <h1>redis-canary</h1><p>instance <code>{}</code> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>\
         <p>canary-side errors (this process, not the targets): <span class=\"{}\">{internal_total}</span></p>\
         <table><tr><th>target</th><th>endpoint</th><th>state</th><th>writes ok/recovered/failed</th>\
         <th>reads ok/recovered/failed</th><th>disruptions</th><th>last error</th>\
         <th>canary-side errors</th></tr>",
        escape(&state.instance),
        if internal_total == 0 { "ok" } else { "warn" },
    );
    for (t, internal) in targets.iter().zip(internal) {
        let m = &t.metrics;
        let counts = |op: Op| {
            let o = m.op(op);
            format!(
                "{}/{}/{}",
                o.outcome(Outcome::Ok).get(),
                o.outcome(Outcome::Recovered).get(),
                o.outcome(Outcome::Failed).get()
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
        let internal_class = if internal == 0 { "ok" } else { "warn" };
        let _ = write!(
            p,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{class}\">{state_text}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{internal_class}\">{internal}</td></tr>",
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
