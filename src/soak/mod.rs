//! The `soak` mode (DESIGN §3, §7): run the workload for a fixed time (or until a signal),
//! then judge every target against its `[slo]`, print the human summary and write the
//! versioned JSON report.
//!
//! - [`run`]: the whole mode, as `main` and tests call it.
//! - [`judge`]: pure SLO judging of one target's statistics.
//! - [`report`]: the typed report and the human summary.

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
    /// The run finished but the JSON report could not be written.
    #[error("cannot write the report to {}: {source}", path.display())]
    WriteReport {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the workload of `config` for `duration`, serving HTTP on `listener`, or until
/// `signals` resolves (the run then counts as interrupted and fails). Prints the summary on
/// stdout, writes the JSON report to `report_path` if given, and returns the report: its
/// `pass` is the soak's verdict.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    duration: Duration,
    report_path: Option<&Path>,
    signals: impl Future<Output = ()>,
) -> Result<Report, SoakError> {
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
    let report = report(&targets, started, unix_now(), interrupted.unwrap_or(true));
    print!("{}", report.summary());
    if let Some(path) = report_path {
        tokio::fs::write(path, report.to_json())
            .await
            .map_err(|source| SoakError::WriteReport {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(report)
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
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                &dead_target_config(),
                listener,
                Duration::from_secs(60),
                Some(&path),
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
    }

    #[tokio::test]
    async fn a_report_that_cannot_be_written_is_an_error_naming_the_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let path = Path::new("/nonexistent-dir/report.json");
        let err = run(
            &dead_target_config(),
            listener,
            Duration::from_millis(200),
            Some(path),
            std::future::pending(),
        )
        .await
        .expect_err("the directory does not exist");
        assert!(matches!(err, SoakError::WriteReport { .. }));
        assert!(
            err.to_string().contains("/nonexistent-dir/report.json"),
            "{err}"
        );
    }
}
