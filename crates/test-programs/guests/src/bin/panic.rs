//! Panics with a message: Rust turns the panic into an `unreachable` trap.
#[inline(never)]
fn check_invariant(value: u32) {
    if value != 42 {
        panic!("invariant broken: {value} != 42");
    }
}

fn main() {
    check_invariant(std::hint::black_box(7));
}
