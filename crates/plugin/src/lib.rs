//! Embedding Tern: run untrusted WebAssembly plugins in-process, sandboxed,
//! bounded and hot-swappable.
//!
//! A [`PluginHost`] (one per process: one engine with the pooling
//! allocator, the sealed compile cache, the timeout ticker) loads
//! [`Plugin`]s from files or bytes with their [`Grants`] (nothing by
//! default) and [`PluginLimits`] (bounded by default). Three shapes of
//! plugin are called the same way:
//!
//! - Extism plugins (core modules importing `extism:host/env`), built with
//!   the published Extism PDKs, run unchanged: bytes in, bytes out;
//! - components, with typed values ([`Plugin::call_values`]) or bytes;
//! - plain core modules, with numbers ([`Plugin::call_numbers`]).
//!
//! Every call returns its output and a [`Report`]: instructions run, peak
//! memory, wall time, input, output and log bytes, and the limit that
//! stopped it if one did. A call runs on a fresh instance unless it is
//! made through a [`Session`]. [`Plugin::swap`] replaces the code while
//! calls are in flight.
//!
//! ```no_run
//! use tern_plugin::{Grants, HostFunctions, PluginConfig, PluginHost, PluginLimits};
//! let host = PluginHost::new()?;
//! let config = PluginConfig {
//!     grants: Grants {
//!         config: [("greeting".into(), "Hello".into())].into(),
//!         ..Grants::default()
//!     },
//!     limits: PluginLimits {
//!         fuel: Some(10_000_000),
//!         ..PluginLimits::default()
//!     },
//!     functions: HostFunctions::new(),
//!     log_level: None,
//! };
//! let plugin = host.load("greet.wasm", config)?;
//! let (output, report) = plugin.call("greet", b"world")?;
//! println!("{} ({report})", String::from_utf8_lossy(&output));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod code;
mod config;
mod ctx;
mod extism;
mod host;
mod host_fn;
mod instance;
mod plugin;
mod report;

pub use code::PluginKind;
pub use config::{Grants, PluginConfig, PluginLimits};
pub use ctx::PluginCtx;
pub use host::{CacheDir, PluginHost, PluginHostBuilder};
pub use host_fn::{BoxFuture, HostFunctions};
pub use plugin::{Plugin, Session};
pub use report::{CallError, Limit, LogLevel, LogLine, Report};
pub use tern_runtime::{ByteSize, DirGrant};
pub use wasmtime::component::Val as ComponentVal;
pub use wasmtime::{Error, Result, Val};
