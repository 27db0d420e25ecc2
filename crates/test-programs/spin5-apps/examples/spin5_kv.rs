//! Key-value CRUD as Spin's documentation for SDK 5 shows it: `GET /KEY`
//! reads, `PUT /KEY` writes the body, `DELETE /KEY` deletes, `GET /` lists
//! the keys. The store is `default` unless the `x-store` header names
//! another.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::{Error, Store};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let opened = match req.header("x-store").and_then(|v| v.as_str()) {
        Some(label) => Store::open(label),
        None => Store::open_default(),
    };
    let store = match opened {
        Ok(store) => store,
        Err(Error::AccessDenied) => return Ok(reply(403, "access denied")),
        Err(Error::NoSuchStore) => return Ok(reply(404, "no such store")),
        Err(e) => return Ok(reply(500, &e.to_string())),
    };
    let key = req.path().trim_start_matches('/');
    Ok(match req.method() {
        Method::Get if key.is_empty() => {
            let mut keys = store.get_keys()?;
            keys.sort();
            reply(200, &keys.join("\n"))
        }
        Method::Get => match store.get(key)? {
            Some(value) => Response::new(200, String::from_utf8_lossy(&value).into_owned()),
            None => reply(404, "no such key"),
        },
        Method::Put => {
            store.set(key, req.body())?;
            reply(201, "stored")
        }
        Method::Delete => {
            let existed = store.exists(key)?;
            store.delete(key)?;
            reply(200, if existed { "deleted" } else { "absent" })
        }
        _ => reply(405, "method not allowed"),
    })
}

fn reply(status: u16, text: &str) -> Response {
    Response::new(status, format!("{text}\n"))
}
