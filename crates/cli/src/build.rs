//! `tern build`: runs each component's build command, in parallel where the
//! machine allows, with a line of progress per component and, on failure,
//! the tail of the failing command's output.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use tern_manifest::{Build, LoadOptions, Manifest};
use tern_runtime::{Error, Result};

/// Arguments of `tern build`.
#[derive(Args)]
#[command(
    after_help = "Each `[component.NAME] build = { command = \"...\", workdir = \"...\" }` runs \
with `sh -c` in its workdir (default: the manifest's directory), with this tern's directory \
first on PATH. Components without a build entry are skipped."
)]
pub struct BuildArgs {
    /// The app's manifest, or a directory holding `tern.toml`
    #[arg(value_name = "PATH", default_value = ".")]
    path: PathBuf,
    /// Build only this component (repeatable)
    #[arg(long = "component", short = 'c', value_name = "NAME")]
    components: Vec<String>,
    /// Builds to run at once [default: one per CPU]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: Option<u32>,
}

/// How a manifest is read to build it, or to watch its sources: binaries
/// may be missing, and where they lead is not checked. Building gives a
/// guest nothing; serving checks that the app stays in its directory.
pub(crate) const UNBUILT: LoadOptions = LoadOptions {
    unbuilt: true,
    allow_outside_app_dir: true,
};

pub fn main(args: BuildArgs) -> Result<ExitCode> {
    let mut manifest = tern_manifest::load_with(&args.path, UNBUILT)?;
    // Components downloaded from a URL have nothing to build; fetched now,
    // the app serves without the network.
    if args.components.is_empty() {
        crate::serve::fetch_sources(&mut manifest)?;
    }
    let chosen = choose(&manifest, &args.components)?;
    if chosen.is_empty() {
        crate::log::say("tern: no component of this app has a `build` entry; nothing to build");
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = args.jobs.map_or_else(default_jobs, |n| n as usize);
    build(&chosen, jobs)?;
    Ok(ExitCode::SUCCESS)
}

/// One component's build.
pub struct Job<'m> {
    /// The component.
    pub id: &'m str,
    /// Its build entry.
    pub build: &'m Build,
    /// What the build makes: the component's `source`.
    source: &'m Path,
    /// Where what it was last built from is remembered.
    stamp: PathBuf,
}

/// The components named in `only` (all with a build entry when empty).
pub fn choose<'m>(manifest: &'m Manifest, only: &[String]) -> Result<Vec<Job<'m>>> {
    for name in only {
        match manifest.components.get(name) {
            None => {
                let defined: Vec<&str> = manifest.components.keys().map(String::as_str).collect();
                return Err(Error::msg(format!(
                    "no component named `{name}` in {}; defined: {}",
                    manifest.path.display(),
                    defined.join(", ")
                )));
            }
            Some(c) if c.build.is_none() => {
                return Err(Error::msg(format!(
                    "component `{name}` has no `build` entry in {}",
                    manifest.path.display()
                )));
            }
            Some(_) => {}
        }
    }
    let stamps = stamp_dir(manifest);
    Ok(manifest
        .components
        .values()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .filter_map(|c| {
            Some(Job {
                id: &c.id,
                build: c.build.as_ref()?,
                // A download has no build entry; a built component, a file.
                source: c.source.file()?,
                stamp: stamps.join(format!("{}.stamp", c.id)),
            })
        })
        .collect())
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Lines of a failed build's output shown in its error.
const TAIL_LINES: usize = 30;

/// Output kept per build: enough for [`TAIL_LINES`] long lines.
const TAIL_BYTES: usize = 64 << 10;

/// How long output may still arrive after the command exited.
const DRAIN: Duration = Duration::from_secs(1);

/// The last [`TAIL_BYTES`] or more of a build's output.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * TAIL_BYTES {
            self.0.drain(..self.0.len() - TAIL_BYTES);
        }
    }
}

/// How often a build that is still running is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Builds `components`, `jobs` at a time. Once one fails, the others
/// running finish but no new one starts; the error names the first that
/// failed and ends with the tail of its output.
pub fn build(components: &[Job<'_>], jobs: usize) -> Result<()> {
    let started = Instant::now();
    // Removed when this returns.
    let tern_path = path_with_tern();
    let path = tern_path.as_ref().map(|p| p.path.clone());
    let mut queue: VecDeque<_> = components.iter().collect();
    let mut running: Vec<(&str, Instant)> = Vec::new();
    let mut failure: Option<String> = None;
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        loop {
            while failure.is_none() && running.len() < jobs.max(1) {
                let Some(job) = queue.pop_front() else {
                    break;
                };
                let id = job.id;
                crate::log::say(&format!("tern: building {id}: {}", job.build.command));
                running.push((id, Instant::now()));
                let done = done_tx.clone();
                let path = path.clone();
                scope.spawn(move || {
                    let before = job.fingerprint();
                    let outcome = run(job.build, path.as_deref());
                    job.settle(before, outcome.is_ok());
                    let _ = done.send((id, outcome));
                });
            }
            if running.is_empty() {
                break;
            }
            match done_rx.recv_timeout(PROGRESS_EVERY) {
                Ok((id, outcome)) => {
                    let index = running.iter().position(|(r, _)| *r == id).unwrap_or(0);
                    let (_, since) = running.swap_remove(index);
                    let took = since.elapsed();
                    match outcome {
                        Ok(()) => {
                            crate::log::say(&format!("tern: built {id} in {}", seconds(took)))
                        }
                        Err(why) if failure.is_none() => {
                            failure = Some(format!("building component `{id}`: {why}"));
                        }
                        Err(why) => crate::log::say(&format!(
                            "tern: building {id} failed too: {}",
                            first(&why)
                        )),
                    }
                }
                Err(_) => {
                    let names: Vec<String> = running
                        .iter()
                        .map(|(id, since)| format!("{id} ({})", seconds(since.elapsed())))
                        .collect();
                    crate::log::say(&format!("tern: still building {}", names.join(", ")));
                }
            }
        }
    });
    drop(tern_path);
    match failure {
        Some(message) => Err(Error::msg(message)),
        None => {
            if components.len() > 1 {
                crate::log::say(&format!(
                    "tern: built {} components in {}",
                    components.len(),
                    seconds(started.elapsed())
                ));
            }
            Ok(())
        }
    }
}

/// Where `tern build` remembers what each component was last built from:
/// `.tern/build/` beside the manifest (ignored by the watcher).
fn stamp_dir(manifest: &Manifest) -> PathBuf {
    manifest.default_state_dir().join("build")
}

/// The first line of every stamp; a stamp of another format never matches.
const STAMP_FORMAT: &str = "tern build stamp 1\n";

/// Most directory entries looked at to fingerprint one build's inputs;
/// past it the build always runs.
const MAX_ENTRIES: usize = 100_000;

impl Job<'_> {
    /// Whether `tern up` may skip this build: it has `watch` globs, its
    /// `source` exists, and they, the files they match (each one's path,
    /// size and modification time), the command, its workdir and the
    /// `source` (size and modification time) are as they were after the
    /// last successful build.
    pub fn is_up_to_date(&self) -> bool {
        let Ok(recorded) = fs::read_to_string(&self.stamp) else {
            return false;
        };
        match (self.fingerprint(), output(self.source)) {
            (Some(inputs), Some(output)) => recorded == format!("{STAMP_FORMAT}{inputs}{output}"),
            _ => false,
        }
    }

    /// The build's inputs as text: the command, the workdir, and every file
    /// its `watch` globs match, in order. `None` without globs, or when
    /// they cannot be listed (then the build always runs).
    fn fingerprint(&self) -> Option<String> {
        if self.build.watch.is_empty() {
            return None;
        }
        let globs = crate::watch::globs(&self.build.watch).ok()?;
        let mut text = format!(
            "command {:?}\nworkdir {:?}\n",
            self.build.command, self.build.workdir
        );
        for (path, meta) in watched_files(&self.build.workdir, &globs)? {
            let _ = writeln!(text, "file {path:?} {}", describe(meta.as_ref()));
        }
        Some(text)
    }

    /// After the build: remembers what it was built from when it succeeded
    /// and its inputs did not change while it ran (`before` is their
    /// fingerprint from before it started); otherwise forgets, so that the
    /// next `tern up` builds. A stamp that cannot be written only costs a
    /// build.
    fn settle(&self, before: Option<String>, succeeded: bool) {
        let after = if succeeded { self.fingerprint() } else { None };
        let output = output(self.source);
        match (before, after, output) {
            (Some(before), Some(after), Some(output)) if before == after => {
                if let Some(dir) = self.stamp.parent() {
                    let _ = fs::create_dir_all(dir);
                }
                let _ = fs::write(&self.stamp, format!("{STAMP_FORMAT}{after}{output}"));
            }
            _ => {
                let _ = fs::remove_file(&self.stamp);
            }
        }
    }
}

/// The `source` a build made, as a stamp's last line; `None` when it is
/// missing.
fn output(source: &Path) -> Option<String> {
    let meta = fs::metadata(source).ok()?;
    Some(format!("source {source:?} {}\n", describe(Some(&meta))))
}

/// A file's size and modification time (nanoseconds), or `missing`.
fn describe(meta: Option<&fs::Metadata>) -> String {
    let Some(meta) = meta else {
        return "missing".to_owned();
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!(
        "{} bytes, modified {}.{:09}",
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    )
}

/// The files under `workdir` (relative to it) that `globs` match, sorted,
/// each with its metadata (a symlink's target's; `None` for a broken
/// one). Directories the watcher ignores (`target/`, `node_modules/`, ...)
/// are not entered, nor are symlinks to directories. `None` when a
/// directory cannot be read or there are more than [`MAX_ENTRIES`].
fn watched_files(
    workdir: &Path,
    globs: &globset::GlobSet,
) -> Option<Vec<(PathBuf, Option<fs::Metadata>)>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(workdir.join(&dir)).ok()? {
            let entry = entry.ok()?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return None;
            }
            let name = entry.file_name();
            let relative = dir.join(&name);
            if entry.file_type().ok()?.is_dir() {
                if !crate::watch::IGNORED_DIRS.iter().any(|d| name == *d) {
                    pending.push(relative);
                }
            } else if globs.is_match(&relative) {
                let meta = fs::metadata(workdir.join(&relative)).ok();
                found.push((relative, meta));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Some(found)
}

/// Runs one build command, its stdout and stderr captured together.
fn run(build: &Build, path: Option<&std::ffi::OsStr>) -> std::result::Result<(), String> {
    let started = Instant::now();
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| format!("cannot capture its output: {e}"))?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&build.command)
        .current_dir(&build.workdir)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| format!("cannot capture its output: {e}"))?,
        )
        .stderr(writer);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh in {}: {e}", build.workdir.display()))?;
    // The command's handles to the pipe went to the child; dropping ours
    // (inside `command`) lets the read end see EOF when the child exits.
    drop(command);
    // Read on a thread of its own: a process the build leaves running in
    // the background keeps the pipe open, and must not hold the build up.
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Tail::default();
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = reader.read(&mut chunk) {
            tail.push(&chunk[..n]);
        }
        let _ = done_tx.send(tail.0);
    });
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the command: {e}"))?;
    let output = done_rx.recv_timeout(DRAIN).unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    Err(format!(
        "`{}` {how} after {}{}",
        build.command,
        seconds(started.elapsed()),
        tail(&output)
    ))
}

/// The last [`TAIL_LINES`] lines of `output`, indented under a heading.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "; it printed nothing".to_owned();
    }
    let skip = lines.len().saturating_sub(TAIL_LINES);
    let heading = if skip > 0 {
        format!("; the last {TAIL_LINES} lines it printed:")
    } else {
        "; its output:".to_owned()
    };
    let mut out = heading;
    for line in &lines[skip..] {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

fn first(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// PATH with a directory holding only this `tern` first, so that a build
/// command runs `tern compose` with the same tern, without this tern's own
/// directory (`/usr/local/bin`, say) shadowing the user's toolchains.
struct TernPath {
    /// The directory, removed when this is dropped.
    _dir: tempfile::TempDir,
    /// The value of PATH for build commands.
    path: OsString,
}

/// Makes the [`TernPath`] for one round of builds. The directory has a
/// random name and mode 0700: another user on the machine can neither
/// predict it nor plant a tool in it before the builds run.
fn path_with_tern() -> Option<TernPath> {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = std::env::current_exe().ok()?;
    let dir = tempfile::Builder::new()
        .prefix("tern-path-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .ok()?;
    std::os::unix::fs::symlink(&exe, dir.path().join("tern")).ok()?;
    let rest = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let path = std::env::join_paths(
        std::iter::once(dir.path().to_owned()).chain(std::env::split_paths(&rest)),
    )
    .ok()?;
    Some(TernPath { _dir: dir, path })
}
