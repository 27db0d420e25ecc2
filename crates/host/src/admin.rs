//! The admin API: JSON over HTTP/1.1 on its own address, every call
//! behind the bearer token (compared in constant time). A call without it
//! gets 401 and changes nothing.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{Deployed, Host, Refusal, Summary, VariablesChange, VariablesSet, metrics};

type Answer = Response<Full<Bytes>>;

/// How long an admin client has to send a request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest body of a variables change.
const MAX_VARIABLES_BODY: usize = 1 << 20;

/// Admin connections open at once; more wait in the kernel's backlog, so
/// that clients without the token cannot take the process's descriptors.
const MAX_CONNECTIONS: usize = 256;

/// Admin connections open at once from one address: more are closed as
/// they are accepted, so one client cannot take every connection and lock
/// the operator out.
const MAX_PER_PEER: usize = 16;

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve_admin(host: Host, listener: TcpListener, token: String) {
    let token: std::sync::Arc<str> = token.into();
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let peers = Peers::default();
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors, say: wait rather than spin on the
                // runtime that also unloads idle apps.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(peer) = peers.enter(peer.ip()) else {
            continue;
        };
        let (host, token) = (host.clone(), token.clone());
        tokio::spawn(async move {
            let _permit = (permit, peer);
            let service = service_fn(move |req| {
                let (host, token) = (host.clone(), token.clone());
                async move { Ok::<_, Infallible>(answer(&host, &token, req).await) }
            });
            // A client that never finishes its head is cut off, as on the
            // app listener: the token is checked only once the head is in.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The admin connections open per address.
#[derive(Clone, Default)]
struct Peers(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>);

/// One connection of an address, counted until dropped.
struct Peer {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    /// Counts a connection from `ip`, unless that address has
    /// [`MAX_PER_PEER`] open already. An IPv6 address counts as its /64,
    /// which one client commonly has whole.
    fn enter(&self, ip: IpAddr) -> Option<Peer> {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        };
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Peer {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn answer(host: &Host, token: &str, req: Request<Incoming>) -> Answer {
    if !authorized(&req, token) {
        let mut answer = refusal(
            401,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        );
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        // A client without the token keeps no connection open.
        answer.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return answer;
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => Response::builder()
            .header(header::CONTENT_TYPE, metrics::CONTENT_TYPE)
            .body(Full::from(metrics::render(host)))
            .unwrap_or_default(),
        (&Method::GET, ["v1", "apps"]) => {
            let apps: Vec<Value> = host.list().iter().map(summary).collect();
            json_answer(200, json!({ "apps": apps }))
        }
        (&Method::GET, ["v1", "apps", name]) => match host.show(name) {
            Some(app) => json_answer(200, summary(&app)),
            None => refusal(404, format!("no app named `{name}`")),
        },
        (&Method::PUT, ["v1", "apps", name]) => {
            let name = name.to_string();
            match read_bundle(host, req).await {
                Ok(bundle) => deployed(host.deploy(&name, bundle).await),
                Err(refused) => refused,
            }
        }
        (&Method::DELETE, ["v1", "apps", name]) => {
            let purge = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "purge=true" || p == "purge=1"));
            match host.delete(name, purge).await {
                Ok(()) => json_answer(
                    200,
                    json!({ "name": name, "deleted": true, "purged": purge }),
                ),
                Err(refused) => refusal(refused.status, refused.message),
            }
        }
        (&Method::POST, ["v1", "apps", name, "rollback"]) => deployed(host.rollback(name).await),
        (&Method::GET, ["v1", "apps", name, "variables"]) => match host.variable_names(name) {
            Ok(names) => json_answer(200, json!({ "name": name, "variables": names })),
            Err(refused) => refusal(refused.status, refused.message),
        },
        (&Method::PUT | &Method::PATCH, ["v1", "apps", name, "variables"]) => {
            let name = name.to_string();
            let change = match read_variables(req).await {
                Ok(change) => change,
                Err(refused) => return refused,
            };
            match host.set_variables(&name, change).await {
                Ok(set) => variables_set(&name, &set),
                Err(refused) => refusal(refused.status, refused.message),
            }
        }
        (
            _,
            ["metrics"]
            | ["v1", "apps"]
            | ["v1", "apps", _]
            | ["v1", "apps", _, "rollback" | "variables"],
        ) => refusal(405, format!("{method} is not allowed on {path}")),
        _ => refusal(404, format!("no such endpoint: {path}")),
    }
}

/// Whether the request carries the token; the comparison takes the same
/// time wherever the first difference is.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The request body, at most `--max-bundle-size` of it.
async fn read_bundle(host: &Host, req: Request<Incoming>) -> Result<Bytes, Answer> {
    let max = host.inner.config.max_bundle_size;
    let too_large = || {
        refusal(
            413,
            format!("the bundle is larger than the host's limit of {max}"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max.0) {
        return Err(too_large());
    }
    let limit = usize::try_from(max.0).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(refusal(400, format!("reading the bundle: {e}"))),
    }
}

/// A variables change from its body: a JSON object of variable names to
/// string values (with `PATCH`, `null` removes one); at most
/// [`MAX_VARIABLES_BODY`] of it. Values are never quoted back.
async fn read_variables(req: Request<Incoming>) -> Result<VariablesChange, Answer> {
    let merge = req.method() == Method::PATCH;
    let body = match Limited::new(req.into_body(), MAX_VARIABLES_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refusal(
                413,
                format!("a variables change is at most {MAX_VARIABLES_BODY} bytes"),
            ));
        }
        Err(e) => return Err(refusal(400, format!("reading the variables: {e}"))),
    };
    let not_an_object = || {
        let values = if merge {
            "string values (or null, to remove one)"
        } else {
            "string values"
        };
        refusal(
            400,
            format!("the body must be a JSON object of variable names to {values}"),
        )
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return Err(not_an_object());
    };
    let mut changes = std::collections::BTreeMap::new();
    for (name, value) in fields {
        if !tern_manifest::is_valid_variable_name(&name) {
            return Err(refusal(
                400,
                format!(
                    "`{}` is not a variable name: use lowercase letters, digits and `_`, starting with a letter",
                    name.escape_debug()
                ),
            ));
        }
        let value = match value {
            Value::String(value) => Some(value),
            Value::Null if merge => None,
            _ => return Err(not_an_object()),
        };
        changes.insert(name, value);
    }
    Ok(if merge {
        VariablesChange::Merge(changes)
    } else {
        VariablesChange::Replace(
            (changes.into_iter())
                .filter_map(|(name, value)| Some((name, value?)))
                .collect(),
        )
    })
}

fn variables_set(name: &str, set: &VariablesSet) -> Answer {
    json_answer(
        200,
        json!({
            "name": name,
            "variables": set.names,
            "version": set.version,
            "undeclared": set.undeclared,
        }),
    )
}

fn deployed(result: Result<Deployed, Refusal>) -> Answer {
    match result {
        Ok(done) => {
            let routes: Vec<Value> = done.routes.iter().map(route).collect();
            let status = if done.created { 201 } else { 200 };
            json_answer(
                status,
                json!({
                    "name": done.name,
                    "version": done.version,
                    "hosts": done.hosts,
                    "routes": routes,
                }),
            )
        }
        Err(refused) => refusal(refused.status, refused.message),
    }
}

fn summary(app: &Summary) -> Value {
    let last = app.last_request.map(|t| {
        let seconds = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        rfc3339(seconds)
    });
    let state = match (&app.held, app.loaded) {
        (Some(_), _) => "held",
        (None, true) => "loaded",
        (None, false) => "idle",
    };
    let mut value = json!({
        "name": app.name,
        "version": app.version,
        "versions": app.versions,
        "hosts": app.hosts,
        "state": state,
        "requests": app.requests,
        "last_request": last,
        "in_flight": app.in_flight,
    });
    if let Some(why) = &app.held {
        // Not served: say why.
        value["error"] = Value::from(why.as_str());
    }
    if let Some(routes) = &app.routes {
        value["routes"] = routes.iter().map(route).collect();
    }
    value
}

fn route((pattern, component, kind): &(String, String, String)) -> Value {
    json!({ "route": pattern, "component": component, "kind": kind })
}

fn refusal(status: u16, message: impl Into<String>) -> Answer {
    json_answer(status, json!({ "error": message.into() }))
}

fn json_answer(status: u16, value: Value) -> Answer {
    let mut body = serde_json::to_vec(&value).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(body))
        .unwrap_or_default()
}

/// `seconds` after the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{MAX_PER_PEER, Peers, rfc3339};

    #[test]
    fn dates_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
    }

    #[test]
    fn one_address_holds_a_bounded_share_of_connections() {
        let peers = Peers::default();
        let greedy: std::net::IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..MAX_PER_PEER)
            .map(|_| peers.enter(greedy).expect("under the cap"))
            .collect();
        assert!(peers.enter(greedy).is_none(), "past the cap");
        // Another address (the operator's) still gets in.
        assert!(peers.enter([127, 0, 0, 1].into()).is_some());
        drop(held);
        assert!(peers.enter(greedy).is_some(), "closed ones are given back");
        assert!(peers.0.lock().unwrap().is_empty());
        // An IPv6 client's /64 is one address.
        let subnet: Vec<_> = (0..MAX_PER_PEER as u128)
            .map(|n| {
                let ip = std::net::Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000 | n);
                peers.enter(ip.into())
            })
            .collect();
        assert!(subnet.iter().all(Option::is_some));
        let sibling: std::net::IpAddr =
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9).into();
        assert!(peers.enter(sibling).is_none(), "same /64");
        let other: std::net::IpAddr =
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1).into();
        assert!(peers.enter(other).is_some(), "another /64");
    }
}
