//! Looks for what an earlier request left in linear memory, to show whether
//! each request gets a fresh instance. The host resets a pool slot's memory
//! two ways: the first 2 MiB (its keep-resident size) by memset, the rest by
//! returning the pages to the kernel; the secret is left on both sides.
//!
//! - `GET /write?secret=S` copies S into a static buffer and a leaked heap
//!   block (low addresses, below 2 MiB) and into pages it grows memory by
//!   (its last bytes, above 2 MiB), then answers `stored at LOW HIGH`: the
//!   addresses of the static copy and of the copy in the grown pages.
//! - `GET /scan?reversed=R` grows memory to 16 MiB, so that it covers where
//!   an earlier `/write` grew it to, scans all of it for reverse(R), and
//!   checks that the static buffer is all zero; it answers `clean`, or
//!   `found at OFFSET...` and/or `BUF dirty`. The secret arrives reversed
//!   and is compared backwards so that this request never puts it in memory
//!   itself; a palindrome secret would therefore always be "found".
//! - `GET /control?reversed=R` writes reverse(R) as `/write` does, then
//!   scans as `/scan` does, in the same request: the positive control,
//!   which must find it on both sides of 2 MiB. It answers
//!   `stored at LOW HIGH; ` and the scan's answer.
use std::cell::UnsafeCell;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const PAGE: usize = 65536;

/// Pages `/write` grows memory by; its second copy goes at their end.
const HIGH_PAGES: usize = 48;

/// How much memory `/scan` makes sure there is before it scans.
const SCAN_BYTES: usize = 16 << 20;

/// Offsets `/scan` reports at most.
const MAX_FOUND: usize = 64;

/// A zero-initialised static, so that it lives in linear memory's data area.
struct Buf(UnsafeCell<[u8; 65536]>);

// Guests are single-threaded.
unsafe impl Sync for Buf {}

static BUF: Buf = Buf(UnsafeCell::new([0; 65536]));

struct Residue;

impl Guest for Residue {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let param = |name: &str| {
            tern_http_guests::query_param(&path, name)
                .unwrap_or_else(|| panic!("`{name}` in the query"))
                .as_bytes()
        };
        match tern_http_guests::path(&path) {
            "/write" => {
                let (low, high) = write(param("secret"));
                tern_http_guests::respond_text(out, 200, &format!("stored at {low} {high}"));
            }
            "/scan" => {
                tern_http_guests::respond_text(out, 200, &scan(param("reversed")));
            }
            "/control" => {
                let reversed = param("reversed");
                let secret: Vec<u8> = reversed.iter().rev().copied().collect();
                let (low, high) = write(&secret);
                let found = scan(reversed);
                tern_http_guests::respond_text(
                    out,
                    200,
                    &format!("stored at {low} {high}; {found}"),
                );
            }
            other => tern_http_guests::respond_text(out, 404, &format!("no route {other}")),
        }
    }
}

/// Leaves `secret` in BUF, in a leaked heap block and at the end of freshly
/// grown pages; returns the addresses of the first and the last copy.
fn write(secret: &[u8]) -> (usize, usize) {
    let buf = BUF.0.get().cast::<u8>();
    assert!(secret.len() <= 65536, "secret longer than BUF");
    // SAFETY: BUF is 64 KiB, the length was checked, and no reference to it
    // is alive.
    unsafe { core::ptr::copy_nonoverlapping(secret.as_ptr(), buf, secret.len()) };
    std::hint::black_box(secret.to_vec().leak());

    // Pages nobody else uses: the allocator never saw them.
    let old = core::arch::wasm32::memory_grow(0, HIGH_PAGES);
    assert!(
        old != usize::MAX,
        "memory.grow by {HIGH_PAGES} pages failed"
    );
    let high = (old + HIGH_PAGES) * PAGE - secret.len();
    for (i, &b) in secret.iter().enumerate() {
        // SAFETY: the grown pages are inside linear memory and belong to no
        // Rust object.
        unsafe { at(high + i).write_volatile(b) };
    }
    (buf as usize, high)
}

fn scan(reversed: &[u8]) -> String {
    let size = core::arch::wasm32::memory_size(0) * PAGE;
    if size < SCAN_BYTES {
        let grown = core::arch::wasm32::memory_grow(0, (SCAN_BYTES - size) / PAGE);
        assert!(
            grown != usize::MAX,
            "memory.grow to {SCAN_BYTES} bytes failed"
        );
    }
    let mut findings = Vec::new();
    let found = find_reversed(reversed);
    if !found.is_empty() {
        let offsets: Vec<String> = found.iter().map(usize::to_string).collect();
        findings.push(format!("found at {}", offsets.join(" ")));
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

/// A pointer to `address` in linear memory.
fn at(address: usize) -> *mut u8 {
    // Hide the base from the optimiser: address 0 is valid memory in wasm,
    // but Rust would otherwise be entitled to assume a null access never
    // happens.
    std::hint::black_box(core::ptr::null_mut::<u8>()).wrapping_add(address)
}

/// The addresses (the first [`MAX_FOUND`]) at which linear memory holds
/// `reversed` backwards.
fn find_reversed(reversed: &[u8]) -> Vec<usize> {
    let len = reversed.len();
    let end = core::arch::wasm32::memory_size(0) * PAGE;
    if len == 0 || len > end {
        return Vec::new();
    }
    let base = at(0);
    // SAFETY: every address below `end` is inside linear memory.
    let byte = |address: usize| unsafe { base.wrapping_add(address).read_volatile() };
    (0..=end - len)
        .filter(|&start| (0..len).all(|j| byte(start + j) == reversed[len - 1 - j]))
        .take(MAX_FOUND)
        .collect()
}

wasi::http::proxy::export!(Residue);
