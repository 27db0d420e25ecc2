//! Counts the requests its instance has handled, in a `static`, and answers
//! `count N`, N counting this request: state that lasts exactly as long as
//! the instance, so a reused instance counts on and a fresh one starts at 1.
//! With `?wait_ms=M` it waits M milliseconds in the host after counting and
//! before answering, so that requests can overlap in one instance (each
//! still answers the count it got on arrival); it first prints
//! `count N waiting` on stderr, so a test can tell it is waiting. With
//! `?fail` it counts, then fails the request without a response (an
//! error code), as a guest in a broken state would.
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

/// Requests this instance has seen.
static COUNT: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Guest for Counter {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let path = request.get_path_with_query().unwrap_or_default();
        if tern_p3_guests::query_has(&path, "fail") {
            return Err(ErrorCode::InternalError(Some(format!("failing request {n}"))));
        }
        let wait_ms = match tern_p3_guests::query_number(&path, "wait_ms", 0) {
            Ok(ms) => ms,
            Err(why) => return tern_p3_guests::respond_text(400, &why),
        };
        if wait_ms > 0 {
            eprintln!("count {n} waiting");
            tern_p3_guests::sleep_ms(wait_ms).await;
        }
        tern_p3_guests::respond_text(200, &format!("count {n}\n"))
    }
}

wasip3::http::service::export!(Counter);
