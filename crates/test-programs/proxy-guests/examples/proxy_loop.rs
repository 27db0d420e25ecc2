//! A filter that never returns from `on_http_request_headers`: it spins
//! forever bumping a static counter. The test expects the host to stop the
//! callback by its time budget (fuel/epoch), fail the request (5xx) instead
//! of hanging, and keep serving other requests.

use std::sync::atomic::{AtomicU64, Ordering};

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

// A store to a static is a side effect the optimizer must keep, so the loop
// stays a real loop instead of being folded away as UB-free dead code.
static SPINS: AtomicU64 = AtomicU64::new(0);

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
        Some(Box::new(Spin))
    }
}

struct Spin;

impl Context for Spin {}

impl HttpContext for Spin {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        loop {
            SPINS.fetch_add(1, Ordering::Relaxed);
            std::hint::black_box(&SPINS);
        }
    }
}
