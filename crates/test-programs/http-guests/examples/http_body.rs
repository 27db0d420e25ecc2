//! Reads the request body to the end and says how long it was, without
//! holding on to it. With `?lenient` it reads as careless code does, taking
//! any error as the end of the body.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Body;

impl Guest for Body {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let mut total = 0usize;
        if tern_http_guests::query_has(&path, "lenient") {
            let body = request.consume().expect("consuming the request body");
            let stream = body.stream().expect("opening the request body stream");
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                total += chunk.len();
            }
        } else {
            tern_http_guests::for_each_body_chunk(&request, |chunk| total += chunk.len());
        }
        tern_http_guests::respond_text(out, 200, &format!("read {total} bytes"));
    }
}

wasi::http::proxy::export!(Body);
