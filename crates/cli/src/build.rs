//! `tern build`: runs each component's build command, in parallel where the
//! machine allows, with a line of progress per component and, on failure,
//! the tail of the failing command's output.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read as _;
use std::path::PathBuf;
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
    let manifest = tern_manifest::load_with(&args.path, UNBUILT)?;
    let chosen = choose(&manifest, &args.components)?;
    if chosen.is_empty() {
        crate::log::say("tern: no component of this app has a `build` entry; nothing to build");
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = args.jobs.map_or_else(default_jobs, |n| n as usize);
    build(&chosen, jobs)?;
    Ok(ExitCode::SUCCESS)
}

/// The components named in `only` (all with a build entry when empty).
pub fn choose<'m>(manifest: &'m Manifest, only: &[String]) -> Result<Vec<(&'m str, &'m Build)>> {
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
    Ok(manifest
        .components
        .values()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .filter_map(|c| Some((c.id.as_str(), c.build.as_ref()?)))
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
pub fn build(components: &[(&str, &Build)], jobs: usize) -> Result<()> {
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
                let Some(&(id, build)) = queue.pop_front() else {
                    break;
                };
                crate::log::say(&format!("tern: building {id}: {}", build.command));
                running.push((id, Instant::now()));
                let done = done_tx.clone();
                let path = path.clone();
                scope.spawn(move || {
                    let _ = done.send((id, run(build, path.as_deref())));
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
