//! One request's journey through a component, whichever executor runs it:
//! what the executor is given, how it hands back a response head, and how
//! the outcome becomes a status and a log line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::HeaderValue;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Body;
use tokio::sync::oneshot;

use crate::body::{BoxError, FailureFlag, LimitedBody, ResponseBody};
use crate::events::{EventSink, RequestId};
use crate::instance::{Failure, Grants};
use crate::outbound::SelfOrigin;
use crate::redis_trigger::RedisExecutor;
use crate::router::PathParam;
use crate::wagi::WagiExecutor;
use crate::warm::WarmExecutor;
use crate::wasi_http::WasiHttpExecutor;
use crate::wasi_http3::WasiHttp3Executor;

/// How a component is run.
pub(crate) enum Executor {
    /// A `wasi:http/incoming-handler` (WASI 0.2) component.
    WasiHttp(WasiHttpExecutor),
    /// A `wasi:http/handler` (WASI 0.3) component.
    WasiHttp3(WasiHttp3Executor),
    /// A wasi-http component (either version) with warm instances.
    Warm(WarmExecutor),
    /// A WASI preview 1 program run CGI-style.
    Wagi(WagiExecutor),
    /// A component handling Redis messages (`spin:redis/inbound-redis`);
    /// it has no route, so no request reaches it.
    Redis(RedisExecutor),
}

/// What the router learned about a request.
pub(crate) struct RequestCtx {
    pub(crate) id: RequestId,
    /// The matched route as written in the manifest, as a header value.
    pub(crate) route: Option<HeaderValue>,
    /// Where the path splits: before, the route's fixed part (the whole path
    /// for an exact route); after, the rest of the path.
    pub(crate) split: usize,
    /// The route's `:name` segments (Spin's), whose values are in the path;
    /// `None` for a route without.
    pub(crate) params: Option<Arc<[PathParam]>>,
    pub(crate) client: SocketAddr,
    /// The client's address as a header value, made once per connection.
    pub(crate) client_header: Option<HeaderValue>,
    /// Whether the request came over TLS (`https`).
    pub(crate) tls: bool,
    /// Whether the app is a Spin app, whose guests also get Spin's headers.
    pub(crate) spin: bool,
    pub(crate) local: SocketAddr,
    pub(crate) deadline: Instant,
    /// Set when the client's body went past the size limit.
    pub(crate) body_exceeded: Arc<AtomicBool>,
    /// Where the component's requests to its own app go, if it may send
    /// any.
    pub(crate) origin: Option<SelfOrigin>,
}

impl RequestCtx {
    /// Splits `path`, the request's path, into the route's fixed part and
    /// the rest (CGI's `SCRIPT_NAME` and `PATH_INFO`).
    pub(crate) fn split_path<'a>(&self, path: &'a str) -> (&'a str, &'a str) {
        path.split_at_checked(self.split).unwrap_or((path, ""))
    }

    /// The route's `:name` segments with their values in `path`, the
    /// request's path.
    pub(crate) fn path_matches<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a PathParam, &'a str)> {
        self.params
            .iter()
            .flat_map(|params| params.iter())
            .map(move |param| (param, param.value(path)))
    }
}

/// Everything an executor gets for one request.
pub(crate) struct Exchange {
    pub(crate) request: http::Request<LimitedBody>,
    /// The whole body, already read, for executors that
    /// [buffer it](Executor::buffers_body); the request's body is then spent.
    pub(crate) buffered: Option<bytes::Bytes>,
    pub(crate) reply: Reply,
    pub(crate) ctx: RequestCtx,
    pub(crate) sink: Arc<dyn EventSink>,
}

/// The way back to the client for a response head. Dropping it unused
/// means "no response": the server then answers from the [`Failure`].
pub(crate) struct Reply {
    tx: oneshot::Sender<Response<ResponseBody>>,
    state: Arc<ReplyState>,
}

/// What the request's task can still see after the reply was moved away.
#[derive(Default)]
pub(crate) struct ReplyState {
    status: AtomicU16,
    pub(crate) failed: FailureFlag,
    refused: Mutex<Option<String>>,
}

impl Reply {
    pub(crate) fn new() -> (Self, oneshot::Receiver<Response<ResponseBody>>) {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(ReplyState::default());
        (Reply { tx, state }, rx)
    }

    pub(crate) fn state(&self) -> Arc<ReplyState> {
        self.state.clone()
    }

    /// Sends the head; the body streams on.
    pub(crate) fn send<B>(self, response: Response<B>)
    where
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.state
            .status
            .store(response.status().as_u16(), Ordering::Release);
        let response = response.map(|body| body.map_err(Into::into).boxed_unsync());
        // The client may be gone; the guest finishes regardless.
        let _ = self.tx.send(response);
    }

    /// The guest answered with an error instead of a response.
    pub(crate) fn refuse(self, message: String) {
        *self.state.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }
}

impl ReplyState {
    /// The status already sent, if any.
    pub(crate) fn sent(&self) -> Option<u16> {
        match self.status.load(Ordering::Acquire) {
            0 => None,
            status => Some(status),
        }
    }
}

impl Executor {
    /// Runs one request to the end (including streaming the body) and
    /// returns how it went. The head, if any, went out through the reply.
    pub(crate) async fn run(
        &self,
        grants: &Arc<Grants>,
        exchange: Exchange,
        state: &ReplyState,
    ) -> Result<(), Failure> {
        let result = match self {
            Executor::Warm(exec) => exec.run(grants, exchange).await,
            Executor::WasiHttp(exec) => exec.run(grants, exchange).await,
            Executor::WasiHttp3(exec) => exec.run(grants, exchange).await,
            Executor::Wagi(exec) => exec.run(grants, exchange).await,
            Executor::Redis(_) => Err(Failure::Host(
                "the component handles Redis messages, not HTTP requests".into(),
            )),
        };
        match result {
            Ok(()) if state.sent().is_none() => {
                let refused = state
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                Err(refused.map_or(Failure::NoResponse, Failure::Host))
            }
            other => other,
        }
    }

    /// Whether the server reads the whole request body before the guest
    /// starts (a CGI program's stdin is all there when it runs).
    pub(crate) fn buffers_body(&self) -> bool {
        matches!(self, Executor::Wagi(_))
    }

    /// Whether the component answers something other than HTTP requests
    /// (a Redis trigger's messages).
    pub(crate) fn is_trigger(&self) -> bool {
        matches!(self, Executor::Redis(_))
    }

    /// Which executor this is, for the route listing: as manifests name
    /// it, with the WASI version when it is 0.3 and `warm` for warm
    /// instances.
    pub(crate) fn describe(&self) -> String {
        match self {
            Executor::WasiHttp(_) => "wasi-http".into(),
            Executor::WasiHttp3(_) => "wasi-http 0.3".into(),
            Executor::Warm(warm) if warm.p3() => "wasi-http 0.3, warm".into(),
            Executor::Warm(_) => "wasi-http, warm".into(),
            Executor::Wagi(_) => "wagi".into(),
            Executor::Redis(_) => "redis".into(),
        }
    }

    /// Which executor this is, as manifests name it.
    pub(crate) fn kind(&self) -> tern_manifest::Executor {
        match self {
            Executor::WasiHttp(_)
            | Executor::WasiHttp3(_)
            | Executor::Warm(_)
            | Executor::Redis(_) => tern_manifest::Executor::WasiHttp,
            Executor::Wagi(_) => tern_manifest::Executor::Wagi,
        }
    }
}
