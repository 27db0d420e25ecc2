//! Tern's proxy-wasm host: filters written against the proxy-wasm ABI
//! 0.2.1 (as Envoy runs them), each bounded like any Tern guest.
//!
//! A [`Filter`] is loaded once per version: compiled (through the compile
//! cache), linked, and started on a trial VM, so a version that cannot
//! start never serves. Requests get their VM from the filter: by default
//! one per worker thread, shared by the requests on that thread in turn
//! (Envoy's model), or a fresh one per request ([`Isolation::Request`]).
//! A [`Chain`] carries one HTTP stream through its filters in order and
//! tells the host what to do next ([`Step`]); the host (`tern-http`) does
//! the I/O: forwarding to the upstream, and making the `dispatch_http_call`s
//! filters ask for (a root context's through its [`CallDispatcher`]).
//!
//! Bounds: every callback runs under a wall-clock budget (epoch
//! interruption); every VM has a memory cap; every guest pointer and size
//! is checked; a VM that fails is dropped and rebuilt, up to three times in
//! a row and then once a second per worker; shared data, queues, metrics
//! and per-stream state are bounded. A filter reaches no file, no
//! environment and no network but the upstreams declared for it.

mod abi;
mod chain;
mod config;
mod engine;
mod filter;
mod host;
mod space;
mod stream;
mod vm;
mod wasi;

pub use chain::{Chain, Step};
pub use config::{CallDispatcher, FailurePolicy, FilterConfig, FilterLog, Isolation, LogLevel};
pub use engine::engine;
pub use filter::Filter;
pub use space::{FilterSpace, MetricFamilies};
pub use stream::{CallResponse, Headers, HttpCall, LocalResponse, StreamInfo};
pub use vm::FilterVm;
