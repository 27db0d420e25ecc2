//! Key-value CRUD as Spin's documentation shows it: `GET /KEY` reads,
//! `PUT /KEY` writes the body, `DELETE /KEY` deletes, `GET /` lists the
//! keys. The store is `default` unless the `x-store` header names another.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, Response, StatusCode};
use spin_sdk::http_service;
use spin_sdk::key_value::{Error, Store};

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let label = req
        .headers()
        .get("x-store")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_string();
    let store = match Store::open(&label).await {
        Ok(store) => store,
        Err(Error::AccessDenied) => return Ok(reply(StatusCode::FORBIDDEN, "access denied")),
        Err(Error::NoSuchStore) => return Ok(reply(StatusCode::NOT_FOUND, "no such store")),
        Err(e) => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    };
    let key = req.uri().path().trim_start_matches('/').to_string();
    let method = req.method().clone();
    Ok(match method {
        Method::GET if key.is_empty() => {
            let mut keys = store.get_keys().await.collect().await?;
            keys.sort();
            reply(StatusCode::OK, &keys.join("\n"))
        }
        Method::GET => match store.get(&key).await? {
            Some(value) => Response::builder()
                .status(200)
                .body(String::from_utf8_lossy(&value).into_owned())
                .unwrap(),
            None => reply(StatusCode::NOT_FOUND, "no such key"),
        },
        Method::PUT => {
            let body = req.into_body().bytes().await?;
            store.set(&key, &body).await?;
            reply(StatusCode::CREATED, "stored")
        }
        Method::DELETE => {
            let existed = store.exists(&key).await?;
            store.delete(&key).await?;
            reply(StatusCode::OK, if existed { "deleted" } else { "absent" })
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    })
}

fn reply(status: StatusCode, text: &str) -> Response<String> {
    Response::builder()
        .status(status)
        .body(format!("{text}\n"))
        .unwrap()
}
