//! The `soak` mode (DESIGN §3, §7, §13): run the workload for a fixed time (or until a
//! signal), then judge every target against its `[slo]`, print the human summary and write
//! the versioned JSON report and the HTML report.
//!
//! - [`run`]: the whole mode, as `main` and tests call it.
//! - [`judge`]: pure SLO judging of one target's statistics.
//! - [`report`]: the typed report and the human summary.
//! - [`html`]: the self-contained HTML page with charts over the run.

pub mod html;
pub mod judge;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;

use crate::classify::InternalCause;
use crate::config::Config;
use crate::daemon::{self, StartError};
use crate::shutdown;
use crate::target::TargetState;

pub use judge::Judgement;
pub use report::{Backend, Report, SCHEMA, ShardReport, TargetReport};

/// Why a soak could not run or could not hand in its report.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The daemon did not start: bad input, exit 2.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A report path that cannot be written, found before the run: bad input, exit 2.
    #[error("invalid argument: {flag} = \"{}\": {reason}", path.display())]
    BadOutput {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The run finished but a report could not be written.
    #[error("cannot write the report to {}: {source}", path.display())]
    WriteReport {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the reports of a soak go.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs<'a> {
    /// `--report`: the JSON document (DESIGN §7).
    pub json: Option<&'a Path>,
    /// `--report-html`: the self-contained page (DESIGN §13).
    pub html: Option<&'a Path>,
}

impl Outputs<'_> {
    /// Checks, before the run, that each path names a file in an existing directory: a typo
    /// must not be found out after a 24 h soak.
    fn check(&self) -> Result<(), SoakError> {
        for (flag, path) in [("--report", self.json), ("--report-html", self.html)] {
            let Some(path) = path else { continue };
            let bad = |reason: String| SoakError::BadOutput {
                flag,
                path: path.to_path_buf(),
                reason,
            };
            if path.as_os_str().is_empty() {
                return Err(bad("an empty path".into()));
            }
            if path.is_dir() {
                return Err(bad("is a directory".into()));
            }
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(bad(format!("directory {} does not exist", dir.display())));
            }
        }
        Ok(())
    }
}

/// Runs the workload of `config` for `duration`, serving HTTP on `listener`, or until
/// `signals` resolves (the run then counts as interrupted and fails). Prints the summary on
/// stdout, writes the reports to `outputs`, and returns the report: its `pass` is the
/// soak's verdict. A report path in a directory that does not exist is refused before the
/// run ([`SoakError::BadOutput`]).
pub async fn run(
    config: &Config,
    listener: TcpListener,
    duration: Duration,
    outputs: Outputs<'_>,
    signals: impl Future<Output = ()>,
) -> Result<Report, SoakError> {
    outputs.check()?;
    let started = unix_now();
    let (trigger, sd) = shutdown::channel();
    let daemon = daemon::run(config, listener, sd, true);
    let timer = tokio::time::sleep(duration);
    tokio::pin!(daemon, timer, signals);
    let mut interrupted = None;
    let targets = loop {
        tokio::select! {
            // The daemon returns only after the trigger, or at once when it cannot start.
            targets = &mut daemon => break targets?,
            _ = &mut timer, if interrupted.is_none() => {
                interrupted = Some(false);
                trigger.trigger();
            }
            _ = &mut signals, if interrupted.is_none() => {
                interrupted = Some(true);
                trigger.trigger();
            }
        }
    };
    let ended = unix_now();
    let report = report(&targets, started, ended, interrupted.unwrap_or(true));
    print!("{}", report.summary());
    let write = |path: &Path, text: String| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::write(&path, text)
                .await
                .map_err(|source| SoakError::WriteReport { path, source })
        }
    };
    if let Some(path) = outputs.json {
        write(path, report.to_json()).await?;
    }
    if let Some(path) = outputs.html {
        let series: Vec<_> = targets.iter().filter_map(|t| target_series(t)).collect();
        write(path, html::render(&report, &series, started, ended)).await?;
    }
    Ok(report)
}

/// The charts' data of a target built with statistics.
fn target_series(t: &TargetState) -> Option<html::TargetSeries> {
    let stats = t.stats.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
    Some(html::TargetSeries {
        name: t.name.clone(),
        series: stats.series.clone(),
        episodes: stats.episodes.clone(),
    })
}

/// Builds the report of a soak of `targets` that ran from `started_unix` to `ended_unix`
/// (seconds since the epoch). Targets built without statistics are left out.
pub fn report(
    targets: &[Arc<TargetState>],
    started_unix: f64,
    ended_unix: f64,
    interrupted: bool,
) -> Report {
    let targets = targets.iter().filter_map(|t| target_report(t)).collect();
    Report::new(started_unix, ended_unix, interrupted, targets)
}

fn target_report(t: &TargetState) -> Option<TargetReport> {
    let stats = t.stats.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
    let known = t.backends.lock().unwrap_or_else(|p| p.into_inner());
    let dropped = known.history_dropped();
    let backends = known
        .history()
        .iter()
        .map(|b| Backend {
            run_id: b.identity.run_id.clone(),
            role: b.identity.role.clone(),
            version: b.identity.version.clone(),
            addr: b.identity.addr.clone(),
            first_seen: crate::http::format_unix(t.clock.unix_secs(b.first_seen_us)),
            last_seen: crate::http::format_unix(t.clock.unix_secs(b.last_seen_us)),
        })
        .collect();
    drop(known);
    let mut report = TargetReport::new(&t.name, &stats, backends, Some(dropped));
    report.internal_errors = InternalCause::ALL
        .iter()
        .map(|&c| (c.as_str(), t.metrics.internal(c).get()))
        .collect();
    if let Some(c) = &t.cluster {
        report.shards = c.book.summaries().iter().map(ShardReport::of).collect();
    }
    Some(report)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CommonArgs;

    /// A config with one target on a closed port of loopback: every connect is refused.
    fn dead_target_config() -> Config {
        let args = CommonArgs {
            targets: vec!["dead=redis://127.0.0.1:1".into()],
            ..CommonArgs::default()
        };
        crate::config::load_from(&args, &[]).expect("a valid config")
    }

    #[tokio::test]
    async fn a_signal_ends_the_soak_early_as_an_interrupted_failure_with_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let signal = tokio::time::sleep(Duration::from_millis(300));
        let began = std::time::Instant::now();
        let html = dir.path().join("report.html");
        let outputs = Outputs {
            json: Some(&path),
            html: Some(&html),
        };
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                &dead_target_config(),
                listener,
                Duration::from_secs(60),
                outputs,
                signal,
            ),
        )
        .await
        .expect("the soak ends soon after the signal")
        .expect("the soak runs");
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(report.interrupted && !report.pass);
        assert_eq!(report.targets.len(), 1);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["interrupted"], true);
        assert_eq!(written["targets"][0]["name"], "dead");
        assert!(written["targets"][0]["connects"]["pool"]["refused"].as_u64() > Some(0));
        // The HTML report of the same run: the dead target failed, with its one episode.
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("Target dead <span class=\"verdict fail\">FAIL</span>"));
        assert_eq!(page.matches("<tr class=\"episode\">").count(), 1);
        assert!(page.contains("interrupted by a signal"));
    }

    #[tokio::test]
    async fn a_report_path_in_a_missing_directory_is_refused_before_the_run() {
        for (outputs, flag, path) in [
            (
                Outputs {
                    json: Some(Path::new("/nonexistent-dir/report.json")),
                    html: None,
                },
                "--report",
                "/nonexistent-dir/report.json",
            ),
            (
                Outputs {
                    json: None,
                    html: Some(Path::new("/nonexistent-dir/r.html")),
                },
                "--report-html",
                "/nonexistent-dir/r.html",
            ),
            (
                Outputs {
                    json: None,
                    html: Some(Path::new("/tmp")),
                },
                "--report-html",
                "/tmp",
            ),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let began = std::time::Instant::now();
            let err = run(
                &dead_target_config(),
                listener,
                Duration::from_secs(60),
                outputs,
                std::future::pending(),
            )
            .await
            .expect_err("the path is refused");
            assert!(began.elapsed() < Duration::from_secs(5), "before the run");
            assert!(matches!(err, SoakError::BadOutput { .. }));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid argument: {flag} = \"{path}\": ")),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_report_that_cannot_be_written_after_the_run_is_an_error_naming_the_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // /proc exists, but no file can be created in it, not even by root.
        let path = Path::new("/proc/report.html");
        let err = run(
            &dead_target_config(),
            listener,
            Duration::from_millis(200),
            Outputs {
                json: None,
                html: Some(path),
            },
            std::future::pending(),
        )
        .await
        .expect_err("the file cannot be created");
        assert!(matches!(err, SoakError::WriteReport { .. }), "{err}");
        assert!(err.to_string().contains("/proc/report.html"), "{err}");
    }
}
