//! Exit codes and error printing, in one place so they stay documented.

use std::process::ExitCode;

/// Tern itself failed: missing file, malformed wasm, bad grant, ...
pub const TERN_ERROR: ExitCode = ExitCode::FAILURE;
/// The guest ran past `--timeout` (as `timeout(1)` does).
pub const TIMEOUT: u8 = 124;
/// The guest trapped or ran out of fuel (128 + SIGABRT, as `wasmtime run`).
pub const TRAP: u8 = 134;

/// Prints `error: ` and the cause chain on one line.
pub fn print_error(err: &tern_runtime::Error) {
    let chain: Vec<String> = err.chain().map(|cause| cause.to_string()).collect();
    crate::log::say(&format!("error: {}", chain.join(": ")));
}

/// The process exit code for a guest's own exit code: codes a process
/// cannot carry become 1 rather than wrapping around to success.
pub fn guest_code(code: i32) -> ExitCode {
    u8::try_from(code)
        .map(ExitCode::from)
        .unwrap_or(ExitCode::FAILURE)
}
