//! Looks for what an earlier request left in linear memory, to show whether
//! each request gets a fresh instance.
//!
//! - `GET /write?secret=S` copies S into a static buffer and into a leaked
//!   heap block, then answers `stored`.
//! - `GET /scan?reversed=R` scans all of linear memory for reverse(R) and
//!   checks that the static buffer is all zero, then answers `clean`, or
//!   `found at OFFSET` and/or `BUF dirty`. The secret arrives reversed and is
//!   compared backwards so that this request never puts it in memory itself;
//!   a palindrome secret would therefore always be "found".
use std::cell::UnsafeCell;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const PAGE: u64 = 65536;

/// A zero-initialised static, so that it lives in linear memory's data area.
struct Buf(UnsafeCell<[u8; 65536]>);

// Guests are single-threaded.
unsafe impl Sync for Buf {}

static BUF: Buf = Buf(UnsafeCell::new([0; 65536]));

struct Residue;

impl Guest for Residue {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match tern_http_guests::path(&path) {
            "/write" => {
                let secret = tern_http_guests::query_param(&path, "secret")
                    .expect("`secret` in the query")
                    .as_bytes();
                write(secret);
                tern_http_guests::respond_text(out, 200, "stored");
            }
            "/scan" => {
                let reversed = tern_http_guests::query_param(&path, "reversed")
                    .expect("`reversed` in the query")
                    .as_bytes();
                tern_http_guests::respond_text(out, 200, &scan(reversed));
            }
            other => tern_http_guests::respond_text(out, 404, &format!("no route {other}")),
        }
    }
}

fn write(secret: &[u8]) {
    let buf = BUF.0.get().cast::<u8>();
    assert!(secret.len() <= 65536, "secret longer than BUF");
    // SAFETY: BUF is 64 KiB, the length was checked, and no reference to it
    // is alive.
    unsafe { core::ptr::copy_nonoverlapping(secret.as_ptr(), buf, secret.len()) };
    std::hint::black_box(secret.to_vec().leak());
}

fn scan(reversed: &[u8]) -> String {
    let mut findings = Vec::new();
    if let Some(offset) = find_reversed(reversed) {
        findings.push(format!("found at {offset}"));
    }
    // SAFETY: nothing else refers to BUF while this shared borrow lives.
    let buf = unsafe { &*BUF.0.get() };
    if buf.iter().any(|&b| b != 0) {
        findings.push("BUF dirty".to_owned());
    }
    if findings.is_empty() {
        "clean".to_owned()
    } else {
        findings.join(", ")
    }
}

/// The lowest address at which linear memory holds `reversed` backwards.
fn find_reversed(reversed: &[u8]) -> Option<u64> {
    let len = reversed.len() as u64;
    let end = core::arch::wasm32::memory_size(0) as u64 * PAGE;
    if len == 0 || len > end {
        return None;
    }
    // Hide the base from the optimiser: address 0 is valid memory in wasm,
    // but Rust would otherwise be entitled to assume a null read never
    // happens.
    let base = std::hint::black_box(core::ptr::null::<u8>());
    // SAFETY: every address below `end` is inside linear memory.
    let byte = |address: u64| unsafe { base.wrapping_add(address as usize).read_volatile() };
    (0..=end - len)
        .find(|&start| (0..len).all(|j| byte(start + j) == reversed[(len - 1 - j) as usize]))
}

wasi::http::proxy::export!(Residue);
