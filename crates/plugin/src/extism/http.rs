//! `http_request`: an Extism plugin's outbound HTTP, through its
//! `allowed_hosts` and every check `tern serve` makes for a guest.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::{Caller, Linker, Result, bail, format_err};

use crate::ctx::PluginCtx;
use crate::report::Limit;

/// The request a plugin passes, as JSON (the PDK's `HttpRequest`).
#[derive(serde::Deserialize)]
struct Request {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

pub(super) fn add_to_linker(linker: &mut Linker<PluginCtx>) -> Result<()> {
    type C<'a> = Caller<'a, PluginCtx>;
    let m = super::MODULE;
    linker.func_wrap(m, "http_request", |mut c: C<'_>, req: u64, body: u64| {
        let ctx = c.data_mut();
        let text = ctx.block("http_request", req)?;
        let body = Bytes::from(ctx.block("http_request", body)?);
        let request: Request = serde_json::from_slice(&text)
            .map_err(|e| format_err!("extism `http_request`: the request is not valid: {e}"))?;
        let mut builder = http::Request::builder()
            .method(request.method.as_deref().unwrap_or("GET"))
            .uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(body)
            .map_err(|e| format_err!("extism `http_request`: the request is not valid: {e}"))?;
        let shared = ctx.shared.clone();
        let remaining = ctx.call.deadline.saturating_duration_since(Instant::now());
        let (allowed, max) = (
            shared.grants.allowed_hosts.clone(),
            shared.limits.max_http_response.0,
        );
        let fetch =
            async move { tern_http::fetch_checked(&allowed, request, max, remaining).await };
        let response = match shared.host.io(fetch) {
            Ok(response) => response,
            Err(why) => {
                // An upstream that holds the request past the call's
                // deadline stops the call as its timeout would.
                if Instant::now() >= ctx.call.deadline {
                    ctx.stopped_by = Some(Limit::Time);
                }
                bail!("extism `http_request`: {why}")
            }
        };
        let headers: BTreeMap<&str, String> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let headers = serde_json::to_vec(&headers).expect("a map of strings serializes");
        let headers = ctx.alloc_with("http_request", &headers)?;
        let status = i32::from(response.status().as_u16());
        ctx.call.http_status = status;
        ctx.call.http_headers = headers;
        ctx.alloc_with("http_request", response.body())
    })?;
    linker.func_wrap(m, "http_status_code", |c: C<'_>| c.data().call.http_status)?;
    linker.func_wrap(m, "http_headers", |c: C<'_>| c.data().call.http_headers)?;
    Ok(())
}
