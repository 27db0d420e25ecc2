//! Tern's layer over wasmtime: the engine and its configuration, the
//! capabilities a guest is granted, the limits it runs under, the sealed
//! compile cache, and running a WASI program to completion (or calling one
//! of its exported functions, for `--invoke`).
//!
//! This crate is one of the two that import wasmtime (the other is `http`);
//! the CLI talks to wasmtime only through it.
//!
//! ```no_run
//! use tern_runtime::{Capabilities, Limits, Outcome, RunConfig};
//! let limits = Limits::default();
//! let engine = tern_runtime::engine_for(&limits)?;
//! let loaded = tern_runtime::Loader::default().load(&engine, "hello.wasm".as_ref())?;
//! let argv = vec!["hello.wasm".to_string()];
//! let services = tern_runtime::Services::default();
//! let config = RunConfig { argv: &argv, capabilities: &Capabilities::default(), limits: &limits, services: &services, outbound: None };
//! let outcome = tern_runtime::run_command(&engine, &loaded.program, config)?;
//! assert_eq!(outcome, Outcome::Exited(0));
//! # Ok::<(), tern_runtime::Error>(())
//! ```

mod artifact;
mod cache;
mod capabilities;
mod compiler;
mod componentize;
pub mod databases;
mod declared;
pub mod dirs;
mod engine;
mod imports;
mod invoke;
mod limits;
pub mod nn;
pub mod outbound;
mod outcome;
mod private;
mod program;
mod run;
pub mod services;
mod shared;
pub mod spin;
mod stat_index;
mod stores;
mod symlinks;
mod ticker;
mod wave;

pub use artifact::{ArtifactError, ArtifactKind, SigningKey};
pub use cache::CompileCache;
pub use capabilities::{Capabilities, DirGrant, EnvGrant, NetGrant};
pub use compiler::{CHILD_COMMAND, CompileLimits, child_main};
pub use databases::{Databases, open_databases};
pub use declared::{Declared, initial_memory, one_request_per_instance, speaks_wasi_p3};
pub use engine::{Deadline, EngineSpec, engine_for};
pub use imports::{explain_link_error, trap_unprovided_imports};
pub use invoke::{
    ExportedFunc, exported_funcs, find_export, invoke, parse_core_val, show_core_val,
};
pub use limits::{Limits, MemoryLimiter};
pub use nn::{Nn, NnModel};
pub use outcome::Outcome;
pub use private::{Refusal, Refused, write_private};
pub use program::{CodeSource, Loaded, Loader, Program, precompile};
pub use run::{HttpHooks, RunConfig, run_command};
pub use services::Services;
pub use shared::{Held, ProgramShare};
pub use stores::{Stores, open_store, open_stores, purge_redis_stores};
pub use tern_manifest::units::{ByteSize, HumanDuration};
pub use ticker::{Running, TICK, Ticker};
pub use wasmtime::{Engine, Error, Result};
pub use wave::{Call as WaveCall, show as show_wave};
