//! The one `redis-server` fixture (after redis-rs's test support): the binary from
//! `REDIS_SERVER_BIN` or PATH; a port from [`reserve_port`] (redis-server cannot bind port
//! 0 and report it: `--port 0` disables TCP), a new one when the first start fails to
//! bind; `--save ""`, no AOF unless asked; data and log in its own dir; readiness (PING,
//! after AUTH when a password is set) polled with a deadline; the log printed when a test
//! fails; Drop kills and reaps. [`super::topology::Node`] is a `RedisServer` too.
//!
//! Also [`Client`], a minimal synchronous RESP client for arranging scenarios.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::{ReservedPort, reserve_port};
use super::{send_signal, tail, wait_until};

/// How long a server may take to answer PING after it was started. Generous: tests run in
/// parallel on two shared cores.
pub const REDIS_READY_WITHIN: Duration = Duration::from_secs(20);

/// How often a first start is retried on a new port when the port turned out to be taken.
const BIND_ATTEMPTS: usize = 5;

enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

/// A real `redis-server` on loopback (see the module documentation).
pub struct RedisServer {
    pub port: u16,
    /// The loopback address it binds: 127.0.0.1 unless started with [`RedisServer::start_at`].
    pub ip: String,
    /// `None` when the caller holds the port ([`RedisServer::start_at`]).
    reservation: Option<ReservedPort>,
    dir: Dir,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
    stopped: bool,
}

/// The `redis-server` binary: `REDIS_SERVER_BIN`, else `redis-server` from PATH.
pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    /// Starts a server in a temp dir with `extra` arguments (e.g. `["--requirepass",
    /// "pw"]`) and waits until it answers PING.
    pub fn start(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(Dir::Temp(dir), strings(extra), false)
    }

    /// Like [`RedisServer::start`], with data and log in `dir` (created if needed).
    pub fn start_in(dir: PathBuf, extra: &[String]) -> RedisServer {
        std::fs::create_dir_all(&dir).expect("server dir");
        Self::launch(Dir::Given(dir), extra.to_vec(), false)
    }

    /// Like [`RedisServer::start`], bound to `ip` (another loopback address: 127.0.0.2, ...)
    /// on `port`, which the caller holds reserved: servers on distinct addresses share one
    /// port, as the pods behind one DNS name do. No second try on another port.
    pub fn start_at(ip: &str, port: u16, extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            port,
            ip: ip.to_string(),
            reservation: None,
            dir: Dir::Temp(tempfile::tempdir().expect("temp dir")),
            args: strings(extra),
            tls: false,
            child: None,
            stopped: false,
        };
        if let Err(log) = s.try_start() {
            panic!("redis-server {ip}:{port} did not start:\n{log}");
        }
        s
    }

    fn launch(dir: Dir, args: Vec<String>, tls: bool) -> RedisServer {
        let reservation = reserve_port();
        let mut s = RedisServer {
            port: reservation.port,
            ip: "127.0.0.1".into(),
            reservation: Some(reservation),
            dir,
            args,
            tls,
            child: None,
            stopped: false,
        };
        for attempt in 1..=BIND_ATTEMPTS {
            match s.try_start() {
                Ok(()) => return s,
                Err(log) if attempt < BIND_ATTEMPTS && bind_failed(&log) => {
                    eprintln!("redis-server could not bind :{}; another port", s.port);
                    let reservation = reserve_port();
                    s.port = reservation.port;
                    s.reservation = Some(reservation);
                }
                Err(log) => panic!("redis-server :{} did not start:\n{log}", s.port),
            }
        }
        unreachable!()
    }

    /// A server that speaks only TLS on its port, with a certificate for `localhost` and
    /// `127.0.0.1` signed by a fresh CA; returns the server and the CA certificate's path.
    pub fn start_tls() -> (RedisServer, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        make_certificates(&certs);
        let path = |f: &str| certs.join(f).display().to_string();
        let args = strings(&[
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]);
        let server = Self::launch(Dir::Temp(dir), args, true);
        (server, certs.join("ca.crt"))
    }

    pub fn dir(&self) -> &Path {
        match &self.dir {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    /// Replaces the extra arguments for the next start (after [`RedisServer::kill`]).
    pub fn set_args(&mut self, extra: &[String]) {
        self.args = extra.to_vec();
    }

    /// The password the server was started with (`--requirepass`).
    fn password(&self) -> Option<String> {
        self.args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1).cloned())
    }

    /// Starts the process (after [`RedisServer::kill`]) on the same port with the current
    /// arguments, on the data its dir holds; waits until it answers.
    pub fn start_again(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("redis-server :{} did not start again:\n{log}", self.port);
        }
    }

    /// Spawns and waits for readiness; on failure returns the log (the process reaped).
    fn try_start(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "redis-server :{} is running",
            self.port
        );
        let port = self.port.to_string();
        let mut cmd = Command::new(redis_server_bin());
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        let log = self.log_path();
        let child = cmd
            .args(["--bind", &self.ip])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir())
            .arg("--logfile")
            .arg(&log)
            // Later arguments win: the caller's may turn AOF back on.
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed ({e}); is it installed? scripts/install-deps",
                    redis_server_bin()
                )
            });
        self.child = Some(child);
        self.stopped = false;
        let password = self.password();
        let deadline = Instant::now() + REDIS_READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", tail(&log, 30)));
            }
            let ready = if self.tls {
                // TLS only: accepting connections is as far as this plain client can see.
                TcpStream::connect((self.ip.as_str(), self.port)).is_ok()
            } else {
                ping(&self.ip, self.port, password.as_deref())
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no PONG within {REDIS_READY_WITHIN:?}:\n{}",
                    tail(&log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis://IP:PORT` (127.0.0.1 unless started elsewhere).
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.ip, self.port)
    }

    /// `IP:PORT`, as in `node` labels and `addr`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A client connection, authenticated when the server wants a password.
    pub fn client(&self) -> Client {
        self.try_client()
            .unwrap_or_else(|e| panic!("connecting to redis-server :{}: {e}", self.port))
    }

    /// Like [`RedisServer::client`], an error instead of a panic.
    pub fn try_client(&self) -> Result<Client, String> {
        let mut c = Client::connect_to(&self.ip, self.port).map_err(|e| e.to_string())?;
        if let Some(pw) = self.password() {
            c.call(&["AUTH", &pw])?;
        }
        Ok(c)
    }

    /// SIGKILL and reap: no shutdown save, sockets closed by the kernel.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGKILL, then start again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// SIGSTOP: the process stays, stops answering, sockets stay open.
    pub fn pause(&mut self) {
        send_signal(self.pid(), "STOP");
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        send_signal(self.pid(), "CONT");
        self.stopped = false;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until this replica has finished its sync with the master (Redis delays a
    /// diskless full sync by 5 s by default).
    pub fn wait_in_sync(&self) {
        wait_until("the replica to be in sync", Duration::from_secs(20), || {
            self.try_client()
                .and_then(|mut c| c.call(&["INFO", "replication"]))
                .is_ok_and(|i| i.contains("master_link_status:up"))
        });
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server :{} {:?} log tail ---\n{}",
                self.port,
                self.args,
                tail(&self.log_path(), 40)
            );
        }
        self.kill();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Whether a failed start's log says the port was taken.
fn bind_failed(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("Could not create server TCP")
}

/// PING (after AUTH when `password` is set) answered with PONG.
fn ping(ip: &str, port: u16, password: Option<&str>) -> bool {
    let Ok(mut c) = Client::connect_to(ip, port) else {
        return false;
    };
    if let Some(pw) = password
        && c.call(&["AUTH", pw]).is_err()
    {
        return false;
    }
    matches!(c.call(&["PING"]), Ok(r) if r == "PONG")
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=redis-canary test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("writing san.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A minimal synchronous RESP client for arranging scenarios (not for measuring). Every
/// read waits 5 s at most.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        Self::connect_to("127.0.0.1", port)
    }

    /// Like [`Client::connect`], to `ip` (another loopback address).
    pub fn connect_to(ip: &str, port: u16) -> std::io::Result<Client> {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let addr = std::net::SocketAddr::new(ip, port);
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            reader: BufReader::new(s),
        })
    }

    /// Sends a command; returns a simple/bulk reply as text, an error reply as `Err`.
    pub fn call(&mut self, args: &[&str]) -> Result<String, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader
            .get_mut()
            .write_all(out.as_bytes())
            .map_err(|e| e.to_string())?;
        self.read()
    }

    fn read(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (tag, rest) = line.split_at(1.min(line.len()));
        match tag {
            "+" | ":" => Ok(rest.to_string()),
            "-" => Err(rest.to_string()),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| "bad length".to_string())?;
                if n < 0 {
                    return Ok("(nil)".into());
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader
                    .read_exact(&mut buf)
                    .map_err(|e| e.to_string())?;
                buf.truncate(n as usize);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| "bad length".to_string())?;
                let items: Result<Vec<_>, _> = (0..n.max(0)).map(|_| self.read()).collect();
                Ok(items?.join("\n"))
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }
}
