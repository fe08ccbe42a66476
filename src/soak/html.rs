//! The soak report as one self-contained HTML page (`soak --report-html FILE`, DESIGN §13):
//! inline CSS and SVG, no script, no external asset, so that it opens offline and can be
//! forwarded to people without Prometheus.
//!
//! Order: the verdict and the SLO table first, then per target a timeline of its episodes,
//! operations per second by outcome, operation latency p50/p99/max, reads per second by
//! verdict (episodes shaded on every chart), the episode table, for a cluster target the
//! shard table, the operations table, reads per backend and the backends. Every string that
//! came from a server (backend run_ids, roles, versions, addresses, shard labels) or from
//! the configuration is HTML-escaped.
//!
//! Size: bounded by [`crate::stats::MAX_SERIES_INTERVALS`] points per chart and
//! [`crate::stats::MAX_EPISODES`] episode rows per target; shaded episodes closer than
//! one pixel are drawn as one. A 24 h soak of 10 targets renders well under 5 MB (unit test
//! below).

use std::fmt::Write as _;

use super::report::{Report, TargetReport};
use crate::stats::{EpisodeRecord, RunSeries};
use crate::svg::{
    self, Bar, Frame, Layer, LineChart, Scale, Series, Span, StackedBars, TimeLabels, Timeline,
    Unit, escape, format_seconds,
};

/// The charts' data of one target, taken from its statistics at the end of the run.
#[derive(Clone, Debug)]
pub struct TargetSeries {
    /// The target's name, as in the report.
    pub name: String,
    /// Its run-long series.
    pub series: RunSeries,
    /// Its kept episodes, with Unix times.
    pub episodes: Vec<EpisodeRecord>,
}

/// Width of every chart's viewBox, in px; the charts scale down to the page.
const CHART_WIDTH: u32 = 960;

/// Plot width of a chart in px (the viewBox minus the axis margins), for merging shades.
const PLOT_WIDTH_PX: f64 = 890.0;

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1000px;color:#222;background:#fff}\
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h3{margin:1.2em 0 .4em}\
table{border-collapse:collapse;margin:.4em 0;font-size:.92em}td,th{padding:.25em .7em;text-align:left;border-bottom:1px solid #e4e4e4;vertical-align:top}\
th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{display:inline-block;padding:.1em .6em;border-radius:.3em;color:#fff;font-weight:bold}\
.pass{background:#2ca02c}.fail{background:#d62728}.warn{color:#a60;font-weight:bold}\
td.bad{color:#b00;font-weight:bold}td.good{color:#070}\
.charts svg{display:block;margin:.6em 0;width:100%;height:auto}\
code{font-size:.9em;word-break:break-all}.muted{color:#666}\
.scroll{overflow-x:auto}.episodes td:nth-child(1),.episodes td:nth-child(4){text-align:right}\
@media (max-width:600px){body{padding:.5em}td,th{padding:.2em .35em}}";

/// The whole page for `report`, with the charts of `series` (matched to targets by name;
/// a target without one has tables only). `started_unix` and `ended_unix` bound the time
/// axis of every chart.
pub fn render(
    report: &Report,
    series: &[TargetSeries],
    started_unix: f64,
    ended_unix: f64,
) -> String {
    let mut p = String::with_capacity(64 * 1024);
    let verdict = if report.pass { "PASS" } else { "FAIL" };
    let _ = write!(
        p,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>redis-canary soak report: {verdict}</title><style>{STYLE}</style></head><body>\
         <h1>redis-canary soak report <span id=\"verdict\" class=\"verdict {}\">{verdict}</span></h1>\
         <p>{} → {} ({}){} · {} target(s) · redis-canary {}</p>",
        if report.pass { "pass" } else { "fail" },
        escape(&report.started_at),
        escape(&report.ended_at),
        escape(&svg::format_elapsed(report.duration_seconds)),
        if report.interrupted {
            " · <span class=\"warn\">interrupted by a signal: the run fails</span>"
        } else {
            ""
        },
        report.targets.len(),
        env!("CARGO_PKG_VERSION"),
    );
    summary_table(&mut p, report);
    slo_table(&mut p, report);
    for t in &report.targets {
        let s = series.iter().find(|s| s.name == t.name);
        target_section(&mut p, t, s, started_unix, ended_unix);
    }
    p.push_str(
        "<h2>How to read this report</h2><ul>\
         <li>An <b>episode</b> is a disruption: it starts at the first failed try of an \
         operation and ends when every kind of operation succeeds again. Episodes are shaded \
         red on every chart (hover for details) and listed in the table of each target.</li>\
         <li><b>Operations per second</b>: ok (first try), recovered (after retries), failed \
         (gave up), skipped (could not start). Failed and skipped count against availability.</li>\
         <li><b>Latency</b> is from the scheduled start of an operation to its outcome, log \
         scale; a gap means no operation finished in that interval.</li>\
         <li><b>Reads</b>: fresh (saw the latest write), lagging (an older value within the \
         grace period), bad (stale, missing or corrupt).</li>\
         <li>Times are UTC. Charts show the whole run in up to 1,500 intervals.</li></ul>\
         </body></html>\n",
    );
    p
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.4}%", x * 100.0))
}

fn summary_table(p: &mut String, report: &Report) {
    p.push_str(
        "<h2>Verdict</h2><div class=\"scroll\"><table id=\"summary\"><tr><th>target</th><th>verdict</th>\
         <th>availability</th><th>failed ops</th><th>episodes</th><th>longest episode</th>\
         <th>stale / missing / corrupt reads</th></tr>",
    );
    for t in &report.targets {
        let failed: u64 = [&t.operations.write, &t.operations.read, &t.operations.probe]
            .iter()
            .map(|o| o.failed)
            .sum();
        let read = |v: &str| t.reads.get(v).copied().unwrap_or(0);
        let bad = read("stale") + read("missing") + read("corrupt");
        let episodes = t.episodes.len() as u64 + t.episodes_dropped;
        let _ = write!(
            p,
            "<tr><td><a href=\"#t-{0}\">{0}</a></td><td><span class=\"verdict {1}\">{2}</span></td>\
             <td class=\"n\">{3}</td><td class=\"n {4}\">{5}</td><td class=\"n\">{6}</td>\
             <td class=\"n\">{7}</td><td class=\"n {8}\">{9} / {10} / {11}</td></tr>",
            escape(&t.name),
            if t.pass { "pass" } else { "fail" },
            if t.pass { "PASS" } else { "FAIL" },
            pct(t.availability.all),
            if failed > 0 { "bad" } else { "" },
            failed,
            episodes,
            if episodes > 0 {
                format!("{:.3} s", t.longest_episode_seconds)
            } else {
                "-".into()
            },
            if bad > 0 { "bad" } else { "" },
            read("stale"),
            read("missing"),
            read("corrupt"),
        );
    }
    p.push_str("</table></div>");
}

/// A threshold or measurement of SLO `name` in its unit.
fn slo_value(name: &str, v: f64) -> String {
    if name.contains("availability") {
        format!("{:.4}%", v * 100.0)
    } else if name == "max_disruption" || name.starts_with("p99") {
        format!("{v:.3} s")
    } else {
        format!("{v}")
    }
}

fn slo_table(p: &mut String, report: &Report) {
    p.push_str(
        "<h3>SLOs</h3><div class=\"scroll\"><table id=\"slo\"><tr><th>target</th><th>SLO</th>\
         <th>threshold</th><th>measured</th><th>result</th></tr>",
    );
    for t in &report.targets {
        for j in &t.slo {
            let _ = write!(
                p,
                "<tr class=\"slo {}\"><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"{}\">{}</td></tr>",
                if j.pass { "held" } else { "violated" },
                escape(&t.name),
                escape(j.name),
                slo_value(j.name, j.threshold),
                slo_value(j.name, j.measured),
                if j.pass { "good" } else { "bad" },
                if j.pass { "pass" } else { "FAIL" },
            );
        }
    }
    p.push_str("</table></div>");
}

/// Hover text of one episode.
fn episode_label(i: usize, e: &EpisodeRecord) -> String {
    let results: Vec<String> = e.results.iter().map(|(r, n)| format!("{r}={n}")).collect();
    format!(
        "episode {}: {} UTC, {:.3} s, {}",
        i + 1,
        crate::http::format_unix(e.start_unix_us as f64 / 1e6),
        e.duration_seconds,
        if results.is_empty() {
            "no failed try".to_string()
        } else {
            results.join(" ")
        }
    )
}

/// The episodes as spans, neighbours closer than `min_gap` seconds drawn as one (with a
/// label saying how many): at most about one span per pixel however many episodes.
fn spans(episodes: &[EpisodeRecord], min_gap: f64) -> Vec<Span> {
    let mut out: Vec<(Span, usize, f64)> = Vec::new();
    for (i, e) in episodes.iter().enumerate() {
        let (start, end) = (e.start_unix_us as f64 / 1e6, e.end_unix_us as f64 / 1e6);
        if let Some((last, n, longest)) = out.last_mut()
            && start - last.end < min_gap
        {
            last.end = last.end.max(end);
            *n += 1;
            *longest = longest.max(e.duration_seconds);
            last.label = format!(
                "{n} episodes from {} to {} UTC, longest {longest:.3} s",
                crate::http::format_unix(last.start),
                crate::http::format_unix(last.end),
            );
            continue;
        }
        out.push((
            Span {
                start,
                end,
                label: episode_label(i, e),
            },
            1,
            e.duration_seconds,
        ));
    }
    out.into_iter().map(|(s, _, _)| s).collect()
}

fn frame(title: &str, x: (f64, f64), height: u32) -> Frame {
    Frame {
        width: CHART_WIDTH,
        height,
        x_range: Some(x),
        time_labels: TimeLabels::Utc,
        ..Frame::new(title)
    }
}

fn layer(name: &str, color: &str) -> Layer {
    Layer {
        name: name.into(),
        color: color.into(),
    }
}

/// The four charts of one target.
fn charts(p: &mut String, s: &TargetSeries, x: (f64, f64)) {
    let min_gap = (x.1 - x.0) / PLOT_WIDTH_PX;
    let shades = spans(&s.episodes, min_gap);
    let width = s.series.interval_seconds();
    // The last interval may be cut short by the end of the run: its rates use what it covered.
    let bars = |values: &dyn Fn(&crate::history::Interval) -> Vec<f64>| -> Vec<Bar> {
        s.series
            .intervals()
            .map(|(start, iv)| {
                let end = (start + width).min(x.1.max(start + 1e-3));
                let secs = end - start;
                Bar {
                    start,
                    end,
                    values: values(iv).into_iter().map(|v| v / secs).collect(),
                }
            })
            .collect()
    };
    p.push_str("<div class=\"charts\">");
    p.push_str(
        &Timeline {
            frame: frame("Episodes", x, 64),
            color: svg::EPISODE_COLOR.into(),
            spans: shades.clone(),
        }
        .render(),
    );
    p.push_str(
        &StackedBars {
            frame: frame("Operations per second by outcome", x, 220),
            unit: Unit::PerSecond,
            layers: vec![
                layer("ok", "#2ca02c"),
                layer("recovered", "#ff7f0e"),
                layer("failed", "#d62728"),
                layer("skipped", "#9467bd"),
            ],
            bars: bars(&|i| {
                vec![
                    f64::from(i.ok),
                    f64::from(i.recovered),
                    f64::from(i.failed),
                    f64::from(i.skipped),
                ]
            }),
            spans: shades.clone(),
        }
        .render(),
    );
    let quantile = |f: &dyn Fn(&crate::history::Interval) -> Option<std::time::Duration>| {
        s.series
            .intervals()
            .map(|(start, iv)| {
                (
                    start + width / 2.0,
                    f(iv).map_or(f64::NAN, |d| d.as_secs_f64()),
                )
            })
            .collect::<Vec<_>>()
    };
    let series = |name: &str, color: &str, points| Series {
        name: name.into(),
        color: color.into(),
        points,
    };
    p.push_str(
        &LineChart {
            frame: frame("Operation latency", x, 220),
            unit: Unit::Seconds,
            scale: Scale::Log,
            series: vec![
                series("p50", "#1f77b4", quantile(&|i| i.latency.quantile(0.5))),
                series("p99", "#ff7f0e", quantile(&|i| i.latency.quantile(0.99))),
                series("max", "#7f7f7f", quantile(&|i| i.latency.max())),
            ],
            spans: shades.clone(),
        }
        .render(),
    );
    p.push_str(
        &StackedBars {
            frame: frame("Reads per second by verdict", x, 180),
            unit: Unit::PerSecond,
            layers: vec![
                layer("fresh", "#2ca02c"),
                layer("lagging", "#bcbd22"),
                layer("stale/missing/corrupt", "#d62728"),
            ],
            bars: bars(&|i| vec![f64::from(i.fresh), f64::from(i.lagging), f64::from(i.bad)]),
            spans: shades,
        }
        .render(),
    );
    let _ = write!(
        p,
        "<p class=\"muted\">{} interval(s) of {}.</p></div>",
        s.series.len(),
        format_seconds(width)
    );
}

fn target_section(
    p: &mut String,
    t: &TargetReport,
    s: Option<&TargetSeries>,
    started: f64,
    ended: f64,
) {
    let name = escape(&t.name);
    let _ = write!(
        p,
        "<section class=\"target\" id=\"t-{name}\"><h2>Target {name} \
         <span class=\"verdict {}\">{}</span></h2>",
        if t.pass { "pass" } else { "fail" },
        if t.pass { "PASS" } else { "FAIL" },
    );
    if let Some(s) = s {
        let x = if ended > started {
            (started, ended)
        } else {
            (started, started + 1.0)
        };
        charts(p, s, x);
    }
    // Episodes.
    let _ = write!(
        p,
        "<h3>Episodes ({})</h3>",
        t.episodes.len() as u64 + t.episodes_dropped
    );
    if t.episodes.is_empty() {
        p.push_str("<p>No disruption.</p>");
    } else {
        p.push_str(
            "<div class=\"scroll\"><table class=\"episodes\"><tr><th>#</th><th>start (UTC)</th>\
             <th>end (UTC)</th><th>length</th><th>failed tries by result</th></tr>",
        );
        for (i, e) in t.episodes.iter().enumerate() {
            let results: Vec<String> = e
                .results
                .iter()
                .map(|(r, n)| format!("{}={n}", escape(r)))
                .collect();
            let _ = write!(
                p,
                "<tr class=\"episode\"><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"length\">{:.3} s</td><td>{}</td></tr>",
                i + 1,
                escape(&e.start),
                escape(&e.end),
                e.duration_seconds,
                results.join(" ")
            );
        }
        p.push_str("</table></div>");
    }
    if t.episodes_dropped > 0 {
        let _ = write!(
            p,
            "<p class=\"warn\">{} more episode(s) not kept; the longest of all lasted {:.3} s.</p>",
            t.episodes_dropped, t.longest_episode_seconds
        );
    }
    shards_table(p, t);
    // Operations.
    p.push_str(
        "<h3>Operations</h3><div class=\"scroll\"><table class=\"ops\"><tr><th>op</th>\
         <th>availability</th><th>ok</th><th>recovered</th><th>failed</th><th>skipped</th>\
         <th>p50</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    let ops = [
        (
            "write",
            &t.operations.write,
            t.availability.write,
            &t.latency_seconds.operation.write,
        ),
        (
            "read",
            &t.operations.read,
            t.availability.read,
            &t.latency_seconds.operation.read,
        ),
        (
            "probe",
            &t.operations.probe,
            t.availability.probe,
            &t.latency_seconds.operation.probe,
        ),
    ];
    let secs = |s: Option<f64>| s.map_or("-".into(), format_seconds);
    for (op, o, avail, l) in ops {
        if o.ok + o.recovered + o.failed + o.skipped == 0 {
            continue;
        }
        let _ = write!(
            p,
            "<tr><td>{op}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n {}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            pct(avail),
            o.ok,
            o.recovered,
            if o.failed > 0 { "bad" } else { "" },
            o.failed,
            o.skipped,
            secs(l.p50),
            secs(l.p99),
            secs(l.p99_9),
            secs(l.max),
        );
    }
    p.push_str("</table></div>");
    // Reads per backend.
    if !t.reads_by_backend.is_empty() {
        p.push_str(
            "<h3>Reads by backend</h3><div class=\"scroll\"><table class=\"reads\"><tr><th>backend</th>\
             <th>fresh</th><th>lagging</th><th>stale</th><th>missing</th><th>corrupt</th></tr>",
        );
        for (backend, counts) in &t.reads_by_backend {
            let _ = write!(p, "<tr><td><code>{}</code></td>", escape(backend));
            for v in ["fresh", "lagging", "stale", "missing", "corrupt"] {
                let n = counts.get(v).copied().unwrap_or(0);
                let bad = n > 0 && !matches!(v, "fresh" | "lagging");
                let _ = write!(
                    p,
                    "<td class=\"n{}\">{n}</td>",
                    if bad { " bad" } else { "" }
                );
            }
            p.push_str("</tr>");
        }
        p.push_str("</table></div>");
        if t.reads_by_backend_dropped > 0 {
            let _ = write!(
                p,
                "<p class=\"warn\">{} read(s) not attributed (too many backends).</p>",
                t.reads_by_backend_dropped
            );
        }
    }
    // Backends.
    let _ = write!(p, "<h3>Backends ({})</h3>", t.backends.len());
    if !t.backends.is_empty() {
        p.push_str(
            "<div class=\"scroll\"><table class=\"backends\"><tr><th>run_id</th><th>role</th>\
             <th>version</th><th>addr</th><th>first seen</th><th>last seen</th></tr>",
        );
        for b in &t.backends {
            let _ = write!(
                p,
                "<tr class=\"backend\"><td><code>{}</code></td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&b.run_id),
                escape(&b.role),
                escape(&b.version),
                escape(&b.addr),
                escape(&b.first_seen),
                escape(&b.last_seen),
            );
        }
        p.push_str("</table></div>");
    }
    p.push_str("</section>");
}

/// The shards of a cluster target (DESIGN §12.2, JSON `shards`): operations by outcome and
/// disruptions per shard, in the report's order. Nothing for a target without shards.
fn shards_table(p: &mut String, t: &TargetReport) {
    if t.shards.is_empty() {
        return;
    }
    let _ = write!(
        p,
        "<h3>Shards ({})</h3><div class=\"scroll\"><table class=\"shards\"><tr><th>shard</th>\
         <th>ok</th><th>recovered</th><th>failed</th><th>disruptions</th>\
         <th>longest disruption</th></tr>",
        t.shards.len()
    );
    for s in &t.shards {
        let o = &s.operations;
        let _ = write!(
            p,
            "<tr class=\"shard\"><td><code>{}</code></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n{}\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            escape(&s.shard),
            o.ok,
            o.recovered,
            if o.failed > 0 { " bad" } else { "" },
            o.failed,
            if s.disruptions > 0 { " bad" } else { "" },
            s.disruptions,
            if s.disruptions > 0 {
                format!("{:.3} s", s.longest_disruption_seconds)
            } else {
                "-".into()
            },
        );
    }
    p.push_str("</table></div>");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::ResultKind;
    use crate::config::Slo;
    use crate::ledger::Verdict;
    use crate::op::{Op, Outcome};
    use crate::soak::report::tests::rich_stats;
    use crate::soak::{Backend, TargetReport};
    use crate::stats::{MAX_EPISODES, Stats};

    const T0: u64 = 1_700_000_000;

    fn hostile_backend() -> Backend {
        Backend {
            run_id: "<script>alert(1)</script>".into(),
            role: "master\"><img src=\"x\" onerror=alert(2)>".into(),
            version: "7.0&<b>".into(),
            addr: "127.0.0.1:6379".into(),
            first_seen: "2023-11-14T22:13:20Z".into(),
            last_seen: "2023-11-14T22:13:23Z".into(),
        }
    }

    fn one_target(name: &str, stats: &Stats) -> (Report, Vec<TargetSeries>) {
        let t = TargetReport::new(name, stats, vec![hostile_backend()], None);
        let report = Report::new(T0 as f64, T0 as f64 + 10.0, false, vec![t]);
        let series = vec![TargetSeries {
            name: name.into(),
            series: stats.series.clone(),
            episodes: stats.episodes.clone(),
        }];
        (report, series)
    }

    #[test]
    fn the_page_puts_the_verdict_first_and_escapes_server_text() {
        let mut stats = rich_stats();
        let mut series = RunSeries::new(T0 * 1_000_000);
        for s in 0..10 {
            let at = (T0 + s) * 1_000_000;
            series
                .at(at)
                .operation(Outcome::Ok, Duration::from_millis(2));
            series.at(at).verdict(Verdict::Fresh);
        }
        stats.series = series;
        stats.reads_by_backend.insert(
            "<i>evil</i>".into(),
            [(Verdict::Corrupt, 1)].into_iter().collect(),
        );
        let (report, series) = one_target("a<b", &stats);
        let html = render(&report, &series, T0 as f64, T0 as f64 + 10.0);
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.ends_with("</html>\n"));
        // No script, no external asset: nothing to fetch, nothing to run.
        for banned in [
            "<script",
            "<img",
            " src=\"",
            "href=\"http",
            "url(",
            "@import",
            "<link",
        ] {
            assert!(!html.contains(banned), "{banned} in the page");
        }
        // The verdict and SLO table come before the first chart.
        let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("id=\"verdict\"") < at("id=\"slo\"") && at("id=\"slo\"") < at("<svg"));
        assert!(html.contains("class=\"verdict fail\">FAIL</span>"));
        // Names and server strings escaped.
        assert!(html.contains("Target a&lt;b"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("master&quot;&gt;&lt;img"));
        assert!(html.contains("&lt;i&gt;evil&lt;/i&gt;"));
        // The episode of rich_stats: a row with its length, and a shade on the charts.
        assert_eq!(html.matches("<tr class=\"episode\">").count(), 1);
        assert!(html.contains("<td class=\"length\">3.250 s</td>"));
        assert!(html.contains("Episodes (3)"), "1 kept + 2 dropped");
        // Four charts with data: 10 bars of ok, a latency line, 10 bars of fresh reads.
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("<polyline class=\"series\""));
        assert_eq!(html.matches("<path class=\"layer\"").count(), 2);
        // The SLO table shows thresholds and measurements in their units.
        assert!(html.contains("<code>max_disruption</code></td><td class=\"n\">0.000 s</td><td class=\"n\">4.500 s</td>"));
    }

    #[test]
    fn a_target_without_series_has_tables_only() {
        let stats = Stats::new(&Slo::default());
        let t = TargetReport::new("quiet", &stats, vec![], None);
        let report = Report::new(T0 as f64, T0 as f64 + 1.0, true, vec![t]);
        let html = render(&report, &[], T0 as f64, T0 as f64 + 1.0);
        assert!(!html.contains("<svg"));
        assert!(html.contains("No disruption."));
        assert!(html.contains("interrupted by a signal"));
    }

    /// A cluster target's report shows a row per shard with what the JSON `shards` rows
    /// carry, the hostile label escaped; a standalone target beside it has no shard table.
    #[test]
    fn a_cluster_target_has_a_shard_table_and_a_standalone_one_has_none() {
        use crate::soak::ShardReport;
        use crate::topology::cluster::book::ShardSummary;

        let stats = rich_stats();
        let mut cluster = TargetReport::new("sessions", &stats, vec![], None);
        cluster.shards = [
            ShardSummary {
                shard: "0-8191".into(),
                ok: 1200,
                recovered: 16,
                failed: 2,
                disruptions: 1,
                longest_disruption_secs: 2.4734,
                disrupted_now: false,
            },
            ShardSummary {
                shard: "<b>x</b>".into(),
                ok: 1187,
                ..ShardSummary::default()
            },
        ]
        .iter()
        .map(ShardReport::of)
        .collect();
        let standalone = TargetReport::new("cache", &stats, vec![], None);
        let (start, end) = (T0 as f64, T0 as f64 + 10.0);
        let report = Report::new(start, end, false, vec![cluster, standalone.clone()]);
        let html = render(&report, &[], start, end);

        // One table, in the cluster target's section, between its episodes and operations.
        assert_eq!(html.matches("<table class=\"shards\">").count(), 1);
        let section = |name: &str| {
            let from = html
                .find(&format!("<section class=\"target\" id=\"t-{name}\">"))
                .unwrap_or_else(|| panic!("section {name} missing"));
            let len = html[from..].find("</section>").expect("section end");
            &html[from..from + len]
        };
        let sessions = section("sessions");
        let at = |s: &str| {
            sessions
                .find(s)
                .unwrap_or_else(|| panic!("{s} missing in {sessions}"))
        };
        assert!(at("<h3>Episodes") < at("<h3>Shards (2)</h3>"));
        assert!(at("<h3>Shards (2)</h3>") < at("<h3>Operations</h3>"));
        assert!(sessions.contains(
            "<tr><th>shard</th><th>ok</th><th>recovered</th><th>failed</th>\
             <th>disruptions</th><th>longest disruption</th></tr>"
        ));
        // The rows, in the report's order, with their values.
        let rows: Vec<&str> = sessions
            .split("<tr class=\"shard\">")
            .skip(1)
            .map(|r| &r[..r.find("</tr>").expect("row end")])
            .collect();
        assert_eq!(
            rows,
            [
                "<td><code>0-8191</code></td><td class=\"n\">1200</td><td class=\"n\">16</td>\
                 <td class=\"n bad\">2</td><td class=\"n bad\">1</td><td class=\"n\">2.473 s</td>",
                "<td><code>&lt;b&gt;x&lt;/b&gt;</code></td><td class=\"n\">1187</td>\
                 <td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td>\
                 <td class=\"n\">-</td>",
            ]
        );
        // The hostile label never reaches the page as markup.
        assert!(!html.contains("<b>x</b>"));
        // The standalone target beside it, and a standalone-only report: no shard table.
        assert!(!section("cache").contains("Shards"));
        let alone = Report::new(start, end, false, vec![standalone]);
        let html = render(&alone, &[], start, end);
        assert!(!html.contains("Shards") && !html.contains("class=\"shard"));
        assert!(html.contains("<h3>Operations</h3>"));
    }

    #[test]
    fn close_episodes_share_one_shade_that_says_how_many() {
        let e = |start: u64, ms: u64| EpisodeRecord {
            start_unix_us: start * 1_000_000,
            end_unix_us: start * 1_000_000 + ms * 1000,
            duration_seconds: ms as f64 / 1e3,
            results: [(ResultKind::Refused, 1)].into(),
        };
        let eps = vec![e(100, 500), e(101, 700), e(102, 200), e(500, 1000)];
        let s = spans(&eps, 5.0);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end), (100.0, 102.2));
        assert!(s[0].label.starts_with("3 episodes from"), "{}", s[0].label);
        assert!(s[0].label.ends_with("longest 0.700 s"), "{}", s[0].label);
        assert_eq!(
            s[1].label,
            "episode 4: 1970-01-01T00:08:20Z UTC, 1.000 s, refused=1"
        );
    }

    /// A 24 h soak of 10 targets, every second with operations of every outcome and reads
    /// of every verdict, and the most episodes a target keeps: the page stays well under
    /// 5 MB.
    #[test]
    fn a_day_long_soak_of_ten_targets_renders_well_under_five_megabytes() {
        let day = 86_400u64;
        let mut targets = Vec::new();
        let mut series = Vec::new();
        for n in 0..10 {
            let name = format!("target-{n}");
            let mut stats = Stats::new(&Slo::default());
            let mut s = RunSeries::new(T0 * 1_000_000);
            for sec in 0..day {
                let at = (T0 + sec) * 1_000_000;
                let iv = s.at(at);
                let jitter = Duration::from_micros(500 + (sec * 7919 + n) % 20_000);
                iv.operation(Outcome::Ok, jitter);
                iv.operation(Outcome::Ok, jitter * 2);
                if sec % 97 == 0 {
                    iv.operation(Outcome::Recovered, Duration::from_millis(300));
                    iv.operation(Outcome::Failed, Duration::from_secs(2));
                    iv.skip();
                    iv.verdict(Verdict::Stale);
                }
                iv.verdict(Verdict::Fresh);
                iv.verdict(Verdict::Lagging);
            }
            // The most episodes a target keeps, spread over the day, 1.5 s each.
            for i in 0..MAX_EPISODES as u64 {
                let start = (T0 + i * (day / MAX_EPISODES as u64)) * 1_000_000;
                s.disrupted(start, start + 1_500_000);
                stats.episodes.push(EpisodeRecord {
                    start_unix_us: start,
                    end_unix_us: start + 1_500_000,
                    duration_seconds: 1.5,
                    results: [(ResultKind::Refused, 3), (ResultKind::Timeout, 2)].into(),
                });
            }
            stats.operation(Op::Write, Outcome::Ok, Duration::from_millis(1));
            stats.series = s.clone();
            let backends = (0..3)
                .map(|b| Backend {
                    run_id: format!("{b:040x}"),
                    role: "master".into(),
                    version: "7.2.4".into(),
                    addr: format!("10.0.0.{b}:6379"),
                    first_seen: "2023-11-14T22:13:20Z".into(),
                    last_seen: "2023-11-15T22:13:20Z".into(),
                })
                .collect();
            targets.push(TargetReport::new(&name, &stats, backends, Some(0)));
            series.push(TargetSeries {
                name,
                series: s,
                episodes: stats.episodes.clone(),
            });
        }
        let (start, end) = (T0 as f64, (T0 + day) as f64);
        let report = Report::new(start, end, false, targets);
        let html = render(&report, &series, start, end);
        let mb = html.len() as f64 / 1e6;
        let svg_bytes: usize = html
            .split("<svg")
            .skip(1)
            .map(|s| s.find("</svg>").unwrap())
            .sum();
        let rows: usize = html
            .split("<tr class=\"episode\">")
            .skip(1)
            .map(|s| s.find("</tr>").unwrap())
            .sum();
        println!(
            "24 h × 10 targets: {} bytes ({mb:.2} MB), charts {svg_bytes}, episode rows {rows}",
            html.len()
        );
        assert!(mb < 5.0, "{mb} MB");
        // Everything is there: 10 × 1,000 episode rows, 10 × 4 charts with their points.
        assert_eq!(
            html.matches("<tr class=\"episode\">").count(),
            10 * MAX_EPISODES
        );
        assert_eq!(html.matches("<svg").count(), 40);
        let first_line = html.split("points=\"").nth(1).unwrap();
        let points = first_line[..first_line.find('"').unwrap()]
            .split(' ')
            .count();
        assert_eq!(points, 1350, "one p50 point per 64 s interval");
    }
}
