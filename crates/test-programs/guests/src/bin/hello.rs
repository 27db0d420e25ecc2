//! Prints a greeting: the smallest program that proves `tern run` works.
fn main() {
    println!("hello from wasm");
}
