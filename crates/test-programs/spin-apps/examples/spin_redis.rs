//! Redis outbound as Spin's documentation shows it, the address from the
//! `redis_address` variable: `PUT /KEY` sets the body, `GET /KEY` gets,
//! `POST /incr/KEY` increments, `DELETE /KEY` deletes, `POST /publish/CH`
//! publishes the body, `POST /sadd/KEY?a,b`, `GET /smembers/KEY`,
//! `POST /srem/KEY?a`, `POST /append/KEY` runs `APPEND` through `execute`,
//! and `POST /execute/COMMAND` runs any command through it, its arguments
//! the body's words (a hostile guest), answering the results or the error.
//! `POST /cancel-opens/N` starts N opens of the address in the body, each
//! given up after its first poll (the guest cancels it), then opens the
//! variable's address once more: `pending P, then opened` (P of the N had
//! not finished when given up), or why the last open failed.
//! `POST /hold-opens/N` opens the variable's address N more times,
//! keeping each: `opened K` if all opened, else `opened K, then cannot
//! open: ERROR`.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::{http_service, variables};
use std::future::Future as _;

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let address = variables::get("redis_address").await?;
    let conn = match Connection::open(&address).await {
        Ok(conn) => conn,
        Err(e) => return Ok(text(502, format!("cannot open: {e}"))),
    };
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let values: Vec<&str> = query.split(',').filter(|v| !v.is_empty()).collect();
    let method = req.method().clone();
    let body = req.into_body().bytes().await?;
    let (op, key) = match path.trim_start_matches('/').split_once('/') {
        Some((op, key)) => (op.to_string(), key.to_string()),
        None => (String::new(), path.trim_start_matches('/').to_string()),
    };
    Ok(match (method, op.as_str()) {
        (Method::PUT, "") => {
            conn.set(&key, &body).await?;
            text(200, "set".into())
        }
        (Method::GET, "") => match conn.get(&key).await? {
            Some(value) => text(200, String::from_utf8_lossy(&value).into_owned()),
            None => text(404, "nil".into()),
        },
        (Method::DELETE, "") => text(200, format!("deleted {}", conn.del([&key]).await?)),
        (Method::POST, "incr") => text(200, format!("{}", conn.incr(&key).await?)),
        (Method::POST, "publish") => {
            conn.publish(&key, &body).await?;
            text(200, "published".into())
        }
        (Method::POST, "sadd") => text(200, format!("added {}", conn.sadd(&key, values).await?)),
        (Method::POST, "srem") => text(200, format!("removed {}", conn.srem(&key, values).await?)),
        (Method::GET, "smembers") => {
            let mut members = conn.smembers(&key).await?;
            members.sort();
            text(200, members.join(","))
        }
        (Method::POST, "append") => {
            let args = [
                RedisParameter::Binary(key.into_bytes()),
                RedisParameter::Binary(body.to_vec()),
            ];
            match conn.execute("APPEND", args).await?.as_slice() {
                [RedisResult::Int64(length)] => text(200, format!("length {length}")),
                other => text(500, format!("unexpected {other:?}")),
            }
        }
        (Method::POST, "execute") => {
            let args: Vec<RedisParameter> = String::from_utf8_lossy(&body)
                .split_whitespace()
                .map(|word| RedisParameter::Binary(word.as_bytes().to_vec()))
                .collect();
            match conn.execute(&key, args).await {
                Ok(results) => text(200, format!("{results:?}")),
                Err(e) => text(400, format!("error: {e:?}")),
            }
        }
        (Method::POST, "cancel-opens") => {
            let given_up = String::from_utf8_lossy(&body).into_owned();
            let mut pending = 0;
            for _ in 0..key.parse::<u32>()? {
                let mut open = std::pin::pin!(Connection::open(&given_up));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if open.as_mut().poll(&mut cx).is_pending() {
                    pending += 1;
                }
            }
            match Connection::open(&address).await {
                Ok(_) => text(200, format!("pending {pending}, then opened")),
                Err(e) => text(502, format!("pending {pending}, then cannot open: {e}")),
            }
        }
        (Method::POST, "hold-opens") => {
            let mut held = Vec::new();
            for _ in 0..key.parse::<u32>()? {
                match Connection::open(&address).await {
                    Ok(conn) => held.push(conn),
                    Err(e) => {
                        let why = format!("opened {}, then cannot open: {e}", held.len());
                        return Ok(text(502, why));
                    }
                }
            }
            text(200, format!("opened {}", held.len()))
        }
        _ => text(405, "method not allowed".into()),
    })
}

fn text(status: u16, body: String) -> Response<String> {
    Response::builder().status(status).body(body).unwrap()
}
