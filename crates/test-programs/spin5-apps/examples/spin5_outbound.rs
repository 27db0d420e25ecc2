//! Outbound HTTP with the Spin Rust SDK 5, as its documentation shows it:
//! `GET /?url=URL` sends a GET to URL with `spin_sdk::http::send` and
//! answers the upstream's status and body as `STATUS BODY`; a request the
//! host refuses answers 502 with the error. A relative URL (`/hello`) is
//! a request to the app itself.

use spin_sdk::http::{IntoResponse, Request, Response, send};
use spin_sdk::http_component;

#[http_component]
async fn handle_outbound(req: Request) -> anyhow::Result<impl IntoResponse> {
    let url = req.query().strip_prefix("url=").unwrap_or("").to_owned();
    let upstream: Response = match send(Request::get(url).build()).await {
        Ok(response) => response,
        Err(e) => return Ok(Response::new(502, format!("refused: {e}"))),
    };
    let body = String::from_utf8_lossy(upstream.body()).into_owned();
    Ok(Response::new(200, format!("{} {body}", upstream.status())))
}
