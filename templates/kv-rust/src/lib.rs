//! A visit counter on Tern's key-value store:
//!
//! - `GET /` counts the visit and says how many there have been;
//! - `GET /count` says how many without counting;
//! - `DELETE /count` starts again from zero;
//! - `PUT /greeting` sets what `GET /` says before the count (the request
//!   body; "Hello!" until then).
//!
//! Both live in the store `default`, under the keys `visits` and `greeting`.
//! Tern keeps them in `.tern/kv/default.sqlite` beside `tern.toml` unless a
//! runtime config says otherwise (Redis, say), and
//! `tern kv get --store default visits` reads the count from outside.

use std::error::Error;
use std::io::{Read as _, Write as _};

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "tern:keyvalue/services",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

const VISITS: &str = "visits";
const GREETING: &str = "greeting";

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = match route(&request) {
            Ok(reply) => reply,
            Err(error) => (500, format!("key-value store error: {error:?}\n")),
        };
        if let Err(error) = respond(out, status, body.as_bytes()) {
            // Tern answers 500 if no status went out, else cuts the response off.
            eprintln!("sending the response failed: {error}");
        }
    }
}

fn route(request: &IncomingRequest) -> Result<(u16, String), store::Error> {
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let bucket = store::open("default")?;
    Ok(match (request.method(), path) {
        (Method::Get, "/") => {
            let visits = atomics::increment(&bucket, VISITS, 1)?;
            let greeting = match bucket.get(GREETING)? {
                Some(text) => String::from_utf8_lossy(&text).into_owned(),
                None => "Hello!".to_owned(),
            };
            (
                200,
                format!("{greeting} This page has been visited {visits} times.\n"),
            )
        }
        (Method::Get, "/count") => {
            let visits = bucket
                .get(VISITS)?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_else(|| "0".to_owned());
            (200, format!("{visits}\n"))
        }
        (Method::Delete, "/count") => {
            bucket.delete(VISITS)?;
            (200, "0\n".to_owned())
        }
        (Method::Put, "/greeting") => match read_body(request) {
            Ok(greeting) => {
                bucket.set(GREETING, &greeting)?;
                (200, "saved\n".to_owned())
            }
            Err(error) => (400, format!("reading the body failed: {error}\n")),
        },
        (_, "/" | "/count" | "/greeting") => (405, "method not allowed\n".to_owned()),
        _ => (404, "not found; try GET /\n".to_owned()),
    })
}

/// Reads the whole request body.
fn read_body(request: &IncomingRequest) -> std::io::Result<Vec<u8>> {
    let body = request.consume().expect("the body is taken once");
    let mut stream = body.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Sends a plain-text response of any size.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) -> Result<(), Box<dyn Error>> {
    let headers = Fields::from_list(&[(
        "content-type".to_owned(),
        b"text/plain; charset=utf-8".to_vec(),
    )])?;
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = outgoing.write().expect("the stream is taken once");
    // `write_all` writes as much as the host takes at a time and waits for
    // room in between (`blocking_write_and_flush` takes at most 4096 bytes).
    stream.write_all(body)?;
    stream.blocking_flush()?;
    drop(stream);
    OutgoingBody::finish(outgoing, None)?;
    Ok(())
}

wasi::http::proxy::export!(Component);
