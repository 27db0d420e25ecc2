//! Outbound HTTP as Spin's documentation shows it: `GET /?url=URL` sends a
//! GET to URL with `spin_sdk::http::send` and answers the upstream's status
//! and body as `STATUS BODY`; a request the host refuses answers 502 with
//! the error.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{EmptyBody, IntoResponse, Request, Response, send};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let url = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("url="))
        .unwrap_or("")
        .to_string();
    let outgoing = Request::get(url).body(EmptyBody::new())?;
    let upstream: Response = match send(outgoing).await {
        Ok(response) => response,
        Err(e) => return Ok(text(502, format!("refused: {e}"))),
    };
    let status = upstream.status().as_u16();
    let body = upstream.into_body().bytes().await?;
    Ok(text(200, format!("{status} {}", String::from_utf8_lossy(&body))))
}

fn text(status: u16, body: String) -> Response<String> {
    Response::builder().status(status).body(body).unwrap()
}
