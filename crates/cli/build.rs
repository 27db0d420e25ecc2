//! Link flags for the `tern` binary.

fn main() {
    // Pack relative relocations (DT_RELR): the dynamic loader then reads a
    // few KiB instead of ~900 KiB of relocation records at every start,
    // which is most of the page faults of a short `tern run`.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=tern=-Wl,-z,pack-relative-relocs");
    }
}
