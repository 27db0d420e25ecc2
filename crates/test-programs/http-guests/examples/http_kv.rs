//! Drives a key-value store from HTTP, one operation per request:
//!
//! - `GET /kv/STORE/KEY`: the value (404 `absent`); with `?exists`, `true`
//!   or `false`.
//! - `PUT /kv/STORE/KEY` (body = value): set, 204; with `?ttl-ms=N`, set
//!   through `tern:keyvalue/expiry`.
//! - `DELETE /kv/STORE/KEY`: delete, 204.
//! - `POST /kv/STORE/KEY?incr=N`: increment by N, answers the new value.
//! - `POST /kv/STORE/KEY?cas` (body = new value, header `x-expected` = the
//!   expected one, absent: expect no key): `true` or `false`.
//! - `GET /kv/STORE?keys`: every key, following cursors, sorted, one per
//!   line.
//! - `POST /kv/STORE?get-many` (body = keys, one per line): a line per key,
//!   `KEY=VALUE` or `KEY absent`, in order.
//! - `GET /kv/STORE/KEY?copies=N`: one `get-many` of N copies of KEY;
//!   answers `N found, B bytes` (B: the values' bytes), not the values.
//! - `POST /kv/STORE?set-many` (body = `KEY=VALUE` lines): 204.
//! - `POST /kv/STORE?delete-many` (body = keys, one per line): 204.
//! - `GET /kv/STORE?open-many=N`: opens N buckets of STORE, holding them
//!   all open, closes them, and does it again; answers `opened N twice`.
//! - `GET /kv/STORE/KEY?bench-get=N` or `?bench-set=N`: N gets (or sets of
//!   a 100-byte value) of KEY in a loop, timed inside the guest; answers
//!   `N ops in T ns` (for `bench/kv`).
//!
//! With `?announce` as well, it first says `kv request running` on stderr,
//! so that a test knows the operation is under way.
//!
//! The key is everything after `/kv/STORE/`, as it is (no percent-decoding).
//! Store errors answer 403 `access-denied`, 404 `no-such-store` or 500
//! `other: MSG`; a request of any other shape 400.

use tern_http_guests::services::tern::keyvalue::{cas, expiry};
use tern_http_guests::services::wasi::keyvalue::atomics;
use tern_http_guests::services::wasi::keyvalue::batch;
use tern_http_guests::services::wasi::keyvalue::store::{self, Error};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

/// A stop for a host whose `list-keys` cursor never runs out.
const MAX_PAGES: usize = 100_000;

/// One key-value operation, as the request asks for it.
enum Op {
    Get(String),
    Exists(String),
    Set(String, Vec<u8>),
    SetWithTtl(String, Vec<u8>, u64),
    Delete(String),
    Increment(String, u64),
    CompareAndSwap(String, Option<Vec<u8>>, Vec<u8>),
    Keys,
    GetMany(Vec<String>),
    GetCopies(String, u64),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
    Bench(String, BenchOp, u64),
    OpenMany(u64),
}

/// What `bench-get` / `bench-set` repeat.
enum BenchOp {
    Get,
    Set,
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
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        if tern_http_guests::query_has(&path_with_query, "announce") {
            eprintln!("kv request running");
            std::io::Write::flush(&mut std::io::stderr()).unwrap();
        }
        let reply = match parse(&request) {
            Ok((store, op)) => run(&store, op).unwrap_or_else(error_reply),
            Err(why) => Reply::new(400, why),
        };
        if reply.status == 204 {
            // No content-length on a 204 (RFC 9110, 8.6).
            let (body, stream) = tern_http_guests::start_response(out, 204, &[], None);
            tern_http_guests::finish(body, stream);
        } else {
            tern_http_guests::respond(out, reply.status, &[], &reply.body);
        }
    }
}

/// The store and operation `request` asks for, or why it makes no sense.
fn parse(request: &IncomingRequest) -> Result<(String, Op), String> {
    let path_with_query = request.path_with_query().unwrap_or_default();
    let pwq = path_with_query.as_str();
    let rest = tern_http_guests::path(pwq)
        .strip_prefix("/kv/")
        .ok_or("expected /kv/STORE[/KEY]")?;
    let (store, key) = match rest.split_once('/') {
        Some((store, key)) => (store, Some(key.to_owned())),
        None => (rest, None),
    };
    if store.is_empty() || key.as_deref() == Some("") {
        return Err("empty store or key".into());
    }
    let has = |flag| tern_http_guests::query_has(pwq, flag);

    let op = match (request.method(), key) {
        (Method::Get, Some(key)) if has("exists") => Op::Exists(key),
        (Method::Get, Some(key)) if has("copies") => {
            let n = tern_http_guests::query_param(pwq, "copies").unwrap_or("");
            Op::GetCopies(key, number(n)?)
        }
        (Method::Get, Some(key)) if has("bench-get") || has("bench-set") => {
            let (op, n) = match tern_http_guests::query_param(pwq, "bench-get") {
                Some(n) => (BenchOp::Get, n),
                None => (
                    BenchOp::Set,
                    tern_http_guests::query_param(pwq, "bench-set").unwrap_or(""),
                ),
            };
            Op::Bench(key, op, number(n)?)
        }
        (Method::Get, Some(key)) => Op::Get(key),
        (Method::Put, Some(key)) => {
            let value = tern_http_guests::read_body(request);
            match tern_http_guests::query_param(pwq, "ttl-ms") {
                Some(ttl) => Op::SetWithTtl(key, value, number(ttl)?),
                None => Op::Set(key, value),
            }
        }
        (Method::Delete, Some(key)) => Op::Delete(key),
        (Method::Post, Some(key)) => {
            if let Some(delta) = tern_http_guests::query_param(pwq, "incr") {
                Op::Increment(key, number(delta)?)
            } else if has("cas") {
                let expected = request.headers().get("x-expected").into_iter().next();
                Op::CompareAndSwap(key, expected, tern_http_guests::read_body(request))
            } else {
                return Err("POST on a key wants ?incr=N or ?cas".into());
            }
        }
        (Method::Get, None) if has("keys") => Op::Keys,
        (Method::Get, None) if has("open-many") => Op::OpenMany(number(
            tern_http_guests::query_param(pwq, "open-many").unwrap_or(""),
        )?),
        (Method::Post, None) if has("get-many") => Op::GetMany(lines(request)?),
        (Method::Post, None) if has("delete-many") => Op::DeleteMany(lines(request)?),
        (Method::Post, None) if has("set-many") => {
            let pairs = lines(request)?
                .into_iter()
                .map(|line| match line.split_once('=') {
                    Some((key, value)) => Ok((key.to_owned(), value.as_bytes().to_vec())),
                    None => Err(format!("expected KEY=VALUE, got {line:?}")),
                })
                .collect::<Result<_, _>>()?;
            Op::SetMany(pairs)
        }
        (method, _) => {
            return Err(format!(
                "no operation for {} {pwq}",
                tern_http_guests::method_name(&method)
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
        Op::Exists(key) => Reply::new(200, bucket.exists(&key)?.to_string()),
        Op::Bench(key, op, n) => {
            let value = [b'v'; 100];
            let start = wasi::clocks::monotonic_clock::now();
            for _ in 0..n {
                match op {
                    BenchOp::Get => drop(bucket.get(&key)?),
                    BenchOp::Set => bucket.set(&key, &value)?,
                }
            }
            let elapsed = wasi::clocks::monotonic_clock::now() - start;
            Reply::new(200, format!("{n} ops in {elapsed} ns"))
        }
        Op::Set(key, value) => {
            bucket.set(&key, &value)?;
            Reply::no_content()
        }
        Op::SetWithTtl(key, value, ttl_ms) => {
            expiry::set(&bucket, &key, &value, ttl_ms)?;
            Reply::no_content()
        }
        Op::Delete(key) => {
            bucket.delete(&key)?;
            Reply::no_content()
        }
        Op::Increment(key, delta) => {
            Reply::new(200, atomics::increment(&bucket, &key, delta)?.to_string())
        }
        Op::CompareAndSwap(key, expected, new) => {
            let swapped = cas::compare_and_swap(&bucket, &key, expected.as_deref(), &new)?;
            Reply::new(200, swapped.to_string())
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
        Op::GetMany(keys) => {
            let found = batch::get_many(&bucket, &keys)?;
            let mut body = Vec::new();
            for (i, (key, entry)) in keys.iter().zip(found).enumerate() {
                if i > 0 {
                    body.push(b'\n');
                }
                match entry {
                    Some((key, value)) => {
                        body.extend_from_slice(key.as_bytes());
                        body.push(b'=');
                        body.extend_from_slice(&value);
                    }
                    None => body.extend_from_slice(format!("{key} absent").as_bytes()),
                }
            }
            Reply::new(200, body)
        }
        Op::GetCopies(key, n) => {
            let keys = vec![key; n as usize];
            let found = batch::get_many(&bucket, &keys)?;
            let values: Vec<Vec<u8>> = found.into_iter().flatten().map(|(_, v)| v).collect();
            let bytes: usize = values.iter().map(Vec::len).sum();
            Reply::new(200, format!("{} found, {bytes} bytes", values.len()))
        }
        Op::SetMany(pairs) => {
            batch::set_many(&bucket, &pairs)?;
            Reply::no_content()
        }
        Op::DeleteMany(keys) => {
            batch::delete_many(&bucket, &keys)?;
            Reply::no_content()
        }
        Op::OpenMany(n) => {
            drop(bucket);
            for _ in 0..2 {
                let held = (0..n)
                    .map(|_| store::open(store))
                    .collect::<Result<Vec<_>, _>>()?;
                drop(held);
            }
            Reply::new(200, format!("opened {n} twice"))
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

/// The non-empty lines of the request body.
fn lines(request: &IncomingRequest) -> Result<Vec<String>, String> {
    let body = String::from_utf8(tern_http_guests::read_body(request))
        .map_err(|_| "the body is not UTF-8")?;
    Ok(body
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

wasi::http::proxy::export!(Kv);
