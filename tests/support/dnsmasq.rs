//! A real `dnsmasq` on loopback serving the A and SRV records a test writes (DESIGN §14:
//! node discovery by DNS). The binary from `DNSMASQ_BIN`, PATH, or `/usr/sbin` (Debian's
//! `dnsmasq-base` installs it there, and a user's PATH may lack it). It listens on
//! 127.0.0.1 on a [`reserve_port`] port (it cannot bind port 0 and say which port it got:
//! `--port=0` turns DNS off), for UDP and TCP, and runs as `--no-daemon`: in the
//! foreground, no pid file, no change of user, its log in its own dir. It answers only from
//! its files: `--no-resolv --no-hosts`, and `local=/test/` so that an unknown name under
//! `.test` is NXDOMAIN rather than a refusal.
//!
//! A records live in an `addn-hosts` file, which dnsmasq reads again on SIGHUP; SRV records
//! are configuration (`srv-host=`), which it reads only at start (SIGHUP leaves them as
//! they were), so changing them restarts it on the same port. Every change waits until
//! the server answers with the new records, by asking it (a minimal DNS client below).
//! Drop kills and reaps.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::{ReservedPort, reserve_port};
use super::{send_signal, tail, wait_until};

/// How long dnsmasq may take to answer after a start or a reload. Generous: tests run in
/// parallel on two shared cores.
const DNSMASQ_READY_WITHIN: Duration = Duration::from_secs(20);

/// How often a first start is retried on a new port when the port turned out to be taken.
const BIND_ATTEMPTS: usize = 5;

/// DNS record types the fixture asks for.
pub const TYPE_A: u16 = 1;
pub const TYPE_SRV: u16 = 33;

/// One SRV record: `name` (`_redis._tcp.nodes.test`) → `target`:`port`.
#[derive(Clone, Debug)]
pub struct Srv {
    pub name: String,
    pub target: String,
    pub port: u16,
}

/// A running `dnsmasq` (see the module documentation).
pub struct Dnsmasq {
    pub port: u16,
    reservation: ReservedPort,
    dir: tempfile::TempDir,
    child: Option<Child>,
    hosts: Vec<(String, String)>,
    srv: Vec<Srv>,
}

/// The `dnsmasq` binary: `DNSMASQ_BIN`, else `dnsmasq` from PATH, else `/usr/sbin/dnsmasq`.
pub fn dnsmasq_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("DNSMASQ_BIN") {
        return bin.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "/usr/sbin/dnsmasq".into())
}

impl Dnsmasq {
    /// Starts serving `hosts` (address, name: one A record each) and `srv`; returns once it
    /// answers them.
    pub fn start(hosts: &[(&str, &str)], srv: &[Srv]) -> Dnsmasq {
        let reservation = reserve_port();
        let mut d = Dnsmasq {
            port: reservation.port,
            reservation,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            hosts: hosts
                .iter()
                .map(|(ip, name)| (ip.to_string(), name.to_string()))
                .collect(),
            srv: srv.to_vec(),
        };
        d.write_files();
        for attempt in 1..=BIND_ATTEMPTS {
            match d.try_start() {
                Ok(()) => return d,
                Err(log) if attempt < BIND_ATTEMPTS && log.contains("in use") => {
                    eprintln!("dnsmasq could not bind :{}; another port", d.port);
                    d.reservation = reserve_port();
                    d.port = d.reservation.port;
                }
                Err(log) => panic!("dnsmasq :{} did not start:\n{log}", d.port),
            }
        }
        unreachable!()
    }

    /// `127.0.0.1:PORT`, for `discovery_resolver`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_files(&self) {
        let hosts: String = self
            .hosts
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        std::fs::write(self.dir.path().join("hosts"), hosts).expect("writing hosts");
        let mut conf = format!(
            "local=/test/\naddn-hosts={}\n",
            self.dir.path().join("hosts").display()
        );
        for s in &self.srv {
            conf.push_str(&format!("srv-host={},{},{}\n", s.name, s.target, s.port));
        }
        std::fs::write(self.dir.path().join("dnsmasq.conf"), conf).expect("writing conf");
    }

    /// Spawns and waits until it answers; on failure returns the log (the process reaped).
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "dnsmasq :{} is running", self.port);
        // Appended to: a restart keeps the log of the runs before it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(dnsmasq_bin())
            .arg("--no-daemon")
            .arg("--log-facility=-")
            .arg("--log-queries")
            .arg(format!(
                "--conf-file={}",
                self.dir.path().join("dnsmasq.conf").display()
            ))
            .arg(format!("--port={}", self.port))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed ({e}); is it installed? scripts/install-deps",
                    dnsmasq_bin().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + DNSMASQ_READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if self.answers("ready.test", TYPE_A).is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no answer within {DNSMASQ_READY_WITHIN:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the A records and reloads them (SIGHUP); returns once `name` has as many A
    /// records as the new file gives it.
    pub fn set_hosts(&mut self, hosts: &[(&str, &str)], name: &str) {
        self.hosts = hosts
            .iter()
            .map(|(ip, n)| (ip.to_string(), n.to_string()))
            .collect();
        self.write_files();
        let pid = self.child.as_ref().expect("running").id();
        send_signal(pid, "HUP");
        let want = hosts.iter().filter(|(_, n)| *n == name).count() as u16;
        self.wait_for(name, TYPE_A, want);
    }

    /// Replaces the SRV records: dnsmasq reads them only at start, so it is restarted on
    /// the same port; returns once `name` has as many SRV records as given.
    pub fn set_srv(&mut self, srv: &[Srv], name: &str) {
        self.srv = srv.to_vec();
        self.write_files();
        self.stop();
        self.start_again();
        let want = srv.iter().filter(|s| s.name == name).count() as u16;
        self.wait_for(name, TYPE_SRV, want);
    }

    /// Kills the server (SIGKILL) and reaps it: queries go unanswered.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`Dnsmasq::stop`]) on the same port with the current records.
    pub fn start_again(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("dnsmasq :{} did not start again:\n{log}", self.port);
        }
    }

    fn wait_for(&self, name: &str, qtype: u16, want: u16) {
        wait_until(
            &format!("dnsmasq to answer {want} records of type {qtype} for {name}"),
            DNSMASQ_READY_WITHIN,
            || self.answers(name, qtype) == Some(want),
        );
    }

    /// Asks the server once over UDP: the number of answer records for `name`, `qtype`
    /// (0 for NXDOMAIN or NODATA); `None` when it does not answer within 500 ms.
    pub fn answers(&self, name: &str, qtype: u16) -> Option<u16> {
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let id = (std::process::id() as u16) ^ qtype;
        socket
            .send_to(&query(id, name, qtype), ("127.0.0.1", self.port))
            .ok()?;
        let mut buf = [0u8; 4096];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let reply = &buf[..n];
        if n < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
            return None;
        }
        Some(u16::from_be_bytes([reply[6], reply[7]]))
    }
}

/// A DNS query (RFC 1035 §4.1): header with recursion desired, one question of class IN.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes());
    q
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dnsmasq :{} log tail ---\n{}",
                self.port,
                tail(&self.log_path(), 40)
            );
        }
        self.stop();
    }
}
