//! Says on stderr that it started, sleeps `?ms=N` milliseconds (500 by
//! default), then answers `done`: a request that is still running when the
//! test looks.
use std::io::Write as _;
use std::time::Duration;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const DEFAULT_MS: u64 = 500;

struct Slow;

impl Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let ms = tern_http_guests::query_param(&path, "ms")
            .map(|ms| ms.parse().expect("`ms` is a number of milliseconds"))
            .unwrap_or(DEFAULT_MS);
        eprintln!("slow request started");
        std::io::stderr().flush().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        tern_http_guests::respond_text(out, 200, "done");
    }
}

wasi::http::proxy::export!(Slow);
