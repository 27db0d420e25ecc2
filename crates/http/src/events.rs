//! What the server reports: one record per request, guest output, and its
//! own troubles. The server never prints; the embedder (the CLI) renders
//! these as text or JSON.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Receives everything the server has to say. Called from request tasks, so
/// it must be cheap and must not block for long.
pub trait EventSink: Send + Sync + 'static {
    /// A request finished (or was refused).
    fn request(&self, record: &AccessRecord<'_>);
    /// A line the guest wrote to stdout or stderr.
    fn guest_output(&self, line: &GuestLine<'_>);
    /// Something went wrong outside any one request (accept failures).
    fn server_error(&self, message: &str);
    /// Something the server did outside any one request that an operator
    /// may want to see, such as `tern host` loading or unloading an app.
    fn event(&self, message: &str) {
        let _ = message;
    }
    /// Something Tern did on a request's behalf that the operator should
    /// see, such as refusing an outbound request. Logged like guest output,
    /// on the stream `tern`.
    fn note(&self, component: &str, request: RequestId, message: &str) {
        self.guest_output(&GuestLine {
            component,
            request,
            stream: "tern",
            text: message,
        });
    }
}

/// One access-log entry.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// Identifies the request in logs and in error bodies sent to the client.
    pub id: RequestId,
    /// The request method.
    pub method: &'a str,
    /// The request path and query, as sent.
    pub path: &'a str,
    /// The status sent, or the one that would have been sent when the
    /// connection was aborted after the head went out.
    pub status: u16,
    /// The response failed before any byte of it reached the client: the
    /// client saw the connection close, not `status`.
    pub aborted: bool,
    /// From the head being read to the guest finishing.
    pub duration: Duration,
    /// The component that handled it; `None` when no route matched or the
    /// request was refused before reaching one.
    pub component: Option<&'a str>,
    /// Why the request failed, for the log only: never sent to the client.
    pub error: Option<String>,
}

/// A line of guest output, without its newline.
#[derive(Debug)]
pub struct GuestLine<'a> {
    /// The component that wrote it.
    pub component: &'a str,
    /// The request being handled.
    pub request: RequestId,
    /// `"stdout"` or `"stderr"`.
    pub stream: &'static str,
    /// The text (lossily decoded).
    pub text: &'a str,
}

/// A request id: a random per-process prefix and a sequence number, so ids
/// from restarts do not collide in a shared log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    prefix: u32,
    seq: u64,
}

impl RequestId {
    /// This server's id with sequence number `seq` (0: no request).
    pub(crate) fn with_seq(self, seq: u64) -> RequestId {
        RequestId { seq, ..self }
    }

    /// The sequence number.
    pub(crate) fn seq(self) -> u64 {
        self.seq
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{}", self.prefix, self.seq)
    }
}

/// Hands out request ids.
pub(crate) struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 4];
        // A fixed prefix is only a weaker log key, never a safety problem.
        let _ = getrandom::fill(&mut bytes);
        RequestIds {
            prefix: u32::from_le_bytes(bytes),
            next: AtomicU64::new(1),
        }
    }

    /// The id of no request (sequence number 0), for lines outside any.
    pub(crate) fn zero(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            seq: 0,
        }
    }

    pub(crate) fn next(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn request_ids_print_as_hex_prefix_and_decimal_sequence() {
        let cases = [
            (0, 0, "00000000-0"),
            (0x00ab_cdef, 42, "00abcdef-42"),
            (u32::MAX, u64::MAX, "ffffffff-18446744073709551615"),
        ];
        for (prefix, seq, expected) in cases {
            assert_eq!(RequestId { prefix, seq }.to_string(), expected);
        }
    }
}
