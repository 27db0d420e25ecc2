//! An HTTP handler: Tern calls `handle` once per request, each time in a
//! fresh sandboxed instance.

use std::error::Error;
use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match request.method() {
            Method::Get => (200, format!("Hello from Rust!\nYou asked for {path}\n")),
            _ => (405, "Only GET is supported\n".to_owned()),
        };
        if let Err(error) = respond(out, status, body.as_bytes()) {
            // Tern answers 500 if no status went out, else cuts the response off.
            eprintln!("sending the response failed: {error}");
        }
    }
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
