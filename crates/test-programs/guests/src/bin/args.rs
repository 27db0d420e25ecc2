//! Prints argv, one argument per line, program name first.
fn main() {
    for arg in std::env::args() {
        println!("{arg}");
    }
}
