//! What every SVG chart is drawn on: the `<svg>` header and title, the legend, the value
//! and time axes, and the shaded spans (episodes).

use std::fmt::Write as _;

use super::axis::{Axis, C, linear_ticks, log_ticks, ticks_every, time_step};
use super::{BOTTOM, EPISODE_COLOR, Frame, LEFT, MIN_MARK_PX, RIGHT, Span, TOP, TimeLabels, Unit};
use super::{escape, format_time, format_value};

/// The pieces every chart shares: header, frame, axes, spans.
pub(super) struct Canvas {
    pub(super) out: String,
    pub(super) x: Axis,
    pub(super) w: f64,
    h: f64,
}

impl Canvas {
    pub(super) fn open(frame: &Frame, x: (f64, f64), class: &str) -> Canvas {
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

    pub(super) fn plot_bottom(&self) -> f64 {
        self.h - BOTTOM
    }

    /// Legend entries after the title, left to right.
    pub(super) fn legend(&mut self, title: &str, entries: &[(&str, &str)]) {
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
    pub(super) fn time_axis(&mut self, labels: TimeLabels, y: f64) {
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
    pub(super) fn value_axis(&mut self, y: &Axis, unit: Unit, ticks: &[f64]) {
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
    pub(super) fn spans(
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
    pub(super) fn value_plot(
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

    pub(super) fn close(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}
