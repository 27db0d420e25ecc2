//! Guest programs for Tern's tests, compiled by this crate's build script.
//!
//! Each Rust guest in `guests/src/bin/NAME.rs` is built for two targets and
//! exposed as `P1_NAME` (a WASI preview 1 core module) and `P2_NAME` (a WASI
//! 0.2 component); each `wat/NAME.wat` is exposed as `WAT_NAME`. The
//! [`foreach_guest!`] macro lists every guest so that a test suite can check
//! at compile time that each one has a test.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
