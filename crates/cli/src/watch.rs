//! The file watcher of `tern up --watch`: maps changed files to the
//! components whose `build.watch` globs match them, waits for the edits to
//! settle, and asks for a reload that rebuilds those components. When the
//! manifest changes, what is watched follows it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher};
use tern_manifest::{Build, Manifest};
use tern_runtime::{Error, Result};

use crate::build;
use crate::reload::Reloads;

/// How long the files must stay quiet before a rebuild starts: an editor's
/// save or a `git checkout` is many events.
const SETTLE: Duration = Duration::from_millis(250);

/// Directories that hold build output and dependencies, never sources:
/// a build writing there must not trigger another build.
pub(crate) const IGNORED_DIRS: [&str; 6] = [
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
    /// Components with a build entry: the entry, its absolute workdir and
    /// its watched globs (`*` stops at `/`; `**` crosses directories).
    built: Vec<(String, Build, PathBuf, GlobSet)>,
    /// Every component's binary.
    binaries: Vec<(String, PathBuf)>,
}

impl Targets {
    fn new(manifest: &Manifest) -> Result<Targets> {
        let mut built = Vec::new();
        let mut binaries = Vec::new();
        for component in manifest.components.values() {
            if let Some(build) = &component.build {
                let globs = globs(&build.watch)?;
                let workdir = absolute(&build.workdir)?;
                built.push((component.id.clone(), build.clone(), workdir, globs));
            }
            // A downloaded binary changes only with the manifest.
            if let Some(source) = component.source.file() {
                binaries.push((component.id.clone(), absolute(source)?));
            }
        }
        Ok(Targets {
            manifest: absolute(&manifest.path)?,
            built,
            binaries,
        })
    }

    /// The directories to watch: recursively when any component needs it.
    fn roots(&self) -> BTreeMap<PathBuf, bool> {
        let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut roots = BTreeMap::new();
        let mut add = |dir: PathBuf, recursive: bool| {
            *roots.entry(dir).or_insert(false) |= recursive;
        };
        add(parent(&self.manifest), false);
        for (_, _, workdir, globs) in &self.built {
            if !globs.is_empty() {
                add(workdir.clone(), true);
            }
        }
        for (id, binary) in &self.binaries {
            if !self.is_built(id) {
                add(parent(binary), false);
            }
        }
        roots
    }

    fn is_built(&self, id: &str) -> bool {
        self.built.iter().any(|(built, ..)| built == id)
    }

    /// Adds to `changes` what a change to `path` calls for; whether it
    /// called for anything.
    fn classify(&self, path: &Path, changes: &mut Changes) -> bool {
        let mut relevant = false;
        if path == self.manifest {
            changes.manifest = true;
            relevant = true;
        }
        for (id, _, workdir, globs) in &self.built {
            if let Ok(relative) = path.strip_prefix(workdir)
                && !relative.components().any(|c| {
                    matches!(c, Component::Normal(name) if IGNORED_DIRS.iter().any(|d| name == *d))
                })
                && globs.is_match(relative)
            {
                changes.rebuild.insert(id.clone());
                relevant = true;
            }
        }
        if self
            .binaries
            .iter()
            .any(|(id, binary)| path == binary && !self.is_built(id))
        {
            changes.manifest = true;
            relevant = true;
        }
        relevant
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
/// process lives.
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
            // When the pending changes are due: SETTLE after the last
            // relevant event (an event nobody watches for does not delay).
            let mut due: Option<Instant> = None;
            loop {
                let event = match due {
                    Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(event) => event,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let mut done = std::mem::take(&mut changes);
                            due = None;
                            if done.manifest {
                                let (new, changed) = follow(&mut watcher, targets);
                                targets = new;
                                done.rebuild.extend(changed);
                            }
                            reloads.request(done.rebuild.into_iter().collect());
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    },
                    None => match rx.recv() {
                        Ok(event) => event,
                        Err(_) => return,
                    },
                };
                match event {
                    Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                        let mut relevant = false;
                        for path in &event.paths {
                            relevant |= targets.classify(path, &mut changes);
                        }
                        if relevant {
                            due = Some(Instant::now() + SETTLE);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => crate::log::say(&format!("tern: watching files: {error}")),
                }
            }
        })?;
    Ok(())
}

/// A `build.watch` list as one set: `*` stops at `/`, `**` crosses
/// directories; relative to the build's workdir.
pub(crate) fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut globs = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(Error::msg)?;
        globs.add(glob);
    }
    globs.build().map_err(Error::msg)
}

fn watch(watcher: &mut impl Watcher, dir: &Path, recursive: bool) -> Result<()> {
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
/// their directories, and the components to build because their `build`
/// entry is new or changed or their binary is missing. The old targets if
/// the manifest does not load (the reload reports why).
fn follow(watcher: &mut impl Watcher, old: Targets) -> (Targets, Vec<String>) {
    let Ok(manifest) = tern_manifest::load_with(&old.manifest, build::UNBUILT) else {
        return (old, Vec::new());
    };
    let Ok(new) = Targets::new(&manifest) else {
        return (old, Vec::new());
    };
    let (before, after) = (old.roots(), new.roots());
    for (dir, recursive) in &before {
        if after.get(dir) != Some(recursive) {
            let _ = watcher.unwatch(dir);
        }
    }
    for (dir, recursive) in &after {
        if before.get(dir) != Some(recursive)
            && let Err(error) = watch(watcher, dir, *recursive)
        {
            crate::log::say(&format!("tern: {error}"));
        }
    }
    let changed = new
        .built
        .iter()
        .filter(|(id, build, ..)| {
            let was = old.built.iter().find(|(old_id, ..)| old_id == id);
            let missing = manifest
                .components
                .get(id)
                .is_some_and(|c| c.source.file().is_some_and(|path| !path.exists()));
            missing || was.is_none_or(|(_, old_build, ..)| old_build != build)
        })
        .map(|(id, ..)| id.clone())
        .collect();
    (new, changed)
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
