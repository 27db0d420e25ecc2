//! Makes outbound requests through `wasi:http/outgoing-handler`:
//! `GET /fetch?url=URL[&count=N]` sends `GET URL` (the query value
//! percent-decoded) N times in turn, 1 by default. A URL that starts with
//! `/` goes without a scheme or an authority: a request to the app itself. A request header
//! `x-forward-host` becomes the outgoing `host` header, if the host lets it.
//!
//! Answers 200 `STATUS BODY` of the last response when every attempt
//! succeeds, else 502 `attempt K: error: ERROR` for the first that failed,
//! ERROR being the `Debug` of wasi:http's `ErrorCode` (e.g.
//! `ErrorCode::HttpRequestDenied`). A bad request answers 400.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingRequest, ResponseOutparam,
    Scheme,
};
use wasi::io::streams::StreamError;

/// How much to ask for per read of a response body.
const READ_SIZE: u64 = 64 * 1024;

/// Where to send the outgoing requests.
struct Target {
    scheme: Option<Scheme>,
    authority: Option<String>,
    path_with_query: String,
}

/// Why an attempt failed.
enum Failure {
    /// The host or the server said no.
    Code(ErrorCode),
    /// Anything else, as text.
    Other(String),
}

struct Outbound;

impl Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (target, count) = match parse(&request) {
            Ok(parsed) => parsed,
            Err(why) => return tern_http_guests::respond_text(out, 400, &why),
        };
        let host = request.headers().get("x-forward-host").into_iter().next();

        let mut last = Vec::new();
        for attempt in 1..=count {
            match fetch(&target, host.as_deref()) {
                Ok(reply) => last = reply,
                Err(failure) => {
                    let error = match failure {
                        Failure::Code(code) => format!("{code:?}"),
                        Failure::Other(message) => message,
                    };
                    let body = format!("attempt {attempt}: error: {error}");
                    return tern_http_guests::respond_text(out, 502, &body);
                }
            }
        }
        tern_http_guests::respond(out, 200, &[("content-type", "text/plain")], &last);
    }
}

/// The target and the number of attempts `request` asks for.
fn parse(request: &IncomingRequest) -> Result<(Target, u32), String> {
    let path_with_query = request.path_with_query().unwrap_or_default();
    if tern_http_guests::path(&path_with_query) != "/fetch" {
        return Err("expected GET /fetch?url=URL[&count=N]".into());
    }
    let url = tern_http_guests::query_param(&path_with_query, "url").ok_or("no url")?;
    let target = parse_url(&percent_decode(url)?)?;
    let count = match tern_http_guests::query_param(&path_with_query, "count") {
        None => 1,
        Some(n) => match n.parse() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("count must be a positive number, got {n:?}")),
        },
    };
    Ok((target, count))
}

/// Splits `http[s]://AUTHORITY[/PATH][?QUERY]` (any `#fragment` dropped);
/// `/PATH[?QUERY]` is relative.
fn parse_url(url: &str) -> Result<Target, String> {
    if url.starts_with('/') {
        return Ok(Target {
            scheme: None,
            authority: None,
            path_with_query: url.to_owned(),
        });
    }
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
    Ok(Target {
        scheme: Some(scheme),
        authority: Some(authority.to_owned()),
        path_with_query,
    })
}

/// `text` with each `%XX` replaced by its byte.
fn percent_decode(text: &str) -> Result<String, String> {
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

/// Sends one `GET` to `target`; the response as `STATUS BODY`.
fn fetch(target: &Target, host: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
    let headers = Fields::new();
    if let Some(host) = host {
        // The host may forbid setting `host`; then the request goes without.
        let _ = headers.append("host", host);
    }
    let request = OutgoingRequest::new(headers);
    let invalid = |what: &str| Failure::Other(format!("invalid {what}"));
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(target.scheme.as_ref())
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(target.authority.as_deref())
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| invalid("path"))?;
    // The body is never taken: the request goes with an empty one.

    let future = outgoing_handler::handle(request, None).map_err(Failure::Code)?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Failure::Code(code)),
        Some(Err(())) => return Err(Failure::Other("response taken twice".into())),
        None => return Err(Failure::Other("no response once ready".into())),
    };

    let mut reply = format!("{} ", response.status()).into_bytes();
    let body = response
        .consume()
        .map_err(|()| Failure::Other("response body taken twice".into()))?;
    let stream = body
        .stream()
        .map_err(|()| Failure::Other("response body stream taken twice".into()))?;
    loop {
        match stream.blocking_read(READ_SIZE) {
            Ok(chunk) => reply.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasi::http::types::http_error_code(&e) {
                    Some(code) => Failure::Code(code),
                    None => Failure::Other(format!("reading the body: {}", e.to_debug_string())),
                });
            }
        }
    }
    // The stream is a child of the body and must go first.
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(reply)
}

wasi::http::proxy::export!(Outbound);
