//! The `wagi` executor: a WASI preview 1 program run CGI-style, one fresh
//! instance per request. The request body is its stdin, the CGI
//! meta-variables its environment, and what it prints its response.

use http_body_util::Full;
use hyper::Response;
use tern_manifest::WagiOptions;
use tern_runtime::MemoryLimiter;
use wasmtime::{Engine, InstancePre, Linker, Module, Result, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::cgi::{CgiRequest, parse_response};
use crate::executor::Exchange;
use crate::guest_output::OutputState;
use crate::instance::{Failure, Grants, limit_store};

/// Room for a CGI program's header block on top of its body.
const MAX_CGI_HEAD: usize = 64 << 10;

/// A program ready to instantiate per request.
pub(crate) struct WagiExecutor {
    pre: InstancePre<WagiHost>,
    /// Spin's `argv` and `entrypoint`; `None`: the component id as the
    /// only argument, and `_start`.
    options: Option<WagiOptions>,
}

pub(crate) struct WagiHost {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    /// Keeps the epoch moving for as long as the instance lives.
    _running: tern_runtime::Running,
}

impl WagiExecutor {
    /// Links and pre-instantiates `module`; fails when it does not export
    /// the function to call (`_start`, or the `options`' entry point) or
    /// imports what Tern lacks.
    pub(crate) fn new(
        engine: &Engine,
        module: &Module,
        options: Option<WagiOptions>,
    ) -> Result<Self> {
        let entrypoint = options
            .as_ref()
            .map_or(WagiOptions::ENTRYPOINT, |o| o.entrypoint.as_str());
        match module.get_export(entrypoint) {
            Some(wasmtime::ExternType::Func(ty))
                if ty.params().len() == 0 && ty.results().len() == 0 => {}
            Some(_) => wasmtime::bail!(
                "its export `{entrypoint}` is not a function without parameters or results, which the wagi executor calls"
            ),
            None => wasmtime::bail!(
                "it exports no `{entrypoint}` function for the wagi executor to call"
            ),
        }
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut WagiHost| &mut h.wasi)?;
        Ok(WagiExecutor {
            pre: linker.instantiate_pre(module)?,
            options,
        })
    }

    pub(crate) async fn run(&self, grants: &Grants, exchange: Exchange) -> Result<(), Failure> {
        let Exchange {
            request,
            buffered,
            reply,
            ctx,
            sink,
        } = exchange;
        let limits = &grants.limits;
        let (parts, _spent) = request.into_parts();
        // The server read the body before the request took its slot.
        let body = buffered.unwrap_or_default();

        let host_header = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let authority = host_header.and_then(|h| h.parse::<http::uri::Authority>().ok());
        let server_name = authority.as_ref().map_or("localhost", |a| a.host());
        let (script_name, path_info) = ctx.split_path(parts.uri.path());
        let protocol = if parts.version == http::Version::HTTP_2 {
            "HTTP/2.0"
        } else if parts.version == http::Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let cgi = CgiRequest {
            method: parts.method.as_str(),
            protocol,
            https: ctx.tls,
            script_name,
            path_info,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            server_name,
            server_port: ctx.local.port(),
            remote_addr: ctx.client.ip().to_string(),
            request_uri: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        };

        // Room for the header block and a body of `max_body`, and one byte
        // more, so that output over the limit is told from output at it.
        let max_body = usize::try_from(limits.max_body.0).unwrap_or(usize::MAX);
        let capacity = max_body.saturating_add(MAX_CGI_HEAD + 1);
        let stdout = MemoryOutputPipe::new(capacity);
        let mut wasi = grants
            .wasi(&sink, &OutputState::new(ctx.id))
            .map_err(|e| Failure::Host(format!("{e:#}")))?;
        let mut variables = cgi.variables();
        // Spin's `X_PATH_MATCH_NAME`, one per `:name` segment of the route.
        variables.extend(
            ctx.path_matches(parts.uri.path())
                .map(|(param, value)| (param.variable.clone(), value.to_owned())),
        );
        let args = match &self.options {
            // Spin fills `${SCRIPT_NAME}` with the request's whole path.
            Some(options) => options.args(parts.uri.path(), cgi.query),
            None => vec![grants.id.to_string()],
        };
        wasi.args(&args)
            .envs(&variables)
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone());
        let host = WagiHost {
            wasi: wasi.build_p1(),
            limiter: MemoryLimiter::new(limits.memory),
            _running: tern_runtime::Ticker::global().running(),
        };
        let mut store = Store::new(self.pre.module().engine(), host);
        limit_store(&mut store, ctx.deadline, limits.cpu_time, |h| {
            &mut h.limiter
        });

        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let entrypoint = self
                .options
                .as_ref()
                .map_or(WagiOptions::ENTRYPOINT, |o| o.entrypoint.as_str());
            let start = instance.get_typed_func::<(), ()>(&mut store, entrypoint)?;
            start.call_async(&mut store, ()).await
        };
        let run = tokio::time::timeout_at(ctx.deadline.into(), run).await;
        let result = Failure::settle(run, &store.data().limiter, limits);
        drop(store);
        result?;

        let output = stdout.contents();
        if output.len() >= capacity {
            return Err(Failure::Host(format!(
                "the program's output is larger than the response limit of {} \
                 (max_body) and its headers",
                limits.max_body
            )));
        }
        let cgi = parse_response(output).map_err(Failure::Host)?;
        if cgi.body.len() > max_body {
            return Err(Failure::Host(format!(
                "the program's response body is larger than the limit of {} (max_body)",
                limits.max_body
            )));
        }
        let mut response = Response::new(Full::new(cgi.body));
        *response.status_mut() = cgi.status;
        *response.headers_mut() = cgi.headers;
        reply.send(response);
        Ok(())
    }
}
