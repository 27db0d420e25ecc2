//! Reads the request body to the end and says how long it was, without
//! holding on to it.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Body;

impl Guest for Body {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mut total = 0usize;
        tern_http_guests::for_each_body_chunk(&request, |chunk| total += chunk.len());
        tern_http_guests::respond_text(out, 200, &format!("read {total} bytes"));
    }
}

wasi::http::proxy::export!(Body);
