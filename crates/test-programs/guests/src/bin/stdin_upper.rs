//! Copies stdin to stdout in upper case, and reports the byte count on stderr.
use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    std::io::stdout().write_all(input.to_uppercase().as_bytes()).expect("write stdout");
    eprintln!("read {} bytes", input.len());
}
