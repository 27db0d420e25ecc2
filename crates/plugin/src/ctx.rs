//! What a plugin instance's store holds: its WASI context, its memory
//! budget, the Extism ABI's state for the call, and the plugin's shared
//! state (configuration, variables).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::extism::CallState;
use crate::plugin::Shared;
use crate::report::{Limit, LogLevel, LogLine};

/// A plugin instance's store data.
pub struct PluginCtx {
    pub(crate) wasi: Wasi,
    pub(crate) budget: Budget,
    pub(crate) call: CallState,
    pub(crate) shared: Arc<Shared>,
    pub(crate) logs: Logs,
    /// A limit a host call ran into, for the report.
    pub(crate) stopped_by: Option<Limit>,
    /// Keeps the epoch moving while the plugin's code may run (a call, or
    /// instantiating), not while a session waits between calls.
    pub(crate) running: Option<tern_runtime::Running>,
}

/// The WASI context, for the kind of program the plugin is.
pub(crate) enum Wasi {
    /// None: the plugin imports no WASI.
    None,
    /// A core module (preview 1).
    P1(WasiP1Ctx),
    /// A component (WASI 0.2).
    P2 { ctx: WasiCtx, table: ResourceTable },
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        match &mut self.wasi {
            Wasi::P2 { ctx, table } => WasiCtxView { ctx, table },
            _ => unreachable!("only a component's store is asked for WASI 0.2"),
        }
    }
}

impl PluginCtx {
    pub(crate) fn p1(&mut self) -> &mut WasiP1Ctx {
        match &mut self.wasi {
            Wasi::P1(ctx) => ctx,
            _ => unreachable!("only a WASI module's store is asked for preview 1"),
        }
    }

    /// Bytes the Extism memory may still grow by.
    pub(crate) fn kernel_budget(&self) -> u64 {
        self.budget
            .max
            .saturating_sub(self.budget.total(self.call.kernel.cost()))
    }

    /// Notes that the Extism memory grew, for the peak.
    pub(crate) fn kernel_grew(&mut self) {
        let total = self.budget.total(self.call.kernel.cost());
        self.budget.peak = self.budget.peak.max(total);
    }
}

/// Linear memory (and tables) granted so far, against the plugin's limit;
/// the Extism memory counts against the same limit.
pub(crate) struct Budget {
    pub(crate) max: u64,
    pub(crate) linear: u64,
    pub(crate) peak: u64,
    pub(crate) refused: bool,
}

impl Budget {
    pub(crate) fn new(max: u64) -> Self {
        Budget {
            max,
            linear: 0,
            peak: 0,
            refused: false,
        }
    }

    fn total(&self, kernel: u64) -> u64 {
        self.linear.saturating_add(kernel)
    }

    fn grow(&mut self, current: usize, desired: usize, kernel: u64) -> bool {
        let linear = self
            .linear
            .saturating_add(desired.saturating_sub(current) as u64);
        let total = linear.saturating_add(kernel);
        if total > self.max {
            self.refused = true;
            return false;
        }
        self.linear = linear;
        self.peak = self.peak.max(total);
        true
    }
}

impl PluginCtx {
    pub(crate) fn limiter(&mut self) -> &mut dyn wasmtime::ResourceLimiter {
        self
    }
}

impl wasmtime::ResourceLimiter for PluginCtx {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let kernel = self.call.kernel.cost();
        Ok(self.budget.grow(current, desired, kernel))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let size = size_of::<usize>();
        let kernel = self.call.kernel.cost();
        Ok(self.budget.grow(
            current.saturating_mul(size),
            desired.saturating_mul(size),
            kernel,
        ))
    }
}

/// Log lines of a call, kept up to a limit.
#[derive(Default)]
pub(crate) struct Logs {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) bytes: u64,
    pub(crate) kept: u64,
    pub(crate) truncated: bool,
}

impl Logs {
    pub(crate) fn push(&mut self, level: LogLevel, message: &[u8], max: u64) {
        let len = message.len() as u64;
        self.bytes = self.bytes.saturating_add(len);
        if self.kept.saturating_add(len) > max {
            self.truncated = true;
            return;
        }
        self.kept += len;
        self.lines.push(LogLine {
            level,
            message: String::from_utf8_lossy(message).into_owned(),
        });
    }
}
