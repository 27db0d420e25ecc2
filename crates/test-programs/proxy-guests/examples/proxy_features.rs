//! A filter exercising the host functions beyond headers: shared data with
//! compare-and-swap, a shared queue, metrics, properties and a gRPC call.
//!
//! The root context, at VM start, registers the shared queue "events" and
//! defines the counter "requests_total", the gauge "last_path_length" and
//! the histogram "path_length"; when the queue is ready it drains it,
//! logging `queued: <item>` at Info for each item.
//!
//! Per request (request headers): the counter goes up by 1, the gauge and
//! the histogram get the length of the `:path` header; the shared key
//! "visits" (a decimal u64, 0 if absent) is incremented under its CAS
//! (retried up to 5 times on CasMismatch); the properties `request.path`
//! and `source.address` are read; `visit <n> <path property or none>` is
//! enqueued on "events"; the property `tern_test.note` is set to `noted`
//! and read back. With a request header `x-grpc`, it dispatches a gRPC call
//! to the undeclared upstream "grpc". The response then carries:
//! `x-visits: <n>` (`none` if CAS kept failing), `x-path-property`,
//! `x-source-address`, `x-note` (each `none` when absent) and, with
//! `x-grpc`, `x-grpc-result: ok` or the error status, e.g. `InternalFailure`.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { ids: Ids::default() })
    });
}}

/// What the root context sets up at VM start and every request uses.
#[derive(Clone, Copy, Default)]
struct Ids {
    queue: u32,
    requests_total: u32,
    last_path_length: u32,
    path_length: u32,
}

struct Root {
    ids: Ids,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        // The SDK's wrappers panic on any status but Ok, so a host that
        // refuses these fails the VM start, which the test would notice.
        self.ids = Ids {
            queue: self.register_shared_queue("events"),
            requests_total: hostcalls::define_metric(MetricType::Counter, "requests_total")
                .unwrap(),
            last_path_length: hostcalls::define_metric(MetricType::Gauge, "last_path_length")
                .unwrap(),
            path_length: hostcalls::define_metric(MetricType::Histogram, "path_length").unwrap(),
        };
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        // Drain it all: the host signals readiness, not a count.
        while let Ok(Some(item)) = hostcalls::dequeue_shared_queue(queue_id) {
            log::info!("queued: {}", String::from_utf8_lossy(&item));
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Features {
            ids: self.ids,
            visits: None,
            path: None,
            source: None,
            note: None,
            grpc: None,
        }))
    }
}

struct Features {
    ids: Ids,
    visits: Option<u64>,
    path: Option<String>,
    source: Option<String>,
    note: Option<String>,
    grpc: Option<String>,
}

impl Features {
    fn property(&self, path: Vec<&str>) -> Option<String> {
        self.get_property(path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Adds 1 to the shared "visits" under its CAS, so concurrent requests
    /// (other instances of this VM) do not lose updates. Note the first
    /// write, with the key absent, has no CAS (0 means "unconditional").
    fn count_visit(&self) -> Option<u64> {
        for _ in 0..5 {
            let (value, cas) = self.get_shared_data("visits");
            let seen = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let next = seen + 1;
            match self.set_shared_data("visits", Some(next.to_string().as_bytes()), cas) {
                Ok(()) => return Some(next),
                Err(Status::CasMismatch) => continue,
                Err(status) => {
                    log::warn!("set_shared_data: {status:?}");
                    return None;
                }
            }
        }
        None
    }
}

fn warn_on_err<T>(what: &str, result: Result<T, Status>) {
    if let Err(status) = result {
        log::warn!("{what}: {status:?}");
    }
}

impl Context for Features {}

impl HttpContext for Features {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let ids = self.ids;
        let path_len = self.get_http_request_header(":path").map_or(0, |p| p.len()) as u64;
        warn_on_err("requests_total", hostcalls::increment_metric(ids.requests_total, 1));
        warn_on_err("last_path_length", hostcalls::record_metric(ids.last_path_length, path_len));
        warn_on_err("path_length", hostcalls::record_metric(ids.path_length, path_len));

        self.visits = self.count_visit();
        self.path = self.property(vec!["request", "path"]);
        self.source = self.property(vec!["source", "address"]);

        let event = format!(
            "visit {} {}",
            self.visits.map_or("none".into(), |n| n.to_string()),
            self.path.as_deref().unwrap_or("none")
        );
        warn_on_err(
            "enqueue",
            self.enqueue_shared_queue(ids.queue, Some(event.as_bytes())),
        );

        // A property of the filter's own: what it sets it must read back.
        hostcalls::set_property(vec!["tern_test", "note"], Some(b"noted")).unwrap();
        self.note = self.property(vec!["tern_test", "note"]);

        if self.get_http_request_header("x-grpc").is_some() {
            // Only ParseFailure and InternalFailure come back as Err from
            // the SDK; any other refusal makes it panic (a trap).
            let result = hostcalls::dispatch_grpc_call(
                "grpc",
                "svc",
                "method",
                vec![],
                None,
                Duration::from_secs(1),
            );
            self.grpc = Some(match result {
                Ok(_) => "ok".into(),
                Err(status) => format!("{status:?}"),
            });
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let none = || "none".to_string();
        let visits = self.visits.map_or_else(none, |n| n.to_string());
        self.add_http_response_header("x-visits", &visits);
        self.add_http_response_header("x-path-property", self.path.as_deref().unwrap_or("none"));
        self.add_http_response_header("x-source-address", self.source.as_deref().unwrap_or("none"));
        self.add_http_response_header("x-note", self.note.as_deref().unwrap_or("none"));
        if let Some(grpc) = &self.grpc {
            self.add_http_response_header("x-grpc-result", grpc);
        }
        Action::Continue
    }
}
