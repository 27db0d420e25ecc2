//! Describes the request back to the caller, one fact per line: method, path
//! with query, headers (sorted), environment (sorted), the contents of the
//! file named by `?file=PATH` if asked, then the body as received. With
//! `?status=N` it answers only an empty body with status N and an
//! `x-request-id` of its own choosing, which the host must not pass on.
//! With `?url` it answers only the request's URL as the guest sees it:
//! scheme, authority, path with query.
use std::fmt::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam, Scheme};

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(status) = tern_http_guests::query_param(&path, "status") {
            let status = status.parse().expect("a status code");
            let headers = [("x-request-id", "chosen-by-the-guest")];
            tern_http_guests::respond(out, status, &headers, b"");
            return;
        }
        if tern_http_guests::query_has(&path, "url") {
            let scheme = match request.scheme() {
                Some(Scheme::Http) => "http".to_string(),
                Some(Scheme::Https) => "https".to_string(),
                Some(Scheme::Other(other)) => other,
                None => "-".to_string(),
            };
            let authority = request.authority().unwrap_or_default();
            let url = format!("{scheme}://{authority}{path}\n");
            tern_http_guests::respond_text(out, 200, &url);
            return;
        }
        let mut text = String::new();
        writeln!(
            text,
            "method: {}",
            tern_http_guests::method_name(&request.method())
        )
        .unwrap();
        writeln!(text, "path: {path}").unwrap();

        let mut headers = request.headers().entries();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in headers {
            writeln!(text, "header: {name}: {}", String::from_utf8_lossy(&value)).unwrap();
        }

        let mut vars: Vec<_> = std::env::vars().collect();
        vars.sort();
        for (key, value) in vars {
            writeln!(text, "env: {key}={value}").unwrap();
        }

        if let Some(file) = tern_http_guests::query_param(&path, "file") {
            match std::fs::read_to_string(file) {
                Ok(contents) => writeln!(text, "file: {}", contents.trim()).unwrap(),
                Err(e) => writeln!(text, "file error: {e}").unwrap(),
            }
        }

        let mut body = text.into_bytes();
        body.extend_from_slice(b"body: ");
        body.extend_from_slice(&tern_http_guests::read_body(&request));
        tern_http_guests::respond(out, 200, &[("content-type", "text/plain")], &body);
    }
}

wasi::http::proxy::export!(Echo);
