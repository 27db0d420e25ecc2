//! Allocates and touches 1 MiB blocks, keeping them all, until the allocator
//! gives up: Rust aborts on allocation failure, so the guest traps. Answering
//! `survived` needs a 4 GiB address space with room to spare, which wasm32
//! does not have.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const BLOCK: usize = 1 << 20;

/// More blocks than fit in a 32-bit address space.
const MAX_BLOCKS: usize = 4096;

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let mut blocks = Vec::new();
        while blocks.len() < MAX_BLOCKS {
            // Non-zero so that every page is really written.
            blocks.push(std::hint::black_box(vec![1u8; BLOCK]));
        }
        std::hint::black_box(&blocks);
        tern_http_guests::respond_text(out, 200, "survived");
    }
}

wasi::http::proxy::export!(MemoryBomb);
