//! Greets whoever the path names: `GET /hello/Ada` answers `hi, Ada`. The
//! greeting comes from the manifest's `environment`, the motto from a file
//! the manifest mounts read-only.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Greeter;

impl Guest for Greeter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // Tern tells the guest which part of the path its route left over.
        let rest = request
            .headers()
            .get(&"tern-path-info".to_string())
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let name = rest.trim_matches('/');
        let name = if name.is_empty() { "world" } else { name };
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
        let motto = std::fs::read_to_string("/static/motto.txt").unwrap_or_default();
        let body = format!("{greeting}, {name}\n{motto}");

        let headers = Fields::new();
        let _ = headers.set(&"content-type".to_string(), &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = outgoing.write().expect("stream is taken once");
        for chunk in body.as_bytes().chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("client went away");
        }
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("body finished once");
    }
}

wasi::http::proxy::export!(Greeter);
