//! A URL shortener on Tern's key-value store:
//!
//! - `POST /links` with a URL as the body: 201, the short link as the body
//!   and in `location`;
//! - `GET /CODE`: 302 to the link, counting the visit;
//! - `GET /links/CODE`: the link and how often it was visited;
//! - `GET /`: how to use it.
//!
//! Links live in the `default` store as `link:CODE`, visit counts as
//! `visits:CODE`; codes are base62 of a counter, `next-id`. Short links start
//! with the configuration variable `base_url`.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tern:keyvalue/services",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::atomics;
use bindings::wasi::keyvalue::store::{self, Bucket};

/// The longest URL taken.
const MAX_URL: usize = 8 * 1024;

/// A response to send.
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            location: None,
            body: body.into(),
        }
    }
}

struct Shortener;

impl Guest for Shortener {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let reply = route(&request).unwrap_or_else(|e| Reply::text(500, format!("{e}\n")));
        send(out, reply);
    }
}

/// Answers `request`; `Err` for a failing store or configuration.
fn route(request: &IncomingRequest) -> Result<Reply, String> {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let path = path_with_query.split('?').next().unwrap_or_default();
    match (request.method(), path) {
        (Method::Get, "/") => Ok(Reply::text(200, usage(&base_url(request)?))),
        (Method::Post, "/links") => shorten(request),
        (Method::Get, path) => match path.strip_prefix("/links/") {
            Some(code) if is_code(code) => describe(code),
            Some(_) => Ok(Reply::text(404, "no such link\n")),
            None => match path.strip_prefix('/') {
                Some(code) if is_code(code) => redirect(code),
                _ => Ok(Reply::text(404, "no such link\n")),
            },
        },
        _ => Ok(Reply::text(405, "see GET / for what works\n")),
    }
}

/// `POST /links`: stores the URL in the body under a new code.
fn shorten(request: &IncomingRequest) -> Result<Reply, String> {
    let Some(body) = read_body(request, MAX_URL) else {
        return Ok(Reply::text(
            413,
            format!("a URL is at most {MAX_URL} bytes\n"),
        ));
    };
    let url = String::from_utf8_lossy(&body).trim().to_owned();
    let valid = (url.starts_with("http://") || url.starts_with("https://"))
        && url.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Ok(Reply::text(
            400,
            "the body must be a URL starting with http:// or https://, without spaces\n",
        ));
    }

    let bucket = open()?;
    let id = atomics::increment(&bucket, "next-id", 1).map_err(kv_error)?;
    let code = base62(id);
    bucket
        .set(&format!("link:{code}"), url.as_bytes())
        .map_err(kv_error)?;
    let link = format!("{}/{code}", base_url(request)?);
    Ok(Reply {
        status: 201,
        body: format!("{link}\n"),
        location: Some(link),
    })
}

/// `GET /CODE`: redirects to the link and counts the visit.
fn redirect(code: &str) -> Result<Reply, String> {
    let bucket = open()?;
    let Some(url) = link(&bucket, code)? else {
        return Ok(Reply::text(404, "no such link\n"));
    };
    atomics::increment(&bucket, &format!("visits:{code}"), 1).map_err(kv_error)?;
    Ok(Reply {
        status: 302,
        body: String::new(),
        location: Some(url),
    })
}

/// `GET /links/CODE`: the link and its visits.
fn describe(code: &str) -> Result<Reply, String> {
    let bucket = open()?;
    let Some(url) = link(&bucket, code)? else {
        return Ok(Reply::text(404, "no such link\n"));
    };
    // Adding 0 reads a counter whatever way the backend stores it.
    let visits = atomics::increment(&bucket, &format!("visits:{code}"), 0).map_err(kv_error)?;
    Ok(Reply::text(200, format!("{url} visits={visits}\n")))
}

fn open() -> Result<Bucket, String> {
    store::open("default").map_err(kv_error)
}

/// The URL stored for `code`, if any.
fn link(bucket: &Bucket, code: &str) -> Result<Option<String>, String> {
    let value = bucket.get(&format!("link:{code}")).map_err(kv_error)?;
    Ok(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

fn kv_error(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "key-value store: no such store".into(),
        store::Error::AccessDenied => "key-value store: access denied".into(),
        store::Error::Other(message) => format!("key-value store: {message}"),
    }
}

/// Where short links point: the `base_url` variable, else this request's
/// own authority.
fn base_url(request: &IncomingRequest) -> Result<String, String> {
    let configured = config::get("base_url").map_err(|e| match e {
        config::Error::Upstream(m) | config::Error::Io(m) => format!("configuration: {m}"),
    })?;
    Ok(match configured {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", request.authority().unwrap_or_default()),
    })
}

fn usage(base: &str) -> String {
    format!(
        "url-shortener: short links kept in a key-value store.\n\
         \n\
         curl -d https://example.com/ {base}/links   # shorten: answers {base}/CODE\n\
         curl -i {base}/CODE                         # 302 to the link\n\
         curl {base}/links/CODE                      # the link and its visits\n"
    )
}

/// Whether `code` could be one of ours.
fn is_code(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `n` in base62: digits, then lowercase, then uppercase letters.
fn base62(mut n: u64) -> String {
    const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut code = Vec::new();
    loop {
        code.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    code.reverse();
    String::from_utf8(code).expect("base62 digits are ASCII")
}

/// The request body, or `None` if it is longer than `limit`.
fn read_body(request: &IncomingRequest, limit: usize) -> Option<Vec<u8>> {
    let body = request.consume().expect("the body is taken once");
    let stream = body.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if bytes.len() + chunk.len() > limit => return None,
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                panic!("reading the request body: {}", e.to_debug_string())
            }
        }
    }
    // The stream is a child of the body and must go first.
    drop(stream);
    drop(IncomingBody::finish(body));
    Some(bytes)
}

/// Sends `reply` as a complete `text/plain` response.
fn send(out: ResponseOutparam, reply: Reply) {
    let headers = Fields::new();
    let length = reply.body.len().to_string();
    let mut fields = vec![("content-type", "text/plain"), ("content-length", &length)];
    if let Some(location) = &reply.location {
        fields.push(("location", location));
    }
    for (name, value) in fields {
        headers
            .append(name, value.as_bytes())
            .unwrap_or_else(|e| panic!("adding header {name}: {e:?}"));
    }
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(reply.status)
        .expect("a valid status code");
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the stream is taken once");
    for chunk in reply.body.as_bytes().chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .expect("the client went away");
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("the body is finished once");
}

wasi::http::proxy::export!(Shortener);
