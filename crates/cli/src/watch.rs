//! The file watcher of `tern up --watch`: maps changed files to the
//! components whose `build.watch` globs match them, waits for the edits to
//! settle, and asks for a reload that rebuilds those components.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode};
use tern_manifest::Manifest;
use tern_runtime::{Error, Result};

use crate::reload::Reloads;

/// How long the files must stay quiet before a rebuild starts: an editor's
/// save or a `git checkout` is many events.
const SETTLE: Duration = Duration::from_millis(250);

/// Directories that hold build output and dependencies, never sources:
/// a build writing there must not trigger another build.
const IGNORED_DIRS: [&str; 6] = [
    "target",
    "node_modules",
    ".git",
    ".tern",
    "__pycache__",
    ".venv",
];

/// What a changed file means.
struct Targets {
    manifest: PathBuf,
    /// Components with a build entry: workdir and watched globs.
    built: Vec<(String, PathBuf, GlobSet)>,
    /// Components without one: the binary itself is watched.
    binaries: Vec<(String, PathBuf)>,
}

impl Targets {
    fn new(manifest: &Manifest) -> Result<Targets> {
        let mut built = Vec::new();
        let mut binaries = Vec::new();
        for component in manifest.components.values() {
            match &component.build {
                Some(build) => {
                    let mut globs = GlobSetBuilder::new();
                    for pattern in &build.watch {
                        globs.add(Glob::new(pattern).map_err(Error::msg)?);
                    }
                    let globs = globs.build().map_err(Error::msg)?;
                    built.push((component.id.clone(), absolute(&build.workdir)?, globs));
                }
                None => binaries.push((component.id.clone(), absolute(&component.source)?)),
            }
        }
        Ok(Targets {
            manifest: absolute(&manifest.path)?,
            built,
            binaries,
        })
    }

    /// The directories to watch, and whether recursively.
    fn roots(&self) -> BTreeSet<(PathBuf, bool)> {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut roots = BTreeSet::new();
        roots.insert((parent(&self.manifest), false));
        for (_, workdir, globs) in &self.built {
            if !globs.is_empty() {
                roots.insert((workdir.clone(), true));
            }
        }
        for (_, binary) in &self.binaries {
            roots.insert((parent(binary), false));
        }
        roots
    }

    /// Adds to `changes` what a change to `path` calls for.
    fn classify(&self, path: &Path, changes: &mut Changes) {
        if path == self.manifest {
            changes.manifest = true;
        }
        for (id, workdir, globs) in &self.built {
            if let Ok(relative) = path.strip_prefix(workdir)
                && !relative.components().any(|c| {
                    matches!(c, Component::Normal(name) if IGNORED_DIRS.iter().any(|d| name == *d))
                })
                && globs.is_match(relative)
            {
                changes.rebuild.insert(id.clone());
            }
        }
        if self.binaries.iter().any(|(_, binary)| path == binary) {
            changes.manifest = true;
        }
    }
}

#[derive(Default)]
struct Changes {
    /// The manifest or an unbuilt binary changed: reload.
    manifest: bool,
    /// Components to rebuild, then reload.
    rebuild: BTreeSet<String>,
}

/// Watches `manifest`'s sources on a thread of its own for as long as the
/// process lives. When the manifest changes, what is watched follows it.
pub(crate) fn start(manifest: &Manifest, reloads: Reloads) -> Result<()> {
    let mut targets = Targets::new(manifest)?;
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)
        .map_err(|e| Error::msg(format!("cannot watch files: {e}")))?;
    for (dir, recursive) in targets.roots() {
        watch(&mut watcher, &dir, recursive)?;
    }
    std::thread::Builder::new()
        .name("tern-watch".into())
        .spawn(move || {
            let mut changes = Changes::default();
            loop {
                // Block for the first event, then gather until quiet.
                let event = if changes.manifest || !changes.rebuild.is_empty() {
                    match rx.recv_timeout(SETTLE) {
                        Ok(event) => event,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let done = std::mem::take(&mut changes);
                            if done.manifest {
                                targets = follow(&mut watcher, targets);
                            }
                            reloads.request(done.rebuild.into_iter().collect());
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                } else {
                    match rx.recv() {
                        Ok(event) => event,
                        Err(_) => return,
                    }
                };
                match event {
                    Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                        for path in &event.paths {
                            targets.classify(path, &mut changes);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => eprintln!("tern: watching files: {error}"),
                }
            }
        })?;
    Ok(())
}

fn watch(watcher: &mut impl notify::Watcher, dir: &Path, recursive: bool) -> Result<()> {
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(dir, mode)
        .map_err(|e| Error::msg(format!("cannot watch {}: {e}", dir.display())))
}

/// The targets of the manifest as it now reads, with the watcher moved to
/// their directories; the old targets if it does not load (the reload
/// reports why).
fn follow(watcher: &mut impl notify::Watcher, old: Targets) -> Targets {
    let Ok(new) = tern_manifest::load_unbuilt(&old.manifest)
        .map_err(|e| Error::msg(e.to_string()))
        .and_then(|m| Targets::new(&m))
    else {
        return old;
    };
    let (before, after) = (old.roots(), new.roots());
    for (dir, _) in before.difference(&after) {
        let _ = watcher.unwatch(dir);
    }
    for (dir, recursive) in after.difference(&before) {
        if let Err(error) = watch(watcher, dir, *recursive) {
            eprintln!("tern: {error}");
        }
    }
    new
}

fn absolute(path: &Path) -> Result<PathBuf> {
    // Canonical, so that event paths (absolute, links resolved) compare.
    match path.canonicalize() {
        Ok(path) => Ok(path),
        // A binary not built yet: canonicalize its directory.
        Err(_) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let name = path.file_name().unwrap_or_default();
            Ok(dir
                .canonicalize()
                .map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?
                .join(name))
        }
    }
}
