//! The `wasi-http` executor for WASI 0.3: a component exporting
//! `wasi:http/handler@0.3`, one fresh instance per request.
//!
//! A 0.3 handler returns its response as soon as it has a head, and goes on
//! writing the body (a `stream<u8>`) afterwards, in the same task or in
//! tasks it spawned. So the instance's event loop (`run_concurrent`) keeps
//! running after the head went out, feeding the body to the client as the
//! guest writes it, until the guest has no task left and the body has
//! ended (a body the host feeds, such as an upstream's response handed
//! on, flows through the same loop); the request's deadline bounds all of
//! it. The request body reaches the guest the same way, as the client
//! sends it, never buffered whole.

use std::future::poll_fn;

use http::uri::{Authority, Scheme};
use wasmtime::component::Component;
use wasmtime::{Engine, Result, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{FieldMap, p3};

use crate::executor::Exchange;
use crate::instance::{Failure, Grants, limit_store};
use crate::wasi_http::{
    HttpHost, HttpLinkers, answer, body_verdict, conclude, error_code_message, exports,
    guest_request,
};

/// A WASI 0.3 component ready to instantiate per request.
pub(crate) struct WasiHttp3Executor {
    pre: ServicePre<HttpHost>,
}

impl WasiHttp3Executor {
    /// Links and pre-instantiates `component`; fails when it does not
    /// export `wasi:http/handler@0.3` or imports what Tern lacks.
    pub(crate) fn new(
        linkers: &HttpLinkers,
        component: &Component,
        imports: crate::wasi_http::Imports,
    ) -> Result<Self> {
        Ok(WasiHttp3Executor {
            pre: ServicePre::new(linkers.link(component, true, imports)?)?,
        })
    }

    /// Whether `component` exports the handler this executor calls.
    pub(crate) fn exports_handler(engine: &Engine, component: &Component) -> bool {
        exports(engine, component, "wasi:http/handler@0.3")
    }

    pub(crate) async fn run(&self, grants: &Grants, exchange: Exchange) -> Result<(), Failure> {
        let (request, reply, ctx, sink) = guest_request(exchange);
        let mut store = Store::new(self.pre.engine(), HttpHost::new(grants, &sink, &ctx)?);
        limit_store(&mut store, ctx.deadline, grants.limits.cpu_time, |h| {
            &mut h.limiter
        });

        let state = reply.state();
        let (parts, body) = request.into_parts();
        let scheme = if ctx.tls { Scheme::HTTPS } else { Scheme::HTTP };
        // The authority is the Host header (or HTTP/2's `:authority`),
        // already checked by the server.
        let authority = parts.uri.authority().cloned().or_else(|| {
            let host = parts.headers.get(http::header::HOST)?;
            Authority::try_from(host.as_bytes()).ok()
        });
        let (request, request_io) = {
            let hooks = store.data_mut().http().hooks;
            p3::Request::new(
                parts.method,
                Some(scheme),
                authority,
                parts.uri.path_and_query().cloned(),
                FieldMap::new_immutable(hooks, parts.headers),
                None,
                body,
            )
        };

        let run = async {
            let service = self.pre.instantiate_async(&mut store).await?;
            store
                .run_concurrent(async |guest| {
                    let result =
                        match service.handle(guest, request).await? {
                            Ok(response) => Ok(guest
                                .with(|mut store| response.into_http(&mut store, request_io))?),
                            Err(code) => Err(error_code_message(&code)),
                        };
                    answer(reply, result, &ctx.body_exceeded);
                    // The body is written by the guest after its head, by
                    // this task or tasks it spawned: run them to the end.
                    poll_fn(|cx| guest.poll_no_interesting_tasks(cx)).await;
                    wasmtime::error::Ok(())
                })
                .await??;
            // The connection's task writes the response first: most bodies
            // end with it, and the instance is freed at once.
            tokio::task::yield_now().await;
            // The body may outlive the guest's tasks: one the host feeds (an
            // upstream's response, the client's own body, a file) flows
            // through the instance's event loop, which runs on until the
            // body has ended. One the guest left open never ends: the
            // deadline ends it, and no store going away passes it off as
            // whole.
            if state.sent().is_some() && !state.failed.is_over() {
                store
                    .run_concurrent(async |_| state.failed.ended().await)
                    .await?;
            }
            wasmtime::error::Ok(())
        };
        let run = tokio::time::timeout_at(ctx.deadline.into(), run).await;
        let result = conclude(run, &store.data().limiter, grants, &ctx, &state)
            .and_then(|()| body_verdict(&state));
        // The response is out (or failed: `conclude` told its body so)
        // before the instance is freed and the request logged.
        drop(store);
        result
    }
}
