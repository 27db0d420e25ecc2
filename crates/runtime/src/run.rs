//! Running a WASI command to completion: `_start` of a preview 1 module,
//! `wasi:cli/run` of a WASI 0.2 or 0.3 component.
//!
//! Guests run on wasmtime's async API, driven by a current-thread tokio
//! runtime: no helper threads, so nothing for the kernel to keep in sync
//! when wasmtime maps and unmaps memory, and a deadline can cancel a guest
//! that is blocked in a host call, not only one running wasm code.

use std::future::Future;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Instance, Module, Result, Store, bail};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::capabilities::Capabilities;
use crate::engine::Deadline;
use crate::limits::{Limits, MemoryLimiter};
use crate::outcome::{InvalidExit, Outcome, finish};
use crate::program::Program;
use crate::services::{self, Services, ServicesView};
use crate::symlinks;

/// What to run and with what grants.
pub struct RunConfig<'a> {
    /// The guest's argv, program name first.
    pub argv: &'a [String],
    /// What the guest may touch.
    pub capabilities: &'a Capabilities,
    /// Bounds on the guest.
    pub limits: &'a Limits,
    /// Key-value stores (components only).
    pub services: &'a Services,
    /// Makes what sends a component's outbound HTTP requests (`wasi:http`
    /// client, 0.2 and 0.3); `None` refuses every request
    /// (`HttpRequestDenied`).
    pub outbound: Option<&'a (dyn Fn() -> HttpHooks + Sync)>,
}

/// What sends (or refuses) a component's outbound HTTP requests.
pub type HttpHooks = Box<dyn WasiHttpHooks + Send>;

/// Refuses every outbound request: what a program gets with no grant.
struct NoOutbound;

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, HttpError>> + Send> {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}

pub(crate) struct ModuleHost {
    wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
    nn: crate::nn::p1::NnP1,
}

pub(crate) struct ComponentHost {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    services: Services,
    http: WasiHttpCtx,
    outbound: HttpHooks,
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut *self.outbound,
        }
    }
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl RunConfig<'_> {
    fn wasi(&self) -> Result<WasiCtxBuilder> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdio().args(self.argv);
        self.capabilities.apply(&mut wasi)?;
        Ok(wasi)
    }

    fn store<T>(
        &self,
        engine: &Engine,
        data: T,
        limiter: fn(&mut T) -> &mut MemoryLimiter,
    ) -> Result<Store<T>> {
        let mut store = Store::new(engine, data);
        store.limiter(move |data| limiter(data) as &mut dyn wasmtime::ResourceLimiter);
        if let Some(fuel) = self.limits.fuel {
            store.set_fuel(fuel)?;
        }
        if self.limits.timeout.is_some() {
            // The epoch moves once, when the `Deadline` passes (see `guarded`).
            store.set_epoch_deadline(1);
            store.epoch_deadline_trap();
        }
        Ok(store)
    }
}

/// Drives `future` to completion on a fresh current-thread runtime.
pub(crate) fn block_on<R>(future: impl Future<Output = Result<R>>) -> Result<R> {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the I/O runtime")?;
    let result = io.block_on(future);
    // A guest cut off while reading stdin leaves a reader thread blocked
    // there: do not wait for it.
    io.shutdown_background();
    result
}

/// Runs `call` under the wall-clock limit: the epoch interrupt stops wasm
/// code, and dropping the future stops a guest blocked in a host call.
pub(crate) async fn guarded(
    engine: &Engine,
    limits: &Limits,
    call: impl Future<Output = Result<Outcome>>,
) -> Result<Outcome> {
    let Some(timeout) = limits.timeout else {
        return call.await;
    };
    let _deadline = Deadline::start(engine, timeout);
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Ok(Outcome::TimedOut(timeout)),
    }
}

/// Runs a WASI command to completion.
pub fn run_command(engine: &Engine, program: &Program, config: RunConfig<'_>) -> Result<Outcome> {
    match program {
        Program::Module(module) => block_on(run_module(engine, module, config)),
        Program::Component(component) => match command_version(engine, component)? {
            CommandVersion::P2 => block_on(run_component(engine, component, config)),
            CommandVersion::P3 => block_on(run_p3_component(engine, component, config)),
        },
    }
}

async fn run_module(engine: &Engine, module: &Module, config: RunConfig<'_>) -> Result<Outcome> {
    let (mut store, instance) = instantiate_module(engine, module, &config).await?;
    let Some(start) = instance.get_func(&mut store, "_start") else {
        bail!(
            "module has no `_start` export, so it is not a command; {}",
            list_exports(module)
        );
    };
    let start = start
        .typed::<(), ()>(&store)
        .context("`_start` must take and return nothing")?;
    guarded(engine, config.limits, async {
        let result = start.call_async(&mut store, ()).await;
        finish(
            result.map(|()| Outcome::Exited(0)),
            &store.data().limiter,
            config.limits,
        )
    })
    .await
}

async fn run_component(
    engine: &Engine,
    component: &Component,
    config: RunConfig<'_>,
) -> Result<Outcome> {
    let (mut store, instance) = instantiate_component(engine, component, &config, false).await?;
    let command = wasmtime_wasi::p2::bindings::Command::new(&mut store, &instance)?;
    guarded(engine, config.limits, async {
        let result = command.wasi_cli_run().call_run(&mut store).await;
        let outcome = result.map(|r| Outcome::Exited(if r.is_ok() { 0 } else { 1 }));
        finish(outcome, &store.data().limiter, config.limits)
    })
    .await
}

/// Runs a WASI 0.3 command: `wasi:cli/run@0.3` is an async function, so
/// it runs inside the store's event loop, which also drives every stream
/// and future the guest awaits. The deadline drops the whole loop, so a
/// guest stopped in a host future (a sleep, a read) stops with it.
async fn run_p3_component(
    engine: &Engine,
    component: &Component,
    config: RunConfig<'_>,
) -> Result<Outcome> {
    let (mut store, instance) = instantiate_component(engine, component, &config, true).await?;
    let command = wasmtime_wasi::p3::bindings::Command::new(&mut store, &instance)?;
    guarded(engine, config.limits, async {
        let result = store
            .run_concurrent(async |guest| command.wasi_cli_run().call_run(guest).await)
            .await
            .and_then(|ran| ran);
        let outcome = result.map(|r| Outcome::Exited(if r.is_ok() { 0 } else { 1 }));
        finish(outcome, &store.data().limiter, config.limits)
    })
    .await
}

/// Instantiates a component in a fresh store (see [`component_store`]):
/// what `tern run` runs a command in, and `--invoke` calls a function of.
pub(crate) async fn instantiate_component(
    engine: &Engine,
    component: &Component,
    config: &RunConfig<'_>,
    p3: bool,
) -> Result<(Store<ComponentHost>, wasmtime::component::Instance)> {
    let (linker, mut store) = component_store(engine, config, p3)?;
    let instance = linker.instantiate_async(&mut store, component).await;
    let instance = instantiated(instance, &store.data().limiter, config)?;
    Ok((store, instance))
}

/// A linker with WASI 0.2 and its HTTP client (and 0.3's with `p3`),
/// Tern's symlink checks and host services, and a fresh store for it, with
/// the grants and limits of `config`.
fn component_store(
    engine: &Engine,
    config: &RunConfig<'_>,
    p3: bool,
) -> Result<(Linker<ComponentHost>, Store<ComponentHost>)> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    symlinks::guard_component(&mut linker)?;
    if p3 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        symlinks::guard_p3_component(&mut linker)?;
    }
    let view: fn(&mut ComponentHost) -> ServicesView<'_> = |h| ServicesView {
        services: &mut h.services,
        table: &mut h.table,
    };
    services::add_to_linker(&mut linker, view)?;
    crate::spin::add_to_linker(&mut linker, view, p3)?;
    let host = ComponentHost {
        wasi: config.wasi()?.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(config.limits.max_memory),
        services: config.services.clone(),
        http: WasiHttpCtx::new(),
        outbound: config
            .outbound
            .map_or_else(|| Box::new(NoOutbound) as HttpHooks, |make| make()),
    };
    let store = config.store(engine, host, |h| &mut h.limiter)?;
    Ok((linker, store))
}

/// Instantiates a core module with WASI preview 1 in a fresh store.
pub(crate) async fn instantiate_module(
    engine: &Engine,
    module: &Module,
    config: &RunConfig<'_>,
) -> Result<(Store<ModuleHost>, Instance)> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut ModuleHost| &mut h.wasi)?;
    crate::nn::p1::add_to_linker(&mut linker, |h: &mut ModuleHost| &mut h.nn)?;
    let host = ModuleHost {
        wasi: config.wasi()?.build_p1(),
        limiter: MemoryLimiter::new(config.limits.max_memory),
        nn: crate::nn::p1::NnP1::new(config.services.nn.clone()),
    };
    let mut store = config.store(engine, host, |h| &mut h.limiter)?;
    symlinks::guard_module(&mut linker, &mut store)?;
    link_proc_exit(&mut linker)?;
    let instance = linker.instantiate_async(&mut store, module).await;
    let instance = instantiated(instance, &store.data().limiter, config)?;
    Ok((store, instance))
}

/// Preview 1's `proc_exit` as wasmtime-wasi has it, except that a status
/// WASI does not allow (126 or more) is reported with the status, as
/// [`Outcome::InvalidExit`], instead of as an error carrying the guest's
/// backtrace.
fn link_proc_exit(linker: &mut wasmtime::Linker<ModuleHost>) -> Result<()> {
    linker.allow_shadowing(true);
    let defined = linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "proc_exit",
            |status: u32| -> Result<()> {
                Err(match status {
                    0..=125 => I32Exit(status as i32).into(),
                    _ => InvalidExit(status as i32).into(),
                })
            },
        )
        .map(|_| ());
    linker.allow_shadowing(false);
    defined
}

/// Passes an instantiation result on, turning a refused initial memory into
/// an error that names the limit.
fn instantiated<I>(
    result: Result<I>,
    limiter: &MemoryLimiter,
    config: &RunConfig<'_>,
) -> Result<I> {
    result.map_err(|e| match limiter.refused {
        Some(bytes) => wasmtime::format_err!(
            "the program needs {} of linear memory to start, above the limit of {} (raise it with --max-memory)",
            tern_manifest::units::ByteSize(bytes as u64),
            config.limits.max_memory
        ),
        None => match crate::explain_link_error(&e) {
            Some(line) => wasmtime::format_err!("cannot link the program: {line}"),
            None => e.context("instantiating the program"),
        },
    })
}

/// Which `wasi:cli/run` a component exports.
enum CommandVersion {
    P2,
    P3,
}

fn command_version(engine: &Engine, component: &Component) -> Result<CommandVersion> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    // A Rust program written for 0.3 exports 0.2's `run` too (the standard
    // library's `main`), which is not the program: 0.3 goes first.
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.3")) {
        return Ok(CommandVersion::P3);
    }
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
        return Ok(CommandVersion::P2);
    }
    let list = if exports.is_empty() {
        "it exports nothing".to_string()
    } else {
        format!("it exports {}", exports.join(", "))
    };
    bail!(
        "this component is not a wasi:cli command: it exports neither `wasi:cli/run@0.2` nor `wasi:cli/run@0.3`; {list}"
    )
}

pub(crate) fn list_exports(module: &Module) -> String {
    let funcs: Vec<&str> = module
        .exports()
        .filter(|e| e.ty().func().is_some())
        .map(|e| e.name())
        .collect();
    if funcs.is_empty() {
        "it exports no functions".into()
    } else {
        format!("exported functions: {}", funcs.join(", "))
    }
}
