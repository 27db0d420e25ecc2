//! Redis as Spin's documentation for SDK 5 shows it, the address from the
//! `redis_address` variable: `PUT /KEY` sets the body, `GET /KEY` gets it
//! (404 `nil` when absent), `POST /incr/KEY` increments, `POST /publish/CH`
//! publishes the body.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::redis::Connection;
use spin_sdk::{http_component, variables};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let address = variables::get("redis_address")?;
    let conn = match Connection::open(&address) {
        Ok(conn) => conn,
        Err(e) => return Ok(Response::new(502, format!("cannot open: {e}"))),
    };
    let path = req.path().trim_start_matches('/').to_string();
    let body = req.body().to_vec();
    Ok(match (req.method(), path.split_once('/')) {
        (Method::Post, Some(("incr", key))) => Response::new(200, conn.incr(key)?.to_string()),
        (Method::Post, Some(("publish", channel))) => {
            conn.publish(channel, &body)?;
            Response::new(200, "published")
        }
        (Method::Put, None) => {
            conn.set(&path, &body)?;
            Response::new(200, "set")
        }
        (Method::Get, None) => match conn.get(&path)? {
            Some(value) => Response::new(200, value),
            None => Response::new(404, "nil"),
        },
        _ => Response::new(405, "method not allowed"),
    })
}
