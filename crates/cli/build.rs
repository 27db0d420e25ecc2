//! Link flags for the `tern` binary, and the templates it embeds.
//!
//! Embeds the project templates (`templates/NAME/...`) and Tern's WIT
//! (`wit/...`) in the binary, for `tern new`. Build output and
//! dependencies that may sit in a template directory during development
//! (`target/`, `node_modules/`, `*.wasm`, ...) are left out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const SKIPPED_DIRS: [&str; 5] = ["target", "node_modules", "__pycache__", ".tern", ".venv"];

fn main() {
    // Pack relative relocations (DT_RELR): the dynamic loader then reads a
    // few KiB instead of ~900 KiB of relocation records at every start,
    // which is most of the page faults of a short `tern run`.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=tern=-Wl,-z,pack-relative-relocs");
    }
    embed_templates();
}

fn embed_templates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let templates = root.join("templates");
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", templates.display());
    println!("cargo:rerun-if-changed={}", wit.display());

    let mut out = String::from("/// A file: its path and contents.\n");
    out.push_str("pub type File = (&'static str, &'static [u8]);\n\n");
    out.push_str("/// Every template: its name and files.\n");
    out.push_str("pub static TEMPLATES: &[(&str, &[File])] = &[\n");
    let mut names: Vec<PathBuf> = read_dir(&templates)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    for dir in names {
        let name = dir.file_name().unwrap().to_str().unwrap();
        writeln!(out, "    ({name:?}, &[").unwrap();
        files(&dir, &dir, &mut out);
        out.push_str("    ]),\n");
    }
    out.push_str("];\n\n/// Tern's WIT (path under `wit/`, contents).\n");
    out.push_str("pub static WIT: &[File] = &[\n");
    files(&wit, &wit, &mut out);
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("templates.rs");
    std::fs::write(dest, out).unwrap();
}

fn files(base: &Path, dir: &Path, out: &mut String) {
    let mut entries = read_dir(dir);
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name) {
                files(base, &path, out);
            }
        } else if !name.ends_with(".wasm") {
            let relative = path.strip_prefix(base).unwrap().to_str().unwrap();
            let absolute = path.canonicalize().unwrap();
            writeln!(
                out,
                "        ({relative:?}, include_bytes!({:?})),",
                absolute.to_str().unwrap()
            )
            .unwrap();
        }
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect()
}
