//! The HTTP side of a composed app: this component answers requests, the
//! JavaScript library behind `example:text/markup` does the text work.
//!
//! - `GET /render?text=...` or `POST /render` with the text as the body:
//!   the text, a small Markdown subset, as HTML; `422` and where it went
//!   wrong if the library refuses it;
//! - `GET /slug?text=...`: the text as a URL slug;
//! - `GET /`: how to use it.
//!
//! Built alone, the component imports `example:text/markup@0.1.0`;
//! `tern compose` plugs the library in, leaving only wasi imports.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "example:text/app",
    });
}

use bindings::example::text::markup;

/// The longest text taken, in a query or a body.
const MAX_TEXT: usize = 64 * 1024;

const USAGE: &str = "composed: a Rust HTTP component calling a JavaScript library.\n\
\n\
curl 'http://127.0.0.1:3000/render?text=%23+Hello+*world*'\n\
curl --data-binary @README.md http://127.0.0.1:3000/render\n\
curl 'http://127.0.0.1:3000/slug?text=Cr%C3%A8me+Br%C3%BBl%C3%A9e'\n";

/// A response to send.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn html(body: String) -> Self {
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }
}

struct App;

impl Guest for App {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        send(out, route(&request));
    }
}

fn route(request: &IncomingRequest) -> Reply {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query.as_str(), ""));
    let text = || query_param(query, "text");
    match (request.method(), path) {
        (Method::Get, "/") => Reply::text(200, USAGE),
        (Method::Get, "/render") => match text() {
            Some(text) if text.len() <= MAX_TEXT => render(&text),
            Some(_) => too_long(),
            None => Reply::text(400, "give the text as ?text=...\n"),
        },
        (Method::Post, "/render") => match read_body(request, MAX_TEXT) {
            Some(body) => match String::from_utf8(body) {
                Ok(text) => render(&text),
                Err(_) => Reply::text(400, "the body must be UTF-8\n"),
            },
            None => too_long(),
        },
        (Method::Get, "/slug") => match text() {
            Some(text) if text.len() <= MAX_TEXT => {
                Reply::text(200, format!("{}\n", markup::slugify(&text)))
            }
            Some(_) => too_long(),
            None => Reply::text(400, "give the text as ?text=...\n"),
        },
        (_, "/" | "/render" | "/slug") => Reply::text(405, "see GET / for what works\n"),
        _ => Reply::text(404, "see GET / for what works\n"),
    }
}

/// The library's HTML for `text`, or why it refused.
fn render(text: &str) -> Reply {
    match markup::render(text) {
        Ok(html) => Reply::html(html),
        Err(markup::RenderError { line, message }) => {
            Reply::text(422, format!("line {line}: {message}\n"))
        }
    }
}

fn too_long() -> Reply {
    Reply::text(413, format!("the text is at most {MAX_TEXT} bytes\n"))
}

/// The first value of `name` in an `application/x-www-form-urlencoded` query.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

/// `+` as a space and `%XX` as that byte; invalid UTF-8 becomes U+FFFD.
fn form_decode(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = match tail {
            [hi, lo, ..] if b == b'%' => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                bytes.push(byte);
                rest = &tail[2..];
            }
            None => {
                bytes.push(if b == b'+' { b' ' } else { b });
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
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

/// Sends `reply` as a complete response.
fn send(out: ResponseOutparam, reply: Reply) {
    let headers = Fields::new();
    let length = reply.body.len().to_string();
    for (name, value) in [
        ("content-type", reply.content_type),
        ("content-length", length.as_str()),
    ] {
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

wasi::http::proxy::export!(App);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(form_decode("a+b%20c%2B%C3%A8"), "a b c+è");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%+1%4"), "%zz% 1%4");
        assert_eq!(
            query_param("x=1&text=%23+Hi", "text").as_deref(),
            Some("# Hi")
        );
        assert_eq!(query_param("text", "text").as_deref(), Some(""));
        assert_eq!(query_param("texts=1", "text"), None);
    }
}
