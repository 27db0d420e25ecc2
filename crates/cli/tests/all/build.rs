//! `tern build`: each component's command in its workdir, progress, and
//! the failing component with the tail of its output.

use test_programs::*;

use crate::serving::Serve;
use crate::support::Tern;

/// A manifest with components `a` (workdir `a/`) and `b`, whose builds
/// run `a_command` and `b_command`.
fn app(a_command: &str, b_command: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::copy(HTTP_HELLO, dir.path().join("a/src.wasm")).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        format!(
            r#"manifest_version = 1
[app]
name = "two"
[[route]]
path = "/a"
component = "a"
[[route]]
path = "/b"
component = "b"
[component.a]
source = "a/app.wasm"
build = {{ command = '{a_command}', workdir = "a" }}
[component.b]
source = "b.wasm"
build = {{ command = '{b_command}' }}
"#
        ),
    )
    .unwrap();
    dir
}

fn build(tern: &Tern, args: &[&str]) -> crate::support::Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    tern.run_dev(&all)
}

#[test]
fn build_runs_every_command_in_its_workdir_then_serve_finds_the_binaries() {
    let tern = Tern::new();
    let dir = app("cp src.wasm app.wasm", "cp a/src.wasm b.wasm");
    let path = dir.path().to_str().unwrap();

    // Before building, serving says what to do.
    let out = tern.run(&["serve", path]);
    out.code(1);
    assert!(
        out.stderr.contains("component.a.source: file not found")
            && out.stderr.contains("build it with `tern build"),
        "{}",
        out.stderr
    );

    let out = build(&tern, &[path]);
    assert_eq!(out.code, 0, "{out:?}");
    for line in [
        "tern: building a: cp src.wasm app.wasm",
        "tern: building b: cp a/src.wasm b.wasm",
        "tern: built a in ",
        "tern: built b in ",
        "tern: built 2 components in ",
    ] {
        assert!(out.stderr.contains(line), "no {line:?} in {}", out.stderr);
    }
    assert!(dir.path().join("a/app.wasm").is_file());
    assert!(dir.path().join("b.wasm").is_file());

    // Only the one asked for.
    std::fs::remove_file(dir.path().join("b.wasm")).unwrap();
    let out = build(&tern, &[path, "--component", "b"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("building a"), "{}", out.stderr);
    assert!(dir.path().join("b.wasm").is_file());
}

#[test]
fn a_failing_build_names_its_component_and_shows_the_tail_of_its_output() {
    let tern = Tern::new();
    let dir = app(
        "for i in $(seq 1 40); do echo line $i; done; echo oops >&2; exit 3",
        "cp a/src.wasm b.wasm",
    );
    let out = build(&tern, &[dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {}", out.stderr));
    assert!(
        error.starts_with("error: building component `a`: `for i in")
            && error.contains("exited with status 3 after")
            && error.ends_with("the last 30 lines it printed:"),
        "{error}"
    );
    assert!(out.stderr.contains("\n    line 12\n"), "{}", out.stderr);
    assert!(!out.stderr.contains("\n    line 11\n"), "{}", out.stderr);
    assert!(out.stderr.contains("\n    oops"), "{}", out.stderr);
}

#[test]
fn build_refuses_a_component_that_does_not_exist() {
    let tern = Tern::new();
    let dir = app("true", "true");
    let out = build(&tern, &[dir.path().to_str().unwrap(), "-c", "nope"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no component named `nope`") && out.stderr.contains("defined: a, b"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_build_that_leaves_a_process_running_still_finishes() {
    let tern = Tern::new();
    // The background `sleep` keeps the output pipe open for ten minutes,
    // far past the harness's deadline on `tern run` (no toolchain needed).
    let dir = app(
        "cp src.wasm app.wasm && (sleep 600 & echo $! > ../background.pid) && echo done",
        "true",
    );
    let out = tern.run(&["build", dir.path().to_str().unwrap(), "-c", "a"]);
    assert_eq!(out.code, 0, "{out:?}");
    let pid: libc::pid_t = std::fs::read_to_string(dir.path().join("background.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) takes plain integers; signal 0 only checks the pid.
    #[allow(unsafe_code)]
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // SAFETY: as above; the process is the test's own `sleep`.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        alive,
        "the background process had ended, so the build may have waited for it"
    );
}

#[test]
fn builds_find_this_tern_first_on_path_in_a_private_directory() {
    let tern = Tern::new();
    // Runs in `a/`; what it finds goes beside the manifest.
    let dir = app(
        r#"first="${PATH%%:*}"; echo "$first" > ../first.txt; stat -c %a "$first" > ../mode.txt; ls -A "$first" > ../listing.txt; tern --version > ../version.txt; cp src.wasm app.wasm"#,
        "true",
    );
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .trim_end()
            .to_owned()
    };
    let mut seen = Vec::new();
    for _ in 0..2 {
        let out = build(&tern, &[dir.path().to_str().unwrap(), "-c", "a"]);
        assert_eq!(out.code, 0, "{out:?}");
        let first = read("first.txt");
        let name = std::path::Path::new(&first)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Not `/tmp/tern-PID-path`, which another user could create first.
        assert!(
            name.starts_with("tern-path-") && name.len() > "tern-path-".len(),
            "{first}"
        );
        assert_eq!(read("mode.txt"), "700", "{first}");
        assert_eq!(read("listing.txt"), "tern", "{first}");
        assert!(read("version.txt").starts_with("tern "), "{first}");
        assert!(
            !std::path::Path::new(&first).exists(),
            "{first} outlived the build"
        );
        seen.push(first);
    }
    assert_ne!(seen[0], seen[1], "the directory's name is predictable");
}

/// `tern up` builds a component only when something its build depends on
/// changed: a file its `watch` globs match, its command, or what it made.
/// Components without `watch` always build, and so does `tern build`.
#[test]
fn up_skips_builds_whose_watched_files_have_not_changed() {
    let tern = Tern::new();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path();
    std::fs::create_dir(app.join("src")).unwrap();
    std::fs::copy(HTTP_HELLO, app.join("src/prebuilt.wasm")).unwrap();
    std::fs::write(app.join("src/main.txt"), "v1").unwrap();
    let manifest = |web_command: &str| {
        format!(
            r#"manifest_version = 1
[app]
name = "stamps"
[[route]]
path = "/web"
component = "web"
[[route]]
path = "/plain"
component = "plain"
[component.web]
source = "app.wasm"
build = {{ command = '{web_command}', watch = ["src/**"] }}
[component.plain]
source = "plain.wasm"
build = {{ command = 'echo plain >> plain.log && cp src/prebuilt.wasm plain.wasm' }}
"#
        )
    };
    let web_command = "echo web >> web.log && cp src/prebuilt.wasm app.wasm";
    std::fs::write(app.join("tern.toml"), manifest(web_command)).unwrap();
    let builds = |name: &str| {
        std::fs::read_to_string(app.join(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // Starts the app, then stops it; returns its log.
    let up = || {
        let serve = Serve::spawn_verb(tern.dev_command(), "up", app, &[]);
        serve.get("/web").expect(200);
        serve.log()
    };

    let log = up();
    assert_eq!((builds("web.log"), builds("plain.log")), (1, 1), "{log}");
    assert!(app.join(".tern/build/web.stamp").is_file(), "{log}");
    assert!(!log.contains("up to date"), "{log}");

    // Nothing changed: `web` is skipped, `plain` (no watch) is built.
    let log = up();
    assert!(log.contains("tern: web is up to date\n"), "{log}");
    assert!(!log.contains("tern: building web"), "{log}");
    assert_eq!((builds("web.log"), builds("plain.log")), (1, 2), "{log}");

    // A watched file changes: built again, once.
    std::fs::write(app.join("src/main.txt"), "v2, longer").unwrap();
    let log = up();
    assert_eq!(builds("web.log"), 2, "{log}");
    up();
    assert_eq!(builds("web.log"), 2);

    // `tern build` always builds; what it built counts as built.
    let out = tern.run_dev(&["build", app.to_str().unwrap(), "-c", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(builds("web.log"), 3);
    up();
    assert_eq!(builds("web.log"), 3);

    // The built binary gone, or replaced by something else: built again.
    std::fs::remove_file(app.join("app.wasm")).unwrap();
    up();
    assert_eq!(builds("web.log"), 4);
    std::fs::write(app.join("app.wasm"), b"not what the build made").unwrap();
    up();
    assert_eq!(builds("web.log"), 5);

    // Another command: built again.
    let other = format!("{web_command} && true");
    std::fs::write(app.join("tern.toml"), manifest(&other)).unwrap();
    up();
    assert_eq!(builds("web.log"), 6);
    up();
    assert_eq!(builds("web.log"), 6);

    // A build that fails forgets the stamp: the next `up` builds.
    std::fs::write(
        app.join("tern.toml"),
        manifest(&format!("{other} && false")),
    )
    .unwrap();
    let out = tern.run_dev(&["build", app.to_str().unwrap(), "-c", "web"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!app.join(".tern/build/web.stamp").exists());
    std::fs::write(app.join("tern.toml"), manifest(&other)).unwrap();
    up();
    assert_eq!(builds("web.log"), 8);
}
