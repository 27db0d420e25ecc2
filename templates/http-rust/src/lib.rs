//! An HTTP handler for WASI 0.3 (`wasi:http/handler@0.3.0`): Tern calls
//! `handle` once per request, each time in a fresh sandboxed instance.
//!
//! A WASI 0.3 handler is an `async fn`. It returns the response's head (the
//! status and headers) as soon as it has one; the body follows as a stream,
//! written by a task the handler spawns. Tern sends the head at once, hands
//! each chunk of the body to the client as it is written, and keeps the
//! instance running until the task is done.

use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_future, wit_stream};

struct Component;

impl Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        match request.get_method() {
            Method::Get => {
                let body = format!("Hello from Rust!\nYou asked for {path}\n");
                respond(200, &[], body)
            }
            // A 405 says which methods would have worked.
            _ => respond(405, &[("allow", "GET")], "Only GET is supported\n"),
        }
    }
}

/// A plain-text response of any size, with `extra_headers`. The head is
/// ready at once; the body is written after `handle` has returned it.
///
/// Returning an `Err` instead makes Tern answer 500 and log the error code.
fn respond(
    status: u16,
    extra_headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Result<Response, ErrorCode> {
    let body = body.into();
    let length = body.len().to_string();
    let mut headers = vec![
        ("content-type", "text/plain; charset=utf-8"),
        // The length is known up front, so the client learns where the body
        // ends without chunked encoding.
        ("content-length", length.as_str()),
    ];
    headers.extend_from_slice(extra_headers);
    // Header names are strings, values bytes.
    let headers: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into()))
        .collect();
    let headers = Fields::from_list(&headers)
        .map_err(|e| ErrorCode::InternalError(Some(format!("invalid headers: {e}"))))?;

    // The body is a stream of bytes: the response gets its reading end, the
    // task below its writing end.
    let (mut body_writer, body_reader) = wit_stream::new();
    // The trailers (headers sent after the body) are a future, read once the
    // body has ended. Dropping its writer sends the default given here,
    // `Ok(None)`: no trailers.
    let (trailers_writer, trailers_reader) = wit_future::new(|| Ok(None));
    // `_sent` would tell whether the whole response reached the client.
    let (response, _sent) = Response::new(headers, Some(body_reader), trailers_reader);
    drop(trailers_writer);
    response
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some(format!("invalid status {status}"))))?;

    // Runs once `handle` has returned the head. `write_all` writes as much as
    // the client takes at a time and waits for room in between; it gives back
    // whatever it could not write because the client went away. Dropping the
    // writer at the end of the task ends the body.
    wasip3::spawn(async move {
        let _unsent = body_writer.write_all(body).await;
    });
    Ok(response)
}

wasip3::http::service::export!(Component);
