//! Tern's HTTP server: serves an app described by a manifest, one fresh
//! sandboxed instance per request.
//!
//! [`App::load`] compiles and pre-instantiates every component once;
//! [`Server::bind`] and [`Server::run`] accept connections on one
//! single-threaded runtime per worker thread (HTTP/1.1 and HTTP/2, in the
//! clear or over TLS with a [`TlsConfig`]), route each
//! request to its component (`wasi-http` or `wagi` executor) and hold it to
//! the limits of [`ServeConfig`]. The server never prints: it reports
//! through an [`EventSink`].
//!
//! ```no_run
//! # fn example(sink: std::sync::Arc<dyn tern_http::EventSink>) -> Result<(), Box<dyn std::error::Error>> {
//! let manifest = tern_manifest::load("tern.toml".as_ref())?;
//! let config = tern_http::ServeConfig::new("127.0.0.1:0".parse()?);
//! let app = tern_http::App::load(&manifest, &config, &tern_runtime::Loader::default())?;
//! let server = tern_http::Server::bind(app, config, sink)?;
//! eprintln!("listening on http://{}", server.local_addr());
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(server.run(2, std::future::pending()))?;
//! # Ok(()) }
//! ```
//!
//! This crate and `runtime` are the only ones that import wasmtime.

mod admin;
mod app;
mod body;
mod cgi;
mod config;
mod download;
mod engine;
mod events;
mod executor;
mod guest_output;
mod h2;
mod idle;
mod instance;
mod io;
mod models;
mod outbound;
mod proxy;
mod redis_trigger;
mod relative;
mod response;
mod router;
mod server;
mod static_response;
mod stats;
mod tls;
mod wagi;
mod warm;
mod wasi_http;
mod wasi_http3;

pub use admin::serve_admin;
pub use app::{App, CompileNotes, LoadError, Pools, RouteInfo, Sharing};
pub use config::{RequestLimits, ServeConfig};
pub use download::{
    DOWNLOAD_CONNECT_TIMEOUT, DOWNLOAD_TIMEOUT, DownloadCache, MAX_DOWNLOAD_SIZE, MAX_REDIRECTS,
    fetch_sources,
};
pub use events::{AccessRecord, EventSink, GuestLine, RequestId};
pub use outbound::{fetch_checked, run_outbound};
pub use redis_trigger::{
    Triggered, allowed_server, run_redis_triggers, run_triggers, trigger_server,
};
pub use response::REQUEST_ID_HEADER;
pub use server::{AppSlot, Found, Server, Shutdown, Sites};
pub use stats::{AppStats, InFlight, LATENCY_BUCKETS, Latency};
pub use tern_proxy::MetricFamilies;
pub use tls::{TlsConfig, TlsError, TlsSlot};
pub use wasi_http::{CLIENT_ADDR_HEADER, PATH_INFO_HEADER, ROUTE_HEADER};
