//! Recurses without bound. Nothing takes a local's address, so the frames
//! live on the engine's wasm stack (not in linear memory), and the stack
//! limit must stop it.
#[inline(never)]
fn deeper(n: u64) -> u64 {
    if std::hint::black_box(n) == u64::MAX { 0 } else { deeper(n + 1).wrapping_mul(3).wrapping_add(n) }
}

fn main() {
    println!("recursing");
    println!("{}", deeper(0));
}
