//! Answers no response at all: `handle` returns the error
//! `internal-error("no response")`, which the host must turn into a
//! response of its own.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct NoResponse;

impl Guest for NoResponse {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        Err(ErrorCode::InternalError(Some("no response".into())))
    }
}

wasip3::http::service::export!(NoResponse);
