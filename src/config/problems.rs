//! The collected list of configuration problems and how each is shown: every message names
//! its key and value, secrets are masked (in values, in URLs and in error text quoted from
//! parsers), and control characters are escaped so that no value can forge a log line.

use std::fmt;

use figment::value::Value;

use crate::secret::MASK;

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One problem: which key, which value (secrets masked), what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `"targets[1].rate"`, `"defaults.retry.base"`, `"listen"`, `"--target"`, `"--config"`.
    pub key: String,
    /// The offending value as written in TOML (`"\"fast\""`, `"0"`), masked if secret;
    /// empty when the problem is a missing key or is about several keys.
    pub value: String,
    /// What is wrong, lowercase; names the layer when the value came from the environment
    /// or a flag.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    /// One line whatever the fields hold: secrets that slipped into a value or a quoted
    /// parser message are masked again, and control characters are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = shown(&self.key);
        let message = shown(&self.message);
        if self.value.is_empty() {
            write!(f, "invalid configuration: {key}: {message}")
        } else {
            let value = shown(&self.value);
            write!(f, "invalid configuration: {key} = {value}: {message}")
        }
    }
}

impl std::error::Error for ConfigProblem {}

impl std::error::Error for ConfigErrors {}

impl ConfigProblem {
    pub(super) fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            message: message.into(),
        }
    }
}

/// Text as it may appear in a problem line: secrets masked, control characters escaped.
fn shown(text: &str) -> String {
    escape_controls(&mask_secrets_in_text(text))
}

/// Escapes control characters (`\n`, `\u{1b}`...) the way `{:?}` does and leaves everything
/// else as it is, so that user or server text cannot end a log line or move the cursor.
pub(super) fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

/// Keys whose values are secrets (`password`, `sentinel_password`...). `password_file` and
/// `password_env` hold a path and a variable name, which are not.
pub(super) fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(name.ends_with("_file") || name.ends_with("_env"))
        && ["pass", "pwd", "secret", "token", "credential"]
            .iter()
            .any(|word| name.contains(word))
}

/// The closest known key to a misspelt one, for "did you mean" hints: Levenshtein distance
/// at most 2, or at most a third of the longer name for long keys.
pub(super) fn suggestion<'k>(name: &str, known: &[&[&'k str]]) -> Option<&'k str> {
    known
        .iter()
        .flat_map(|keys| keys.iter())
        .map(|candidate| (strsim::levenshtein(name, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance > 0 && *distance <= 2.max(name.len().max(candidate.len()) / 3)
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// A secret value as shown: masked, unless it is empty (nothing to hide, and telling).
pub(super) fn mask_value(value: &Value) -> String {
    match value {
        Value::String(_, text) if text.is_empty() => "\"\"".to_string(),
        _ => quote(MASK),
    }
}

/// Masks the password of a URL-like value (`scheme://user:password@host...`, or
/// `user:password@host`), even when it does not parse, for showing user input in problems.
pub(super) fn mask_url_text(text: &str) -> String {
    let start = text.find("://").map_or(0, |at| at + 3);
    let rest = &text[start..];
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:{MASK}{}", &text[..start], &rest[..colon], &rest[at..]),
        None => text.to_string(),
    }
}

/// Masks secrets anywhere in free text (a value that did not parse as what it should be, a
/// parser's message quoting its input): the password of every `scheme://user:password@`,
/// and the value of every `password = "..."`, `sentinel_password='...'`, `password=bare`
/// (also with JSON-escaped quotes). An unterminated quoted secret is masked to the end.
pub(super) fn mask_secrets_in_text(text: &str) -> String {
    mask_assignments(&mask_urls(text))
}

fn mask_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends where the URL ends in free text.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let end_of_authority = url.find('/').map_or(url.len(), |slash| {
            // An unencoded '/' in a password: the last '@' still ends the credentials.
            url.rfind('@')
                .filter(|&at| at > slash)
                .map_or(slash, |at| at + 1)
        });
        let authority = &url[..end_of_authority];
        match authority
            .rfind('@')
            .and_then(|at| Some((authority[..at].find(':')?, at)))
        {
            Some((colon, at)) => {
                out.push_str(&authority[..colon]);
                out.push(':');
                out.push_str(MASK);
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn mask_assignments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if !is_word(bytes[index]) || (index > 0 && is_word(bytes[index - 1])) {
            index += 1;
            continue;
        }
        let key_end = (index..bytes.len())
            .find(|&i| !is_word(bytes[i]))
            .unwrap_or(bytes.len());
        let key = &text[index..key_end];
        // `password = `, `"password": `, `password=\"`.
        let mut at = key_end;
        while at < bytes.len() && matches!(bytes[at], b'"' | b'\'' | b'\\') {
            at += 1;
        }
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let assigned = at < bytes.len() && matches!(bytes[at], b'=' | b':');
        if !assigned || !is_secret_key(key) || (bytes[at] == b':' && at == key_end) {
            index = key_end;
            continue;
        }
        at += 1;
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let (start, end) = secret_span(text, at);
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        index = end.max(key_end);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the secret value starting at `at` lies (its quotes excluded).
fn secret_span(text: &str, at: usize) -> (usize, usize) {
    let rest = &text[at..];
    for quote in ["\\\"", "\"", "'"] {
        if let Some(inner) = rest.strip_prefix(quote) {
            let start = at + quote.len();
            let mut escaped = false;
            for (offset, c) in inner.char_indices() {
                if quote != "\\\"" && escaped {
                    escaped = false;
                } else if quote != "\\\"" && c == '\\' {
                    escaped = true;
                } else if inner[offset..].starts_with(quote) {
                    return (start, start + offset);
                }
            }
            return (start, text.len());
        }
    }
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | ')' | ';'))
        .unwrap_or(rest.len());
    (at, at + end)
}

// ---------------------------------------------------------------------------------------
// Showing values
// ---------------------------------------------------------------------------------------

/// A string as a TOML basic string (control characters escaped).
pub(super) fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{}\"", text.escape_debug()))
}

/// A parser's multi-line message as one line.
pub(super) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest value shown in a problem; a whole misplaced table is not worth more.
const MAX_SHOWN: usize = 200;

/// A value as TOML-like text for a problem, with URL passwords and secret keys masked.
pub(super) fn render(value: &Value) -> String {
    let mut text = String::new();
    render_into(&mut text, value);
    if text.chars().count() > MAX_SHOWN {
        text = text.chars().take(MAX_SHOWN).collect::<String>() + "…";
    }
    text
}

fn render_into(out: &mut String, value: &Value) {
    match value {
        Value::String(_, text) => out.push_str(&quote(&mask_assignments(&mask_url_text(text)))),
        Value::Char(_, c) => out.push_str(&quote(&c.to_string())),
        Value::Bool(_, flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Num(_, num) => {
            let text = num
                .to_u128()
                .map(|n| n.to_string())
                .or_else(|| num.to_i128().map(|n| n.to_string()))
                // `{:?}` writes 1e-300 as such, where `{}` writes 300 zeros.
                .or_else(|| num.to_f64().map(|n| format!("{n:?}")))
                .unwrap_or_default();
            out.push_str(&text);
        }
        Value::Empty(..) => {}
        Value::Array(_, items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render_into(out, item);
            }
            out.push(']');
        }
        Value::Dict(_, dict) => {
            out.push_str("{ ");
            for (index, (key, item)) in dict.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(&escape_controls(key));
                out.push_str(" = ");
                if is_secret_key(key) {
                    out.push_str(&mask_value(item));
                } else {
                    render_into(out, item);
                }
            }
            out.push_str(" }");
        }
    }
}
