//! A route answered from the manifest (Spin's `static_response`): no guest
//! runs, and the response is made once, when the app loads.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tern_manifest::StaticResponse;

use crate::body::{ResponseBody, full};

/// A static response, ready to send.
#[derive(Debug)]
pub(crate) struct StaticReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StaticReply {
    /// `response` as HTTP values. The manifest has checked the status and
    /// every header as `http` does, so none is lost here.
    pub(crate) fn new(response: &StaticResponse) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in &response.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                // Past http's capacity (the manifest's bound is far below
                // it) a header is left out rather than panicking.
                let _ = headers.try_append(name, value);
            }
        }
        StaticReply {
            status: StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(response.body.clone()),
        }
    }

    /// The status it answers with.
    pub(crate) fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The response to one request: the body is shared, not copied; the
    /// header map is the response's own.
    pub(crate) fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }

    /// How the route listing shows it: `static response 200`.
    pub(crate) fn describe(&self) -> String {
        format!("static response {}", self.status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn answers_what_the_manifest_wrote_every_time() {
        let reply = StaticReply::new(&StaticResponse {
            status: 301,
            headers: vec![
                ("Location".into(), "/new".into()),
                ("x-tag".into(), "a".into()),
                ("X-Tag".into(), "b".into()),
            ],
            body: "moved\n".into(),
        });
        assert_eq!(reply.status(), 301);
        assert_eq!(reply.describe(), "static response 301");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..2 {
            let response = reply.response();
            assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
            assert_eq!(response.headers()["location"], "/new");
            let tags: Vec<&str> = response
                .headers()
                .get_all("x-tag")
                .iter()
                .map(|value| value.to_str().unwrap())
                .collect();
            assert_eq!(tags, ["a", "b"]);
            let body = runtime
                .block_on(response.into_body().collect())
                .unwrap()
                .to_bytes();
            assert_eq!(body, "moved\n");
        }
    }
}
