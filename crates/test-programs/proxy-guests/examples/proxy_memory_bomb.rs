//! A filter whose `on_http_request_headers` allocates 1 MiB blocks forever,
//! writing into each one and keeping them all alive. The test expects the
//! host's memory cap to make `memory.grow` fail, the allocator to abort (a
//! trap), and the host to fail the request (5xx) and keep serving.

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

const MIB: usize = 1 << 20;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Bomb))
    }
}

struct Bomb;

impl Context for Bomb {}

impl HttpContext for Bomb {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // `vec![1; n]` (not 0) so the pages are really written, not just
            // reserved; black_box keeps the hoard from being optimized out.
            let block = vec![1u8; MIB];
            hoard.push(std::hint::black_box(block));
            std::hint::black_box(&hoard);
        }
    }
}
