//! The responses Tern writes itself. They are short, generic and carry the
//! request id, never a host path, a trap message or a secret.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{ResponseBody, full};
use crate::events::RequestId;

/// The header carrying the request id on Tern's own responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A plain-text error response naming only the status and the request id.
pub(crate) fn error(status: u16, id: RequestId) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!("{} {reason}\nrequest id: {id}\n", status.as_u16());
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
