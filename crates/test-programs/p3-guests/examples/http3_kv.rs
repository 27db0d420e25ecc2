//! Drives a key-value store from a WASI 0.3 handler, through Tern's
//! `wasi:keyvalue` interfaces (the same ones the 0.2 guests use, see
//! `http_kv`), one operation per request:
//!
//! - `GET /kv/STORE/KEY`: the value (404 `absent`).
//! - `PUT /kv/STORE/KEY` (body = value): set, 204.
//! - `DELETE /kv/STORE/KEY`: delete, 204.
//! - `POST /kv/STORE/KEY?incr=N`: increment by N, answers the new value.
//! - `GET /kv/STORE?keys`: every key, following cursors, sorted, one per
//!   line.
//!
//! The key is everything after `/kv/STORE/`, as it is (no percent-decoding).
//! Store errors answer 403 `access-denied`, 404 `no-such-store` or 500
//! `other: MSG`; a request of any other shape 400.

use tern_p3_guests::services::wasi::keyvalue::atomics;
use tern_p3_guests::services::wasi::keyvalue::store::{self, Error};
use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Method, Request, Response};

/// A stop for a host whose `list-keys` cursor never runs out.
const MAX_PAGES: usize = 100_000;

/// One key-value operation, as the request asks for it.
enum Op {
    Get(String),
    Set(String, Vec<u8>),
    Delete(String),
    Increment(String, u64),
    Keys,
}

/// A response to send.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            body: body.into(),
        }
    }

    fn no_content() -> Self {
        Reply::new(204, Vec::new())
    }
}

struct Kv;

impl Guest for Kv {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let reply = match parse(request).await {
            Ok((store, op)) => run(&store, op).unwrap_or_else(error_reply),
            Err(why) => Reply::new(400, why),
        };
        if reply.status == 204 {
            // No body and no content-length on a 204 (RFC 9110, 8.6).
            tern_p3_guests::respond_empty(204)
        } else {
            tern_p3_guests::respond(reply.status, &[], reply.body)
        }
    }
}

/// The store and operation `request` asks for, or why it makes no sense.
/// Reads the body of a `PUT`.
async fn parse(request: Request) -> Result<(String, Op), String> {
    let path_with_query = request.get_path_with_query().unwrap_or_default();
    let pwq = path_with_query.as_str();
    let rest = tern_p3_guests::path(pwq)
        .strip_prefix("/kv/")
        .ok_or("expected /kv/STORE[/KEY]")?;
    let (store, key) = match rest.split_once('/') {
        Some((store, key)) => (store, Some(key.to_owned())),
        None => (rest, None),
    };
    if store.is_empty() || key.as_deref() == Some("") {
        return Err("empty store or key".into());
    }

    let op = match (request.get_method(), key) {
        (Method::Get, Some(key)) => Op::Get(key),
        (Method::Put, Some(key)) => {
            let value = tern_p3_guests::read_body(request)
                .await
                .map_err(|code| format!("reading the body: {code:?}"))?;
            Op::Set(key, value)
        }
        (Method::Delete, Some(key)) => Op::Delete(key),
        (Method::Post, Some(key)) => match tern_p3_guests::query_param(pwq, "incr") {
            Some(delta) => Op::Increment(key, number(delta)?),
            None => return Err("POST on a key wants ?incr=N".into()),
        },
        (Method::Get, None) if tern_p3_guests::query_has(pwq, "keys") => Op::Keys,
        (method, _) => {
            return Err(format!(
                "no operation for {} {pwq}",
                tern_p3_guests::method_name(&method)
            ));
        }
    };
    Ok((store.to_owned(), op))
}

/// Opens `store` and carries out `op`.
fn run(store: &str, op: Op) -> Result<Reply, Error> {
    let bucket = store::open(store)?;
    Ok(match op {
        Op::Get(key) => match bucket.get(&key)? {
            Some(value) => Reply::new(200, value),
            None => Reply::new(404, "absent"),
        },
        Op::Set(key, value) => {
            bucket.set(&key, &value)?;
            Reply::no_content()
        }
        Op::Delete(key) => {
            bucket.delete(&key)?;
            Reply::no_content()
        }
        Op::Increment(key, delta) => {
            Reply::new(200, atomics::increment(&bucket, &key, delta)?.to_string())
        }
        Op::Keys => {
            let mut keys = Vec::new();
            let mut cursor = None;
            for _ in 0..MAX_PAGES {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                cursor = page.cursor;
                if cursor.is_none() {
                    keys.sort();
                    return Ok(Reply::new(200, keys.join("\n")));
                }
            }
            Reply::new(
                500,
                format!("list-keys: still a cursor after {MAX_PAGES} pages"),
            )
        }
    })
}

/// The response for a store error.
fn error_reply(error: Error) -> Reply {
    match error {
        Error::AccessDenied => Reply::new(403, "access-denied"),
        Error::NoSuchStore => Reply::new(404, "no-such-store"),
        Error::Other(message) => Reply::new(500, format!("other: {message}")),
    }
}

/// A decimal `u64` from a query value.
fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("expected a number, got {text:?}"))
}

wasip3::http::service::export!(Kv);
