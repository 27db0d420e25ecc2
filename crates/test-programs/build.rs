//! Compiles the guest programs and writes their paths into
//! `$OUT_DIR/guests.rs`:
//!
//! - `guests/`: command programs, for wasm32-wasip1 and wasm32-wasip2;
//! - `http-guests/`: wasi:http components, one per example, for
//!   wasm32-wasip2 only;
//! - `p3-guests/`: WASI 0.3 components for wasm32-wasip2: commands (its
//!   bins) and wasi:http handlers (its examples);
//! - `spin-apps/`: Spin apps written against the published Spin Rust SDK,
//!   one per example, for wasm32-wasip2 (SDK 7 builds WASI 0.3 components);
//! - `spin5-apps/`: Spin apps written against the Spin Rust SDK 5, one per
//!   example, for wasm32-wasip1 (SDK 5 builds core modules carrying their
//!   component type, which the host turns into components);
//! - `extism-guests/`: Extism plug-ins written against the published
//!   extism-pdk, one per example, for wasm32-unknown-unknown (`extism_wasi*`
//!   for wasm32-wasip1); and extism-pdk's own examples, built from the
//!   source of the release that package resolves, where cargo unpacked it;
//! - `proxy-guests/`: proxy-wasm filters written against the published
//!   proxy-wasm crate, one per example, for wasm32-wasip1; and that crate's
//!   own examples, built from the source of the release it resolves;
//! - `wat/`: WAT programs, used as they are;
//! - `examples/udf`'s plugins: its Extism plug-in in Rust, twice (its `v2`
//!   feature off and on), and its Python component, built with
//!   componentize-py when that is on `PATH`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [(&str, &str); 2] = [("P1", "wasm32-wasip1"), ("P2", "wasm32-wasip2")];
const HTTP_TARGET: &str = "wasm32-wasip2";

/// Guests in `guests/` with this prefix are WAGI programs: they belong to
/// the HTTP suite, so they are listed by `foreach_wagi_guest!` rather than
/// `foreach_guest!`.
const WAGI_PREFIX: &str = "wagi_";

/// Every guest in `http-guests/` is named with this prefix, which is also
/// its constant's prefix.
const HTTP_PREFIX: &str = "http_";

/// WASI 0.3 guests are built for wasm32-wasip2 as well: there is no wasip3
/// target yet, and the `wasip3` crate brings the 0.3 bindings.
const P3_TARGET: &str = "wasm32-wasip2";

/// Every command in `p3-guests/` (a bin) is named with this prefix, which
/// is also its constant's prefix.
const P3_PREFIX: &str = "p3_";

/// Every wasi:http guest in `p3-guests/` (an example) is named with this
/// prefix, which is also its constant's prefix.
const HTTP3_PREFIX: &str = "http3_";

/// Every Spin app in `spin-apps/` (an example) is named with this prefix,
/// which is also its constant's prefix.
const SPIN_PREFIX: &str = "spin_";

/// The virtual environment holding the Spin Python SDK and its
/// componentize-py, under the target directory's `python/`; the version is
/// `scripts/setup`'s.
const SPIN_PYTHON_VENV: &str = "spin-python-sdk-3.4.1";

/// The Spin SDK 5 builds for WASI preview 1: a core module whose
/// `component-type` custom sections hold its world.
const SPIN5_TARGET: &str = "wasm32-wasip1";

/// Every Spin SDK 5 app in `spin5-apps/` (an example) is named with this
/// prefix, which is also its constant's prefix.
const SPIN5_PREFIX: &str = "spin5_";

/// `nn-guests/`: WasmEdge-style WASI-NN programs (`wasi_ephemeral_nn`),
/// core modules only.
const NN_TARGET: &str = "wasm32-wasip1";

/// Every program in `nn-guests/` (a bin) is named with this prefix, which
/// is also its constant's prefix.
const NN_PREFIX: &str = "nn_";

/// Extism plug-ins are core modules for a target without WASI...
const EXTISM_TARGET: &str = "wasm32-unknown-unknown";

/// ... but those in `extism-guests/` named with this prefix, which use WASI
/// preview 1: cdylibs for this target, without `_start`.
const EXTISM_WASI_PREFIX: &str = "extism_wasi";
const EXTISM_WASI_TARGET: &str = "wasm32-wasip1";

/// Every plug-in in `extism-guests/` (an example) is named with this
/// prefix, which is also its constant's prefix.
const EXTISM_PREFIX: &str = "extism_";

/// The prefix of the constants for extism-pdk's own examples.
const EXTISM_PDK_PREFIX: &str = "extism_pdk_";

/// The virtual environment holding the Extism Python SDK (and the libextism
/// it bundles), under the target directory's `python/`; the version is
/// `scripts/setup`'s.
const EXTISM_PYTHON_VENV: &str = "extism-1.1.1";

/// proxy-wasm filters are core modules for WASI preview 1, as Envoy's
/// documentation builds them.
const PROXY_TARGET: &str = "wasm32-wasip1";

/// Every filter in `proxy-guests/` (an example) is named with this prefix,
/// which is also its constant's prefix.
const PROXY_PREFIX: &str = "proxy_";

/// The prefix of the constants for the proxy-wasm crate's own examples.
const PROXY_WASM_PREFIX: &str = "proxy_wasm_";

/// Where `examples/udf`'s plugins are put, under the target directory.
const UDF_DIR: &str = "udf";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("guests");
    let http_guests = manifest_dir.join("http-guests");
    let p3_guests = manifest_dir.join("p3-guests");
    let spin_apps = manifest_dir.join("spin-apps");
    let spin5_apps = manifest_dir.join("spin5-apps");
    let wat_dir = manifest_dir.join("wat");
    let nn_guests = manifest_dir.join("nn-guests");
    let extism_guests = manifest_dir.join("extism-guests");
    let proxy_guests = manifest_dir.join("proxy-guests");
    let chat_example = manifest_dir.join("../../examples/chat");
    let udf_example = manifest_dir.join("../../examples/udf");
    for path in [
        udf_example.join("plugins/slugify-rs/src"),
        udf_example.join("plugins/slugify-rs/Cargo.toml"),
        udf_example.join("plugins/slugify-rs/Cargo.lock"),
        udf_example.join("plugins/titlecase-py/app.py"),
        udf_example.join("wit"),
        chat_example.join("src"),
        chat_example.join("Cargo.toml"),
        nn_guests.join("src"),
        nn_guests.join("Cargo.toml"),
        p3_guests.join("wit"),
        guests.join("src"),
        guests.join("Cargo.toml"),
        http_guests.join("src"),
        http_guests.join("examples"),
        http_guests.join("Cargo.toml"),
        p3_guests.join("src"),
        p3_guests.join("examples"),
        p3_guests.join("Cargo.toml"),
        spin_apps.join("examples"),
        spin_apps.join("Cargo.toml"),
        manifest_dir.join("spin-python"),
        manifest_dir.join("spin-js"),
        spin5_apps.join("examples"),
        spin5_apps.join("Cargo.toml"),
        extism_guests.join("examples"),
        extism_guests.join("Cargo.toml"),
        extism_guests.join("Cargo.lock"),
        proxy_guests.join("examples"),
        proxy_guests.join("Cargo.toml"),
        proxy_guests.join("Cargo.lock"),
        wat_dir.clone(),
        manifest_dir.join("../../wit"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    // A target directory of its own: the outer cargo holds a lock on ours.
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => manifest_dir.join("../../target/guests"),
    };
    build(
        &guests,
        &target_dir,
        &TARGETS.map(|(_, target)| target),
        &[],
    );
    build(&http_guests, &target_dir, &[HTTP_TARGET], &["--examples"]);
    build(
        &p3_guests,
        &target_dir,
        &[P3_TARGET],
        &["--bins", "--examples"],
    );
    build(&spin_apps, &target_dir, &[P3_TARGET], &["--examples"]);
    build(&spin5_apps, &target_dir, &[SPIN5_TARGET], &["--examples"]);
    build(&nn_guests, &target_dir, &[NN_TARGET], &["--bins"]);
    let (extism_wasi_names, extism_names): (Vec<String>, Vec<String>) =
        sorted_files(&extism_guests.join("examples"), "rs")
            .iter()
            .map(|source| stem(source))
            .partition(|name| name.starts_with(EXTISM_WASI_PREFIX));
    for (target, names) in [
        (EXTISM_TARGET, &extism_names),
        (EXTISM_WASI_TARGET, &extism_wasi_names),
    ] {
        let args: Vec<&str> = names
            .iter()
            .flat_map(|name| ["--example", name.as_str()])
            .collect();
        build(&extism_guests, &target_dir, &[target], &args);
    }
    // Built where cargo unpacked the published crate, with the Cargo.lock
    // published in it; `--locked` keeps cargo from writing there.
    let extism_pdk = registry_source(&extism_guests, "extism-pdk");
    build(
        &extism_pdk,
        &target_dir,
        &[EXTISM_TARGET],
        &["--examples", "--locked"],
    );
    build(
        &proxy_guests,
        &target_dir,
        &[PROXY_TARGET],
        &["--examples", "--locked"],
    );
    let proxy_wasm = registry_source(&proxy_guests, "proxy-wasm");
    build(
        &proxy_wasm,
        &target_dir,
        &[PROXY_TARGET],
        &["--examples", "--locked"],
    );
    // The chat example's component, for the WASI-NN serving tests: the
    // example itself rather than a copy of it.
    build(&chat_example, &target_dir, &[P3_TARGET], &[]);
    let udf = build_udf(&udf_example, &target_dir);

    let mut out = String::new();
    let mut names = Vec::new();
    let mut wagi_names = Vec::new();
    for bin in sorted_files(&guests.join("src/bin"), "rs") {
        let name = stem(&bin);
        for (prefix, target) in TARGETS {
            let path = target_dir
                .join(target)
                .join("release")
                .join(format!("{name}.wasm"));
            let kind = if prefix == "P1" {
                "core module"
            } else {
                "component"
            };
            write_const(
                &mut out,
                &format!("`{name}` for {target} (a {kind})."),
                &format!("{prefix}_{}", name.to_uppercase()),
                &path,
            );
        }
        if name.starts_with(WAGI_PREFIX) {
            wagi_names.push(name);
        } else {
            names.push(name);
        }
    }
    let http_names = write_prefixed(
        &mut out,
        &http_guests.join("examples"),
        HTTP_PREFIX,
        &target_dir.join(HTTP_TARGET).join("release/examples"),
        &format!("a wasi:http component for {HTTP_TARGET}"),
    );
    let p3_names = write_prefixed(
        &mut out,
        &p3_guests.join("src/bin"),
        P3_PREFIX,
        &target_dir.join(P3_TARGET).join("release"),
        &format!("a WASI 0.3 command component for {P3_TARGET}"),
    );
    let http3_names = write_prefixed(
        &mut out,
        &p3_guests.join("examples"),
        HTTP3_PREFIX,
        &target_dir.join(P3_TARGET).join("release/examples"),
        &format!("a WASI 0.3 wasi:http component for {P3_TARGET}"),
    );
    let spin_names = write_prefixed(
        &mut out,
        &spin_apps.join("examples"),
        SPIN_PREFIX,
        &target_dir.join(P3_TARGET).join("release/examples"),
        "a Spin app built with the Spin Rust SDK 7 (a WASI 0.3 component)",
    );
    let spin5_names = write_prefixed(
        &mut out,
        &spin5_apps.join("examples"),
        SPIN5_PREFIX,
        &target_dir.join(SPIN5_TARGET).join("release/examples"),
        "a Spin SDK 5 app: a wasm32-wasip1 core module carrying its component type",
    );
    let nn_names = write_prefixed(
        &mut out,
        &nn_guests.join("src/bin"),
        NN_PREFIX,
        &target_dir.join(NN_TARGET).join("release"),
        "a WasmEdge-style WASI-NN program (`wasi_ephemeral_nn`), a wasm32-wasip1 core module",
    );
    write_foreach(
        &mut out,
        "foreach_nn_guest",
        "every WASI-NN core module (`nn-guests/src/bin/nn_*.rs`)",
        &nn_names,
    );
    let mut extism_guest_names = Vec::new();
    for name in extism_names.iter().chain(&extism_wasi_names) {
        assert!(
            name.starts_with(EXTISM_PREFIX),
            "plug-in extism-guests/examples/{name}.rs must be named {EXTISM_PREFIX}*"
        );
        let (target, kind) = if name.starts_with(EXTISM_WASI_PREFIX) {
            (EXTISM_WASI_TARGET, "a cdylib using WASI")
        } else {
            (EXTISM_TARGET, "a core module")
        };
        write_const(
            &mut out,
            &format!("`{name}`, an Extism plug-in for {target} ({kind})."),
            &name.to_uppercase(),
            &target_dir
                .join(target)
                .join("release/examples")
                .join(format!("{name}.wasm")),
        );
        extism_guest_names.push(name.clone());
    }
    extism_guest_names.sort();
    write_foreach(
        &mut out,
        "foreach_extism_guest",
        "every Extism plug-in of ours (`extism-guests/examples/extism_*.rs`)",
        &extism_guest_names,
    );
    let release = extism_pdk.file_name().unwrap().to_string_lossy();
    let mut extism_pdk_names = Vec::new();
    for example in sorted_files(&extism_pdk.join("examples"), "rs") {
        let example = stem(&example);
        let name = format!("{EXTISM_PDK_PREFIX}{example}");
        write_const(
            &mut out,
            &format!(
                "`{example}`, {release}'s example, built from its published source (an Extism plug-in for {EXTISM_TARGET})."
            ),
            &name.to_uppercase(),
            &target_dir
                .join(EXTISM_TARGET)
                .join("release/examples")
                .join(format!("{example}.wasm")),
        );
        extism_pdk_names.push(name);
    }
    write_foreach(
        &mut out,
        "foreach_extism_pdk_example",
        "every example of the published extism-pdk (`extism_pdk_count_vowels` for `examples/count_vowels.rs`)",
        &extism_pdk_names,
    );
    let proxy_names = write_prefixed(
        &mut out,
        &proxy_guests.join("examples"),
        PROXY_PREFIX,
        &target_dir.join(PROXY_TARGET).join("release/examples"),
        &format!("a proxy-wasm filter of ours, for {PROXY_TARGET}"),
    );
    write_foreach(
        &mut out,
        "foreach_proxy_guest",
        "every proxy-wasm filter of ours (`proxy-guests/examples/proxy_*.rs`)",
        &proxy_names,
    );
    let release = proxy_wasm.file_name().unwrap().to_string_lossy();
    let mut proxy_wasm_names = Vec::new();
    for example in sorted_files(&proxy_wasm.join("examples"), "rs") {
        let example = stem(&example);
        let name = format!("{PROXY_WASM_PREFIX}{example}");
        write_const(
            &mut out,
            &format!(
                "`{example}`, {release}'s example filter, built from its published source for {PROXY_TARGET}."
            ),
            &name.to_uppercase(),
            &target_dir
                .join(PROXY_TARGET)
                .join("release/examples")
                .join(format!("{example}.wasm")),
        );
        proxy_wasm_names.push(name);
    }
    write_foreach(
        &mut out,
        "foreach_proxy_wasm_example",
        "every example of the published proxy-wasm crate (`proxy_wasm_http_headers` for `examples/http_headers.rs`)",
        &proxy_wasm_names,
    );
    writeln!(
        out,
        "/// The Python of the virtual environment holding the Extism Python SDK and its libextism (`scripts/setup` makes it)."
    )
    .unwrap();
    writeln!(
        out,
        "pub const EXTISM_PYTHON: &str = {:?};",
        target_dir
            .join("../python")
            .join(EXTISM_PYTHON_VENV)
            .join("bin/python")
    )
    .unwrap();
    write_const(
        &mut out,
        "`examples/chat`'s component: a WASI 0.3 HTTP handler streaming a language model's answer through `wasi:nn`.",
        "EXAMPLE_CHAT",
        &target_dir.join(P3_TARGET).join("release/chat.wasm"),
    );
    write_const(
        &mut out,
        "`examples/udf`'s `slugify` plugin (`plugins/slugify-rs`), an Extism plug-in for wasm32-unknown-unknown.",
        "UDF_SLUGIFY",
        &udf.slugify,
    );
    write_const(
        &mut out,
        "`examples/udf`'s `slugify` plugin built with its `v2` feature (words separated by `_`, not `-`), to swap in.",
        "UDF_SLUGIFY_V2",
        &udf.slugify_v2,
    );
    // Written even when componentize-py could not build it: the test that
    // needs it fails, naming the cause, and the other tests still build.
    writeln!(
        out,
        "/// `examples/udf`'s `titlecase` plugin (`plugins/titlecase-py`), a component built with componentize-py; missing if componentize-py was not on `PATH` when this crate was built (`scripts/setup` installs it)."
    )
    .unwrap();
    writeln!(
        out,
        "pub const UDF_TITLECASE_PY: &str = {:?};",
        udf.titlecase
    )
    .unwrap();
    writeln!(
        out,
        "/// The test models `scripts/setup` takes from their PyPI wheels."
    )
    .unwrap();
    writeln!(
        out,
        "pub const MODELS_DIR: &str = {:?};",
        target_dir.join("../models")
    )
    .unwrap();
    // Built by the test itself (`tern build` runs componentize-py), in the
    // virtual environment `scripts/setup` makes, as Spin's docs show.
    writeln!(
        out,
        "/// The Spin Python SDK's virtual environment (`scripts/setup` makes it)."
    )
    .unwrap();
    writeln!(
        out,
        "pub const SPIN_PYTHON_VENV: &str = {:?};",
        target_dir.join("../python").join(SPIN_PYTHON_VENV)
    )
    .unwrap();
    writeln!(
        out,
        "/// The Spin JavaScript app's source directory (its `npm install` and `j2w` build run in the test)."
    )
    .unwrap();
    writeln!(
        out,
        "pub const SPIN_JS_APP: &str = {:?};",
        manifest_dir.join("spin-js")
    )
    .unwrap();
    writeln!(
        out,
        "/// npm's download cache for the tests, under the target directory."
    )
    .unwrap();
    writeln!(
        out,
        "pub const NPM_CACHE: &str = {:?};",
        target_dir.join("../npm-cache")
    )
    .unwrap();
    writeln!(out, "/// The Spin Python app's source directory.").unwrap();
    writeln!(
        out,
        "pub const SPIN_PYTHON_APP: &str = {:?};",
        manifest_dir.join("spin-python")
    )
    .unwrap();
    for wat in sorted_files(&wat_dir, "wat") {
        let name = stem(&wat);
        write_const(
            &mut out,
            &format!("`{name}.wat`, in text format."),
            &format!("WAT_{}", name.to_uppercase()),
            &wat,
        );
        names.push(name);
    }
    write_foreach(
        &mut out,
        "foreach_guest",
        "every guest program outside the HTTP suite",
        &names,
    );
    write_foreach(
        &mut out,
        "foreach_wagi_guest",
        "every WAGI guest program (`guests/src/bin/wagi_*.rs`)",
        &wagi_names,
    );
    write_foreach(
        &mut out,
        "foreach_http_guest",
        "every wasi:http guest program",
        &http_names,
    );
    write_foreach(
        &mut out,
        "foreach_p3_guest",
        "every WASI 0.3 command (`p3-guests/src/bin/p3_*.rs`)",
        &p3_names,
    );
    write_foreach(
        &mut out,
        "foreach_http3_guest",
        "every WASI 0.3 wasi:http guest (`p3-guests/examples/http3_*.rs`)",
        &http3_names,
    );
    write_foreach(
        &mut out,
        "foreach_spin_app",
        "every Spin app (`spin-apps/examples/spin_*.rs`)",
        &spin_names,
    );
    write_foreach(
        &mut out,
        "foreach_spin5_app",
        "every Spin SDK 5 app (`spin5-apps/examples/spin5_*.rs`)",
        &spin5_names,
    );
    fs::write(
        PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("guests.rs"),
        out,
    )
    .unwrap();
}

/// Builds every `targets` artifact of the package at `package` in release
/// mode, into `target_dir`.
fn build(package: &Path, target_dir: &Path, targets: &[&str], args: &[&str]) {
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(package.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(args);
    for target in targets {
        cmd.arg("--target").arg(target);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {}: {e}", package.display()));
    assert!(
        status.success(),
        "building the guest programs in {} failed; is `rustup target add {}` done?",
        package.display(),
        targets.join(" ")
    );
}

/// `examples/udf`'s plugins, as [`build_udf`] leaves them.
struct UdfPlugins {
    slugify: PathBuf,
    slugify_v2: PathBuf,
    /// Missing if componentize-py is not on `PATH`.
    titlecase: PathBuf,
}

/// Builds `examples/udf`'s plugins into `target_dir/udf`: the Rust plug-in
/// as `slugify.wasm`, and with its `v2` feature as `slugify_v2.wasm` (both
/// builds write cargo's `slugify.wasm`, hence the copies); the Python
/// component as `titlecase.wasm`, unless it is newer than its sources.
fn build_udf(example: &Path, target_dir: &Path) -> UdfPlugins {
    let out = target_dir.join(UDF_DIR);
    fs::create_dir_all(&out).unwrap();
    let out = out.canonicalize().unwrap();
    let slugify = example.join("plugins/slugify-rs");
    let built = target_dir.join(EXTISM_TARGET).join("release/slugify.wasm");
    for (features, name) in [
        (&[][..], "slugify.wasm"),
        (&["--features", "v2"][..], "slugify_v2.wasm"),
    ] {
        let mut args = vec!["--locked"];
        args.extend_from_slice(features);
        build(&slugify, target_dir, &[EXTISM_TARGET], &args);
        fs::copy(&built, out.join(name))
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), out.display()));
    }

    let python = example.join("plugins/titlecase-py");
    let wit = example.join("wit");
    let titlecase = out.join("titlecase.wasm");
    let sources = [python.join("app.py"), wit.join("udf.wit")];
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let fresh = modified(&titlecase).is_some_and(|built| {
        sources
            .iter()
            .all(|source| modified(source).is_some_and(|time| time < built))
    });
    if !fresh {
        // componentize-py writes `__pycache__` beside the sources: it runs
        // on a copy of them.
        let app = out.join("titlecase-py");
        fs::create_dir_all(&app).unwrap();
        fs::copy(python.join("app.py"), app.join("app.py")).unwrap();
        let _ = fs::remove_file(&titlecase);
        let status = Command::new("componentize-py")
            .arg("-d")
            .arg(&wit)
            .args(["-w", "udf", "componentize", "-p"])
            .arg(&app)
            .arg("app")
            .arg("-o")
            .arg(&titlecase)
            .current_dir(&app)
            .stdout(std::process::Stdio::null())
            .status();
        match status {
            Ok(status) => assert!(
                status.success(),
                "componentize-py failed to build {}",
                python.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!(
                    "cargo:warning=componentize-py is not on PATH (scripts/setup installs it): examples/udf's Python plugin is not built, and its test fails"
                );
                // A missing file makes cargo run this script again on the
                // next build, which then finds componentize-py if it came.
                println!("cargo:rerun-if-changed={}", titlecase.display());
            }
            Err(e) => panic!("running componentize-py: {e}"),
        }
    }
    UdfPlugins {
        slugify: out.join("slugify.wasm"),
        slugify_v2: out.join("slugify_v2.wasm"),
        titlecase,
    }
}

/// The cargo running this build script, for a guest package.
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The directory of the release of `krate` that `package` depends on,
/// where cargo unpacked the published crate, as `cargo metadata` tells
/// (and downloads it first if need be).
fn registry_source(package: &Path, krate: &str) -> PathBuf {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .arg("--manifest-path")
        .arg(package.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata for {}: {e}", package.display()));
    assert!(
        output.status.success(),
        "cargo metadata for {} failed:\n{}",
        package.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata = String::from_utf8(output.stdout).unwrap();
    // No JSON parser here: this crate has no build dependencies. Every
    // package's `manifest_path` is a plain string, and a registry crate's
    // directory is named NAME-VERSION (`extism-pdk-derive-*` is not
    // extism-pdk's).
    metadata
        .split("\"manifest_path\":\"")
        .skip(1)
        .map(|rest| PathBuf::from(json_string(rest)))
        .filter_map(|manifest| Some(manifest.parent()?.to_path_buf()))
        .find(|dir| {
            dir.file_name()
                .and_then(|name| name.to_str()?.strip_prefix(&format!("{krate}-")))
                .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
        })
        .unwrap_or_else(|| panic!("cargo metadata for {} names no {krate}", package.display()))
}

/// The JSON string whose body starts `text`, unescaped (paths hold no
/// `\u` escapes worth decoding).
fn json_string(text: &str) -> String {
    let mut string = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => string.extend(chars.next()),
            c => string.push(c),
        }
    }
    string
}

/// Writes a constant for each guest `dir/NAME.rs`, named NAME in upper case
/// and holding the path of `built/NAME.wasm`, its doc calling it `kind`.
/// Every NAME must start with `prefix`. Returns the names, sorted.
fn write_prefixed(
    out: &mut String,
    dir: &Path,
    prefix: &str,
    built: &Path,
    kind: &str,
) -> Vec<String> {
    let mut names = Vec::new();
    for source in sorted_files(dir, "rs") {
        let name = stem(&source);
        assert!(
            name.starts_with(prefix),
            "guest {} must be named {prefix}*",
            source.display()
        );
        write_const(
            out,
            &format!("`{name}`, {kind}."),
            &name.to_uppercase(),
            &built.join(format!("{name}.wasm")),
        );
        names.push(name);
    }
    names
}

fn write_const(out: &mut String, doc: &str, name: &str, path: &Path) {
    assert!(path.exists(), "guest {} was not built", path.display());
    writeln!(out, "/// {doc}").unwrap();
    writeln!(
        out,
        "pub const {name}: &str = {:?};",
        path.canonicalize().unwrap()
    )
    .unwrap();
}

fn write_foreach(out: &mut String, macro_name: &str, what: &str, names: &[String]) {
    writeln!(out, "/// Calls `$mac!(name)` once for {what}.").unwrap();
    writeln!(
        out,
        "#[macro_export]\nmacro_rules! {macro_name} {{\n    ($mac:ident) => {{"
    )
    .unwrap();
    for name in names {
        writeln!(out, "        $mac!({name});").unwrap();
    }
    writeln!(out, "    }};\n}}").unwrap();
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}
