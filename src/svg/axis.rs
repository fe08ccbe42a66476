//! Coordinates and axes of the SVG charts: numbers as they are written into the output,
//! data ranges mapped onto pixels, and where the ticks of a value or time axis go.

use super::Unit;

/// Most ticks on an axis; bounds the work and the output for any range.
pub(super) const MAX_TICKS: usize = 16;

/// A coordinate rounded to 0.1 px, as text; what every number in the output goes through.
pub(super) struct C(pub(super) f64);

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
pub(super) struct Px(pub(super) f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        C(self.0.round()).fmt(f)
    }
}

/// Maps a data range onto a pixel range, clamping to it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    px_lo: f64,
    px_hi: f64,
    log: bool,
}

impl Axis {
    pub(super) fn new(lo: f64, hi: f64, px_lo: f64, px_hi: f64, log: bool) -> Axis {
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

    pub(super) fn px(&self, v: f64) -> f64 {
        self.px_lo + self.frac(v) * (self.px_hi - self.px_lo)
    }
}

pub(super) fn finite_min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The x range: the given one, or that of the data and spans; never empty.
pub(super) fn x_range(given: Option<(f64, f64)>, xs: impl Iterator<Item = f64>) -> (f64, f64) {
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
pub(super) fn linear_y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
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
pub(super) fn log_y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
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
pub(super) fn linear_ticks(lo: f64, hi: f64, unit: Unit, target: usize) -> Vec<f64> {
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

pub(super) fn nice_step(raw: f64) -> f64 {
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
pub(super) const TIME_STEPS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0,
];

pub(super) fn time_step(raw: f64) -> f64 {
    if raw < 1.0 {
        return nice_step(raw);
    }
    TIME_STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(raw / 86400.0) * 86400.0)
}

pub(super) fn ticks_every(lo: f64, hi: f64, step: f64) -> Vec<f64> {
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
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    let n = (b - a + 1).max(1);
    let every = (n as usize).div_ceil(8).max(1);
    (a..=b)
        .step_by(every)
        .take(MAX_TICKS)
        .map(|e| 10f64.powi(e))
        .collect()
}
