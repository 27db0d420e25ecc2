//! Says `waiting` on stderr, then waits `?ms=M` milliseconds (60000 by
//! default) in the host (`monotonic-clock.wait-for`) before answering
//! `waited`: a guest blocked on a host future rather than running code.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

const DEFAULT_MS: u64 = 60_000;

struct Wait;

impl Guest for Wait {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let ms = match tern_p3_guests::query_number(&path, "ms", DEFAULT_MS) {
            Ok(ms) => ms,
            Err(why) => return tern_p3_guests::respond_text(400, &why),
        };
        tern_p3_guests::eprint("waiting\n").await;
        tern_p3_guests::sleep_ms(ms).await;
        tern_p3_guests::respond_text(200, "waited\n")
    }
}

wasip3::http::service::export!(Wait);
