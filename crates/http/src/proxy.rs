//! Routes that forward to an upstream service, through proxy-wasm filters
//! (`tern-proxy`): keep-alive connection pools to upstreams, hop-by-hop
//! fields dropped both ways (RFC 9110 §7.6.1), `X-Forwarded-*` and
//! `Forwarded` added, connect and response timeouts (502, 504), bodies
//! streamed both ways and through the filters' body callbacks, and the
//! `dispatch_http_call`s filters make, to the upstreams granted them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tern_manifest::{FilterFailure, FilterIsolation, FilterSpec, Manifest, Upstream};
use tern_proxy::{
    CallResponse, Chain, FailurePolicy, Filter, FilterConfig, FilterLog, Headers, Isolation,
    LocalResponse, LogLevel, MetricFamilies, Step, StreamInfo,
};
use tern_runtime::Loader;

use crate::body::{BoxError, ResponseBody, full};
use crate::events::{EventSink, GuestLine, RequestId};

type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The most of a `dispatch_http_call` response kept for the filter.
const MAX_CALL_RESPONSE: usize = 4 << 20;

/// Fields that describe one connection, not the message (RFC 9110
/// §7.6.1), never forwarded either way; plus those the `Connection`
/// field names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// An app's upstreams and filters.
#[derive(Default)]
pub(crate) struct AppProxy {
    upstreams: Arc<Upstreams>,
    filters: BTreeMap<String, Arc<Filter>>,
    log: Arc<LogRelay>,
    _services: Vec<Service>,
}

type Upstreams = BTreeMap<String, Arc<UpstreamClient>>;

/// A route to an upstream.
pub(crate) struct ProxyRoute {
    pub(crate) upstream: Arc<UpstreamClient>,
    pub(crate) chain: FilterChain,
    /// What the access log and the route listing call it, made once.
    label: String,
}

impl std::fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl ProxyRoute {
    fn new(upstream: Arc<UpstreamClient>, chain: FilterChain) -> ProxyRoute {
        let label = if chain.filters.is_empty() {
            format!("upstream {}", upstream.spec.name)
        } else {
            format!("upstream {} {}", upstream.spec.name, chain.describe())
        };
        ProxyRoute {
            upstream,
            chain,
            label,
        }
    }

    /// `upstream NAME via FILTER, ...`.
    pub(crate) fn describe(&self) -> &str {
        &self.label
    }
}

/// The filters in front of a route, in order.
pub(crate) struct FilterChain {
    pub(crate) filters: Arc<[Arc<Filter>]>,
    /// `via FILTER, ...`, made once.
    label: String,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl FilterChain {
    /// `via FILTER, ...`.
    pub(crate) fn describe(&self) -> &str {
        &self.label
    }
}

/// An upstream; its connections are kept per worker thread (`IDLE`).
pub(crate) struct UpstreamClient {
    spec: Upstream,
    /// Its key in `IDLE`, never reused.
    id: u64,
}

/// Idle connections per worker thread and upstream: a request, its
/// upstream connection and its response stay on one thread, and taking a
/// connection takes no lock.
const MAX_IDLE_PER_THREAD: usize = 256;

thread_local! {
    /// Keyed with FxHash: the keys are Tern's own ids, and the map is read
    /// twice for every forwarded request.
    static IDLE: std::cell::RefCell<FxHashMap<u64, Vec<SendRequest<ProxyBody>>>> =
        std::cell::RefCell::new(FxHashMap::default());
}

impl UpstreamClient {
    fn new(spec: &Upstream) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        UpstreamClient {
            spec: spec.clone(),
            id: IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A connection ready for a request: an idle one of this thread's, or
    /// a new one.
    async fn connection(&self) -> Result<SendRequest<ProxyBody>, (u16, String)> {
        match self.idle() {
            Some(sender) => Ok(sender),
            // Boxed: a request that finds an idle connection does not carry
            // the state of connecting in its future.
            None => Box::pin(self.connect()).await,
        }
    }

    /// An idle connection of this thread's that is ready for a request.
    fn idle(&self) -> Option<SendRequest<ProxyBody>> {
        // The one used last first: its connection is the likeliest to be
        // warm. Closed ones met on the way are dropped.
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let senders = idle.entry(self.id).or_default();
            let mut i = senders.len();
            while i > 0 {
                i -= 1;
                if senders[i].is_closed() {
                    senders.swap_remove(i);
                } else if senders[i].is_ready() {
                    return Some(senders.swap_remove(i));
                }
            }
            None
        })
    }

    /// A new connection to the upstream.
    async fn connect(&self) -> Result<SendRequest<ProxyBody>, (u16, String)> {
        let name = &self.spec.name;
        let connect = tokio::net::TcpStream::connect(&self.spec.authority);
        let stream = match tokio::time::timeout(self.spec.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                return Err((502, format!("upstream `{name}`: cannot connect ({err})")));
            }
            Err(_) => {
                let limit = self.spec.connect_timeout;
                return Err((
                    502,
                    format!("upstream `{name}`: cannot connect within {limit:?}"),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| (502, format!("upstream `{name}`: {}", root(&err))))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends `req` (its headers final) to `path` and query, or to the
    /// request's own when `path` is `None`; a failure as the status it
    /// earns and why.
    async fn send(
        &self,
        mut req: Request<ProxyBody>,
        path: Option<&str>,
        limit: Duration,
    ) -> Result<Response<Incoming>, (u16, String)> {
        // HTTP/1.1 to the upstream whatever the client spoke: an HTTP/1.0
        // request could not carry a body of unknown length (chunked).
        *req.version_mut() = http::Version::HTTP_11;
        // An origin-form target going to an upstream with no base path is
        // sent as it came, not written out and parsed again.
        let own = req.uri().scheme().is_none() && req.uri().authority().is_none();
        if path.is_some() || !own || !self.spec.base_path.is_empty() {
            let path = path.unwrap_or_else(|| path_of(req.uri()));
            let target = format!("{}{path}", self.spec.base_path);
            *req.uri_mut() = target
                .parse::<Uri>()
                .map_err(|_| (400, format!("request path `{path}` cannot be forwarded")))?;
        }
        let name = &self.spec.name;
        let exchange = async {
            let mut sender = self.connection().await?;
            let response = sender
                .send_request(req)
                .await
                .map_err(|err| (502, format!("upstream `{name}`: {}", root(&err))))?;
            // Back to the pool: it takes the next request once this
            // response's body is read.
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                let senders = idle.entry(self.id).or_default();
                if senders.len() >= MAX_IDLE_PER_THREAD {
                    senders.retain(|s| !s.is_closed());
                }
                if senders.len() < MAX_IDLE_PER_THREAD {
                    senders.push(sender);
                }
            });
            Ok(response)
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err((
                504,
                format!("upstream `{name}` did not answer within {limit:?}"),
            )),
        }
    }
}

fn root(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Where filters' log lines go: the server's sink, once a server serves
/// the app; until then (services starting while the app loads) the first
/// lines are kept for it.
#[derive(Default)]
pub(crate) struct LogRelay {
    sink: OnceLock<(Arc<dyn EventSink>, RequestId)>,
    early: Mutex<Vec<(String, LogLevel, u64, String)>>,
}

/// How many lines are kept before a server takes them.
const EARLY_LINES: usize = 256;

impl LogRelay {
    fn bind(&self, sink: &Arc<dyn EventSink>, id: RequestId) {
        if self.sink.get().is_some() {
            return;
        }
        let mut early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
        if self.sink.set((sink.clone(), id)).is_ok() {
            for (filter, level, request, message) in early.drain(..) {
                self.write(&filter, level, request, &message);
            }
        }
    }

    fn write(&self, filter: &str, level: LogLevel, request: u64, message: &str) {
        if let Some((sink, id)) = self.sink.get() {
            sink.guest_output(&GuestLine {
                component: &format!("filter:{filter}"),
                request: id.with_seq(request),
                stream: level.name(),
                text: message,
            });
        }
    }
}

impl FilterLog for LogRelay {
    fn log(&self, filter: &str, level: LogLevel, request: u64, message: &str) {
        if self.sink.get().is_none() {
            let mut early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
            if self.sink.get().is_none() {
                if early.len() < EARLY_LINES {
                    early.push((filter.into(), level, request, message.into()));
                }
                return;
            }
        }
        self.write(filter, level, request, message);
    }
}

/// A filter no route names, run as a service: its VM on a thread of its
/// own, where its root context ticks and hears of its queues, until the
/// app version that started it is dropped.
struct Service {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Service {
    fn start(filter: Arc<Filter>) -> Result<Service, String> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Time for its ticks, I/O for the calls its root context makes.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting its thread: {e}"))?;
        std::thread::Builder::new()
            .name(format!("tern-filter-{}", filter.config().name))
            .spawn(move || {
                runtime.block_on(async move {
                    match filter.service_vm() {
                        Ok(_vm) => {
                            let _ = stopped.await;
                        }
                        Err(why) => filter.log_error(&why),
                    }
                });
            })
            .map_err(|e| format!("starting its thread: {e}"))?;
        Ok(Service { stop: Some(stop) })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl AppProxy {
    /// Loads the manifest's upstreams and filters; a filter of the same
    /// name in `previous` hands over its shared data, queues and metrics.
    pub(crate) fn load(
        manifest: &Manifest,
        loader: &Loader<'_>,
        previous: Option<&AppProxy>,
        allowed: Option<&[String]>,
    ) -> Result<AppProxy, tern_manifest::ManifestError> {
        if let Some(allowed) = allowed {
            for (name, upstream) in &manifest.upstreams {
                if !allowed.contains(&upstream.authority) {
                    let message = format!(
                        "{} is not an upstream this host allows (the operator's --allow-upstream)",
                        upstream.authority
                    );
                    return Err(manifest.error_at(
                        upstream.location,
                        &format!("upstream.{name}"),
                        message,
                    ));
                }
            }
        }
        let log = previous.map_or_else(Arc::default, |p| p.log.clone());
        // Filters run on their own engine: compiled here, for it, never by
        // a child building code for the serving engine.
        let loader = &Loader {
            spec: None,
            ..*loader
        };
        let upstreams: Arc<Upstreams> = Arc::new(
            manifest
                .upstreams
                .iter()
                .map(|(name, spec)| (name.clone(), Arc::new(UpstreamClient::new(spec))))
                .collect(),
        );
        let mut filters = BTreeMap::new();
        for (name, spec) in &manifest.filters {
            let space = previous
                .and_then(|p| p.filters.get(name))
                .map(|f| f.space().clone());
            let mut config = filter_config(spec, log.clone());
            config.dispatcher = Some(Arc::new(RootCalls(upstreams.clone())));
            let filter = Filter::load(loader, &spec.source, config, space).map_err(|e| {
                manifest.error_at(
                    spec.source_location,
                    &format!("filter.{name}"),
                    format!("{e:#}"),
                )
            })?;
            filters.insert(name.clone(), Arc::new(filter));
        }
        let routed: Vec<&String> = manifest.routes.iter().flat_map(|r| &r.filters).collect();
        let mut services = Vec::new();
        for (name, filter) in &filters {
            if !routed.contains(&name) {
                let spec = &manifest.filters[name];
                let service = Service::start(filter.clone()).map_err(|e| {
                    manifest.error_at(spec.source_location, &format!("filter.{name}"), e)
                })?;
                services.push(service);
            }
        }
        Ok(AppProxy {
            upstreams,
            filters,
            log,
            _services: services,
        })
    }

    /// Sends the filters' log lines to `sink`, the first lines too.
    pub(crate) fn bind_log(&self, sink: &Arc<dyn EventSink>, id: RequestId) {
        self.log.bind(sink, id);
    }

    /// The route for an upstream and its filters, all declared.
    pub(crate) fn route(&self, upstream: &str, filters: &[String]) -> Option<ProxyRoute> {
        Some(ProxyRoute::new(
            self.upstreams.get(upstream)?.clone(),
            self.chain(filters)?,
        ))
    }

    /// The filters `names`, all declared.
    pub(crate) fn chain(&self, names: &[String]) -> Option<FilterChain> {
        let filters = names
            .iter()
            .map(|name| self.filters.get(name).cloned())
            .collect::<Option<_>>()?;
        Some(FilterChain {
            label: format!("via {}", names.join(", ")),
            filters,
        })
    }

    /// Adds the filters' metrics to `families`, labelled with the app.
    pub(crate) fn write_metrics(&self, app: &str, families: &mut MetricFamilies) {
        for (name, filter) in &self.filters {
            let labels = format!(
                "app=\"{}\",filter=\"{name}\"",
                app.replace(['"', '\\', '\n'], "_")
            );
            filter.space().write_metrics(families, &labels);
        }
    }
}

fn filter_config(spec: &FilterSpec, log: Arc<LogRelay>) -> FilterConfig {
    let mut config = FilterConfig::new(spec.name.clone(), log);
    config.configuration = spec.configuration.clone().into_bytes();
    config.vm_configuration = spec.vm_configuration.clone().into_bytes();
    config.failure = match spec.failure {
        FilterFailure::Closed => FailurePolicy::Closed,
        FilterFailure::Open => FailurePolicy::Open,
    };
    config.isolation = match spec.isolation {
        FilterIsolation::Worker => Isolation::Worker,
        FilterIsolation::Request => Isolation::Request,
    };
    config.log_level = LogLevel::parse(&spec.log_level).unwrap_or(LogLevel::Info);
    config.max_memory = spec.memory.0;
    config.callback_time = spec.callback_time;
    config.upstreams = spec.upstreams.clone();
    config
}

/// What a forwarded request needs from the server.
pub(crate) struct Forward<'a> {
    pub(crate) id: RequestId,
    pub(crate) client: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) app: &'a AppProxy,
    pub(crate) sink: &'a Arc<dyn EventSink>,
}

/// The answer and, for the log, why it failed.
pub(crate) type Forwarded = (Response<ResponseBody>, Option<String>);

/// Tern's answer `status` to request `id`, failed for `why`.
fn failed(id: RequestId, status: u16, why: String) -> Forwarded {
    (crate::response::error(status, id), Some(why))
}

/// Forwards `req` through the route's filters to its upstream.
pub(crate) async fn forward<B>(route: &ProxyRoute, req: Request<B>, fwd: Forward<'_>) -> Forwarded
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let id = fwd.id;
    let (mut parts, body) = req.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, &fwd);
    let limit = fwd
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let limit = limit.min(route.upstream.spec.timeout);

    if route.chain.filters.is_empty() {
        // A request with no body (most GETs) sends none, without a box.
        let body = if body.is_end_stream() {
            ProxyBody::default()
        } else {
            body.map_err(Into::into).boxed_unsync()
        };
        let req = Request::from_parts(parts, body);
        return match route.upstream.send(req, None, limit).await {
            Ok(response) => (
                respond(response.map(|b| b.map_err(Into::into).boxed_unsync())),
                None,
            ),
            Err((status, why)) => failed(id, status, why),
        };
    }

    // Boxed: a route without filters does not carry their state in every
    // request's future.
    Box::pin(forward_filtered(
        route,
        Request::from_parts(parts, body),
        fwd,
        limit,
    ))
    .await
}

/// [`forward`] through the route's filters.
async fn forward_filtered<B>(
    route: &ProxyRoute,
    req: Request<B>,
    fwd: Forward<'_>,
    limit: Duration,
) -> Forwarded
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let id = fwd.id;
    let (req, new_path, filtering) = match filter_request(&route.chain.filters, req, &fwd).await {
        Ok(filtered) => filtered,
        Err(answered) => return answered,
    };
    let response = match route.upstream.send(req, new_path.as_deref(), limit).await {
        Ok(response) => response,
        Err((status, why)) => return failed(id, status, why),
    };
    let (mut parts, body) = response.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    filter_response(filtering, Response::from_parts(parts, body), id).await
}

/// The path and query of `uri`, as the client sent them.
fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// A request's filter chain, between its request and response phases.
pub(crate) struct Filtering {
    chain: Arc<Mutex<Chain>>,
    upstreams: Arc<Upstreams>,
}

/// Runs `filters`' request phase: the request to send on, with the path
/// and query a filter set if it changed them, and the chain for the
/// response; or the answer a filter gave instead (or its failure). The
/// request's body streams through the filters' body callbacks.
pub(crate) async fn filter_request<B>(
    filters: &[Arc<Filter>],
    req: Request<B>,
    fwd: &Forward<'_>,
) -> Result<(Request<ProxyBody>, Option<String>, Filtering), Forwarded>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let id = fwd.id;
    let (mut parts, body) = req.into_parts();
    fwd.app.log.bind(fwd.sink, id);
    let headers = to_pairs(&parts, path_of(&parts.uri), fwd.tls);
    let info = StreamInfo {
        request_id: id.to_string(),
        request_seq: id.seq(),
        source: fwd.client,
        destination: fwd.local,
        protocol: if parts.version == http::Version::HTTP_2 {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        },
    };
    let chain = match Chain::new(filters, info, headers) {
        Ok(chain) => Arc::new(Mutex::new(chain)),
        Err(why) => return Err(failed(id, 500, why)),
    };
    let upstreams = fwd.app.upstreams.clone();
    let end = body.is_end_stream();
    let step = chain
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .request_headers_phase(end);
    match settle(&chain, step, &upstreams).await {
        Step::Continue => {}
        Step::Respond(local) => return Err((local_response(local), None)),
        Step::Fail(why) => return Err(failed(id, 500, why)),
        Step::Wait => unreachable!("settle never answers Wait"),
    }
    let new_path = {
        let chain = chain.lock().unwrap_or_else(PoisonError::into_inner);
        if chain.request_headers_changed() {
            let headers = chain.request_headers();
            let mut fields = HeaderMap::new();
            if let Err(why) = from_pairs(headers, &mut fields, Some(&mut parts.method)) {
                return Err(failed(id, 500, why));
            }
            parts.headers = fields;
            pseudo(headers, ":path").filter(|p| p != path_of(&parts.uri))
        } else {
            // Untouched: the fields as they came, not parsed again.
            None
        }
    };
    // As in Envoy, the filters keep the framing fields as they are: one
    // that changes a body's length removes `content-length` (the server
    // refuses a body that does not match it).
    let body = if end {
        ProxyBody::default()
    } else {
        filtered(body, chain.clone(), false, upstreams.clone())
    };
    let filtering = Filtering { chain, upstreams };
    Ok((Request::from_parts(parts, body), new_path, filtering))
}

/// Runs the response phase of the chain `filtering` holds on `response`:
/// the response as the filters leave it, its body streaming through their
/// body callbacks; or the answer a filter gave instead (or its failure).
pub(crate) async fn filter_response<B>(
    filtering: Filtering,
    response: Response<B>,
    id: RequestId,
) -> Forwarded
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let Filtering { chain, upstreams } = filtering;
    let (mut parts, body) = response.into_parts();
    let mut headers = vec![(":status".to_string(), parts.status.as_u16().to_string())];
    headers.extend(header_pairs(&parts.headers));
    let end = body.is_end_stream();
    let step = chain
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .response_headers_phase(headers, end);
    match settle(&chain, step, &upstreams).await {
        Step::Continue => {}
        Step::Respond(local) => return (local_response(local), None),
        Step::Fail(why) => return failed(id, 500, why),
        Step::Wait => unreachable!("settle never answers Wait"),
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = parts.status;
    {
        let chain = chain.lock().unwrap_or_else(PoisonError::into_inner);
        if chain.response_headers_changed() {
            let headers = chain.response_headers();
            match pseudo(headers, ":status").map(|s| s.parse::<u16>()) {
                Some(Ok(status @ 200..=599)) => {
                    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(parts.status);
                }
                None => {}
                Some(_) => {
                    return failed(
                        id,
                        500,
                        "a filter set a `:status` outside 200 to 599".into(),
                    );
                }
            }
            if let Err(why) = from_pairs(headers, response.headers_mut(), None) {
                return failed(id, 500, why);
            }
        } else {
            *response.headers_mut() = std::mem::take(&mut parts.headers);
        }
    }
    if !end {
        *response.body_mut() = filtered(body, chain, true, upstreams);
    }
    (response, None)
}

/// Makes the calls a paused chain waits on and hands it their answers,
/// until it goes on, answers, or fails. Calls made by a filter that did not
/// pause go on in the background, their answers delivered as they come.
async fn settle(chain: &Arc<Mutex<Chain>>, mut step: Step, upstreams: &Arc<Upstreams>) -> Step {
    loop {
        match step {
            Step::Wait => {}
            Step::Continue => {
                detach_calls(chain, upstreams);
                return Step::Continue;
            }
            done => return done,
        }
        let calls = chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_calls();
        if calls.is_empty() {
            return Step::Fail("a filter paused the request and nothing will resume it".into());
        }
        let answers = futures::future::join_all(calls.into_iter().map(|(index, call)| {
            let upstream = upstreams.get(&call.upstream).cloned();
            async move { (index, call.token, http_call(upstream, &call).await) }
        }))
        .await;
        for (index, token, answer) in answers {
            step = chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .deliver(index, token, answer);
            if !matches!(step, Step::Wait) {
                break;
            }
        }
    }
}

/// Makes the calls a chain holds without waiting for them.
fn detach_calls(chain: &Arc<Mutex<Chain>>, upstreams: &Arc<Upstreams>) {
    let calls = chain
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take_calls();
    for (index, call) in calls {
        let (chain, upstream) = (chain.clone(), upstreams.get(&call.upstream).cloned());
        tokio::spawn(async move {
            let answer = http_call(upstream, &call).await;
            let _ = chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .deliver(index, call.token, answer);
        });
    }
}

/// Makes the calls a filter's root context dispatches (a tick, a queue
/// callback), to the app's upstreams.
struct RootCalls(Arc<Upstreams>);

impl tern_proxy::CallDispatcher for RootCalls {
    fn dispatch(
        &self,
        call: tern_proxy::HttpCall,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<CallResponse>> + Send>> {
        let upstream = self.0.get(&call.upstream).cloned();
        Box::pin(async move { http_call(upstream, &call).await })
    }
}

/// Makes one `dispatch_http_call`; `None` when it failed.
async fn http_call(
    upstream: Option<Arc<UpstreamClient>>,
    call: &tern_proxy::HttpCall,
) -> Option<CallResponse> {
    let upstream = upstream?;
    let mut req = Request::new(
        Full::new(call.body.clone())
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    let mut method = Method::GET;
    from_pairs(&call.headers, req.headers_mut(), Some(&mut method)).ok()?;
    *req.method_mut() = method;
    if let Some(authority) = pseudo(&call.headers, ":authority")
        && let Ok(host) = HeaderValue::from_str(&authority)
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let path = pseudo(&call.headers, ":path").unwrap_or_else(|| "/".into());
    // The filter's timeout, within the upstream's own.
    let timeout = call.timeout.clamp(
        Duration::from_millis(1),
        upstream.spec.timeout.max(Duration::from_millis(1)),
    );
    let work = async {
        let response = upstream.send(req, Some(&path), timeout).await.ok()?;
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_CALL_RESPONSE);
        let body = limited.collect().await.ok()?.to_bytes();
        let mut headers = vec![(":status".to_string(), parts.status.as_u16().to_string())];
        headers.extend(header_pairs(&parts.headers));
        Some(CallResponse {
            headers,
            body,
            trailers: Vec::new(),
        })
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

/// A body passed through the chain's body callbacks as it streams: each
/// piece is handed to the filters as it is polled, inline (callbacks are
/// plain calls), and what they let through goes on. A filter failing
/// mid-body ends the body with an error, which aborts it on the other side.
fn filtered<B>(
    body: B,
    chain: Arc<Mutex<Chain>>,
    response: bool,
    upstreams: Arc<Upstreams>,
) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    Filtered {
        inner: body,
        chain,
        response,
        upstreams,
        trailers: None,
        done: false,
    }
    .boxed_unsync()
}

struct Filtered<B> {
    inner: B,
    chain: Arc<Mutex<Chain>>,
    response: bool,
    /// For the calls filters make from body callbacks.
    upstreams: Arc<Upstreams>,
    /// Trailers to send once the last data went out.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
            let (chunk, end) = match frame {
                None => (Bytes::new(), true),
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (data, false),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let pairs = header_pairs(&trailers).collect();
                            let mut chain =
                                this.chain.lock().unwrap_or_else(PoisonError::into_inner);
                            if let Ok(pairs) = chain.trailers(this.response, pairs) {
                                let mut map = HeaderMap::new();
                                if from_pairs(&pairs, &mut map, None).is_ok() {
                                    this.trailers = Some(map);
                                }
                            }
                        }
                        continue;
                    }
                },
            };
            let mut chain = this.chain.lock().unwrap_or_else(PoisonError::into_inner);
            let passed = chain.body(this.response, &chunk, end);
            if end {
                this.done = true;
                if this.response {
                    chain.finish();
                }
            }
            drop(chain);
            detach_calls(&this.chain, &this.upstreams);
            match passed {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out.into())))),
                Err(step) => {
                    this.done = true;
                    let why = match step {
                        Step::Fail(why) => why,
                        _ => "a filter answered after the body had begun".into(),
                    };
                    return Poll::Ready(Some(Err(why.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}

fn respond(response: Response<ProxyBody>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

fn local_response(local: LocalResponse) -> Response<ResponseBody> {
    let mut response = Response::new(full(local.body));
    *response.status_mut() = StatusCode::from_u16(local.status).unwrap_or(StatusCode::OK);
    // A filter's fields that would frame the message are the server's.
    let pairs: Headers = local
        .headers
        .into_iter()
        .filter(|(n, _)| n != "content-length" && !HOP_BY_HOP.contains(&n.as_str()))
        .collect();
    let _ = from_pairs(&pairs, response.headers_mut(), None);
    response
}

/// [`HOP_BY_HOP`] as names, made once: a message's fields are compared
/// with them, no name is parsed per request. Sized by `HOP_BY_HOP`, so a
/// field added there and not here does not compile; `drop_hop_by_hop`
/// marks the ones found in a `u8`.
static HOP_BY_HOP_NAMES: [HeaderName; HOP_BY_HOP.len()] = [
    HeaderName::from_static(HOP_BY_HOP[0]),
    HeaderName::from_static(HOP_BY_HOP[1]),
    HeaderName::from_static(HOP_BY_HOP[2]),
    HeaderName::from_static(HOP_BY_HOP[3]),
    HeaderName::from_static(HOP_BY_HOP[4]),
    HeaderName::from_static(HOP_BY_HOP[5]),
    HeaderName::from_static(HOP_BY_HOP[6]),
    HeaderName::from_static(HOP_BY_HOP[7]),
];

const _: () = assert!(HOP_BY_HOP.len() <= u8::BITS as usize);

fn drop_hop_by_hop(headers: &mut HeaderMap) {
    // One look over the names first: most messages carry no hop-by-hop
    // field but `Connection`, and absent ones cost no lookup.
    let mut found = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP_NAMES.iter().position(|hop| hop == name) {
            found |= 1 << i;
        }
    }
    if found == 0 {
        return;
    }
    // The fields `Connection` names (it is the first of HOP_BY_HOP), but
    // those removed below anyway.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name)))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP_NAMES.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Writes `ip` as `Display` does, an IPv4 address without the formatting
/// machinery: this runs twice for every forwarded request.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn add_forwarded(headers: &mut HeaderMap, fwd: &Forward<'_>) {
    let ip = fwd.client.ip();
    let proto = if fwd.tls { "https" } else { "http" };
    let mut xff = String::with_capacity(48);
    if let Some(earlier) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        xff.push_str(earlier);
        xff.push_str(", ");
    }
    push_ip(&mut xff, ip);
    let mut forwarded = String::with_capacity(96);
    if let Some(earlier) = headers
        .get(http::header::FORWARDED)
        .and_then(|v| v.to_str().ok())
    {
        forwarded.push_str(earlier);
        forwarded.push_str(", ");
    }
    if ip.is_ipv6() {
        forwarded.push_str("for=\"[");
        push_ip(&mut forwarded, ip);
        forwarded.push_str("]\"");
    } else {
        forwarded.push_str("for=");
        push_ip(&mut forwarded, ip);
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    let host = headers.get(http::header::HOST).cloned();
    if let Some(host) = host.as_ref().and_then(|v| v.to_str().ok())
        && !host.contains(['"', ';', ','])
    {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    if let Ok(value) = HeaderValue::from_str(&xff) {
        headers.insert(&X_FORWARDED_FOR, value);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(http::header::FORWARDED, value);
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(&X_FORWARDED_HOST, host);
    }
}

/// The request head as filters see it: pseudo-headers, then the fields.
fn to_pairs(parts: &http::request::Parts, path: &str, tls: bool) -> Headers {
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let mut pairs = vec![
        (":method".to_string(), parts.method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), authority),
        (
            ":scheme".to_string(),
            if tls { "https" } else { "http" }.to_string(),
        ),
    ];
    pairs.extend(header_pairs(&parts.headers).filter(|(n, _)| n != "host"));
    pairs
}

fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (String, String)> + '_ {
    headers.iter().map(|(name, value)| {
        (
            name.as_str().to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )
    })
}

fn pseudo(pairs: &Headers, name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Writes filter-made fields into `map`: pseudo-headers become the method
/// (`:authority` the `Host`), hop-by-hop fields are dropped, and a name or
/// value HTTP cannot carry fails the request.
fn from_pairs(
    pairs: &Headers,
    map: &mut HeaderMap,
    method: Option<&mut Method>,
) -> Result<(), String> {
    map.clear();
    let mut method = method;
    for (name, value) in pairs {
        match name.as_str() {
            ":method" => {
                if let Some(method) = method.as_deref_mut() {
                    *method = Method::from_bytes(value.as_bytes()).map_err(|_| {
                        format!("a filter set an invalid method `{}`", value.escape_debug())
                    })?;
                }
                continue;
            }
            ":authority" => {
                if method.is_some()
                    && let Ok(host) = HeaderValue::from_str(value)
                {
                    map.insert(http::header::HOST, host);
                }
                continue;
            }
            n if n.starts_with(':') => continue,
            n if HOP_BY_HOP.contains(&n) => continue,
            _ => {}
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!(
                "a filter set an invalid header name `{}`",
                name.escape_debug()
            )
        })?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("a filter set an invalid value for `{name}`"))?;
        map.try_append(name, value)
            .map_err(|_| "a filter set more header fields than a response can hold".to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.3.45",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = String::from("x");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}"));
        }
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Private"),
            ("connection", "upgrade"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("x-private", "this hop only"),
            ("content-type", "text/plain"),
            ("x-kept", "end to end"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        drop_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);

        // A message with none of them is left as it is.
        let mut plain = HeaderMap::new();
        plain.insert(http::header::HOST, HeaderValue::from_static("a"));
        plain.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        drop_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 2);
    }
}
