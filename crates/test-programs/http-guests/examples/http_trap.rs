//! Panics before responding: Rust turns the panic into an `unreachable` trap.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

impl Guest for Trap {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        panic!("guest panicked on purpose");
    }
}

wasi::http::proxy::export!(Trap);
