//! What the hostile-server and DNS tests read about the canary process itself: resident
//! memory, threads and descriptors from `/proc/PID`, and a [`Watched`] daemon — the real
//! binary started by [`spawn_canary`] with its pid at hand (the [`super::Canary`] fixture
//! keeps its child private), whose scrapes are timed.

use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use super::canary::{CanaryProcess, drop_child, spawn_canary, terminate_child};
use super::http::http_get;
use super::{Scrape, send_signal, wait_until};

/// One reading of `/proc/PID/status` and `/proc/PID/fd`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// Resident set size, bytes.
    pub rss: u64,
    pub threads: u64,
    pub fds: u64,
}

/// Reads the process's status; `None` once it is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample {
        // A zombie has no VmRSS line.
        rss: field("VmRSS:")? * 1024,
        threads: field("Threads:")?,
        fds,
    })
}

/// The largest of each field over a series of samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peak {
    pub rss: u64,
    pub threads: u64,
    pub fds: u64,
    pub samples: u64,
}

impl Peak {
    pub fn add(&mut self, s: ProcSample) {
        self.rss = self.rss.max(s.rss);
        self.threads = self.threads.max(s.threads);
        self.fds = self.fds.max(s.fds);
        self.samples += 1;
    }
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A running `redis-canary run` whose pid the test can watch.
pub struct Watched {
    pub addr: SocketAddr,
    /// Config and log.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Watched {
    /// Starts `redis-canary run` with `toml` (on `127.0.0.1:0`) and waits until it is ready.
    pub fn start(toml: &str) -> Watched {
        let CanaryProcess {
            addr, dir, child, ..
        } = spawn_canary(&["run"], toml, &[], &[]);
        Watched {
            addr,
            dir,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("canary.log")).unwrap_or_default()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The current process sample; panics with the log if the process is gone.
    pub fn sample(&mut self) -> ProcSample {
        assert!(self.alive(), "the canary died:\n{}", self.log());
        proc_sample(self.pid()).unwrap_or_else(|| panic!("no /proc entry:\n{}", self.log()))
    }

    /// GET `path`: status, body and how long it took. Panics if it does not answer.
    pub fn get_timed(&self, path: &str) -> (u16, String, Duration) {
        let started = Instant::now();
        let (status, body) = http_get(self.port(), path, None)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}\n{}", self.log()));
        (status, body, started.elapsed())
    }

    /// A fresh `/metrics` scrape, parsed, and how long it took.
    pub fn scrape(&self) -> (Scrape, Duration) {
        let (status, body, took) = self.get_timed("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}");
        (Scrape::parse(&body), took)
    }

    pub fn metrics(&self) -> Scrape {
        self.scrape().0
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit; returns status and time taken.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        terminate_child(&mut self.child, within)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let log = std::thread::panicking().then(|| self.log());
        drop_child(&mut self.child, log);
    }
}
