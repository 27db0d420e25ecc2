//! The part of WASI preview 1 that filters built for wasm32-wasip1 import,
//! as proxies provide it: standard output and error become log lines,
//! clocks and randomness work, and there are no arguments, no environment
//! and no files. Written here rather than taken from wasmtime-wasi, whose
//! synchronous functions block on a runtime of their own, which a filter
//! callback (running on a server's runtime thread) must not do. Any other
//! WASI function traps when called.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker, Result, format_err};

use crate::config::LogLevel;
use crate::vm::VmCtx;

const MODULE: &str = "wasi_snapshot_preview1";

const SUCCESS: u32 = 0;
const BADF: u32 = 8;
const FAULT: u32 = 21;
const INVAL: u32 = 28;

/// The most one `fd_write` hands to the log; the rest is counted as
/// written and dropped.
const MAX_WRITE: usize = 16 << 10;

/// The most one `random_get` fills.
const MAX_RANDOM: usize = 64 << 10;

type Ctx<'a> = Caller<'a, VmCtx>;

fn memory(caller: &mut Ctx<'_>) -> Option<wasmtime::Memory> {
    caller.data().memory
}

fn write_bytes(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> bool {
    let Some(memory) = memory(caller) else {
        return false;
    };
    let start = ptr as usize;
    let Some(slot) = start
        .checked_add(bytes.len())
        .and_then(|end| memory.data_mut(&mut *caller).get_mut(start..end))
    else {
        return false;
    };
    slot.copy_from_slice(bytes);
    true
}

fn read_u32(caller: &mut Ctx<'_>, ptr: u32) -> Option<u32> {
    let memory = memory(caller)?;
    let start = ptr as usize;
    let bytes = memory.data(&*caller).get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Adds the WASI functions filters use to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<VmCtx>) -> Result<()> {
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut caller: Ctx<'_>, fd: u32, iovs: u32, count: u32, written: u32| {
            if fd != 1 && fd != 2 {
                return BADF;
            }
            let mut text = Vec::new();
            let mut total: u32 = 0;
            for i in 0..count {
                let Some(at) = i.checked_mul(8).and_then(|o| iovs.checked_add(o)) else {
                    return FAULT;
                };
                let (Some(ptr), Some(len)) = (
                    read_u32(&mut caller, at),
                    read_u32(&mut caller, at.wrapping_add(4)),
                ) else {
                    return FAULT;
                };
                let Some(memory) = memory(&mut caller) else {
                    return FAULT;
                };
                let start = ptr as usize;
                let Some(bytes) = start
                    .checked_add(len as usize)
                    .and_then(|end| memory.data(&caller).get(start..end))
                else {
                    return FAULT;
                };
                let room = MAX_WRITE.saturating_sub(text.len());
                text.extend_from_slice(&bytes[..bytes.len().min(room)]);
                total = total.saturating_add(len);
            }
            let level = if fd == 1 {
                LogLevel::Info
            } else {
                LogLevel::Error
            };
            let text = String::from_utf8_lossy(&text);
            let ctx = caller.data();
            let config = &ctx.shared.config;
            if level >= config.log_level {
                for line in text.lines().filter(|l| !l.is_empty()) {
                    config.log.log(&config.name, level, ctx.request, line);
                }
            }
            if write_bytes(&mut caller, written, &total.to_le_bytes()) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut caller: Ctx<'_>, buf: u32, len: u32| {
            if len as usize > MAX_RANDOM {
                return INVAL;
            }
            let mut bytes = vec![0; len as usize];
            if getrandom::fill(&mut bytes).is_err() {
                return INVAL;
            }
            if write_bytes(&mut caller, buf, &bytes) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut caller: Ctx<'_>, clock: u32, _precision: u64, out: u32| {
            static START: OnceLock<Instant> = OnceLock::new();
            let nanos = match clock {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                1 => START.get_or_init(Instant::now).elapsed().as_nanos() as u64,
                _ => return INVAL,
            };
            if write_bytes(&mut caller, out, &nanos.to_le_bytes()) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    // No arguments and no environment: two zero counts.
    for sizes in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            MODULE,
            sizes,
            |mut caller: Ctx<'_>, count: u32, size: u32| {
                if write_bytes(&mut caller, count, &[0; 4])
                    && write_bytes(&mut caller, size, &[0; 4])
                {
                    SUCCESS
                } else {
                    FAULT
                }
            },
        )?;
    }
    for get in ["environ_get", "args_get"] {
        linker.func_wrap(MODULE, get, |_: Ctx<'_>, _: u32, _: u32| SUCCESS)?;
    }
    // No files: every descriptor is bad.
    linker.func_wrap(MODULE, "fd_close", |_: Ctx<'_>, _: u32| BADF)?;
    linker.func_wrap(MODULE, "fd_fdstat_get", |_: Ctx<'_>, _: u32, _: u32| BADF)?;
    linker.func_wrap(MODULE, "fd_prestat_get", |_: Ctx<'_>, _: u32, _: u32| BADF)?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: u32, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_: Ctx<'_>, _: u32, _: i64, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |_: Ctx<'_>, _: u32, _: u32, _: u32, _: u32| BADF,
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_: Ctx<'_>| SUCCESS)?;
    linker.func_wrap(MODULE, "proc_exit", |_: Ctx<'_>, code: u32| -> Result<()> {
        Err(format_err!("the filter called proc_exit({code})"))
    })?;
    Ok(())
}
