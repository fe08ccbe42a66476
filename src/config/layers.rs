//! Layering (DESIGN §4): built-in defaults < the TOML file (`--config`, read with a size
//! limit) < `REDIS_CANARY_*` environment variables < flags (`--listen`, `--log-format`,
//! `--target NAME=URL`). figment merges the layers; each environment variable and flag is a
//! layer of its own, so that a problem can name where its value came from. The merged tree
//! goes to [`super::check`].

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::check::{Checker, is_target_name};
use super::problems::{
    ConfigErrors, ConfigProblem, escape_controls, mask_url_text, one_line, quote,
};
use super::url::parse_url;
use super::{Config, ENV_PREFIX, TOP_LEVEL_KEYS};
use crate::cli::CommonArgs;

/// Largest configuration file read: a real one is a few KiB; anything near this is the wrong
/// file, and reading on would only hang or exhaust memory.
pub const MAX_CONFIG_FILE_SIZE: u64 = 1 << 20;

/// Separates nesting levels in variable names: `REDIS_CANARY_DEFAULTS__RATE` is `defaults.rate`
/// (a single `_` is part of key names such as `value_size`).
const ENV_SEPARATOR: &str = "__";

/// Metadata name of a value set by an environment variable: problem messages name the
/// variable, and its text is read as the type the key needs.
pub(super) const ENV_LAYER: &str = "environment variable";
/// Metadata name of a value set by a flag: problem messages name the flag.
pub(super) const FLAG_LAYER: &str = "command-line flag";

/// Loads the configuration from the file named by `--config`, the process environment and
/// the flags.
pub fn load(args: &CommonArgs) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect();
    load_from(args, &env)
}

/// Like [`load`], with the environment given explicitly (`HOSTNAME` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` are read from it too).
pub fn load_from(args: &CommonArgs, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let file = match &args.config {
        Some(path) => match read_config_file(path) {
            Ok(text) => Some((path.as_path(), text)),
            Err(message) => {
                return Err(ConfigErrors(vec![ConfigProblem::new(
                    "--config",
                    quote(&path.display().to_string()),
                    message,
                )]));
            }
        },
        None => None,
    };
    load_layers(
        file.as_ref().map(|(path, text)| (*path, text.as_str())),
        args,
        env,
    )
}

/// The configuration file's text, read up to [`MAX_CONFIG_FILE_SIZE`] bytes: `--config
/// /dev/zero` or a log file given by mistake fails at once instead of filling the memory.
fn read_config_file(path: &Path) -> Result<String, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG_FILE_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|error| format!("cannot read the file: {error}"))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_SIZE {
        return Err(format!(
            "the file is larger than {MAX_CONFIG_FILE_SIZE} bytes (1 MiB): not a configuration file"
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        format!(
            "the file is not utf-8 text (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })
}

/// Layers the file's text, the environment and the flags, then checks the merged tree.
pub(super) fn load_layers(
    file: Option<(&Path, &str)>,
    args: &CommonArgs,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut figment = Figment::new();
    if let Some((path, text)) = file {
        // figment would report the same error, but over several lines with a source
        // snippet; one line naming the position is what a problem list needs.
        if let Err(error) = text.parse::<toml::Table>() {
            return Err(ConfigErrors(vec![toml_problem(path, text, &error)]));
        }
        figment = figment.merge(Toml::string(text));
    }

    // Ignored variables are returned in `Config::ignored_env`; main logs them once,
    // after logging is set up.
    let env = EnvLayers::split(env);
    for layer in env.layers {
        figment = figment.merge(layer);
    }
    if let Some(listen) = &args.listen {
        figment = figment.merge(Layer::flag("--listen", "listen", listen));
    }
    if let Some(log_format) = &args.log_format {
        figment = figment.merge(Layer::flag("--log-format", "log_format", log_format));
    }
    if let Some(shard) = &args.shard {
        figment = figment.merge(Layer::flag("--shard", "shard", shard));
    }

    let mut tree = match figment.find_value("") {
        Ok(Value::Dict(_, dict)) => dict,
        Ok(_) => Dict::new(),
        Err(error) => {
            let path = file.map_or_else(String::new, |(path, _)| path.display().to_string());
            return Err(ConfigErrors(vec![ConfigProblem::new(
                "--config",
                quote(&path),
                one_line(&error.to_string()),
            )]));
        }
    };

    let mut checker = Checker {
        figment: &figment,
        env: env.all,
        problems: env.problems,
    };
    let target_flags_failed = apply_target_flags(&mut tree, &args.targets, &mut checker.problems);
    let config = checker.config(&tree, env.ignored, target_flags_failed);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(checker.problems))
    }
}

/// A TOML syntax error as one problem naming the file and the line and column.
fn toml_problem(path: &Path, text: &str, error: &toml::de::Error) -> ConfigProblem {
    let position = error.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    ConfigProblem::new(
        "--config",
        quote(&path.display().to_string()),
        format!(
            "cannot parse the file as toml{}: {}",
            position.unwrap_or_default(),
            one_line(error.message())
        ),
    )
}

/// `--target NAME=URL` flags, the last layer: a name already present gets its URL replaced,
/// a new name is appended. Bad flags are reported under `--target` and left out. Returns
/// whether any flag was bad.
fn apply_target_flags(
    tree: &mut Dict,
    flags: &[String],
    problems: &mut Vec<ConfigProblem>,
) -> bool {
    let mut failed = false;
    for flag in flags {
        let mut reject = |message: String| {
            problems.push(ConfigProblem::new(
                "--target",
                quote(&mask_url_text(flag)),
                message,
            ));
            failed = true;
        };
        let Some((name, url)) = flag.split_once('=') else {
            reject("expected NAME=URL".into());
            continue;
        };
        if !is_target_name(name) {
            reject(format!(
                "invalid target name {}: expected 1 to 63 of [a-z0-9_-]",
                quote(name)
            ));
            continue;
        }
        if let Err(error) = parse_url(url) {
            reject(error.to_string());
            continue;
        }
        let targets = tree
            .entry("targets".to_string())
            .or_insert_with(|| Value::Array(Tag::Default, Vec::new()));
        // Anything but an array is reported by the check of the tree.
        let Value::Array(_, list) = targets else {
            continue;
        };
        let existing = list.iter_mut().find_map(|item| match item {
            Value::Dict(_, dict) if dict.get("name").and_then(Value::as_str) == Some(name) => {
                Some(dict)
            }
            _ => None,
        });
        let url = Value::from(url.to_string());
        match existing {
            Some(dict) => {
                dict.insert("url".into(), url);
            }
            None => {
                let mut dict = Dict::new();
                dict.insert("name".into(), Value::from(name.to_string()));
                dict.insert("url".into(), url);
                list.push(Value::Dict(Tag::Default, dict));
            }
        }
    }
    failed
}

/// The environment split into configuration layers, ignored names and malformed names.
struct EnvLayers<'e> {
    all: &'e [(String, String)],
    layers: Vec<Layer>,
    ignored: Vec<String>,
    problems: Vec<ConfigProblem>,
}

impl<'e> EnvLayers<'e> {
    /// Does what figment's `Env::prefixed(ENV_PREFIX).split("__")` does (prefix matched
    /// without regard to case, keys lowercased), but over an explicit list so that tests need
    /// not touch the process environment, and one layer per variable so that a problem can
    /// name the variable its value came from. Variables are applied sorted by name, so
    /// `REDIS_CANARY_DEFAULTS__RATE` refines `REDIS_CANARY_DEFAULTS`.
    fn split(env: &'e [(String, String)]) -> Self {
        let mut vars: Vec<&(String, String)> = env.iter().collect();
        vars.sort();
        let mut split = Self {
            all: env,
            layers: Vec::new(),
            ignored: Vec::new(),
            problems: Vec::new(),
        };
        for (name, value) in vars {
            let Some(rest) = strip_prefix_ignore_case(name.trim(), ENV_PREFIX) else {
                continue;
            };
            let segments: Vec<String> = rest
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            if !TOP_LEVEL_KEYS.contains(&segments[0].as_str()) {
                // Names only, never values; escaped, as they end up in log lines.
                split.ignored.push(escape_controls(name));
            } else if segments.iter().any(|s| s.is_empty() || s.contains('.')) {
                split.problems.push(ConfigProblem::new(
                    name.clone(),
                    "",
                    "malformed variable name: expected REDIS_CANARY_KEY or REDIS_CANARY_TABLE__KEY",
                ));
            } else {
                split.layers.push(Layer {
                    kind: ENV_LAYER,
                    source: name.clone(),
                    key: segments.join("."),
                    value: env_value(value),
                });
            }
        }
        split
    }
}

/// An environment variable's value: inline tables, arrays and quoted strings in figment's
/// syntax (`[{name="a", url="redis://h:6379"}]`), anything else as the raw text, which
/// the checks then read as the type the key needs (so `REDIS_CANARY_INSTANCE=007` stays
/// `"007"`).
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with(['[', '{', '"']) {
        // figment's parser is infallible: what it cannot parse comes back as a string.
        Value::from_str(trimmed).unwrap_or_else(|never| match never {})
    } else {
        Value::from(raw.to_string())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// One value set by one environment variable or one flag. Its metadata names the variable
/// or the flag, so that problem messages can say where a bad value came from.
struct Layer {
    kind: &'static str,
    source: String,
    key: String,
    value: Value,
}

impl Layer {
    fn flag(flag: &str, key: &str, value: &str) -> Self {
        Self {
            kind: FLAG_LAYER,
            source: flag.to_string(),
            key: key.to_string(),
            value: Value::from(value.to_string()),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.kind, Source::Custom(self.source.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = match figment::util::nest(&self.key, self.value.clone()) {
            Value::Dict(_, dict) => dict,
            _ => Dict::new(),
        };
        Ok(Map::from([(Profile::Default, dict)]))
    }
}
