//! Addresses for the fixtures, without races.
//!
//! - Programs that can bind port 0 and say which port they got do so: the canary, and
//!   Prometheus and Alertmanager (they log `Listening on ... address=`); so do the helpers
//!   in this crate (HTTP recorder, delay proxy).
//! - [`DeadAddr`]: an address where connects are refused for as long as it lives, and that
//!   no other process can take (a socket bound to it without `listen()`).
//! - [`ReservedPort`]: for programs that cannot report the port they bound (`redis-server`
//!   treats `--port 0` as "no TCP at all"; HAProxy). Picked *outside* the kernel's
//!   ephemeral range, so the many outgoing connections of the tests can never be
//!   auto-bound to it, and reserved with a file that the pickers of the other test
//!   processes respect for the fixture's whole life, restarts included. Fixtures still
//!   retry with a new port when the program fails to bind its first one.

use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

/// A loopback address nothing listens on and nothing else can bind while this lives: a
/// TCP socket bound to `127.0.0.1:0` without `listen()`. Connecting to it is refused at
/// once, exactly like a dead server's port.
pub struct DeadAddr {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl DeadAddr {
    pub fn new() -> DeadAddr {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("binding 127.0.0.1:0");
        let addr = socket.local_addr().expect("bound address");
        DeadAddr {
            addr,
            _socket: socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Default for DeadAddr {
    fn default() -> Self {
        Self::new()
    }
}

/// A port below (or above) the kernel's ephemeral range, reserved for this process until
/// dropped (see the module documentation).
#[derive(Debug)]
pub struct ReservedPort {
    pub port: u16,
    file: PathBuf,
}

impl Drop for ReservedPort {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn reservations_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("redis-canary-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The ports to pick from: the larger of the two intervals outside
/// `/proc/sys/net/ipv4/ip_local_port_range` (usually 20000..32768).
fn candidate_range() -> (u16, u16) {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // Stay above the well-known ports other software on the machine tends to use.
    let below = (lo.min(65535) as u16).saturating_sub(20000);
    let above = 65535u32.saturating_sub(hi) as u16;
    if below >= above {
        (20000, lo as u16)
    } else {
        (hi as u16 + 1, 65535)
    }
}

fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Reserves a port nothing listens on now, that the kernel never hands out on its own and
/// that no other test process using this picker will choose while the reservation lives.
pub fn reserve_port() -> ReservedPort {
    let (lo, hi) = candidate_range();
    let span = u64::from(hi - lo);
    let dir = reservations_dir();
    let me = std::process::id();
    let start = random();
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let file = dir.join(port.to_string());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file);
        match created {
            Ok(mut f) => {
                use std::io::Write;
                let _ = write!(f, "{me}");
            }
            Err(_) => {
                // Taken, unless its owner is gone (a test killed before its Drop ran).
                let owner = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                if owner.is_some_and(|pid| pid != me && !pid_alive(pid)) {
                    let _ = std::fs::remove_file(&file);
                }
                continue;
            }
        }
        let reserved = ReservedPort { port, file };
        // Something outside the tests may use it: then try the next one.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return reserved;
        }
    }
    panic!("no free port in {lo}..{hi}");
}

/// A port that was free a moment ago (bound on port 0, then released).
///
/// Racy: another process can take it before it is used. The canary binds
/// `--listen 127.0.0.1:0` and the fixtures read the address it bound ([`super::Canary`]);
/// dead targets use a [`DeadAddr`]; servers that cannot report their port use
/// [`reserve_port`]. Kept for callers not yet moved to those.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding port 0 on loopback")
}

/// The address a program logged it listens on: the first line containing `marker` with a
/// `key=ADDR` (text, logfmt) or `"key":"ADDR"` (JSON) field.
pub fn logged_addr(log: &str, marker: &str, key: &str) -> Option<SocketAddr> {
    log.lines().filter(|l| l.contains(marker)).find_map(|line| {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(line) {
            let v = o
                .get(key)
                .or_else(|| o.get("fields").and_then(|f| f.get(key)));
            return v.and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
        }
        let (_, rest) = line.split_once(&format!("{key}="))?;
        rest.trim_start_matches('"')
            .split(|c: char| c == '"' || c.is_whitespace())
            .next()?
            .parse()
            .ok()
    })
}
