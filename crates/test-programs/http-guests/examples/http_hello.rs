//! Answers every request with `hello, world`: the smallest useful handler,
//! and the one the benchmarks measure.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        tern_http_guests::respond_text(out, 200, "hello, world\n");
    }
}

wasi::http::proxy::export!(Hello);
