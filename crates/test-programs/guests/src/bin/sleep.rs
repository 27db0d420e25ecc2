//! Sleeps in the host for the number of seconds in argv[1]: a guest blocked
//! outside wasm code, which epoch interruption alone cannot stop.
fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    println!("sleeping {secs}s");
    std::thread::sleep(std::time::Duration::from_secs(secs));
    println!("woke up");
}
