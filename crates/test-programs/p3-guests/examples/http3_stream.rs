//! Answers at once with a streamed body that it writes a line at a time:
//! `?chunks=N` lines (10 by default), `chunk 1` to `chunk N`, with
//! `?delay_ms=M` milliseconds (100 by default) between two lines, waited
//! in the host (`monotonic-clock.wait-for`). With `?sse=1` the body is
//! `text/event-stream` and each line an event, `data: chunk I` and a blank
//! line; else it is `text/plain`. With `?leak=1` it keeps the body's writer
//! open (never dropped) after the last line. Bad numbers answer 400.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Stream;

impl Guest for Stream {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let numbers = (
            tern_p3_guests::query_number(&path, "chunks", 10),
            tern_p3_guests::query_number(&path, "delay_ms", 100),
        );
        let (chunks, delay_ms) = match numbers {
            (Ok(chunks), Ok(delay_ms)) => (chunks, delay_ms),
            (Err(why), _) | (_, Err(why)) => return tern_p3_guests::respond_text(400, &why),
        };
        let sse = tern_p3_guests::query_param(&path, "sse") == Some("1");
        let leak = tern_p3_guests::query_param(&path, "leak") == Some("1");
        let content_type = if sse {
            "text/event-stream"
        } else {
            "text/plain"
        };
        let (response, mut body) =
            tern_p3_guests::streaming_response(200, &[("content-type", content_type)]);

        // Runs once `handle` has returned the head: the client sees each
        // line as it is written.
        wit_bindgen::spawn(async move {
            for i in 1..=chunks {
                if i > 1 {
                    tern_p3_guests::sleep_ms(delay_ms).await;
                }
                let line = if sse {
                    format!("data: chunk {i}\n\n")
                } else {
                    format!("chunk {i}\n")
                };
                if !body.write_all(line.into_bytes()).await.is_empty() {
                    // The client went away.
                    return;
                }
            }
            if leak {
                std::mem::forget(body);
            }
        });
        Ok(response)
    }
}

wasip3::http::service::export!(Stream);
