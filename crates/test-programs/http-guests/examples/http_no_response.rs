//! Returns without ever setting the response: the outparam is dropped unset.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct NoResponse;

impl Guest for NoResponse {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {}
}

wasi::http::proxy::export!(NoResponse);
