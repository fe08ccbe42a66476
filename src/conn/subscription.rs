//! A pub/sub connection (a sentinel's `+switch-master` channel) on the `redis` crate's
//! `PubSub`, over a stream the canary opened, with a byte budget re-armed for every message.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redis::RedisConnectionInfo;

use super::bounded::{Bounded, Budget};
use super::net::{open_stream, resolve_until};
use super::{ConnError, Endpoint, HANDSHAKE_REPLY_LIMIT, MIN_REPLY_LIMIT};

/// Most bytes one pub/sub message may take: a `+switch-master` message is a few dozen.
const MESSAGE_LIMIT: usize = MIN_REPLY_LIMIT;

/// A pub/sub connection (a sentinel's `+switch-master` channel), on the `redis` crate's
/// RESP2 `PubSub` over a stream the canary opened, with a byte budget re-armed for every
/// message.
pub struct Subscription {
    stream: redis::aio::PubSubStream,
    _sink: redis::aio::PubSubSink,
    budget: Arc<Budget>,
}

impl Subscription {
    /// Connects to `ep` (its credentials; `AUTH` sent by the crate), subscribes to
    /// `channel`, all within `connect_timeout`.
    pub async fn open(ep: &Endpoint, channel: &str) -> Result<Subscription, ConnError> {
        let deadline = tokio::time::Instant::now() + ep.connect_timeout;
        let open = async {
            let password = ep.password().await.map_err(ConnError::Password)?;
            let addrs = resolve_until(&ep.host, ep.port, deadline, ep.connect_timeout).await?;
            let io = open_stream(ep, &ep.host, addrs).await?;
            let budget = Arc::new(Budget::default());
            budget.left.store(HANDSHAKE_REPLY_LIMIT, Ordering::Relaxed);
            let bounded = Bounded {
                inner: io,
                budget: budget.clone(),
                limit: Arc::new(AtomicUsize::new(HANDSHAKE_REPLY_LIMIT)),
            };
            let mut info = RedisConnectionInfo::default().set_skip_set_lib_name();
            if let Some(pw) = &password {
                info = info.set_password(pw.expose());
                if let Some(user) = &ep.username {
                    info = info.set_username(user);
                }
            }
            let pubsub = redis::aio::PubSub::new(&info, bounded).await?;
            let (mut sink, stream) = pubsub.split();
            sink.subscribe(channel).await?;
            budget.left.store(MESSAGE_LIMIT, Ordering::Relaxed);
            Ok(Subscription {
                stream,
                _sink: sink,
                budget,
            })
        };
        match tokio::time::timeout_at(deadline, open).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// The payload of the next message; `None` once the connection ended (or a message
    /// outgrew its budget).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        use futures_core::Stream as _;
        let msg = std::future::poll_fn(|cx| Pin::new(&mut self.stream).poll_next(cx)).await?;
        self.budget.left.store(MESSAGE_LIMIT, Ordering::Relaxed);
        Some(msg.get_payload_bytes().to_vec())
    }
}
