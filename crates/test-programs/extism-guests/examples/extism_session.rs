//! Instance lifetime: `incr` increments a counter kept in the plug-in's
//! linear memory (a static, not an Extism var) and answers it in decimal,
//! so "1" on every call means each call gets a fresh instance and "1", "2",
//! ... means the instance lives on between calls.

use std::sync::atomic::{AtomicU64, Ordering};

use extism_pdk::{FnResult, plugin_fn};

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[plugin_fn]
pub fn incr() -> FnResult<String> {
    Ok((COUNTER.fetch_add(1, Ordering::Relaxed) + 1).to_string())
}
