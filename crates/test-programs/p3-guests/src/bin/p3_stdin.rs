//! Reads all of stdin (`wasi:cli/stdin.read-via-stream`) and writes it to
//! stdout in upper case. With `--forever` it instead waits on stdin,
//! discarding whatever comes, for as long as stdin stays open: a guest that
//! is blocked on a host stream, which only the host's timeout can end. If
//! stdin does end, it says `stdin ended` and returns.
use wasip3::cli::stdin;

struct Stdin;

impl wasip3::exports::cli::run::Guest for Stdin {
    async fn run() -> Result<(), ()> {
        let forever = tern_p3_guests::args().iter().any(|arg| arg == "--forever");
        let (mut rx, done) = stdin::read_via_stream();
        if forever {
            while tern_p3_guests::next_chunk(&mut rx).await.is_some() {}
            tern_p3_guests::print("stdin ended\n").await;
            return Ok(());
        }
        let input = rx.collect().await;
        if let Err(code) = done.await {
            return tern_p3_guests::fail(&format!("error: {code:?}"), 2).await;
        }
        tern_p3_guests::print(String::from_utf8_lossy(&input).to_uppercase()).await;
        Ok(())
    }
}

wasip3::cli::command::export!(Stdin);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_stdin runs through wasi:cli/run@0.3.0");
}
