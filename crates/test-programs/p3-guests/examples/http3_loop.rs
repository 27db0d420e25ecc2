//! Says `spinning` on stderr, then loops forever without calling the host
//! or yielding to it: only an interrupt (the host's deadline) can stop it.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Loop;

impl Guest for Loop {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        tern_p3_guests::eprint("spinning\n").await;
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

wasip3::http::service::export!(Loop);
