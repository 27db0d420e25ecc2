//! Prints 16 bytes from `wasi:random/random.get-random-bytes` as 32 hex
//! digits on one line, then a `u64` from
//! `wasi:random/insecure.get-insecure-random-u64`, in decimal, on another.
use std::fmt::Write as _;

use wasip3::random::{insecure, random};

const BYTES: usize = 16;

struct Random;

impl wasip3::exports::cli::run::Guest for Random {
    async fn run() -> Result<(), ()> {
        // The host may return fewer bytes than asked for (at least one).
        let mut bytes = Vec::with_capacity(BYTES);
        while bytes.len() < BYTES {
            bytes.extend(random::get_random_bytes((BYTES - bytes.len()) as u64));
        }
        bytes.truncate(BYTES);
        let mut text = String::new();
        for byte in &bytes {
            write!(text, "{byte:02x}").unwrap();
        }
        writeln!(text).unwrap();
        writeln!(text, "{}", insecure::get_insecure_random_u64()).unwrap();
        tern_p3_guests::print(text).await;
        Ok(())
    }
}

wasip3::cli::command::export!(Random);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_random runs through wasi:cli/run@0.3.0");
}
