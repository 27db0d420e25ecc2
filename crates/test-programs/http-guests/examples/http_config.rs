//! Reads configuration variables through `wasi:config/store`:
//! `GET /config/KEY` answers the value (404 `absent`), `GET /config` every
//! variable as `K=V` lines sorted by key. A store error answers 500
//! `config error: ...`; any other request 400.

use tern_http_guests::services::wasi::config::store::{self, Error};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Config;

impl Guest for Config {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = tern_http_guests::path(&path_with_query);
        let (status, body) = match (request.method(), path) {
            (Method::Get, "/config") => match store::get_all() {
                Ok(mut pairs) => {
                    pairs.sort();
                    let lines: Vec<_> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    (200, lines.join("\n"))
                }
                Err(e) => failure(e),
            },
            (Method::Get, path) => match path.strip_prefix("/config/") {
                Some(key) => match store::get(key) {
                    Ok(Some(value)) => (200, value),
                    Ok(None) => (404, "absent".to_owned()),
                    Err(e) => failure(e),
                },
                None => (400, "expected /config or /config/KEY".to_owned()),
            },
            _ => (400, "only GET".to_owned()),
        };
        tern_http_guests::respond_text(out, status, &body);
    }
}

/// The response for a store error.
fn failure(error: Error) -> (u16, String) {
    let message = match error {
        Error::Upstream(m) => format!("upstream: {m}"),
        Error::Io(m) => format!("io: {m}"),
    };
    (500, format!("config error: {message}"))
}

wasi::http::proxy::export!(Config);
