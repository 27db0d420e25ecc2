//! The Spin Rust SDK 5's hello world: answers every request with a greeting
//! and the path it was asked for, and hands back the `spin-*` request
//! headers Spin sets (as `x-spin-*` response headers) for the tests to see,
//! among them a `spin-path-match-NAME` for each `:name` segment of the
//! route, whose values the body lists too.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle_hello(req: Request) -> anyhow::Result<impl IntoResponse> {
    let mut response = Response::builder();
    response.status(200).header("content-type", "text/plain");
    for name in [
        "spin-full-url",
        "spin-path-info",
        "spin-matched-route",
        "spin-component-route",
        "spin-client-addr",
    ] {
        if let Some(value) = req.header(name).and_then(|v| v.as_str()) {
            response.header(format!("x-{name}"), value);
        }
    }
    let mut body = format!("Hello, Spin 5! You asked for {}\n", req.path());
    let mut params: Vec<(&str, &str)> = req
        .headers()
        .filter_map(|(name, value)| {
            let param = name.strip_prefix("spin-path-match-")?;
            Some((param, value.as_str().unwrap_or("(not text)")))
        })
        .collect();
    // Headers come out of a hash map; sort them so the body is stable.
    params.sort();
    for (param, value) in params {
        response.header(format!("x-spin-path-match-{param}"), value);
        body.push_str(&format!("{param} = {value}\n"));
    }
    Ok(response.body(body).build())
}
