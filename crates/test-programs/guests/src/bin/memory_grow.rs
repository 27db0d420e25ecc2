//! Grows linear memory 1 MiB at a time with `memory.grow` until it fails,
//! then prints how many MiB it holds. A failed grow returns -1 per the spec;
//! the guest keeps running.
fn main() {
    const PAGES_PER_MIB: usize = 16;
    loop {
        if core::arch::wasm32::memory_grow(0, PAGES_PER_MIB) == usize::MAX {
            break;
        }
    }
    let mib = core::arch::wasm32::memory_size(0) / PAGES_PER_MIB;
    println!("memory.grow failed at {mib} MiB");
}
