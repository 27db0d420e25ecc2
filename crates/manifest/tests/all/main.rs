//! Manifest tests as data: `tests/data/valid/NAME.toml` beside `NAME.expected`
//! (a dump of the parsed manifest), and `tests/data/invalid/NAME.toml` beside
//! `NAME.expected` (the one-line error). `TERN_BLESS=1` rewrites the expected
//! files; read the diff before committing it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use tern_manifest::{
    ComponentSource, Download, LoadOptions, Manifest, ManifestError, OutsideAppDir, OutsideGrant,
    RouteTarget, load,
};

const VALID: &str = "tests/data/valid";
const INVALID: &str = "tests/data/invalid";

#[test]
fn valid_manifests_parse_as_expected() {
    check_each(VALID, |path| match load(path) {
        Ok(manifest) => describe(&manifest, Path::new(VALID)),
        Err(error) => format!("unexpected error: {error}\n"),
    });
}

#[test]
fn invalid_manifests_fail_with_the_expected_error() {
    // Messages name resolved (absolute) paths; the expected files hold them
    // relative to this crate.
    let here = format!("{}/", fs::canonicalize(".").unwrap().display());
    check_each(INVALID, |path| match load(path) {
        Ok(_) => "unexpectedly valid\n".to_owned(),
        Err(error) => format!("{error}\n").replace(&here, ""),
    });
}

#[test]
fn load_reads_tern_toml_from_a_directory() {
    let manifest = load(Path::new("tests/data/dir")).unwrap();
    assert_eq!(manifest.path, Path::new("tests/data/dir/tern.toml"));
    assert_eq!(manifest.dir, Path::new("tests/data/dir"));
    assert_eq!(
        manifest.components["dir"].source.file(),
        Some(Path::new("tests/data/dir/hello.wasm"))
    );
}

#[test]
fn only_the_operator_lets_sources_and_files_out_of_the_app_directory() {
    let allow = LoadOptions {
        allow_outside_app_dir: true,
        ..LoadOptions::default()
    };
    let path = Path::new("tests/data/invalid/source_outside.toml");
    assert!(load(path).is_err());
    let manifest = tern_manifest::load_with(path, allow).unwrap();
    assert_eq!(
        manifest.components["hello"].source.file(),
        Some(Path::new("tests/data/invalid/../valid/hello.wasm"))
    );
    assert_eq!(
        manifest.outside_app_dir,
        [OutsideAppDir {
            component: "hello".to_owned(),
            grant: OutsideGrant::Source,
            path: fs::canonicalize("tests/data/valid/hello.wasm").unwrap(),
        }]
    );

    // A symlink is followed: what counts is where it leads.
    let path = Path::new("tests/data/invalid/files_source_symlink_outside.toml");
    let manifest = tern_manifest::load_with(path, allow).unwrap();
    assert_eq!(
        manifest.outside_app_dir,
        [OutsideAppDir {
            component: "hello".to_owned(),
            grant: OutsideGrant::Files,
            path: fs::canonicalize("tests/data/valid/static").unwrap(),
        }]
    );
    // Everything inside is not listed.
    let manifest = load(Path::new("tests/data/valid/full.toml")).unwrap();
    assert!(manifest.outside_app_dir.is_empty());
}

#[test]
fn a_source_not_built_yet_is_checked_where_it_will_be() {
    let text = |source: &str| {
        format!(
            "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/\"\ncomponent = \"a\"\n[component.a]\nsource = \"{source}\"\nbuild = {{ command = \"make\" }}\n"
        )
    };
    let unbuilt = LoadOptions {
        unbuilt: true,
        ..LoadOptions::default()
    };
    let manifest_path = Path::new("tests/data/dir/tern.toml");
    for inside in ["target/wasm/app.wasm", "missing/../app.wasm", "./out.wasm"] {
        tern_manifest::parse_with(&text(inside), manifest_path, unbuilt)
            .unwrap_or_else(|e| panic!("{inside}: {e}"));
    }
    for outside in [
        "../nowhere/app.wasm",
        "missing/../../app.wasm",
        "/nowhere/app.wasm",
    ] {
        let error = tern_manifest::parse_with(&text(outside), manifest_path, unbuilt)
            .expect_err(outside)
            .to_string();
        assert!(
            error.contains("component.a.source: ") && error.contains("outside the app directory"),
            "{outside}: {error}"
        );
    }
}

#[test]
fn an_unbuilt_manifest_may_lack_the_sources_it_builds() {
    let path = Path::new("tests/data/invalid/build_source_missing.toml");
    let manifest = tern_manifest::load_unbuilt(path).unwrap();
    let build = manifest.components["hello"].build.as_ref().unwrap();
    assert_eq!(build.command, "make hello.wasm");
    // A source with no build entry must still exist.
    let error = tern_manifest::load_unbuilt(Path::new("tests/data/invalid/source_missing.toml"))
        .unwrap_err();
    assert!(error.to_string().contains("file not found"), "{error}");
    // Unless another component's build makes it: two components serving
    // one binary, built once.
    let dir = tempfile::tempdir().unwrap();
    let toml = "manifest_version = 1\n[app]\nname = \"two\"\n\
        [[route]]\npath = \"/a\"\ncomponent = \"a\"\n\
        [[route]]\npath = \"/b\"\ncomponent = \"b\"\n\
        [component.a]\nsource = \"app.wasm\"\nbuild = { command = \"make\" }\n\
        [component.b]\nsource = \"app.wasm\"\n";
    fs::write(dir.path().join("tern.toml"), toml).unwrap();
    let manifest = tern_manifest::load_unbuilt(dir.path()).unwrap();
    assert!(manifest.components["b"].build.is_none());
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("file not found") && error.contains("build it with `tern build"),
        "{error}"
    );
}

#[test]
fn a_missing_file_names_the_path_as_given() {
    let error = load(Path::new("tests/data/nowhere.toml")).unwrap_err();
    assert!(matches!(error, ManifestError::Read { .. }));
    let message = error.to_string();
    assert!(
        message.starts_with("reading manifest tests/data/nowhere.toml: "),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn a_bare_file_name_resolves_against_the_current_directory() {
    let text = "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/\"\ncomponent = \"a\"\n[component.a]\nsource = \"Cargo.toml\"\n";
    let manifest = tern_manifest::parse(text, Path::new("tern.toml")).unwrap();
    assert_eq!(manifest.dir, Path::new("."));
    assert_eq!(
        manifest.components["a"].source.file(),
        Some(Path::new("Cargo.toml"))
    );
    let built = format!("{text}build = {{ command = \"make\" }}\n");
    let manifest = tern_manifest::parse(&built, Path::new("tern.toml")).unwrap();
    let build = manifest.components["a"].build.as_ref().unwrap();
    assert_eq!(build.workdir, Path::new("."));
}

#[test]
fn errors_found_later_point_into_the_manifest() {
    let manifest = load(Path::new("tests/data/valid/full.toml")).unwrap();
    let api = &manifest.components["api"];
    let error = manifest.error_at(
        api.source_location,
        "component.api.source",
        "not a component",
    );
    assert_eq!(
        error.to_string(),
        "tests/data/valid/full.toml:37:1: component.api.source: not a component"
    );
}

#[test]
fn models_are_found_where_the_manifest_says_and_errors_point_back_at_them() {
    let manifest = load(Path::new("tests/data/valid/nn_models.toml")).unwrap();
    let chat = &manifest.nn_models["chat"];
    assert_eq!(
        chat.path,
        std::path::absolute("tests/data/valid/models/chat.gguf").unwrap()
    );
    // What the backend finds wrong with the file points at its `path`.
    let error = manifest.error_at(chat.path_location, "nn.models.chat.path", "file is corrupt");
    assert_eq!(
        error.to_string(),
        "tests/data/valid/nn_models.toml:24:1: nn.models.chat.path: file is corrupt"
    );

    // Outside the app directory only if the operator allows it, and then listed.
    let path = Path::new("tests/data/invalid/nn_model_outside.toml");
    let allow = LoadOptions {
        allow_outside_app_dir: true,
        ..LoadOptions::default()
    };
    let manifest = tern_manifest::load_with(path, allow).unwrap();
    assert_eq!(
        manifest.outside_app_dir,
        [OutsideAppDir {
            component: "chat".to_owned(),
            grant: OutsideGrant::NnModel,
            path: fs::canonicalize("tests/data/valid/models/chat.gguf").unwrap(),
        }]
    );

    // A Spin manifest declares none.
    let manifest = load(Path::new("tests/data/valid/spin_full.toml")).unwrap();
    assert!(manifest.nn_models.is_empty());
    assert!(manifest.components.values().all(|c| c.nn_models.is_empty()));
}

/// Runs `run` on every `.toml` in `dir` and compares its output with the
/// `.expected` file beside it, reporting every mismatch at once.
fn check_each(dir: &str, run: impl Fn(&Path) -> String) {
    let bless = std::env::var_os("TERN_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no test manifests in {dir}");

    let mut failures = Vec::new();
    for case in &cases {
        let actual = run(case);
        let expected_path = case.with_extension("expected");
        if bless {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ (TERN_BLESS=1 rewrites them):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every field of `manifest`, with paths relative to `data_dir`.
fn describe(manifest: &Manifest, data_dir: &Path) -> String {
    // On the text rather than components, so that `./static/` shows as written.
    let relative = |path: &Path| {
        let path = path.display().to_string();
        let data_dir = data_dir.display().to_string();
        if path == data_dir {
            return ".".to_owned();
        }
        match path.strip_prefix(&format!("{data_dir}/")) {
            Some(relative) => relative.to_owned(),
            None => panic!("{path} is outside {data_dir}"),
        }
    };
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "path: {}", relative(&manifest.path)).unwrap();
    writeln!(w, "dir: {}", relative(&manifest.dir)).unwrap();
    writeln!(w, "app.name: {:?}", manifest.app.name).unwrap();
    writeln!(w, "app.description: {:?}", manifest.app.description).unwrap();
    for trigger in &manifest.redis_triggers {
        writeln!(
            w,
            "redis trigger {} on {} -> {}",
            trigger.channel, trigger.address, trigger.component
        )
        .unwrap();
    }
    if let Some(version) = &manifest.app.version {
        writeln!(w, "app.version: {version:?}").unwrap();
    }
    if !manifest.app.hosts.is_empty() {
        writeln!(w, "app.hosts: {:?}", manifest.app.hosts).unwrap();
    }
    for (name, variable) in &manifest.variables {
        writeln!(w, "variable {name}: {variable:?}").unwrap();
    }
    // Model paths are absolute: shown relative to the data directory's.
    let absolute_data_dir = std::path::absolute(data_dir).unwrap();
    for (name, model) in &manifest.nn_models {
        let path = model.path.strip_prefix(&absolute_data_dir).unwrap();
        writeln!(w, "nn model {name}: {} {}", model.encoding, path.display()).unwrap();
        writeln!(w, "  path_location: {}", model.path_location).unwrap();
        writeln!(
            w,
            "  target {}, engine {}, max_concurrency {}, max_tokens {}, context_length {}",
            model.target,
            model.engine,
            model.max_concurrency,
            model.max_tokens,
            model.context_length
        )
        .unwrap();
        if let Some(location) = model.engine_location {
            writeln!(w, "  engine_location: {location}").unwrap();
        }
    }
    for (name, upstream) in &manifest.upstreams {
        writeln!(
            w,
            "upstream {name}: {} base {:?}, connect {:?}, timeout {:?}",
            upstream.authority, upstream.base_path, upstream.connect_timeout, upstream.timeout
        )
        .unwrap();
    }
    for (name, filter) in &manifest.filters {
        let path = filter.source.strip_prefix(data_dir).unwrap();
        writeln!(
            w,
            "filter {name}: {} {:?} {:?} {:?}, log {}, memory {}, callback {:?}, upstreams {:?}, at {}",
            path.display(),
            filter.configuration,
            filter.failure,
            filter.isolation,
            filter.log_level,
            filter.memory,
            filter.callback_time,
            filter.upstreams,
            filter.source_location
        )
        .unwrap();
    }
    for route in &manifest.routes {
        match &route.target {
            RouteTarget::Upstream(upstream) => writeln!(
                w,
                "route {} -> upstream {upstream} via {:?}",
                route.pattern, route.filters
            )
            .unwrap(),
            RouteTarget::Component(component) if !route.filters.is_empty() => writeln!(
                w,
                "route {} -> {} ({:?}) via {:?}",
                route.pattern, component, route.pattern, route.filters
            )
            .unwrap(),
            RouteTarget::Component(component) => writeln!(
                w,
                "route {} -> {} ({:?})",
                route.pattern, component, route.pattern
            )
            .unwrap(),
            RouteTarget::Static(response) => {
                writeln!(
                    w,
                    "route {} -> static response {} ({:?})",
                    route.pattern, response.status, route.pattern
                )
                .unwrap();
                for (name, value) in &response.headers {
                    writeln!(w, "  header {name}: {value:?}").unwrap();
                }
                writeln!(w, "  body: {:?}", response.body).unwrap();
            }
        }
    }
    for (id, component) in &manifest.components {
        writeln!(w, "component {id}").unwrap();
        assert_eq!(&component.id, id);
        match &component.source {
            ComponentSource::File(path) => writeln!(w, "  source: {}", relative(path)).unwrap(),
            ComponentSource::Download(download) => {
                writeln!(w, "  source: {} (sha256 {})", download.url, download.sha256).unwrap()
            }
        }
        writeln!(w, "  source_location: {}", component.source_location).unwrap();
        match component.executor {
            Some(executor) => writeln!(w, "  executor: {executor}").unwrap(),
            None => writeln!(w, "  executor: (inferred)").unwrap(),
        }
        for (name, value) in &component.environment {
            writeln!(w, "  environment: {name}={value:?}").unwrap();
        }
        for mount in &component.files {
            writeln!(
                w,
                "  files: {} -> {}",
                relative(&mount.source),
                mount.destination
            )
            .unwrap();
        }
        if !component.key_value_stores.is_empty() {
            writeln!(w, "  key_value_stores: {:?}", component.key_value_stores).unwrap();
        }
        if !component.sqlite_databases.is_empty() {
            writeln!(w, "  sqlite_databases: {:?}", component.sqlite_databases).unwrap();
        }
        if !component.nn_models.is_empty() {
            writeln!(w, "  nn_models: {:?}", component.nn_models).unwrap();
        }
        for host in &component.allowed_outbound_hosts {
            writeln!(w, "  allowed_outbound_host: {host}").unwrap();
        }
        for (key, template) in &component.variables {
            writeln!(w, "  variable {key}: {template:?}").unwrap();
        }
        if let Some(build) = &component.build {
            writeln!(w, "  build.command: {:?}", build.command).unwrap();
            writeln!(w, "  build.workdir: {}", relative(&build.workdir)).unwrap();
            writeln!(w, "  build.watch: {:?}", build.watch).unwrap();
        }
        let limits = &component.limits;
        let outbound = [
            (
                "outbound_connect_timeout",
                limits.outbound_connect_timeout.map(|v| v.to_string()),
            ),
            (
                "outbound_timeout",
                limits.outbound_timeout.map(|v| v.to_string()),
            ),
            (
                "max_outbound_requests",
                limits.max_outbound_requests.map(|v| v.to_string()),
            ),
        ];
        for (name, value) in outbound {
            if let Some(value) = value {
                writeln!(w, "  limits.{name}: {value}").unwrap();
            }
        }
        let show = |value: Option<String>| value.unwrap_or_else(|| "default".to_owned());
        writeln!(
            w,
            "  limits.memory: {}",
            show(limits.memory.map(|v| v.to_string()))
        )
        .unwrap();
        writeln!(
            w,
            "  limits.timeout: {}",
            show(limits.timeout.map(|v| v.to_string()))
        )
        .unwrap();
        writeln!(
            w,
            "  limits.max_body: {}",
            show(limits.max_body.map(|v| v.to_string()))
        )
        .unwrap();
        writeln!(
            w,
            "  limits.max_concurrent: {}",
            show(limits.max_concurrent.map(|v| v.to_string()))
        )
        .unwrap();
        if let Some(instances) = &component.instances {
            writeln!(
                w,
                "  instances: reuse {}, concurrent {}, idle {}",
                instances.reuse, instances.concurrent, instances.idle
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn a_directory_without_a_manifest_says_how_to_make_one() {
    let error = load(Path::new("tests/data")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "no tern.toml or spin.toml in tests/data: make an app there with `tern new http-rust tests/data`, \
         or serve a component as it is with `tern serve app.wasm`"
    );
}

#[test]
fn a_directory_with_only_a_spin_toml_is_a_spin_app() {
    let dir = tempfile::tempdir().unwrap();
    let spin = "spin_manifest_version = 2\n[application]\nname = \"s\"\n\
        [[trigger.http]]\nroute = \"/...\"\ncomponent = \"s\"\n\
        [component.s]\nsource = \"app.wasm\"\n";
    fs::write(dir.path().join("spin.toml"), spin).unwrap();
    fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
    assert_eq!(
        tern_manifest::manifest_path(dir.path()),
        dir.path().join("spin.toml")
    );
    let manifest = load(dir.path()).unwrap();
    assert_eq!(manifest.app.name, "s");
    assert_eq!(manifest.path, dir.path().join("spin.toml"));
    assert_eq!(manifest.routes[0].pattern.to_string(), "/...");

    // Beside a tern.toml, the tern.toml is the app's.
    let tern = "manifest_version = 1\n[app]\nname = \"t\"\n\
        [[route]]\npath = \"/\"\ncomponent = \"t\"\n\
        [component.t]\nsource = \"app.wasm\"\n";
    fs::write(dir.path().join("tern.toml"), tern).unwrap();
    assert_eq!(
        tern_manifest::manifest_path(dir.path()),
        dir.path().join("tern.toml")
    );
    assert_eq!(load(dir.path()).unwrap().app.name, "t");
}

#[test]
fn a_spin_manifest_keeps_its_version_and_lists_its_stores() {
    let manifest = load(Path::new("tests/data/valid/spin_full.toml")).unwrap();
    assert_eq!(manifest.app.version.as_deref(), Some("1.2.0"));
    assert_eq!(manifest.key_value_stores(), ["default", "cache"]);
    assert_eq!(manifest.sqlite_databases(), ["default"]);
    // A tern.toml has no version.
    let manifest = load(Path::new("tests/data/valid/full.toml")).unwrap();
    assert_eq!(manifest.app.version, None);
    assert_eq!(manifest.sqlite_databases(), ["default"]);
}

#[test]
fn errors_in_an_inline_component_name_its_trigger() {
    let text = "spin_manifest_version = 2\n[application]\nname = \"a\"\n\
        [[trigger.http]]\nroute = \"/\"\ncomponent = { source = \"missing.wasm\" }\n";
    let error = tern_manifest::parse(text, Path::new("tests/data/dir/spin.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tests/data/dir/spin.toml:6:15: trigger.http[1].component.source: \
         file not found: tests/data/dir/missing.wasm"
    );
}

#[test]
fn a_wasm_file_is_an_app_of_one_component_on_every_path() {
    let manifest = load(Path::new("tests/data/invalid/hello.wasm")).unwrap();
    assert_eq!(manifest.app.name, "hello");
    assert_eq!(manifest.path, Path::new("tests/data/invalid/hello.wasm"));
    let component = &manifest.components["hello"];
    assert_eq!(
        component.source.file(),
        Some(Path::new("tests/data/invalid/hello.wasm"))
    );
    assert!(component.files.is_empty() && component.environment.is_empty());
    assert_eq!(manifest.routes.len(), 1);
    assert_eq!(manifest.routes[0].pattern.to_string(), "/...");
}

#[test]
fn a_spin_download_is_checked_here_and_fetched_later() {
    let digest = "0a".repeat(32);
    let url = "https://me:s3cret@example.com/app.wasm?sig=abc";
    let text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"a\"\n\
         [[trigger.http]]\nroute = \"/...\"\n\
         component = {{ source = {{ url = \"{url}\", digest = \"sha256:{digest}\" }} }}\n"
    );
    let path = Path::new("tests/data/dir/spin.toml");
    let manifest = tern_manifest::parse(&text, path).unwrap();
    let component = &manifest.components["inline-component-1"];
    assert_eq!(
        component.source,
        ComponentSource::Download(Download {
            url: url.to_owned(),
            sha256: digest.clone(),
        })
    );
    assert_eq!(component.source.file(), None);

    // Errors name the inline component's trigger, and never show the
    // URL's user info or query.
    let error = tern_manifest::parse(&text.replace("https://", "ftp://"), path).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tests/data/dir/spin.toml:6:26: trigger.http[1].component.source.url: \
         `ftp://` URLs cannot be downloaded; use `https://` or `http://`"
    );
    let error = tern_manifest::parse(&text.replace("example.com", ""), path)
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with("source.url: https:///app.wasm names no host"),
        "{error}"
    );
}
