//! A Spin component's `files` when they are more than whole directories:
//! glob patterns (`"*.html"`, `"static/**/*.css"`) and `exclude_files`.
//!
//! A guest sees directories, not single files, so the files that match are
//! gathered into a directory of their own, laid out as the guest sees them
//! (a pattern's file at its path from the app directory; a directory
//! entry's files under its `destination`), and that directory is mounted at
//! `/`. Files are copied (`copy_file_range`, which some file systems turn
//! into a shared extent), so that a later write to an original never
//! reaches a version already serving.
//!
//! The directory is `.tern/spin-files/NAME-HASH` beside the manifest, the
//! hash taken over what it holds (each file's place, path, size,
//! modification and change times and inode): a start whose files have not
//! changed reuses it, and a changed file makes a new one, so an app version
//! still serving during a reload keeps reading its own. Nothing outside the
//! app directory is taken (a matched link that leads out of it is refused),
//! and Tern's own `.tern` directory is never matched. The walk goes only
//! where a pattern can match (from its literal prefix, as deep as it
//! reaches), and follows links to directories inside the app directory
//! once each.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt as _;
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
                let glob = pattern.glob().glob();
                let start = literal_prefix(glob);
                // Without `**`, a match lies as deep as the pattern goes.
                let depth = (!glob.contains("**")).then(|| {
                    let segments = glob.split('/').filter(|s| !s.is_empty() && *s != ".");
                    segments
                        .count()
                        .saturating_sub(start.components().count() + 1)
                });
                walker.walk(&start, depth, &mut |relative| {
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
                let dir = base.join(&source);
                if !dir.is_dir() {
                    return Err(format!(
                        "`{}` is not a directory in the app directory; a table mounts a directory",
                        if source.is_empty() { "." } else { &source }
                    ));
                }
                walker.walk(Path::new(&source), None, &mut |relative| {
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
        let identity = (meta.ino(), meta.ctime(), meta.ctime_nsec());
        (guest, file, meta.len(), modified, identity).hash(&mut hasher);
    }
    for inside in [".tern", STAGING_DIR] {
        if fs::symlink_metadata(base.join(inside)).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "`{inside}` is a symbolic link; Tern gathers the files in a directory of its own there"
            ));
        }
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
    /// Visits the files under `start` (relative to the root), at most
    /// `depth` directories down (`None`: any depth); `place` answers where
    /// the guest sees a file, given its `/`-separated path from the root,
    /// or `None` to leave it out. Only a file placed is looked at closely:
    /// an unreadable directory, a dangling link or a link out of the app
    /// directory matters only if a pattern wants what it holds.
    fn walk(
        &mut self,
        start: &Path,
        depth: Option<usize>,
        place: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Result<(), String> {
        let first = self.root.join(start);
        let mut visited = std::collections::HashSet::new();
        let mut pending = vec![(first.clone(), 0)];
        while let Some((dir, level)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if dir == first && e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_problem(self.root, &dir, &e));
                }
                // Nothing to gather there, or a directory Tern may not read.
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let relative = relative_text(self.root, &path);
                if relative == ".tern" || relative.starts_with(".tern/") {
                    continue;
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                // A link is followed to what it names, if that stays
                // inside; a link to nothing (an editor's lock file) holds
                // nothing to gather.
                let target = if kind.is_symlink() {
                    match path.canonicalize() {
                        Ok(real) if real.starts_with(self.root) => Some(real),
                        Ok(_) => None,
                        Err(_) => continue,
                    }
                } else {
                    Some(path.clone())
                };
                let is_dir = target.as_deref().is_some_and(Path::is_dir);
                if is_dir {
                    let deeper = depth.is_none_or(|d| level < d);
                    let real = target.and_then(|t| t.canonicalize().ok());
                    if deeper && real.is_some_and(|real| visited.insert(real)) {
                        pending.push((path, level + 1));
                    }
                    continue;
                }
                if self.exclude.is_match(&relative) {
                    continue;
                }
                let Some(guest) = place(&relative) else {
                    continue;
                };
                let Some(real) = target.and_then(|t| t.canonicalize().ok()) else {
                    return Err(format!(
                        "`{relative}` is a link to a place outside the app directory"
                    ));
                };
                if !real.starts_with(self.root) {
                    return Err(format!(
                        "`{relative}` is a link to a place outside the app directory"
                    ));
                }
                let written = self.base.join(&relative);
                self.placed.entry(guest).or_insert(Placed { real, written });
                if self.placed.len() > MAX_FILES {
                    return Err(format!(
                        "more than {MAX_FILES} files; mount a directory with {{ source = \"DIR\", destination = \"/DIR\" }} instead"
                    ));
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
            // A copy, not a link: a later write to the original must not
            // reach a version already serving.
            fs::copy(file, &to)?;
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
