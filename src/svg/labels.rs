//! Text of the SVG charts' labels: values by unit, durations, times of the x axis (UTC
//! or elapsed) and calendar dates, all without a time zone database.

use std::fmt::Write as _;

use super::{TimeLabels, Unit};

/// A number with at most 3 significant digits and no trailing zeros.
pub(super) fn short(v: f64) -> String {
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

pub(super) fn format_count(v: f64) -> String {
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
pub(super) fn civil(t: f64) -> Option<(String, i64)> {
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
