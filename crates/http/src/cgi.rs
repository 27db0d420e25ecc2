//! CGI (RFC 3875) on both sides of a WAGI guest: the meta-variables it is
//! given, and the response it prints.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tern_manifest::FRAMING_HEADERS;

/// The request facts CGI meta-variables are made from.
pub(crate) struct CgiRequest<'a> {
    pub(crate) method: &'a str,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub(crate) protocol: &'static str,
    /// Whether the request came over TLS: `HTTPS=on`.
    pub(crate) https: bool,
    pub(crate) script_name: &'a str,
    pub(crate) path_info: &'a str,
    pub(crate) query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) server_name: &'a str,
    pub(crate) server_port: u16,
    pub(crate) remote_addr: String,
    pub(crate) request_uri: &'a str,
}

/// Header fields RFC 3875 (4.1.18) says not to pass on: credentials.
const WITHHELD: [&str; 2] = ["authorization", "proxy-authorization"];

impl CgiRequest<'_> {
    /// The meta-variables, in a stable order.
    pub(crate) fn variables(&self) -> Vec<(String, String)> {
        let header = |name| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut vars = vec![
            ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
            (
                "SERVER_SOFTWARE".into(),
                format!("tern/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("SERVER_PROTOCOL".into(), self.protocol.into()),
            ("SERVER_NAME".into(), self.server_name.to_string()),
            ("SERVER_PORT".into(), self.server_port.to_string()),
            ("REQUEST_METHOD".into(), self.method.to_string()),
            ("SCRIPT_NAME".into(), self.script_name.to_string()),
            ("PATH_INFO".into(), self.path_info.to_string()),
            ("QUERY_STRING".into(), self.query.to_string()),
            ("REQUEST_URI".into(), self.request_uri.to_string()),
            ("REMOTE_ADDR".into(), self.remote_addr.clone()),
            ("CONTENT_TYPE".into(), header(http::header::CONTENT_TYPE)),
            (
                "CONTENT_LENGTH".into(),
                header(http::header::CONTENT_LENGTH),
            ),
        ];
        if self.https {
            vars.push(("HTTPS".into(), "on".into()));
        }
        for (name, value) in self.headers {
            let name = name.as_str();
            if WITHHELD.contains(&name) || name == "content-type" || name == "content-length" {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
            // Repeated fields are joined, as RFC 3875 allows.
            match vars.iter_mut().find(|(k, _)| *k == var) {
                Some((_, existing)) => {
                    existing.push_str(", ");
                    existing.push_str(value);
                }
                None => vars.push((var, value.to_string())),
            }
        }
        vars
    }
}

/// A parsed CGI response.
#[derive(Debug)]
pub(crate) struct CgiResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: bytes::Bytes,
}

/// Parses what a CGI program printed: header lines, a blank line, the body.
/// Framing fields ([`FRAMING_HEADERS`]) are dropped; a 1xx or unknown status is
/// refused, since a CGI program cannot switch protocols or send an interim
/// response.
pub(crate) fn parse_response(output: bytes::Bytes) -> Result<CgiResponse, String> {
    let (head_len, body_start) = find_blank_line(&output)
        .ok_or("malformed CGI response: no blank line after the headers")?;
    let head = std::str::from_utf8(&output[..head_len])
        .map_err(|_| "malformed CGI response: headers are not UTF-8")?;
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| {
            format!("malformed CGI response: header line without a colon: {line:?}")
        })?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("malformed CGI response: bad Status {value:?}"))?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("malformed CGI response: bad header name {name:?}"))?;
        if FRAMING_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("malformed CGI response: bad value for {name}"))?;
        headers.append(name, value);
    }
    if headers.is_empty() && status.is_none() {
        return Err("malformed CGI response: no header fields".into());
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(CgiResponse {
        status,
        headers,
        body: output.slice(body_start..),
    })
}

/// Where the header block ends (`\n\n` or `\r\n\r\n`): its length and the
/// body's start.
fn find_blank_line(output: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, &b) in output.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &output[line_start..i];
        if line.is_empty() || line == b"\r" {
            return Some((line_start, i + 1));
        }
        line_start = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CgiResponse, String> {
        parse_response(bytes::Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn responses() {
        type Expected = Result<(u16, &'static str), &'static str>;
        let cases: &[(&str, Expected)] = &[
            ("Content-Type: text/plain\n\nhi", Ok((200, "hi"))),
            (
                "Content-Type: text/plain\r\n\r\nhi\r\n",
                Ok((200, "hi\r\n")),
            ),
            (
                "Status: 201 Created\nX-A: b\n\ncreated",
                Ok((201, "created")),
            ),
            ("Location: /elsewhere\n\n", Ok((302, ""))),
            ("Status: 404\nContent-Type: text/plain\n\n", Ok((404, ""))),
            (
                "this is not a CGI response\n",
                Err("malformed CGI response: no blank line after the headers"),
            ),
            (
                "no colon here\n\nbody",
                Err("malformed CGI response: header line without a colon: \"no colon here\""),
            ),
            ("\nbody", Err("malformed CGI response: no header fields")),
            (
                "Status: abc\n\n",
                Err("malformed CGI response: bad Status \"abc\""),
            ),
            (
                "Status: 101 Switching Protocols\nUpgrade: h2c\n\n",
                Err("malformed CGI response: bad Status \"101 Switching Protocols\""),
            ),
            (
                "Status: 600\n\n",
                Err("malformed CGI response: bad Status \"600\""),
            ),
            // A forged second response stays inside this one's body.
            (
                "Content-Length: 0\nContent-Type: text/plain\n\nHTTP/1.1 200 OK\r\n\r\n",
                Ok((200, "HTTP/1.1 200 OK\r\n\r\n")),
            ),
        ];
        for (input, expected) in cases {
            let got = parse(input).map(|r| {
                (
                    r.status.as_u16(),
                    String::from_utf8(r.body.to_vec()).unwrap(),
                )
            });
            let expected = expected
                .map(|(s, b)| (s, b.to_string()))
                .map_err(str::to_string);
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[test]
    fn framing_fields_are_dropped() {
        let response = parse(
            "Content-Length: 99\nTransfer-Encoding: chunked\nConnection: keep-alive\n\
             Keep-Alive: timeout=5\nX-Kept: yes\n\nbody",
        )
        .unwrap();
        let names: Vec<&str> = response.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn headers_become_variables_without_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert("x-trace-id", HeaderValue::from_static("abc"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let req = CgiRequest {
            method: "POST",
            protocol: "HTTP/2.0",
            https: true,
            script_name: "/api",
            path_info: "/items/7",
            query: "q=1",
            headers: &headers,
            server_name: "localhost",
            server_port: 3000,
            remote_addr: "127.0.0.1".into(),
            request_uri: "/api/items/7?q=1",
        };
        let vars = req.variables();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_X_TRACE_ID"), Some("abc"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(get("HTTP_AUTHORIZATION"), None);
        assert_eq!(get("PATH_INFO"), Some("/items/7"));
        assert_eq!(get("SERVER_PROTOCOL"), Some("HTTP/2.0"));
        assert_eq!(get("HTTPS"), Some("on"));
    }
}
