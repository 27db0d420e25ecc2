//! A hostile plug-in, each function one way to hurt its host: `spin` loops
//! forever; `spin_alloc` leaks 1 MiB blocks until memory runs out; `grow`
//! grows its memory a page at a time until `memory.grow` fails, then reads
//! past its end; `huge_output` asks the host for a 1 GiB block and makes it
//! the output; `deep` recurses without end. The `bad_*` functions call the
//! raw `extism:host/env` imports with offsets the host never handed out:
//! `bad_load` loads at `u64::MAX - 3`, `bad_output` sets a 1 TiB output at
//! 12345678, `bad_store` stores at 0, `bad_length` asks the length of 77,
//! `bad_free` frees 99, `bad_error` sets an error at 424242 and fails.

use std::arch::wasm32;
use std::hint::black_box;

use extism_pdk::{FnResult, Memory, plugin_fn};

// The kernel's imports, declared as a plug-in without the pdk would.
#[link(wasm_import_module = "extism:host/env")]
unsafe extern "C" {
    fn alloc(length: u64) -> u64;
    fn free(offset: u64);
    fn length(offset: u64) -> u64;
    fn load_u64(offset: u64) -> u64;
    fn store_u8(offset: u64, byte: u8);
    fn output_set(offset: u64, length: u64);
    fn error_set(offset: u64);
}

#[plugin_fn]
pub fn spin() -> FnResult<()> {
    loop {
        black_box(());
    }
}

#[plugin_fn]
pub fn spin_alloc() -> FnResult<()> {
    loop {
        black_box(vec![1u8; 1 << 20].leak());
    }
}

#[plugin_fn]
pub fn grow() -> FnResult<String> {
    while wasm32::memory_grow(0, 1) != usize::MAX {}
    // Eight bytes straddling the end: out of bounds even when memory fills
    // all 4 GiB a 32-bit address reaches.
    let end = wasm32::memory_size(0) as u64 * 65536;
    // SAFETY: none; reading past the end of memory is the point, and traps.
    let word = unsafe { std::ptr::read_unaligned((end - 4) as usize as *const u64) };
    Ok(format!("read {word} past the end"))
}

/// Raw, without the pdk, which would set an output of its own on return.
#[unsafe(no_mangle)]
pub extern "C" fn huge_output() -> i32 {
    let length = 1 << 30;
    // SAFETY: the import takes any length; the host decides.
    let offset = unsafe { alloc(length) };
    if offset == 0 {
        let message = Memory::from_bytes("the host refused a 1 GiB block").unwrap();
        // SAFETY: the pdk made the block.
        unsafe { error_set(message.offset()) };
        return 1;
    }
    // SAFETY: the block is the host's to read.
    unsafe { output_set(offset, length) };
    0
}

#[plugin_fn]
pub fn deep() -> FnResult<String> {
    Ok(recurse(0).to_string())
}

fn recurse(depth: u64) -> u64 {
    // Never true; it keeps the compiler from seeing a function that cannot
    // return.
    if black_box(depth) == u64::MAX {
        return depth;
    }
    black_box(recurse(depth + 1)) + 1
}

#[plugin_fn]
pub fn bad_load() -> FnResult<String> {
    // SAFETY: the host must check the offset.
    Ok(unsafe { load_u64(u64::MAX - 3) }.to_string())
}

/// Raw, without the pdk, which would set an output of its own on return.
#[unsafe(no_mangle)]
pub extern "C" fn bad_output() -> i32 {
    // SAFETY: the host must check the block.
    unsafe { output_set(12345678, 1 << 40) };
    0
}

#[plugin_fn]
pub fn bad_store() -> FnResult<&'static str> {
    // SAFETY: the host must keep its own bookkeeping out of reach.
    unsafe { store_u8(0, 1) };
    Ok("stored")
}

#[plugin_fn]
pub fn bad_length() -> FnResult<String> {
    // SAFETY: the host must answer 0 for what is not a block.
    Ok(unsafe { length(77) }.to_string())
}

#[plugin_fn]
pub fn bad_free() -> FnResult<&'static str> {
    // SAFETY: the host must ignore what is not a block.
    unsafe { free(99) };
    Ok("freed")
}

/// Raw, so that the host reads the error from the offset given here.
#[unsafe(no_mangle)]
pub extern "C" fn bad_error() -> i32 {
    // SAFETY: the host must check the offset.
    unsafe { error_set(424242) };
    1
}
