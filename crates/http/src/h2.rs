//! What hyper's HTTP/2 server does not tell: how far each stream's response
//! has got, and the heads the h2 library refuses on its own.
//!
//! Each HTTP/2 request runs as a task hyper hands to [`StreamExec`], which
//! wraps it in [`Watched`]: the task's [`StreamCell`] is reachable from the
//! request's code ([`current`]) while the task runs. The response body
//! ([`crate::idle::Tracked`]) records there what it handed to the
//! connection, so a stream whose client leaves it unread for the write
//! timeout is reset on its own (the connection and its other streams carry
//! on), and a failed response can tell whether any of it went out.
//!
//! [`Refusals`] watches the frames the server writes for the one response the
//! h2 library makes itself: 431 to a head over the limit, which no request
//! handler ever sees.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one HTTP/2 stream's response has done, shared by the stream's task,
/// its body and its request's task.
#[derive(Default)]
pub(crate) struct StreamCell {
    /// Body bytes handed to the connection.
    sent: AtomicU64,
    /// The body handed over a chunk and has not been asked for the next:
    /// the stream waits for the client to make room (its flow-control
    /// window).
    waiting: AtomicBool,
    /// Says why the stream was reset, once; set by the request.
    on_stall: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
}

impl StreamCell {
    /// Whether any of the response's body went out.
    pub(crate) fn sent_any(&self) -> bool {
        self.sent.load(Ordering::Relaxed) > 0
    }

    /// The body is being asked for its next frame.
    pub(crate) fn asked(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// The body handed over `len` bytes.
    pub(crate) fn handed(&self, len: usize) {
        self.sent.fetch_add(len as u64, Ordering::Relaxed);
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// What to do when the stream is reset for want of a reader: log it.
    pub(crate) fn on_stall(&self, report: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.on_stall.set(Box::new(report));
    }

    /// The bytes handed over so far, while the stream waits on the client.
    fn waiting_at(&self) -> Option<u64> {
        self.waiting
            .load(Ordering::Relaxed)
            .then(|| self.sent.load(Ordering::Relaxed))
    }
}

thread_local! {
    /// The cell of the stream task being polled on this thread.
    static CURRENT: RefCell<Option<Arc<StreamCell>>> = const { RefCell::new(None) };
}

/// The stream whose task is running: `Some` inside an HTTP/2 request's task
/// (its service future and body), `None` elsewhere (HTTP/1.1).
pub(crate) fn current() -> Option<Arc<StreamCell>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Runs the tasks hyper spawns for HTTP/2 streams, each [`Watched`].
#[derive(Clone)]
pub(crate) struct StreamExec {
    pub(crate) write_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(Watched {
            task: Some(Box::pin(task)),
            cell: Arc::default(),
            timeout: self.write_timeout,
            timer: None,
            armed: None,
        });
    }
}

/// A stream's task, ended (which resets the stream) once its response has
/// waited on the client for the write timeout with no progress.
struct Watched<F> {
    task: Option<Pin<Box<F>>>,
    cell: Arc<StreamCell>,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The bytes sent when the timer was started, while it runs.
    armed: Option<u64>,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(task) = this.task.as_mut() else {
            return Poll::Ready(());
        };
        let outer = CURRENT.with(|current| current.replace(Some(this.cell.clone())));
        let poll = task.as_mut().poll(cx);
        CURRENT.with(|current| *current.borrow_mut() = outer);
        if poll.is_ready() {
            return Poll::Ready(());
        }
        let Some(sent) = this.cell.waiting_at() else {
            this.armed = None;
            return Poll::Pending;
        };
        if this.armed != Some(sent) {
            // Waiting anew, or the client took some and waits again.
            this.armed = Some(sent);
            let deadline = Instant::now() + this.timeout;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        // Dropping the task drops its send stream, and h2 resets the stream
        // (CANCEL); what it held (the rest of the body) goes with it.
        this.task = None;
        if let Some(report) = this.cell.on_stall.get() {
            report(this.timeout);
        }
        Poll::Ready(())
    }
}

/// A connection's socket, as hyper sees it (above TLS), watched for the
/// 431 responses h2 writes itself.
pub(crate) struct Refusals<T> {
    io: T,
    frames: Frames,
    on_refusal: Box<dyn Fn() + Send + Sync>,
}

impl<T> Refusals<T> {
    pub(crate) fn new(io: T, on_refusal: impl Fn() + Send + Sync + 'static) -> Self {
        Refusals {
            io,
            frames: Frames::Unknown,
            on_refusal: Box::new(on_refusal),
        }
    }

    /// Reads on through bytes written to the client.
    fn saw(&mut self, bytes: &[u8]) {
        for _ in 0..self.frames.feed(bytes) {
            (self.on_refusal)();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Refusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Refusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.saw(&buf[..n]);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut left)) = poll {
            for buf in bufs {
                let take = left.min(buf.len());
                self.saw(&buf[..take]);
                left -= take;
            }
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where the server is in the frames it writes.
enum Frames {
    /// Nothing written yet.
    Unknown,
    /// HTTP/1.1: nothing to watch.
    Off,
    /// HTTP/2.
    On(FrameReader),
}

#[derive(Default)]
struct FrameReader {
    /// The frame header being read.
    head: [u8; 9],
    have: usize,
    /// Payload bytes still to pass.
    skip: usize,
    /// The payload of a HEADERS frame small enough to be h2's own 431.
    small: Option<Vec<u8>>,
}

/// HEADERS frame flags: END_STREAM, END_HEADERS, PADDED, PRIORITY.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

impl Frames {
    /// Reads on through bytes written; returns how many of h2's own 431s
    /// they completed.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        if let Frames::Unknown = self {
            match bytes.first() {
                None => return 0,
                // An HTTP/2 server opens with its SETTINGS frame, whose
                // length starts with a zero byte; HTTP/1.1 with "HTTP/".
                Some(0) => *self = Frames::On(FrameReader::default()),
                Some(_) => *self = Frames::Off,
            }
        }
        match self {
            Frames::On(reader) => reader.feed(bytes),
            Frames::Unknown | Frames::Off => 0,
        }
    }
}

impl FrameReader {
    fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut refused = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                if let Some(small) = &mut self.small {
                    small.extend_from_slice(&bytes[..n]);
                }
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 && self.small.take().is_some_and(|p| is_431(&p)) {
                    refused += 1;
                }
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                continue;
            }
            self.have = 0;
            let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize;
            let (kind, flags) = (self.head[3], self.head[4]);
            let whole = flags & (END_STREAM | END_HEADERS | PADDED | PRIORITY);
            // h2's 431 is one HEADERS frame ending its stream that holds
            // `:status` and nothing else; every response hyper sends holds
            // a `date` too.
            if kind == 1 && whole == END_STREAM | END_HEADERS && (1..=5).contains(&len) {
                self.small = Some(Vec::with_capacity(len));
            }
            self.skip = len;
        }
        refused
    }
}

/// Whether an HPACK header block is `:status: 431` alone: a literal with the
/// static `:status` name (index 8) and the value `431` (Huffman-coded, as h2
/// writes it, or not), or a single reference to the dynamic table, where h2
/// put that field the first time.
fn is_431(block: &[u8]) -> bool {
    const HUFFMAN: [u8; 4] = [0x83, 0x69, 0x90, 0xff];
    const RAW: [u8; 4] = [0x03, b'4', b'3', b'1'];
    match block {
        // Indexed, 7-bit prefix; 62 and up are dynamic.
        [index] => index & 0x80 != 0 && index & 0x7f >= 62,
        [0xff, rest] => rest & 0x80 == 0,
        // Literal with incremental indexing, without indexing, never
        // indexed: each naming static entry 8.
        [0x48 | 0x08 | 0x18, value @ ..] => value == HUFFMAN || value == RAW,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_h2s_own_431_among_other_frames_however_the_writes_split() {
        let mut out = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        // A response of ours: :status 200 and a date, then its body.
        out.extend(frame(1, END_HEADERS, 1, &[0x88, 0x61, 0x02, b'x', b'y']));
        out.extend(frame(0, END_STREAM, 1, b"hello"));
        // h2's 431, first as a literal, then indexed.
        out.extend(frame(
            1,
            END_STREAM | END_HEADERS,
            3,
            &[0x48, 0x83, 0x69, 0x90, 0xff],
        ));
        out.extend(frame(1, END_STREAM | END_HEADERS, 5, &[0xbe]));
        // An empty 204 of ours, fully indexed: two fields.
        out.extend(frame(1, END_STREAM | END_HEADERS, 7, &[0x89, 0xbf]));
        for step in [1, 2, 7, 9, 10, out.len()] {
            let mut frames = Frames::Unknown;
            let found: usize = out.chunks(step).map(|chunk| frames.feed(chunk)).sum();
            assert_eq!(found, 2, "written {step} bytes at a time");
        }
        let mut http1 = Frames::Unknown;
        assert_eq!(
            http1.feed(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            0
        );
        assert!(matches!(http1, Frames::Off));
    }
}
