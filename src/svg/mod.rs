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
//!
//! Parts: this file holds the chart types and how each draws its data; `canvas` what every
//! chart is drawn on (header, legend, axes, spans); `axis` coordinates, ranges and ticks;
//! `labels` the text of values, durations and times.

use std::fmt::Write as _;

mod axis;
mod canvas;
mod labels;
#[cfg(test)]
mod tests;

use axis::{C, Px, linear_y_range, log_y_range, x_range};
use canvas::Canvas;
pub use labels::{format_elapsed, format_seconds, format_time, format_value};

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
/// Narrowest drawn span or bar, in px, so that a 1 s episode on a day-long chart shows.
const MIN_MARK_PX: f64 = 1.5;

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
