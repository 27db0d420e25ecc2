//! What the WASI 0.3 guests share: printing through `wasi:cli` streams,
//! reading byte streams, building `wasi:http` responses, picking apart a
//! query string, one outgoing `GET`, and bindings for Tern's services and
//! for wasi-nn.
//!
//! Every guest talks to the host through WASI 0.3 (the `wasip3` crate), not
//! through Rust's `std::io` or `std::env`, which the wasm32-wasip2 standard
//! library implements with WASI 0.2. The helpers panic when the host refuses
//! something they cannot go on without, which the host sees as a trap: good
//! enough for test guests, and it keeps them short.

use std::fmt;

use wasip3::cli::{environment, stderr, stdout};
use wasip3::clocks::monotonic_clock;
use wasip3::http::client;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme, Trailers};
use wasip3::{wit_future, wit_stream};
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

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

/// Bindings for `wasi:nn@0.2.0-rc-2024-10-28` (`wit/wasi-nn.wit`, as
/// wasmtime-wasi-nn 48 ships it): graphs, tensors, inference and errors.
/// Its functions are synchronous: a `compute` blocks the guest until the
/// host has an answer.
pub mod nn {
    wit_bindgen::generate!({
        path: "wit/wasi-nn.wit",
        world: "ml",
    });

    pub use wasi::nn::errors::{Error, ErrorCode};
    pub use wasi::nn::graph::{self, Graph};
    pub use wasi::nn::inference::GraphExecutionContext;
    pub use wasi::nn::tensor::{Tensor, TensorType};

    /// `error`'s code and the host's message, as `CODE: MESSAGE` (e.g.
    /// `NotFound: no graph named "x"`).
    pub fn describe(error: &Error) -> String {
        format!("{:?}: {}", error.code(), error.data())
    }

    /// A `u8` tensor of dimensions `[len]` holding `bytes`.
    pub fn bytes_tensor(bytes: &[u8]) -> Tensor {
        Tensor::new(&[bytes.len() as u32], TensorType::U8, bytes)
    }
}

/// How many bytes to ask for per read of a byte stream.
pub const READ_SIZE: usize = 64 * 1024;

/// The result `wasi:cli/stdout` and `wasi:cli/stderr` report once a stream
/// has been written out.
type CliResult = Result<(), wasip3::cli::types::ErrorCode>;

/// The program's arguments, without its name.
pub fn args() -> Vec<String> {
    environment::get_arguments().into_iter().skip(1).collect()
}

/// Writes `bytes` to stdout, and waits until the host has written them out.
pub async fn print(bytes: impl Into<Vec<u8>>) {
    write_via(stdout::write_via_stream, bytes.into(), "stdout").await;
}

/// Writes `bytes` to stderr, and waits until the host has written them out.
pub async fn eprint(bytes: impl Into<Vec<u8>>) {
    write_via(stderr::write_via_stream, bytes.into(), "stderr").await;
}

/// Hands the host a new stream with `write_via_stream`, writes `bytes` into
/// it and closes it, then waits for the host's verdict.
async fn write_via(
    write_via_stream: fn(StreamReader<u8>) -> FutureReader<CliResult>,
    bytes: Vec<u8>,
    what: &str,
) {
    let (mut tx, rx) = wit_stream::new();
    let done = write_via_stream(rx);
    let unwritten = tx.write_all(bytes).await;
    // The host resolves `done` only once the stream is closed.
    drop(tx);
    if let Err(code) = done.await {
        panic!("writing to {what}: {code:?}");
    }
    assert!(unwritten.is_empty(), "{what} closed early");
}

/// Ends the program at once with exit code `code`, through
/// `wasi:cli/exit`.
pub fn exit(code: u8) -> ! {
    wasip3::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned");
}

/// Prints `line` and exits with `code`.
pub async fn fail<T>(line: &str, code: u8) -> T {
    print(format!("{line}\n")).await;
    exit(code)
}

/// The next chunk of `stream` (at most [`READ_SIZE`] bytes), or `None` once
/// its writer has closed it.
pub async fn next_chunk(stream: &mut StreamReader<u8>) -> Option<Vec<u8>> {
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(READ_SIZE)).await;
        match result {
            StreamResult::Complete(_) if !chunk.is_empty() => return Some(chunk),
            // A zero-length write: nothing to hand on yet.
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => return None,
        }
    }
}

/// Waits `ms` milliseconds in the host (`monotonic-clock.wait-for`).
pub async fn sleep_ms(ms: u64) {
    monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
}

/// Header fields from `(name, value)` pairs.
pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    let entries: Vec<(String, Vec<u8>)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&entries).unwrap_or_else(|e| panic!("headers {pairs:?}: {e:?}"))
}

/// A response with `status`, `headers` and, if given, `body`. It has no
/// trailers.
pub fn response(status: u16, headers: &[(&str, &str)], body: Option<StreamReader<u8>>) -> Response {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _transmitted) = Response::new(fields(headers), body, trailers_rx);
    // A dropped writer sends its default, `Ok(None)`: no trailers. The host
    // reads it only once the body has ended.
    drop(trailers_tx);
    response
        .set_status_code(status)
        .unwrap_or_else(|()| panic!("invalid status code {status}"));
    response
}

/// A response whose body is whatever is written to the returned writer,
/// until the writer is dropped. Without a `content-length` the host streams
/// it (chunked in HTTP/1.1).
pub fn streaming_response(status: u16, headers: &[(&str, &str)]) -> (Response, StreamWriter<u8>) {
    let (tx, rx) = wit_stream::new();
    (response(status, headers, Some(rx)), tx)
}

/// A complete response: `status`, `headers` and a `content-length`, then
/// `body`, which a spawned task writes once the handler has returned the
/// response.
pub fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Result<Response, ErrorCode> {
    let body = body.into();
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("content-length", length.as_str()));
    let (response, mut tx) = streaming_response(status, &all);
    wit_bindgen::spawn(async move {
        // What a client that went away did not take is dropped.
        let _unwritten = tx.write_all(body).await;
    });
    Ok(response)
}

/// A complete `text/plain` response.
pub fn respond_text(status: u16, body: &str) -> Result<Response, ErrorCode> {
    respond(status, &[("content-type", "text/plain")], body)
}

/// A response with `status` and no body at all (for a 204).
pub fn respond_empty(status: u16) -> Result<Response, ErrorCode> {
    Ok(response(status, &[], None))
}

/// The body of `request` as a stream, and the future of its trailers, which
/// resolves once the stream has been read to its end.
pub fn consume_body(
    request: Request,
) -> (
    StreamReader<u8>,
    FutureReader<Result<Option<Trailers>, ErrorCode>>,
) {
    // Through this future a handler could tell the host that it failed to
    // process the body; its writer, dropped here, reports success.
    let (_, handled) = wit_future::new(|| Ok(()));
    Request::consume_body(request, handled)
}

/// The whole body of `request`, or the error the host reported at its end.
pub async fn read_body(request: Request) -> Result<Vec<u8>, ErrorCode> {
    let (body, trailers) = consume_body(request);
    let bytes = body.collect().await;
    trailers.await?;
    Ok(bytes)
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

/// Whether the query of `path_with_query` has `flag`, bare (`?keys`) or
/// with a value (`?incr=1`).
pub fn query_has(path_with_query: &str, flag: &str) -> bool {
    path_with_query.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == flag)
    })
}

/// The number in `key` of the query of `path_with_query`, `default` when it
/// is absent, or why it is not a number.
pub fn query_number(path_with_query: &str, key: &str, default: u64) -> Result<u64, String> {
    match query_param(path_with_query, key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("{key} must be a number, got {text:?}")),
    }
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

/// `text` with each `%XX` replaced by its byte.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("{text:?} decodes to invalid UTF-8"))
}

/// Why an outgoing request failed.
pub enum Failure {
    /// The host or the server said no: shown as the `Debug` of wasi:http's
    /// `ErrorCode` (e.g. `ErrorCode::HttpRequestDenied`).
    Code(ErrorCode),
    /// Anything else (a malformed URL), as text.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Code(code) => write!(f, "{code:?}"),
            Failure::Other(message) => f.write_str(message),
        }
    }
}

/// Sends `GET url` through `wasi:http/client`, with no body; the status and
/// the whole body of the response.
pub async fn get(url: &str) -> Result<(u16, Vec<u8>), Failure> {
    let (scheme, authority, path_with_query) = parse_url(url).map_err(Failure::Other)?;
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (request, _transmitted) = Request::new(Fields::new(), None, trailers_rx, None);
    // No trailers: the writer's default.
    drop(trailers_tx);
    let invalid = |what: &str| Failure::Other(format!("invalid {what} in {url:?}"));
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority.as_str()))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path_with_query.as_str()))
        .map_err(|()| invalid("path"))?;

    let response = client::send(request).await.map_err(Failure::Code)?;
    let status = response.get_status_code();
    let (_, handled) = wit_future::new(|| Ok(()));
    let (body, trailers) = Response::consume_body(response, handled);
    let bytes = body.collect().await;
    trailers.await.map_err(Failure::Code)?;
    Ok((status, bytes))
}

/// Splits `http[s]://AUTHORITY[/PATH][?QUERY]` (any `#fragment` dropped)
/// into its scheme, authority and path with query.
fn parse_url(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("not an http or https URL: {url:?}"));
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_with_query) = rest.split_at(split);
    if authority.is_empty() {
        return Err(format!("no authority in {url:?}"));
    }
    let path_with_query = match path_with_query.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{path_with_query}"),
        Some(_) => path_with_query.to_owned(),
    };
    Ok((scheme, authority.to_owned(), path_with_query))
}
