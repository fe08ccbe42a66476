//! The `/` status page (DESIGN §13): a table of every target (state, availability over 5 min
//! and 1 h, counts, last error, the canary's own failures in a column and a total of their
//! own, so that an instrument short of file descriptors is not read as a target in
//! trouble), then per target a latency chart of the last 15 min with episodes shaded, a
//! timeline and table of the episodes of the last 24 h, backends and nodes. Server-rendered
//! with inline CSS and SVG ([`crate::svg`]): no external asset, readable without JavaScript.
//! Every server string is HTML-escaped: server replies are untrusted text.

use std::fmt::Write as _;

use super::AppState;
use super::api::{EpisodeView, LATENCY_WINDOW, SeriesPoint, TargetView};
use crate::history::{FINE_SLOTS, FINE_US, Point};
use crate::op::Op;
use crate::svg;

/// Escapes text for HTML: server replies in error messages are untrusted.
pub use crate::svg::escape;

/// Formats a Unix time as RFC 3339 UTC, second precision.
pub fn format_unix(secs: f64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs.max(0.0)),
    )
    .to_string()
}

/// Seconds between automatic reloads (by a tiny inline script; the page reads the same
/// without it).
const REFRESH_SECONDS: u32 = 10;

/// Responsive, inline: two columns of cards at 1280 px, one on a phone.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em;max-width:1280px;color:#222}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.2em;margin:.2em 0}h3{font-size:1em;margin:.6em 0 .3em}\
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{padding:.25em .6em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}\
.scroll{overflow-x:auto}.ok{color:#070}.bad{color:#b00;font-weight:bold}.warn{color:#a60;font-weight:bold}\
.target{border:1px solid #ccc;border-radius:6px;padding:.8em;margin:1em 0}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:1em}\
.kpis{display:flex;flex-wrap:wrap;gap:1.5em;margin:.4em 0}.kpi b{display:block;font-size:1.4em}\
svg{width:100%;height:auto;max-width:100%}code{word-break:break-all}td code{white-space:nowrap;word-break:normal}\
.badge{padding:.1em .5em;border-radius:4px;color:#fff}.badge.ok{background:#2a7d2a}.badge.bad{background:#b00}";

/// The whole page.
pub(super) fn render(state: &AppState) -> String {
    let views = super::api::views(state);
    let internal_total: u64 = views.iter().map(|v| v.canary_errors).sum();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut p = String::with_capacity(16384 + 16384 * views.len());
    let _ = write!(
        p,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>redis-canary</title><style>{STYLE}</style></head><body>\
         <h1>redis-canary</h1><p>instance <code>{}</code> · {} UTC · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/api/v1/status\">/api/v1/status</a> · \
         <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>\
         <p>canary-side errors (this process, not the targets): <span class=\"{}\">{internal_total}</span></p>",
        escape(&state.instance),
        format_unix(now),
        if internal_total == 0 { "ok" } else { "warn" },
    );
    summary(&mut p, &views);
    for v in &views {
        target_section(&mut p, v, now);
    }
    let _ = writeln!(
        p,
        "<script>setTimeout(function(){{location.reload()}},{}000)</script></body></html>",
        REFRESH_SECONDS
    );
    p
}

fn percent(a: Option<f64>) -> String {
    a.map_or_else(|| "–".into(), |a| format!("{:.3} %", a * 100.0))
}

fn avail_class(a: Option<f64>) -> &'static str {
    match a {
        Some(a) if a < 0.999 => "bad",
        _ => "ok",
    }
}

fn last_error_text(v: &TargetView) -> String {
    v.last_error
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
        .unwrap_or_else(|| "none".into())
}

/// The table of every target, as before the charts: counts, last error, canary-side errors.
fn summary(p: &mut String, views: &[TargetView]) {
    p.push_str(
        "<div class=\"scroll\"><table><tr><th>target</th><th>endpoint</th><th>state</th>\
         <th>availability 5 min</th><th>availability 1 h</th><th>writes ok/recovered/failed</th>\
         <th>reads ok/recovered/failed</th><th>disruptions</th><th>last error</th>\
         <th>canary-side errors</th></tr>",
    );
    for v in views {
        let counts = |op: Op| {
            v.operations
                .iter()
                .find(|(o, _)| *o == op)
                .map(|(_, c)| format!("{}/{}/{}", c[0], c[1], c[2]))
                .unwrap_or_default()
        };
        let (class, state_text) = if v.disrupted {
            ("bad", "DISRUPTED")
        } else {
            ("ok", "ok")
        };
        let internal_class = if v.canary_errors == 0 { "ok" } else { "warn" };
        let _ = write!(
            p,
            "<tr><td><a href=\"#t-{id}\">{name}</a></td><td><code>{}</code></td><td class=\"{class}\">{state_text}</td>\
             <td class=\"{}\">{}</td><td class=\"{}\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{internal_class}\">{}</td></tr>",
            escape(&v.endpoint),
            avail_class(v.availability_5m),
            percent(v.availability_5m),
            avail_class(v.availability_1h),
            percent(v.availability_1h),
            counts(Op::Write),
            counts(Op::Read),
            v.disruptions,
            last_error_text(v),
            v.canary_errors,
            id = anchor(&v.name),
            name = escape(&v.name),
        );
    }
    p.push_str("</table></div>");
}

/// An id for a target's section: letters, digits, `-` and `_` only.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn episode_label(e: &EpisodeView) -> String {
    let results: Vec<String> = e.mark.results().map(|(r, n)| format!("{r}={n}")).collect();
    format!(
        "episode {} UTC, {}{}: {}",
        format_unix(e.start_unix),
        svg::format_seconds(e.length_seconds),
        if e.end_unix.is_none() { " (open)" } else { "" },
        results.join(", ")
    )
}

fn spans(v: &TargetView, now: f64) -> Vec<svg::Span> {
    v.episodes
        .iter()
        .map(|e| svg::Span {
            start: e.start_unix,
            end: e.end_unix.unwrap_or(now),
            label: episode_label(e),
        })
        .collect()
}

/// p50 and p99 of `points` over the last `window` seconds on a log axis, `spans` shaded; a
/// gap where no operation finished (NaN breaks the line).
fn latency_chart(
    title: &str,
    points: &[SeriesPoint],
    window: f64,
    spans: Vec<svg::Span>,
    now: f64,
) -> String {
    let series =
        |name: &str, color: &str, q: fn(&Point) -> Option<std::time::Duration>| svg::Series {
            name: name.into(),
            color: color.into(),
            points: points
                .iter()
                .map(|s| {
                    (
                        s.start_unix,
                        q(&s.point).map_or(f64::NAN, |d| d.as_secs_f64()),
                    )
                })
                .collect(),
        };
    let mut chart = svg::LineChart::new(title, svg::Unit::Seconds);
    chart.scale = svg::Scale::Log;
    chart.frame.x_range = Some((now - window, now));
    chart.series = vec![
        series("p50", "#1f77b4", Point::p50),
        series("p99", "#ff7f0e", Point::p99),
    ];
    chart.spans = spans;
    chart.render()
}

fn target_section(p: &mut String, v: &TargetView, now: f64) {
    let (class, state_text) = if v.disrupted {
        ("bad", "DISRUPTED")
    } else {
        ("ok", "ok")
    };
    let _ = write!(
        p,
        "<section class=\"target\" id=\"t-{}\"><h2>{} <span class=\"badge {class}\">{state_text}</span></h2>\
         <p><code>{}</code> · {}</p><div class=\"kpis\">\
         <div class=\"kpi\">availability 5 min<b class=\"{}\">{}</b></div>\
         <div class=\"kpi\">availability 1 h<b class=\"{}\">{}</b></div>\
         <div class=\"kpi\">episodes 24 h<b>{}</b></div>\
         <div class=\"kpi\">disruptions since start<b>{}</b></div></div>\
         <p>last error: {}</p><div class=\"grid\"><div>",
        anchor(&v.name),
        escape(&v.name),
        escape(&v.endpoint),
        v.mode,
        avail_class(v.availability_5m),
        percent(v.availability_5m),
        avail_class(v.availability_1h),
        percent(v.availability_1h),
        v.episodes.len(),
        v.disruptions,
        last_error_text(v),
    );
    p.push_str(&latency_chart(
        "operation latency, last 15 min (10 s intervals; shaded: episodes)",
        &v.latency,
        LATENCY_WINDOW.as_secs_f64(),
        spans(v, now),
        now,
    ));
    p.push_str(&latency_chart(
        "the last 3 min (1 s intervals)",
        &v.recent,
        (FINE_SLOTS as u64 * FINE_US) as f64 / 1e6,
        spans(v, now),
        now,
    ));
    p.push_str("</div><div>");
    let timeline = svg::Timeline::new("episodes, last 24 h", (now - 86_400.0, now), spans(v, now));
    p.push_str(&timeline.render());
    p.push_str(
        "<h3>episodes (last 24 h)</h3><div class=\"scroll\"><table><tr><th>start (UTC)</th>\
         <th>length</th><th>failed tries by result</th></tr>",
    );
    if v.episodes.is_empty() {
        p.push_str("<tr><td colspan=\"3\">none</td></tr>");
    }
    for e in v.episodes.iter().rev() {
        let mut results: Vec<String> = e.mark.results().map(|(r, n)| format!("{r}={n}")).collect();
        if e.mark.other_failures() > 0 {
            results.push(format!("other={}", e.mark.other_failures()));
        }
        let _ = write!(
            p,
            "<tr class=\"episode\"><td>{}</td><td class=\"length\">{}{}</td><td>{}</td></tr>",
            format_unix(e.start_unix),
            svg::format_seconds(e.length_seconds),
            if e.end_unix.is_none() {
                " <span class=\"bad\">open</span>"
            } else {
                ""
            },
            results.join(", ")
        );
    }
    if v.episodes_dropped > 0 {
        let _ = write!(
            p,
            "<tr><td colspan=\"3\">{} older episodes not kept</td></tr>",
            v.episodes_dropped
        );
    }
    p.push_str("</table></div></div></div>");
    if !v.shards.is_empty() {
        shards_table(p, v);
    }
    if !v.sentinels.is_empty() {
        p.push_str("<h3>sentinels</h3><div class=\"scroll\"><table><tr><th>sentinel</th><th>state</th></tr>");
        for (addr, up) in &v.sentinels {
            let _ = write!(
                p,
                "<tr class=\"sentinel\"><td><code>{}</code></td><td class=\"{}\">{}</td></tr>",
                escape(addr),
                if *up { "ok" } else { "bad" },
                if *up { "up" } else { "DOWN" }
            );
        }
        p.push_str("</table></div>");
    }
    backends_and_nodes(p, v);
    p.push_str("</section>");
}

/// A cluster target's shards: state, master, slots, counts and episodes since start.
fn shards_table(p: &mut String, v: &TargetView) {
    let _ = write!(
        p,
        "<h3>shards</h3><p>slots covered: <b class=\"{}\">{}</b> of 16384</p><div class=\"scroll\"><table>\
         <tr><th>shard</th><th>state</th><th>master</th><th>replicas</th><th>slots</th>\
         <th>ok / recovered / failed</th><th>episodes</th><th>longest</th></tr>",
        if v.slots_covered == Some(16384) {
            "ok"
        } else {
            "bad"
        },
        v.slots_covered.map_or("–".to_string(), |n| n.to_string()),
    );
    for s in &v.shards {
        let sum = &s.summary;
        let _ = write!(
            p,
            "<tr class=\"shard\"><td><code>{}</code>{}</td><td class=\"{}\">{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(&sum.shard),
            if s.in_map {
                ""
            } else {
                " (no longer in the map)"
            },
            if sum.disrupted_now { "bad" } else { "ok" },
            if sum.disrupted_now { "DISRUPTED" } else { "ok" },
            escape(s.master.as_deref().unwrap_or("none")),
            s.replicas,
            slots_cell(s.slots, &s.ranges),
            sum.ok,
            sum.recovered,
            sum.failed,
            sum.disruptions,
            if sum.disruptions == 0 {
                "–".to_string()
            } else {
                svg::format_seconds(sum.longest_disruption_secs)
            },
        );
    }
    p.push_str("</table></div>");
}

/// How many of a shard's ranges its row lists (a shard left fragmented by resharding can
/// have thousands).
const RANGES_SHOWN: usize = 4;

/// A shard's slot count and the ranges it serves now, the first [`RANGES_SHOWN`] of them.
fn slots_cell(slots: u32, ranges: &[(u16, u16)]) -> String {
    let mut shown: Vec<String> = ranges
        .iter()
        .take(RANGES_SHOWN)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > RANGES_SHOWN {
        shown.push(format!("… {} more", ranges.len() - RANGES_SHOWN));
    }
    if shown.is_empty() {
        slots.to_string()
    } else {
        format!("{slots} <small>({})</small>", shown.join(", "))
    }
}

fn backends_and_nodes(p: &mut String, v: &TargetView) {
    p.push_str(
        "<div class=\"grid\"><div><h3>backends</h3><div class=\"scroll\"><table><tr><th>role</th><th>addr</th>\
         <th>run_id</th><th>version</th><th>first seen</th><th>last seen</th><th>read verdicts</th></tr>",
    );
    if v.backends.is_empty() {
        p.push_str("<tr><td colspan=\"7\">none seen yet</td></tr>");
    }
    for b in &v.backends {
        let id = &b.record.identity;
        let reads = b.reads.as_ref().map_or_else(
            || "not counted (soak only)".to_string(),
            |r| {
                r.iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(verdict, n)| format!("{}={n}", verdict.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        let _ = write!(
            p,
            "<tr><td>{}</td><td><code>{}</code></td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&id.role),
            escape(&id.addr),
            escape(&id.run_id),
            // 12 hex digits tell run_ids apart at a glance; the whole one is on hover.
            escape(id.run_id.get(..12).unwrap_or(&id.run_id)),
            escape(&id.version),
            format_unix(b.first_seen_unix),
            format_unix(b.last_seen_unix),
            reads
        );
    }
    p.push_str("</table></div></div><div><h3>nodes</h3><div class=\"scroll\"><table><tr><th>node</th><th>up</th>\
         <th>replication delay p50 / p99</th><th>replication timeouts</th></tr>");
    if v.nodes.is_empty() {
        p.push_str("<tr><td colspan=\"4\">no nodes followed</td></tr>");
    }
    for n in &v.nodes {
        let delay = match (n.delay_p50_seconds, n.delay_p99_seconds) {
            (Some(a), Some(b)) => {
                format!("{} / {}", svg::format_seconds(a), svg::format_seconds(b))
            }
            _ => "see /metrics".into(),
        };
        let _ = write!(
            p,
            "<tr><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&n.addr),
            if n.up { "ok" } else { "bad" },
            if n.up { "up" } else { "DOWN" },
            delay,
            n.timeouts
        );
    }
    p.push_str("</table></div></div></div>");
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

    #[test]
    fn a_shard_row_lists_its_current_ranges_up_to_four() {
        assert_eq!(
            slots_cell(4000, &[(0, 3999)]),
            "4000 <small>(0-3999)</small>"
        );
        let scattered: Vec<(u16, u16)> = (0..10).map(|i| (i * 2, i * 2)).collect();
        assert_eq!(
            slots_cell(10, &scattered),
            "10 <small>(0, 2, 4, 6, … 6 more)</small>"
        );
        assert_eq!(slots_cell(0, &[]), "0");
    }
}
