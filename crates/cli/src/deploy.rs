//! `tern deploy`: builds an app, packs it into a bundle and uploads it to a
//! `tern host`, which checks and compiles it before it replaces the running
//! version.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf, absolute};
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;
use tern_manifest::{LoadOptions, MANIFEST_FILE_NAME, Manifest, SPIN_MANIFEST_FILE_NAME};
use tern_runtime::{Error, Result};

use crate::admin_client::{self, AdminArgs, field, items};
use crate::build;

/// Arguments of `tern deploy`.
#[derive(Args)]
#[command(after_help = "\
The bundle holds tern.toml, every component's `source` and every `files` directory, as they
sit in the app directory; the host checks and compiles it, then swaps it in. On any error the
version already running keeps serving. The admin token is read from --token-file, else
$TERN_ADMIN_TOKEN, else ~/.local/share/tern/host/admin-token (where `tern host` writes it).

--variable and --variable-file set the app's variables before the bundle is sent (as
`tern apps variables set` does), so a first deploy finds its required ones; they stay set if
the deploy is then refused.

Examples:
  tern deploy examples/hello --to http://127.0.0.1:3001
  tern deploy --variable api_host=api.example.com --variable-file api_token=token.txt --to http://127.0.0.1:3001")]
pub struct DeployArgs {
    /// The app's manifest, or a directory holding `tern.toml`
    #[arg(value_name = "PATH", default_value = ".")]
    path: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
    /// Deploy under this name, a DNS label such as `shop` [default: the
    /// manifest's `[app] name`]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Send what is already built
    #[arg(long)]
    no_build: bool,
    /// Set a variable of the app first, KEY=VALUE (repeatable)
    #[arg(long = "variable", value_name = "KEY=VALUE")]
    variables: Vec<String>,
    /// Set a variable of the app first to a file's content (less one
    /// trailing newline), KEY=PATH (repeatable): for secrets
    #[arg(long = "variable-file", value_name = "KEY=PATH")]
    variable_files: Vec<String>,
}

pub fn main(args: DeployArgs) -> Result<ExitCode> {
    // A bad URL or a missing token is found before a build, not after it.
    let admin = args.admin.admin()?;
    let variables = crate::apps::assignments(&args.variables, &args.variable_files)?;
    let manifest = load(&args.path, args.no_build)?;
    let name = args.name.as_deref().unwrap_or(&manifest.app.name);
    let files = bundle_files(&manifest)?;
    let (count, bytes) = measure(&manifest.dir, &files);
    crate::log::say(&format!("tern: packing {count} files ({})", size(bytes)));
    let bundle = tern_host::bundle::pack(&manifest.dir, &files).map_err(|e| {
        Error::from(e).context(format!("packing the app in {}", manifest.dir.display()))
    })?;
    if !variables.is_empty() {
        let answer = crate::apps::send_variables(&admin, name, variables)?;
        crate::log::say(&format!(
            "tern: {name} has {} variables set",
            items(&answer, "variables").count()
        ));
    }
    let sent = size(bundle.len() as u64);
    crate::log::say(&format!("tern: sending {sent} to {}", admin.url()));
    let path = admin_client::app_path(name, "");
    let (status, answer) = admin.call("PUT", &path, Some(bundle.as_slice()))?;
    if !(200..300).contains(&status) {
        return Err(admin_client::refused("the deploy", status, &answer));
    }
    let deployed = answer.get("name").and_then(Value::as_str).unwrap_or(name);
    let version = field(&answer, "version");
    let headline = format!("deployed {deployed} version {version} ({sent})");
    print_deployed(&headline, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// The manifest at `path`, its app built first unless `no_build`. It must
/// be a `tern.toml` or a `spin.toml`, the files a host reads, whose sources
/// and files stay in the app directory, all that a bundle holds.
fn load(path: &Path, no_build: bool) -> Result<Manifest> {
    let file = tern_manifest::manifest_path(path);
    let name = file.file_name();
    if name != Some(OsStr::new(MANIFEST_FILE_NAME))
        && name != Some(OsStr::new(SPIN_MANIFEST_FILE_NAME))
    {
        return Err(Error::msg(format!(
            "cannot deploy {}: a host runs an app described by a `{MANIFEST_FILE_NAME}` or a `{SPIN_MANIFEST_FILE_NAME}`",
            file.display()
        )));
    }
    if !no_build {
        let options = LoadOptions {
            unbuilt: true,
            allow_outside_app_dir: false,
        };
        let manifest = tern_manifest::load_with(path, options)?;
        let jobs = build::choose(&manifest, &[])?;
        if !jobs.is_empty() {
            build::build(&jobs, build::default_jobs())?;
        }
    }
    Ok(tern_manifest::load(path)?)
}

/// The paths a bundle holds, relative to the app directory: the manifest,
/// each component's `source` and each of its `files` directories, sorted,
/// none inside another.
fn bundle_files(manifest: &Manifest) -> Result<Vec<PathBuf>> {
    let dir = &manifest.dir;
    let mut wanted: Vec<&Path> = vec![manifest.path.as_path()];
    for component in manifest.components.values() {
        let Some(source) = component.source.file() else {
            return Err(Error::msg(format!(
                "cannot deploy {}: component `{}` is downloaded from a URL, and a bundle holds files; give the file's path as its `source`",
                manifest.path.display(),
                component.id
            )));
        };
        wanted.push(source);
        match &component.staged_files {
            // The files a Spin component's globs gathered: the host
            // gathers them again from the bundle.
            Some(files) => wanted.extend(files.iter().map(PathBuf::as_path)),
            None => wanted.extend(component.files.iter().map(|f| f.source.as_path())),
        }
    }
    wanted.extend(manifest.nn_models.values().map(|m| m.path.as_path()));
    let mut paths = BTreeSet::new();
    for path in wanted {
        let relative = within(dir, path).ok_or_else(|| {
            Error::msg(format!(
                "cannot deploy {}: it is outside the app directory {}",
                path.display(),
                dir.display()
            ))
        })?;
        if !relative.as_os_str().is_empty() {
            paths.insert(relative);
            continue;
        }
        // `files` grants the whole app directory: all of it, but for
        // Tern's own state beside the manifest.
        let state = manifest.default_state_dir();
        let entries = fs::read_dir(dir).map_err(|e| {
            Error::from(e).context(format!("reading the app directory {}", dir.display()))
        })?;
        for entry in entries {
            let entry = entry?;
            if entry.path() != state {
                paths.insert(PathBuf::from(entry.file_name()));
            }
        }
    }
    Ok(paths
        .iter()
        .filter(|p| !p.ancestors().skip(1).any(|a| paths.contains(a)))
        .cloned()
        .collect())
}

/// `path` relative to `dir`, or `None` when it leads outside. Compared by
/// name: loading the manifest has already checked, symlinks followed, that
/// nothing leads outside.
fn within(dir: &Path, path: &Path) -> Option<PathBuf> {
    let dir = normal(&absolute(dir).ok()?);
    let path = normal(&absolute(path).ok()?);
    path.strip_prefix(&dir).ok().map(Path::to_owned)
}

/// `path` without `.` components, each `..` taking back the name before it.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out
}

/// How many regular files `paths` (relative to `root`, directories
/// walked) hold, and their bytes: for the progress line only, so what
/// cannot be read is left for packing to report.
fn measure(root: &Path, paths: &[PathBuf]) -> (u64, u64) {
    let mut pending: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
    let (mut files, mut bytes) = (0, 0);
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        } else if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
    }
    (files, bytes)
}

/// A size for people: `512 B`, `123 KiB`, `4.2 MiB`.
fn size(bytes: u64) -> String {
    if bytes < 1 << 10 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{} KiB", (bytes + 512) >> 10)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}

/// Prints `headline`, then the host names and routes of a deploy's (or
/// rollback's) answer, one per line:
///
/// ```text
/// deployed shop version 2 (123 KiB)
///   http://shop.localhost
///   /hello -> hello (wasi-http)
/// ```
pub(crate) fn print_deployed(headline: &str, answer: &Value) -> Result<()> {
    let mut out = format!("{headline}\n");
    for line in host_lines(answer).into_iter().chain(route_lines(answer)) {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    print(&out)
}

/// An answer's host names, as URLs: `http://shop.localhost`.
pub(crate) fn host_lines(answer: &Value) -> Vec<String> {
    items(answer, "hosts")
        .filter_map(Value::as_str)
        .map(|host| format!("http://{host}"))
        .collect()
}

/// An answer's routes: `/hello -> hello (wasi-http)`.
pub(crate) fn route_lines(answer: &Value) -> Vec<String> {
    items(answer, "routes")
        .map(|route| {
            let line = format!("{} -> {}", field(route, "route"), field(route, "component"));
            match route.get("kind").and_then(Value::as_str) {
                Some(kind) => format!("{line} ({kind})"),
                None => line,
            }
        })
        .collect()
}

/// Writes `text` to stdout: a closed pipe is an error, not a panic.
pub(crate) fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_within_the_app_directory() {
        let dir = Path::new("apps/shop");
        let inside = |p: &str| within(dir, Path::new(p));
        assert_eq!(inside("apps/shop/tern.toml"), Some("tern.toml".into()));
        assert_eq!(inside("apps/shop/./a/../b.wasm"), Some("b.wasm".into()));
        assert_eq!(inside("apps/shop"), Some(PathBuf::new()));
        assert_eq!(inside("apps/shop/../other/x.wasm"), None);
        assert_eq!(inside("apps/shopping/x.wasm"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(126_000), "123 KiB");
        assert_eq!(size(4_404_019), "4.2 MiB");
    }

    #[test]
    fn answers_for_people() {
        let answer = serde_json::json!({
            "name": "shop", "version": 2,
            "hosts": ["shop.localhost", "shop.example.com"],
            "routes": [{ "route": "/hello", "component": "hello", "kind": "wasi-http" }],
        });
        assert_eq!(
            host_lines(&answer),
            ["http://shop.localhost", "http://shop.example.com"]
        );
        assert_eq!(route_lines(&answer), ["/hello -> hello (wasi-http)"]);
    }
}
