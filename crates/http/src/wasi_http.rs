//! The `wasi-http` executor: a component exporting
//! `wasi:http/incoming-handler` (WASI 0.2), one fresh instance per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use tern_runtime::services::{self, ServicesView};
use tern_runtime::{MemoryLimiter, Services};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Result, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::body::{BoxError, GuestBody, LimitedBody};
use crate::events::EventSink;
use crate::executor::{Exchange, Reply, ReplyState, RequestCtx};
use crate::guest_output::OutputState;
use crate::instance::{Failure, Grants, MAX_FIELDS_SIZE, limit_store, max_host_resources};
use crate::outbound::{NO_ORIGIN, Outbound};
use crate::response::REQUEST_ID_HEADER;

/// Headers Tern sets on every request it hands a guest; a client's own
/// headers with these names are dropped so they cannot be spoofed.
pub const ROUTE_HEADER: &str = "tern-matched-route";
/// The part of the path after the matched route's prefix.
pub const PATH_INFO_HEADER: &str = "tern-path-info";
/// The client's address.
pub const CLIENT_ADDR_HEADER: &str = "tern-client-addr";

/// A component ready to instantiate per request.
pub(crate) struct WasiHttpExecutor {
    pre: ProxyPre<HttpHost>,
}

/// The store data of one wasi-http instance.
pub(crate) struct HttpHost {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) hooks: Outbound,
    services: Services,
    /// The request the guest's output is logged under.
    pub(crate) output: Arc<OutputState>,
    /// Keeps the epoch moving for as long as the instance lives.
    _running: tern_runtime::Running,
}

impl WasiView for HttpHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiHttpExecutor {
    /// Links and pre-instantiates `component`; fails when it does not
    /// export `wasi:http/incoming-handler` or imports what Tern lacks.
    pub(crate) fn new(
        linkers: &HttpLinkers,
        component: &Component,
        imports: Imports,
    ) -> Result<Self> {
        Ok(WasiHttpExecutor {
            pre: ProxyPre::new(linkers.link(component, false, imports)?)?,
        })
    }

    /// Whether `component` exports the handler this executor calls.
    pub(crate) fn exports_handler(engine: &Engine, component: &Component) -> bool {
        exports(engine, component, "wasi:http/incoming-handler@0.2")
    }

    pub(crate) async fn run(&self, grants: &Grants, exchange: Exchange) -> Result<(), Failure> {
        let (request, reply, ctx, sink) = guest_request(exchange);
        let host = HttpHost::new(grants, &sink, &ctx)?;
        let mut store = Store::new(self.pre.engine(), host);
        limit_store(&mut store, ctx.deadline, grants.limits.cpu_time, |h| {
            &mut h.limiter
        });

        let state = reply.state();
        let (request, outparam) = {
            let mut http = store.data_mut().http();
            let scheme = if ctx.tls { Scheme::Https } else { Scheme::Http };
            let request = http
                .new_incoming_request(scheme, request)
                .map_err(|e| Failure::Host(format!("{e:#}")))?;
            let exceeded = ctx.body_exceeded.clone();
            let outparam = http
                .new_response_outparam_from_callback(move |result| {
                    let result = result.map_err(|code| error_code_message(&code));
                    answer(reply, result, &exceeded);
                })
                .map_err(|e| Failure::Host(format!("{e:#}")))?;
            (request, outparam)
        };

        let run = async {
            let proxy = self.pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, outparam)
                .await
        };
        let run = tokio::time::timeout_at(ctx.deadline.into(), run).await;
        let result = conclude(run, &store.data().limiter, grants, &ctx, &state);
        // The connection's task writes the response before this one frees
        // the instance (microseconds of unmapping) and logs the request: a
        // client waits for neither.
        tokio::task::yield_now().await;
        let result = settle_body(result, &ctx, &state).await;
        // Dropping the store ends the response body; `conclude` and
        // `settle_body` told the body whether that end is a clean one.
        drop(store);
        result
    }
}

/// Hands a guest's answer to the client: the head held to [`check_head`],
/// with a body that aborts if the guest fails midway, or the error the
/// guest gave instead. A head for a request whose body went past its limit
/// is dropped: the client gets 413, not a reply to a truncated request.
pub(crate) fn answer<B>(
    reply: Reply,
    answer: Result<http::Response<B>, String>,
    exceeded: &AtomicBool,
) where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    match answer {
        Ok(_) if exceeded.load(Ordering::Acquire) => drop(reply),
        Ok(mut response) => match check_head(&mut response) {
            Ok(()) => {
                let failed = reply.state().failed.clone();
                reply.send(response.map(|body| GuestBody::new(body, failed)));
            }
            Err(why) => reply.refuse(why),
        },
        Err(why) => reply.refuse(why),
    }
}

/// How a fresh instance's request ended once its guest has run (`run`,
/// bounded by the deadline). A body over the limit fails the request
/// however the guest took the error (some treat any read error as the end
/// of the body); a failure marks the response body failed, to be done
/// before the store (and with it the body's sender) is dropped.
pub(crate) fn conclude(
    run: Result<Result<()>, tokio::time::error::Elapsed>,
    limiter: &MemoryLimiter,
    grants: &Grants,
    ctx: &RequestCtx,
    state: &ReplyState,
) -> Result<(), Failure> {
    let result = match Failure::settle(run, limiter, &grants.limits) {
        _ if ctx.body_exceeded.load(Ordering::Acquire) => Err(Failure::BodyTooLarge),
        other => other,
    };
    if result.is_err() {
        state.failed.set();
    }
    result
}

/// Holds a fresh WASI 0.2 instance whose guest returned until its response
/// body has been read to its end, and tells how it ended. A 0.2 guest
/// writes and finishes its body in its own calls, so what it wrote is
/// queued by now; but it may have returned with the body still open (its
/// `outgoing-body` kept, never finished), and dropping the store would then
/// end the body as if it were whole. Told the guest returned, the body
/// fails the first time it waits for more. Most bodies have ended by now
/// (one atomic load); a client still reading at the deadline is not waited
/// for, since what the guest wrote outlives the store.
pub(crate) async fn settle_body(
    result: Result<(), Failure>,
    ctx: &RequestCtx,
    state: &ReplyState,
) -> Result<(), Failure> {
    if result.is_err() || state.sent().is_none() {
        return result;
    }
    if !state.failed.is_over() {
        state.failed.guest_returned();
        let _ = tokio::time::timeout_at(ctx.deadline.into(), state.failed.ended()).await;
    }
    body_verdict(state)
}

/// How a response body that has ended went: cut short (left open by its
/// guest, or ended by an error) fails the request, for the log.
pub(crate) fn body_verdict(state: &ReplyState) -> Result<(), Failure> {
    match state.failed.cut_short() {
        Some(why) => Err(Failure::BodyCut(why.to_owned())),
        None => Ok(()),
    }
}

/// Whether `component` exports an interface whose name starts with
/// `prefix` (an interface and its version's leading part).
pub(crate) fn exports(engine: &Engine, component: &Component, prefix: &str) -> bool {
    let ty = component.component_type();
    ty.exports(engine).any(|(name, _)| name.starts_with(prefix))
}

/// What a wasi-http executor takes from an exchange: the request with
/// Tern's headers on it (see [`set_tern_headers`]), the way back, what the
/// router learned, where the guest's output goes.
pub(crate) fn guest_request(
    exchange: Exchange,
) -> (
    http::Request<LimitedBody>,
    Reply,
    RequestCtx,
    Arc<dyn EventSink>,
) {
    let Exchange {
        mut request,
        buffered: _,
        reply,
        ctx,
        sink,
    } = exchange;
    set_tern_headers(&mut request, &ctx);
    (request, reply, ctx, sink)
}

/// Puts Tern's own headers on a request for a guest: the matched route,
/// the path after it, the client's address; a client's own headers of
/// those names are dropped first. A Spin app's guests also get Spin's
/// names for them, and the full URL, as Spin sets them.
fn set_tern_headers<B>(request: &mut http::Request<B>, ctx: &RequestCtx) {
    let (_, path_info) = ctx.split_path(request.uri().path());
    let path_info = HeaderValue::from_str(path_info).ok();
    let spin = ctx
        .spin
        .then(|| spin_headers(request, ctx, path_info.clone()));
    let headers = request.headers_mut();
    drop_tern_headers(headers, ctx.spin);
    let info = [
        (ROUTE_HEADER, ctx.route.clone()),
        (PATH_INFO_HEADER, path_info),
        (CLIENT_ADDR_HEADER, ctx.client_header.clone()),
    ];
    headers.reserve(info.len());
    for (name, value) in info.into_iter().chain(spin.into_iter().flatten()) {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    // Spin's `spin-path-match-NAME`, one per `:name` segment of the route
    // (only a Spin manifest has them), after the client's `spin-*` are gone.
    if ctx.params.is_some() {
        let uri = request.uri().clone();
        let headers = request.headers_mut();
        for (param, value) in ctx.path_matches(uri.path()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(param.header.clone(), value);
            }
        }
    }
}

/// Spin's request headers for a guest of a Spin app.
fn spin_headers<B>(
    request: &http::Request<B>,
    ctx: &RequestCtx,
    path_info: Option<HeaderValue>,
) -> [(&'static str, Option<HeaderValue>); 5] {
    let scheme = if ctx.tls { "https" } else { "http" };
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let full_url = HeaderValue::from_str(&format!("{scheme}://{host}{path}")).ok();
    let component_route = ctx.route.as_ref().and_then(|route| {
        let route = route.to_str().ok()?;
        let fixed = route.strip_suffix("/...").unwrap_or(route);
        HeaderValue::from_str(fixed).ok()
    });
    [
        ("spin-full-url", full_url),
        ("spin-path-info", path_info),
        ("spin-matched-route", ctx.route.clone()),
        ("spin-component-route", component_route),
        ("spin-client-addr", ctx.client_header.clone()),
    ]
}

impl HttpHost {
    /// The store data of one request's instance: only what the manifest
    /// grants, bounded by the component's limits.
    pub(crate) fn new(
        grants: &Grants,
        sink: &Arc<dyn EventSink>,
        ctx: &RequestCtx,
    ) -> Result<Self, Failure> {
        let mut host = HttpHost::for_instance(grants, sink, OutputState::new(ctx.id))?;
        host.hooks.origin = ctx.origin.clone().ok_or(NO_ORIGIN);
        Ok(host)
    }

    /// The store data of an instance whose output is logged under
    /// `output`'s request (a warm instance changes it per request).
    pub(crate) fn for_instance(
        grants: &Grants,
        sink: &Arc<dyn EventSink>,
        output: Arc<OutputState>,
    ) -> Result<Self, Failure> {
        let wasi = grants
            .wasi(sink, &output)
            .map_err(|e| Failure::Host(format!("{e:#}")))?
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_SIZE);
        let mut table = ResourceTable::new();
        table.set_max_capacity(max_host_resources(grants.limits.memory));
        Ok(HttpHost {
            wasi,
            http,
            table,
            limiter: MemoryLimiter::new(grants.limits.memory),
            hooks: Outbound {
                policy: grants.outbound.clone(),
                sent: 0,
                sink: sink.clone(),
                component: grants.id.clone(),
                request: output.request(),
                origin: Err(NO_ORIGIN),
                in_flight: Vec::new(),
            },
            services: grants.services.clone(),
            output,
            _running: tern_runtime::Ticker::global().running(),
        })
    }
}

/// What linking does with an import Tern does not provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Imports {
    /// Refuse the component.
    Strict,
    /// Link a function that traps when called (Spin apps).
    TrapUnprovided,
}

/// Links and pre-instantiates a wasi-http component: WASI 0.2 and
/// wasi:http 0.2, with `p3` WASI 0.3 and wasi:http 0.3 as well (a Rust 0.3
/// guest's standard library speaks 0.2), and Tern's host services.
/// The linkers of one engine's wasi-http components (WASI 0.2, and 0.2
/// with 0.3), each made the first time a component needs it: making one
/// costs more than pre-instantiating a component with it, which matters
/// when apps load on their first request (`tern host`).
pub(crate) struct HttpLinkers {
    engine: Engine,
    p2: OnceLock<Linker<HttpHost>>,
    p3: OnceLock<Linker<HttpHost>>,
}

impl HttpLinkers {
    pub(crate) fn new(engine: &Engine) -> Self {
        HttpLinkers {
            engine: engine.clone(),
            p2: OnceLock::new(),
            p3: OnceLock::new(),
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links `component` with every host interface a wasi-http guest may
    /// import (WASI 0.3's too, with `p3`).
    ///
    /// With `Imports::TrapUnprovided` (a Spin app: Spin's SDKs import their
    /// whole platform world, used or not), what Tern does not provide is
    /// linked to functions that trap when called, the trap naming the
    /// import.
    pub(crate) fn link(
        &self,
        component: &Component,
        p3: bool,
        imports: Imports,
    ) -> Result<InstancePre<HttpHost>> {
        let linker = self.linker(p3)?;
        match linker.instantiate_pre(component) {
            Err(_) if imports == Imports::TrapUnprovided => {
                let mut lenient = linker.clone();
                tern_runtime::trap_unprovided_imports(&mut lenient, component)?;
                lenient.instantiate_pre(component)
            }
            linked => linked,
        }
    }

    /// The interfaces `component` imports that Tern lacks altogether.
    pub(crate) fn unprovided(&self, component: &Component, p3: bool) -> Vec<String> {
        let Ok(linker) = self.linker(p3) else {
            return Vec::new();
        };
        tern_runtime::trap_unprovided_imports(&mut linker.clone(), component).unwrap_or_default()
    }

    fn linker(&self, p3: bool) -> Result<&Linker<HttpHost>> {
        let cell = if p3 { &self.p3 } else { &self.p2 };
        Ok(match cell.get() {
            Some(linker) => linker,
            None => {
                let linker = self.make(p3)?;
                cell.get_or_init(|| linker)
            }
        })
    }

    fn make(&self, p3: bool) -> Result<Linker<HttpHost>> {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::relative::add_p2_to_linker(&mut linker)?;
        if p3 {
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            crate::relative::add_p3_to_linker(&mut linker)?;
        }
        let view: fn(&mut HttpHost) -> ServicesView<'_> = |h| ServicesView {
            services: &mut h.services,
            table: &mut h.table,
        };
        services::add_to_linker(&mut linker, view)?;
        tern_runtime::spin::add_to_linker(&mut linker, view, p3)?;
        Ok(linker)
    }
}

/// Drops client headers in Tern's `tern-` namespace (and for a Spin app,
/// Spin's `spin-`), so a client cannot pose as the router.
fn drop_tern_headers(headers: &mut http::HeaderMap, spin: bool) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            name.as_str().starts_with("tern-") || (spin && name.as_str().starts_with("spin-"))
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Holds a guest's response head to what HTTP and Tern allow: a final
/// status (200 to 599), no `x-request-id` of its own (that header is
/// Tern's, tying a response to its log line), and no `content-length` on a
/// 204 or 304, whose bodies are empty by definition.
pub(crate) fn check_head<B>(response: &mut http::Response<B>) -> Result<(), String> {
    let status = response.status();
    if !(200..=599).contains(&status.as_u16()) {
        return Err(format!(
            "guest set status {}, which is not a final response status (200 to 599)",
            status.as_u16()
        ));
    }
    let headers = response.headers_mut();
    headers.remove(REQUEST_ID_HEADER);
    if status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    Ok(())
}

pub(crate) fn error_code_message(code: &impl std::fmt::Debug) -> String {
    format!("guest answered with error code {code:?}")
}
