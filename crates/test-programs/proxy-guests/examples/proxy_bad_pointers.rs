//! A filter that hands the host wild pointers. In `on_http_request_headers`
//! it calls five raw host functions, each with a pointer (or pointer +
//! length) outside its linear memory, and collects the statuses: the host
//! must answer 6 (InvalidMemoryAccess) to each, neither crash nor trap the
//! guest nor act on the call (no log line, no local response). It then
//! answers 200 with header `x-statuses: 6,6,6,6,6` and body `survived\n`,
//! sent through the SDK with valid pointers.

use std::ptr::null;

use proxy_wasm::traits::*;
use proxy_wasm::types::*;

// The ABI's imports, declared as a filter without the SDK would: u32 for
// the enums and the status, since the SDK's `Status` has no variant 6
// (InvalidMemoryAccess) and a foreign value in it would be UB. Same wasm
// signatures as the SDK's own declarations, so both link to one import.
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

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
        Some(Box::new(BadPointers))
    }
}

struct BadPointers;

impl Context for BadPointers {}

impl HttpContext for BadPointers {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // Valid out-parameters for the one call whose input alone is wild.
        let mut value_data: *mut u8 = std::ptr::null_mut();
        let mut value_size: usize = 0;
        // Map/buffer type 0 is the request headers/body. All addresses are
        // near 4 GiB, far past any memory a filter gets, and each range
        // wraps or overruns the 32-bit address space.
        let statuses = unsafe {
            [
                // A log message at Info that does not exist.
                proxy_log(2, 0xFFFF_FF00 as *const u8, 512),
                // Both return slots wild: the host must not write there.
                proxy_get_header_map_pairs(
                    0,
                    0xFFFF_FFF0 as *mut *mut u8,
                    0xFFFF_FFF8 as *mut usize,
                ),
                // A 1 MiB key starting 64 KiB below the 4 GiB line.
                proxy_get_header_map_value(
                    0,
                    0xFFFF_0000 as *const u8,
                    0x10_0000,
                    &mut value_data,
                    &mut value_size,
                ),
                // Replace nothing of the body with 4 KiB nobody owns.
                proxy_set_buffer_bytes(0, 0, 0, 0xFFFF_FF00 as *const u8, 4096),
                // A local response whose body is wild: must not be sent.
                proxy_send_local_response(
                    200,
                    null(),
                    0,
                    0xFFFF_FF00 as *const u8,
                    1000,
                    null(),
                    0,
                    -1,
                ),
            ]
        };
        let statuses = statuses.map(|s| s.to_string()).join(",");
        log::info!("bad pointer statuses: {statuses}");
        self.send_http_response(200, vec![("x-statuses", &statuses)], Some(b"survived\n"));
        Action::Pause
    }
}
