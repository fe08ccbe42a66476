//! The HTTP server's bookkeeping of open connections: which are open and in what order,
//! which is mid-response, eviction of the oldest when the cap is reached, and the socket
//! wrapper that bounds how long a response may take to be written.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::RESPONSE_WRITE_TIMEOUT;

/// Control of one open connection, shared by its task and the accept loop.
#[derive(Default)]
pub(super) struct Ctl {
    /// A request has been read and its response is not yet fully written: evicted last.
    pub(super) busy: AtomicBool,
    /// Close now (a permit is stored if the task is not waiting yet).
    pub(super) evict: Notify,
}

/// The open connections by accept order (ids increase), for the cap and for shutdown.
#[derive(Default)]
pub(super) struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Ctl>>>,
    closed: Notify,
}

impl Connections {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Ctl>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn add(&self, id: u64) -> Arc<Ctl> {
        let ctl = Arc::new(Ctl::default());
        self.lock().insert(id, ctl.clone());
        ctl
    }

    pub(super) fn remove(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        if open.is_empty() {
            self.closed.notify_waiters();
        }
    }

    /// Tells the oldest connection other than `spare` to close, preferring one that is not
    /// mid-response; false if there is none.
    pub(super) fn evict_oldest(&self, spare: Option<u64>) -> bool {
        let mut open = self.lock();
        let candidates = || open.iter().filter(|(id, _)| Some(**id) != spare);
        let victim = candidates()
            .find(|(_, c)| !c.busy.load(Ordering::Relaxed))
            .or_else(|| candidates().next())
            .map(|(id, _)| *id);
        let Some(id) = victim else { return false };
        if let Some(ctl) = open.remove(&id) {
            ctl.evict.notify_one();
        }
        if open.is_empty() {
            self.closed.notify_waiters();
        }
        true
    }

    /// Resolves once no connection is open.
    pub(super) async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.len() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place in [`Connections`], given up when its task ends (however it ends).
pub(super) struct Registered(
    pub(super) Arc<Connections>,
    pub(super) u64,
    pub(super) Arc<Ctl>,
);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// The socket with [`RESPONSE_WRITE_TIMEOUT`]: the clock starts at the first byte written
/// after the last complete flush and stops at the next one (hyper flushes once a response
/// is wholly handed to the kernel), so the bound is per response, not per connection.
pub(super) struct WriteDeadline {
    pub(super) stream: TcpStream,
    pub(super) ctl: Arc<Ctl>,
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn poll_timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(RESPONSE_WRITE_TIMEOUT)));
        match write(Pin::new(&mut self.stream), cx) {
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not take the response within the write timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_timed(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_timed(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) && this.deadline.take().is_some() {
            this.ctl.busy.store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_oldest_idle_connection_and_spares_the_new_one() {
        let open = Connections::default();
        let a = open.add(0);
        let _b = open.add(1);
        let _c = open.add(2);
        a.busy.store(true, Ordering::Relaxed);
        assert!(open.evict_oldest(Some(2)));
        // 0 is mid-response, so 1 goes.
        assert_eq!(open.lock().keys().copied().collect::<Vec<_>>(), [0, 2]);
        // Only busy ones left besides the spared: the oldest busy one goes.
        assert!(open.evict_oldest(Some(2)));
        assert_eq!(open.lock().keys().copied().collect::<Vec<_>>(), [2]);
        assert!(!open.evict_oldest(Some(2)));
    }
}
