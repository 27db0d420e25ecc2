//! The `wasi-http` executor for WASI 0.3: a component exporting
//! `wasi:http/handler@0.3`, one fresh instance per request.
//!
//! A 0.3 handler returns its response as soon as it has a head, and goes on
//! writing the body (a `stream<u8>`) afterwards, in the same task or in
//! tasks it spawned. So the instance's event loop (`run_concurrent`) keeps
//! running after the head went out, feeding the body to the client as the
//! guest writes it, until the guest has no task left; the request's
//! deadline bounds all of it. The request body reaches the guest the same
//! way, as the client sends it, never buffered whole.

use std::future::poll_fn;
use std::sync::atomic::Ordering;

use http::uri::{Authority, Scheme};
use wasmtime::component::Component;
use wasmtime::{Engine, Result, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{FieldMap, p3};

use crate::body::GuestBody;
use crate::executor::Exchange;
use crate::instance::{Failure, Grants, limit_store};
use crate::wasi_http::{HttpHost, check_head, error_code_message, exports, guest_request, link};

/// A WASI 0.3 component ready to instantiate per request.
pub(crate) struct WasiHttp3Executor {
    pre: ServicePre<HttpHost>,
}

impl WasiHttp3Executor {
    /// Links and pre-instantiates `component`; fails when it does not
    /// export `wasi:http/handler@0.3` or imports what Tern lacks.
    pub(crate) fn new(engine: &Engine, component: &Component) -> Result<Self> {
        Ok(WasiHttp3Executor {
            pre: ServicePre::new(link(engine, component, true)?)?,
        })
    }

    /// Whether `component` exports the handler this executor calls.
    pub(crate) fn exports_handler(engine: &Engine, component: &Component) -> bool {
        exports(engine, component, "wasi:http/handler@0.3")
    }

    pub(crate) async fn run(&self, grants: &Grants, exchange: Exchange) -> Result<(), Failure> {
        let (request, reply, ctx, sink) = guest_request(exchange);
        let mut store = Store::new(self.pre.engine(), HttpHost::new(grants, &sink, &ctx)?);
        limit_store(&mut store, ctx.deadline, |h| &mut h.limiter);

        let body_exceeded = ctx.body_exceeded.clone();
        let state = reply.state();
        let failed = state.failed.clone();
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
                    match service.handle(guest, request).await? {
                        // The guest answers a body it read only part of:
                        // the client gets 413, not a reply to a truncated
                        // request.
                        Ok(_) if body_exceeded.load(Ordering::Acquire) => drop(reply),
                        Ok(response) => {
                            let mut response = guest
                                .with(|mut store| response.into_http(&mut store, request_io))?;
                            match check_head(&mut response) {
                                Ok(()) => {
                                    reply.send(response.map(|body| GuestBody::new(body, failed)))
                                }
                                Err(why) => reply.refuse(why),
                            }
                        }
                        Err(code) => reply.refuse(error_code_message(&code)),
                    }
                    // The body is written by the guest after its head, by
                    // this task or tasks it spawned: run them to the end.
                    poll_fn(|cx| guest.poll_no_interesting_tasks(cx)).await;
                    wasmtime::error::Ok(())
                })
                .await?
        };
        let run = tokio::time::timeout_at(ctx.deadline.into(), run).await;
        let result = match Failure::settle(run, &store.data().limiter, &grants.limits) {
            _ if ctx.body_exceeded.load(Ordering::Acquire) => Err(Failure::BodyTooLarge),
            other => other,
        };
        if result.is_err() {
            state.failed.set();
        }
        // Dropping the store ends the response body; the flag above tells
        // the body whether that end is a clean one.
        drop(store);
        result
    }
}
