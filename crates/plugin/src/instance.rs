//! One instance of a plugin version and calls into it: a fresh instance
//! per call, or one kept by a [`crate::Session`]. Every call is bounded
//! (fuel, epoch deadline, memory budget, input and output sizes) and
//! reported on.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::Val as ComponentVal;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{ComponentNamedList, Lift, Lower, Type};
use wasmtime::{Func, Result, Store, Trap, TypedFunc, Val, bail, format_err};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::code::{Code, Linked, PluginKind};
use crate::ctx::{Budget, Logs, PluginCtx, Wasi};
use crate::extism::CallState;
use crate::plugin::Shared;
use crate::report::{CallError, Limit, LogLevel, Report};

/// A live instance and its store.
pub(crate) struct Instance {
    store: Store<PluginCtx>,
    handle: Option<Handle>,
    pub(crate) code: Arc<Code>,
    /// WASI output pipes, read into the logs after each call.
    pipes: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    /// Extism functions called on this instance, checked once.
    extism_funcs: HashMap<String, TypedFunc<(), i32>>,
}

enum Handle {
    Module(wasmtime::Instance),
    Component(wasmtime::component::Instance),
}

impl Instance {
    /// Instantiates `code` (and runs its initializer). The time it takes
    /// is counted in the first call's report.
    pub(crate) fn new(shared: &Arc<Shared>, code: Arc<Code>) -> Result<Self, CallError> {
        let start = Instant::now();
        let mut pipes = None;
        let wasi = match &code.linked {
            Linked::Module { wasi: false, .. } => Wasi::None,
            linked => {
                let mut builder = WasiCtxBuilder::new();
                let max_log = usize::try_from(shared.limits.max_log.0).unwrap_or(usize::MAX);
                let (out, err) = (
                    MemoryOutputPipe::new(max_log),
                    MemoryOutputPipe::new(max_log),
                );
                builder.stdout(out.clone()).stderr(err.clone());
                pipes = Some((out, err));
                for (key, value) in &shared.grants.env {
                    builder.env(key, value);
                }
                let capabilities = tern_runtime::Capabilities {
                    dirs: shared.grants.dirs.clone(),
                    ..Default::default()
                };
                if let Err(e) = capabilities.apply(&mut builder) {
                    return Err(CallError::new(format!("{e:#}"), Report::default()));
                }
                match linked {
                    Linked::Module { .. } => Wasi::P1(builder.build_p1()),
                    Linked::Component { .. } => Wasi::P2 {
                        ctx: builder.build(),
                        table: Default::default(),
                    },
                }
            }
        };
        let ctx = PluginCtx {
            wasi,
            budget: Budget::new(shared.limits.max_memory.0),
            call: CallState::new(),
            shared: shared.clone(),
            logs: Logs::default(),
            stopped_by: None,
            running: None,
        };
        let engine = shared.host.engine.clone();
        let mut store = Store::new(&engine, ctx);
        store.limiter(|ctx| ctx.limiter());
        store.set_hostcall_fuel(crossing_limit(&shared.limits.max_output));
        store.epoch_deadline_trap();
        let mut instance = Instance {
            store,
            handle: None,
            code: code.clone(),
            pipes,
            extism_funcs: HashMap::new(),
        };
        instance.arm(Bytes::new());
        let made = block_on(async {
            let store = &mut instance.store;
            match &code.linked {
                Linked::Module { pre, .. } => {
                    let made = if code.is_async {
                        pre.instantiate_async(&mut *store).await?
                    } else {
                        pre.instantiate(&mut *store)?
                    };
                    // What a guest's runtime needs before its first call,
                    // the way Extism runs it.
                    let export = |store: &mut Store<PluginCtx>, name| made.get_func(store, name);
                    let init = match export(store, "hs_init") {
                        Some(hs_init) => {
                            if let Some(func) = export(store, "_initialize") {
                                call_func(store, &func, code.is_async, &[], &mut []).await?;
                            }
                            Some((hs_init, vec![Val::I32(0), Val::I32(0)]))
                        }
                        None => export(store, "__wasm_call_ctors")
                            .or_else(|| export(store, "_initialize"))
                            .map(|func| (func, Vec::new())),
                    };
                    if let Some((func, args)) = init {
                        call_func(store, &func, code.is_async, &args, &mut []).await?;
                    }
                    Ok(Handle::Module(made))
                }
                Linked::Component { pre, .. } => {
                    let made = if code.is_async {
                        pre.instantiate_async(&mut *store).await?
                    } else {
                        pre.instantiate(&mut *store)?
                    };
                    Ok(Handle::Component(made))
                }
            }
        });
        instance.store.data_mut().running = None;
        match made {
            Ok(handle) => {
                instance.handle = Some(handle);
                Ok(instance)
            }
            Err(e) => Err(instance.failure("instantiating the plugin", e, start, 0)),
        }
    }

    /// Fuel, deadline and call state for a call with `input`.
    fn arm(&mut self, input: Bytes) {
        let limits = &self.store.data().shared.limits;
        let (fuel, timeout) = (limits.fuel, limits.timeout);
        let _ = self.store.set_fuel(fuel.unwrap_or(u64::MAX));
        let ticks = timeout.as_nanos() / crate::host::TICK.as_nanos() + 1;
        self.store
            .set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        let ctx = self.store.data_mut();
        ctx.call.start(input);
        ctx.call.deadline = Instant::now() + timeout;
        ctx.logs = Logs::default();
        ctx.stopped_by = None;
        ctx.running = Some(tern_runtime::Ticker::global().running());
    }

    /// Calls `name` with bytes in and bytes out, the way the plugin's kind
    /// takes them (see [`crate::Plugin::call`]).
    pub(crate) fn call(
        &mut self,
        name: &str,
        input: &[u8],
        start: Instant,
    ) -> Result<(Vec<u8>, Report), CallError> {
        let max_input = self.store.data().shared.limits.max_input.0;
        if input.len() as u64 > max_input {
            let mut report = self.report(start, input.len() as u64, 0);
            report.stopped_by = Some(Limit::Input);
            let message = format!(
                "the input of {} is above the input limit of {}",
                tern_runtime::ByteSize(input.len() as u64),
                tern_runtime::ByteSize(max_input)
            );
            return Err(CallError::new(message, report));
        }
        self.arm(Bytes::copy_from_slice(input));
        let result = match self.code.kind {
            PluginKind::Extism => self.call_extism(name),
            PluginKind::Core => self.call_core_text(name, input),
            PluginKind::Component => self.call_component_bytes(name, input),
        };
        let output_len = result.as_ref().map_or(0, |output| output.len() as u64);
        self.finish(name, start, input.len() as u64, output_len, result)
    }

    /// Calls a component's function with typed values.
    pub(crate) fn call_values(
        &mut self,
        name: &str,
        args: &[ComponentVal],
        start: Instant,
    ) -> Result<(Vec<ComponentVal>, Report), CallError> {
        self.arm(Bytes::new());
        let result = self.component_call(name, args).map(|(results, _)| results);
        self.finish(name, start, 0, 0, result)
    }

    /// Calls a core module's function with numbers.
    pub(crate) fn call_numbers(
        &mut self,
        name: &str,
        args: &[Val],
        start: Instant,
    ) -> Result<(Vec<Val>, Report), CallError> {
        self.arm(Bytes::new());
        let result = self.core_call(name, args);
        self.finish(name, start, 0, 0, result)
    }

    /// A call's result with its report, or its error.
    fn finish<T>(
        &mut self,
        name: &str,
        start: Instant,
        input: u64,
        output: u64,
        result: Result<T>,
    ) -> Result<(T, Report), CallError> {
        self.store.data_mut().running = None;
        match result {
            Ok(value) => Ok((value, self.report(start, input, output))),
            Err(e) => Err(self.failure(name, e, start, input)),
        }
    }

    fn export(&mut self, name: &str) -> Result<Func> {
        let Some(Handle::Module(instance)) = &self.handle else {
            bail!("not a core module");
        };
        if crate::code::is_lifecycle(name) {
            bail!("`{name}` is called by the host, not by callers");
        }
        instance.get_func(&mut self.store, name).ok_or_else(|| {
            let names = self.code.functions().join(", ");
            format_err!("the plugin has no function `{name}`; it exports: {names}")
        })
    }

    fn call_extism(&mut self, name: &str) -> Result<Vec<u8>> {
        let code = match self.extism_func(name)? {
            Ok(func) if self.code.is_async => block_on(func.call_async(&mut self.store, ()))?,
            Ok(func) => func.call(&mut self.store, ())?,
            // `() -> ()`, or a result Extism takes as failure.
            Err((func, results)) => {
                let mut results = vec![Val::I32(0); results];
                block_on(call_func(
                    &mut self.store,
                    &func,
                    self.code.is_async,
                    &[],
                    &mut results,
                ))?;
                results.first().map_or(0, |value| value.i32().unwrap_or(-1))
            }
        };
        let state = &mut self.store.data_mut().call;
        // An error the plugin set fails the call whatever it returned.
        if let Some(message) = state.error_message().filter(|m| !m.is_empty()) {
            return Err(PluginFailed(message).into());
        }
        if code != 0 {
            bail!("`{name}` returned {code} without an error message");
        }
        crate::extism::take_output(state)
    }

    /// The Extism function `name`: `() -> i32`, looked up and checked once
    /// per instance, or another function taking no arguments, with how
    /// many results it has.
    fn extism_func(&mut self, name: &str) -> Result<Result<TypedFunc<(), i32>, (Func, usize)>> {
        if let Some(func) = self.extism_funcs.get(name) {
            return Ok(Ok(func.clone()));
        }
        let func = self.export(name)?;
        if let Ok(typed) = func.typed::<(), i32>(&self.store) {
            self.extism_funcs.insert(name.to_owned(), typed.clone());
            return Ok(Ok(typed));
        }
        let ty = func.ty(&self.store);
        if ty.params().len() != 0 || ty.results().len() > 1 {
            bail!(
                "`{name}` is not an Extism plugin function (it takes arguments); call it with numbers"
            );
        }
        Ok(Err((func, ty.results().len())))
    }

    fn core_call(&mut self, name: &str, args: &[Val]) -> Result<Vec<Val>> {
        let func = self.export(name)?;
        let ty = func.ty(&self.store);
        let mut results: Vec<Val> = ty
            .results()
            .map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0)))
            .collect();
        block_on(call_func(
            &mut self.store,
            &func,
            self.code.is_async,
            args,
            &mut results,
        ))?;
        Ok(results)
    }

    /// A plain module's function, its arguments read from the input as
    /// numbers separated by spaces or commas, its results written so.
    fn call_core_text(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>> {
        let func = self.export(name)?;
        let ty = func.ty(&self.store);
        let text = std::str::from_utf8(input)
            .map_err(|_| format_err!("the arguments of `{name}` are not text"))?;
        let words: Vec<&str> = text
            .split([' ', ',', '\n', '\t'])
            .filter(|w| !w.is_empty())
            .collect();
        let params: Vec<wasmtime::ValType> = ty.params().collect();
        if words.len() != params.len() {
            bail!(
                "`{name}` takes {} number(s), but the input has {}",
                params.len(),
                words.len()
            );
        }
        let args = params
            .iter()
            .zip(&words)
            .map(|(ty, word)| tern_runtime::parse_core_val(ty, word))
            .collect::<Result<Vec<_>>>()?;
        let results = self.core_call(name, &args)?;
        let shown: Vec<String> = results.iter().map(tern_runtime::show_core_val).collect();
        Ok(shown.join(" ").into_bytes())
    }

    fn component_call(
        &mut self,
        name: &str,
        args: &[ComponentVal],
    ) -> Result<(Vec<ComponentVal>, ComponentFunc)> {
        let Some(Handle::Component(instance)) = &self.handle else {
            bail!("not a component");
        };
        let (index, ty, full) = self.code.component_func(name)?;
        let func = instance
            .get_func(&mut self.store, index)
            .ok_or_else(|| format_err!("the export `{full}` is not a function"))?;
        let mut results = vec![ComponentVal::Bool(false); ty.results().len()];
        // wasmtime charges a value's host size for each one it lifts: the
        // same crossing limit, counted in values rather than bytes.
        let crossing = crossing_limit(&self.store.data().shared.limits.max_output);
        self.store
            .set_hostcall_fuel(crossing.saturating_mul(size_of::<ComponentVal>()));
        if self.code.is_async {
            block_on(func.call_async(&mut self.store, args, &mut results))?;
        } else {
            func.call(&mut self.store, args, &mut results)?;
        }
        Ok((results, ty))
    }

    /// A component function taking bytes or a string and returning bytes,
    /// a string, or a result of either; any other is called with the input
    /// read as WAVE arguments, and answers in WAVE.
    fn call_component_bytes(&mut self, name: &str, input: &[u8]) -> Result<Vec<u8>> {
        let (_, ty, full) = self.code.component_func(name)?;
        let params: Vec<Type> = ty.params().map(|(_, t)| t).collect();
        let results: Vec<Type> = ty.results().collect();
        let takes = match params.as_slice() {
            [Type::String] => Some(true),
            [Type::List(list)] if list.ty() == Type::U8 => Some(false),
            _ => None,
        };
        let gives_bytes = match results.as_slice() {
            [] | [Type::String] => true,
            [Type::List(list)] => list.ty() == Type::U8,
            [Type::Result(r)] => {
                matches!(r.ok(), None | Some(Type::String))
                    || matches!(r.ok(), Some(Type::List(l)) if l.ty() == Type::U8)
            }
            _ => false,
        };
        if let (Some(string), true) = (takes, gives_bytes) {
            // Typed, so that bytes cross as bytes: a `list<u8>` as `Val`s
            // takes about forty times its size on the host.
            let typed = if string {
                let text = std::str::from_utf8(input).map_err(|_| {
                    format_err!("`{full}` takes a string, and the input is not UTF-8")
                })?;
                self.call_bytes_typed(name, (text,), &results)
            } else {
                self.call_bytes_typed(name, (input,), &results)
            };
            // An error of another type than a string: shown in WAVE.
            if let Some(output) = typed {
                return self.output_within_limit(output?);
            }
            let arg = if string {
                ComponentVal::String(String::from_utf8_lossy(input).into_owned())
            } else {
                ComponentVal::List(input.iter().map(|b| ComponentVal::U8(*b)).collect())
            };
            let (values, _) = self.component_call(name, &[arg])?;
            return self.output_within_limit(output_bytes(values)?);
        }
        let text = std::str::from_utf8(input)
            .map_err(|_| format_err!("the arguments of `{full}` are not text"))?;
        let invocation = format!("{full}({text})");
        let call = tern_runtime::WaveCall::parse(&invocation, &[])?;
        let args = call.values(&full, &ty)?;
        let (values, _) = self.component_call(name, &args)?;
        let shown: Vec<String> = values.iter().map(tern_runtime::show_wave).collect();
        self.output_within_limit(shown.join(", ").into_bytes())
    }

    /// Calls a component function taking `arg` (a string or bytes) whose
    /// results are bytes, a string, or a result of either with bytes, a
    /// string or no error, as a typed function; `None` for another shape.
    fn call_bytes_typed<P>(
        &mut self,
        name: &str,
        arg: P,
        results: &[Type],
    ) -> Option<Result<Vec<u8>>>
    where
        P: ComponentNamedList + Lower + Send + Sync,
    {
        enum Payload {
            Nothing,
            Text,
            Bytes,
        }
        let payload = |ty: Option<Type>| match ty {
            None => Some(Payload::Nothing),
            Some(Type::String) => Some(Payload::Text),
            Some(Type::List(list)) if list.ty() == Type::U8 => Some(Payload::Bytes),
            _ => None,
        };
        let failed = |message: Option<String>| -> wasmtime::Error {
            let message = message.unwrap_or_else(|| "the function returned an error".to_owned());
            PluginFailed(message).into()
        };
        let failed_with =
            |bytes: Vec<u8>| failed(Some(String::from_utf8_lossy(&bytes).into_owned()));
        use Payload::*;
        Some(match results {
            [] => self.typed_call::<P, ()>(name, arg).map(|()| Vec::new()),
            [Type::String] => self
                .typed_call::<P, (String,)>(name, arg)
                .map(|(text,)| text.into_bytes()),
            [Type::List(_)] => self
                .typed_call::<P, (Vec<u8>,)>(name, arg)
                .map(|(bytes,)| bytes),
            [Type::Result(r)] => match (payload(r.ok())?, payload(r.err())?) {
                (Nothing, Bytes) => self
                    .typed_call::<P, (Result<(), Vec<u8>>,)>(name, arg)
                    .and_then(|(r,)| r.map(|()| Vec::new()).map_err(failed_with)),
                (Text, Bytes) => self
                    .typed_call::<P, (Result<String, Vec<u8>>,)>(name, arg)
                    .and_then(|(r,)| r.map(String::into_bytes).map_err(failed_with)),
                (Bytes, Bytes) => self
                    .typed_call::<P, (Result<Vec<u8>, Vec<u8>>,)>(name, arg)
                    .and_then(|(r,)| r.map_err(failed_with)),
                (Nothing, Nothing) => self
                    .typed_call::<P, (Result<(), ()>,)>(name, arg)
                    .and_then(|(r,)| r.map(|()| Vec::new()).map_err(|()| failed(None))),
                (Nothing, Text) => self
                    .typed_call::<P, (Result<(), String>,)>(name, arg)
                    .and_then(|(r,)| r.map(|()| Vec::new()).map_err(|e| failed(Some(e)))),
                (Text, Nothing) => self
                    .typed_call::<P, (Result<String, ()>,)>(name, arg)
                    .and_then(|(r,)| r.map(String::into_bytes).map_err(|()| failed(None))),
                (Text, Text) => self
                    .typed_call::<P, (Result<String, String>,)>(name, arg)
                    .and_then(|(r,)| r.map(String::into_bytes).map_err(|e| failed(Some(e)))),
                (Bytes, Nothing) => self
                    .typed_call::<P, (Result<Vec<u8>, ()>,)>(name, arg)
                    .and_then(|(r,)| r.map_err(|()| failed(None))),
                (Bytes, Text) => self
                    .typed_call::<P, (Result<Vec<u8>, String>,)>(name, arg)
                    .and_then(|(r,)| r.map_err(|e| failed(Some(e)))),
            },
            _ => return None,
        })
    }

    /// Calls the component function `name` as a typed function.
    fn typed_call<P, R>(&mut self, name: &str, params: P) -> Result<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let Some(Handle::Component(instance)) = &self.handle else {
            bail!("not a component");
        };
        let (index, _, full) = self.code.component_func(name)?;
        let func = instance
            .get_func(&mut self.store, index)
            .ok_or_else(|| format_err!("the export `{full}` is not a function"))?
            .typed::<P, R>(&self.store)?;
        let crossing = crossing_limit(&self.store.data().shared.limits.max_output);
        self.store.set_hostcall_fuel(crossing);
        if self.code.is_async {
            block_on(func.call_async(&mut self.store, params))
        } else {
            func.call(&mut self.store, params)
        }
    }

    /// `output`, unless it is above the output limit.
    fn output_within_limit(&mut self, output: Vec<u8>) -> Result<Vec<u8>> {
        let ctx = self.store.data_mut();
        let max = ctx.shared.limits.max_output.0;
        if output.len() as u64 > max {
            ctx.stopped_by = Some(Limit::Output);
            bail!(
                "an output of {} is above the output limit of {}",
                tern_runtime::ByteSize(output.len() as u64),
                tern_runtime::ByteSize(max)
            );
        }
        Ok(output)
    }

    /// The report of a call that began at `start`.
    fn report(&mut self, start: Instant, input: u64, output: u64) -> Report {
        let fuel_left = self.store.get_fuel().unwrap_or(0);
        let limits = &self.store.data().shared.limits;
        let budget = limits.fuel.unwrap_or(u64::MAX);
        let instructions = budget.saturating_sub(fuel_left);
        let max_log = limits.max_log.0;
        if let Some((out, err)) = &self.pipes {
            let (out, err) = (out.contents(), err.contents());
            let logs = &mut self.store.data_mut().logs;
            for (level, text) in [(LogLevel::Info, out), (LogLevel::Error, err)] {
                if !text.is_empty() {
                    logs.push(level, text.trim_ascii_end(), max_log);
                }
            }
        }
        let ctx = self.store.data_mut();
        let logs = std::mem::take(&mut ctx.logs);
        Report {
            instructions,
            peak_memory: ctx.budget.peak,
            wall_time: start.elapsed(),
            input_bytes: input,
            output_bytes: output,
            log_bytes: logs.bytes,
            logs: logs.lines,
            logs_truncated: logs.truncated,
            stopped_by: ctx.stopped_by,
        }
    }

    /// The error of a failed call, naming the limit that stopped it.
    fn failure(&mut self, name: &str, e: wasmtime::Error, start: Instant, input: u64) -> CallError {
        let ctx = self.store.data();
        let limit = ctx.stopped_by.or_else(|| match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Some(Limit::Fuel),
            Some(Trap::Interrupt) => Some(Limit::Time),
            Some(Trap::StackOverflow) => Some(Limit::Stack),
            _ if ctx.budget.refused => Some(Limit::Memory),
            _ if crossed_too_much(&e) => Some(Limit::Output),
            _ => None,
        });
        let limits = &ctx.shared.limits;
        let message = match limit {
            Some(Limit::Fuel) => format!(
                "`{name}` ran out of fuel ({} instructions)",
                limits.fuel.unwrap_or(u64::MAX)
            ),
            Some(Limit::Time) => format!("`{name}` timed out after {}", show(limits.timeout)),
            Some(Limit::Memory) if ctx.stopped_by.is_none() => format!(
                "`{name}` passed the memory limit of {}",
                tern_runtime::ByteSize(limits.max_memory.0)
            ),
            Some(Limit::Stack) => format!("`{name}` overflowed the wasm stack"),
            Some(Limit::Output) if ctx.stopped_by.is_none() => format!(
                "`{name}` handed the host more than {} at once (the output limit of {}, 1MiB at least)",
                tern_runtime::ByteSize(crossing_limit(&limits.max_output) as u64),
                tern_runtime::ByteSize(limits.max_output.0)
            ),
            _ => match e.downcast_ref::<PluginFailed>() {
                Some(PluginFailed(message)) => message.clone(),
                None => format!("`{name}` failed: {}", e.root_cause()),
            },
        };
        let mut report = self.report(start, input, 0);
        report.stopped_by = limit;
        CallError::new(message, report)
    }
}

/// The most a component may hand the host in one crossing (a call's
/// results, a host call's arguments), as wasmtime counts it (the bytes of
/// a typed list, the host's size of each value otherwise): the output
/// limit, or 1MiB if that is more, so that a hostile plugin's results are
/// refused while they are lifted, before the host holds them.
fn crossing_limit(max_output: &tern_runtime::ByteSize) -> usize {
    usize::try_from(max_output.0)
        .unwrap_or(usize::MAX)
        .max(CROSSING_FLOOR)
}

/// The least [`crossing_limit`] is: room for a plugin's ordinary host
/// calls (a 4KiB write to its log, say) under a small output limit.
const CROSSING_FLOOR: usize = 1 << 20;

/// Whether `e` is wasmtime refusing a crossing past [`crossing_limit`].
fn crossed_too_much(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .to_string()
            .starts_with("too much data is being copied between the host and the guest")
    })
}

/// An error an Extism plugin set before returning non-zero: passed to the
/// caller as it is.
#[derive(Debug)]
struct PluginFailed(String);

impl std::fmt::Display for PluginFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginFailed {}

fn show(d: Duration) -> String {
    tern_runtime::HumanDuration(d).to_string()
}

fn output_bytes(values: Vec<ComponentVal>) -> Result<Vec<u8>> {
    let bytes = |value: ComponentVal| -> Result<Vec<u8>> {
        match value {
            ComponentVal::String(s) => Ok(s.into_bytes()),
            ComponentVal::List(items) => Ok(items
                .into_iter()
                .map(|v| match v {
                    ComponentVal::U8(b) => b,
                    _ => 0,
                })
                .collect()),
            _ => Ok(Vec::new()),
        }
    };
    match values.into_iter().next() {
        None => Ok(Vec::new()),
        Some(ComponentVal::Result(Ok(value))) => value.map_or(Ok(Vec::new()), |v| bytes(*v)),
        Some(ComponentVal::Result(Err(error))) => {
            let message = match error.map(|e| *e) {
                Some(ComponentVal::String(s)) => s,
                Some(other) => tern_runtime::show_wave(&other),
                None => "the function returned an error".to_owned(),
            };
            Err(PluginFailed(message).into())
        }
        Some(value) => bytes(value),
    }
}

async fn call_func(
    store: &mut Store<PluginCtx>,
    func: &Func,
    is_async: bool,
    params: &[Val],
    results: &mut [Val],
) -> Result<()> {
    if is_async {
        func.call_async(store, params, results).await
    } else {
        func.call(store, params, results)
    }
}

/// Drives a future on this thread. Without async host functions every
/// future here is ready at its first poll.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        thread::park();
    }
}
