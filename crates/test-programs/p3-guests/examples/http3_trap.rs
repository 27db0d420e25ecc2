//! Panics while handling the request, before any response: Rust turns the
//! panic into an `unreachable` trap.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Trap;

impl Guest for Trap {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        panic!("guest panicked on purpose");
    }
}

wasip3::http::service::export!(Trap);
