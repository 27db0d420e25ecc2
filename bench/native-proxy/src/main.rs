//! `native-proxy LISTEN UPSTREAM`: forwards every request to UPSTREAM
//! (`HOST:PORT`) over kept-alive HTTP/1.1 connections, as a plain hyper
//! reverse proxy would: the floor Tern's proxy is measured against in
//! `bench/proxy`. No limits, no timeouts, no logging, no forwarding fields,
//! no hop-by-hop handling: it is for the benchmark's hello and nothing else.

use std::cell::RefCell;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

thread_local! {
    /// Idle upstream connections: taken without a lock, one thread only.
    static IDLE: RefCell<Vec<SendRequest<Body>>> = const { RefCell::new(Vec::new()) };
}

async fn connection(upstream: &str) -> std::io::Result<SendRequest<Body>> {
    let idle = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|s| !s.is_closed());
        let ready = idle.iter().rposition(|s| s.is_ready())?;
        Some(idle.swap_remove(ready))
    });
    if let Some(sender) = idle {
        return Ok(sender);
    }
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

async fn forward(req: Request<Incoming>, upstream: &str) -> Result<Response<Body>, std::io::Error> {
    let (mut parts, body) = req.into_parts();
    if let Some(path) = parts.uri.path_and_query() {
        parts.uri = path.as_str().parse().map_err(std::io::Error::other)?;
    }
    let mut sender = connection(upstream).await?;
    let response = sender
        .send_request(Request::from_parts(parts, body.boxed_unsync()))
        .await
        .map_err(std::io::Error::other)?;
    IDLE.with(|idle| idle.borrow_mut().push(sender));
    Ok(response.map(BodyExt::boxed_unsync))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let upstream: &'static str = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .leak();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::task::spawn_local(async move {
                let service = service_fn(|req| forward(req, upstream));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
