//! Spin's Redis trigger (`[[trigger.redis]]`): Tern subscribes to each
//! channel and hands every message to its component's
//! `spin:redis/inbound-redis@3.0.0` handler, in a fresh instance with the
//! same grants and limits as an HTTP request of that component (memory,
//! deadline, CPU time, instance slots).
//!
//! One subscription per Redis address. Its messages are handled as they
//! arrive, several at once: as many as the `max_concurrent` of the
//! components it triggers allows (the smallest of them; with 1, one at a
//! time in order), each holding a permit of its component as an HTTP
//! request does, while the messages in hand stay under [`MAX_IN_HAND`]
//! bytes. Past either bound the next message is read off the socket only
//! once a handler is done, so a burst waits with the Redis server, not in
//! Tern's memory; a subscriber that falls too far behind is dropped by
//! Redis (its `client-output-buffer-limit` for pub/sub, 32MiB by default),
//! which Tern logs as a lost connection. A handler that traps, runs out of
//! time or returns an error is logged with the message's request id, and
//! the next message is handled. A lost connection is logged and made
//! again, after a pause that doubles up to 30 s; Redis does not keep
//! messages published meanwhile (that is pub/sub). Connecting and
//! subscribing must be done in [`SUBSCRIBE_TIMEOUT`]; a server silent for a
//! minute is asked with `PING`, and given up a minute later. A message
//! over [`MAX_REDIS_REPLY`] ends the connection before it is read whole,
//! and is logged and dropped. Under `tern serve` the subscriptions follow
//! the app as it was first loaded (a reload that changes them needs a
//! restart); under `tern host` they are made for each deployed app, loaded
//! or not, and a message loads the app as a request does ([`Triggered`]);
//! a deploy that changes them ends the old ones ([`run_triggers`]'s
//! `stop`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo as _;
use tern_kv::resp::{MAX_REDIS_REPLY, Subscription};
use tern_manifest::RedisTrigger;
use tern_runtime::spin::RedisError;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};
use wasmtime::{Engine, Result, Store};

use crate::App;
use crate::app::RedisRoute;
use crate::events::{EventSink, RequestIds};
use crate::executor::Executor;
use crate::guest_output::OutputState;
use crate::instance::{Failure, Grants, limit_store};
use crate::server::AppSlot;
use crate::wasi_http::{HttpHost, HttpLinkers, exports};

/// The interface a Redis-triggered component exports.
const INBOUND_REDIS: &str = "spin:redis/inbound-redis@3.0.0";

/// The longest pause before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long connecting, authenticating and subscribing may take.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Host memory the messages of one subscription take while handled (or
/// waiting for an instance) past which no more are read until some are
/// done. A message is held once, however many handlers it goes to, and
/// copied from there into each handler's memory. One message is always
/// let through, and the reader holds at most two beyond: what a burst puts
/// in memory stays bounded, per Redis address.
pub const MAX_IN_HAND: usize = 64 << 20;

/// The handler's signature: `handle-message: async func(message: payload)
/// -> result<_, error>`.
type HandleMessage = wasmtime::component::TypedFunc<(Arc<[u8]>,), (Result<(), RedisError>,)>;

/// A component exporting `spin:redis/inbound-redis`, ready to instantiate
/// per message.
pub(crate) struct RedisExecutor {
    pre: InstancePre<HttpHost>,
    handle: ComponentExportIndex,
}

impl RedisExecutor {
    /// Links and pre-instantiates `component`.
    pub(crate) fn new(
        linkers: &HttpLinkers,
        component: &Component,
        imports: crate::wasi_http::Imports,
    ) -> Result<Self> {
        let handle = component
            .get_export_index(None, INBOUND_REDIS)
            .and_then(|iface| component.get_export_index(Some(&iface), "handle-message"))
            .ok_or_else(|| wasmtime::format_err!("no `{INBOUND_REDIS}#handle-message` export"))?;
        Ok(RedisExecutor {
            pre: linkers.link(component, true, imports)?,
            handle,
        })
    }

    /// Whether `component` exports the handler this executor calls.
    pub(crate) fn exports_handler(engine: &Engine, component: &Component) -> bool {
        exports(engine, component, "spin:redis/inbound-redis@3")
    }

    /// Runs the handler on one message, in a fresh instance under the
    /// component's limits. `Ok(Err(..))` is the handler's own error.
    async fn handle(
        &self,
        grants: &Grants,
        sink: &Arc<dyn EventSink>,
        output: Arc<OutputState>,
        message: Arc<[u8]>,
    ) -> Result<Result<(), String>, Failure> {
        let deadline = Instant::now() + grants.limits.timeout;
        let mut store = Store::new(
            self.pre.engine(),
            HttpHost::for_instance(grants, sink, output)?,
        );
        limit_store(&mut store, deadline, grants.limits.cpu_time, |h| {
            &mut h.limiter
        });
        let mut answer = Ok(());
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let func: HandleMessage = instance
                .get_typed_func(&mut store, self.handle)
                .map_err(|e| wasmtime::format_err!("`handle-message` has the wrong type: {e}"))?;
            let (result,) = store
                .run_concurrent(async |guest| func.call_concurrent(guest, (message,)).await)
                .await??;
            if let Err(error) = result {
                answer = Err(match error {
                    RedisError::InvalidAddress => "invalid-address".to_owned(),
                    RedisError::TooManyConnections => "too-many-connections".to_owned(),
                    RedisError::TypeError => "type-error".to_owned(),
                    RedisError::Other(text) => format!("other: {text}"),
                });
            }
            wasmtime::error::Ok(())
        };
        let run = tokio::time::timeout_at(deadline.into(), run).await;
        let limiter = &store.data().limiter;
        Failure::settle(run, limiter, &grants.limits).map(|()| answer)
    }
}

/// The server a Redis trigger's `address` connects to, parsed as the
/// client parses it: `HOST:PORT`, a name in lower case, an IPv6 address in
/// brackets, the port 6379 when the address names none. What `tern host
/// --allow-redis-trigger` compares with [`allowed_server`]'s.
pub fn trigger_server(trigger: &RedisTrigger) -> Result<String, String> {
    let info = (trigger.address.as_str().into_connection_info()).map_err(|e| {
        format!(
            "redis {} is not an address Tern can use: {e}",
            trigger.host()
        )
    })?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => Ok(server_name(host, *port)),
        _ => Err(format!(
            "redis {} is not a plain redis://HOST:PORT address",
            trigger.host()
        )),
    }
}

/// A Redis server as an operator allows it, `HOST:PORT`, in the form
/// [`trigger_server`] gives.
///
/// ```
/// use tern_http::allowed_server;
/// assert_eq!(allowed_server("Redis.Internal:6379").unwrap(), "redis.internal:6379");
/// assert_eq!(allowed_server("[0::1]:6380").unwrap(), "[::1]:6380");
/// assert!(allowed_server("redis://cache:6379").is_err());
/// assert!(allowed_server("cache").is_err());
/// assert!(allowed_server("[::1:6379").is_err());
/// assert!(allowed_server("::1:6379").is_err());
/// ```
pub fn allowed_server(text: &str) -> Result<String, String> {
    let wrong = || format!("`{text}` is not HOST:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    let port: u16 = port.parse().map_err(|_| wrong())?;
    let fits = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains(['/', '@', '?', '#', ':', '[', ']']),
    };
    if !fits {
        return Err(wrong());
    }
    Ok(server_name(host, port))
}

fn server_name(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{}:{port}", bare.to_ascii_lowercase()),
    }
}

/// The app a Redis trigger's messages go to.
pub trait Triggered: Send + Sync + 'static {
    /// The app as it is served now, if it is loaded.
    fn loaded(&self) -> Option<Arc<App>>;

    /// The app, loaded first if it is not (a cold start); why it cannot
    /// be, otherwise.
    fn load(&self) -> Pin<Box<dyn Future<Output = Result<Arc<App>, String>> + Send + '_>>;
}

impl Triggered for AppSlot {
    fn loaded(&self) -> Option<Arc<App>> {
        Some(self.current())
    }

    fn load(&self) -> Pin<Box<dyn Future<Output = Result<Arc<App>, String>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(self.current())))
    }
}

/// Subscribes to the channels of the app's Redis triggers and handles
/// their messages until the runtime stops. Returns at once for an app
/// without Redis triggers.
pub async fn run_redis_triggers(slot: AppSlot, sink: Arc<dyn EventSink>) {
    let triggers = (slot.current().redis.iter())
        .map(|route| route.trigger.clone())
        .collect();
    // Never told to stop: the sender lives as long as the subscriptions.
    let (_never, stop) = tokio::sync::watch::channel(false);
    run_triggers(triggers, Arc::new(slot), sink, stop).await;
}

/// Subscribes to the channels of `triggers` and hands their messages to
/// `app`'s components, until `stop` turns true (or its sender is dropped):
/// then no more messages are read, and it returns once the handlers under
/// way have finished.
pub async fn run_triggers(
    triggers: Vec<RedisTrigger>,
    app: Arc<dyn Triggered>,
    sink: Arc<dyn EventSink>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Each address once, with the host to show and its channels.
    let mut by_address: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for trigger in &triggers {
        let (_, channels) = by_address
            .entry(trigger.address.clone())
            .or_insert_with(|| (trigger.host().to_owned(), Vec::new()));
        if !channels.contains(&trigger.channel) {
            channels.push(trigger.channel.clone());
        }
    }
    let ids = Arc::new(RequestIds::new());
    let subscriptions = by_address.into_iter().map(|(address, (shown, channels))| {
        let on = Subscribed {
            address,
            shown,
            channels,
        };
        subscribe(on, app.clone(), sink.clone(), ids.clone(), stop.clone())
    });
    futures::future::join_all(subscriptions).await;
}

/// Resolves once `stop` turns true, or its sender is gone.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What one subscription is on.
struct Subscribed {
    address: String,
    /// The server as log lines name it: `address` may carry a password.
    shown: String,
    channels: Vec<String>,
}

/// One address's subscription, made again whenever it is lost, until
/// `stop`.
async fn subscribe(
    on: Subscribed,
    app: Arc<dyn Triggered>,
    sink: Arc<dyn EventSink>,
    ids: Arc<RequestIds>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Subscribed {
        address,
        shown,
        channels,
    } = &on;
    // Kept across connections: handlers still running count against the
    // next connection's bounds.
    let mut handling = tokio::task::JoinSet::new();
    let in_hand = Arc::new(AtomicUsize::new(0));
    let mut backoff = Duration::from_secs(1);
    let listed = (channels.iter())
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    loop {
        let opening = async {
            let info = address.as_str().into_connection_info()?;
            Subscription::open(
                info.addr(),
                info.redis_settings(),
                channels,
                MAX_REDIS_REPLY,
            )
            .await
        };
        let opened = tokio::select! {
            opened = tokio::time::timeout(SUBSCRIBE_TIMEOUT, opening) => opened,
            () = stopped(&mut stop) => break,
        };
        let opened = opened.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", SUBSCRIBE_TIMEOUT.as_secs()),
            )
            .into())
        });
        match opened {
            Ok(subscription) => {
                backoff = Duration::from_secs(1);
                sink.event(&format!("subscribed to {listed} on redis {shown}"));
                // A task of its own reads the socket, so that the reading
                // is never cut off halfway; it waits while the channel is
                // full, and the channel is read only while there is room.
                let (messages, mut next) = tokio::sync::mpsc::channel(1);
                let reader = tokio::spawn(read(subscription, messages));
                let ended = loop {
                    // Read each time: a reload may change `max_concurrent`.
                    let room = handling.len() < at_once(&*app, address)
                        && in_hand.load(Ordering::Relaxed) < MAX_IN_HAND;
                    tokio::select! {
                        Some(done) = handling.join_next(), if !handling.is_empty() => {
                            reap(&sink, done);
                        }
                        message = next.recv(), if room => match message {
                            Some(Ok((channel, payload))) => {
                                let held = InHand::new(&in_hand, payload.len());
                                let (app, sink) = (app.clone(), sink.clone());
                                let (ids, address) = (ids.clone(), address.clone());
                                handling.spawn(async move {
                                    let _held = held;
                                    deliver(&*app, &sink, &ids, &address, &channel, payload).await;
                                });
                            }
                            Some(Err(ended)) => break Some(ended),
                            None => break None,
                        },
                        () = stopped(&mut stop) => {
                            reader.abort();
                            return finish(&sink, handling, &listed, shown).await;
                        }
                    }
                };
                reader.abort();
                let why = match ended {
                    Some(Ended { refused: true, .. }) => format!(
                        "a message over {}MiB on redis {shown} was dropped, with the connection",
                        MAX_REDIS_REPLY >> 20
                    ),
                    Some(Ended { error, .. }) => {
                        format!("lost the connection to redis {shown} ({error})")
                    }
                    None => format!("lost the connection to redis {shown}"),
                };
                sink.server_error(&format!(
                    "{why}; connecting again in {}s",
                    backoff.as_secs()
                ));
            }
            Err(e) => sink.server_error(&format!(
                "cannot subscribe on redis {shown}: {e}; trying again in {}s",
                backoff.as_secs()
            )),
        }
        // Handlers that end meanwhile are collected, not left to pile up.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                Some(done) = handling.join_next(), if !handling.is_empty() => {
                    reap(&sink, done);
                }
                () = stopped(&mut stop) => {
                    return finish(&sink, handling, &listed, shown).await;
                }
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    finish(&sink, handling, &listed, shown).await;
}

/// Lets the handlers under way finish (each under its own deadline) once
/// a subscription has stopped.
async fn finish(
    sink: &Arc<dyn EventSink>,
    mut handling: tokio::task::JoinSet<()>,
    listed: &str,
    shown: &str,
) {
    sink.event(&format!("unsubscribed from {listed} on redis {shown}"));
    while let Some(done) = handling.join_next().await {
        reap(sink, done);
    }
}

/// Logs a handler's task that did not end as it should (a panic of Tern's).
fn reap(sink: &Arc<dyn EventSink>, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        sink.server_error(&format!("a redis message's handler failed: {e}"));
    }
}

/// How a subscription's connection ended.
struct Ended {
    error: redis::RedisError,
    /// On a message over the bound.
    refused: bool,
}

/// Reads `subscription`'s messages into `messages` until it ends, then
/// sends how.
async fn read(
    mut subscription: Subscription,
    messages: tokio::sync::mpsc::Sender<Result<(String, Vec<u8>), Ended>>,
) {
    loop {
        let next = subscription.next_message().await.map_err(|error| Ended {
            error,
            refused: subscription.refused(),
        });
        let last = next.is_err();
        if messages.send(next).await.is_err() || last {
            return;
        }
    }
}

/// How many messages at `address` may be handled at once: the smallest
/// `max_concurrent` of the components it triggers; one while the app is not
/// loaded (the first message loads it).
fn at_once(app: &dyn Triggered, address: &str) -> usize {
    let Some(app) = app.loaded() else {
        return 1;
    };
    let smallest = (app.redis.iter())
        .filter(|route| route.trigger.address == address)
        .filter_map(|route| app.components.get(route.component))
        .map(|served| served.grants.limits.max_concurrent)
        .min()
        .unwrap_or(1);
    usize::try_from(smallest).unwrap_or(usize::MAX).max(1)
}

/// A message's bytes, counted in hand until dropped.
struct InHand {
    count: Arc<AtomicUsize>,
    bytes: usize,
}

impl InHand {
    fn new(count: &Arc<AtomicUsize>, bytes: usize) -> InHand {
        count.fetch_add(bytes, Ordering::Relaxed);
        InHand {
            count: count.clone(),
            bytes,
        }
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.count.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Hands one message to each trigger of `channel` at `address`, logging
/// how each went. The message counts as a request in flight of the app's
/// (which keeps an idle host app from being unloaded under it).
async fn deliver(
    target: &dyn Triggered,
    sink: &Arc<dyn EventSink>,
    ids: &RequestIds,
    address: &str,
    channel: &str,
    payload: Vec<u8>,
) {
    let size = payload.len();
    let app = match target.load().await {
        Ok(app) => app,
        Err(why) => {
            let id = ids.next();
            sink.server_error(&format!(
                "redis message on `{channel}` ({size} bytes) dropped ({id}): {why}"
            ));
            return;
        }
    };
    let _in_flight = app.stats.begin();
    let payload: Arc<[u8]> = payload.into();
    let taken = |r: &&RedisRoute| r.trigger.address == address && r.trigger.channel == channel;
    if !app.redis.iter().any(|r| taken(&r)) {
        // The app was deployed again, without this trigger, while the
        // message waited.
        let id = ids.next();
        sink.server_error(&format!(
            "redis message on `{channel}` ({size} bytes) dropped ({id}): the version served no longer handles it"
        ));
        return;
    }
    for route in app.redis.iter().filter(taken) {
        let Some(served) = app.components.get(route.component) else {
            continue;
        };
        let Executor::Redis(executor) = &served.executor else {
            continue;
        };
        let grants = &served.grants;
        let id = ids.next();
        let started = Instant::now();
        let size = payload.len() as u64;
        let outcome = if size > grants.limits.max_body.0 {
            Err(format!("message larger than {}", grants.limits.max_body))
        } else {
            // A permit of the component and an instance slot, as an HTTP
            // request takes them (waiting for them, where a request gets
            // 503: the message waits in hand meanwhile).
            let permit = served.permits.clone().acquire_owned().await;
            let slot = match permit {
                Ok(permit) => (app.pool.slots.clone().acquire_owned().await).map(|s| (permit, s)),
                Err(closed) => Err(closed),
            };
            match slot {
                Ok(_held) => match executor
                    .handle(grants, sink, OutputState::new(id), payload.clone())
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(format!("the handler returned an error: {error}")),
                    Err(failure) => Err(failure.describe(&grants.limits)),
                },
                Err(_) => Err("the server is stopping".to_owned()),
            }
        };
        let took = started.elapsed();
        let line = match outcome {
            Ok(()) => format!(
                "redis message on `{channel}` ({size} bytes) -> {}: handled in {:.1}ms ({id})",
                grants.id,
                took.as_secs_f64() * 1000.0
            ),
            Err(why) => format!(
                "redis message on `{channel}` ({size} bytes) -> {}: failed after {:.1}ms ({id}): {why}; the next message is handled",
                grants.id,
                took.as_secs_f64() * 1000.0
            ),
        };
        sink.event(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(address: &str) -> Result<String, String> {
        trigger_server(&RedisTrigger {
            address: address.to_owned(),
            channel: "c".to_owned(),
            component: "x".to_owned(),
        })
    }

    #[test]
    fn a_trigger_is_judged_by_where_the_client_connects() {
        for (address, expected) in [
            ("redis://127.0.0.1:6380/2", "127.0.0.1:6380"),
            ("redis://Cache.Internal", "cache.internal:6379"),
            ("redis://[::1]:6379", "[::1]:6379"),
            ("redis://user:secret@db:7000/0", "db:7000"),
            // Neither a fragment nor a query changes the server.
            ("redis://10.0.0.9:6379#@127.0.0.1:6379", "10.0.0.9:6379"),
            ("redis://10.0.0.9:6379?x=@127.0.0.1:6379", "10.0.0.9:6379"),
        ] {
            assert_eq!(server(address).as_deref(), Ok(expected), "{address}");
        }
        // What the operator writes compares in the same form.
        assert_eq!(
            allowed_server("CACHE.internal:6379").as_deref(),
            server("redis://cache.internal").as_deref()
        );
        let refused = server("redis://user:s3cret@db:port").unwrap_err();
        assert!(!refused.contains("s3cret"), "{refused}");
    }
}
