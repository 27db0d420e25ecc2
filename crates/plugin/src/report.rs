//! What a call cost and how it ended, in the terms operators of plugin
//! platforms use (Shopify Functions reports the same figures).

use std::fmt;
use std::time::Duration;

/// The figures of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Instructions run (wasmtime fuel consumed).
    pub instructions: u64,
    /// The most linear memory the instance held, in bytes, with the Extism
    /// ABI's host-side memory counted in.
    pub peak_memory: u64,
    /// Wall time of the call, instantiation included.
    pub wall_time: Duration,
    /// Bytes of input.
    pub input_bytes: u64,
    /// Bytes of output.
    pub output_bytes: u64,
    /// Bytes the plugin logged (all of them, also those dropped).
    pub log_bytes: u64,
    /// The log lines kept, up to the log limit.
    pub logs: Vec<LogLine>,
    /// Whether log lines were dropped at the log limit.
    pub logs_truncated: bool,
    /// The limit that stopped the call, if one did.
    pub stopped_by: Option<Limit>,
}

/// One line a plugin logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: LogLevel,
    /// Its text (invalid UTF-8 replaced).
    pub message: String,
}

/// A log level, in Extism's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Finest detail.
    Trace = 0,
    /// Debugging detail.
    Debug,
    /// Normal information.
    Info,
    /// Something is off.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

/// A limit a call ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The instruction budget (fuel).
    Fuel,
    /// The wall-clock timeout.
    Time,
    /// The memory limit.
    Memory,
    /// The wasm stack.
    Stack,
    /// The input size limit.
    Input,
    /// The output size limit.
    Output,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Fuel => "fuel",
            Limit::Time => "timeout",
            Limit::Memory => "memory",
            Limit::Stack => "stack",
            Limit::Input => "input size",
            Limit::Output => "output size",
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instructions: {}, peak memory: {}, time: {:.3?}, input: {} B, output: {} B, logs: {} B",
            self.instructions,
            tern_runtime::ByteSize(self.peak_memory),
            self.wall_time,
            self.input_bytes,
            self.output_bytes,
            self.log_bytes,
        )?;
        if let Some(limit) = self.stopped_by {
            write!(f, ", stopped by the {limit} limit")?;
        }
        Ok(())
    }
}

/// Why a call failed, with what it cost up to then.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// What went wrong, in one line.
    pub message: String,
    /// What the call cost until it stopped.
    pub report: Box<Report>,
}

impl CallError {
    pub(crate) fn new(message: impl Into<String>, report: Report) -> Self {
        CallError {
            message: message.into(),
            report: Box::new(report),
        }
    }

    /// The limit that stopped the call, if one did.
    pub fn limit(&self) -> Option<Limit> {
        self.report.stopped_by
    }
}
