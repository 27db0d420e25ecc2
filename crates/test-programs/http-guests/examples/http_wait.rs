//! Says on stderr that it is waiting, then reads the request body to its
//! end and only then answers `read N bytes`: a request that stays in flight
//! exactly until the client ends its body, so that a test can act while it
//! runs (a signal, a reload) without guessing how long that takes.
use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Wait;

impl Guest for Wait {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        eprintln!("waiting for the body");
        std::io::stderr().flush().unwrap();
        let mut total = 0usize;
        tern_http_guests::for_each_body_chunk(&request, |chunk| total += chunk.len());
        tern_http_guests::respond_text(out, 200, &format!("read {total} bytes"));
    }
}

wasi::http::proxy::export!(Wait);
