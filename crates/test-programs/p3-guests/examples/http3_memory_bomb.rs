//! Allocates and touches 1 MiB blocks, keeping them all, until the allocator
//! gives up: Rust aborts on allocation failure, so the guest traps. Answering
//! `survived` needs a 4 GiB address space with room to spare, which wasm32
//! does not have.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};

const BLOCK: usize = 1 << 20;

/// More blocks than fit in a 32-bit address space.
const MAX_BLOCKS: usize = 4096;

struct MemoryBomb;

impl Guest for MemoryBomb {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let mut blocks = Vec::new();
        while blocks.len() < MAX_BLOCKS {
            // Non-zero so that every page is really written.
            blocks.push(std::hint::black_box(vec![1u8; BLOCK]));
        }
        std::hint::black_box(&blocks);
        tern_p3_guests::respond_text(200, "survived")
    }
}

wasip3::http::service::export!(MemoryBomb);
