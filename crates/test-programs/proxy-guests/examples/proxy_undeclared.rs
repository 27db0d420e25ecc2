//! A filter that calls out to an upstream ("nowhere") that the host's
//! configuration never declared. The test expects the host to refuse the
//! dispatch with a status the SDK turns into an error (BadArgument or
//! InternalFailure; any other status makes the SDK panic, a trap), so the
//! filter answers 502 with body `dispatch refused: <Status:?>\n`, e.g.
//! `dispatch refused: BadArgument\n`. No request must reach any upstream.

use std::time::Duration;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

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
        Some(Box::new(Undeclared))
    }
}

struct Undeclared;

impl Context for Undeclared {}

impl HttpContext for Undeclared {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let dispatched = self.dispatch_http_call(
            "nowhere",
            vec![(":method", "GET"), (":path", "/"), (":authority", "nowhere")],
            None,
            vec![],
            Duration::from_secs(1),
        );
        match dispatched {
            Err(status) => {
                let body = format!("dispatch refused: {status:?}\n");
                self.send_http_response(502, vec![], Some(body.as_bytes()));
            }
            // The host should never get here; if it does, the request stays
            // paused with no callback that resumes it (the test would see a
            // timeout or the host's own error, not a 502 from us).
            Ok(token) => log::warn!("dispatch to nowhere accepted: token {token}"),
        }
        Action::Pause
    }
}
