//! Says it is spinning on stderr, then loops forever without calling the
//! host: only an interrupt (epoch or fuel) can stop it.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Spin;

impl Guest for Spin {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        eprintln!("spinning");
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

wasi::http::proxy::export!(Spin);
