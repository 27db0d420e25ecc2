//! What one HTTP stream shows its filters: headers, body buffers, trailers,
//! and what the filters asked of the host while handling it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

/// Header fields in order, names lowercase; HTTP/2-style pseudo-headers
/// (`:method`, `:path`, `:authority`, `:scheme`, `:status`) first.
pub type Headers = Vec<(String, String)>;

/// The most a stream's headers may grow to through filters (names, values
/// and 32 bytes per field), per header map.
pub(crate) const MAX_HEADERS_SIZE: usize = 256 << 10;

/// The most `dispatch_http_call`s in flight per stream (all its filters
/// together), and per VM from its root context.
pub(crate) const MAX_CALLS_PER_STREAM: usize = 16;

/// The most `set_property` may store per stream.
pub(crate) const MAX_PROPERTIES_SIZE: usize = 64 << 10;

/// Facts about a stream that filters read as properties.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    /// The request id, as logs show it.
    pub request_id: String,
    /// The same id as a number, handed back to [`crate::FilterLog`].
    pub request_seq: u64,
    /// The client's address.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
}

/// A response a filter made (`send_local_response`): it replaces the
/// upstream's, or answers before any upstream is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status, 200 to 599 (others are refused when sent).
    pub status: u16,
    /// The headers the filter set.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A `dispatch_http_call` to a declared upstream, for the host to make.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// The token the filter got and its response will be delivered under.
    pub token: u32,
    /// The upstream's name (declared; checked when the call was made).
    pub upstream: String,
    /// Headers with `:method`, `:path` and `:authority`.
    pub headers: Headers,
    /// The request body.
    pub body: Bytes,
    /// Its trailers.
    pub trailers: Headers,
    /// How long the host waits for the whole response.
    pub timeout: Duration,
}

/// What came back from an [`HttpCall`]; `None` fields when the call failed
/// (the filter then sees no headers and no body).
#[derive(Clone, Debug, Default)]
pub struct CallResponse {
    /// The response headers with `:status`.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// The trailers.
    pub trailers: Headers,
}

/// The per-stream state every filter of a chain shares: what the host
/// moves into a VM's store for the time of one callback.
#[derive(Default)]
pub(crate) struct StreamData {
    pub(crate) info: Option<StreamInfo>,
    pub(crate) request_headers: Headers,
    pub(crate) request_body: Vec<u8>,
    pub(crate) request_trailers: Headers,
    pub(crate) response_headers: Headers,
    pub(crate) response_body: Vec<u8>,
    pub(crate) response_trailers: Headers,
    /// Whether a filter changed the request or response headers.
    pub(crate) request_headers_changed: bool,
    pub(crate) response_headers_changed: bool,
    /// Whether the response headers exist yet (they may be read and changed
    /// only once they do).
    pub(crate) response_started: bool,
    pub(crate) local_response: Option<LocalResponse>,
    /// `continue_stream` (or `continue_request`/`continue_response`) was
    /// called for the request or the response.
    pub(crate) resume_request: bool,
    pub(crate) resume_response: bool,
    /// `close_stream`: reset the stream.
    pub(crate) close: bool,
    /// Calls dispatched during the current callback.
    pub(crate) calls: Vec<HttpCall>,
    /// Calls dispatched and not yet answered, for the per-stream bound.
    pub(crate) calls_in_flight: usize,
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) properties_size: usize,
    /// The body a body callback may read and replace, and whether the
    /// request's or the response's.
    pub(crate) body_is_response: Option<bool>,
}

/// The encoded size of a header map, for the bound.
pub(crate) fn headers_size(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|(name, value)| field_size(name, value))
        .sum()
}

/// What one field counts for in [`headers_size`].
pub(crate) fn field_size(name: &str, value: &str) -> usize {
    name.len() + value.len() + 32
}
