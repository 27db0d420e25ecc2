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
//! and is logged and dropped. The subscriptions follow the app as it was
//! first loaded; a reload that changes them needs a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo as _;
use tern_kv::resp::{MAX_REDIS_REPLY, Subscription};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Val};
use wasmtime::{Engine, Result, Store};

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
/// done: each byte counts as [`HELD_PER_BYTE`] (a handler's argument is a
/// list of values, one per byte). One message is always let through, and
/// the reader holds at most two beyond: what a burst puts in memory stays
/// bounded, per Redis address.
pub const MAX_IN_HAND: usize = 64 << 20;

/// What one byte of a message takes on the host while its handler runs:
/// the message, a copy, and a `Val` for the call.
const HELD_PER_BYTE: usize = 2 + std::mem::size_of::<Val>();

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
        message: Vec<u8>,
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
            let func = instance
                .get_func(&mut store, self.handle)
                .ok_or_else(|| wasmtime::format_err!("`handle-message` is not a function"))?;
            let params = [Val::List(message.into_iter().map(Val::U8).collect())];
            let mut results = [Val::Bool(false)];
            store
                .run_concurrent(async |guest| {
                    func.call_concurrent(guest, &params, &mut results).await
                })
                .await??;
            if let Val::Result(Err(error)) = &results[0] {
                answer = Err(match error.as_deref() {
                    Some(Val::Variant(case, Some(detail))) => match &**detail {
                        Val::String(text) => format!("{case}: {text}"),
                        other => format!("{case}: {other:?}"),
                    },
                    Some(Val::Variant(case, None)) => case.clone(),
                    other => format!("{other:?}"),
                });
            }
            wasmtime::error::Ok(())
        };
        let run = tokio::time::timeout_at(deadline.into(), run).await;
        let limiter = &store.data().limiter;
        Failure::settle(run, limiter, &grants.limits).map(|()| answer)
    }
}

/// Subscribes to the channels of the app's Redis triggers and handles
/// their messages until the runtime stops. Returns at once for an app
/// without Redis triggers.
pub async fn run_redis_triggers(slot: AppSlot, sink: Arc<dyn EventSink>) {
    let app = slot.current();
    // Each address once, with the host to show and its channels.
    let mut by_address: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for route in &app.redis {
        let trigger = &route.trigger;
        let (_, channels) = by_address
            .entry(trigger.address.clone())
            .or_insert_with(|| (trigger.host().to_owned(), Vec::new()));
        if !channels.contains(&trigger.channel) {
            channels.push(trigger.channel.clone());
        }
    }
    drop(app);
    let ids = Arc::new(RequestIds::new());
    let subscriptions = by_address.into_iter().map(|(address, (shown, channels))| {
        subscribe(
            address,
            shown,
            channels,
            slot.clone(),
            sink.clone(),
            ids.clone(),
        )
    });
    futures::future::join_all(subscriptions).await;
}

/// One address's subscription, made again whenever it is lost.
/// Log lines name the server as `shown`: the address may carry a password.
async fn subscribe(
    address: String,
    shown: String,
    channels: Vec<String>,
    slot: AppSlot,
    sink: Arc<dyn EventSink>,
    ids: Arc<RequestIds>,
) {
    // Kept across connections: handlers still running count against the
    // next connection's bounds.
    let mut handling = tokio::task::JoinSet::new();
    let in_hand = Arc::new(AtomicUsize::new(0));
    let mut backoff = Duration::from_secs(1);
    loop {
        let opening = async {
            let info = address.as_str().into_connection_info()?;
            Subscription::open(
                info.addr(),
                info.redis_settings(),
                &channels,
                MAX_REDIS_REPLY,
            )
            .await
        };
        let opened = tokio::time::timeout(SUBSCRIBE_TIMEOUT, opening)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {}s", SUBSCRIBE_TIMEOUT.as_secs()),
                )
                .into())
            });
        match opened {
            Ok(subscription) => {
                backoff = Duration::from_secs(1);
                sink.event(&format!(
                    "subscribed to {} on redis {shown}",
                    channels
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                // A task of its own reads the socket, so that the reading
                // is never cut off halfway; it waits while the channel is
                // full, and the channel is read only while there is room.
                let (messages, mut next) = tokio::sync::mpsc::channel(1);
                let reader = tokio::spawn(read(subscription, messages));
                let ended = loop {
                    // Read each time: a reload may change `max_concurrent`.
                    let room = handling.len() < at_once(&slot, &address)
                        && in_hand.load(Ordering::Relaxed) < MAX_IN_HAND;
                    tokio::select! {
                        Some(done) = handling.join_next(), if !handling.is_empty() => {
                            reap(&sink, done);
                        }
                        message = next.recv(), if room => match message {
                            Some(Ok((channel, payload))) => {
                                let cost = payload.len().saturating_mul(HELD_PER_BYTE);
                                let held = InHand::new(&in_hand, cost);
                                let (slot, sink) = (slot.clone(), sink.clone());
                                let (ids, address) = (ids.clone(), address.clone());
                                handling.spawn(async move {
                                    let _held = held;
                                    deliver(&slot, &sink, &ids, &address, &channel, payload).await;
                                });
                            }
                            Some(Err(ended)) => break Some(ended),
                            None => break None,
                        },
                        // Neither can be waited on: never with the bounds
                        // above, but a subscription is better made again
                        // than a panic.
                        else => break None,
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
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
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
/// `max_concurrent` of the components it triggers.
fn at_once(slot: &AppSlot, address: &str) -> usize {
    let app = slot.current();
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
/// how each went.
async fn deliver(
    slot: &AppSlot,
    sink: &Arc<dyn EventSink>,
    ids: &RequestIds,
    address: &str,
    channel: &str,
    payload: Vec<u8>,
) {
    let app = slot.current();
    for route in app
        .redis
        .iter()
        .filter(|r| r.trigger.address == address && r.trigger.channel == channel)
    {
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
