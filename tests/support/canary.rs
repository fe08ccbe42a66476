//! The one launcher of the canary under test: `redis-canary <mode> --config FILE --listen
//! 127.0.0.1:0 ...`, its log (stderr) in a temp dir; the address it really bound is read
//! from its `listening` log line (`addr=...` in text, `"addr"` in JSON), then `/readyz` is
//! polled with a deadline. No port is picked in advance, so none can be stolen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::http_get;
use super::ports::logged_addr;
use super::{Scrape, send_signal, wait_until};

/// How long the canary may take to log its address and become ready.
pub const CANARY_READY_WITHIN: Duration = Duration::from_secs(15);

/// The `redis-canary` binary under test.
pub fn canary_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redis-canary"))
}

/// The address the canary logged it listens on (`listening addr=...`, text or JSON).
pub fn canary_listen_addr(log: &str) -> Option<SocketAddr> {
    logged_addr(log, "listening", "addr")
}

/// A canary process started by [`spawn_canary`]: the child, its dir (config, log) and the
/// address it bound.
pub struct CanaryProcess {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub child: Child,
    /// When the process was spawned.
    pub spawned: Instant,
}

/// Starts `redis-canary <mode_args> --config <dir>/canary.toml --listen 127.0.0.1:0
/// <args>` with `toml` as the config, `env` and `RUST_LOG=info`, stdout
/// in `<dir>/stdout.txt` and stderr in `<dir>/canary.log`; returns once it has logged its
/// address and answers `/readyz` with 200. Panics with the log if it exits first or is not
/// ready in time.
pub fn spawn_canary(
    mode_args: &[&str],
    toml: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> CanaryProcess {
    spawn_canary_in(
        tempfile::tempdir().expect("temp dir"),
        mode_args,
        toml,
        args,
        env,
    )
}

/// Like [`spawn_canary`], in a dir the caller made (e.g. to name a report file in it).
pub fn spawn_canary_in(
    dir: tempfile::TempDir,
    mode_args: &[&str],
    toml: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> CanaryProcess {
    let config = dir.path().join("canary.toml");
    std::fs::write(&config, toml).expect("writing config");
    let log_path = dir.path().join("canary.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let stdout = std::fs::File::create(dir.path().join("stdout.txt")).expect("stdout file");
    let mut child = Command::new(canary_bin())
        .args(mode_args)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        // The `listening` line is at info level.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .expect("starting redis-canary");
    let spawned = Instant::now();
    let what = format!("redis-canary {}", mode_args.join(" "));
    let deadline = Instant::now() + CANARY_READY_WITHIN;
    let mut addr = None;
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}:\n{log}");
        }
        addr = addr.or_else(|| canary_listen_addr(&log));
        if let Some(a) = addr
            && matches!(http_get(a.port(), "/readyz", None), Ok((200, _)))
        {
            return CanaryProcess {
                addr: a,
                dir,
                child,
                spawned,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} not ready after {CANARY_READY_WITHIN:?} (address {addr:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running canary daemon (`redis-canary run`) with its config and log in a temp dir.
pub struct Canary {
    /// The address it bound (from its log).
    pub addr: SocketAddr,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Canary {
    /// Starts `redis-canary run` with `toml` as its config file; it binds
    /// `127.0.0.1:0` and the address is read from its log.
    pub fn start(toml: &str) -> Canary {
        Self::start_with(toml, &[], &[])
    }

    /// Like [`Canary::start`], with extra arguments and environment.
    pub fn start_with(toml: &str, args: &[&str], env: &[(&str, &str)]) -> Canary {
        let p = spawn_canary(&["run"], toml, args, env);
        Canary {
            addr: p.addr,
            port: p.addr.port(),
            dir: p.dir,
            child: Some(p.child),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("canary.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// GET `path`; panics if the daemon does not answer within 5 s.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path, None)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}\n{}", self.log()))
    }

    /// Waits until `target` has at least `n` operations of `op` that succeeded at once.
    pub fn wait_ok(&self, target: &str, op: &str, n: f64) {
        wait_until(
            &format!("{n} successful {op}s on {target}"),
            Duration::from_secs(10),
            || {
                self.metrics().sum(
                    "redis_canary_operations_total",
                    &[("target", target), ("op", op), ("outcome", "ok")],
                ) >= n
            },
        );
    }

    /// Scrapes and parses `/metrics`.
    pub fn metrics(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        Scrape::parse(&body)
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit; returns status and time taken.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        terminate_child(&mut self.child, within)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let log = std::thread::panicking().then(|| self.log());
        drop_child(&mut self.child, log);
    }
}

/// Sends SIGTERM to a running canary and waits (at most `within`) for its exit; returns
/// status and time taken.
pub fn terminate_child(child: &mut Option<Child>, within: Duration) -> (ExitStatus, Duration) {
    let c = child.as_mut().expect("running");
    let started = Instant::now();
    send_signal(c.id(), "TERM");
    let mut status = None;
    wait_until("the canary to exit after SIGTERM", within, || {
        status = c.try_wait().ok().flatten();
        status.is_some()
    });
    *child = None;
    (status.expect("exited"), started.elapsed())
}

/// A fixture's drop: the log (given when a test panicked), then the process killed and
/// waited for.
pub fn drop_child(child: &mut Option<Child>, log: Option<String>) {
    if let Some(log) = log {
        eprintln!("--- redis-canary log ---\n{log}");
    }
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
