//! A filter that traps in the middle of a response body: the first
//! `on_http_response_body` call carrying data passes it on, a later call
//! panics (`panic = "abort"`, so a wasm trap). The SDK's panic hook first
//! logs the message at Critical level ("trap in the middle of a body").
//! The test expects the host to cut the response short (or fail it if
//! nothing was sent yet) rather than hang, and to keep serving.
//!
//! Configured with `hold`, it rewrites the first data and holds it back
//! (`Pause`) before trapping on the next call: a filter failing open must
//! then pass on the bytes it held, as it was given them.

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { hold: false }) });
}}

struct Root {
    hold: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.hold = self.get_plugin_configuration().as_deref() == Some(b"hold");
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TrapBody {
            calls: 0,
            passed_data: false,
            hold: self.hold,
        }))
    }
}

struct TrapBody {
    calls: u32,
    passed_data: bool,
    hold: bool,
}

impl Context for TrapBody {}

impl HttpContext for TrapBody {
    fn on_http_response_body(&mut self, body_size: usize, _: bool) -> Action {
        self.calls += 1;
        log::info!("response body call {} ({} bytes)", self.calls, body_size);
        if self.passed_data {
            // Any call after one that let data through: the host has
            // already started streaming the body when this fires.
            panic!("trap in the middle of a body");
        }
        if body_size > 0 {
            self.passed_data = true;
            if self.hold {
                self.set_http_response_body(0, body_size, b"CHANGED");
                return Action::Pause;
            }
        }
        Action::Continue
    }
}
