//! What the wasi:http guests in `examples/` share: sending a response,
//! reading a request body, picking apart a query string, and bindings for
//! Tern's services (key-value stores, configuration).
//!
//! Each example is one component exporting `wasi:http/incoming-handler`. The
//! helpers panic when the host refuses an operation, which the host sees as a
//! trap: good enough for test guests, and it keeps them short.

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

/// Bindings for the `tern:keyvalue/services` world in the repository's
/// `wit/`: `wasi:keyvalue` store/atomics/batch, Tern's `expiry` and `cas`,
/// and `wasi:config/store`. A component imports only the interfaces its code
/// calls, so guests that do not use them are unchanged.
pub mod services {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "tern:keyvalue/services",
        generate_all,
    });
}

/// The most one `blocking-write-and-flush` call accepts.
const MAX_WRITE: usize = 4096;

/// How much to ask for per read of the request body.
const READ_SIZE: u64 = 64 * 1024;

/// Sends a complete response with a `content-length`: `status`, `headers`,
/// then `body`.
pub fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut digits = [0u8; 20];
    let length = decimal(body.len(), &mut digits);
    let (response_body, stream) = start_response(out, status, headers, Some(length));
    write_all(&stream, body);
    finish(response_body, stream);
}

/// Sends a complete `text/plain` response.
pub fn respond_text(out: ResponseOutparam, status: u16, body: &str) {
    respond(
        out,
        status,
        &[("content-type", "text/plain")],
        body.as_bytes(),
    );
}

/// Sends the response head and hands back its body for streaming. Without a
/// `content_length` the host cannot know the size, so it streams the body
/// (chunked in HTTP/1.1). End with [`finish`].
pub fn start_response(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    content_length: Option<&str>,
) -> (OutgoingBody, OutputStream) {
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .unwrap_or_else(|e| panic!("adding header {name}: {e:?}"));
    }
    if let Some(length) = content_length {
        fields
            .append("content-length", length.as_bytes())
            .expect("adding header content-length");
    }
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(status)
        .unwrap_or_else(|()| panic!("invalid status code {status}"));
    let body = response.body().expect("taking the response body");
    // Set the response before writing: the host only starts sending (and so
    // draining the body) once it has the head.
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("opening the response body stream");
    (body, stream)
}

/// Writes all of `bytes`, waiting until each piece is flushed.
pub fn write_all(stream: &OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(MAX_WRITE) {
        stream
            .blocking_write_and_flush(chunk)
            .unwrap_or_else(|e| panic!("writing the response body: {}", stream_error(e)));
    }
}

/// Ends a response body started by [`start_response`].
pub fn finish(body: OutgoingBody, stream: OutputStream) {
    // The stream is a child of the body and must go first.
    drop(stream);
    OutgoingBody::finish(body, None).expect("finishing the response body");
}

/// Hands each chunk of the request body to `f`, in order, until the end.
pub fn for_each_body_chunk(request: &IncomingRequest, mut f: impl FnMut(&[u8])) {
    let body = request.consume().expect("consuming the request body");
    let stream = body.stream().expect("opening the request body stream");
    loop {
        match stream.blocking_read(READ_SIZE) {
            Ok(chunk) => f(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => panic!("reading the request body: {}", stream_error(e)),
        }
    }
    // The stream is a child of the body and must go first.
    drop(stream);
    drop(IncomingBody::finish(body));
}

/// The whole request body.
pub fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    for_each_body_chunk(request, |chunk| bytes.extend_from_slice(chunk));
    bytes
}

/// The path of `path_with_query`, without the query.
pub fn path(path_with_query: &str) -> &str {
    path_with_query
        .split_once('?')
        .map_or(path_with_query, |(path, _)| path)
}

/// The raw (not percent-decoded) value of `key` in the query of
/// `path_with_query`, if it is there.
pub fn query_param<'a>(path_with_query: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value)
}

/// Whether the query of `path_with_query` has `flag`, bare (`?exists`) or
/// with a value (`?ttl-ms=5`).
pub fn query_has(path_with_query: &str, flag: &str) -> bool {
    path_with_query.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == flag)
    })
}

/// The method as it appears on the wire.
pub fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".to_owned(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

/// `n` in decimal, written into `buf` without allocating.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).unwrap()
}
