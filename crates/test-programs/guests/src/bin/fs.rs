//! A tiny file tool: `fs read PATH`, `fs write PATH TEXT`, `fs ls PATH`,
//! `fs symlink TARGET LINK`. Prints the outcome; on failure prints
//! `error: KIND` and exits 1.
use std::fs;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["read", path] => fs::read_to_string(path).map(|s| print!("{s}")),
        ["write", path, text] => fs::write(path, text).map(|()| println!("wrote {path}")),
        ["symlink", target, link] => {
            symlink(target, link).map(|()| println!("linked {link} -> {target}"))
        }
        ["ls", path] => fs::read_dir(path).map(|entries| {
            let mut names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                println!("{name}");
            }
        }),
        _ => {
            eprintln!(
                "usage: fs read PATH | fs write PATH TEXT | fs ls PATH | fs symlink TARGET LINK"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        println!("error: {:?}", e.kind());
        std::process::exit(1);
    }
}

/// `fs::soft_link` is deprecated for the per-platform functions, but WASI's
/// (`std::os::wasi::fs::symlink_path`) is not stable yet.
#[allow(deprecated)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    fs::soft_link(target, link)
}
