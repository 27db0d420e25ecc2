//! When a connection is idle. hyper closes an HTTP/1 connection that sends
//! no head within `header_read_timeout`, but has no such limit for HTTP/2,
//! nor for a connection still to show which protocol it speaks: the server
//! closes those itself once nothing has been open on them for the head
//! timeout, counting each HTTP/2 request from its arrival to the end of its
//! response body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{BoxError, ResponseBody};
use crate::h2::StreamCell;

/// What one connection's requests are doing. Updated and read on the
/// connection's worker thread only (HTTP/2 streams are tasks on the same
/// current-thread runtime).
pub(crate) struct Activity {
    born: Instant,
    /// HTTP/2 requests whose response has not ended.
    open: AtomicUsize,
    /// When `open` last changed, in milliseconds after `born`.
    changed: AtomicU64,
    /// Whether an HTTP/1 request came: hyper then keeps time itself.
    http1: AtomicBool,
}

/// What [`Activity::idle`] found.
pub(crate) enum Idle {
    /// The connection speaks HTTP/1; hyper closes it when idle.
    Http1,
    /// Something is open, or was until recently: look again at this time.
    Busy(Instant),
    /// Nothing open for the whole timeout.
    Quiet,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            born: Instant::now(),
            open: AtomicUsize::new(0),
            changed: AtomicU64::new(0),
            http1: AtomicBool::new(false),
        }
    }

    /// A request arrived. For HTTP/2, the guard counts it open until it is
    /// dropped with the response body; HTTP/1 requests are not counted
    /// (nothing is allocated for them).
    pub(crate) fn request(self: &Arc<Self>, version: http::Version) -> Option<StreamGuard> {
        if version != http::Version::HTTP_2 {
            if !self.http1.load(Ordering::Relaxed) {
                self.http1.store(true, Ordering::Relaxed);
            }
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Some(StreamGuard(self.clone()))
    }

    fn touch(&self) {
        let millis = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed.store(millis, Ordering::Relaxed);
    }

    /// Whether nothing has been open on the connection for `timeout`.
    pub(crate) fn idle(&self, timeout: Duration) -> Idle {
        if self.http1.load(Ordering::Relaxed) {
            return Idle::Http1;
        }
        let now = Instant::now();
        if self.open.load(Ordering::Relaxed) > 0 {
            return Idle::Busy(now + timeout);
        }
        let quiet = self.born + Duration::from_millis(self.changed.load(Ordering::Relaxed));
        match quiet.checked_add(timeout) {
            Some(until) if until > now => Idle::Busy(until),
            _ => Idle::Quiet,
        }
    }
}

/// One open HTTP/2 request.
pub(crate) struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The most of a response body handed to h2 at once: the stream's progress
/// (for the write timeout, [`crate::h2`]) is seen a piece at a time.
const PIECE: usize = 64 * 1024;

/// An HTTP/2 response body, counted open until it is dropped, handed over
/// in pieces whose progress its stream's cell records.
pub(crate) struct Tracked {
    body: ResponseBody,
    /// What is left of a chunk larger than [`PIECE`].
    rest: Bytes,
    cell: Option<Arc<StreamCell>>,
    _stream: StreamGuard,
}

impl Tracked {
    pub(crate) fn new(
        body: ResponseBody,
        stream: StreamGuard,
        cell: Option<Arc<StreamCell>>,
    ) -> Self {
        Tracked {
            body,
            rest: Bytes::new(),
            cell,
            _stream: stream,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(cell) = &this.cell {
            cell.asked();
        }
        let mut data = if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        } else {
            std::mem::take(&mut this.rest)
        };
        if data.len() > PIECE {
            this.rest = data.split_off(PIECE);
        }
        if let Some(cell) = &this.cell {
            cell.handed(data.len());
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let body = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(body.lower() + rest);
        if let Some(upper) = body.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}
