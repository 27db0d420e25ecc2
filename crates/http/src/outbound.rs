//! Outbound HTTP for guests (`wasi:http/outgoing-handler`), through the
//! component's `allowed_outbound_hosts`.
//!
//! Checked before any connection is attempted: the scheme, host and port
//! against the allowlist (a request to anything else is `HttpRequestDenied`),
//! then every address the host resolves to. Loopback, private, link-local
//! (169.254.169.254), unspecified and other non-public addresses are refused
//! (`DestinationIpProhibited`) unless the matching entry names that host
//! itself rather than a wildcard. Tern connects to an address it checked,
//! never resolving twice, so a name cannot change its answer in between.
//! IP literals in other spellings (`2130706433`, `0x7f.1`) and authorities
//! with user info are refused; the `Host` header is always the checked
//! authority; redirects are handed to the guest, never followed. HTTPS
//! trusts the web PKI roots, and the authorities of the operator's
//! `[outbound] ca_file`.
//!
//! A request to the app itself (a relative URL, or the host `self.alt` as
//! Spin spells it) needs `http://self` in the allowlist. It goes in process
//! (no socket, no TLS, no connection slot) to the same version of the app,
//! under the `Host` the client sent and as `https` if the client's request
//! was, and through the app's routes, filters, limits and access log as a
//! client's request does. A request to `COMPONENT.spin.internal` (Spin's
//! service chaining) needs an entry naming it (or `*.spin.internal`) and
//! goes the same way to that component, whether or not it has a route:
//! not through a route, so no route's filters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tern_manifest::{COMPONENTS_DOMAIN, OutboundHost, RequestHost, default_port};
use tern_runtime::outbound::{PrivateReach, Unreachable, allowed_by, resolve_checked};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::body::FailureFlag;
use crate::events::{EventSink, RequestId};
use crate::server::Chain;

/// What one component may reach, resolved once at start.
pub(crate) struct OutboundPolicy {
    pub(crate) allowed: Vec<OutboundHost>,
    /// The non-public addresses requests may reach.
    pub(crate) private: PrivateReach,
    pub(crate) connect_timeout: Duration,
    pub(crate) first_byte_timeout: Duration,
    pub(crate) max_requests: u32,
    /// Whom HTTPS trusts, from [`tls_config`].
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

/// The outbound side of one instance: its policy and how many requests it
/// has sent.
pub(crate) struct Outbound {
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) sent: u32,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) component: Arc<str>,
    pub(crate) request: RequestId,
    /// Where a request to the app itself goes, while the instance answers
    /// an HTTP request and the policy allows it; else why it cannot go.
    pub(crate) origin: Result<SelfOrigin, &'static str>,
    /// A warm instance's requests whose responses have not ended, each
    /// told if the instance fails, with its origin: the instance's
    /// `origin` is theirs together ([`Outbound::track`]).
    pub(crate) in_flight: Vec<(FailureFlag, Option<SelfOrigin>)>,
}

impl Outbound {
    /// Counts a warm instance's new request among those in flight.
    pub(crate) fn track(&mut self, failed: FailureFlag, origin: Option<SelfOrigin>) {
        self.in_flight.push((failed, origin));
        self.merge_origins();
    }

    /// Forgets the requests whose responses have ended, and gives the
    /// instance the origin of the rest together: requests of one client
    /// share the deepest nesting and the latest deadline among them (so no
    /// request's calls get a depth below its own); with requests of
    /// different clients at once, none may call the app, as which of them
    /// is asking cannot be told. With none left (work after the last
    /// response), the origin stays as it was.
    fn merge_origins(&mut self) {
        self.in_flight.retain(|(failed, _)| !failed.is_over());
        let mut origins = self.in_flight.iter().map(|(_, origin)| origin.as_ref());
        let Some(first) = origins.next() else {
            return;
        };
        self.origin = first.ok_or(NO_ORIGIN).and_then(|first| {
            origins.try_fold(first.clone(), |merged, origin| {
                let origin = origin.ok_or(NO_ORIGIN)?;
                if !merged.same_client(origin) {
                    return Err(MIXED_ORIGINS);
                }
                Ok(SelfOrigin {
                    depth: merged.depth.max(origin.depth),
                    deadline: merged.deadline.max(origin.deadline),
                    ..merged
                })
            })
        });
    }
}

/// Why an instance has no [`SelfOrigin`]: it answers no HTTP request (a
/// Redis trigger, `tern run`), or its component may not call its app.
pub(crate) const NO_ORIGIN: &str =
    "a request to the app itself is only possible while answering an HTTP request";

/// Why a warm instance answering requests of different clients at once has
/// no [`SelfOrigin`]: which of them is asking cannot be told.
pub(crate) const MIXED_ORIGINS: &str = "a request to the app itself is refused while the instance answers requests for different hosts at once";

/// The HTTP request an instance answers, as its requests to its own app
/// go: to the same server and app version, as the same client.
#[derive(Clone)]
pub(crate) struct SelfOrigin {
    /// The `Host` the client sent.
    pub(crate) authority: HeaderValue,
    /// Whether the client's request came over TLS.
    pub(crate) tls: bool,
    /// The server and app version the request is on.
    pub(crate) chain: Chain,
    /// How many requests to the app led to this one: 0 for a client's.
    pub(crate) depth: u32,
    /// The request's deadline, which the requests it makes inherit.
    pub(crate) deadline: std::time::Instant,
}

/// How deep requests to the app itself and chained requests may nest: a
/// component calling itself without end is refused there, not left to
/// fill every slot.
pub(crate) const MAX_DEPTH: u32 = 32;

impl SelfOrigin {
    /// This origin, if a request from it may nest one level deeper.
    fn nesting(&self) -> Result<&SelfOrigin, (Error, String)> {
        if self.depth >= MAX_DEPTH {
            let why = format!(
                "requests to the app itself nest more than {MAX_DEPTH} deep (does a component call itself without end?)"
            );
            return Err((Error::HttpRequestDenied, why));
        }
        Ok(self)
    }

    /// Whether `other` stands for the same client as this one: the same
    /// `Host`, over TLS or not alike.
    pub(crate) fn same_client(&self, other: &SelfOrigin) -> bool {
        self.authority == other.authority && self.tls == other.tls
    }
}

/// Whether `uri`'s host is in the domain of the app's components
/// (`.spin.internal`, with or without a final dot), and if so the component
/// it names, when it is one label (`COMPONENT.spin.internal`). No name in
/// that domain ever leaves the process.
fn component_named(uri: &Uri) -> Option<Option<String>> {
    let host = uri.host()?.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host == &COMPONENTS_DOMAIN[1..] {
        return Some(None);
    }
    let component = host.strip_suffix(COMPONENTS_DOMAIN)?;
    Some((!component.is_empty() && !component.contains('.')).then(|| component.to_owned()))
}

/// Whether `uri` is a request to the app itself: a relative URL (which
/// [`crate::relative`] gives the host `self.alt`, and the Spin SDK 5 the
/// authority `:80` or `:443`, a port without a host), or `self.alt` or
/// `self` written out.
fn is_app_itself(uri: &Uri) -> bool {
    uri.host().is_some_and(|host| {
        host.is_empty()
            || host.eq_ignore_ascii_case("self.alt")
            || host.eq_ignore_ascii_case("self")
    })
}

/// Outbound HTTP for a program `tern run` runs: requests to `allowed`
/// only (`allowed_outbound_hosts` syntax), with every check `tern serve`
/// makes (addresses, user info, redirects handed back, the web PKI roots),
/// the serving defaults' timeouts, and no count limit. A refusal is told
/// to `sink` as a note.
pub fn run_outbound(
    allowed: Vec<OutboundHost>,
    sink: Arc<dyn EventSink>,
) -> Result<impl Fn() -> tern_runtime::HttpHooks + Sync, String> {
    let policy = Arc::new(OutboundPolicy {
        allowed,
        private: PrivateReach::Named,
        connect_timeout: crate::ServeConfig::DEFAULT_OUTBOUND_CONNECT_TIMEOUT,
        first_byte_timeout: crate::ServeConfig::DEFAULT_OUTBOUND_TIMEOUT,
        max_requests: u32::MAX,
        tls: tls_config(None)?,
    });
    let request = crate::events::RequestIds::new().next();
    Ok(move || {
        Box::new(Outbound {
            policy: policy.clone(),
            sent: 0,
            sink: sink.clone(),
            component: "run".into(),
            request,
            origin: Err(NO_ORIGIN),
            in_flight: Vec::new(),
        }) as tern_runtime::HttpHooks
    })
}

/// Sends one request to a host `allowed` lets it reach, with every check a
/// guest's `wasi:http` request gets (addresses, user info, the web PKI
/// roots), for hosts that speak another ABI (the Extism plugin ABI's
/// `http_request`). Reads at most `max_body` bytes of the answer within
/// `timeout`. A refusal or failure is one line naming why.
pub async fn fetch_checked(
    allowed: &[OutboundHost],
    request: http::Request<bytes::Bytes>,
    max_body: u64,
    timeout: Duration,
) -> Result<http::Response<bytes::Bytes>, String> {
    let policy = OutboundPolicy {
        allowed: allowed.to_vec(),
        private: PrivateReach::Named,
        connect_timeout: timeout.min(crate::ServeConfig::DEFAULT_OUTBOUND_CONNECT_TIMEOUT),
        first_byte_timeout: timeout,
        max_requests: u32::MAX,
        tls: tls_config(None)?,
    };
    let uri = request.uri().to_string();
    let target = policy
        .check(request.uri())
        .map_err(|(_, why)| format!("request to {uri} denied: {why}"))?;
    let request = request.map(|body| {
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync()
    });
    let exchange = async {
        let (response, io) = send(
            target,
            request,
            policy.tls.clone(),
            policy.connect_timeout,
            timeout,
        )
        .await
        .map_err(|e| format!("request to {uri} failed: {e}"))?;
        tokio::spawn(Box::into_pin(io));
        let (parts, body) = response.into_parts();
        let limited =
            http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
        let body = limited
            .collect()
            .await
            .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => format!("the response from {uri} is larger than {max_body} bytes"),
                Err(e) => format!("reading the response from {uri}: {e}"),
            })?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("request to {uri} timed out"))?
}

/// A request that passed the allowlist, before its addresses are checked.
struct Target {
    scheme: &'static str,
    host: RequestHost,
    port: u16,
    /// Whether a matching entry names this very host.
    explicit: bool,
    /// The non-public addresses it may reach.
    private: PrivateReach,
    authority: String,
    via: Via,
}

/// How a request reaches its server.
enum Via {
    /// Over the network, to the addresses its host resolves to.
    Lookup,
    /// In process, to the app the request came to: through its routes, or
    /// to the component named.
    App(SelfOrigin, Option<String>),
}

type Response = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for Outbound {
    /// The same headers as the trait's default, without the shared closure
    /// the default builds on every call (once per request header and per
    /// header a guest sets).
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    /// Smaller than wasmtime's 1 MiB, which let a guest park 2 MiB on the
    /// host per body it never sent (see `instance::MAX_ENTRY_BYTES`).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::instance::OUTGOING_BODY_CHUNK
    }

    /// The same for WASI 0.3: what a guest's body stream hands the host at
    /// once (an outgoing request's or its response's), 1 MiB in wasmtime.
    fn p3_outgoing_body_chunk_size(&mut self) -> usize {
        crate::instance::OUTGOING_BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Response, Error>> + Send> {
        self.sent += 1;
        self.merge_origins();
        let checked = if self.sent > self.policy.max_requests {
            Err((
                Error::ConnectionLimitReached,
                format!(
                    "more than {} outbound requests in one request",
                    self.policy.max_requests
                ),
            ))
        } else if is_app_itself(request.uri()) {
            self.policy.check_app_itself(self.origin.as_ref())
        } else if let Some(named) = component_named(request.uri()) {
            match named {
                Some(component) => {
                    self.policy
                        .check_component(request.uri(), component, self.origin.as_ref())
                }
                None => Err((
                    Error::HttpRequestDenied,
                    format!(
                        "`{}` names no component: one is reached as COMPONENT{COMPONENTS_DOMAIN}",
                        request.uri().host().unwrap_or_default()
                    ),
                )),
            }
        } else {
            self.policy.check(request.uri())
        };
        let target = match checked {
            Ok(target) => target,
            Err((error, why)) => {
                let message = format!("outbound request denied: {why}");
                self.sink.note(&self.component, self.request, &message);
                return Box::new(async move { Err(error) });
            }
        };
        let connect_timeout = bounded(
            options.and_then(|o| o.connect_timeout),
            self.policy.connect_timeout,
        );
        let first_byte = bounded(
            options.and_then(|o| o.first_byte_timeout),
            self.policy.first_byte_timeout,
        );
        let sink = self.sink.clone();
        let (component, id) = (self.component.clone(), self.request);
        let tls = self.policy.tls.clone();
        Box::new(async move {
            let result = send(target, request, tls, connect_timeout, first_byte).await;
            let problem = match &result {
                Err(Error::DestinationIpProhibited) => Some(
                    "outbound request denied: the host resolves to a non-public address and the allowlist does not name it",
                ),
                Err(Error::DestinationNotFound) => {
                    Some("outbound request failed: the app has no HTTP component by that name")
                }
                _ => None,
            };
            if let Some(message) = problem {
                sink.note(&component, id, message);
            }
            result
        })
    }
}

/// The guest may ask for a shorter timeout, never a longer one.
fn bounded(asked: Option<Duration>, limit: Duration) -> Duration {
    asked.map_or(limit, |asked| asked.min(limit))
}

impl OutboundPolicy {
    /// Whether the allowlist has `http://self` or names components: the
    /// component may send requests to its own app.
    pub(crate) fn reaches_app(&self) -> bool {
        self.allowed
            .iter()
            .any(|rule| rule.is_app_itself() || rule.names_components())
    }

    fn check_component(
        &self,
        uri: &Uri,
        component: String,
        origin: Result<&SelfOrigin, &&'static str>,
    ) -> Result<Target, (Error, String)> {
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            _ => "http",
        };
        let host = RequestHost::Name(format!("{component}{COMPONENTS_DOMAIN}"));
        let port = uri.port_u16().unwrap_or(default_port(scheme));
        let named = self
            .allowed
            .iter()
            .any(|rule| rule.names_components() && rule.allows(scheme, &host, port));
        if !named {
            let why = format!(
                "{scheme}://{host}:{port} is not in allowed_outbound_hosts (a component of the app is reached with \"http://{host}\" or \"http://*{COMPONENTS_DOMAIN}\")"
            );
            return Err((Error::HttpRequestDenied, why));
        }
        let origin = origin.map_err(|why| (Error::HttpRequestDenied, why.to_string()))?;
        let origin = origin.nesting()?;
        Ok(Target {
            scheme,
            authority: format!("{host}"),
            host,
            port,
            explicit: true,
            private: PrivateReach::Named,
            via: Via::App(origin.clone(), Some(component)),
        })
    }

    fn check_app_itself(
        &self,
        origin: Result<&SelfOrigin, &&'static str>,
    ) -> Result<Target, (Error, String)> {
        if !self.allowed.iter().any(OutboundHost::is_app_itself) {
            let why = "a request to the app itself (a relative URL) needs \"http://self\" in allowed_outbound_hosts";
            return Err((Error::HttpRequestDenied, why.to_owned()));
        }
        let origin = origin.map_err(|why| (Error::HttpRequestDenied, why.to_string()))?;
        let origin = origin.nesting()?;
        let authority = origin.authority.to_str().map_err(|_| {
            let why = "the request's Host is not text".to_owned();
            (Error::HttpRequestUriInvalid, why)
        })?;
        let scheme = if origin.tls { "https" } else { "http" };
        Ok(Target {
            scheme,
            // Neither looked up nor checked: the request stays in process.
            host: RequestHost::Name(crate::relative::SELF_AUTHORITY.to_owned()),
            port: default_port(scheme),
            explicit: true,
            private: PrivateReach::Named,
            authority: authority.to_owned(),
            via: Via::App(origin.clone(), None),
        })
    }

    fn check(&self, uri: &Uri) -> Result<Target, (Error, String)> {
        let denied = |why: String| (Error::HttpRequestDenied, why);
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(denied("only http and https are supported".to_owned())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| (Error::HttpRequestUriInvalid, "no authority".to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(denied("user info in the authority".to_owned()));
        }
        let host = RequestHost::parse(authority.host()).map_err(denied)?;
        let port = authority.port_u16().unwrap_or(default_port(scheme));
        let explicit = allowed_by(&self.allowed, scheme, &host, port).map_err(denied)?;
        Ok(Target {
            scheme,
            explicit,
            private: self.private.clone(),
            authority: authority.as_str().to_owned(),
            host,
            port,
            via: Via::Lookup,
        })
    }
}

async fn send(
    target: Target,
    mut request: http::Request<WasiBody>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    first_byte: Duration,
) -> Result<Response, Error> {
    // Origin form on the wire, and the Host header is the checked authority.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let host =
        HeaderValue::from_str(&target.authority).map_err(|_| Error::HttpRequestUriInvalid)?;
    request.headers_mut().insert(HOST, host);

    let io = open(target, tls, connect_timeout).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    let mut conn = Box::pin(conn);
    let send = tokio::time::timeout(first_byte, sender.send_request(request));
    tokio::pin!(send);
    // Drive the connection while waiting for the head; a server that
    // answers and closes at once ends the connection first.
    let mut conn_done = false;
    let response = tokio::select! {
        response = &mut send => response,
        ended = &mut conn => {
            ended.map_err(Error::from)?;
            conn_done = true;
            send.await
        }
    };
    let response = response
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?
        .map(|body| body.map_err(Error::from).boxed_unsync());
    let io = async move {
        if !conn_done {
            conn.await.map_err(Error::from)?;
        }
        Ok(())
    };
    Ok((response, Box::new(io)))
}

/// A connection to `target`'s server: over TLS for `https`, except to the
/// app itself, which is in process.
async fn open(
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Box<dyn Io>, Error> {
    let addresses = match target.via {
        Via::App(origin, component) => {
            let io = origin
                .chain
                .connect(component.as_deref(), &origin)
                .ok_or(Error::DestinationNotFound)?;
            return Ok(Box::new(io));
        }
        Via::Lookup => resolve(&target, timeout).await?,
    };
    let stream = connect(&addresses, timeout).await?;
    if target.scheme != "https" {
        return Ok(Box::new(stream));
    }
    let name = match &target.host {
        RequestHost::Name(name) => ServerName::try_from(name.clone()),
        RequestHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
    }
    .map_err(|_| Error::TlsProtocolError)?;
    let tls = TlsConnector::from(tls).connect(name, stream);
    let tls = tokio::time::timeout(timeout, tls)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)?;
    Ok(Box::new(tls))
}

/// The addresses to try (see [`resolve_checked`]), as wasi-http's errors.
async fn resolve(target: &Target, timeout: Duration) -> Result<Vec<SocketAddr>, Error> {
    let (host, port) = (&target.host, target.port);
    resolve_checked(host, port, target.explicit, &target.private, timeout)
        .await
        .map_err(|unreachable| match unreachable {
            Unreachable::DnsTimeout => Error::DnsTimeout,
            Unreachable::DnsFailed => Error::DnsError {
                rcode: None,
                info_code: None,
            },
            Unreachable::Prohibited | Unreachable::NotListed => Error::DestinationIpProhibited,
        })
}

async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationUnavailable;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// A connection, in the clear or over TLS.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Whom outbound HTTPS trusts: the web PKI roots, and the certificate
/// authorities in `ca_file` (PEM) when the operator names one. Without one
/// the configuration is built once per process; with one, on each load of
/// the app, so a reload picks up a changed file.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    static PUBLIC: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let Some(file) = ca_file else {
        return Ok(PUBLIC.get_or_init(|| client_config(web_roots())).clone());
    };
    let pem = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut roots = web_roots();
    let public = roots.len();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", file.display()))?;
    }
    if roots.len() == public {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(client_config(roots))
}

fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    }
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}
