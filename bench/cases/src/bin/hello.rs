//! The startup case: as little work as a program can do.
fn main() {
    println!("Hello, world!");
}
