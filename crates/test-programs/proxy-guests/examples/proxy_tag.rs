//! A tiny configurable filter for chains and hot swap. Its plugin
//! configuration, as UTF-8, is its TAG (`none` when empty or absent); the
//! configuration `fail-start` makes `on_configure` return false, so the
//! host must refuse that version (and, on a hot swap, keep the old one).
//! Each request gets TAG appended to the request header `x-chain` (so a
//! chain a, b, c shows the upstream three `x-chain` values in order) and
//! each response the header `x-filter-tag: TAG`.
//! Each response also says how many requests its VM has seen
//! (`x-vm-requests`). A request with `x-rewrite-path: P` goes on with the
//! path P; one with `x-trap-body` traps on its body; one with
//! `x-tick-ms: N` sets the VM's tick period to N ms (0: off), and each
//! tick logs `tick TAG`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

/// Requests this VM has seen: a VM per worker counts on, a VM per request
/// always says 1.
static REQUESTS: AtomicU32 = AtomicU32::new(0);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { tag: "none".into() })
    });
}}

struct Root {
    tag: String,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_tick(&mut self) {
        log::info!("tick {}", self.tag);
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        if config == "fail-start" {
            log::warn!("configured to fail");
            return false;
        }
        if !config.is_empty() {
            self.tag = config.into_owned();
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Tag {
            tag: self.tag.clone(),
            trap_body: false,
        }))
    }
}

struct Tag {
    tag: String,
    trap_body: bool,
}

impl Context for Tag {}

impl HttpContext for Tag {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_request_header("x-chain", &self.tag);
        self.trap_body = self.get_http_request_header("x-trap-body").is_some();
        if let Some(path) = self.get_http_request_header("x-rewrite-path") {
            self.set_http_request_header(":path", Some(&path));
        }
        if let Some(ms) = self.get_http_request_header("x-tick-ms") {
            let period = Duration::from_millis(ms.parse().unwrap_or(0));
            proxy_wasm::hostcalls::set_tick_period(period).unwrap();
        }
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        Action::Continue
    }

    fn on_http_request_body(&mut self, _: usize, _: bool) -> Action {
        if self.trap_body {
            panic!("trap in a request body");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.add_http_response_header("x-filter-tag", &self.tag);
        let seen = REQUESTS.load(Ordering::Relaxed).to_string();
        self.add_http_response_header("x-vm-requests", &seen);
        Action::Continue
    }
}
