//! Running a guest to completion: a WASI command (`_start` of a core module,
//! `wasi:cli/run` of a component), or one exported function (`--invoke`).

use std::time::Duration;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Module, Result, Store, Trap, Val, ValType, WasmBacktrace, bail};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::capabilities::Capabilities;
use crate::engine::Deadline;
use crate::limits::{Limits, MemoryLimiter};
use crate::program::Program;

/// How a guest run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The guest called `exit(code)`, or returned from `_start` (code 0).
    Exited(i32),
    /// An `--invoke`d function returned these values.
    Returned(Vec<String>),
    /// The guest trapped.
    Trapped {
        /// One line naming the trap, e.g. `wasm \`unreachable\` instruction executed`.
        message: String,
        /// The guest's frames, with function names when the module has them.
        backtrace: Option<String>,
        /// What limit, if any, led to the trap.
        note: Option<String>,
    },
    /// The wall-clock limit passed.
    TimedOut(Duration),
    /// The fuel budget ran out.
    OutOfFuel(u64),
}

/// What to run and with what grants.
pub struct RunConfig<'a> {
    /// The guest's argv, program name first.
    pub argv: &'a [String],
    /// What the guest may touch.
    pub capabilities: &'a Capabilities,
    /// Bounds on the guest.
    pub limits: &'a Limits,
    /// Called from the deadline thread when the guest is still blocked in a
    /// host call [`Deadline::GRACE`] after its time limit.
    pub on_stuck: Option<Box<dyn FnOnce() + Send>>,
}

struct ModuleHost {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

struct ComponentHost {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
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
        // The epoch only moves when a deadline thread runs (see `guard`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        Ok(store)
    }

    fn guard(&mut self, engine: &Engine) -> Option<Deadline> {
        let timeout = self.limits.timeout?;
        let on_stuck = self.on_stuck.take().unwrap_or_else(|| Box::new(|| {}));
        Some(Deadline::start(engine, timeout, on_stuck))
    }
}

/// Runs `f` inside the async runtime that wasmtime-wasi's host calls block
/// on. Made here rather than left to wasmtime-wasi, whose default spawns a
/// worker per core after reading cgroup files: one worker is plenty for one
/// guest and starts faster, and it is not waited for on the way out.
fn with_io_runtime<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .enable_time()
        .build()
        .context("starting the I/O runtime")?;
    let result = {
        let _enter = io.enter();
        f()
    };
    io.shutdown_background();
    result
}

/// Runs a WASI command to completion.
pub fn run_command(
    engine: &Engine,
    program: &Program,
    mut config: RunConfig<'_>,
) -> Result<Outcome> {
    with_io_runtime(|| match program {
        Program::Module(module) => {
            let (mut store, instance) = instantiate_module(engine, module, &config)?;
            let Some(start) = instance.get_func(&mut store, "_start") else {
                bail!(
                    "module has no `_start` export, so it is not a command; {}",
                    list_exports(module)
                );
            };
            let start = start
                .typed::<(), ()>(&store)
                .context("`_start` must take and return nothing")?;
            let _deadline = config.guard(engine);
            let result = start.call(&mut store, ());
            finish(
                result.map(|()| Outcome::Exited(0)),
                &store.data().limiter,
                config.limits,
            )
        }
        Program::Component(component) => {
            check_is_command(engine, component)?;
            let mut linker = wasmtime::component::Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            let host = ComponentHost {
                wasi: config.wasi()?.build(),
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(config.limits.max_memory),
            };
            let mut store = config.store(engine, host, |h| &mut h.limiter)?;
            let command = instantiate(
                &mut store,
                |s| wasmtime_wasi::p2::bindings::sync::Command::instantiate(s, component, &linker),
                |h| &h.limiter,
                &config,
            )?;
            let _deadline = config.guard(engine);
            let result = command.wasi_cli_run().call_run(&mut store);
            let outcome = result.map(|r| Outcome::Exited(if r.is_ok() { 0 } else { 1 }));
            finish(outcome, &store.data().limiter, config.limits)
        }
    })
}

/// Calls one exported function of a core module with arguments parsed from
/// text, after running `_initialize` if the module has one.
pub fn invoke(
    engine: &Engine,
    program: &Program,
    name: &str,
    args: &[String],
    config: RunConfig<'_>,
) -> Result<Outcome> {
    let Program::Module(module) = program else {
        bail!("--invoke calls functions of core modules; this file is a component");
    };
    with_io_runtime(|| call_export(engine, module, name, args, config))
}

fn call_export(
    engine: &Engine,
    module: &Module,
    name: &str,
    args: &[String],
    mut config: RunConfig<'_>,
) -> Result<Outcome> {
    let (mut store, instance) = instantiate_module(engine, module, &config)?;
    let Some(func) = instance.get_func(&mut store, name) else {
        bail!(
            "module has no exported function `{name}`; {}",
            list_exports(module)
        );
    };
    let ty = func.ty(&store);
    let params: Vec<ValType> = ty.params().collect();
    if params.len() != args.len() {
        let types: Vec<String> = params.iter().map(ToString::to_string).collect();
        bail!(
            "function `{name}` takes {} argument(s) ({}), but {} were given",
            params.len(),
            types.join(", "),
            args.len()
        );
    }
    let params = params
        .iter()
        .zip(args)
        .map(|(ty, arg)| parse_val(ty, arg))
        .collect::<Result<Vec<_>>>()?;
    let mut results = vec![Val::I32(0); ty.results().len()];
    let _deadline = config.guard(engine);
    let result = (|| {
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.call(&mut store, &[], &mut [])?;
        }
        func.call(&mut store, &params, &mut results)
    })();
    let outcome = result.map(|()| Outcome::Returned(results.iter().map(show_val).collect()));
    finish(outcome, &store.data().limiter, config.limits)
}

/// Instantiates a core module with WASI preview 1 in a fresh store.
fn instantiate_module(
    engine: &Engine,
    module: &Module,
    config: &RunConfig<'_>,
) -> Result<(Store<ModuleHost>, wasmtime::Instance)> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut ModuleHost| &mut h.wasi)?;
    let host = ModuleHost {
        wasi: config.wasi()?.build_p1(),
        limiter: MemoryLimiter::new(config.limits.max_memory),
    };
    let mut store = config.store(engine, host, |h| &mut h.limiter)?;
    let instance = instantiate(
        &mut store,
        |s| linker.instantiate(s, module),
        |h| &h.limiter,
        config,
    )?;
    Ok((store, instance))
}

/// Instantiates, turning a refused initial memory into an error that names
/// the limit.
fn instantiate<T, I>(
    store: &mut Store<T>,
    make: impl FnOnce(&mut Store<T>) -> Result<I>,
    limiter: fn(&T) -> &MemoryLimiter,
    config: &RunConfig<'_>,
) -> Result<I> {
    make(store).map_err(|e| match limiter(store.data()).refused {
        Some(bytes) => wasmtime::format_err!(
            "the program needs {} of linear memory to start, above the limit of {} (raise it with --max-memory)",
            crate::units::ByteSize(bytes as u64),
            config.limits.max_memory
        ),
        None => e.context("instantiating the program"),
    })
}

/// Maps a guest's result to an [`Outcome`]; errors that are not the
/// guest's doing stay errors.
fn finish(result: Result<Outcome>, limiter: &MemoryLimiter, limits: &Limits) -> Result<Outcome> {
    let err = match result {
        Ok(outcome) => return Ok(outcome),
        Err(err) => err,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Ok(Outcome::Exited(exit.0));
    }
    let Some(trap) = err.downcast_ref::<Trap>() else {
        return Err(err);
    };
    let note = match trap {
        Trap::Interrupt => return Ok(Outcome::TimedOut(limits.timeout.unwrap_or_default())),
        Trap::OutOfFuel => return Ok(Outcome::OutOfFuel(limits.fuel.unwrap_or_default())),
        Trap::StackOverflow => Some(format!("the wasm stack limit is {} (raise it with --max-stack)", limits.max_stack)),
        _ => limiter.refused.map(|bytes| {
            format!(
                "the guest asked for {} of memory in all, above the limit of {} (raise it with --max-memory)",
                crate::units::ByteSize(bytes as u64),
                limits.max_memory
            )
        }),
    };
    let message = trap.to_string();
    Ok(Outcome::Trapped {
        message: message
            .strip_prefix("wasm trap: ")
            .unwrap_or(&message)
            .to_string(),
        backtrace: err.downcast_ref::<WasmBacktrace>().and_then(frames),
        note,
    })
}

/// The frame lines of a backtrace, without wasmtime's header and its hint
/// about wasmtime's own environment variables.
fn frames(backtrace: &WasmBacktrace) -> Option<String> {
    let text = backtrace.to_string();
    let frames: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    (!frames.is_empty()).then(|| format!("wasm backtrace:\n{}\n", frames.join("\n")))
}

fn check_is_command(engine: &Engine, component: &Component) -> Result<()> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
        return Ok(());
    }
    if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.3")) {
        bail!(
            "WASI 0.3 commands are not supported yet (wasmtime 48's WASI 0.3 is experimental); build for wasm32-wasip2"
        );
    }
    let list = if exports.is_empty() {
        "it exports nothing".to_string()
    } else {
        format!("it exports {}", exports.join(", "))
    };
    bail!("this component is not a wasi:cli command: it does not export `wasi:cli/run@0.2`, {list}")
}

fn list_exports(module: &Module) -> String {
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

fn parse_val(ty: &ValType, arg: &str) -> Result<Val> {
    let bad = || wasmtime::format_err!("argument `{arg}` is not a valid {ty}");
    Ok(match ty {
        // Accept both signed and unsigned spellings of integers.
        ValType::I32 => Val::I32(
            arg.parse::<i32>()
                .or_else(|_| arg.parse::<u32>().map(|u| u as i32))
                .map_err(|_| bad())?,
        ),
        ValType::I64 => Val::I64(
            arg.parse::<i64>()
                .or_else(|_| arg.parse::<u64>().map(|u| u as i64))
                .map_err(|_| bad())?,
        ),
        ValType::F32 => Val::F32(arg.parse::<f32>().map_err(|_| bad())?.to_bits()),
        ValType::F64 => Val::F64(arg.parse::<f64>().map_err(|_| bad())?.to_bits()),
        other => bail!("cannot pass a {other} from the command line"),
    })
}

fn show_val(val: &Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(v) => f32::from_bits(*v).to_string(),
        Val::F64(v) => f64::from_bits(*v).to_string(),
        Val::V128(v) => format!("{:#034x}", v.as_u128()),
        other => format!("{other:?}"),
    }
}
