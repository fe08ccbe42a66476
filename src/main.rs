//! The `redis-canary` binary: parse the command line, load the configuration, set up
//! logging, run the chosen mode, and turn the outcome into an exit code
//! (0 ok, 1 soak failed or interrupted, 2 bad input).

use std::process::ExitCode;
use std::time::Duration;

use redis_canary::cli::{Cli, Mode};
use redis_canary::{config, daemon, fleet, shutdown, soak, telemetry};

fn main() -> ExitCode {
    let invocation = Cli::parse().invocation();
    let mut config = match config::load(&invocation.args) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if let Mode::Soak { .. } = invocation.mode {
        config.use_soak_key_prefixes();
    }
    if let Mode::CheckConfig = invocation.mode {
        print!("{}", config.to_masked_toml());
        print!("{}", fleet::ownership_summary(&config));
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format);
    raise_open_files_limit();
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
    let load = loader(invocation.args);
    let code = runtime.block_on(async_main(invocation.mode, config, load));
    // Blocking threads (a DNS lookup, a file read) cannot be cancelled, and dropping the
    // runtime would wait for them: a lookup hung on a dead resolver must not keep the process
    // past the 5 s exit budget of DESIGN §3.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_BUDGET);
    code
}

/// Raises the soft limit on open files to the hard one. Each target holds a few descriptors
/// (a connection per loop, the probe's while it connects), and a soft limit of 1,024
/// (systemd's default, whatever the hard limit) would stop a canary at a few hundred targets
/// with `EMFILE`. A failure leaves the limit as it was and is logged; it is never fatal.
fn raise_open_files_limit() {
    let before = rlimit::Resource::NOFILE.get();
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok((soft, hard)), Ok(now)) if now > soft => {
            tracing::info!(from = soft, to = now, hard, "raised the open files limit");
        }
        (Ok((soft, hard)), Ok(_)) => tracing::debug!(soft, hard, "open files limit"),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read or raise the open files limit");
        }
    }
}

/// How long the runtime waits for blocking threads after the mode returned. The drain,
/// cleanup, trace flush and HTTP stop already took at most 4.7 s of the 5 s after SIGTERM,
/// and nothing a blocking thread still does matters once the report is written.
const RUNTIME_SHUTDOWN_BUDGET: Duration = Duration::from_millis(100);

/// Reads the configuration again from the sources of the start: the same flags, the file
/// they name and the process environment, the instance pinned when asked.
fn loader(args: redis_canary::cli::CommonArgs) -> daemon::Loader {
    Box::new(move |instance| {
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        if let Some(instance) = instance {
            let var = format!("{}INSTANCE", config::ENV_PREFIX);
            env.retain(|(k, _)| !k.eq_ignore_ascii_case(&var));
            env.push((var, instance.to_string()));
        }
        config::load_from(&args, &env)
    })
}

async fn async_main(mode: Mode, config: config::Config, load: daemon::Loader) -> ExitCode {
    let (reload_tx, reload_rx) = shutdown::reload_channel();
    let hangups = matches!(mode, Mode::Run).then(|| reload_tx.clone());
    let signals = match shutdown::signals_with_reload(hangups) {
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
    match mode {
        Mode::Run | Mode::CheckConfig => {
            let (trigger, sd) = shutdown::channel();
            tokio::spawn(async move {
                signals.await;
                trigger.trigger();
            });
            match daemon::run_reloadable(&config, listener, sd, reload_rx, reload_tx, load).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Mode::Soak {
            duration,
            report,
            report_html,
        } => {
            let outputs = soak::Outputs {
                json: report.as_deref(),
                html: report_html.as_deref(),
            };
            match soak::run(&config, listener, duration, outputs, signals).await {
                Ok(r) if r.pass => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e @ (soak::SoakError::Start(_) | soak::SoakError::BadOutput { .. })) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
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
    for t in fleet::owned(config) {
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
