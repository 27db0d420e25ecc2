//! Opens the key-value stores an app declares, on the backends the runtime
//! config chooses (SQLite files under the state directory by default).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tern_kv::{Backend, Limits, MemoryStore, RedisConfig, RedisStore, SqliteStore, Store};
use tern_manifest::runtime_config::{StoreBackend, StoreConfig};
use tern_manifest::{ByteSize, RuntimeConfig};

/// The app's stores by name, shared by every instance.
pub type Stores = Arc<BTreeMap<String, Arc<Store>>>;

/// Opens each store in `names` as `runtime` configures it, reusing those
/// of `already` (a previous version of the app) by name. SQLite files (and
/// their directories) are created under `state_dir`; Redis is not
/// contacted until a guest uses the store. `scope` is the app's name under
/// `tern host` (see [`open_store`]).
pub fn open_stores<'a>(
    names: impl IntoIterator<Item = &'a str>,
    runtime: &RuntimeConfig,
    state_dir: &Path,
    scope: Option<&str>,
    already: Option<&Stores>,
) -> Result<Stores, String> {
    let mut stores = BTreeMap::new();
    for name in names {
        if stores.contains_key(name) {
            continue;
        }
        let store = match already.and_then(|open| open.get(name)) {
            Some(open) => open.clone(),
            None => Arc::new(open_store(name, &runtime.store(name), state_dir, scope)?),
        };
        stores.insert(name.to_owned(), store);
    }
    Ok(Arc::new(stores))
}

/// Removes every key `tern host`'s app `scope` has in the stores `runtime`
/// puts on Redis (its other stores are files in its own directory).
pub async fn purge_redis_stores(runtime: &RuntimeConfig, scope: &str) -> Result<(), String> {
    for (name, config) in &runtime.stores {
        let StoreBackend::Redis { url, timeout } = &config.backend else {
            continue;
        };
        let not_purged = |e: &dyn std::fmt::Display| {
            format!("its key-value store `{name}` on Redis was not purged: {e}")
        };
        let store = RedisStore::new(&redis_config(name, url, *timeout, Some(scope)))
            .map_err(|e| not_purged(&e))?;
        store.purge().await.map_err(|e| not_purged(&e))?;
    }
    Ok(())
}

/// How store `name` reaches the Redis at `url`. Its keys are prefixed
/// `NAME:`, so stores sharing a database stay apart (a grant is per
/// store), or under `tern host` `APP/NAME:` with `scope` the app's name,
/// so apps sharing a server do too (neither name can hold a `/`).
fn redis_config(
    name: &str,
    url: &str,
    timeout: Option<std::time::Duration>,
    scope: Option<&str>,
) -> RedisConfig {
    let mut redis = RedisConfig::new(url);
    redis.key_prefix = match scope {
        Some(app) => format!("{app}/{name}:"),
        None => format!("{name}:"),
    };
    if let Some(timeout) = timeout {
        redis.connect_timeout = timeout;
        redis.response_timeout = timeout;
    }
    redis
}

/// Opens one store; on Redis, its keys prefixed as [`redis_config`] says.
pub fn open_store(
    name: &str,
    config: &StoreConfig,
    state_dir: &Path,
    scope: Option<&str>,
) -> Result<Store, String> {
    let size = |configured: Option<ByteSize>, default: usize| {
        configured.map_or(default, |s| usize::try_from(s.0).unwrap_or(usize::MAX))
    };
    let max_key_size = size(config.max_key_size, Limits::DEFAULT_KEY_SIZE);
    let max_value_size = size(config.max_value_size, Limits::DEFAULT_VALUE_SIZE);
    let limits = Limits {
        max_key_size,
        max_value_size,
        max_batch_keys: config
            .max_batch_keys
            .map_or(Limits::DEFAULT_BATCH_KEYS, |n| n as usize),
        max_batch_size: size(
            config.max_batch_size,
            Limits::default_batch_size(max_key_size, max_value_size),
        ),
        max_store_size: config
            .max_store_size
            .map_or(Limits::DEFAULT_STORE_SIZE, |s| s.0),
    };
    let backend = match &config.backend {
        StoreBackend::Memory => Backend::Memory(MemoryStore::new()),
        StoreBackend::Sqlite { path } => {
            let file = StoreBackend::sqlite_path(path.as_deref(), state_dir, name);
            let store = SqliteStore::open(&file)
                .map_err(|e| format!("key-value store `{name}` ({}): {e}", file.display()))?;
            Backend::Sqlite(store)
        }
        StoreBackend::Redis { url, timeout } => {
            let redis = redis_config(name, url, *timeout, scope);
            // The URL may hold a password: the message names the store only.
            let store = RedisStore::new(&redis)
                .map_err(|e| format!("key-value store `{name}`: invalid redis url: {e}"))?;
            Backend::Redis(Box::new(store))
        }
    };
    Ok(Store::new(name, backend, limits))
}
