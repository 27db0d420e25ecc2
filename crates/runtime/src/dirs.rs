//! Where Tern keeps per-user state, following the XDG base directories.

use std::env;
use std::path::PathBuf;

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    let base = match env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env::var_os("HOME")?).join(fallback),
    };
    Some(base.join("tern"))
}

/// `$XDG_CACHE_HOME/tern`, else `~/.cache/tern`.
pub fn cache_dir() -> Option<PathBuf> {
    xdg("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_DATA_HOME/tern`, else `~/.local/share/tern`.
pub fn data_dir() -> Option<PathBuf> {
    xdg("XDG_DATA_HOME", ".local/share")
}
