//! Recurses without bound: the engine's stack limit must stop it.
#[inline(never)]
fn deeper(n: u64, buf: &mut [u64; 16]) -> u64 {
    let mut local = *buf;
    local[(n % 16) as usize] = n;
    std::hint::black_box(&mut local);
    deeper(n + 1, &mut local) + local[0]
}

fn main() {
    println!("recursing");
    let mut buf = [0u64; 16];
    println!("{}", deeper(0, &mut buf));
}
