//! Tern's key-value storage: one [`Store`] API over three backends.
//!
//! - [`Backend::Memory`]: a map in this process, for tests and throwaway data;
//! - [`Backend::Sqlite`]: one SQLite file per store in WAL mode, the
//!   embedded default;
//! - [`Backend::Redis`]: a Redis database shared by every process pointed at
//!   it, with increment and compare-and-swap done atomically by Redis.
//!
//! Every backend gives the same answers; `tests/conformance.rs` runs one
//! suite against all three. Counters are stored as decimal text (`b"42"`),
//! as Redis stores them, so a value written by `increment` reads back the
//! same from any backend. This crate knows nothing of wasmtime: the host
//! bindings live in `tern-runtime`.

mod error;
mod memory;
mod redis;
mod sqlite;

use std::time::Duration;

pub use error::Error;
pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};
pub use sqlite::SqliteStore;

/// How many keys one `list_keys` page holds (Redis takes it as a hint and
/// may return somewhat more).
pub const PAGE_SIZE: usize = 1000;

/// The longest time-to-live: about 100 years, far from any overflow.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A page of keys and the cursor for the next one (`None` at the end).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys in this page.
    pub keys: Vec<String>,
    /// Where the next page starts, if there is one.
    pub cursor: Option<u64>,
}

/// Size limits a store enforces on every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_size: usize,
    /// Largest value, in bytes.
    pub max_value_size: usize,
}

impl Limits {
    /// 256 bytes per key.
    pub const DEFAULT_KEY_SIZE: usize = 256;
    /// 1 MiB per value.
    pub const DEFAULT_VALUE_SIZE: usize = 1 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_size: Self::DEFAULT_KEY_SIZE,
            max_value_size: Self::DEFAULT_VALUE_SIZE,
        }
    }
}

/// Where a store keeps its data.
pub enum Backend {
    /// In this process, gone when it exits.
    Memory(MemoryStore),
    /// An SQLite file.
    Sqlite(SqliteStore),
    /// A Redis database.
    Redis(Box<RedisStore>),
}

impl Backend {
    /// The backend's kind, as spelled in the runtime config.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Redis(_) => "redis",
        }
    }
}

/// A named store: a backend and the limits checked before it is asked.
pub struct Store {
    name: String,
    backend: Backend,
    limits: Limits,
}

/// Calls the same method on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Memory(b) => b.$method($($arg),*),
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Redis(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// A store named `name` over `backend`.
    pub fn new(name: impl Into<String>, backend: Backend, limits: Limits) -> Self {
        Store {
            name: name.into(),
            backend,
            limits,
        }
    }

    /// The store's name, as declared in the manifest.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend's kind: `memory`, `sqlite` or `redis`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The value of `key`, if it is set and has not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.check_key(key)?;
        dispatch!(self.get(key))
    }

    /// Sets `key` to `value`; with a `ttl`, the key expires after it.
    /// Without one, any earlier expiry of the key is removed.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        self.check_key(key)?;
        self.check_value(value)?;
        match ttl {
            Some(Duration::ZERO) => return Err(Error::ZeroTtl),
            Some(ttl) if ttl > MAX_TTL => return Err(Error::TtlTooLong),
            _ => {}
        }
        dispatch!(self.set(key, value, ttl))
    }

    /// Removes `key`; removing an absent key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.check_key(key)?;
        dispatch!(self.delete(key))
    }

    /// Whether `key` is set.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.check_key(key)?;
        dispatch!(self.exists(key))
    }

    /// One page of keys, starting at `cursor` (`None`: the first page).
    pub async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        dispatch!(self.list_keys(cursor))
    }

    /// Every key, following the cursor to the end.
    pub async fn all_keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_keys(cursor).await?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Adds `delta` to the counter at `key` (absent counts as 0) and
    /// returns the new value, atomically.
    pub async fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        self.check_key(key)?;
        dispatch!(self.increment(key, delta))
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: if it is
    /// absent), atomically. Returns whether it did.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        self.check_key(key)?;
        self.check_value(new)?;
        dispatch!(self.compare_and_swap(key, expected, new))
    }

    /// The values of `keys`, in order; `None` for each absent key.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        for key in keys {
            self.check_key(key)?;
        }
        dispatch!(self.get_many(keys))
    }

    /// Sets every pair, all or none.
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        for (key, value) in pairs {
            self.check_key(key)?;
            self.check_value(value)?;
        }
        dispatch!(self.set_many(pairs))
    }

    /// Removes every key.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        for key in keys {
            self.check_key(key)?;
        }
        dispatch!(self.delete_many(keys))
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.limits.max_key_size {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: self.limits.max_key_size,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.limits.max_value_size {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_size,
            });
        }
        Ok(())
    }
}

/// Parses a counter's stored text and adds `delta` to it. A counter is
/// decimal digits without a sign or leading zeros (what Redis accepts), and
/// stops at `i64::MAX` on every backend, since that is where Redis stops.
fn add_to_counter(current: Option<&[u8]>, delta: u64) -> Result<u64, Error> {
    let current = match current {
        None => 0,
        Some(bytes) if is_counter(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Error::Overflow)?,
        Some(_) => return Err(Error::NotACounter),
    };
    current
        .checked_add(delta)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or(Error::Overflow)
}

/// Decimal digits, no sign, no leading zero (except `0` itself).
fn is_counter(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1)
}
