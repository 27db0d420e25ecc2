//! A filter that keeps a value it fetches from an upstream, the way filters
//! refresh signing keys or configuration: its root context dispatches the
//! call on a tick, outside any request, and keeps the answer in shared
//! data, which every response it passes then carries.
//!
//! Its configuration names the upstream. At start the root context asks
//! for a tick every 20 ms. On a tick with no call out it dispatches
//! `GET /key` to that upstream; a refusal is logged (Warn) as `dispatch
//! refused: <Status:?>` and stops the ticks. An answer is logged (Info) as
//! `fetched <:status>: <body>`, its body kept under the shared key "key",
//! and the ticks slow to one a minute. A call that failed (no `:status`)
//! is logged as `fetch failed` and tried again on the next tick. Every
//! response gets `x-key: <body>`, `none` before the first answer.

use std::time::Duration;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Fetcher { upstream: String::new(), waiting: false })
    });
}}

struct Fetcher {
    upstream: String,
    /// A call is out.
    waiting: bool,
}

impl Context for Fetcher {
    fn on_http_call_response(&mut self, _: u32, _: usize, body_size: usize, _: usize) {
        self.waiting = false;
        let Some(status) = self.get_http_call_response_header(":status") else {
            log::info!("fetch failed");
            return;
        };
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        log::info!("fetched {status}: {}", String::from_utf8_lossy(&body));
        if let Err(status) = self.set_shared_data("key", Some(&body), None) {
            log::warn!("set_shared_data: {status:?}");
        }
        self.set_tick_period(Duration::from_secs(60));
    }
}

impl RootContext for Fetcher {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(config) = self.get_plugin_configuration() else {
            return false;
        };
        self.upstream = String::from_utf8_lossy(&config).into_owned();
        self.set_tick_period(Duration::from_millis(20));
        true
    }

    fn on_tick(&mut self) {
        if self.waiting {
            return;
        }
        let dispatched = self.dispatch_http_call(
            &self.upstream,
            vec![
                (":method", "GET"),
                (":path", "/key"),
                (":authority", "keys"),
            ],
            None,
            vec![],
            Duration::from_secs(5),
        );
        match dispatched {
            Ok(_) => self.waiting = true,
            Err(status) => {
                log::warn!("dispatch refused: {status:?}");
                self.set_tick_period(Duration::ZERO);
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stamp))
    }
}

struct Stamp;

impl Context for Stamp {}

impl HttpContext for Stamp {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let key = match self.get_shared_data("key") {
            (Some(key), _) => String::from_utf8_lossy(&key).into_owned(),
            (None, _) => "none".to_string(),
        };
        self.add_http_response_header("x-key", &key);
        Action::Continue
    }
}
