//! Allocates 1 MiB blocks and touches them until the allocator gives up:
//! Rust aborts on allocation failure, so the guest traps.
fn main() {
    let mut blocks = Vec::new();
    loop {
        let block = vec![1u8; 1 << 20];
        blocks.push(block);
        if blocks.len() % 64 == 0 {
            eprintln!("holding {} MiB", blocks.len());
        }
    }
}
