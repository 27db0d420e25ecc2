//! `tern serve --admin ADDR`: the operator's endpoint, apart from the app's
//! listener. `GET /metrics` answers the app's request figures and the
//! metrics its proxy-wasm filters define, in Prometheus' text format.

use std::convert::Infallible;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tern_proxy::MetricFamilies;

use crate::server::AppSlot;

/// Serves the admin endpoint on `listener` until the runtime stops.
pub async fn serve_admin(listener: tokio::net::TcpListener, slot: AppSlot) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let slot = slot.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let slot = slot.clone();
                async move { Ok::<_, Infallible>(answer(&req, &slot)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, slot: &AppSlot) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        let mut response = Response::new(Full::from("not found; try GET /metrics\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let app = slot.current();
    let stats = app.stats();
    let label = app.name().replace(['"', '\\', '\n'], "_");
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE tern_app_requests_total counter");
    for (status, count) in stats.by_status() {
        let _ = writeln!(
            out,
            "tern_app_requests_total{{app=\"{label}\",status=\"{status}\"}} {count}"
        );
    }
    let mut families = MetricFamilies::default();
    app.filter_metrics(&mut families);
    families.render(&mut out);
    let mut response = Response::new(Full::from(out));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
