//! Command line (DESIGN §3): the `run` (default), `soak` and `check-config` modes and the
//! options they share. Parsing only; the options are layered over the file and the
//! environment by `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `redis-canary [run|soak|check-config] [options]`, as parsed by clap.
///
/// Options given without a subcommand belong to the implicit `run`. Usage errors exit 2
/// (clap's default), like invalid configuration.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "redis-canary",
    version,
    about = "Measures what clients of a Redis endpoint go through when pods die, restart or stall",
    long_about = None,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of the implicit `run`.
    #[command(flatten)]
    run: CommonArgs,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
enum Command {
    /// Run the canary as a daemon (the default).
    Run(CommonArgs),
    /// Run the workload for a fixed time, judge the SLOs, exit 0 (held) or 1 (violated).
    Soak {
        #[command(flatten)]
        args: CommonArgs,
        /// How long to run, e.g. 30s, 5m, 1h30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_soak_duration)]
        duration: Duration,
        /// Where to write the JSON report.
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// Where to write the HTML report: one self-contained page (verdict, SLOs, charts
        /// over the run, episodes, backends) that opens offline.
        #[arg(long, value_name = "FILE.html")]
        report_html: Option<PathBuf>,
    },
    /// Validate the configuration and print it, fully resolved, with secrets masked.
    CheckConfig(CommonArgs),
}

/// The options every mode accepts; they are the last configuration layer (DESIGN §4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP server (ip:port): /metrics, /healthz, /readyz, the status page /,
    /// /api/v1/status and POST /-/reload.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A target as NAME=URL; repeatable. A name that exists gets its URL replaced.
    #[arg(long = "target", value_name = "NAME=URL")]
    pub targets: Vec<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Run only this replica's share of the targets: INDEX/COUNT, INDEX may be `ordinal`
    /// (the hostname's trailing -N).
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<String>,
}

/// What to do, and with which options.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The mode chosen by the subcommand.
    pub mode: Mode,
    /// The options shared by every mode.
    pub args: CommonArgs,
}

/// The three modes of DESIGN §3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The daemon.
    Run,
    /// A fixed-length run judged against the SLOs.
    Soak {
        /// How long the workload runs; always > 0.
        duration: Duration,
        /// Where the JSON report goes, if anywhere.
        report: Option<PathBuf>,
        /// Where the HTML report goes, if anywhere.
        report_html: Option<PathBuf>,
    },
    /// Validate and print the effective configuration.
    CheckConfig,
}

impl Cli {
    /// Parses the process arguments; prints usage and exits 2 on a usage error, or prints
    /// the help or version and exits 0.
    pub fn parse() -> Self {
        <Self as Parser>::parse()
    }

    /// The mode and its options; `run` when no subcommand was given.
    pub fn invocation(self) -> Invocation {
        let (mode, args) = match self.command {
            None => (Mode::Run, self.run),
            Some(Command::Run(args)) => (Mode::Run, args),
            Some(Command::Soak {
                args,
                duration,
                report,
                report_html,
            }) => (
                Mode::Soak {
                    duration,
                    report,
                    report_html,
                },
                args,
            ),
            Some(Command::CheckConfig(args)) => (Mode::CheckConfig, args),
        };
        Invocation { mode, args }
    }
}

/// A humantime duration that is not zero: a soak of no time has nothing to judge.
fn parse_soak_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be greater than 0s".to_string()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "expected a duration such as 30s, 5m or 1h30m: {error}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn invocation(args: &[&str]) -> Invocation {
        let argv = std::iter::once("redis-canary").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("arguments should parse")
            .invocation()
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("redis-canary").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect_err("arguments should be rejected")
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_without_a_subcommand_mean_run() {
        let invocation = invocation(&["--target", "a=redis://x:1", "--listen", "127.0.0.1:0"]);
        assert_eq!(invocation.mode, Mode::Run);
        assert_eq!(invocation.args.targets, vec!["a=redis://x:1"]);
        assert_eq!(invocation.args.listen.as_deref(), Some("127.0.0.1:0"));
    }

    #[test]
    fn no_arguments_at_all_mean_run_with_no_options() {
        let invocation = invocation(&[]);
        assert_eq!(invocation.mode, Mode::Run);
        assert_eq!(invocation.args, CommonArgs::default());
    }

    #[test]
    fn run_accepts_every_common_option_and_repeated_targets() {
        let invocation = invocation(&[
            "run",
            "--config",
            "/etc/canary.toml",
            "--target",
            "a=redis://x:1",
            "--target",
            "b=rediss://y:2",
            "--log-format",
            "json",
        ]);
        assert_eq!(invocation.mode, Mode::Run);
        assert_eq!(
            invocation.args,
            CommonArgs {
                config: Some(PathBuf::from("/etc/canary.toml")),
                listen: None,
                targets: vec!["a=redis://x:1".into(), "b=rediss://y:2".into()],
                log_format: Some("json".into()),
                shard: None,
            }
        );
    }

    #[test]
    fn soak_takes_a_humantime_duration_and_an_optional_report() {
        let invocation = invocation(&[
            "soak",
            "--duration",
            "1h30m",
            "--report",
            "out.json",
            "--target",
            "a=redis://x:1",
        ]);
        assert_eq!(
            invocation.mode,
            Mode::Soak {
                duration: Duration::from_secs(5400),
                report: Some(PathBuf::from("out.json")),
                report_html: None,
            }
        );
        assert_eq!(invocation.args.targets, vec!["a=redis://x:1"]);
    }

    #[test]
    fn soak_takes_an_optional_html_report_and_run_does_not() {
        let invocation = invocation(&["soak", "--duration", "5m", "--report-html", "r.html"]);
        assert_eq!(
            invocation.mode,
            Mode::Soak {
                duration: Duration::from_secs(300),
                report: None,
                report_html: Some(PathBuf::from("r.html")),
            }
        );
        let run = usage_error(&["run", "--report-html", "r.html"]);
        assert_eq!(run.exit_code(), 2);
        let help = Cli::command().render_long_help().to_string();
        let soak_help = Cli::command()
            .find_subcommand_mut("soak")
            .expect("soak")
            .render_long_help()
            .to_string();
        assert!(!help.contains("--report-html"));
        assert!(
            soak_help.contains("--report-html <FILE.html>"),
            "{soak_help}"
        );
    }

    #[test]
    fn soak_requires_a_duration_greater_than_zero() {
        assert_eq!(
            usage_error(&["soak"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        let zero = usage_error(&["soak", "--duration", "0s"]);
        assert_eq!(zero.kind(), ErrorKind::ValueValidation);
        assert!(zero.to_string().contains("greater than 0s"), "{zero}");
        let bare = usage_error(&["soak", "--duration", "30"]);
        assert_eq!(bare.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn check_config_takes_the_common_options() {
        let invocation = invocation(&["check-config", "--config", "c.toml"]);
        assert_eq!(invocation.mode, Mode::CheckConfig);
        assert_eq!(invocation.args.config, Some(PathBuf::from("c.toml")));
    }

    #[test]
    fn a_misspelt_flag_or_value_gets_a_did_you_mean_hint() {
        let flag = usage_error(&["--listne", "127.0.0.1:0"]);
        assert_eq!(flag.kind(), ErrorKind::UnknownArgument);
        assert!(flag.to_string().contains("--listen"), "{flag}");
        let value = usage_error(&["--log-format", "jsno"]);
        assert!(value.to_string().contains("json"), "{value}");
        let subcommand = usage_error(&["check-confg"]);
        assert!(
            subcommand.to_string().contains("check-config"),
            "{subcommand}"
        );
    }

    #[test]
    fn usage_errors_exit_2_and_version_is_printed() {
        let unknown = usage_error(&["--no-such-flag"]);
        assert_eq!(unknown.exit_code(), 2);
        let bad_format = usage_error(&["--log-format", "xml"]);
        assert_eq!(bad_format.exit_code(), 2);
        let duration_outside_soak = usage_error(&["run", "--duration", "5m"]);
        assert_eq!(duration_outside_soak.exit_code(), 2);
        let version = usage_error(&["--version"]);
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
        assert!(version.to_string().contains(env!("CARGO_PKG_VERSION")));
    }
}
