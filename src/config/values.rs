//! Reading single values of the merged tree as the type their key needs (an environment
//! variable's text is read as that type too), within their bounds, and recording a problem
//! that names the key, the value (masked if secret) and the variable or flag that set it.

use std::fmt;
use std::time::Duration;

use figment::Source;
use figment::value::{Dict, Value};

use super::check::{Checker, last_segment};
use super::layers::{ENV_LAYER, FLAG_LAYER};
use super::problems::{ConfigProblem, is_secret_key, mask_value, quote, render, suggestion};
use super::settings::{MAX_RATE, MAX_TIMEOUT, MAX_VALUE_SIZE, MIN_RATE, MIN_TIMEOUT};
use super::url::{ParsedUrl, parse_url};
use super::{Protocol, Rate, VALUE_HEADER_SIZE};

/// Largest counter threshold: TOML integers are signed 64-bit, and the effective
/// configuration must print back as TOML.
pub(super) const MAX_COUNT: u64 = i64::MAX as u64;
/// Longest duration anywhere: far beyond any sensible setting, and small enough that adding
/// it to an `Instant` can never overflow (which panics).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// [`MAX_DURATION`] as written in messages (humantime would print months and hours).
const MAX_DURATION_TEXT: &str = "365days";

/// Bounds of a duration; every duration is also at most [`MAX_DURATION`].
#[derive(Clone, Copy)]
pub(super) enum Bound {
    /// Zero allowed.
    Any,
    /// Must be > 0.
    Positive,
    /// Must be at least this.
    AtLeast(Duration),
    /// Must be within these, inclusive.
    Between(Duration, Duration),
    /// Zero (off), or at least this.
    OffOrAtLeast(Duration),
}

impl Checker<'_> {
    // --- reporting ----------------------------------------------------------------------

    /// Records a problem with `value`, masked if `key` names a secret, and says which
    /// environment variable or flag set it.
    pub(super) fn report(&mut self, key: &str, value: &Value, message: impl fmt::Display) {
        let secret = is_secret_key(last_segment(key));
        self.report_shown(key, value, message, secret);
    }

    pub(super) fn report_shown(
        &mut self,
        key: &str,
        value: &Value,
        message: impl fmt::Display,
        secret: bool,
    ) {
        let shown = if secret {
            mask_value(value)
        } else {
            render(value)
        };
        let hint = self.origin_hint(value);
        self.problems
            .push(ConfigProblem::new(key, shown, format!("{message}{hint}")));
    }

    /// An unknown key, with the closest known one as a hint.
    pub(super) fn unknown(&mut self, key: &str, value: &Value, known: &[&[&str]]) {
        let name = last_segment(key);
        let suggestion = suggestion(name, known);
        // A misspelt `password` is still a password.
        let secret = is_secret_key(name) || suggestion.is_some_and(is_secret_key);
        let message = match suggestion {
            Some(candidate) => format!("unknown key (did you mean {}?)", quote(candidate)),
            None => "unknown key".to_string(),
        };
        self.report_shown(key, value, message, secret);
    }

    pub(super) fn origin_hint(&self, value: &Value) -> String {
        let Some(metadata) = self.figment.get_metadata(value.tag()) else {
            return String::new();
        };
        match (
            metadata.name.as_ref(),
            metadata.source.as_ref().and_then(Source::custom),
        ) {
            (ENV_LAYER, Some(name)) => format!(" (from environment variable {name})"),
            (FLAG_LAYER, Some(flag)) => format!(" (from {flag})"),
            _ => String::new(),
        }
    }

    /// Environment variables carry text only: their values are read as the type the key needs.
    pub(super) fn is_from_env(&self, value: &Value) -> bool {
        self.figment
            .get_metadata(value.tag())
            .is_some_and(|metadata| metadata.name == ENV_LAYER)
    }

    // --- typed values ---------------------------------------------------------------------

    pub(super) fn table<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v Dict> {
        match value {
            Value::Dict(_, dict) => Some(dict),
            _ => {
                self.report(key, value, "expected a table");
                None
            }
        }
    }

    pub(super) fn text<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::String(_, text) => Some(text),
            _ => {
                self.report(key, value, "expected a string");
                None
            }
        }
    }

    pub(super) fn non_empty_text(&mut self, key: &str, value: &Value) -> Option<String> {
        match self.text(key, value)? {
            "" => {
                self.report(key, value, "must not be empty (leave the key out instead)");
                None
            }
            text => Some(text.to_string()),
        }
    }

    pub(super) fn boolean(&mut self, key: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(_, flag) => Some(*flag),
            Value::String(_, text) if self.is_from_env(value) && text.trim() == "true" => {
                Some(true)
            }
            Value::String(_, text) if self.is_from_env(value) && text.trim() == "false" => {
                Some(false)
            }
            _ => {
                self.report(key, value, "expected true or false");
                None
            }
        }
    }

    /// An integer in `min..=max`, converted to the field's type (which the bounds fit).
    pub(super) fn integer<T: TryFrom<u64>>(
        &mut self,
        key: &str,
        value: &Value,
        min: u64,
        max: u64,
    ) -> Option<T> {
        let number: Option<i128> = match value {
            Value::Num(_, num) => num
                .to_u128()
                .and_then(|n| i128::try_from(n).ok())
                .or_else(|| num.to_i128()),
            Value::String(_, text) if self.is_from_env(value) => text.trim().parse().ok(),
            _ => None,
        };
        let in_range = number
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok());
        if in_range.is_none() {
            let expected = if max == MAX_COUNT {
                format!("expected an integer >= {min}")
            } else {
                format!("expected an integer from {min} to {max}")
            };
            self.report(key, value, expected);
        }
        in_range
    }

    /// A finite number, integer or not; `None` without reporting if it is not one.
    pub(super) fn number(&self, value: &Value) -> Option<f64> {
        let number = match value {
            Value::Num(_, num) => num.to_f64().or_else(|| {
                num.to_u128()
                    .map(|n| n as f64)
                    .or_else(|| num.to_i128().map(|n| n as f64))
            }),
            Value::String(_, text) if self.is_from_env(value) => text.trim().parse().ok(),
            _ => None,
        };
        number.filter(|n: &f64| n.is_finite())
    }

    pub(super) fn ratio(&mut self, key: &str, value: &Value) -> Option<f64> {
        let ratio = self.number(value).filter(|n| (0.0..=1.0).contains(n));
        if ratio.is_none() {
            self.report(key, value, "expected a number from 0.0 to 1.0");
        }
        ratio
    }

    pub(super) fn rate(&mut self, key: &str, value: &Value) -> Option<Rate> {
        if let Value::String(_, text) = value
            && text.trim() == "max"
        {
            return Some(Rate::Max);
        }
        match self.number(value) {
            Some(rate) if (MIN_RATE..=MAX_RATE).contains(&rate) => Some(Rate::PerSecond(rate)),
            Some(rate) if rate > 0.0 && rate < MIN_RATE => {
                self.report(
                    key,
                    value,
                    format!("must be at least {MIN_RATE} operations per second (or \"max\")"),
                );
                None
            }
            Some(rate) if rate > MAX_RATE => {
                self.report(
                    key,
                    value,
                    format!("must be at most {MAX_RATE} operations per second (or \"max\")"),
                );
                None
            }
            _ => {
                self.report(key, value, "expected a number > 0 or \"max\"");
                None
            }
        }
    }

    pub(super) fn value_size(&mut self, key: &str, value: &Value) -> Option<usize> {
        let size: u64 = self.integer(key, value, 0, MAX_COUNT)?;
        if size < VALUE_HEADER_SIZE as u64 {
            self.report(
                key,
                value,
                format!("must be at least {VALUE_HEADER_SIZE} bytes, the size of the value header"),
            );
            None
        } else if size > MAX_VALUE_SIZE {
            self.report(
                key,
                value,
                format!("must be at most {MAX_VALUE_SIZE} bytes (1 MiB)"),
            );
            None
        } else {
            usize::try_from(size).ok()
        }
    }

    pub(super) fn duration(&mut self, key: &str, value: &Value, bound: Bound) -> Option<Duration> {
        let text = match value {
            Value::String(_, text) => text,
            Value::Num(..) => {
                self.report(
                    key,
                    value,
                    "expected a duration string such as \"500ms\" (a bare number has no unit)",
                );
                return None;
            }
            _ => {
                self.report(key, value, "expected a duration string such as \"500ms\"");
                return None;
            }
        };
        let duration = match parse_duration(text) {
            Ok(duration) => duration,
            Err(message) => {
                self.report(key, value, message);
                return None;
            }
        };
        let problem = match bound {
            _ if duration > MAX_DURATION => Some(format!("must be at most {MAX_DURATION_TEXT}")),
            Bound::Positive if duration.is_zero() => Some("must be greater than 0s".to_string()),
            Bound::AtLeast(min) | Bound::Between(min, _) if duration < min => Some(format!(
                "must be at least {}",
                humantime::format_duration(min)
            )),
            Bound::Between(_, max) if duration > max => Some(format!(
                "must be at most {}",
                humantime::format_duration(max)
            )),
            Bound::OffOrAtLeast(min) if !duration.is_zero() && duration < min => Some(format!(
                "must be 0s (off) or at least {}",
                humantime::format_duration(min)
            )),
            _ => None,
        };
        match problem {
            Some(message) => {
                self.report(key, value, message);
                None
            }
            None => Some(duration),
        }
    }

    /// `connect_timeout` and `response_timeout`.
    pub(super) fn timeout(&mut self, key: &str, value: &Value) -> Option<Duration> {
        self.duration(key, value, Bound::Between(MIN_TIMEOUT, MAX_TIMEOUT))
    }

    /// `protocol = 2 | 3` (an environment variable's text "2" or "3").
    pub(super) fn protocol(&mut self, key: &str, value: &Value) -> Option<Protocol> {
        let version: Option<i128> = match value {
            Value::Num(_, num) => num.to_i128(),
            Value::String(_, text) if self.is_from_env(value) => text.trim().parse().ok(),
            _ => None,
        };
        match version {
            Some(2) => Some(Protocol::Resp2),
            Some(3) => Some(Protocol::Resp3),
            _ => {
                self.report(key, value, "expected 2 (RESP2) or 3 (RESP3)");
                None
            }
        }
    }

    pub(super) fn url(&mut self, key: &str, value: &Value) -> Option<ParsedUrl> {
        let text = self.text(key, value)?;
        match parse_url(text) {
            Ok(url) => Some(url),
            Err(error) => {
                self.report(key, value, error);
                None
            }
        }
    }
}

/// A humantime duration such as `"250ms"` or `"1h30m"`; one that overflows is an error.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("expected a duration such as \"500ms\" or \"1h30m\": {error}"))
}
