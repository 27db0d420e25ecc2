//! A Spin component's `files` when they are more than whole directories:
//! glob patterns (`"*.html"`, `"static/**/*.css"`) and `exclude_files`.
//!
//! A guest sees directories, not single files, so the files that match are
//! gathered into a directory of their own, laid out as the guest sees them
//! (a pattern's file at its path from the app directory; a directory
//! entry's files under its `destination`), and that directory is mounted at
//! `/`. Files are hard-linked where the file system allows, else copied.
//!
//! The directory is `.tern/spin-files/NAME-HASH` beside the manifest, the
//! hash taken over what it holds (each file's place, path, size and
//! modification time): a start whose files have not changed reuses it, and
//! a changed file makes a new one, so an app version still serving during
//! a reload keeps reading its own. Nothing outside the app directory is
//! taken (a symbolic link that leads out of it is refused), and Tern's own
//! `.tern` directory is never matched.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Where the gathered files go, under the manifest's directory.
pub(crate) const STAGING_DIR: &str = ".tern/spin-files";

/// The most files one component's `files` may gather.
pub(crate) const MAX_FILES: usize = 100_000;

/// One `files` entry.
pub(crate) enum Entry {
    /// A glob pattern, relative to the app directory.
    Pattern(globset::GlobMatcher),
    /// A directory (relative to the app directory) and where its files go.
    Directory { source: String, destination: String },
}

/// The gathered directory, relative to the app directory, and the files
/// it holds, as paths in the app directory.
pub(crate) struct Staged {
    pub(crate) dir: String,
    pub(crate) sources: Vec<PathBuf>,
}

/// Gathers the files `entries` name, but those `exclude` matches, into a
/// directory named after `name`. Errors name what is wrong in one line.
pub(crate) fn stage(
    base: &Path,
    name: &str,
    entries: &[Entry],
    exclude: &globset::GlobSet,
) -> Result<Staged, String> {
    let root = base
        .canonicalize()
        .map_err(|e| format!("reading the app directory: {e}"))?;
    // Guest path (relative, `/`-separated) to the file in the app directory.
    let mut placed: BTreeMap<String, Placed> = BTreeMap::new();
    let mut walker = Walker {
        base,
        root: &root,
        exclude,
        placed: &mut placed,
    };
    for entry in entries {
        match entry {
            Entry::Pattern(pattern) => {
                let start = literal_prefix(pattern.glob().glob());
                walker.walk(&start, &mut |relative| {
                    pattern.is_match(relative).then(|| relative.to_owned())
                })?;
            }
            Entry::Directory {
                source,
                destination,
            } => {
                let source: Vec<_> = Path::new(source)
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(part) => Some(part.to_string_lossy()),
                        _ => None,
                    })
                    .collect();
                let source = source.join("/");
                let destination = destination.trim_matches('/');
                walker.walk(Path::new(&source), &mut |relative| {
                    let inside = match source.as_str() {
                        "" => relative,
                        dir => relative.strip_prefix(dir).unwrap_or(relative),
                    }
                    .trim_start_matches('/');
                    Some(if destination.is_empty() {
                        inside.to_owned()
                    } else {
                        format!("{destination}/{inside}")
                    })
                })?;
            }
        }
    }

    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (guest, Placed { real: file, .. }) in &placed {
        let meta = fs::metadata(file).map_err(|e| io_problem(&root, file, &e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        (guest, file, meta.len(), modified).hash(&mut hasher);
    }
    let dir = format!("{STAGING_DIR}/{name}-{:016x}", hasher.finish());
    let target = base.join(&dir);
    if !target.is_dir() {
        fill(base, &target, &placed).map_err(|e| format!("gathering the files: {e}"))?;
    }
    Ok(Staged {
        dir,
        sources: placed.into_values().map(|p| p.written).collect(),
    })
}

/// A file to gather: where it really is, and its path as the app
/// directory names it (`base` joined with its path from there).
struct Placed {
    real: PathBuf,
    written: PathBuf,
}

/// Walks the app directory for `stage`.
struct Walker<'a> {
    base: &'a Path,
    root: &'a Path,
    exclude: &'a globset::GlobSet,
    placed: &'a mut BTreeMap<String, Placed>,
}

impl Walker<'_> {
    /// Visits every file under `start` (relative to the root); `place`
    /// answers where the guest sees a file, given its `/`-separated path
    /// from the root, or `None` to leave it out.
    fn walk(
        &mut self,
        start: &Path,
        place: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<(), String> {
        let mut pending = vec![self.root.join(start)];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => continue,
                Err(e) => return Err(io_problem(self.root, &dir, &e)),
            };
            for entry in entries {
                let path = entry.map_err(|e| io_problem(self.root, &dir, &e))?.path();
                let relative = relative_text(self.root, &path);
                if relative == ".tern" || relative.starts_with(".tern/") {
                    continue;
                }
                // Follows links, but only to places inside the app directory.
                let real = path
                    .canonicalize()
                    .map_err(|e| io_problem(self.root, &path, &e))?;
                if !real.starts_with(self.root) {
                    return Err(format!(
                        "`{relative}` is a link to a place outside the app directory"
                    ));
                }
                let meta = fs::metadata(&real).map_err(|e| io_problem(self.root, &path, &e))?;
                if meta.is_dir() {
                    if path.is_symlink() {
                        // Its files are reached through the directory it
                        // names, if a pattern wants them: no loops.
                        continue;
                    }
                    pending.push(path);
                    continue;
                }
                if self.exclude.is_match(&relative) {
                    continue;
                }
                if let Some(guest) = place(&relative) {
                    let written = self.base.join(&relative);
                    self.placed.entry(guest).or_insert(Placed { real, written });
                    if self.placed.len() > MAX_FILES {
                        return Err(format!(
                            "more than {MAX_FILES} files; mount a directory with {{ source = \"DIR\", destination = \"/DIR\" }} instead"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Fills `target` with `placed`: into a fresh directory beside it, renamed
/// into place once whole.
fn fill(base: &Path, target: &Path, placed: &BTreeMap<String, Placed>) -> io::Result<()> {
    let parent = base.join(STAGING_DIR);
    fs::create_dir_all(&parent)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = parent.join(format!(".new-{}-{nanos}", std::process::id()));
    fs::create_dir(&temp)?;
    let filled = (|| {
        for (guest, Placed { real: file, .. }) in placed {
            let to = temp.join(guest);
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir)?;
            }
            if fs::hard_link(file, &to).is_err() {
                fs::copy(file, &to)?;
            }
        }
        fs::rename(&temp, target)
    })();
    if filled.is_err() {
        let _ = fs::remove_dir_all(&temp);
        // Another start of the same app may have made it meanwhile.
        if target.is_dir() {
            return Ok(());
        }
    }
    filled
}

/// The directory a pattern's matches all lie under: its leading path
/// segments that hold no glob syntax.
fn literal_prefix(pattern: &str) -> PathBuf {
    let segments: Vec<&str> = pattern.split('/').collect();
    let literal = segments
        .iter()
        .take(segments.len().saturating_sub(1))
        .take_while(|s| !s.contains(['*', '?', '[', ']', '{', '}', '\\']))
        .filter(|s| !s.is_empty() && **s != ".");
    literal.collect()
}

/// Why `pattern` cannot be a `files` or `exclude_files` pattern, if it
/// cannot: it must stay inside the app directory.
pub(crate) fn pattern_problem(pattern: &str) -> Option<String> {
    let path = Path::new(pattern);
    if path.is_absolute() {
        return Some(format!(
            "\"{pattern}\" is absolute; patterns are relative to the app directory"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some(format!(
            "\"{pattern}\" leads out of the app directory with `..`"
        ));
    }
    None
}

/// `path` from `root`, `/`-separated.
fn relative_text(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

/// An I/O error about `path`, named from the app directory (never the
/// host's absolute path).
fn io_problem(root: &Path, path: &Path, error: &io::Error) -> String {
    let relative = relative_text(root, path);
    let name = if relative.is_empty() { "." } else { &relative };
    format!("reading `{name}`: {}", crate::resolve::describe_io(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("static/**/*.css"), Path::new("static"));
        assert_eq!(literal_prefix("*.html"), Path::new(""));
        assert_eq!(literal_prefix("a/b/c.txt"), Path::new("a/b"));
        assert_eq!(literal_prefix("./a/*/x"), Path::new("a"));
        assert_eq!(literal_prefix("a/{b,c}/x"), Path::new("a"));
    }

    #[test]
    fn patterns_stay_inside() {
        assert!(pattern_problem("/etc/*").is_some());
        assert!(pattern_problem("../*").is_some());
        assert!(pattern_problem("a/../../b").is_some());
        assert!(pattern_problem("static/**/*").is_none());
    }
}
