//! The stream under the `redis` crate's parser: it refuses to read past the current
//! request's byte budget, so that whatever a server sends the parser never buffers more.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many more bytes the current request may read, and how many were read in all; shared
/// between a connection and the stream under the crate's parser.
#[derive(Debug, Default)]
pub(super) struct Budget {
    pub(super) left: AtomicUsize,
    pub(super) read: AtomicU64,
}

/// The error a stream returns once a reply outgrows its budget.
#[derive(Debug, thiserror::Error)]
#[error("reply larger than {0} bytes")]
pub struct ReplyTooLarge(pub usize);

/// A stream that refuses to read past the current request's byte budget, so that whatever a
/// server sends (an endless line, a bulk length of 500 000 000, a huge array) the parser
/// above it never buffers more than that.
pub(super) struct Bounded<S> {
    pub(super) inner: S,
    pub(super) budget: Arc<Budget>,
    pub(super) limit: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.budget.left.load(Ordering::Relaxed);
        if left == 0 {
            let limit = self.limit.load(Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                ReplyTooLarge(limit),
            )));
        }
        let mut sub = buf.take(left);
        let before = sub.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut sub))?;
        let n = sub.filled().len() - before;
        // SAFETY: `sub` is a view of `buf`'s unfilled part; the inner reader initialised and
        // filled its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        self.budget.left.fetch_sub(n, Ordering::Relaxed);
        self.budget.read.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
