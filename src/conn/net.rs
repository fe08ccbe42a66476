//! Reaching a node: DNS resolved asynchronously under the connect deadline with a bound on
//! lookups in flight, then TCP and TLS.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{ConnError, Endpoint};

/// Most DNS lookups in flight in the whole process. A lookup runs `getaddrinfo` on a
/// blocking thread that no timeout can stop; with a resolver that never answers, every
/// connect would otherwise leave one more thread behind (514 threads were seen with 50
/// targets). A lookup keeps its permit until `getaddrinfo` really returns, so at most this
/// many threads can hang; connects beyond it wait for a permit under their own deadline.
const MAX_LOOKUPS_IN_FLIGHT: usize = 16;

static LOOKUPS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_LOOKUPS_IN_FLIGHT)));

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Resolves `host` (the caller puts its connect deadline on it), never holding more than
/// [`MAX_LOOKUPS_IN_FLIGHT`] blocking lookups at once.
pub(super) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let dns = |reason: String| ConnError::Dns {
        host: host.to_string(),
        reason,
    };
    let permit = LOOKUPS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| dns("resolver closed".into()))?;
    let name = host.to_string();
    // The lookup owns its permit: when our deadline gives up on it, the permit stays taken
    // until `getaddrinfo` returns, which is what bounds the threads a hung resolver can hold.
    let lookup = tokio::spawn(async move {
        let r = tokio::net::lookup_host((name.as_str(), port)).await;
        drop(permit);
        r.map(|addrs| addrs.collect::<Vec<_>>())
    });
    match lookup.await {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(dns("no addresses".into())),
        Ok(Err(e)) => Err(dns(e.to_string())),
        Err(_) => Err(dns("lookup task failed".into())),
    }
}

/// Resolves `host` by `deadline`: a lookup that does not finish in time is a `dns` failure.
pub(super) async fn resolve_until(
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
    connect_timeout: Duration,
) -> Result<Vec<SocketAddr>, ConnError> {
    match tokio::time::timeout_at(deadline, resolve(host, port)).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Dns {
            host: host.to_string(),
            reason: format!(
                "the lookup did not finish within connect_timeout ({connect_timeout:?})"
            ),
        }),
    }
}

/// Connects to the first of `addrs` that accepts, then TLS when the endpoint wants it.
pub(super) async fn open_stream(
    ep: &Endpoint,
    host: &str,
    addrs: Vec<SocketAddr>,
) -> Result<Box<dyn Stream>, ConnError> {
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            return Err(ConnError::Io(
                last.unwrap_or_else(|| io::Error::other("no address")),
            ));
        }
    };
    tcp.set_nodelay(true)?;
    let io: Box<dyn Stream> = match &ep.tls {
        Some(tls) => {
            let name = match ep.tls_name_from_host {
                true => tokio_rustls::rustls::pki_types::ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                false => tls.server_name.clone(),
            };
            Box::new(tls.connector.connect(name, tcp).await?)
        }
        None => Box::new(tcp),
    };
    Ok(io)
}
