//! Prints every environment variable the guest can see as KEY=VALUE, sorted,
//! then `count=N`.
fn main() {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in &vars {
        println!("{k}={v}");
    }
    println!("count={}", vars.len());
}
