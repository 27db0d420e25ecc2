//! Counts its own runs in the key-value store named by its argument
//! (`default` when none): opens it, increments `runs` and prints
//! `runs: N`. An error opening or incrementing is printed as
//! `error: ERROR` with exit code 1. Only the wasip2 build can link: the
//! store is a component interface.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "tern:keyvalue/services",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let result = store::open(&name).and_then(|bucket| atomics::increment(&bucket, "runs", 1));
    match result {
        Ok(runs) => println!("runs: {runs}"),
        Err(error) => {
            println!("error: {error:?}");
            std::process::exit(1);
        }
    }
}
