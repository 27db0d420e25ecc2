//! The `wagi` executor: a WASI preview 1 program run CGI-style, one fresh
//! instance per request. The request body is its stdin, the CGI
//! meta-variables its environment, and what it prints its response.

use std::sync::atomic::Ordering;

use http_body_util::{BodyExt, Full};
use hyper::Response;
use tern_runtime::MemoryLimiter;
use wasmtime::{Engine, InstancePre, Linker, Module, Result, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::cgi::{CgiRequest, parse_response};
use crate::executor::Exchange;
use crate::instance::{Failure, Grants, limit_store};

/// A program ready to instantiate per request.
pub(crate) struct WagiExecutor {
    pre: InstancePre<WagiHost>,
}

pub(crate) struct WagiHost {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

impl WagiExecutor {
    /// Links and pre-instantiates `module`; fails when it has no `_start`
    /// or imports what Tern lacks.
    pub(crate) fn new(engine: &Engine, module: &Module) -> Result<Self> {
        if module.get_export("_start").is_none() {
            wasmtime::bail!("it exports no `_start` function for the wagi executor to call");
        }
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut WagiHost| &mut h.wasi)?;
        Ok(WagiExecutor {
            pre: linker.instantiate_pre(module)?,
        })
    }

    pub(crate) async fn run(&self, grants: &Grants, exchange: Exchange) -> Result<(), Failure> {
        let Exchange {
            request,
            reply,
            ctx,
            sink,
        } = exchange;
        let limits = &grants.limits;
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) if ctx.body_exceeded.load(Ordering::Acquire) => {
                return Err(Failure::BodyTooLarge);
            }
            Err(e) => return Err(Failure::Host(format!("reading the request body: {e}"))),
        };

        let host_header = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let authority = host_header.and_then(|h| h.parse::<http::uri::Authority>().ok());
        let server_name = authority.as_ref().map_or("localhost", |a| a.host());
        let (script_name, path_info) = ctx.split_path(parts.uri.path());
        let cgi = CgiRequest {
            method: parts.method.as_str(),
            script_name,
            path_info,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            server_name,
            server_port: ctx.local.port(),
            remote_addr: ctx.client.ip().to_string(),
            request_uri: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        };

        let stdout =
            MemoryOutputPipe::new(usize::try_from(limits.max_body.0).unwrap_or(usize::MAX));
        let mut wasi = grants
            .wasi(&sink, ctx.id)
            .map_err(|e| Failure::Host(format!("{e:#}")))?;
        wasi.args(&[grants.id.as_ref()])
            .envs(&cgi.variables())
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone());
        let host = WagiHost {
            wasi: wasi.build_p1(),
            limiter: MemoryLimiter::new(limits.memory),
        };
        let mut store = Store::new(self.pre.module().engine(), host);
        limit_store(&mut store, ctx.deadline, |h| &mut h.limiter);

        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        let run = tokio::time::timeout_at(ctx.deadline.into(), run).await;
        let result = Failure::settle(run, &store.data().limiter, limits);
        drop(store);
        result?;

        let output = stdout.contents();
        let cgi = parse_response(output).map_err(Failure::Host)?;
        let mut response = Response::new(Full::new(cgi.body));
        *response.status_mut() = cgi.status;
        *response.headers_mut() = cgi.headers;
        reply.send(response);
        Ok(())
    }
}
