//! `GET /?url=URL` sends `GET URL` (the query value percent-decoded)
//! through `wasi:http/client.send` and answers 200 `upstream STATUS: BODY`
//! with the upstream response's status and body. A failure answers 502
//! `error: ERROR`, ERROR being the `Debug` of wasi:http's `ErrorCode` (e.g.
//! `ErrorCode::HttpRequestDenied`) or, for a malformed URL, a message. A
//! request without `url` answers 400.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

struct Outbound;

impl Guest for Outbound {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let Some(url) = tern_p3_guests::query_param(&path, "url") else {
            return tern_p3_guests::respond_text(400, "expected ?url=URL");
        };
        let url = match tern_p3_guests::percent_decode(url) {
            Ok(url) => url,
            Err(why) => return tern_p3_guests::respond_text(400, &why),
        };
        match tern_p3_guests::get(&url).await {
            Ok((status, body)) => {
                let mut reply = format!("upstream {status}: ").into_bytes();
                reply.extend_from_slice(&body);
                tern_p3_guests::respond(200, &[("content-type", "text/plain")], reply)
            }
            Err(failure) => tern_p3_guests::respond_text(502, &format!("error: {failure}")),
        }
    }
}

wasip3::http::service::export!(Outbound);
