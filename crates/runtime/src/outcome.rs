//! How a guest run ended, and how wasmtime's errors map onto that.

use std::time::Duration;

use wasmtime::{Result, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use crate::limits::{Limits, MemoryLimiter};
use tern_manifest::units::ByteSize;

/// How a guest run ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The guest called `exit(code)`, or returned from `_start` (code 0).
    /// A preview 1 module's code is 0 to 125; a component's is 0 or 1
    /// from `wasi:cli/exit.exit`, or 0 to 255 from `exit-with-code`.
    Exited(i32),
    /// A preview 1 module called `proc_exit` with a status WASI does not
    /// allow: 126 or more, or negative as the guest's `exit(int)` saw it.
    /// (Those would pass for a shell's or a signal's status, Tern's own 134
    /// among them; wasmtime-wasi refuses them too.)
    InvalidExit(i32),
    /// An `--invoke`d function returned these values, as text: numbers for
    /// a core module, WAVE for a component (strings quoted, records as
    /// `{x: 1, y: 2}`).
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

/// Maps a guest's result to an [`Outcome`]; errors that are not the
/// guest's doing stay errors.
pub(crate) fn finish(
    result: Result<Outcome>,
    limiter: &MemoryLimiter,
    limits: &Limits,
) -> Result<Outcome> {
    let err = match result {
        Ok(outcome) => return Ok(outcome),
        Err(err) => err,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Ok(Outcome::Exited(exit.0));
    }
    if let Some(InvalidExit(status)) = err.downcast_ref::<InvalidExit>() {
        return Ok(Outcome::InvalidExit(*status));
    }
    let Some(trap) = err.downcast_ref::<Trap>() else {
        return Err(without_backtrace(err));
    };
    let note = match trap {
        Trap::Interrupt => return Ok(Outcome::TimedOut(limits.timeout.unwrap_or_default())),
        Trap::OutOfFuel => return Ok(Outcome::OutOfFuel(limits.fuel.unwrap_or_default())),
        Trap::StackOverflow => Some(format!("the wasm stack limit is {} (raise it with --max-stack)", limits.max_stack)),
        _ => limiter.refused.map(|bytes| {
            format!(
                "the guest asked for {} of memory in all, above the limit of {} (raise it with --max-memory)",
                ByteSize(bytes as u64),
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

/// What preview 1's `proc_exit` (as Tern links it) fails with for a status
/// outside WASI's 0 to 125.
#[derive(Debug)]
pub(crate) struct InvalidExit(pub(crate) i32);

impl std::fmt::Display for InvalidExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {} is outside WASI's 0 to 125", self.0)
    }
}

impl std::error::Error for InvalidExit {}

/// A host call that failed the guest (not a trap, not an exit) carries the
/// guest's backtrace as the outermost part of its message: one line is
/// kept, the rest is the guest's business.
fn without_backtrace(err: wasmtime::Error) -> wasmtime::Error {
    if err.downcast_ref::<WasmBacktrace>().is_none() {
        return err;
    }
    let parts: Vec<String> = err
        .chain()
        .map(|cause| cause.to_string())
        .filter(|part| !part.starts_with("error while executing at wasm backtrace"))
        .collect();
    wasmtime::Error::msg(parts.join(": "))
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
