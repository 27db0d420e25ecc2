//! `wasi:keyvalue@0.2.0-draft2`, which the Spin Rust SDK 5 imports, through
//! the SDK's own bindings of it (`spin_sdk::wit::wasi::keyvalue`).
//!
//! - `POST /` walks the interface on the `default` store (store, atomics
//!   with a contended compare-and-swap, batch, paged key listing) and
//!   answers a line per step;
//! - `GET /open?store=NAME` opens another store and says what happened;
//! - `GET /cas-flood` makes compare-and-swap handles until one is refused.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    if req.path() == "/open" {
        let name = req.query().strip_prefix("store=").unwrap_or("");
        return Ok(match store::open(name) {
            Ok(_) => Response::new(200, "opened"),
            Err(e) => Response::new(403, format!("{e:?}")),
        });
    }
    let bucket = store::open("default")?;
    if req.path() == "/cas-flood" {
        let mut held = Vec::new();
        loop {
            match atomics::Cas::new(&bucket, "flood") {
                Ok(cas) => held.push(cas),
                Err(e) => {
                    return Ok(Response::new(
                        200,
                        format!("{} held, then {e:?}", held.len()),
                    ));
                }
            }
        }
    }
    let mut out = String::new();
    let mut say = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };

    bucket.set("greeting", b"hello")?;
    say(format!("get: {:?}", text(bucket.get("greeting")?)));
    say(format!(
        "exists: {} {}",
        bucket.exists("greeting")?,
        bucket.exists("nothing")?
    ));

    say(format!(
        "increment +5: {}",
        atomics::increment(&bucket, "count", 5)?
    ));
    say(format!(
        "increment -8: {}",
        atomics::increment(&bucket, "count", -8)?
    ));
    let word = atomics::increment(&bucket, "greeting", 1);
    say(format!("increment a word: {}", word.is_err()));

    // A compare-and-swap that wins, and one that loses to another writer
    // and retries with the fresh handle it is given.
    let first = atomics::Cas::new(&bucket, "owner")?;
    say(format!("cas current: {:?}", text(first.current()?)));
    let rival = atomics::Cas::new(&bucket, "owner")?;
    atomics::swap(first, b"alice").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    match atomics::swap(rival, b"bob") {
        Ok(()) => say("rival swap: won".into()),
        Err(atomics::CasError::CasFailed(fresh)) => {
            say(format!("rival swap: lost to {:?}", text(fresh.current()?)));
            atomics::swap(fresh, b"bob").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Err(e) => say(format!("rival swap: {e:?}")),
    }
    say(format!("owner: {:?}", text(bucket.get("owner")?)));

    let pairs: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("b{i}"), vec![b'0' + i])).collect();
    batch::set_many(&bucket, &pairs)?;
    let keys: Vec<String> = ["b0", "b2", "b9"].map(String::from).to_vec();
    let got = batch::get_many(&bucket, &keys)?;
    let got: Vec<String> = got
        .into_iter()
        .map(|(k, v)| format!("{k}={:?}", text(v)))
        .collect();
    say(format!("get-many: {}", got.join(" ")));
    batch::delete_many(&bucket, &["b1".to_string()])?;

    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bucket.list_keys(cursor.as_deref())?;
        all.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    all.sort();
    say(format!("keys: {}", all.join(" ")));
    let bad = bucket.list_keys(Some("not-a-cursor"));
    say(format!("bad cursor: {:?}", bad.err()));
    Ok(Response::new(200, out))
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}
