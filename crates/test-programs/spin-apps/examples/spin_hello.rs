//! The Spin Rust SDK's hello world: answers every request with a greeting
//! and the path it was asked for, and hands back the `spin-*` request
//! headers Spin sets (as `x-spin-*` response headers) for the tests to see,
//! among them a `spin-path-match-NAME` for each `:name` segment of the
//! route, whose values the body lists too.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn hello_world(req: Request) -> impl IntoResponse {
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "text/plain");
    for name in [
        "spin-full-url",
        "spin-path-info",
        "spin-matched-route",
        "spin-component-route",
        "spin-client-addr",
    ] {
        if let Some(value) = req.headers().get(name) {
            response = response.header(format!("x-{name}"), value);
        }
    }
    let mut body = format!("Hello, Spin! You asked for {}\n", req.uri().path());
    for (name, value) in req.headers() {
        if let Some(param) = name.as_str().strip_prefix("spin-path-match-") {
            response = response.header(format!("x-{name}"), value);
            let value = value.to_str().unwrap_or("(not text)");
            body.push_str(&format!("{param} = {value}\n"));
        }
    }
    response.body(body).unwrap()
}
