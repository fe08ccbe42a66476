//! Connections the canary opens and owns (DESIGN §9): resolve and connect (TCP, then TLS),
//! authenticate with freshly read credentials, select the database, name the connection,
//! identify the backend, then one command at a time, each under its own deadline. Any
//! failure hands the error back; the caller decides from its class whether the connection
//! survives. No reconnect loops live here: every connect is one attempt, counted by the caller.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::Identity;
use crate::classify::{ResultKind, classify_io, classify_server_error};
use crate::config::{PasswordSource, RedisUrl};
use crate::resp::{self, ProtocolError, Reply};
use crate::secret::Secret;
use crate::tls::Tls;

/// Where and how to connect; built once per target (or node) from the configuration.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    /// A password given in the URL wins over the target's password source.
    pub url_password: Option<Secret>,
    pub password: PasswordSource,
    pub tls: Option<Tls>,
    /// Sent as `CLIENT SETNAME`, so operators can find us in `CLIENT LIST`.
    pub client_name: String,
    pub connect_timeout: Duration,
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
            db: url.db,
            username: url
                .username
                .clone()
                .or_else(|| username.map(str::to_string)),
            url_password: url.password.clone(),
            password: password.clone(),
            tls,
            client_name,
            connect_timeout,
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

    fn password(&self) -> io::Result<Option<Secret>> {
        match &self.url_password {
            Some(p) => Ok(Some(p.clone())),
            None => self.password.resolve(),
        }
    }
}

/// What went wrong on a connection. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// An error reply; the text comes from the server and is untrusted.
    #[error("server replied: {0}")]
    Server(String),
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
    #[error("cannot read the password: {0}")]
    Password(io::Error),
}

impl ConnError {
    /// The closed result class of this error.
    pub fn result(&self) -> ResultKind {
        match self {
            ConnError::Timeout => ResultKind::Timeout,
            ConnError::Io(e) => classify_io(e),
            ConnError::Protocol(_) | ConnError::Unexpected(_) => ResultKind::Error,
            ConnError::Server(msg) => classify_server_error(msg),
            ConnError::Password(_) => ResultKind::Auth,
        }
    }

    /// Whether the peer or the network closed the connection (as opposed to us giving up).
    pub fn is_peer_close(&self) -> bool {
        matches!(self, ConnError::Io(e) if classify_io(e) == ResultKind::Reset)
    }

    /// Whether the command may have reached the server even though no reply came back:
    /// a write that ends like this has an unknown outcome.
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self,
            ConnError::Timeout | ConnError::Io(_) | ConnError::Protocol(_)
        )
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open, authenticated connection and who is on the other end.
pub struct Conn {
    io: Box<dyn Stream>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Shared so that every operation can say who served it without copying strings.
    pub backend: Arc<Identity>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Read buffer growth step: a canary reply fits many times over.
const READ_CHUNK: usize = 4096;

impl Conn {
    /// Connects, authenticates and identifies the backend, all within `connect_timeout`.
    pub async fn open(ep: &Endpoint) -> Result<Conn, ConnError> {
        match tokio::time::timeout(ep.connect_timeout, Self::open_inner(ep)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    async fn open_inner(ep: &Endpoint) -> Result<Conn, ConnError> {
        let password = ep.password().map_err(ConnError::Password)?;
        // DNS is resolved on every connect: a rescheduled pod gets a new address.
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &ep.tls {
            Some(tls) => Box::new(tls.connector.connect(tls.server_name.clone(), tcp).await?),
            None => Box::new(tcp),
        };
        let mut conn = Conn {
            io,
            rbuf: Vec::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(256),
            backend: Arc::default(),
        };
        let identity = conn.handshake(ep, password.as_ref()).await?;
        conn.backend = Arc::new(identity);
        Ok(conn)
    }

    /// Sends the whole handshake in one write and reads the replies in order: one round
    /// trip instead of six.
    async fn handshake(
        &mut self,
        ep: &Endpoint,
        password: Option<&Secret>,
    ) -> Result<Identity, ConnError> {
        let mut identity = Identity::default();
        self.wbuf.clear();
        let mut expect: Vec<&'static str> = Vec::with_capacity(6);
        if let Some(pw) = password {
            match &ep.username {
                Some(user) => resp::encode_command(
                    &mut self.wbuf,
                    &[b"AUTH", user.as_bytes(), pw.expose().as_bytes()],
                ),
                None => resp::encode_command(&mut self.wbuf, &[b"AUTH", pw.expose().as_bytes()]),
            }
            expect.push("AUTH");
        }
        if ep.db != 0 {
            let db = ep.db.to_string();
            resp::encode_command(&mut self.wbuf, &[b"SELECT", db.as_bytes()]);
            expect.push("SELECT");
        }
        resp::encode_command(
            &mut self.wbuf,
            &[b"CLIENT", b"SETNAME", ep.client_name.as_bytes()],
        );
        expect.push("CLIENT SETNAME");
        resp::encode_command(&mut self.wbuf, &[b"INFO", b"server"]);
        expect.push("INFO server");
        resp::encode_command(&mut self.wbuf, &[b"INFO", b"replication"]);
        expect.push("INFO replication");
        resp::encode_command(&mut self.wbuf, &[b"CLIENT", b"INFO"]);
        expect.push("CLIENT INFO");
        self.io.write_all(&self.wbuf).await?;

        for what in expect {
            let reply = self.read_reply().await?;
            match (what, reply) {
                ("AUTH" | "SELECT", Reply::Error(msg)) => return Err(ConnError::Server(msg)),
                ("AUTH" | "SELECT", Reply::Status(_)) => {}
                ("AUTH", _) => return Err(ConnError::Unexpected("AUTH")),
                ("SELECT", _) => return Err(ConnError::Unexpected("SELECT")),
                // A server that wants a password we do not have says so on the first command.
                (_, Reply::Error(msg))
                    if classify_server_error(&msg) == ResultKind::Auth
                        && !msg.starts_with("NOPERM") =>
                {
                    return Err(ConnError::Server(msg));
                }
                ("INFO server" | "INFO replication", Reply::Bulk(Some(text))) => {
                    identity.absorb_info(&String::from_utf8_lossy(&text));
                }
                ("CLIENT INFO", Reply::Bulk(Some(text))) => {
                    identity.absorb_client_info(&String::from_utf8_lossy(&text));
                }
                // Older servers lack CLIENT INFO; an ACL may forbid SETNAME: neither matters.
                _ => {}
            }
        }
        Ok(identity)
    }

    /// Sends one command and reads its reply, all within `timeout`. An error reply comes
    /// back as [`ConnError::Server`].
    pub async fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, ConnError> {
        self.wbuf.clear();
        resp::encode_command(&mut self.wbuf, args);
        let exchange = async {
            self.io.write_all(&self.wbuf).await?;
            self.read_reply().await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(Reply::Error(msg))) => Err(ConnError::Server(msg)),
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if !self.rbuf.is_empty()
                && let Some((reply, used)) = resp::parse(&self.rbuf)?
            {
                self.rbuf.drain(..used);
                return Ok(reply);
            }
            self.rbuf.reserve(READ_CHUNK);
            let n = self.io.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by peer",
                )));
            }
        }
    }

    /// Closes politely: a best-effort flush and shutdown, bounded by `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.io.shutdown()).await;
    }
}
