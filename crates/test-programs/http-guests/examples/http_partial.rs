//! Sends the head and a first chunk, with no `content-length`, then fails:
//! `/partial/trap` panics once the request body has ended (so a client can
//! read the head and the chunk first), and `/partial/spin` loops forever.
//! `/partial/head` sets the head and panics before writing any of the body.
//! `/partial/leak` returns without ending the body: it keeps the body and
//! its stream (never dropped, never finished). `/partial/abort` drops the
//! body without finishing it, which aborts it.
//! Any other path ends the body normally, after the one chunk.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Partial;

impl Guest for Partial {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if tern_http_guests::path(&path) == "/partial/head" {
            let _kept = tern_http_guests::start_response(out, 200, &[], None);
            panic!("guest panicked right after setting the head");
        }
        let (body, stream) =
            tern_http_guests::start_response(out, 200, &[("content-type", "text/plain")], None);
        tern_http_guests::write_all(&stream, b"partial\n");
        match tern_http_guests::path(&path) {
            "/partial/trap" => {
                tern_http_guests::read_body(&request);
                panic!("guest panicked after sending part of the body")
            }
            "/partial/leak" => std::mem::forget((body, stream)),
            "/partial/abort" => drop((stream, body)),
            "/partial/spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            _ => tern_http_guests::finish(body, stream),
        }
    }
}

wasi::http::proxy::export!(Partial);
