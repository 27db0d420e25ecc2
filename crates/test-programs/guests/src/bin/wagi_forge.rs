//! A WAGI program that tries to frame its own response, picked by its query
//! string: `stderr` writes control characters to the log, `smuggle` declares an empty body and prints a second response
//! after it, `long` declares more bytes than it prints, `switch` asks for a
//! protocol switch, `big=N` prints a body of N bytes. The host must keep the
//! framing its own.
use std::io::Write;

fn main() {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    if query == "stderr" {
        eprint!("first line\r2026-01-01T00:00:00.000Z forged GET / 200\x1b[2J\n");
    }
    let mut out = std::io::stdout().lock();
    let head: &[u8] = match query.as_str() {
        "smuggle" => b"Content-Length: 0\nContent-Type: text/plain\n\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
        "long" => b"Content-Length: 1000\nTransfer-Encoding: identity\nConnection: close\nContent-Type: text/plain\n\nshort",
        "switch" => b"Status: 101 Switching Protocols\nUpgrade: websocket\nConnection: upgrade\n\n",
        _ => b"Content-Type: text/plain\n\n",
    };
    // A write the host refuses (output past its limit) ends the program
    // with an error, as a careless CGI program would not notice.
    let _ = out.write_all(head);
    if let Some(size) = query.strip_prefix("big=") {
        let size: usize = size.parse().expect("big=N");
        let _ = out.write_all(&vec![b'x'; size]);
    }
    let _ = out.flush();
}
