//! The Extism plugin ABI (`extism:host/env`), so that plugins built with
//! the published Extism PDKs run unchanged: input and output, the ABI's
//! memory ([`kernel`]), configuration, variables, logging, errors and
//! `http_request` through the plugin's allowlist.
//!
//! Every offset a plugin passes is checked against the block it names; a
//! bad one traps the call with a message naming the function and offset.

mod http;
pub(crate) mod kernel;

use bytes::Bytes;
use wasmtime::{Caller, Linker, Result, bail, format_err};

use crate::ctx::PluginCtx;
use crate::report::{Limit, LogLevel};
use kernel::{Fault, Kernel};

/// The import module of the ABI.
pub(crate) const MODULE: &str = "extism:host/env";

/// The ABI's state for one call.
pub(crate) struct CallState {
    pub(crate) kernel: Kernel,
    pub(crate) input: Bytes,
    /// The block the output was set to: (offset, length).
    pub(crate) output: Option<(u64, u64)>,
    /// The block holding the error message the plugin set.
    pub(crate) error: Option<u64>,
    /// The input copied into a block, for `input_offset`.
    input_block: u64,
    /// The last `http_request`'s status, and its headers' block.
    pub(super) http_status: i32,
    pub(super) http_headers: u64,
    /// When the call's time is up (outbound requests end by then).
    pub(crate) deadline: std::time::Instant,
}

impl CallState {
    pub(crate) fn new() -> Self {
        CallState {
            kernel: Kernel::default(),
            input: Bytes::new(),
            output: None,
            error: None,
            input_block: 0,
            http_status: 0,
            http_headers: 0,
            deadline: std::time::Instant::now(),
        }
    }

    /// Makes ready for a call with `input`, dropping the last call's blocks.
    pub(crate) fn start(&mut self, input: Bytes) {
        self.kernel.reset();
        self.input = input;
        self.output = None;
        self.error = None;
        self.input_block = 0;
        self.http_status = 0;
        self.http_headers = 0;
    }

    /// The error message the plugin set, if any.
    pub(crate) fn error_message(&self) -> Option<String> {
        let block = self.kernel.block(self.error?)?;
        Some(String::from_utf8_lossy(block).into_owned())
    }
}

/// Turns a memory fault into the trap a plugin gets.
fn fault(ctx: &mut PluginCtx, function: &str, fault: Fault) -> wasmtime::Error {
    match fault {
        Fault::OutOfBounds { offset, len } => format_err!(
            "extism `{function}`: {len} byte(s) at offset {offset} are not inside one allocated block"
        ),
        Fault::Exhausted { wanted } => {
            ctx.stopped_by = Some(Limit::Memory);
            format_err!(
                "extism `{function}`: allocating {wanted} bytes would pass the memory limit of {}",
                tern_runtime::ByteSize(ctx.budget.max)
            )
        }
    }
}

impl PluginCtx {
    /// A new block holding `data`, or a trap at the memory limit.
    pub(crate) fn alloc_with(&mut self, function: &str, data: &[u8]) -> Result<u64> {
        let budget = self.kernel_budget();
        match self.call.kernel.alloc_with(data, budget) {
            Ok(offset) => {
                self.kernel_grew();
                Ok(offset)
            }
            Err(e) => Err(fault(self, function, e)),
        }
    }

    /// The whole block at `offset` (what a host function is passed).
    pub(crate) fn block(&mut self, function: &str, offset: u64) -> Result<Vec<u8>> {
        if offset == 0 {
            return Ok(Vec::new());
        }
        match self.call.kernel.block(offset) {
            Some(bytes) => Ok(bytes.to_vec()),
            None => {
                let e = Fault::OutOfBounds { offset, len: 1 };
                Err(fault(self, function, e))
            }
        }
    }

    fn load<const N: usize>(&mut self, function: &str, offset: u64) -> Result<[u8; N]> {
        match self.call.kernel.slice(offset, N as u64) {
            Ok(bytes) => Ok(bytes.try_into().expect("a slice of N bytes")),
            Err(e) => Err(fault(self, function, e)),
        }
    }

    fn store<const N: usize>(&mut self, function: &str, offset: u64, value: [u8; N]) -> Result<()> {
        match self.call.kernel.slice_mut(offset, N as u64) {
            Ok(bytes) => {
                bytes.copy_from_slice(&value);
                Ok(())
            }
            Err(e) => Err(fault(self, function, e)),
        }
    }

    fn input_at<const N: usize>(&self, function: &str, offset: u64) -> Result<[u8; N]> {
        let input = &self.call.input;
        usize::try_from(offset)
            .ok()
            .and_then(|at| input.get(at..at.checked_add(N)?))
            .map(|bytes| bytes.try_into().expect("a slice of N bytes"))
            .ok_or_else(|| {
                format_err!(
                    "extism `{function}`: offset {offset} is past the input's {} bytes",
                    input.len()
                )
            })
    }

    fn log(&mut self, level: LogLevel, offset: u64) -> Result<()> {
        if self.shared.log_level.is_none_or(|wanted| level < wanted) {
            return Ok(());
        }
        let message = self.block("log", offset)?;
        let max = self.shared.limits.max_log.0;
        self.logs.push(level, &message, max);
        Ok(())
    }

    fn text(&mut self, function: &str, offset: u64) -> Result<String> {
        let bytes = self.block(function, offset)?;
        String::from_utf8(bytes)
            .map_err(|_| format_err!("extism `{function}`: the key is not valid UTF-8"))
    }
}

/// Adds the ABI's functions to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<PluginCtx>) -> Result<()> {
    type C<'a> = Caller<'a, PluginCtx>;
    let m = MODULE;

    // Input.
    linker.func_wrap(m, "input_length", |c: C<'_>| {
        c.data().call.input.len() as u64
    })?;
    linker.func_wrap(m, "input_load_u8", |c: C<'_>, offset: u64| {
        Ok(u32::from(
            c.data().input_at::<1>("input_load_u8", offset)?[0],
        ))
    })?;
    linker.func_wrap(m, "input_load_u64", |c: C<'_>, offset: u64| {
        Ok(u64::from_le_bytes(
            c.data().input_at::<8>("input_load_u64", offset)?,
        ))
    })?;
    linker.func_wrap(m, "input_offset", |mut c: C<'_>| {
        let ctx = c.data_mut();
        if ctx.call.input_block == 0 {
            let input = ctx.call.input.clone();
            ctx.call.input_block = ctx.alloc_with("input_offset", &input)?;
        }
        Ok(ctx.call.input_block)
    })?;

    // Memory.
    linker.func_wrap(m, "alloc", |mut c: C<'_>, len: u64| {
        let ctx = c.data_mut();
        let budget = ctx.kernel_budget();
        match ctx.call.kernel.alloc(len, budget) {
            Ok(offset) => {
                ctx.kernel_grew();
                Ok(offset)
            }
            Err(e) => Err(fault(ctx, "alloc", e)),
        }
    })?;
    linker.func_wrap(m, "free", |mut c: C<'_>, offset: u64| {
        c.data_mut().call.kernel.free(offset);
    })?;
    for name in ["length", "length_unsafe"] {
        linker.func_wrap(m, name, |c: C<'_>, offset: u64| {
            c.data().call.kernel.length(offset)
        })?;
    }
    linker.func_wrap(m, "load_u8", |mut c: C<'_>, offset: u64| {
        Ok(u32::from(c.data_mut().load::<1>("load_u8", offset)?[0]))
    })?;
    linker.func_wrap(m, "load_u64", |mut c: C<'_>, offset: u64| {
        Ok(u64::from_le_bytes(
            c.data_mut().load::<8>("load_u64", offset)?,
        ))
    })?;
    linker.func_wrap(m, "store_u8", |mut c: C<'_>, offset: u64, value: u32| {
        c.data_mut().store("store_u8", offset, [value as u8])
    })?;
    linker.func_wrap(m, "store_u64", |mut c: C<'_>, offset: u64, value: u64| {
        c.data_mut().store("store_u64", offset, value.to_le_bytes())
    })?;
    linker.func_wrap(m, "reset", |mut c: C<'_>| {
        let ctx = c.data_mut();
        let input = ctx.call.input.clone();
        ctx.call.start(input);
    })?;

    // Output and errors.
    linker.func_wrap(m, "output_set", |mut c: C<'_>, offset: u64, len: u64| {
        let ctx = c.data_mut();
        let max = ctx.shared.limits.max_output.0;
        if len > max {
            ctx.stopped_by = Some(Limit::Output);
            bail!(
                "extism `output_set`: an output of {len} bytes is above the output limit of {}",
                tern_runtime::ByteSize(max)
            );
        }
        if len > 0
            && let Err(e) = ctx.call.kernel.slice(offset, len)
        {
            return Err(fault(ctx, "output_set", e));
        }
        ctx.call.output = Some((offset, len));
        Ok(())
    })?;
    linker.func_wrap(m, "error_set", |mut c: C<'_>, offset: u64| {
        let ctx = c.data_mut();
        if offset == 0 {
            ctx.call.error = None;
            return Ok(());
        }
        if ctx.call.kernel.length(offset) == 0 {
            let e = Fault::OutOfBounds { offset, len: 1 };
            return Err(fault(ctx, "error_set", e));
        }
        ctx.call.error = Some(offset);
        Ok(())
    })?;
    linker.func_wrap(m, "error_get", |c: C<'_>| c.data().call.error.unwrap_or(0))?;
    linker.func_wrap(m, "output_offset", |c: C<'_>| {
        c.data().call.output.map_or(0, |(offset, _)| offset)
    })?;
    linker.func_wrap(m, "output_length", |c: C<'_>| {
        c.data().call.output.map_or(0, |(_, len)| len)
    })?;
    linker.func_wrap(m, "memory_bytes", |c: C<'_>| c.data().call.kernel.size())?;

    // Configuration and variables.
    linker.func_wrap(m, "config_get", |mut c: C<'_>, offset: u64| {
        let ctx = c.data_mut();
        let key = ctx.text("config_get", offset)?;
        let shared = ctx.shared.clone();
        match shared.grants.config.get(&key) {
            // An empty value allocates nothing: 0, as for a missing key.
            Some(value) => ctx.alloc_with("config_get", value.as_bytes()),
            None => Ok(0),
        }
    })?;
    linker.func_wrap(m, "var_get", |mut c: C<'_>, offset: u64| {
        let ctx = c.data_mut();
        let key = ctx.text("var_get", offset)?;
        let value = ctx.shared.vars.get(&key);
        match value {
            Some(value) => ctx.alloc_with("var_get", &value),
            None => Ok(0),
        }
    })?;
    linker.func_wrap(m, "var_set", |mut c: C<'_>, key: u64, value: u64| {
        let ctx = c.data_mut();
        let key = ctx.text("var_set", key)?;
        if value == 0 {
            ctx.shared.vars.remove(&key);
            return Ok(());
        }
        let value = ctx.block("var_set", value)?;
        let max = ctx.shared.limits.max_vars.0;
        ctx.shared.vars.set(key, value, max)
    })?;

    // Logging.
    for (name, level) in [
        ("log_trace", LogLevel::Trace),
        ("log_debug", LogLevel::Debug),
        ("log_info", LogLevel::Info),
        ("log_warn", LogLevel::Warn),
        ("log_error", LogLevel::Error),
    ] {
        linker.func_wrap(m, name, move |mut c: C<'_>, offset: u64| {
            c.data_mut().log(level, offset)
        })?;
    }
    // The PDKs skip logging below this level; i32::MAX is "off".
    linker.func_wrap(m, "get_log_level", |c: C<'_>| {
        c.data()
            .shared
            .log_level
            .map_or(i32::MAX, |level| level as i32)
    })?;

    http::add_to_linker(linker)
}

/// Copies the output a call set out of the ABI's memory.
pub(crate) fn take_output(state: &mut CallState) -> Result<Vec<u8>> {
    let Some((offset, len)) = state.output else {
        return Ok(Vec::new());
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    // Checked at `output_set`, but the plugin may have freed it since.
    match state.kernel.slice(offset, len) {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(_) => {
            bail!("extism: the output block at offset {offset} was freed before the call ended")
        }
    }
}
