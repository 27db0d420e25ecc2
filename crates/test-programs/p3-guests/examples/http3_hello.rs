//! Answers every request with `hello from a wasi 0.3 handler`, as
//! `text/plain`: the smallest `wasi:http/handler@0.3.0` component.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Hello;

impl Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        tern_p3_guests::respond_text(200, "hello from a wasi 0.3 handler\n")
    }
}

wasip3::http::service::export!(Hello);
