//! A guest's stdout and stderr, turned into log lines tagged with the
//! component and request that wrote them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::events::{EventSink, GuestLine, RequestId};

/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 16 << 10;

/// Guest output logged per request, stdout and stderr together. A guest
/// printing in a loop must not flood the log (or slow the server down).
pub(crate) const OUTPUT_BUDGET: usize = 64 << 10;

/// What an instance's output streams share: the request they are logged
/// under (a warm instance serves several in turn) and the bytes that
/// request may still log.
pub(crate) struct OutputState {
    request: Mutex<RequestId>,
    budget: AtomicUsize,
}

impl OutputState {
    pub(crate) fn new(request: RequestId) -> Arc<Self> {
        Arc::new(OutputState {
            request: Mutex::new(request),
            budget: AtomicUsize::new(OUTPUT_BUDGET),
        })
    }

    /// The instance starts on `request`, with a full budget.
    pub(crate) fn start(&self, request: RequestId) {
        *self.request.lock().unwrap_or_else(|e| e.into_inner()) = request;
        self.budget.store(OUTPUT_BUDGET, Ordering::Relaxed);
    }

    /// The request output is logged under now.
    pub(crate) fn request(&self) -> RequestId {
        *self.request.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where one stream of one instance goes.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) component: Arc<str>,
    pub(crate) stream: &'static str,
    /// Shared by the instance's streams.
    pub(crate) state: Arc<OutputState>,
}

impl GuestOutput {
    fn writer(&self) -> LineWriter {
        LineWriter {
            target: self.clone(),
            pending: Vec::new(),
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

/// Buffers a partial line until its newline arrives (or the stream ends).
struct LineWriter {
    target: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= MAX_LINE {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let cost = self.pending.len() + 1;
        let budget = &self.target.state.budget;
        let left = budget.load(Ordering::Relaxed);
        if left == 0 {
            self.pending.clear();
            return;
        }
        let over = cost > left;
        budget.store(if over { 0 } else { left - cost }, Ordering::Relaxed);
        if over {
            self.pending.clear();
            self.pending
                .extend_from_slice(b"[further output from this request dropped: over 64KiB]");
        }
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        self.target.sink.guest_output(&GuestLine {
            component: &self.target.component,
            request: self.target.state.request(),
            stream: self.target.stream,
            text: line,
        });
        self.pending.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AccessRecord, RequestIds};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl EventSink for Lines {
        fn request(&self, _: &AccessRecord<'_>) {}
        fn guest_output(&self, line: &GuestLine<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", line.stream, line.text));
        }
        fn server_error(&self, _: &str) {}
    }

    #[test]
    fn lines_are_split_tagged_and_budgeted() {
        let sink = Arc::new(Lines::default());
        let output = GuestOutput {
            sink: sink.clone(),
            component: "app".into(),
            stream: "stderr",
            state: OutputState::new(RequestIds::new().next()),
        };
        let mut writer = output.writer();
        writer.push(b"one\ntw");
        writer.push(b"o\r\nthree");
        drop(writer);
        // A second stream of the same request shares the budget.
        let mut writer = output.writer();
        let line = vec![b'x'; 1000];
        for _ in 0..100 {
            writer.push(&line);
            writer.push(b"\n");
        }
        drop(writer);
        let lines = sink.0.lock().unwrap();
        assert_eq!(lines[..3], ["stderr one", "stderr two", "stderr three"]);
        let logged = lines.iter().filter(|l| l.ends_with('x')).count();
        assert_eq!(logged, (OUTPUT_BUDGET - 14) / 1001);
        assert_eq!(
            lines.last().unwrap(),
            "stderr [further output from this request dropped: over 64KiB]"
        );
        assert_eq!(lines.len(), 3 + logged + 1);
    }
}
