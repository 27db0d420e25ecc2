//! A WAGI (CGI over WASI) program that describes its request: its
//! arguments as `arg: A` lines, the environment, sorted, as `env: K=V`
//! lines, then `body: ` and stdin as is.
use std::io::{Read, Write};

fn main() {
    let mut out = std::io::stdout().lock();
    out.write_all(b"Content-Type: text/plain\n\n")
        .expect("write stdout");
    for arg in std::env::args() {
        writeln!(out, "arg: {arg}").expect("write stdout");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in &vars {
        writeln!(out, "env: {k}={v}").expect("write stdout");
    }
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).expect("read stdin");
    out.write_all(b"body: ").expect("write stdout");
    out.write_all(&body).expect("write stdout");
    out.flush().expect("flush stdout");
}
