//! Host services for components: `wasi:keyvalue@0.2.0-draft` (store,
//! atomics, batch), Tern's `tern:keyvalue` (expiry, compare-and-swap) and
//! `wasi:config/store@0.2.0-rc.1`, over the `tern-kv` backends. The WIT is
//! in the repository's `wit/` directory.
//!
//! A component opens only the stores it was granted: any other store name
//! the app declares is `access-denied`, and a name nobody declared is
//! `no-such-store`.
//!
//! Every store error (a limit, a full store, a backend that is down) is
//! `other(MESSAGE)` to the guest, the message naming the limit, and the
//! host goes on serving. The limits themselves are `tern_kv`'s, checked
//! before a backend is asked: a batch's key count before anything is read,
//! and the bytes a `get-many` returns as it reads, so the host never holds
//! more than one batch's limit for a guest (16 MiB by default, well within
//! what a guest can take in; on Redis, a reply read off the socket may
//! take one value's limit more before it is refused).
//!
//! Deadlines: these host functions are async, and the caller (`tern serve`,
//! `tern run --timeout`) runs the guest under `tokio::time::timeout`. A
//! pending store call suspends the guest's fiber, so at the deadline the
//! whole call is dropped at the store's current `.await`: a Redis command
//! waiting on the network, or a memory/SQLite `get-many` between two chunks
//! of keys (`tern_kv::INLINE_CHUNK`; it yields there, holding no lock or
//! transaction), or an SQLite call waiting, on the runtime's timer, for
//! another process's lock on the file (up to 5 s; it holds nothing while it
//! waits, so a locked file delays only the requests that use it). A single
//! SQLite statement or write transaction runs to its end on the worker
//! thread; the key, value and batch limits are what keep that short. Store
//! calls stay inline rather than moving to a blocking pool, whose work a
//! dropped future could not stop anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tern_kv::Store;

use crate::databases::Databases;
use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "tern:keyvalue/services",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::tern::keyvalue::{cas, expiry};
use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, batch, store};

/// An open store, as the guest's `bucket` resource.
pub struct Bucket {
    pub(crate) store: Arc<Store>,
}

/// What one component may use: the app's stores with the names it was
/// granted, and its configuration variables. Cloning is cheap (two `Arc`s
/// and a list of names), so each instance gets its own.
#[derive(Clone, Default)]
pub struct Services {
    pub(crate) stores: Arc<BTreeMap<String, Arc<Store>>>,
    pub(crate) granted: Arc<[String]>,
    pub(crate) variables: Arc<BTreeMap<String, String>>,
    /// Buckets this instance holds open, against [`MAX_OPEN_BUCKETS`].
    pub(crate) open_buckets: u32,
    /// `wasi:keyvalue` draft2 compare-and-swap handles this instance holds,
    /// against [`crate::spin::MAX_OPEN_CAS`].
    pub(crate) open_cas: u32,
    /// The app's SQL databases, and the names of those granted.
    pub(crate) databases: Databases,
    pub(crate) granted_databases: Arc<[String]>,
    /// How long one SQL statement may run.
    pub(crate) statement_budget: Duration,
    /// SQL connections this instance holds open, against
    /// [`crate::spin::MAX_OPEN_CONNECTIONS`].
    pub(crate) open_connections: u32,
    /// Where the component's Spin outbound connections (Redis, MQTT,
    /// PostgreSQL) may go.
    pub(crate) outbound: Arc<Outbound>,
    /// The component's Redis connections, shared by its instances.
    pub(crate) redis: crate::spin::RedisConnections,
    /// Redis connections this instance holds open.
    pub(crate) open_redis: OpenCount,
    /// MQTT connections this instance holds open.
    pub(crate) open_mqtt: OpenCount,
    /// The component's idle PostgreSQL connections, shared by its instances.
    pub(crate) postgres: crate::spin::PostgresConnections,
    /// PostgreSQL connections this instance holds open.
    pub(crate) open_postgres: OpenCount,
    /// The app's AI models and those granted (`wasi:nn`).
    pub(crate) nn: crate::nn::Nn,
}

/// How many connections of one kind an instance holds open, counted before
/// each is made (so that opens running at once cannot all pass the bound)
/// and given back by an open that fails or that the guest cancels midway:
/// the count is shared with the opens in flight.
///
/// A clone starts at zero: each instance gets its own count. The counter
/// is made at the instance's first open, so the many instances that open
/// nothing (one per request) allocate nothing for it.
#[derive(Default)]
pub(crate) struct OpenCount(Option<Arc<AtomicU32>>);

impl Clone for OpenCount {
    fn clone(&self) -> Self {
        OpenCount::default()
    }
}

impl OpenCount {
    /// Counts one more connection, unless `max` are open or opening.
    pub(crate) fn reserve(&mut self, max: u32) -> Option<Reserved> {
        let count = self.0.get_or_insert_default();
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Reserved(Some(count.clone())))
    }

    /// Gives back the count of a connection that was kept and is now
    /// closed.
    pub(crate) fn release(&self) {
        if let Some(count) = &self.0 {
            release(count);
        }
    }
}

fn release(count: &AtomicU32) {
    let released = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    debug_assert!(released.is_ok(), "a connection's count given back twice");
}

/// One connection counted by [`OpenCount::reserve`]: given back when
/// dropped, unless [`Reserved::keep`] says the connection is open.
#[must_use]
pub(crate) struct Reserved(Option<Arc<AtomicU32>>);

impl Reserved {
    /// The connection is open: it is counted until it is closed
    /// ([`OpenCount::release`]).
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            release(&count);
        }
    }
}

/// Where a component's outbound connections other than HTTP may go, and
/// how long they may take.
#[derive(Clone, Debug, Default)]
pub struct Outbound {
    /// The component's `allowed_outbound_hosts`.
    pub allowed: Vec<tern_manifest::OutboundHost>,
    /// The non-public addresses it may reach.
    pub private: crate::outbound::PrivateReach,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one command may wait for its answer.
    pub response_timeout: Duration,
}

/// Buckets one instance may hold open at once: a guest opening them in a
/// loop would otherwise grow host memory outside its memory limit.
pub const MAX_OPEN_BUCKETS: u32 = 64;

impl Services {
    /// Access to `granted` among the app's `stores`, and `variables`.
    pub fn new(
        stores: Arc<BTreeMap<String, Arc<Store>>>,
        granted: &[String],
        variables: BTreeMap<String, String>,
    ) -> Self {
        Services {
            stores,
            granted: granted.into(),
            variables: Arc::new(variables),
            ..Services::default()
        }
    }

    /// Adds the app's SQL `databases`, of which the component may open those
    /// `granted`, each statement running for at most `statement_budget`.
    pub fn with_databases(
        mut self,
        databases: Databases,
        granted: &[String],
        statement_budget: Duration,
    ) -> Self {
        self.databases = databases;
        self.granted_databases = granted.into();
        self.statement_budget = statement_budget;
        self
    }

    /// Gives the component the models `nn` grants.
    pub fn with_nn(mut self, nn: crate::nn::Nn) -> Self {
        self.nn = nn;
        self
    }

    /// Lets the component's Spin outbound connections go where `outbound`
    /// allows.
    pub fn with_outbound(mut self, outbound: Outbound) -> Self {
        self.outbound = Arc::new(outbound);
        self
    }
}

/// The services of one instance and its resource table, for the linker.
pub struct ServicesView<'a> {
    /// What the instance may use.
    pub services: &'a mut Services,
    /// The instance's resource table (shared with WASI).
    pub table: &'a mut ResourceTable,
}

struct HasServices;

impl HasData for HasServices {
    type Data<'a> = ServicesView<'a>;
}

/// Adds every service interface to `linker`. Linking is free for a
/// component that imports none of them.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    store::add_to_linker::<T, HasServices>(linker, get)?;
    atomics::add_to_linker::<T, HasServices>(linker, get)?;
    batch::add_to_linker::<T, HasServices>(linker, get)?;
    expiry::add_to_linker::<T, HasServices>(linker, get)?;
    cas::add_to_linker::<T, HasServices>(linker, get)?;
    config::add_to_linker::<T, HasServices>(linker, get)?;
    crate::nn::add_to_linker(linker, get)?;
    Ok(())
}

type KvResult<T> = Result<Result<T, store::Error>>;

fn other(err: tern_kv::Error) -> store::Error {
    store::Error::Other(err.to_string())
}

impl ServicesView<'_> {
    /// The store behind the guest's `bucket`.
    pub(crate) fn bucket(&self, bucket: &Resource<Bucket>) -> Result<Arc<Store>> {
        Ok(self.table.get(bucket)?.store.clone())
    }
}

/// `get`, `set`, `delete` and `exists` on a bucket, the same in each
/// `wasi:keyvalue` draft but for the error type, `$error`, whose
/// `other(MESSAGE)` carries every store error.
macro_rules! bucket_basics {
    ($error:ty) => {
        async fn get(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> Result<Result<Option<Vec<u8>>, $error>> {
            let done = self.bucket(&bucket)?.get(&key).await;
            Ok(done.map_err(|e| <$error>::Other(e.to_string())))
        }

        async fn set(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> Result<Result<(), $error>> {
            let done = self.bucket(&bucket)?.set(&key, &value, None).await;
            Ok(done.map_err(|e| <$error>::Other(e.to_string())))
        }

        async fn delete(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> Result<Result<(), $error>> {
            let done = self.bucket(&bucket)?.delete(&key).await;
            Ok(done.map_err(|e| <$error>::Other(e.to_string())))
        }

        async fn exists(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
        ) -> Result<Result<bool, $error>> {
            let done = self.bucket(&bucket)?.exists(&key).await;
            Ok(done.map_err(|e| <$error>::Other(e.to_string())))
        }
    };
}
pub(crate) use bucket_basics;

/// Why a guest may not open a store.
pub(crate) enum Refused {
    /// No component of the app declares it.
    Unknown,
    /// Declared, but not granted to this component.
    Denied,
    /// The instance already holds [`MAX_OPEN_BUCKETS`] open.
    TooMany,
}

impl ServicesView<'_> {
    /// Opens store `name` for the guest, if it was granted and the
    /// instance holds fewer than [`MAX_OPEN_BUCKETS`]. Shared by
    /// `wasi:keyvalue` and Spin's key-value interface.
    pub(crate) fn open_bucket(&mut self, name: &str) -> Result<Result<Resource<Bucket>, Refused>> {
        let Some(store) = self.services.stores.get(name) else {
            return Ok(Err(Refused::Unknown));
        };
        if !self.services.granted.iter().any(|g| g == name) {
            return Ok(Err(Refused::Denied));
        }
        if self.services.open_buckets >= MAX_OPEN_BUCKETS {
            return Ok(Err(Refused::TooMany));
        }
        self.services.open_buckets += 1;
        let bucket = Bucket {
            store: store.clone(),
        };
        Ok(Ok(self.table.push(bucket)?))
    }

    /// Closes a store [`ServicesView::open_bucket`] opened.
    pub(crate) fn close_bucket(&mut self, bucket: Resource<Bucket>) -> Result<()> {
        self.table.delete(bucket)?;
        self.services.open_buckets -= 1;
        Ok(())
    }
}

impl store::Host for ServicesView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        Ok(self
            .open_bucket(&identifier)?
            .map_err(|refused| match refused {
                Refused::Unknown => store::Error::NoSuchStore,
                Refused::Denied => store::Error::AccessDenied,
                Refused::TooMany => store::Error::Other(format!(
                    "more than {MAX_OPEN_BUCKETS} buckets open at once"
                )),
            }))
    }
}

impl store::HostBucket for ServicesView<'_> {
    bucket_basics!(store::Error);

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let page = self.bucket(&bucket)?.list_keys(cursor).await;
        Ok(page
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(other))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> Result<()> {
        self.close_bucket(bucket)
    }
}

impl atomics::Host for ServicesView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(other(tern_kv::Error::Overflow)));
        };
        let store = self.bucket(&bucket)?;
        // A counter made negative through `wasi:keyvalue` draft2 is refused
        // before anything is written (a later race aside, checked again
        // below).
        let negative = |n: i64| {
            store::Error::Other(format!(
                "the counter is {n}, below this interface's 0; use wasi:keyvalue draft2's signed increment"
            ))
        };
        match store.get(&key).await {
            Ok(Some(value)) => {
                let current = std::str::from_utf8(&value).ok();
                if let Some(n) = current
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|n| *n < 0)
                {
                    return Ok(Err(negative(n)));
                }
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(other(e))),
        }
        Ok(match store.increment(&key, delta).await {
            Ok(n) => u64::try_from(n).map_err(|_| negative(n)),
            Err(e) => Err(other(e)),
        })
    }
}

impl batch::Host for ServicesView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await;
        Ok(values
            .map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|v| (key, v)))
                    .collect()
            })
            .map_err(other))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        Ok(store.set_many(&pairs).await.map_err(other))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        Ok(store.delete_many(&keys).await.map_err(other))
    }
}

impl expiry::Host for ServicesView<'_> {
    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        let ttl = Some(Duration::from_millis(ttl_ms));
        Ok(store.set(&key, &value, ttl).await.map_err(other))
    }
}

impl cas::Host for ServicesView<'_> {
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<bool> {
        let store = self.bucket(&bucket)?;
        let swapped = store
            .compare_and_swap(&key, expected.as_deref(), &new)
            .await;
        Ok(swapped.map_err(other))
    }
}

impl config::Host for ServicesView<'_> {
    async fn get(&mut self, key: String) -> Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.services.variables.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> Result<Result<Vec<(String, String)>, config::Error>> {
        let all = self.services.variables.iter();
        Ok(Ok(all.map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::OpenCount;

    #[test]
    fn an_open_count_is_given_back_unless_kept() {
        let mut count = OpenCount::default();
        let first = count.reserve(2).unwrap();
        let second = count.reserve(2).unwrap();
        assert!(count.reserve(2).is_none(), "two of two are counted");
        // An open that failed or was cancelled gives its count back.
        drop(second);
        let third = count.reserve(2).unwrap();
        // Kept ones stay counted until released.
        first.keep();
        third.keep();
        assert!(count.reserve(2).is_none());
        count.release();
        count.reserve(2).unwrap().keep();
        // Each instance's clone counts on its own.
        let mut other = count.clone();
        assert!(other.reserve(2).is_some());
        assert!(count.reserve(2).is_none());
    }
}
