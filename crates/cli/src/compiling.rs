//! The compile cache as `run` and `serve` open it, and the note shown while
//! a large program compiles.

use std::io::IsTerminal as _;

use tern_runtime::{ByteSize, CompileCache, Refused, Result};

/// Opens the compile cache unless `no_cache`. Compiling works without it,
/// so a cache that cannot be opened is `None` plus the reason, for the
/// caller to report as it sees fit. A cache directory, key directory or key
/// that someone else could have written is an error: it may have been
/// tampered with, and working around it silently would hide that.
pub fn open_cache(no_cache: bool) -> Result<(Option<CompileCache>, Option<String>)> {
    if no_cache {
        return Ok((None, None));
    }
    match CompileCache::open_default() {
        Ok(cache) => Ok((cache, None)),
        Err(e) if e.is::<Refused>() => Err(e),
        Err(e) => Ok((None, Some(e.to_string()))),
    }
}

/// Says that `what` is being compiled: only on a terminal, and only when
/// compiling takes long enough to wonder.
pub fn note_compile(what: &str, size: usize, cached: bool) {
    if size >= 1 << 20 && std::io::stderr().is_terminal() {
        let later = if cached {
            "later runs use the compile cache"
        } else {
            "--no-cache: compiled on every run"
        };
        crate::log::say(&format!(
            "tern: compiling {what} ({}); {later}",
            ByteSize(size as u64)
        ));
    }
}
