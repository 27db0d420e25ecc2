//! Request and response bodies: a size cap on what clients send, and a
//! response body that aborts the connection when its guest failed midway
//! instead of ending as if it were complete.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use futures::task::AtomicWaker;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Errors of a response body: the connection is aborted.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the server sends.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The client's body, failing once more than `max` bytes arrive. The flag
/// tells the request's task that the failure was the client's size.
pub(crate) struct LimitedBody {
    inner: Inner,
    remaining: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

/// How a filter's failure on a request body begins, as the body's error.
const FILTER_FAILED: &str = "filter: ";

/// Why the route's filters failed the body, if that is what `err` is.
pub(crate) fn filter_failure(err: &wasmtime_wasi_http::Error) -> Option<&str> {
    match err {
        wasmtime_wasi_http::Error::InternalError(Some(why)) => why.strip_prefix(FILTER_FAILED),
        _ => None,
    }
}

enum Inner {
    /// As the client sends it.
    Client(Incoming),
    /// As the route's proxy-wasm filters pass it on (from a limited client
    /// body).
    Filtered(ResponseBody),
}

impl LimitedBody {
    pub(crate) fn new(inner: Incoming, max: u64, exceeded: Arc<AtomicBool>) -> Self {
        LimitedBody {
            inner: Inner::Client(inner),
            remaining: max,
            max,
            exceeded,
        }
    }

    /// A body the filters pass on from a `LimitedBody` of the client's,
    /// bounded again: what the filters make of it is held to `max` too.
    /// A filter's failure reads as [`filter_failure`].
    pub(crate) fn filtered(inner: ResponseBody, max: u64, exceeded: Arc<AtomicBool>) -> Self {
        LimitedBody {
            inner: Inner::Filtered(inner),
            remaining: max,
            max,
            exceeded,
        }
    }
}

impl LimitedBody {
    /// Reads the rest of the body into one buffer (at most `max` bytes, by
    /// construction), asking `reserve` for each KiB it grows by first;
    /// `None` if `reserve` refused.
    pub(crate) async fn read_all(
        &mut self,
        reserve: &mut (dyn FnMut(u32) -> bool + Send),
    ) -> Result<Option<Bytes>, wasmtime_wasi_http::Error> {
        let mut all = bytes::BytesMut::new();
        let mut reserved = 0;
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                let needed =
                    u32::try_from((all.len() + data.len()).div_ceil(1024)).unwrap_or(u32::MAX);
                if needed > reserved {
                    if !reserve(needed - reserved) {
                        return Ok(None);
                    }
                    reserved = needed;
                }
                all.extend_from_slice(&data);
            }
        }
        Ok(Some(all.freeze()))
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match &mut self.inner {
            Inner::Client(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => return Poll::Ready(None),
            },
            Inner::Filtered(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => {
                    let err = match err.downcast::<wasmtime_wasi_http::Error>() {
                        Ok(err) => *err,
                        Err(err) => wasmtime_wasi_http::Error::InternalError(Some(format!(
                            "{FILTER_FAILED}{err}"
                        ))),
                    };
                    return Poll::Ready(Some(Err(err)));
                }
                None => return Poll::Ready(None),
            },
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.exceeded.store(true, Ordering::Release);
                self.remaining = 0;
                let max = self.max;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(max),
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Client(body) => body.is_end_stream(),
            Inner::Filtered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Client(body) => body.size_hint(),
            Inner::Filtered(body) => body.size_hint(),
        }
    }
}

/// Set by a request's task when its guest failed, before the guest's
/// store (and with it the body's sender) is dropped.
/// It also tells the task when the body has ended, so the task can log a
/// failed response as aborted if not one byte of it reached the client.
///
/// A body cut short (see [`FailureFlag::cut_short`]) fails the request.
/// A fresh WASI 0.2 instance's task also tells the body when its guest has
/// returned ([`FailureFlag::guest_returned`]): a 0.2 guest writes and
/// finishes its body in its own calls, so from then on nothing can come
/// but what is queued, and a body that still waits for more was left open
/// by its guest. It fails instead of waiting for the store to go, which
/// would end it as if it were complete.
#[derive(Clone, Default)]
pub(crate) struct FailureFlag(Arc<Failed>);

#[derive(Default)]
struct Failed {
    failed: AtomicBool,
    ended: tokio::sync::Notify,
    over: AtomicBool,
    returned: AtomicBool,
    /// The body's task, waiting for more of the body.
    waiting: AtomicWaker,
    /// Why the body was cut short, if it was.
    cut: OnceLock<String>,
}

impl FailureFlag {
    pub(crate) fn set(&self) {
        self.0.failed.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }

    /// Resolves once the guest's body has ended (failed, or been dropped).
    pub(crate) async fn ended(&self) {
        let ended = self.0.ended.notified();
        let mut ended = std::pin::pin!(ended);
        // Registered before the check, so an end in between still wakes it.
        ended.as_mut().enable();
        if !self.is_over() {
            ended.await;
        }
    }

    /// Whether the body has ended (or was dropped).
    pub(crate) fn is_over(&self) -> bool {
        self.0.over.load(Ordering::Acquire)
    }

    /// The guest has returned, its store still alive: a body that waits
    /// for more from now on will never get it.
    pub(crate) fn guest_returned(&self) {
        self.0.returned.store(true, Ordering::Release);
        self.0.waiting.wake();
    }

    /// Why the body was cut short: its guest left it open, or it ended in
    /// an error (the guest's, or its source's when the host feeds it).
    pub(crate) fn cut_short(&self) -> Option<&str> {
        self.0.cut.get().map(String::as_str)
    }

    fn cut(&self, why: &BoxError) {
        let _ = self.0.cut.set(why.to_string());
        self.set();
        self.end();
    }

    /// Whether a body that found nothing to send will never get more; if
    /// it may, `waker` is woken when the guest returns.
    fn stalled(&self, waker: &std::task::Waker) -> bool {
        self.0.waiting.register(waker);
        self.0.returned.load(Ordering::Acquire)
    }

    fn end(&self) {
        self.0.over.store(true, Ordering::Release);
        self.0.ended.notify_waiters();
    }
}

/// Ends a [`FailureFlag`] when dropped: a request that returns before its
/// response body exists (refused, too large, past its deadline) is over
/// too, and must not stay among the instance's requests in flight.
/// Once the body exists it ends the flag itself, when hyper drops it:
/// [`EndsOnDrop::disarm`] hands the duty over.
pub(crate) struct EndsOnDrop(Option<FailureFlag>);

impl EndsOnDrop {
    pub(crate) fn new(flag: FailureFlag) -> Self {
        EndsOnDrop(Some(flag))
    }

    /// The response body now exists and ends the flag when it is dropped.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.end();
        }
    }
}

/// A guest's response body that turns "the sender went away because the
/// guest failed" into an error, so hyper aborts the connection rather than
/// ending a chunked body cleanly; so does a body its guest left open when
/// it returned (see [`FailureFlag`]).
pub(crate) struct GuestBody<B> {
    inner: B,
    failed: FailureFlag,
}

impl<B> GuestBody<B> {
    pub(crate) fn new(inner: B, failed: FailureFlag) -> Self {
        GuestBody { inner, failed }
    }
}

/// Why a guest's response body ends in an error.
#[derive(Debug)]
enum Cut {
    /// The guest failed while sending it.
    Failed,
    /// The guest returned with the body still open.
    LeftOpen,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cut::Failed => "the guest failed while sending it",
            Cut::LeftOpen => "the guest returned without finishing it",
        })
    }
}

impl std::error::Error for Cut {}

impl<B> Drop for GuestBody<B> {
    fn drop(&mut self) {
        self.failed.end();
    }
}

impl<B> Body for GuestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            if !self.failed.stalled(cx.waker()) {
                return Poll::Pending;
            }
            let error: BoxError = Box::new(Cut::LeftOpen);
            self.failed.cut(&error);
            return Poll::Ready(Some(Err(error)));
        }
        match ready!(polled) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(error)) => {
                let error = error.into();
                self.failed.cut(&error);
                Poll::Ready(Some(Err(error)))
            }
            None if self.failed.is_set() => {
                self.failed.end();
                Poll::Ready(Some(Err(Box::new(Cut::Failed))))
            }
            None => {
                self.failed.end();
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_buffered_body_reserves_each_kib_before_holding_it() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut body = LimitedBody::filtered(full(vec![7u8; 6000]), 1 << 20, flag.clone());
        let mut asked = Vec::new();
        let mut reserve = |kib| {
            asked.push(kib);
            true
        };
        let read = body.read_all(&mut reserve).await.unwrap();
        assert_eq!(read.map(|b| b.len()), Some(6000));
        assert_eq!(asked, [6]);

        let mut body = LimitedBody::filtered(full(vec![7u8; 6000]), 1 << 20, flag);
        assert_eq!(body.read_all(&mut |_| false).await.unwrap(), None);
    }
}
