//! Connects over TCP to the address in argv[1] (`HOST:PORT`), sends `ping`,
//! and prints `connected` or `error: KIND`.
use std::io::Write;
use std::net::TcpStream;

fn main() {
    let addr = std::env::args().nth(1).expect("usage: net_connect HOST:PORT");
    match TcpStream::connect(&addr) {
        Ok(mut stream) => {
            stream.write_all(b"ping").expect("write");
            println!("connected");
        }
        Err(e) => {
            println!("error: {:?}", e.kind());
            std::process::exit(1);
        }
    }
}
