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
