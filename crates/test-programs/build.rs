//! Compiles the guest programs in `guests/` for wasm32-wasip1 and
//! wasm32-wasip2 and writes their paths, plus the WAT programs in `wat/`,
//! into `$OUT_DIR/guests.rs`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [(&str, &str); 2] = [("P1", "wasm32-wasip1"), ("P2", "wasm32-wasip2")];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("guests");
    let wat_dir = manifest_dir.join("wat");
    println!("cargo:rerun-if-changed={}", guests.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", wat_dir.display());

    // A target directory of its own: the outer cargo holds a lock on ours.
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => manifest_dir.join("../../target/guests"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, target) in TARGETS {
        cmd.arg("--target").arg(target);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the guest programs");
    assert!(
        status.success(),
        "building guest programs failed; is `rustup target add wasm32-wasip1 wasm32-wasip2` done?"
    );

    let mut out = String::new();
    let mut names = Vec::new();
    for bin in sorted_files(&guests.join("src/bin"), "rs") {
        let name = stem(&bin);
        for (prefix, target) in TARGETS {
            let path = target_dir
                .join(target)
                .join("release")
                .join(format!("{name}.wasm"));
            assert!(path.exists(), "guest {} was not built", path.display());
            let kind = if prefix == "P1" {
                "core module"
            } else {
                "component"
            };
            writeln!(out, "/// `{name}` for {target} (a {kind}).").unwrap();
            writeln!(
                out,
                "pub const {prefix}_{}: &str = {:?};",
                name.to_uppercase(),
                path.canonicalize().unwrap()
            )
            .unwrap();
        }
        names.push(name);
    }
    for wat in sorted_files(&wat_dir, "wat") {
        let name = stem(&wat);
        writeln!(out, "/// `{name}.wat`, in text format.").unwrap();
        writeln!(
            out,
            "pub const WAT_{}: &str = {:?};",
            name.to_uppercase(),
            wat.canonicalize().unwrap()
        )
        .unwrap();
        names.push(name);
    }
    writeln!(out, "/// Calls `$mac!(name)` once for every guest program.").unwrap();
    writeln!(
        out,
        "#[macro_export]\nmacro_rules! foreach_guest {{\n    ($mac:ident) => {{"
    )
    .unwrap();
    for name in &names {
        writeln!(out, "        $mac!({name});").unwrap();
    }
    writeln!(out, "    }};\n}}").unwrap();
    fs::write(
        PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("guests.rs"),
        out,
    )
    .unwrap();
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}
