//! The Spin Rust SDK's hello world: answers every request with a greeting
//! and the path it was asked for.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn hello_world(req: Request) -> impl IntoResponse {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("Hello, Spin! You asked for {}\n", req.uri().path()))
        .unwrap()
}
