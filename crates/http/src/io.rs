//! The connection's socket: a limit on how long a client may leave a
//! response unread, and a lingering close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// A client's socket.
///
/// Writes fail with `TimedOut` once the client has taken no bytes for
/// `timeout`: without that, a client that never reads holds its response
/// (and everything behind it) for as long as it keeps the connection open.
///
/// Closing lingers: after its last response the server stops writing, then
/// reads and discards what the client still sends, until the client closes
/// or [`LINGER`] passes. Closing with unread bytes would make the kernel
/// reset the connection, and a client still sending a body (one refused with
/// 413 before it was read) would lose the response to that reset.
pub(crate) struct ClientIo<T> {
    io: T,
    timeout: Duration,
    /// Running while a write waits on the client, or while closing lingers;
    /// made on first use and reused after.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    lingering: bool,
    /// Bytes written to the client so far, shared with the connection's
    /// requests: a failed response that wrote nothing was aborted unseen.
    written: Arc<AtomicU64>,
}

impl<T> ClientIo<T> {
    pub(crate) fn new(io: T, timeout: Duration) -> Self {
        ClientIo {
            io,
            timeout,
            timer: None,
            armed: false,
            lingering: false,
            written: Arc::default(),
        }
    }

    /// The count of bytes written to the client, as it goes up.
    pub(crate) fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    fn count(&self, poll: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = poll {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }

    /// Starts the timer at `after` from now unless it is running; then
    /// whether it has run out.
    fn expired(&mut self, cx: &mut Context<'_>, after: Duration) -> bool {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + after;
            match &mut self.timer {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// Passes on a write's outcome; a write still waiting starts (or checks)
    /// the stall timer, and any progress stops it.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.expired(cx, self.timeout) {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {:?}", self.timeout),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.count(&poll);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.count(&poll);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.lingering {
            let poll = Pin::new(&mut self.io).poll_shutdown(cx);
            ready!(self.watch(cx, poll))?;
            self.lingering = true;
            self.armed = false;
        }
        let mut scratch = [0u8; 4096];
        loop {
            if self.expired(cx, LINGER) {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}
