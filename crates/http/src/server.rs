//! The HTTP/1.1 server: accepting connections, enforcing the limits that
//! come before any guest runs (head size and time, body size, concurrency),
//! handing each request to its component, and shutting down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::body::{LimitedBody, ResponseBody};
use crate::config::ServeConfig;
use crate::events::{AccessRecord, EventSink, RequestIds};
use crate::executor::{Exchange, Reply, RequestCtx};
use crate::io::ClientIo;
use crate::response;

/// A bound server, not yet accepting.
pub struct Server {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

/// What every connection task reads.
struct Shared {
    app: Arc<ArcSwap<App>>,
    config: ServeConfig,
    sink: Arc<dyn EventSink>,
    ids: RequestIds,
    local: SocketAddr,
}

/// Where the served app lives: [`AppSlot::replace`] swaps in a new
/// version (from [`App::reload`]) without stopping the server. Requests
/// already routed finish on the version they started on; requests routed
/// after the swap get the new one. No request waits for a swap.
#[derive(Clone)]
pub struct AppSlot(Arc<ArcSwap<App>>);

impl AppSlot {
    /// The app being served now.
    pub fn current(&self) -> Arc<App> {
        self.0.load_full()
    }

    /// Serves `app` from now on. The old version is dropped once its last
    /// request finishes.
    pub fn replace(&self, app: App) {
        self.0.store(Arc::new(app));
    }
}

/// How a shutdown went.
#[derive(Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished within the grace period.
    Drained,
    /// The grace period ran out with connections still open.
    CutOff,
}

impl Server {
    /// Binds the listening socket.
    pub fn bind(
        app: App,
        config: ServeConfig,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                app: Arc::new(ArcSwap::from_pointee(app)),
                config,
                sink,
                ids: RequestIds::new(),
                local,
            }),
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The app being served now.
    pub fn app(&self) -> Arc<App> {
        self.shared.app.load_full()
    }

    /// A handle that replaces the app while the server runs.
    pub fn app_slot(&self) -> AppSlot {
        AppSlot(self.shared.app.clone())
    }

    /// Serves on `threads` threads until `shutdown` resolves, then stops
    /// accepting and lets in-flight requests finish within the grace
    /// period. Must be called from within a current-thread tokio runtime,
    /// which drives `shutdown` and one of the workers.
    ///
    /// Each worker is a single-threaded runtime accepting from the shared
    /// socket: a request, its guest and its response stay on one thread,
    /// with no cross-thread wakeups or work stealing on the hot path.
    pub async fn run(
        self,
        threads: usize,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<Shutdown> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for n in 1..threads.max(1) {
            let listener = self.listener.try_clone()?;
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("tern-worker-{n}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        Ok(accept_loop(shared, listener, stop).await)
                    })
                })?;
            workers.push(worker);
        }
        let listener = TcpListener::from_std(self.listener)?;
        let mut mine = std::pin::pin!(accept_loop(self.shared.clone(), listener, stop_rx));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut outcome = tokio::select! {
            outcome = &mut mine => outcome,
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                mine.await
            }
        };
        for worker in workers {
            let joined: std::io::Result<Shutdown> = worker.join().unwrap_or(Ok(Shutdown::CutOff));
            if joined? == Shutdown::CutOff {
                outcome = Shutdown::CutOff;
            }
        }
        Ok(outcome)
    }
}

/// Accepts connections until told to stop, then drains this worker's
/// connections within the grace period.
async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Shutdown {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    serve_connection(&shared, &graceful, stream, peer);
                }
                Err(err) => {
                    // Out of descriptors and the like: report, back off a
                    // little, keep serving the connections already open.
                    shared.sink.server_error(&format!("accepting a connection: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    match tokio::time::timeout(shared.config.grace, graceful.shutdown()).await {
        Ok(()) => Shutdown::Drained,
        Err(_) => Shutdown::CutOff,
    }
}

fn serve_connection(
    shared: &Arc<Shared>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let config = &shared.config;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(
            usize::try_from(config.max_header_size.0)
                .unwrap_or(usize::MAX)
                .max(8192),
        )
        .keep_alive(true);
    let client = Client {
        addr: peer,
        header: HeaderValue::from_str(&peer.to_string()).ok(),
    };
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(handle(shared, req, client).await) }
        })
    };
    let io = TokioIo::new(ClientIo::new(stream, config.write_timeout));
    let conn = graceful.watch(builder.serve_connection(io, service));
    let shared = shared.clone();
    tokio::spawn(async move {
        // Client errors (resets, malformed heads, timeouts) end only
        // their own connection; hyper already answered what it could, and
        // the refusals a client caused get their log line here.
        if let Err(err) = conn.await {
            log_connection_error(&shared, &err, peer);
        }
    });
}

/// Logs what hyper refused before a request reached [`handle`] (a head too
/// large, 431, or malformed, 400), and connections closed on a client that
/// stopped reading. A head not sent in time gets no response and no line:
/// idle keep-alive connections end the same way.
fn log_connection_error(shared: &Shared, err: &hyper::Error, peer: SocketAddr) {
    let (status, what) = if err.is_parse_too_large() {
        let limit = shared.config.max_header_size;
        (431, format!("request head larger than {limit}"))
    } else if err.is_parse() {
        (400, format!("malformed request: {err}"))
    } else {
        let stalled = std::error::Error::source(err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .filter(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if let Some(stalled) = stalled {
            let message = format!("closed the connection from {peer}: {stalled}");
            shared.sink.server_error(&message);
        }
        return;
    };
    shared.sink.request(&AccessRecord {
        id: shared.ids.next(),
        method: "-",
        path: "-",
        status,
        duration: Duration::ZERO,
        component: None,
        error: Some(format!("{what} (client {peer})")),
    });
}

/// The other end of a connection.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    /// The address as guests see it, formatted once per connection.
    header: Option<HeaderValue>,
}

/// Routes one request, applies the limits checked before a guest runs,
/// and waits for the guest's response head.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client: Client,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let id = shared.ids.next();
    let method = req.method().clone();
    // The request's own URI, shared rather than copied, for the log line.
    let uri = req.uri().clone();
    let refuse = |status: u16, component: Option<&str>, error: Option<String>| {
        shared.sink.request(&AccessRecord {
            id,
            method: method.as_str(),
            path: uri.path(),
            status,
            duration: start.elapsed(),
            component,
            error,
        });
        response::error(status, id)
    };
    let mut req = req;
    if let Err(why) = check_host(&mut req) {
        return refuse(400, None, Some(why.into()));
    }
    // This request stays on this version of the app, even if a new one is
    // swapped in while it runs.
    let app = shared.app.load_full();
    let Some(matched) = app.router.route(req.uri().path()) else {
        return refuse(404, None, None);
    };
    let (index, split, route) = (matched.component, matched.split, matched.header.cloned());
    let served = &app.components[index];
    let component = Some(&*served.grants.id);
    let limits = served.grants.limits;
    if content_length(&req).is_some_and(|len| len > limits.max_body.0) {
        return refuse(
            413,
            component,
            Some(format!("request body larger than {}", limits.max_body)),
        );
    }
    let deadline = start + limits.timeout;
    let body_exceeded = Arc::new(AtomicBool::new(false));
    let mut req = req.map(|body| LimitedBody::new(body, limits.max_body.0, body_exceeded.clone()));
    // An executor that needs the whole body before its guest starts (WAGI)
    // gets it here: under the request's deadline, and before the request
    // takes a concurrency permit or an instance slot, so clients trickling
    // bodies hold neither.
    let buffered = if served.executor.buffers_body() {
        match tokio::time::timeout_at(deadline.into(), req.body_mut().read_all()).await {
            Ok(Ok(body)) => Some(body),
            Ok(Err(_)) if body_exceeded.load(Ordering::Acquire) => {
                let error = format!("request body larger than {}", limits.max_body);
                return refuse(413, component, Some(error));
            }
            Ok(Err(err)) => {
                let error = format!("reading the request body: {err}");
                return refuse(400, component, Some(error));
            }
            Err(_) => {
                let error = format!(
                    "request body not received within the deadline of {:?}",
                    limits.timeout
                );
                return refuse(408, component, Some(error));
            }
        }
    } else {
        None
    };
    let (Ok(permit), Ok(slot)) = (
        served.permits.clone().try_acquire_owned(),
        app.pool.slots.clone().try_acquire_owned(),
    ) else {
        let error = format!("{} requests already in flight", limits.max_concurrent);
        return refuse(503, component, Some(error));
    };

    let ctx = RequestCtx {
        id,
        route,
        split,
        client: client.addr,
        client_header: client.header,
        local: shared.local,
        deadline,
        body_exceeded,
    };
    if !req.headers().contains_key(http::header::HOST) {
        // HTTP/1.0 clients may omit it; guests expect an authority.
        if let Ok(host) = HeaderValue::from_str(&shared.local.to_string()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    let (reply, head) = Reply::new();
    let state = reply.state();
    let exchange = Exchange {
        request: req,
        buffered,
        reply,
        ctx,
        sink: shared.sink.clone(),
    };
    // The guest runs in a task of its own, not inline: the guests ready in a
    // scheduler tick then all run before their responses are written back
    // to back, so one write wakes the client instead of each. Inline was
    // 25% slower under load (bench/README.md).
    let component_id = served.grants.id.clone();
    let task = {
        let shared = shared.clone();
        let (method, uri) = (method.clone(), uri.clone());
        tokio::spawn(async move {
            let served = &app.components[index];
            let result = served.executor.run(&served.grants, exchange, &state).await;
            drop((permit, slot));
            let (status, error) = match &result {
                Ok(()) => (state.sent().unwrap_or(200), None),
                Err(failure) => (
                    state.sent().unwrap_or(failure.status()),
                    Some(failure.describe(&served.grants.limits)),
                ),
            };
            shared.sink.request(&AccessRecord {
                id,
                method: method.as_str(),
                path: uri.path(),
                status,
                duration: start.elapsed(),
                component: Some(&served.grants.id),
                error,
            });
            result
        })
    };
    match head.await {
        Ok(response) => response,
        Err(_) => {
            match task.await {
                Ok(Err(failure)) => response::error(failure.status(), id),
                // The reply is only dropped unused on failure.
                Ok(Ok(())) => response::error(500, id),
                // A panic is Tern's bug: answered without detail, and logged
                // here since the task never got to its log line.
                Err(_) => refuse(
                    500,
                    Some(&component_id),
                    Some("the request's task panicked (a bug in Tern)".into()),
                ),
            }
        }
    }
}

/// Holds the request's `Host` to RFC 9112 (3.2): exactly one on HTTP/1.1,
/// a valid authority, and for an absolute-form target the target's own
/// authority, so that both executors see the same host.
fn check_host(req: &mut Request<Incoming>) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err("more than one Host header");
    }
    if let Some(authority) = req.uri().authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
        return Ok(());
    }
    match first {
        Some(host) if !is_authority(host.as_bytes()) => Err("Host is not a valid authority"),
        None if req.version() == http::Version::HTTP_11 => Err("no Host header"),
        _ => Ok(()),
    }
}

/// Whether `host` is an RFC 3986 host with an optional port, as a `Host`
/// header carries it: no user info, no path, no spaces.
fn is_authority(host: &[u8]) -> bool {
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:%[]".contains(&b))
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
