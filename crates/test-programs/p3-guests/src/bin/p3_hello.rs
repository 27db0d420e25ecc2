//! Writes `hello from wasi 0.3` to stdout through a stream handed to
//! `wasi:cli/stdout.write-via-stream`: the smallest WASI 0.3 command.
use wasip3::cli::stdout;
use wasip3::wit_stream;

struct Hello;

impl wasip3::exports::cli::run::Guest for Hello {
    async fn run() -> Result<(), ()> {
        let (mut tx, rx) = wit_stream::new();
        // The host starts reading the stream at once; `done` resolves once
        // the stream is closed and everything in it written out.
        let done = stdout::write_via_stream(rx);
        let unwritten = tx.write_all(b"hello from wasi 0.3\n".to_vec()).await;
        drop(tx);
        done.await.map_err(|_| ())?;
        if unwritten.is_empty() {
            Ok(())
        } else {
            Err(())
        }
    }
}

wasip3::cli::command::export!(Hello);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_hello runs through wasi:cli/run@0.3.0");
}
