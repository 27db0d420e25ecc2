//! `p3_http_get URL`: sends `GET URL` through `wasi:http/client.send` and
//! prints the response's status on the first line, then its body as it is.
//! A failure prints `error: ERROR` and exits with code 4, ERROR being the
//! `Debug` of wasi:http's `ErrorCode` (e.g. `ErrorCode::HttpRequestDenied`)
//! or, for a malformed URL, a message.

/// The exit code of every failure.
const FAILED: u8 = 4;

struct HttpGet;

impl wasip3::exports::cli::run::Guest for HttpGet {
    async fn run() -> Result<(), ()> {
        let args = tern_p3_guests::args();
        let [url] = &args[..] else {
            return tern_p3_guests::fail("usage: p3_http_get URL", 2).await;
        };
        match tern_p3_guests::get(url).await {
            Ok((status, body)) => {
                let mut out = format!("{status}\n").into_bytes();
                out.extend_from_slice(&body);
                tern_p3_guests::print(out).await;
                Ok(())
            }
            Err(failure) => tern_p3_guests::fail(&format!("error: {failure}"), FAILED).await,
        }
    }
}

wasip3::cli::command::export!(HttpGet);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_http_get runs through wasi:cli/run@0.3.0");
}
