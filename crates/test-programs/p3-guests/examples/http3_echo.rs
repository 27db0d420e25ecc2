//! Streams the request body back as the response body, each chunk written
//! out as soon as it has been read, then passes the request's trailers on
//! as the response's. The response (200) carries the request's method and
//! path with query as `x-echo-method` and `x-echo-path`, and the request's
//! `trailer` header (which trailers will follow; HTTP/1.1 servers send
//! only those declared). With `?direct=1` it hands the request's body and
//! trailers on as the response's without reading them: the host feeds
//! the response from the client's upload after the guest has returned.
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Request, Response};
use wasip3::wit_future;

struct Echo;

impl Guest for Echo {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = tern_p3_guests::method_name(&request.get_method()).to_owned();
        let path = request.get_path_with_query().unwrap_or_default();
        let declared = request.get_headers().get("trailer");
        let declared = declared
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let mut pairs = vec![
            ("x-echo-method", method.as_str()),
            ("x-echo-path", path.as_str()),
        ];
        if let Some(declared) = &declared {
            pairs.push(("trailer", declared));
        }
        let headers = tern_p3_guests::fields(&pairs);
        let (mut body_in, trailers_in) = tern_p3_guests::consume_body(request);
        if tern_p3_guests::query_param(&path, "direct") == Some("1") {
            let (response, _transmitted) = Response::new(headers, Some(body_in), trailers_in);
            return Ok(response);
        }

        let (mut body_out, body_rx) = wasip3::wit_stream::new();
        let (trailers_out, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _transmitted) = Response::new(headers, Some(body_rx), trailers_rx);

        // The copy runs after `handle` has returned the response head.
        wit_bindgen::spawn(async move {
            while let Some(chunk) = tern_p3_guests::next_chunk(&mut body_in).await {
                if !body_out.write_all(chunk).await.is_empty() {
                    // The client went away: the response's trailers future
                    // gets its default as `trailers_out` is dropped.
                    return;
                }
            }
            // The request's trailers are known once its body has ended; the
            // host reads the response's once its body has ended.
            drop(body_out);
            let trailers = trailers_in.await;
            let _ = trailers_out.write(trailers).await;
        });
        Ok(response)
    }
}

wasip3::http::service::export!(Echo);
