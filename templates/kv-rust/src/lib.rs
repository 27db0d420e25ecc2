//! A visit counter on Tern's key-value store:
//!
//! - `GET /` counts the visit and says how many there have been;
//! - `GET /count` says how many without counting;
//! - `DELETE /count` starts again from zero.
//!
//! The count lives in the store `default` under the key `visits`. Tern keeps
//! it in `.tern/kv/default.sqlite` beside `tern.toml` unless a runtime config
//! says otherwise (Redis, say), and `tern kv get --store default visits`
//! reads it from outside.

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

const KEY: &str = "visits";

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let (status, body) = match count(&request.method(), path) {
            Ok(reply) => reply,
            Err(error) => (500, format!("key-value store error: {error:?}\n")),
        };
        respond(out, status, &body);
    }
}

fn count(method: &Method, path: &str) -> Result<(u16, String), store::Error> {
    let bucket = store::open("default")?;
    Ok(match (method, path) {
        (Method::Get, "/") => {
            let visits = atomics::increment(&bucket, KEY, 1)?;
            (200, format!("Hello! This page has been visited {visits} times.\n"))
        }
        (Method::Get, "/count") => {
            let visits = bucket
                .get(KEY)?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_else(|| "0".to_owned());
            (200, format!("{visits}\n"))
        }
        (Method::Delete, "/count") => {
            bucket.delete(KEY)?;
            (200, "0\n".to_owned())
        }
        (_, "/" | "/count") => (405, "method not allowed\n".to_owned()),
        _ => (404, "not found; try GET /\n".to_owned()),
    })
}

/// Sends a plain-text response.
fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[(
        "content-type".to_owned(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream is taken once");
    let _ = stream.blocking_write_and_flush(body.as_bytes());
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

wasi::http::proxy::export!(Component);
