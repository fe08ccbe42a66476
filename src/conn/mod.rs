//! Connections the canary opens and owns (DESIGN §9, §11): resolve (asynchronously, under a
//! deadline, with a bound on lookups in flight) and connect (TCP, then TLS); then the
//! protocol of the `redis` crate — commands packed by its `Cmd`, replies parsed by its
//! reply codec from bytes read under a per-request byte budget. The canary keeps the
//! lifecycle: one handshake round trip (authenticate, select, name, identify), its own
//! deadline on every command, and no reconnect loops here — every connect is one attempt,
//! counted by the caller, and any failure hands the error back so the caller decides from
//! its class whether the connection survives.
//!
//! One request at a time per connection, in the caller's task: no channel, no task hop,
//! an exact deadline, and bytes left after a reply (a reply nobody asked for) are seen.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use redis::{Cmd, RedisError, Value, ValueCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

mod bounded;
mod net;
mod subscription;

pub use bounded::ReplyTooLarge;
pub use subscription::Subscription;

use bounded::{Bounded, Budget};
use net::{Stream, open_stream, resolve_until};

use crate::backend::Identity;
use crate::classify::{InternalCause, ResultKind, classify_io, classify_redis};
use crate::config::{PasswordSource, RedisUrl};
use crate::secret::Secret;
use crate::tls::Tls;

/// The smallest byte budget of any reply: error replies and `INFO` sections of a real server
/// fit many times over.
pub const MIN_REPLY_LIMIT: usize = 16 * 1024;

/// Byte budget of the handshake replies (`INFO server`, `INFO replication` with many
/// replicas, `CLIENT INFO`, `HELLO`).
const HANDSHAKE_REPLY_LIMIT: usize = 256 * 1024;

/// Read buffer growth step: a canary reply fits many times over.
const READ_CHUNK: usize = 4096;

/// A read buffer that grew past this for one large reply is replaced by a small one after
/// it: memory comes back instead of staying with the connection.
const SHRINK_ABOVE: usize = 64 * 1024;

/// What [`Locate::ask`] returns: `None` past the last source; else that source's answer.
pub type Located<'a> =
    Pin<Box<dyn Future<Output = Option<Result<(String, u16), ConnError>>> + Send + 'a>>;

/// Where a connect goes when the endpoint's address is not fixed: the master that the
/// sentinels name (DESIGN §12.1). The topology implements it; `Conn::open` asks it on every
/// connect, so discovery is part of the connect (counted and timed with it). A connection
/// remembers the generation it was located in and is outdated once the topology moved on.
pub trait Locate: Send + Sync + std::fmt::Debug {
    /// Bumped whenever pooled connections must be dropped and located again.
    fn generation(&self) -> u64;
    /// Asks the `n`-th source, in order of preference, where the master is.
    fn ask(&self, n: usize) -> Located<'_>;
    /// A connect reached `host:port` and confirmed with `ROLE` that it is the master.
    fn confirmed(&self, host: &str, port: u16);
    /// A connection of `generation` found its node gone or demoted (a connection error,
    /// READONLY): the others of that generation must look again.
    fn lost(&self, generation: u64);
    /// The sources asked (`host:port`) and whether each answers now, for the status page.
    fn sources(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
}

/// Where and how to connect; built once per target (or node) from the configuration.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    /// A password given in the URL wins over the target's password source.
    pub url_password: Option<Secret>,
    pub password: PasswordSource,
    pub tls: Option<Tls>,
    /// Speak RESP3 (`HELLO 3`) instead of RESP2.
    pub resp3: bool,
    /// Sent as `CLIENT SETNAME`, so operators can find us in `CLIENT LIST`.
    pub client_name: String,
    pub connect_timeout: Duration,
    /// When set, `host` and `port` are only a template: every connect asks this where to go
    /// and confirms with `ROLE` that the node it reached is a master.
    pub locator: Option<Arc<dyn Locate>>,
    /// Verify TLS against the located host (no `tls.server_name` was configured).
    pub tls_name_from_host: bool,
}

impl Endpoint {
    /// An endpoint for `url` with the target's credentials.
    pub fn new(
        url: &RedisUrl,
        username: Option<&str>,
        password: &PasswordSource,
        tls: Option<Tls>,
        client_name: String,
        connect_timeout: Duration,
    ) -> Endpoint {
        Endpoint {
            host: url.host.clone(),
            port: url.port,
            db: i64::from(url.db),
            username: url
                .username
                .clone()
                .or_else(|| username.map(str::to_string)),
            url_password: url.password.clone(),
            password: password.clone(),
            tls,
            resp3: false,
            client_name,
            connect_timeout,
            locator: None,
            tls_name_from_host: false,
        }
    }

    /// `host:port`, for logs and node labels (never credentials).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The password to send: read anew on every connect (a rotated secret is picked up
    /// without a restart), from a file without blocking the runtime thread.
    async fn password(&self) -> io::Result<Option<Secret>> {
        match &self.url_password {
            Some(p) => Ok(Some(p.clone())),
            None => self.password.resolve_async().await,
        }
    }
}

/// What went wrong on a connection. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The canary's own deadline passed.
    #[error("timed out")]
    Timeout,
    /// Connecting (TCP, TLS) failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The name could not be resolved, or the lookup did not finish in time.
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    /// From the protocol layer: an error reply (its text is the server's, untrusted), an I/O
    /// error under the connection, or a reply that does not parse.
    #[error("{0}")]
    Redis(#[from] RedisError),
    /// A reply of a type the command cannot return.
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
    /// Bytes arrived that no request asked for: the stream is out of step.
    #[error("unsolicited bytes after the reply to {0}")]
    OutOfStep(&'static str),
    #[error("cannot read the password: {0}")]
    Password(io::Error),
    /// A located node answered `ROLE` as a replica: the sentinel that named it is stale.
    #[error("{0} is not a master")]
    NotMaster(String),
    /// No source knows the master (a sentinel answered nil for the name).
    #[error("no master known under this name")]
    NoMaster,
}

impl ConnError {
    /// The closed result class of this error.
    pub fn result(&self) -> ResultKind {
        match self {
            ConnError::Timeout => ResultKind::Timeout,
            ConnError::Io(e) => classify_io(e),
            ConnError::Dns { .. } => ResultKind::Dns,
            ConnError::Redis(e) => classify_redis(e),
            ConnError::Unexpected(_) | ConnError::OutOfStep(_) => ResultKind::Error,
            ConnError::Password(_) => ResultKind::Auth,
            // What the replica would answer to a write.
            ConnError::NotMaster(_) => ResultKind::Readonly,
            ConnError::NoMaster => ResultKind::Masterdown,
        }
    }

    /// Set when the failure is the canary's own (no descriptors, no memory, no local port):
    /// it says nothing about the target and must not be counted against it.
    pub fn internal_cause(&self) -> Option<InternalCause> {
        match self {
            ConnError::Io(e) => InternalCause::of(e),
            _ => None,
        }
    }

    /// Whether the peer or the network closed the connection (as opposed to us giving up).
    pub fn is_peer_close(&self) -> bool {
        self.result() == ResultKind::Reset
    }

    /// Whether the connection cannot be used again: a late or extra reply would be read as
    /// the answer to the next command, or only a new connection can land elsewhere.
    pub fn drops_connection(&self) -> bool {
        match self {
            ConnError::Redis(e) if e.code().is_some() => self.result().drops_connection(),
            _ => true,
        }
    }

    /// Whether the command may have reached the server even though no reply came back:
    /// a write that ends like this has an unknown outcome.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ConnError::Timeout | ConnError::Unexpected(_) | ConnError::OutOfStep(_) => true,
            ConnError::Redis(e) => e.code().is_none(),
            _ => false,
        }
    }
}

/// An open, authenticated connection and who is on the other end.
pub struct Conn {
    /// The socket, under a byte budget per request.
    io: Bounded<Box<dyn Stream>>,
    /// Bytes read and not yet parsed.
    rbuf: BytesMut,
    /// The crate's reply parser; it resumes where a reply was cut (nothing is parsed twice).
    codec: ValueCodec,
    /// The command being sent, reused: no allocation per request once warm.
    cmd: Cmd,
    wbuf: Vec<u8>,
    budget: Arc<Budget>,
    limit: Arc<AtomicUsize>,
    /// Shared so that every operation can say who served it without copying strings.
    pub backend: Arc<Identity>,
    /// The locator this connection was located by, and its generation then.
    located: Option<(Arc<dyn Locate>, u64)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Conn {
    /// Connects, authenticates and identifies the backend, all within `connect_timeout`. A
    /// located endpoint first asks its locator where to go (each source, and the connect to
    /// the node it names, within their own deadlines), and tries the next source when the
    /// node is unreachable or not a master.
    pub async fn open(ep: &Endpoint) -> Result<Conn, ConnError> {
        let Some(locator) = &ep.locator else {
            return Self::open_at(ep, &ep.host, ep.port).await;
        };
        let mut tried: Vec<(String, u16)> = Vec::new();
        let mut last = None;
        for n in 0.. {
            let (host, port) = match locator.ask(n).await {
                None => break,
                Some(Err(e)) => {
                    last = Some(e);
                    continue;
                }
                Some(Ok(addr)) if tried.contains(&addr) => continue,
                Some(Ok(addr)) => addr,
            };
            match Self::open_at(ep, &host, port).await {
                Ok(mut conn) => {
                    locator.confirmed(&host, port);
                    // After `confirmed`: a new master found here bumps the generation, and
                    // this connection belongs to the new one.
                    conn.located = Some((locator.clone(), locator.generation()));
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
            tried.push((host, port));
        }
        Err(last.unwrap_or(ConnError::NoMaster))
    }

    /// Whether the topology moved on since this connection was located: it must be dropped
    /// and located again before it is used.
    pub fn is_outdated(&self) -> bool {
        self.located
            .as_ref()
            .is_some_and(|(locator, generation)| locator.generation() != *generation)
    }

    /// This connection found its node gone or demoted: the others located with it must look
    /// again too (a no-op for a fixed endpoint).
    pub fn lost(&self) {
        if let Some((locator, generation)) = &self.located {
            locator.lost(*generation);
        }
    }

    /// Resolves, connects, authenticates and identifies the node at `host:port`, all within
    /// `connect_timeout`. A lookup that does not finish in that time is a `dns` failure
    /// (the server was never reached), the rest a `timeout`.
    pub(crate) async fn open_at(ep: &Endpoint, host: &str, port: u16) -> Result<Conn, ConnError> {
        let deadline = tokio::time::Instant::now() + ep.connect_timeout;
        // DNS is resolved on every connect: a rescheduled pod gets a new address.
        let addrs = resolve_until(host, port, deadline, ep.connect_timeout).await?;
        match tokio::time::timeout_at(deadline, Self::open_inner(ep, host, addrs)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    async fn open_inner(
        ep: &Endpoint,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Conn, ConnError> {
        let password = ep.password().await.map_err(ConnError::Password)?;
        let io = open_stream(ep, host, addrs).await?;
        let budget = Arc::new(Budget::default());
        let limit = Arc::new(AtomicUsize::new(HANDSHAKE_REPLY_LIMIT));
        let bounded = Bounded {
            inner: io,
            budget: budget.clone(),
            limit: limit.clone(),
        };
        let mut conn = Conn {
            io: bounded,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            codec: ValueCodec::default(),
            cmd: Cmd::new(),
            wbuf: Vec::with_capacity(256),
            budget,
            limit,
            backend: Arc::default(),
            located: None,
        };
        let identity = conn.handshake(ep, password.as_ref()).await?;
        conn.backend = Arc::new(identity);
        Ok(conn)
    }

    /// Sends the whole handshake as one pipeline and reads the replies in order: one round
    /// trip instead of six.
    async fn handshake(
        &mut self,
        ep: &Endpoint,
        password: Option<&Secret>,
    ) -> Result<Identity, ConnError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut expect: Vec<&'static str> = Vec::with_capacity(6);
        if ep.resp3 {
            let hello = pipe.cmd("HELLO").arg(3);
            if let Some(pw) = password {
                hello
                    .arg("AUTH")
                    .arg(ep.username.as_deref().unwrap_or("default"))
                    .arg(pw.expose());
            }
            expect.push("HELLO");
        } else if let Some(pw) = password {
            let auth = pipe.cmd("AUTH");
            if let Some(user) = &ep.username {
                auth.arg(user);
            }
            auth.arg(pw.expose());
            expect.push("AUTH");
        }
        if ep.db != 0 {
            pipe.cmd("SELECT").arg(ep.db);
            expect.push("SELECT");
        }
        pipe.cmd("CLIENT").arg("SETNAME").arg(&ep.client_name);
        expect.push("CLIENT SETNAME");
        pipe.cmd("INFO").arg("server");
        expect.push("INFO server");
        pipe.cmd("INFO").arg("replication");
        expect.push("INFO replication");
        pipe.cmd("CLIENT").arg("INFO");
        expect.push("CLIENT INFO");
        if ep.locator.is_some() {
            pipe.cmd("ROLE");
            expect.push("ROLE");
        }

        self.arm(HANDSHAKE_REPLY_LIMIT);
        self.io
            .write_all(&pipe.get_packed_pipeline())
            .await
            .map_err(io_error)?;
        let mut replies = Vec::with_capacity(expect.len());
        for _ in 0..expect.len() {
            replies.push(self.read_value().await?);
        }
        if !self.rbuf.is_empty() {
            return Err(ConnError::OutOfStep("the handshake"));
        }
        let mut identity = Identity::default();
        let mut role_master = None;
        for (what, reply) in expect.into_iter().zip(replies) {
            match (what, reply) {
                ("AUTH" | "SELECT" | "HELLO", Value::ServerError(e)) => {
                    return Err(ConnError::Redis(e.into()));
                }
                ("AUTH" | "SELECT", Value::Okay) => {}
                ("HELLO", Value::Map(_) | Value::Array(_)) => {}
                ("AUTH", _) => return Err(ConnError::Unexpected("AUTH")),
                ("SELECT", _) => return Err(ConnError::Unexpected("SELECT")),
                ("HELLO", _) => return Err(ConnError::Unexpected("HELLO")),
                // A server that wants a password we do not have says so on the first command.
                (_, Value::ServerError(e)) => {
                    let e = RedisError::from(e);
                    if classify_redis(&e) == ResultKind::Auth && e.code() != Some("NOPERM") {
                        return Err(ConnError::Redis(e));
                    }
                }
                ("INFO server" | "INFO replication", v) => {
                    if let Some(text) = text_of(&v) {
                        identity.absorb_info(&text);
                    }
                }
                ("CLIENT INFO", v) => {
                    if let Some(text) = text_of(&v) {
                        identity.absorb_client_info(&text);
                    }
                }
                ("ROLE", Value::Array(items)) => {
                    role_master =
                        Some(items.first().and_then(text_of).as_deref() == Some("master"));
                }
                // An ACL may forbid SETNAME: it does not matter.
                _ => {}
            }
        }
        // A node that may not run ROLE (an ACL without +role) still says its role in INFO.
        if ep.locator.is_some() && !role_master.unwrap_or(identity.role == "master") {
            return Err(ConnError::NotMaster(identity.addr.clone()));
        }
        Ok(identity)
    }

    /// Gives the next request a budget of `limit` reply bytes.
    fn arm(&mut self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.budget.left.store(limit, Ordering::Relaxed);
    }

    /// Sends one command and reads its reply, all within `timeout`, reading at most `limit`
    /// bytes. An error reply comes back as [`ConnError::Redis`]. Bytes after the reply that
    /// nobody asked for mean the stream is out of step: [`ConnError::OutOfStep`], and the
    /// caller drops the connection.
    pub async fn call(
        &mut self,
        args: &[&[u8]],
        limit: usize,
        timeout: Duration,
    ) -> Result<Value, ConnError> {
        self.cmd.clear();
        for a in args {
            self.cmd.arg(*a);
        }
        self.wbuf.clear();
        self.cmd.write_packed_command(&mut self.wbuf);
        self.arm(limit.max(MIN_REPLY_LIMIT));
        let exchange = async {
            self.io.write_all(&self.wbuf).await.map_err(io_error)?;
            self.read_value().await
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnError::Timeout),
        };
        if !self.rbuf.is_empty() {
            return Err(ConnError::OutOfStep("a command"));
        }
        if self.rbuf.capacity() > SHRINK_ABOVE {
            // A large reply (within its budget) was read: give the memory back.
            self.rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        match reply {
            Value::ServerError(e) => Err(ConnError::Redis(e.into())),
            v => Ok(v),
        }
    }

    /// Reads until the crate's parser has one whole reply.
    async fn read_value(&mut self) -> Result<Value, ConnError> {
        loop {
            if !self.rbuf.is_empty()
                && let Some(v) = self.codec.decode(&mut self.rbuf)?
            {
                return Ok(v);
            }
            self.rbuf.reserve(READ_CHUNK);
            let n = self.io.read_buf(&mut self.rbuf).await.map_err(io_error)?;
            if n == 0 {
                return Err(closed());
            }
        }
    }

    /// Whether nothing has arrived since the last reply. Call it before lending a
    /// connection out again: bytes nobody asked for (an extra reply, or a real reply that
    /// came after another was taken in its place) mean the stream is out of step, and the
    /// connection must go before it answers the next command with the wrong reply. It only
    /// looks at what is already there; it never waits.
    pub async fn in_step(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        self.arm(READ_CHUNK);
        let Conn { io, rbuf, .. } = self;
        std::future::poll_fn(|cx| {
            Poll::Ready(
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, rbuf) {
                    Poll::Ready(Ok(n)) => n == 0,
                    // A connection the peer closed, or that fails, is not out of step: the next
                    // command on it fails with a reset, as it would for any client, and is
                    // counted as one.
                    Poll::Ready(Err(_)) | Poll::Pending => true,
                },
            )
        })
        .await
    }

    /// Closes: the socket goes with the connection.
    pub async fn close(self, _timeout: Duration) {
        drop(self);
    }
}

/// An I/O error under a request: the command may have reached the server.
fn io_error(e: io::Error) -> ConnError {
    ConnError::Redis(RedisError::from(e))
}

/// The connection ended under a request: it may have reached the server.
fn closed() -> ConnError {
    ConnError::Redis(RedisError::from(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed",
    )))
}

/// The text of an `INFO`-like reply: a bulk string (RESP2) or a verbatim string (RESP3).
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
