//! The `redis-canary` binary: parse the command line, load the configuration, set up
//! logging, run the chosen mode, and turn the outcome into an exit code
//! (0 ok, 1 soak failed or interrupted, 2 bad input).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis_canary::cli::{Cli, Mode};
use redis_canary::{config, daemon, shutdown, soak, telemetry};

fn main() -> ExitCode {
    let invocation = Cli::parse().invocation();
    let config = match config::load(&invocation.args) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if let Mode::CheckConfig = invocation.mode {
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format);
    if !config.ignored_env.is_empty() {
        tracing::warn!(
            variables = %config.ignored_env.join(","),
            "ignoring unknown REDIS_CANARY_* environment variables"
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(worker_threads(&config));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(invocation.mode, config))
}

async fn async_main(mode: Mode, config: config::Config) -> ExitCode {
    let signals = match shutdown::signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "invalid configuration: listen = \"{}\": cannot bind: {e}",
                config.listen
            );
            return ExitCode::from(2);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let (trigger, sd) = shutdown::channel();
    match mode {
        Mode::Run | Mode::CheckConfig => {
            tokio::spawn(async move {
                signals.await;
                trigger.trigger();
            });
            match daemon::run(&config, listener, sd, false).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Mode::Soak { duration, report } => {
            let started = unix_now();
            let interrupted = tokio::spawn(async move {
                let interrupted = tokio::select! {
                    _ = tokio::time::sleep(duration) => false,
                    _ = signals => true,
                };
                trigger.trigger();
                interrupted
            });
            let targets = match daemon::run(&config, listener, sd, true).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let interrupted = interrupted.await.unwrap_or(true);
            let r = soak::report(&targets, started, unix_now(), interrupted);
            print!("{}", r.summary);
            if let Some(path) = report {
                let text = serde_json::to_string_pretty(&r.json).expect("a JSON value serializes");
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("error: cannot write the report to {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if r.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Scheduled operations per second above which the runtime gets one worker per core.
const MULTI_CORE_OPS_PER_SECOND: f64 = 5000.0;

/// One worker thread unless the workload needs more: a canary at monitoring rates spends
/// most of its CPU waking threads, and one thread measured 35 % less CPU than two for ten
/// targets at the default rate (bench/README.md). Closed loops (`rate = "max"`) and heavy
/// schedules get every core. `TOKIO_WORKER_THREADS` overrides this.
fn worker_threads(config: &config::Config) -> usize {
    let mut ops = 0.0;
    for t in &config.targets {
        match t.settings.rate {
            config::Rate::Max => ops = f64::INFINITY,
            config::Rate::PerSecond(r) => ops += 2.0 * r,
        }
    }
    if ops > MULTI_CORE_OPS_PER_SECOND {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        1
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
