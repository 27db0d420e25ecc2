//! Reads the request body to its end, one chunk (at most 64 KiB) at a time,
//! keeping none of it, and answers `received B bytes` with the number of
//! chunks in `x-chunks`. With `?slow_ms=M` it waits M milliseconds after
//! each chunk, so that a fast client meets backpressure. A body that ends
//! in an error (say, the client gave up) is answered with that error.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Upload;

impl Guest for Upload {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let slow_ms = match tern_p3_guests::query_number(&path, "slow_ms", 0) {
            Ok(ms) => ms,
            Err(why) => return tern_p3_guests::respond_text(400, &why),
        };
        let (mut body, trailers) = tern_p3_guests::consume_body(request);
        let (mut bytes, mut chunks) = (0u64, 0u64);
        while let Some(chunk) = tern_p3_guests::next_chunk(&mut body).await {
            bytes += chunk.len() as u64;
            chunks += 1;
            drop(chunk);
            if slow_ms > 0 {
                tern_p3_guests::sleep_ms(slow_ms).await;
            }
        }
        trailers.await?;
        let chunks = chunks.to_string();
        tern_p3_guests::respond(
            200,
            &[
                ("content-type", "text/plain"),
                ("x-chunks", chunks.as_str()),
            ],
            format!("received {bytes} bytes\n"),
        )
    }
}

wasip3::http::service::export!(Upload);
