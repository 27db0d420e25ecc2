//! The HTTP server: accepting connections (HTTP/1.1 and HTTP/2, in the
//! clear or over TLS), enforcing the limits that come before any guest runs
//! (head size and time, body size, concurrency), handing each request to its
//! component, and shutting down gracefully.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::app::App;
use crate::body::{BoxError, LimitedBody, ResponseBody};
use crate::config::ServeConfig;
use crate::events::{AccessRecord, EventSink, RequestId, RequestIds};
use crate::executor::{Exchange, Reply, RequestCtx};
use crate::h2::{Refusals, StreamCell, StreamExec};
use crate::idle::{Activity, Idle, Tracked};
use crate::instance::Failure;
use crate::io::ClientIo;
use crate::outbound::SelfOrigin;
use crate::response;
use crate::router::Target as RouteTarget;
use crate::stats::AppStats;
use crate::tls::TlsSlot;

/// Requests one HTTP/2 connection may have open at once; more are refused
/// (`REFUSED_STREAM`) until some finish.
const MAX_STREAMS: u32 = 100;

/// How connections speak HTTP; HTTP/2 streams run [`StreamExec`]'s way.
type Http = auto::Builder<StreamExec>;

/// A bound server, not yet accepting.
pub struct Server {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

/// Which app answers a request, when one server serves many (`tern
/// host`): the layer above each app's own routes.
pub trait Sites: Send + Sync + 'static {
    /// The app serving requests for `host` (the request's host name,
    /// lowercase, without its port), loaded first if it is not.
    fn app_for<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = Found> + Send + 'a>>;
}

/// What [`Sites::app_for`] found.
pub enum Found {
    /// The app, ready.
    App(Arc<App>),
    /// No app claims the name: 404.
    Unknown,
    /// The app's name is known but it could not be loaded: 503, and the
    /// reason in the log.
    Failed(String),
}

/// What the server serves.
enum Target {
    /// One app (`tern serve`), which a reload may replace.
    One(Arc<ArcSwap<App>>),
    /// An app per host name.
    Many(Arc<dyn Sites>),
}

/// What every connection task reads.
struct Shared {
    target: Target,
    config: ServeConfig,
    sink: Arc<dyn EventSink>,
    ids: RequestIds,
    local: SocketAddr,
    /// The certificate and key presented to clients, when serving TLS.
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    protocols: Protocols,
    /// One permit per open connection, across the worker threads.
    connections: Arc<Semaphore>,
    /// One permit per KiB of request bodies buffered whole (WAGI's), across
    /// every app: many clients each sending up to `max_body` at once must
    /// not take the process's memory.
    buffering: Arc<Semaphore>,
}

/// What request bodies buffered whole may take in all, in KiB.
const BUFFERING_KIB: usize = 512 << 10;

/// The HTTP settings of every connection, made once: the same limits for
/// HTTP/1.1 and HTTP/2.
struct Protocols {
    /// HTTP/2 for a client whose first bytes are its preface (h2c by prior
    /// knowledge, or TLS without ALPN), HTTP/1.1 otherwise.
    either: Http,
    /// TLS connections whose ALPN chose `http/1.1`.
    http1: Http,
    /// TLS connections whose ALPN chose `h2`.
    http2: Http,
}

impl Protocols {
    fn new(config: &ServeConfig) -> Self {
        let mut either = Http::new(StreamExec {
            write_timeout: config.write_timeout,
        });
        either
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .max_buf_size(
                usize::try_from(config.max_header_size.0)
                    .unwrap_or(usize::MAX)
                    .max(8192),
            )
            .keep_alive(true);
        either
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_size.0).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_STREAMS);
        Protocols {
            http1: either.clone().http1_only(),
            http2: either.clone().http2_only(),
            either,
        }
    }
}

/// Where the served app lives: [`AppSlot::replace`] swaps in a new
/// version (from [`App::reload`]) without stopping the server. Requests
/// already routed finish on the version they started on; requests routed
/// after the swap get the new one. No request waits for a swap.
#[derive(Clone)]
pub struct AppSlot(Arc<ArcSwap<App>>);

impl AppSlot {
    /// A slot holding `app`.
    pub fn new(app: App) -> AppSlot {
        AppSlot(Arc::new(ArcSwap::from_pointee(app)))
    }

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

/// The way from a request back into its server and its app's version, for
/// requests one component sends another (`http://COMPONENT.spin.internal`,
/// Spin's service chaining). Weak: a warm instance keeps its last
/// request's, and must not keep an old version of the app alive.
#[derive(Clone)]
pub(crate) struct Chain {
    shared: Weak<Shared>,
    app: Weak<App>,
}

impl Chain {
    /// An in-process HTTP/1.1 connection to the app, served as a client's
    /// connection is (limits, log, deadline, write timeout) but bound to
    /// this version of the app: through its routes, or with `component`
    /// to that component, whether or not it has a route. `None` if the app
    /// has no such HTTP component, or is gone.
    pub(crate) fn connect(
        &self,
        component: Option<&str>,
        origin: &SelfOrigin,
    ) -> Option<tokio::io::DuplexStream> {
        let (shared, app) = (self.shared.upgrade()?, self.app.upgrade()?);
        let component = match component {
            None => None,
            Some(name) => {
                let index = app.components.iter().position(|c| &*c.grants.id == name)?;
                if app.components[index].executor.is_trigger() {
                    return None;
                }
                Some(index)
            }
        };
        let (ours, theirs) = tokio::io::duplex(CHAIN_BUFFER);
        let chained = Chained {
            app: Arc::downgrade(&app),
            component,
            authority: origin.authority.clone(),
            depth: origin.depth + 1,
            deadline: origin.deadline,
        };
        let tls = origin.tls;
        tokio::spawn(async move {
            // Never stopped by the server: the request that opened it is,
            // and this connection ends with it.
            let (_running, mut stop) = watch::channel(false);
            let io = ClientIo::new(theirs, shared.config.write_timeout);
            let client = (tls, io.written(), Some(chained), None);
            let http = &shared.protocols.http1;
            let io = TokioIo::new(io);
            let _ = serve_http(&shared, http, io, shared.local, client, &mut stop).await;
        });
        Some(ours)
    }
}

/// What an in-process connection's requests go to: one version of the
/// app, and maybe one component of it rather than its routes.
#[derive(Clone)]
struct Chained {
    /// Weak: only a request in flight keeps the version alive.
    app: Weak<App>,
    component: Option<usize>,
    /// The `Host` of the client's request that led here, for the
    /// component's own requests to the app.
    authority: HeaderValue,
    /// How many requests led here from the client's (1 for the first).
    depth: u32,
    /// The deadline of the request that opened the connection: a request
    /// on it ends by then too, so that no chain outlives its client's
    /// request.
    deadline: Instant,
}

/// How much a chained connection buffers each way.
const CHAIN_BUFFER: usize = 64 * 1024;

/// How a shutdown went.
#[derive(Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished within the grace period.
    Drained,
    /// The grace period ran out with connections still open.
    CutOff,
}

impl Server {
    /// Binds the listening socket, to serve `app`.
    pub fn bind(
        app: App,
        config: ServeConfig,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Server> {
        Server::bind_slot(AppSlot::new(app), config, sink)
    }

    /// Binds the listening socket, to serve the app in `slot`, which may be
    /// replaced while serving.
    pub fn bind_slot(
        slot: AppSlot,
        config: ServeConfig,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Server> {
        Server::bind_target(Target::One(slot.0), config, sink)
    }

    /// Binds the listening socket, to serve the app `sites` finds for each
    /// request's host name.
    pub fn bind_sites(
        sites: Arc<dyn Sites>,
        config: ServeConfig,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Server> {
        Server::bind_target(Target::Many(sites), config, sink)
    }

    fn bind_target(
        target: Target,
        config: ServeConfig,
        sink: Arc<dyn EventSink>,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let tls = config
            .tls
            .as_ref()
            .map(|tls| Arc::new(ArcSwap::new(tls.server.clone())));
        let protocols = Protocols::new(&config);
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let ids = RequestIds::new();
        // Filters log from now on, including what they said while loading.
        if let Target::One(app) = &target {
            app.load().proxy.bind_log(&sink, ids.zero());
        }
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                target,
                config,
                sink,
                ids,
                local,
                tls,
                protocols,
                connections,
                buffering: Arc::new(Semaphore::new(BUFFERING_KIB)),
            }),
        })
    }

    /// Whether connections are served over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// A handle that replaces the certificate and key while the server
    /// runs; `None` without TLS.
    pub fn tls_slot(&self) -> Option<TlsSlot> {
        self.shared.tls.clone().map(TlsSlot)
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
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
            // The worker says when it is done on a channel, so this thread
            // waits for it without blocking its own runtime (which still
            // runs the caller's tasks, such as a second signal's handler).
            let (done_tx, done) = tokio::sync::oneshot::channel();
            let worker = std::thread::Builder::new()
                .name(format!("tern-worker-{n}"))
                .spawn(move || {
                    let served = (|| {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener)?;
                            Ok(accept_loop(shared, listener, stop).await)
                        })
                    })();
                    let _ = done_tx.send(served);
                })?;
            workers.push((worker, done));
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
        for (worker, done) in workers {
            let served: std::io::Result<Shutdown> = done.await.unwrap_or(Ok(Shutdown::CutOff));
            let _ = worker.join();
            if served? == Shutdown::CutOff {
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
    mut stop: watch::Receiver<bool>,
) -> Shutdown {
    // Each connection's task holds a sender; once all are dropped, every
    // connection has ended. Nothing is ever sent.
    let (open, mut ended) = mpsc::channel::<Infallible>(1);
    // What each connection watches; `stop` itself is borrowed by the loop.
    let stopping = stop.clone();
    loop {
        // At `--max-connections`, accept nothing until a connection ends:
        // new clients wait in the kernel's backlog, and idle keep-alive
        // connections end within the head timeout.
        let permit = tokio::select! {
            permit = shared.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let open = (open.clone(), permit);
                    let task = connection(shared.clone(), stream, peer, stopping.clone(), open);
                    tokio::spawn(task);
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
    drop(open);
    match tokio::time::timeout(shared.config.grace, ended.recv()).await {
        Ok(_) => Shutdown::Drained,
        Err(_) => Shutdown::CutOff,
    }
}

/// One client connection, in its own task: the TLS handshake (bounded by
/// the head timeout), then HTTP until either side ends it.
async fn connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    open: (mpsc::Sender<Infallible>, OwnedSemaphorePermit),
) {
    let io = ClientIo::new(stream, shared.config.write_timeout);
    let written = io.written();
    let protocols = &shared.protocols;
    let result = match &shared.tls {
        None => {
            serve_http(
                &shared,
                &protocols.either,
                TokioIo::new(refusals(&shared, io, peer)),
                peer,
                (false, written, None, Some(open.0.clone())),
                &mut stop,
            )
            .await
        }
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.load_full());
            let handshake = tokio::time::timeout(shared.config.header_timeout, acceptor.accept(io));
            let handshake = tokio::select! {
                done = handshake => done,
                () = stopped(&mut stop) => return,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                // A client that connects and goes away (a health check) is
                // no error; one that fails the handshake may be a
                // misconfiguration worth seeing.
                Ok(Err(err)) => {
                    if err.kind() != std::io::ErrorKind::UnexpectedEof {
                        let message = format!("TLS handshake with {peer} failed: {err}");
                        shared.sink.server_error(&message);
                    }
                    return;
                }
                // Not done within the head timeout: closed without a word,
                // as a head not sent in time is.
                Err(_) => return,
            };
            let http = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => &protocols.http2,
                Some(_) => &protocols.http1,
                None => &protocols.either,
            };
            serve_http(
                &shared,
                http,
                TokioIo::new(refusals(&shared, stream, peer)),
                peer,
                (true, written, None, Some(open.0.clone())),
                &mut stop,
            )
            .await
        }
    };
    // Client errors (resets, malformed heads, timeouts) end only their own
    // connection; hyper already answered what it could, and the refusals a
    // client caused get their log line here.
    if let Err(err) = result {
        log_connection_error(&shared, &*err, peer);
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `io` until the connection ends. Shuts it
/// down gracefully when the server stops, or when HTTP/2 (or a connection
/// that never sent a request) has had nothing open for the head timeout:
/// hyper closes idle HTTP/1 connections itself.
async fn serve_http<I>(
    shared: &Arc<Shared>,
    http: &Http,
    io: I,
    peer: SocketAddr,
    (tls, written, chained, open): (
        bool,
        Arc<AtomicU64>,
        Option<Chained>,
        Option<mpsc::Sender<Infallible>>,
    ),
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let client = Client {
        addr: peer,
        header: HeaderValue::from_str(&peer.to_string()).ok(),
        tls,
        written,
        chained,
        open,
    };
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let client = client.clone();
            // HTTP/2 only: HTTP/1.1 requests pay nothing for it.
            let stream = activity.request(req.version());
            async move {
                // Polled first inside the stream's task, where its cell is.
                let cell = stream.as_ref().and_then(|_| crate::h2::current());
                let response = handle(shared, req, client, cell.clone()).await;
                Ok::<_, Infallible>(match stream {
                    None => response,
                    Some(stream) => {
                        response.map(|body| Tracked::new(body, stream, cell).boxed_unsync())
                    }
                })
            }
        })
    };
    let mut conn = std::pin::pin!(http.serve_connection(io, service));
    let timeout = shared.config.header_timeout;
    let mut idle = std::pin::pin!(tokio::time::sleep(timeout));
    let (mut watching, mut closing) = (true, false);
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => return result,
            () = stopped(stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = idle.as_mut(), if watching => match activity.idle(timeout) {
                Idle::Http1 => watching = false,
                Idle::Busy(until) => idle.as_mut().reset(until),
                // Closing gracefully and still idle a head timeout later:
                // a client that never acknowledges the shutdown.
                Idle::Quiet if closing => return Ok(()),
                Idle::Quiet => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    idle.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
            },
        }
    }
}

/// The connection's socket as hyper gets it, watched for the 431s h2 sends
/// itself, which get their access-log line here.
fn refusals<T>(shared: &Arc<Shared>, io: T, peer: SocketAddr) -> Refusals<T> {
    let shared = shared.clone();
    Refusals::new(io, move || {
        let limit = shared.config.max_header_size;
        log_refusal(
            &shared,
            431,
            format!("request head larger than {limit}"),
            peer,
        );
    })
}

/// Resolves once the server is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only on the way out.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Logs what hyper refused before a request reached [`handle`] (an
/// HTTP/1 head too large, 431, or malformed, 400), and connections closed on
/// a client that stopped reading. A head not sent in time gets no response
/// and no line: idle keep-alive connections end the same way. (h2 answers
/// an HTTP/2 head too large with 431 itself, unseen by hyper: [`refusals`]
/// logs those.)
fn log_connection_error(
    shared: &Shared,
    err: &(dyn std::error::Error + 'static),
    peer: SocketAddr,
) {
    let parse = err.downcast_ref::<hyper::Error>().filter(|e| e.is_parse());
    let (status, what) = match parse {
        Some(err) if err.is_parse_too_large() => {
            let limit = shared.config.max_header_size;
            (431, format!("request head larger than {limit}"))
        }
        Some(err) => (400, format!("malformed request: {err}")),
        None => {
            if let Some(stalled) = stalled(err) {
                let message = format!("closed the connection from {peer}: {stalled}");
                shared.sink.server_error(&message);
            }
            return;
        }
    };
    log_refusal(shared, status, what, peer);
}

/// The access-log line of a request refused before it was read whole.
fn log_refusal(shared: &Shared, status: u16, what: String, peer: SocketAddr) {
    shared.sink.request(&AccessRecord {
        id: shared.ids.next(),
        method: "-",
        path: "-",
        status,
        aborted: false,
        duration: Duration::ZERO,
        component: None,
        error: Some(format!("{what} (client {peer})")),
    });
}

/// The write timeout of [`ClientIo`], if that is what ended a connection:
/// hyper wraps it once (HTTP/1 and HTTP/2 alike), TLS not at all.
fn stalled<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(err);
    while let Some(err) = next {
        let timed_out = err
            .downcast_ref::<std::io::Error>()
            .filter(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if timed_out.is_some() {
            return timed_out;
        }
        next = err.source();
    }
    None
}

/// The other end of a connection.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    /// The address as guests see it, formatted once per connection.
    header: Option<HeaderValue>,
    /// Whether the connection is TLS.
    tls: bool,
    /// Bytes written to the client so far ([`ClientIo`]).
    written: Arc<AtomicU64>,
    /// For a connection another component opened: what it goes to.
    chained: Option<Chained>,
    /// Keeps the worker's drain waiting (see [`accept_loop`]) while a
    /// request task of this connection runs: the task may outlive the
    /// connection, which closes once the response is written, by the log
    /// line it writes after. None for an in-process connection, which ends
    /// with the request that opened it.
    open: Option<mpsc::Sender<Infallible>>,
}

/// Forwards a request on a route to an upstream, under the operator's
/// request limits, and logs it.
async fn forward(
    shared: &Arc<Shared>,
    app: &Arc<App>,
    route: &crate::proxy::ProxyRoute,
    req: Request<Incoming>,
    client: &Client,
    (id, start): (RequestId, Instant),
    (method, uri): (&http::Method, &http::Uri),
) -> Response<ResponseBody> {
    let limits = shared.config.limits_for(&Default::default());
    let label = route.describe();
    let (response, error) = if content_length(&req).is_some_and(|len| len > limits.max_body.0) {
        let why = format!("request body larger than {}", limits.max_body);
        (response::error(413, id), Some(why))
    } else {
        let exceeded = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| LimitedBody::new(body, limits.max_body.0, exceeded));
        let fwd = crate::proxy::Forward {
            id,
            client: client.addr,
            local: shared.local,
            tls: client.tls,
            deadline: (start + limits.timeout).into(),
            app: &app.proxy,
            sink: &shared.sink,
        };
        crate::proxy::forward(route, req, fwd).await
    };
    let record = AccessRecord {
        id,
        method: method.as_str(),
        path: uri.path(),
        status: response.status().as_u16(),
        aborted: false,
        duration: start.elapsed(),
        component: Some(label),
        error,
    };
    finished(&shared.sink, &app.stats, &record);
    response
}

/// Counts a request in its app's stats and writes its access line.
fn finished(sink: &Arc<dyn EventSink>, stats: &AppStats, record: &AccessRecord<'_>) {
    stats.finish(record.status, record.duration);
    sink.request(record);
}

/// Routes one request, applies the limits checked before a guest runs,
/// and waits for the guest's response head.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client: Client,
    stream: Option<Arc<StreamCell>>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let id = shared.ids.next();
    let method = req.method().clone();
    // The request's own URI, shared rather than copied, for the log line.
    let uri = req.uri().clone();
    let record = |status: u16, component: Option<&str>, error: Option<String>| {
        shared.sink.request(&AccessRecord {
            id,
            method: method.as_str(),
            path: uri.path(),
            status,
            aborted: false,
            duration: start.elapsed(),
            component,
            error,
        });
    };
    let refuse = |status: u16, component: Option<&str>, error: Option<String>| {
        record(status, component, error);
        response::error(status, id)
    };
    let mut req = req;
    // hyper bounds the head only by its read buffer, which lets a head in
    // one segment through up to half as large again: count it exactly.
    let limit = shared.config.max_header_size;
    if head_size(&req) > limit.0 {
        return refuse(431, None, Some(format!("request head larger than {limit}")));
    }
    if let Err(why) = check_host(&mut req) {
        return refuse(400, None, Some(why.into()));
    }
    // This request stays on this version of the app, even if a new one is
    // swapped in while it runs.
    let app = match (&client.chained, &shared.target) {
        (Some(chained), _) => match chained.app.upgrade() {
            Some(app) => app,
            None => return refuse(503, None, Some("the app's version has ended".into())),
        },
        (None, Target::One(app)) => app.load_full(),
        (None, Target::Many(sites)) => match sites.app_for(&host_name(&req)).await {
            Found::App(app) => app,
            Found::Unknown => return refuse(404, None, None),
            Found::Failed(why) => return refuse(503, None, Some(why)),
        },
    };
    let in_flight = app.stats.begin();
    let stats = app.stats.clone();
    let finish = |status: u16, component: Option<&str>, error: Option<String>| {
        stats.finish(status, start.elapsed());
        record(status, component, error);
    };
    let refuse = |status: u16, component: Option<&str>, error: Option<String>| {
        finish(status, component, error);
        response::error(status, id)
    };
    // A request to a component of the app goes to it as if by a route
    // `/...`.
    let chained_target;
    let routed = match client.chained.as_ref().and_then(|c| c.component) {
        Some(index) => {
            chained_target = RouteTarget::Component(index);
            Some(crate::router::Match::whole_path(&chained_target))
        }
        None => app.router.route(req.uri().path()),
    };
    let Some(mut matched) = routed else {
        return refuse(404, None, None);
    };
    let (index, chain) = match matched.target {
        RouteTarget::Component(index) => (*index, None),
        RouteTarget::Filtered(index, chain) => (*index, Some(chain)),
        // Written in the manifest: sent at once, no guest, no permit.
        RouteTarget::Static(reply) => {
            finish(reply.status(), None, None);
            return reply.response();
        }
        RouteTarget::Upstream(route) => {
            // Boxed too: what stays inline is only the routing above.
            let logged = (&method, &uri);
            return Box::pin(forward(
                &shared,
                &app,
                route,
                req,
                &client,
                (id, start),
                logged,
            ))
            .await;
        }
    };
    // The guest's path, boxed: a request on a route to an upstream does
    // not carry its state, and every request's future stays small (hyper,
    // and each `.await` on the way, copy it whole).
    Box::pin(async {
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
        let deadline = match &client.chained {
            Some(chained) => (start + limits.timeout).min(chained.deadline),
            None => start + limits.timeout,
        };
        // A request to the app ends by its caller's deadline when that is
        // the sooner: its log says so, not this route's timeout.
        let inherited = deadline < start + limits.timeout;
        let the_deadline = move || {
            if inherited {
                "the deadline of the request that made this one".to_owned()
            } else {
                format!("the deadline of {:?}", limits.timeout)
            }
        };
        let body_exceeded = Arc::new(AtomicBool::new(false));
        let mut req = req.map(|body| LimitedBody::new(body, limits.max_body.0, body_exceeded.clone()));
        // The route's filters see the request before the guest (and before it
        // takes a permit or a slot): they may answer it themselves, change its
        // head, and filter its body as the guest reads it.
        let mut filtering = None;
        if let Some(chain) = chain {
            let fwd = crate::proxy::Forward {
                id,
                client: client.addr,
                local: shared.local,
                tls: client.tls,
                deadline: deadline.into(),
                app: &app.proxy,
                sink: &shared.sink,
            };
            // Boxed, as the response phase below: a route without filters
            // does not carry their state in every request's future.
            let filter = Box::pin(crate::proxy::filter_request(&chain.filters, req, &fwd));
            match tokio::time::timeout_at(deadline.into(), filter).await {
                Ok(Ok((filtered, new_path, chain))) => {
                    let (mut parts, body) = filtered.into_parts();
                    if let Some(path) = new_path {
                        let rerouted = with_path(&parts.uri, &path).and_then(|uri| {
                            let again = app.router.route(uri.path())?;
                            std::ptr::eq(again.target, matched.target).then_some((uri, again))
                        });
                        let Some((uri, again)) = rerouted else {
                            let error = format!(
                                "a filter rewrote the path to `{}`, which this route does not answer",
                                path.escape_debug()
                            );
                            return refuse(500, component, Some(error));
                        };
                        parts.uri = uri;
                        matched = again;
                    }
                    let body = LimitedBody::filtered(body, limits.max_body.0, body_exceeded.clone());
                    req = Request::from_parts(parts, body);
                    filtering = Some(chain);
                }
                Ok(Err((response, error))) => {
                    finish(response.status().as_u16(), component, error);
                    return response;
                }
                Err(_) => {
                    let error = format!(
                        "the route's filters did not let the request on within {}",
                        the_deadline()
                    );
                    return refuse(504, component, Some(error));
                }
            }
        }
        let (split, route, params) = (
            matched.split,
            matched.header.cloned(),
            matched.params.cloned(),
        );
        // An executor that needs the whole body before its guest starts (WAGI)
        // gets it here: under the request's deadline, and before the request
        // takes a concurrency permit or an instance slot, so clients trickling
        // bodies hold neither.
        let mut buffering: Option<OwnedSemaphorePermit> = None;
        let buffered = if served.executor.buffers_body() {
            let mut reserve = |kib: u32| match shared.buffering.clone().try_acquire_many_owned(kib) {
                Ok(more) => {
                    match &mut buffering {
                        Some(held) => held.merge(more),
                        None => buffering = Some(more),
                    }
                    true
                }
                Err(_) => false,
            };
            let read = req.body_mut().read_all(&mut reserve);
            match tokio::time::timeout_at(deadline.into(), read).await {
                Ok(Ok(Some(body))) => Some(body),
                Ok(Ok(None)) => {
                    let error = format!(
                        "request bodies buffered for WAGI guests take {} MiB already",
                        BUFFERING_KIB >> 10
                    );
                    return refuse(503, component, Some(error));
                }
                Ok(Err(_)) if body_exceeded.load(Ordering::Acquire) => {
                    let error = format!("request body larger than {}", limits.max_body);
                    return refuse(413, component, Some(error));
                }
                Ok(Err(err)) => {
                    // The route's filters failing on the body are Tern's 500,
                    // not the client's 400.
                    if let Some(why) = crate::body::filter_failure(&err) {
                        return refuse(500, component, Some(why.to_string()));
                    }
                    let error = format!("reading the request body: {err}");
                    return refuse(400, component, Some(error));
                }
                Err(_) => {
                    let error = format!(
                        "request body not received within {}",
                        the_deadline()
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
        let mut model_permits = Vec::with_capacity(served.model_permits.len());
        for (name, permits) in &served.model_permits {
            match permits.clone().try_acquire_owned() {
                Ok(permit) => model_permits.push(permit),
                Err(_) => {
                    let error =
                        format!("model `{name}` is busy: every inference it allows at once is running");
                    return refuse(503, component, Some(error));
                }
            }
        }

        if !req.headers().contains_key(http::header::HOST) {
            // HTTP/1.0 clients may omit it, and HTTP/2 clients may send neither
            // it nor `:authority`; guests expect an authority.
            if let Ok(host) = HeaderValue::from_str(&shared.local.to_string()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        let origin = self_origin(&shared, &app, served, &client, &req, deadline);
        let ctx = RequestCtx {
            id,
            route,
            split,
            params,
            client: client.addr,
            client_header: client.header,
            tls: client.tls,
            spin: app.spin,
            local: shared.local,
            deadline,
            body_exceeded,
            origin,
        };
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
        // With filters, the status the client gets is theirs to change: the
        // task logs it once the response phase has run, which sends it.
        let (filtering, filtered_status) = match filtering {
            Some(chain) => {
                let (answered, status) = tokio::sync::oneshot::channel::<(u16, Option<String>)>();
                (Some((chain, answered)), Some(status))
            }
            None => (None, None),
        };
        let delivery = match stream {
            Some(stream) => {
                let (sink, peer) = (shared.sink.clone(), client.addr);
                stream.on_stall(move |timeout| {
                    let message = format!(
                        "reset an HTTP/2 stream from {peer} (request {id}): \
                         the client read nothing for {timeout:?}"
                    );
                    sink.server_error(&message);
                });
                Delivery::Stream(stream)
            }
            None => Delivery::Connection {
                before: client.written.load(Ordering::Relaxed),
                written: client.written,
            },
        };
        let task = {
            let (shared, app) = (shared.clone(), app.clone());
            let (method, uri) = (method.clone(), uri.clone());
            // The request's own copy of the sender, moved: nothing else
            // of this request needs it.
            let open = client.open;
            tokio::spawn(async move {
                let served = &app.components[index];
                let result = served.executor.run(&served.grants, exchange, &state).await;
                drop((permit, slot, in_flight, model_permits, buffering));
                let (mut status, mut error) = match &result {
                    Ok(()) => (state.sent().unwrap_or(200), None),
                    Err(Failure::Deadline) if inherited => (
                        state.sent().unwrap_or(504),
                        Some(format!("{} exceeded", the_deadline())),
                    ),
                    Err(failure) => (
                        state.sent().unwrap_or(failure.status()),
                        Some(failure.describe(&served.grants.limits)),
                    ),
                };
                if let Some(filtered) = filtered_status
                    && let Ok((answered, why)) = filtered.await
                {
                    // The filters' reason first: when they replaced the
                    // guest's response, what the guest did next is beside it.
                    status = answered;
                    error = why.or(error);
                }
                // A head the guest set before it failed may never have reached
                // the client: once its body has ended, did any of it go out?
                let aborted = if result.is_err() && state.sent().is_some() {
                    state.failed.ended().await;
                    !delivery.sent_any()
                } else {
                    false
                };
                let record = AccessRecord {
                    id,
                    method: method.as_str(),
                    path: uri.path(),
                    status,
                    aborted,
                    duration: start.elapsed(),
                    component: Some(&served.grants.id),
                    error,
                };
                finished(&shared.sink, &app.stats, &record);
                drop(open);
                result
            })
        };
        match head.await {
            Ok(response) => match filtering {
                None => response,
                Some((chain, answered)) => {
                    let filter = Box::pin(crate::proxy::filter_response(chain, response, id));
                    let (response, error) = match tokio::time::timeout_at(deadline.into(), filter).await
                    {
                        Ok(answer) => answer,
                        Err(_) => {
                            let error = format!(
                                "the route's filters did not let the response on within {}",
                                the_deadline()
                            );
                            (response::error(504, id), Some(error))
                        }
                    };
                    let _ = answered.send((response.status().as_u16(), error));
                    response
                }
            },
            Err(_) => {
                drop(filtering);
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
    })
    .await
}

/// Where `served`'s requests to its own app go, if it may send any: this
/// server and app version, under the `Host` of the client's request (the
/// one that led here, for a request from another component).
fn self_origin<B>(
    shared: &Arc<Shared>,
    app: &Arc<App>,
    served: &crate::app::Served,
    client: &Client,
    req: &Request<B>,
    deadline: Instant,
) -> Option<SelfOrigin> {
    if !served.grants.outbound.reaches_app() {
        return None;
    }
    let (authority, depth) = match &client.chained {
        Some(chained) => (chained.authority.clone(), chained.depth),
        None => (req.headers().get(http::header::HOST)?.clone(), 0),
    };
    let chain = Chain {
        shared: Arc::downgrade(shared),
        app: Arc::downgrade(app),
    };
    Some(SelfOrigin {
        authority,
        tls: client.tls,
        chain,
        depth,
        deadline,
    })
}

/// `uri` with another path and query, as a filter set them.
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// How much of a response reached the client.
enum Delivery {
    /// HTTP/1.1: the connection's byte count, and what it was before.
    Connection {
        written: Arc<AtomicU64>,
        before: u64,
    },
    /// HTTP/2: the body bytes the stream handed to the connection. (Its
    /// head may have gone out before a reset; a client sees that stream
    /// fail, and never a byte of the body.)
    Stream(Arc<StreamCell>),
}

impl Delivery {
    fn sent_any(&self) -> bool {
        match self {
            Delivery::Connection { written, before } => written.load(Ordering::Relaxed) != *before,
            Delivery::Stream(stream) => stream.sent_any(),
        }
    }
}

/// Holds the request's `Host` to RFC 9112 (3.2): exactly one on HTTP/1.1,
/// a valid authority, and for an absolute-form target the target's own
/// authority, so that both executors see the same host. An HTTP/2 request's
/// `:authority` is in its URI, and is its host the same way (RFC 9113 8.3.1);
/// HTTP/2 needs no `Host` header.
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

/// The host a request is for, lowercase and without its port: from `Host`,
/// which [`check_host`] has made the URI's authority when there is one.
fn host_name(req: &Request<Incoming>) -> Cow<'_, str> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = match host.rfind(':') {
        // Not inside an IPv6 literal's brackets.
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The size of a request's head as sent on HTTP/1.1: request line, header
/// lines, blank line.
fn head_size(req: &Request<Incoming>) -> u64 {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    let line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    (line + fields + 2) as u64
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
