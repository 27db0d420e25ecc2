//! A tiny file tool: `fs read PATH`, `fs write PATH TEXT`, `fs ls PATH`.
//! Prints the outcome; on failure prints `error: KIND` and exits 1.
use std::fs;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["read", path] => fs::read_to_string(path).map(|s| print!("{s}")),
        ["write", path, text] => fs::write(path, text).map(|()| println!("wrote {path}")),
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
            eprintln!("usage: fs read PATH | fs write PATH TEXT | fs ls PATH");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        println!("error: {:?}", e.kind());
        std::process::exit(1);
    }
}
