//! The client side of `tern host`'s admin API, for `tern deploy` and
//! `tern apps`: one blocking HTTP/1.1 request per connection, plain HTTP
//! only, authorized by the operator's bearer token.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tern_runtime::{Error, Result};

/// Where the admin API is and how to prove the right to use it; shared by
/// `tern deploy` and each `tern apps` command.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The host's admin API, e.g. http://127.0.0.1:3001
    #[arg(long = "to", value_name = "URL")]
    url: String,
    /// A file holding the admin token [default: $TERN_ADMIN_TOKEN, else
    /// ~/.local/share/tern/host/admin-token, where `tern host` writes it]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// A client for the API these arguments name.
    pub(crate) fn admin(&self) -> Result<Admin> {
        Admin::new(&self.url, self.token_file.as_deref())
    }
}

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sending or awaiting an answer may take: a deploy's answer
/// comes once the host has compiled every component.
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// Most bytes of an answer's status line and headers.
const MAX_HEAD: u64 = 64 << 10;

/// Most bytes of an answer's body; the API answers with small JSON.
const MAX_BODY: u64 = 64 << 20;

/// A client of one host's admin API.
pub(crate) struct Admin {
    /// `HOST:PORT`, as the URL gave it (also the `Host` header).
    addr: String,
    /// The bearer token.
    token: String,
}

impl Admin {
    /// A client for `url` (`http://HOST[:PORT]`), with the token of
    /// `token_file`, else of `$TERN_ADMIN_TOKEN`, else of the file `tern
    /// host` writes by default.
    pub(crate) fn new(url: &str, token_file: Option<&Path>) -> Result<Admin> {
        let addr = authority(url)?;
        Ok(Admin {
            addr,
            token: token(token_file)?,
        })
    }

    /// The API's URL, for messages.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `method path` with `body`, and returns the answer's status and
    /// JSON body (`Value::Null` when empty). Error statuses are answers,
    /// not errors: what they mean depends on the call.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Value)> {
        let url = self.url();
        let stream = self
            .connect()
            .map_err(|e| Error::from(e).context(format!("cannot reach the admin API at {url}")))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            self.token,
            body.map_or(0, <[u8]>::len)
        );
        if body.is_some() {
            head.push_str("Content-Type: application/octet-stream\r\n");
        }
        head.push_str("\r\n");
        let sent = (&stream)
            .write_all(head.as_bytes())
            .and_then(|()| (&stream).write_all(body.unwrap_or_default()));
        let (status, bytes) = match sent {
            Ok(()) => read_answer(&stream)
                .map_err(|e| e.context(format!("reading the answer of the admin API at {url}")))?,
            Err(e) => {
                // The host may answer (413, say) and close before reading
                // the whole body; its answer says more than a broken pipe.
                let answer = match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => None,
                    _ => read_answer(&stream).ok(),
                };
                answer.ok_or_else(|| {
                    Error::from(timed_out(e)).context(format!("sending to the admin API at {url}"))
                })?
            }
        };
        let text = bytes.trim_ascii();
        let answer = if text.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice::<Value>(text) {
                Ok(value) => value,
                // A proxy's error page, say: its first line is the reason.
                Err(_) if !(200..300).contains(&status) => {
                    let text = String::from_utf8_lossy(text);
                    let line = text.lines().next().unwrap_or_default();
                    Value::String(line.chars().take(200).collect())
                }
                Err(e) => {
                    return Err(Error::from(e).context(format!(
                        "the admin API at {url} answered {status} with something other than JSON"
                    )));
                }
            }
        };
        Ok((status, answer))
    }

    /// A connection to the first of the host's addresses that accepts one.
    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(IO_TIMEOUT))?;
                    stream.set_write_timeout(Some(IO_TIMEOUT))?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the host name has no address")))
    }
}

/// The `HOST:PORT` of an `http://HOST[:PORT][/]` URL.
fn authority(url: &str) -> Result<String> {
    if url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        return Err(Error::msg(format!(
            "cannot use {url}: tern speaks plain HTTP to the admin API; reach a remote host \
             through an SSH tunnel or a TLS-terminating proxy"
        )));
    }
    let rest = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
        .ok_or_else(|| {
            Error::msg(format!(
                "`{url}` is not an admin API URL: expected http://HOST:PORT"
            ))
        })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']');
    if authority.is_empty() || !authority.chars().all(plain) {
        return Err(Error::msg(format!(
            "`{url}` is not an admin API URL: expected http://HOST:PORT, with no path, \
             user or query"
        )));
    }
    // A port is present when the last `:` comes after an IPv6 literal's `]`.
    let has_port = authority.rfind(':') > authority.rfind(']');
    Ok(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// The admin token: of `file`, else `$TERN_ADMIN_TOKEN`, else of `tern
/// host`'s default token file.
fn token(file: Option<&Path>) -> Result<String> {
    if let Some(file) = file {
        return read_token(file);
    }
    if let Some(token) = std::env::var_os("TERN_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
        return token
            .to_str()
            .map(str::trim)
            .filter(|t| is_token(t))
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::msg(
                    "TERN_ADMIN_TOKEN holds no admin token: expected one line of printable characters",
                )
            });
    }
    let Some(default) = tern_runtime::dirs::data_dir().map(|d| d.join("host/admin-token")) else {
        return Err(Error::msg(
            "no admin token: pass --token-file or set TERN_ADMIN_TOKEN \
             (there is no home directory to find `tern host`'s token in)",
        ));
    };
    if !default.exists() {
        return Err(Error::msg(format!(
            "no admin token: pass --token-file or set TERN_ADMIN_TOKEN \
             (`tern host` has not written {} on this machine)",
            default.display()
        )));
    }
    read_token(&default)
}

/// The token in `file`, without surrounding whitespace.
fn read_token(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::from(e).context(format!("reading the admin token from {}", file.display()))
    })?;
    let token = text.trim();
    if !is_token(token) {
        return Err(Error::msg(format!(
            "{} holds no admin token: expected one line of printable characters",
            file.display()
        )));
    }
    Ok(token.to_owned())
}

/// Whether `token` can be sent in a header as it is: a newline in it
/// would end the header.
fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The API path of the app `name`, then `rest` (`/rollback`, say). The
/// name is percent-encoded, so that one that is not a DNS label reaches the
/// host, which says what is wrong with it, rather than breaking the request.
pub(crate) fn app_path(name: &str, rest: &str) -> String {
    let mut path = String::from("/v1/apps/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            let _ = write!(path, "%{b:02X}");
        }
    }
    path.push_str(rest);
    path
}

/// The error for an error answer to `what` (`the deploy`, say):
/// `the host refused the deploy (422): <the host's error text>`.
pub(crate) fn refused(what: &str, status: u16, answer: &Value) -> Error {
    let text = match answer {
        Value::Object(fields) => fields
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| answer.to_string(), str::to_owned),
        Value::String(text) => text.clone(),
        Value::Null => "no reason given".to_owned(),
        other => other.to_string(),
    };
    Error::msg(format!("the host refused {what} ({status}): {text}"))
}

/// A field of an answer as text: a string as it is, a number or boolean
/// written out, `-` when missing or null.
pub(crate) fn field(answer: &Value, key: &str) -> String {
    match answer.get(key) {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// The items of an answer's array field; none when it is missing.
pub(crate) fn items<'a>(answer: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
    answer
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// An answer's status and body. The body ends where `Content-Length` says,
/// or where the host closes the connection.
fn read_answer(stream: &TcpStream) -> Result<(u16, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let left = MAX_HEAD.saturating_sub(head.len() as u64);
        let read = (&mut reader)
            .take(left)
            .read_until(b'\n', &mut head)
            .map_err(timed_out)?;
        if read == 0 {
            return Err(Error::msg(if left == 0 {
                "its headers are over 64KiB"
            } else {
                "the connection closed before the answer was complete"
            }));
        }
        if matches!(&head[start..], b"\r\n" | b"\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        let line: String = status_line.chars().take(80).collect();
        Error::msg(format!("not an HTTP/1.1 answer: `{line}`"))
    })?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| {
                Error::msg(format!("its Content-Length `{value}` is not a number"))
            })?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            // The API's answers are whole JSON documents, sent with a length.
            return Err(Error::msg(format!(
                "its body is sent with Transfer-Encoding `{value}`, which this client does not read"
            )));
        }
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(Error::msg(format!(
            "its body is over {}MiB",
            MAX_BODY >> 20
        )));
    }
    let mut body = Vec::new();
    reader
        .take(length.unwrap_or(MAX_BODY + 1))
        .read_to_end(&mut body)
        .map_err(timed_out)?;
    match length {
        Some(n) if (body.len() as u64) < n => Err(Error::msg(format!(
            "the connection closed after {} of the body's {n} bytes",
            body.len()
        ))),
        None if body.len() as u64 > MAX_BODY => Err(Error::msg(format!(
            "its body is over {}MiB",
            MAX_BODY >> 20
        ))),
        _ => Ok((status, body)),
    }
}

/// `error`, or for a socket timeout an error that says so in words (the
/// OS says "resource temporarily unavailable").
fn timed_out(error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress in {} minutes", IO_TIMEOUT.as_secs() / 60),
        ),
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://127.0.0.1:3001").unwrap(),
            "127.0.0.1:3001"
        );
        assert_eq!(
            authority("HTTP://localhost:3001/").unwrap(),
            "localhost:3001"
        );
        assert_eq!(
            authority("http://admin.example").unwrap(),
            "admin.example:80"
        );
        assert_eq!(authority("http://[::1]:3001").unwrap(), "[::1]:3001");
        assert_eq!(authority("http://[::1]").unwrap(), "[::1]:80");
        let https = authority("https://host:3001").unwrap_err().to_string();
        assert!(https.contains("plain HTTP"), "{https}");
        for bad in [
            "127.0.0.1:3001",
            "http://",
            "http://h:1/v1",
            "http://u@h:1",
            "http://h:1?x",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_paths_are_encoded() {
        assert_eq!(app_path("shop", "/rollback"), "/v1/apps/shop/rollback");
        assert_eq!(app_path("a b/c", ""), "/v1/apps/a%20b%2Fc");
    }

    #[test]
    fn tokens_fit_in_a_header() {
        assert!(is_token("abc-123_XYZ"));
        assert!(!is_token(""));
        assert!(!is_token("abc\r\nX-Evil: 1"));
        assert!(!is_token("two words"));
    }

    #[test]
    fn refusals_carry_the_hosts_text() {
        let answer = serde_json::json!({ "error": "tern.toml:3:1: component.x: bad" });
        assert_eq!(
            refused("the deploy", 422, &answer).to_string(),
            "the host refused the deploy (422): tern.toml:3:1: component.x: bad"
        );
        assert_eq!(
            refused("the request", 502, &Value::Null).to_string(),
            "the host refused the request (502): no reason given"
        );
    }
}
