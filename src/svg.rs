//! Small server-side SVG charts for the status page and the soak HTML report (DESIGN §13):
//! no JavaScript, no external assets, every label escaped.
//!
//! Three kinds of chart, each a plain struct with public fields and a `render` method that
//! returns one `<svg>` element as a string:
//!
//! - [`LineChart`]: one or more [`Series`] of `(unix seconds, value)` points, linear or log
//!   y axis ([`Scale`]), values labelled by [`Unit`]. A point whose value is not finite (or
//!   not positive on a log axis) breaks the line: a gap in the data shows as a gap.
//! - [`StackedBars`]: per interval ([`Bar`]), one value per [`Layer`], stacked (operations
//!   per second by outcome, reads by verdict). Drawn as one `<path>` per layer, so a day of
//!   intervals stays small.
//! - [`Timeline`]: a strip of [`Span`]s (the episodes) over a time range.
//!
//! Line and bar charts shade [`Span`]s too (episodes behind the data). Every span and every
//! series carries a `<title>`, which browsers show on hover.
//!
//! The output is deterministic, well-formed XML (usable inline in HTML), with coordinates
//! rounded to 0.1 px and clamped to the drawing area, so that no input (NaN, ±∞, 1e300,
//! an empty series) can produce an invalid document or an unbounded one: the size is
//! linear in the number of points given.
//!
//! Classes for styling and tests: `chart`, `series` (polyline), `point` (a lone point),
//! `layer` (bar path), `episode-shade` (span on a chart), `episode-mark` (span on a
//! timeline), `grid`, `tick`, `legend`.

use std::fmt::Write as _;

/// Escapes text for XML and HTML (element content and quoted attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
    out
}

/// What the y values are, for axis labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Durations in seconds: labelled µs, ms, s, min, h.
    Seconds,
    /// Plain counts: labelled 12, 1.5k, 3M.
    Count,
    /// Rates per second: counts with "/s".
    PerSecond,
    /// Fractions 0..1: labelled as percentages.
    Ratio,
}

/// The y axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// From 0 (or the lowest value, if negative) to the highest value.
    Linear,
    /// Decades around the positive values; values ≤ 0 are not drawn.
    Log,
}

/// How times on the x axis are labelled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeLabels {
    /// UTC wall-clock time: `14:05:30`, `14:05`, or `2024-01-31` as the tick step grows.
    Utc,
    /// Time since `origin` (unix seconds): `+30s`, `+5m`, `+2h30m`.
    Elapsed {
        /// Unix seconds shown as `+0s`.
        origin: f64,
    },
}

/// A shaded range of the x axis (an episode), with a label shown on hover.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds; an end before the start is drawn as a zero-length span.
    pub end: f64,
    /// Hover text (plain text; escaped when rendered).
    pub label: String,
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// A CSS colour.
    pub color: String,
    /// `(unix seconds, value)`, in time order. A non-finite value breaks the line.
    pub points: Vec<(f64, f64)>,
}

/// Size and time axis shared by every chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Title drawn at the top left (plain text).
    pub title: String,
    /// Width in px of the viewBox; the SVG scales to its container.
    pub width: u32,
    /// Height in px of the viewBox.
    pub height: u32,
    /// The time range shown; `None`: from the data (and spans).
    pub x_range: Option<(f64, f64)>,
    /// How ticks of the time axis are labelled.
    pub time_labels: TimeLabels,
}

impl Frame {
    /// A 720×200 frame, UTC labels, x range from the data.
    pub fn new(title: &str) -> Frame {
        Frame {
            title: title.to_string(),
            width: 720,
            height: 200,
            x_range: None,
            time_labels: TimeLabels::Utc,
        }
    }
}

/// A line chart of one or more series over time, with shaded spans.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    pub frame: Frame,
    pub unit: Unit,
    pub scale: Scale,
    pub series: Vec<Series>,
    /// Drawn behind the lines.
    pub spans: Vec<Span>,
}

/// One stacked value of a [`StackedBars`] chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Legend text.
    pub name: String,
    /// A CSS colour.
    pub color: String,
}

/// One interval of a [`StackedBars`] chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Unix seconds.
    pub start: f64,
    /// Unix seconds.
    pub end: f64,
    /// One value per layer, in layer order, bottom first; missing, negative or non-finite
    /// values count as 0.
    pub values: Vec<f64>,
}

/// Stacked bars per interval (e.g. operations per second by outcome), with shaded spans.
#[derive(Clone, Debug, PartialEq)]
pub struct StackedBars {
    pub frame: Frame,
    pub unit: Unit,
    pub layers: Vec<Layer>,
    pub bars: Vec<Bar>,
    /// Drawn behind the bars.
    pub spans: Vec<Span>,
}

/// A strip with one mark per span over a time range: the episodes of a day at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    pub frame: Frame,
    /// Colour of the marks.
    pub color: String,
    pub spans: Vec<Span>,
}

/// Colour of episode shading and marks.
pub const EPISODE_COLOR: &str = "#d62728";

/// Left margin: room for y labels such as "999 ms".
const LEFT: f64 = 58.0;
/// Right margin.
const RIGHT: f64 = 10.0;
/// Top margin: title and legend.
const TOP: f64 = 24.0;
/// Bottom margin: time labels.
const BOTTOM: f64 = 20.0;
/// Most ticks on an axis; bounds the work and the output for any range.
const MAX_TICKS: usize = 16;
/// Narrowest drawn span or bar, in px, so that a 1 s episode on a day-long chart shows.
const MIN_MARK_PX: f64 = 1.5;

/// A coordinate rounded to 0.1 px, as text; what every number in the output goes through.
struct C(f64);

impl std::fmt::Display for C {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = if self.0.is_finite() {
            (self.0 * 10.0).round() / 10.0
        } else {
            0.0
        };
        // -0.0 prints as "-0".
        let v = if v == 0.0 { 0.0 } else { v };
        // "0.5" as ".5": valid SVG numbers, and a day of bars is mostly such widths.
        let text = v.to_string();
        match text.strip_prefix("0.") {
            Some(frac) => write!(f, ".{frac}"),
            None => match text.strip_prefix("-0.") {
                Some(frac) => write!(f, "-.{frac}"),
                None => f.write_str(&text),
            },
        }
    }
}

/// A coordinate rounded to whole px: bar heights, where a tenth of a pixel does not show.
struct Px(f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        C(self.0.round()).fmt(f)
    }
}

/// Maps a data range onto a pixel range, clamping to it.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
    log: bool,
}

impl Axis {
    fn new(lo: f64, hi: f64, px_lo: f64, px_hi: f64, log: bool) -> Axis {
        Axis {
            lo,
            hi,
            px_lo,
            px_hi,
            log,
        }
    }

    /// Position of `v` in 0..1 of the range; clamped, and finite for any finite range.
    fn frac(&self, v: f64) -> f64 {
        let (v, lo, hi) = if self.log {
            (
                v.max(f64::MIN_POSITIVE).log10(),
                self.lo.log10(),
                self.hi.log10(),
            )
        } else {
            (v, self.lo, self.hi)
        };
        let mut t = (v - lo) / (hi - lo);
        if !t.is_finite() {
            // hi - lo overflowed (a range of ±1e308): the same ratio on halves.
            t = (v / 2.0 - lo / 2.0) / (hi / 2.0 - lo / 2.0);
        }
        if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) }
    }

    fn px(&self, v: f64) -> f64 {
        self.px_lo + self.frac(v) * (self.px_hi - self.px_lo)
    }
}

fn finite_min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The x range: the given one, or that of the data and spans; never empty.
fn x_range(given: Option<(f64, f64)>, xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = given
        .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
        .or_else(|| finite_min_max(xs))
        .unwrap_or((0.0, 1.0));
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// A linear y range from 0 (or below) to a little above the highest value.
fn linear_y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = finite_min_max(values).unwrap_or((0.0, 1.0));
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    if hi > lo {
        let padded = hi + (hi - lo) * 0.05;
        (lo, if padded.is_finite() { padded } else { hi })
    } else {
        (0.0, 1.0)
    }
}

/// A log y range: whole decades around the positive values.
fn log_y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    match finite_min_max(values.filter(|v| *v > 0.0)) {
        None => (1e-3, 1.0),
        Some((lo, hi)) => {
            let lo = 10f64.powf(lo.log10().floor()).max(f64::MIN_POSITIVE);
            let hi = 10f64.powf(hi.log10().ceil()).min(f64::MAX);
            if hi > lo { (lo, hi) } else { (lo, lo * 10.0) }
        }
    }
}

/// Ticks of a linear axis at 1, 2 or 5 × 10^k (or, for durations above a minute, at
/// whole minutes and hours), at most [`MAX_TICKS`].
fn linear_ticks(lo: f64, hi: f64, unit: Unit, target: usize) -> Vec<f64> {
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        return vec![lo];
    }
    let raw = span / target.max(1) as f64;
    let step = if unit == Unit::Seconds && raw >= 30.0 {
        time_step(raw)
    } else {
        nice_step(raw)
    };
    ticks_every(lo, hi, step)
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Steps of a time axis, in seconds.
const TIME_STEPS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0,
];

fn time_step(raw: f64) -> f64 {
    if raw < 1.0 {
        return nice_step(raw);
    }
    TIME_STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(raw / 86400.0) * 86400.0)
}

fn ticks_every(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !step.is_finite() || step <= 0.0 {
        return vec![lo];
    }
    let first = (lo / step).ceil() * step;
    (0..=MAX_TICKS)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

/// Decade ticks of a log axis, thinned to at most [`MAX_TICKS`].
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    let n = (b - a + 1).max(1);
    let every = (n as usize).div_ceil(8).max(1);
    (a..=b)
        .step_by(every)
        .take(MAX_TICKS)
        .map(|e| 10f64.powi(e))
        .collect()
}

/// A number with at most 3 significant digits and no trailing zeros.
fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A value as labelled on a `unit` axis.
pub fn format_value(unit: Unit, v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match unit {
        Unit::Seconds => format_seconds(v),
        Unit::Count => format_count(v),
        Unit::PerSecond => format!("{}/s", format_count(v)),
        Unit::Ratio => format!("{}%", short(v * 100.0)),
    }
}

fn format_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e15 {
        format!("{v:.1e}")
    } else if a >= 1e12 {
        format!("{}T", short(v / 1e12))
    } else if a >= 1e9 {
        format!("{}G", short(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else {
        short(v)
    }
}

/// A duration in seconds as text: `250 µs`, `12 ms`, `1.5 s`, `2 min`, `3.5 h`, `2 d`.
pub fn format_seconds(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 1e-3 {
        format!("{} µs", short(v * 1e6))
    } else if a < 1.0 {
        format!("{} ms", short(v * 1e3))
    } else if a < 60.0 {
        format!("{} s", short(v))
    } else if a < 3600.0 {
        format!("{} min", short(v / 60.0))
    } else if a < 86400.0 {
        format!("{} h", short(v / 3600.0))
    } else if a < 1e12 {
        format!("{} d", short(v / 86400.0))
    } else {
        format!("{v:.1e} s")
    }
}

/// A time as labelled on the x axis, where ticks are `step` seconds apart.
pub fn format_time(labels: TimeLabels, t: f64, step: f64) -> String {
    match labels {
        TimeLabels::Utc => {
            let Some((date, secs_of_day)) = civil(t) else {
                return String::new();
            };
            let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
            if step >= 86400.0 {
                date
            } else if step >= 60.0 {
                format!("{h:02}:{m:02}")
            } else {
                format!("{h:02}:{m:02}:{s:02}")
            }
        }
        TimeLabels::Elapsed { origin } => format!("+{}", format_elapsed(t - origin)),
    }
}

/// Whole seconds as `45s`, `5m`, `2m30s`, `1h`, `2h30m`, `3d`, `1d6h`.
pub fn format_elapsed(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() >= 1e15 {
        return "?".into();
    }
    let neg = secs < 0.0;
    let s = secs.abs().round() as u64;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::from(if neg { "-" } else { "" });
    for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{u}");
        }
    }
    if out.is_empty() || out == "-" {
        out = "0s".into();
    }
    out
}

/// `(YYYY-MM-DD, seconds of the day)` of a unix time in UTC; `None` outside ±1e11 s.
fn civil(t: f64) -> Option<(String, i64)> {
    if !t.is_finite() || t.abs() > 1e11 {
        return None;
    }
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86400);
    let of_day = secs.rem_euclid(86400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some((format!("{y:04}-{m:02}-{d:02}"), of_day))
}

/// The pieces every chart shares: header, frame, axes, spans.
struct Canvas {
    out: String,
    x: Axis,
    w: f64,
    h: f64,
}

impl Canvas {
    fn open(frame: &Frame, x: (f64, f64), class: &str) -> Canvas {
        let (w, h) = (
            f64::from(frame.width.max(120)),
            f64::from(frame.height.max(40)),
        );
        let mut out = String::with_capacity(4096);
        let title = escape(&frame.title);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {class}\" viewBox=\"0 0 {w} {h}\" \
             width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{title}\" \
             font-family=\"sans-serif\" font-size=\"11\" style=\"max-width:100%;height:auto\">\
             <title>{title}</title>\
             <text x=\"4\" y=\"14\" font-weight=\"bold\">{title}</text>"
        );
        Canvas {
            out,
            x: Axis::new(x.0, x.1, LEFT, w - RIGHT, false),
            w,
            h,
        }
    }

    fn plot_bottom(&self) -> f64 {
        self.h - BOTTOM
    }

    /// Legend entries after the title, left to right.
    fn legend(&mut self, title: &str, entries: &[(&str, &str)]) {
        let mut x = 4.0 + 7.0 * title.chars().count() as f64 + 16.0;
        for (name, color) in entries {
            let _ = write!(
                self.out,
                "<g class=\"legend\"><rect x=\"{}\" y=\"5\" width=\"10\" height=\"10\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"14\">{}</text></g>",
                C(x),
                escape(color),
                C(x + 13.0),
                escape(name)
            );
            x += 13.0 + 6.5 * name.chars().count() as f64 + 12.0;
        }
    }

    /// The time axis: ticks and labels along the bottom.
    fn time_axis(&mut self, labels: TimeLabels, y: f64) {
        let (lo, hi) = (self.x.lo, self.x.hi);
        let target = ((self.w - LEFT - RIGHT) / 90.0).max(2.0) as usize;
        let step = time_step((hi - lo) / target as f64);
        let _ = write!(
            self.out,
            "<line class=\"axis\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>",
            C(LEFT),
            C(y),
            C(self.w - RIGHT),
            C(y)
        );
        for t in ticks_every(lo, hi, step) {
            let px = self.x.px(t);
            let _ = write!(
                self.out,
                "<line class=\"tick\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#888\"/>\
                 <text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#444\">{4}</text>",
                C(px),
                C(y),
                C(y + 4.0),
                C(y + 15.0),
                escape(&format_time(labels, t, step))
            );
        }
    }

    /// Horizontal grid lines and labels of a value axis.
    fn value_axis(&mut self, y: &Axis, unit: Unit, ticks: &[f64]) {
        for &v in ticks {
            let py = y.px(v);
            let _ = write!(
                self.out,
                "<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{3}\" y=\"{4}\" text-anchor=\"end\" fill=\"#444\">{5}</text>",
                C(LEFT),
                C(py),
                C(self.w - RIGHT),
                C(LEFT - 4.0),
                C(py + 4.0),
                escape(&format_value(unit, v))
            );
        }
    }

    /// Shaded spans from `top` to `bottom`, each with its hover label.
    fn spans(
        &mut self,
        spans: &[Span],
        top: f64,
        bottom: f64,
        class: &str,
        fill: &str,
        opacity: f64,
    ) {
        for s in spans {
            if !(s.start.is_finite() && s.end.is_finite()) {
                continue;
            }
            let x0 = self.x.px(s.start);
            let x1 = self.x.px(s.end.max(s.start)).max(x0 + MIN_MARK_PX);
            let _ = write!(
                self.out,
                "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" \
                 fill-opacity=\"{opacity}\"><title>{}</title></rect>",
                C(x0),
                C(top),
                C(x1 - x0),
                C(bottom - top),
                escape(fill),
                escape(&s.label)
            );
        }
    }

    /// What lies behind the data of a chart with a value axis (from `lo` to `hi`, log or
    /// linear): the episodes shaded, the grid and its labels, the time axis. Returns the
    /// value axis.
    fn value_plot(
        &mut self,
        frame: &Frame,
        spans: &[Span],
        unit: Unit,
        (lo, hi): (f64, f64),
        log: bool,
    ) -> Axis {
        let bottom = self.plot_bottom();
        let y = Axis::new(lo, hi, bottom, TOP, log);
        let ticks = if log {
            log_ticks(lo, hi)
        } else {
            linear_ticks(lo, hi, unit, ((bottom - TOP) / 30.0).max(2.0) as usize)
        };
        self.spans(spans, TOP, bottom, "episode-shade", EPISODE_COLOR, 0.18);
        self.value_axis(&y, unit, &ticks);
        self.time_axis(frame.time_labels, bottom);
        y
    }

    fn close(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

impl LineChart {
    /// An empty linear chart of `unit` in a default [`Frame`].
    pub fn new(title: &str, unit: Unit) -> LineChart {
        LineChart {
            frame: Frame::new(title),
            unit,
            scale: Scale::Linear,
            series: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// The chart as one `<svg>` element.
    pub fn render(&self) -> String {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.spans.iter().flat_map(|s| [s.start, s.end]));
        let x = x_range(self.frame.x_range, xs);
        let mut c = Canvas::open(&self.frame, x, "line-chart");
        let entries: Vec<(&str, &str)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.color.as_str()))
            .collect();
        c.legend(&self.frame.title, &entries);
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let log = self.scale == Scale::Log;
        let (lo, hi) = if log {
            log_y_range(values)
        } else {
            linear_y_range(values)
        };
        let y = c.value_plot(&self.frame, &self.spans, self.unit, (lo, hi), log);
        for s in &self.series {
            let drawable = |v: f64| v.is_finite() && (!log || v > 0.0);
            let mut segment: Vec<(f64, f64)> = Vec::new();
            let mut segments = Vec::new();
            for &(t, v) in &s.points {
                if t.is_finite() && drawable(v) {
                    segment.push((c.x.px(t), y.px(v)));
                } else if !segment.is_empty() {
                    segments.push(std::mem::take(&mut segment));
                }
            }
            if !segment.is_empty() {
                segments.push(segment);
            }
            let color = escape(&s.color);
            let name = escape(&s.name);
            let _ = write!(c.out, "<g class=\"series-group\"><title>{name}</title>");
            for seg in segments {
                if let [(px, py)] = seg[..] {
                    let _ = write!(
                        c.out,
                        "<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"2\" fill=\"{color}\"/>",
                        C(px),
                        C(py)
                    );
                    continue;
                }
                let _ = write!(
                    c.out,
                    "<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" \
                     stroke-linejoin=\"round\" points=\""
                );
                for (i, (px, py)) in seg.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let _ = write!(c.out, "{sep}{},{}", C(*px), C(*py));
                }
                c.out.push_str("\"/>");
            }
            c.out.push_str("</g>");
        }
        c.close()
    }
}

impl StackedBars {
    /// An empty chart of `unit` with these layers (bottom first), in a default [`Frame`].
    pub fn new(title: &str, unit: Unit, layers: Vec<Layer>) -> StackedBars {
        StackedBars {
            frame: Frame::new(title),
            unit,
            layers,
            bars: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// The chart as one `<svg>` element.
    pub fn render(&self) -> String {
        let value = |b: &Bar, i: usize| {
            b.values
                .get(i)
                .copied()
                .filter(|v| v.is_finite() && *v > 0.0)
                .unwrap_or(0.0)
        };
        let total = |b: &Bar| {
            (0..self.layers.len())
                .map(|i| value(b, i))
                .fold(0.0, |a, v| a + v)
        };
        let xs = self
            .bars
            .iter()
            .flat_map(|b| [b.start, b.end])
            .chain(self.spans.iter().flat_map(|s| [s.start, s.end]));
        let x = x_range(self.frame.x_range, xs);
        let mut c = Canvas::open(&self.frame, x, "bar-chart");
        let entries: Vec<(&str, &str)> = self
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.color.as_str()))
            .collect();
        c.legend(&self.frame.title, &entries);
        let (lo, hi) = linear_y_range(self.bars.iter().map(total));
        let y = c.value_plot(&self.frame, &self.spans, self.unit, (lo, hi), false);
        let mut paths: Vec<String> = vec![String::new(); self.layers.len()];
        for b in &self.bars {
            if !(b.start.is_finite() && b.end.is_finite()) {
                continue;
            }
            let x0 = c.x.px(b.start);
            let w = (c.x.px(b.end.max(b.start)) - x0).max(MIN_MARK_PX / 2.0);
            let mut base = 0.0;
            for (i, path) in paths.iter_mut().enumerate() {
                let v = value(b, i);
                if v == 0.0 {
                    continue;
                }
                let (y0, y1) = (y.px(base), y.px(base + v));
                base += v;
                let _ = write!(path, "M{} {}h{}V{}h{}z", C(x0), Px(y1), C(w), Px(y0), C(-w));
            }
        }
        for (layer, d) in self.layers.iter().zip(paths) {
            if d.is_empty() {
                continue;
            }
            let _ = write!(
                c.out,
                "<path class=\"layer\" fill=\"{}\" d=\"{d}\"><title>{}</title></path>",
                escape(&layer.color),
                escape(&layer.name)
            );
        }
        c.close()
    }
}

impl Timeline {
    /// A 720×64 strip of `spans` over `x_range`.
    pub fn new(title: &str, x_range: (f64, f64), spans: Vec<Span>) -> Timeline {
        Timeline {
            frame: Frame {
                height: 64,
                x_range: Some(x_range),
                ..Frame::new(title)
            },
            color: EPISODE_COLOR.into(),
            spans,
        }
    }

    /// The strip as one `<svg>` element.
    pub fn render(&self) -> String {
        let xs = self.spans.iter().flat_map(|s| [s.start, s.end]);
        let x = x_range(self.frame.x_range, xs);
        let mut c = Canvas::open(&self.frame, x, "timeline");
        let bottom = c.plot_bottom();
        let _ = write!(
            c.out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#eef5ee\"/>",
            C(LEFT),
            C(TOP),
            C(c.w - RIGHT - LEFT),
            C(bottom - TOP)
        );
        let color = self.color.clone();
        c.spans(&self.spans, TOP, bottom, "episode-mark", &color, 1.0);
        c.time_axis(self.frame.time_labels, bottom);
        c.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `svg` is one well-formed element: tags balance, attributes are quoted,
    /// no raw `<` or `&` outside markup and entities.
    fn assert_well_formed(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert_text_ok(text);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap());
            }
            for attr in tag.split('"').skip(1).step_by(2) {
                assert_text_ok(attr);
            }
            rest = &rest[close + 1..];
            if stack.is_empty() {
                assert!(rest.is_empty(), "content after the root: {rest}");
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    fn assert_text_ok(text: &str) {
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&lt;", "&gt;", "&amp;", "&quot;", "&#39;"].contains(&entity),
                "bare & in {text}"
            );
        }
    }

    /// Every number in the output's coordinates, as parsed from polyline points.
    fn polyline_points(svg: &str) -> Vec<(f64, f64)> {
        svg.split("points=\"")
            .skip(1)
            .flat_map(|s| {
                s[..s.find('"').unwrap()]
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            color: "#1f77b4".into(),
            points,
        }
    }

    #[test]
    fn a_line_chart_is_well_formed_and_scales_points_into_the_plot() {
        let mut chart = LineChart::new("latency", Unit::Seconds);
        chart.series.push(series(
            "p99",
            (0..100)
                .map(|i| (1_700_000_000.0 + f64::from(i), 0.001 * f64::from(i)))
                .collect(),
        ));
        let svg = chart.render();
        assert_well_formed(&svg);
        let pts = polyline_points(&svg);
        assert_eq!(pts.len(), 100);
        // First point at the left edge and the bottom (value 0), last at the right edge.
        assert_eq!(pts[0], (LEFT, 200.0 - BOTTOM));
        assert_eq!(pts[99].0, 720.0 - RIGHT);
        // Time goes right, value goes up.
        assert!(pts.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 < w[0].1));
        assert!(
            pts.iter()
                .all(|&(_, y)| (TOP..=200.0 - BOTTOM).contains(&y))
        );
        // The highest value sits just under the top: the range is padded by 5 %.
        assert!(pts[99].1 > TOP && pts[99].1 < TOP + 10.0, "{:?}", pts[99]);
        // Duration labels on the value axis, clock time on the time axis.
        assert!(svg.contains(">50 ms</text>"), "{svg}");
        assert!(svg.contains(">22:13:30</text>"), "{svg}");
    }

    #[test]
    fn labels_titles_and_colours_are_escaped() {
        let mut chart = LineChart::new("<script>alert(1)</script>", Unit::Count);
        chart.series.push(Series {
            name: "a&b \"c\"".into(),
            color: "red\"/><script>".into(),
            points: vec![(1.0, 1.0), (2.0, 2.0)],
        });
        chart.spans.push(Span {
            start: 1.0,
            end: 1.5,
            label: "</title><script>x</script>\u{1}".into(),
        });
        let svg = chart.render();
        assert_well_formed(&svg);
        assert!(!svg.contains("<script"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("a&amp;b &quot;c&quot;"));
        let mut bars = StackedBars::new(
            "t",
            Unit::Count,
            vec![Layer {
                name: "<b>".into(),
                color: "x'".into(),
            }],
        );
        bars.bars.push(Bar {
            start: 0.0,
            end: 1.0,
            values: vec![1.0],
        });
        let svg = bars.render();
        assert_well_formed(&svg);
        assert!(svg.contains("&lt;b&gt;") && svg.contains("x&#39;"));
        let svg = Timeline::new("&", (0.0, 10.0), chart.spans.clone()).render();
        assert_well_formed(&svg);
    }

    #[test]
    fn empty_single_point_and_nan_data_render_without_panicking() {
        let empty = LineChart::new("empty", Unit::Seconds).render();
        assert_well_formed(&empty);
        assert!(!empty.contains("<polyline") && !empty.contains("<circle"));

        let mut one = LineChart::new("one", Unit::Seconds);
        one.series.push(series("p50", vec![(100.0, 0.5)]));
        let svg = one.render();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<circle class=\"point\"").count(), 1);

        // A NaN breaks the line in two; an infinite time is dropped too.
        let mut gaps = LineChart::new("gaps", Unit::Count);
        gaps.series.push(series(
            "s",
            vec![
                (1.0, 1.0),
                (2.0, 2.0),
                (3.0, f64::NAN),
                (4.0, 3.0),
                (5.0, 4.0),
                (f64::INFINITY, 1.0),
                (6.0, f64::NEG_INFINITY),
            ],
        ));
        let svg = gaps.render();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(polyline_points(&svg).len(), 4);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));

        let mut nothing = StackedBars::new("bars", Unit::PerSecond, vec![]);
        nothing.bars.push(Bar {
            start: f64::NAN,
            end: 1.0,
            values: vec![f64::NAN],
        });
        assert_well_formed(&nothing.render());
        assert_well_formed(&Timeline::new("t", (5.0, 5.0), vec![]).render());
    }

    #[test]
    fn huge_values_and_ranges_stay_finite_and_inside_the_plot() {
        let mut chart = LineChart::new("huge", Unit::Count);
        chart.series.push(series(
            "s",
            vec![
                (-1e308, -1e308),
                (0.0, 0.0),
                (1e308, 1e308),
                (1e308, f64::MAX),
            ],
        ));
        let svg = chart.render();
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for (x, y) in polyline_points(&svg) {
            assert!(
                (0.0..=720.0).contains(&x) && (0.0..=200.0).contains(&y),
                "{x},{y}"
            );
        }
        // Bounded ticks whatever the range.
        assert!(svg.matches("class=\"tick\"").count() <= MAX_TICKS + 1);
        assert!(svg.matches("class=\"grid\"").count() <= MAX_TICKS + 1);
        let mut log = chart.clone();
        log.scale = Scale::Log;
        let svg = log.render();
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn a_log_axis_has_decade_ticks_and_skips_values_that_are_not_positive() {
        let mut chart = LineChart::new("latency", Unit::Seconds);
        chart.scale = Scale::Log;
        chart.series.push(series(
            "max",
            vec![(0.0, 0.0005), (1.0, 0.0), (2.0, 0.02), (3.0, 2.0)],
        ));
        let svg = chart.render();
        assert_well_formed(&svg);
        for label in [
            ">100 µs<",
            ">1 ms<",
            ">10 ms<",
            ">100 ms<",
            ">1 s<",
            ">10 s<",
        ] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        // 0 is not drawable on a log axis: a lone point, then a line of two.
        assert_eq!(svg.matches("<circle").count(), 1);
        let pts = polyline_points(&svg);
        assert_eq!(pts.len(), 2);
        // Equal ratios are equal distances: 20 ms → 2 s is two decades of five.
        let plot = 200.0 - BOTTOM - TOP;
        assert!(
            (pts[0].1 - pts[1].1 - plot * 2.0 / 5.0).abs() < 0.2,
            "{pts:?}"
        );
    }

    #[test]
    fn spans_are_shaded_with_their_label_and_never_thinner_than_a_mark() {
        let mut chart = LineChart::new("c", Unit::Count);
        chart.frame.x_range = Some((0.0, 86400.0));
        chart.spans.push(Span {
            start: 3600.0,
            end: 3600.5,
            label: "episode 0.5 s".into(),
        });
        let svg = chart.render();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("class=\"episode-shade\"").count(), 1);
        assert!(svg.contains("<title>episode 0.5 s</title>"));
        assert!(svg.contains(&format!("width=\"{}\"", MIN_MARK_PX)), "{svg}");
        let strip = Timeline::new("day", (0.0, 86400.0), chart.spans.clone()).render();
        assert_eq!(strip.matches("class=\"episode-mark\"").count(), 1);
        // A day-long axis is labelled in hours and minutes.
        assert!(strip.contains(">06:00</text>"), "{strip}");
    }

    #[test]
    fn stacked_bars_stack_layers_and_skip_zero_values() {
        let layers = ["ok", "recovered", "failed"]
            .iter()
            .map(|n| Layer {
                name: n.to_string(),
                color: "#000".into(),
            })
            .collect();
        let mut chart = StackedBars::new("ops", Unit::PerSecond, layers);
        chart.frame.x_range = Some((0.0, 10.0));
        for i in 0..10 {
            chart.bars.push(Bar {
                start: f64::from(i),
                end: f64::from(i + 1),
                values: vec![8.0, if i == 3 { 1.0 } else { 0.0 }, 0.0],
            });
        }
        let svg = chart.render();
        assert_well_formed(&svg);
        // One path per layer with data; the failed layer has none.
        assert_eq!(svg.matches("<path class=\"layer\"").count(), 2);
        let ok = svg.split("<path").nth(1).unwrap();
        assert_eq!(ok.matches('M').count(), 10);
        let recovered = svg.split("<path").nth(2).unwrap();
        assert_eq!(recovered.matches('M').count(), 1);
        // The recovered bar starts where the ok bar ends.
        let top_of_ok = ok.split("M").nth(4).unwrap().split(' ').nth(1).unwrap();
        let recovered_base = recovered
            .split('V')
            .nth(1)
            .unwrap()
            .split('h')
            .next()
            .unwrap();
        assert_eq!(top_of_ok.split('h').next().unwrap(), recovered_base);
        assert!(svg.contains(">8/s</text>"), "{svg}");
    }

    #[test]
    fn values_and_times_have_readable_labels() {
        assert_eq!(format_value(Unit::Seconds, 0.00025), "250 µs");
        assert_eq!(format_value(Unit::Seconds, 0.0123), "12.3 ms");
        assert_eq!(format_value(Unit::Seconds, 1.5), "1.5 s");
        assert_eq!(format_value(Unit::Seconds, 120.0), "2 min");
        assert_eq!(format_value(Unit::Seconds, 5400.0), "1.5 h");
        assert_eq!(format_value(Unit::Count, 1500.0), "1.5k");
        assert_eq!(format_value(Unit::Count, 3e6), "3M");
        assert_eq!(format_value(Unit::Count, 1e300), "1.0e300");
        assert_eq!(format_value(Unit::PerSecond, 20.0), "20/s");
        assert_eq!(format_value(Unit::Ratio, 0.999), "99.9%");
        assert_eq!(format_value(Unit::Count, f64::NAN), "-");
        assert_eq!(
            format_time(TimeLabels::Utc, 1_700_000_000.0, 5.0),
            "22:13:20"
        );
        assert_eq!(
            format_time(TimeLabels::Utc, 1_700_000_000.0, 600.0),
            "22:13"
        );
        assert_eq!(
            format_time(TimeLabels::Utc, 1_700_000_000.0, 86400.0),
            "2023-11-14"
        );
        assert_eq!(format_time(TimeLabels::Utc, f64::NAN, 1.0), "");
        let since = TimeLabels::Elapsed { origin: 100.0 };
        assert_eq!(format_time(since, 250.0, 30.0), "+2m30s");
        assert_eq!(format_time(since, 100.0, 30.0), "+0s");
        assert_eq!(format_elapsed(90061.0), "1d1h1m1s");
        assert_eq!(format_elapsed(-5.0), "-5s");
    }

    #[test]
    fn output_grows_linearly_with_the_points_given() {
        let chart = |n: u32| {
            let mut c = LineChart::new("n", Unit::Seconds);
            c.series.push(series(
                "s",
                (0..n).map(|i| (f64::from(i), f64::from(i % 7))).collect(),
            ));
            c.render().len()
        };
        let (small, big) = (chart(1000), chart(2000));
        let per_point = (big - small) as f64 / 1000.0;
        assert!(per_point < 16.0, "{per_point} bytes per point");
    }
}
