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
//!
//! Everything a guest can ask for is bounded before a backend is asked: key
//! and value sizes, the keys in one batch and the bytes a batch carries
//! (a `get_many` stops reading as soon as its result passes the limit), and
//! the bytes a memory or SQLite store holds ([`Limits`]).
//!
//! A store call is a future, and dropping it stops it at its next `.await`:
//! that is how a request's deadline cuts a store call short (the host runs
//! guests under `tokio::time::timeout`). Redis commands await the network;
//! memory and SQLite calls run inline on the caller's thread, so
//! [`Store::get_many`] reads them in chunks of [`INLINE_CHUNK`] keys and
//! yields between chunks, holding no lock and no transaction across the
//! yield. Writes (`set_many`, `delete_many`) are one transaction each, all
//! or none, and bounded by the batch limits instead. No SQLite statement
//! waits on the caller's thread for a lock another connection holds on the
//! file: the call awaits the runtime's timer between tries, for up to 5 s,
//! so a locked file delays only the calls that need its lock, and dropping
//! such a call stops it there, having written nothing.

mod error;
mod memory;
mod redis;
pub mod resp;
mod sqlite;

use std::time::Duration;

pub use error::Error;
pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore};
pub use sqlite::{SqliteStore, create_private};

/// How many keys one `list_keys` page holds (Redis takes it as a hint and
/// may return somewhat more).
pub const PAGE_SIZE: usize = 1000;

/// Keys a memory or SQLite `get_many` reads under one lock before it yields
/// to the runtime (so a deadline can drop it, and other requests run).
pub const INLINE_CHUNK: usize = 64;

/// Keys one Redis script reads in a `get_many` (one round trip each).
const REDIS_CHUNK: usize = PAGE_SIZE;

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
    /// Most keys in one `get_many`, `set_many` or `delete_many`; checked
    /// before the backend is asked.
    pub max_batch_keys: usize,
    /// Most bytes (keys and values) one `set_many` may carry and one
    /// `get_many` may return; a `get_many` stops reading as soon as its
    /// result would pass it.
    pub max_batch_size: usize,
    /// Most bytes (keys and values, expired keys not yet purged included)
    /// the store may hold: a write that would grow the store past it is
    /// refused, one that shrinks or keeps its size is not. Enforced by the
    /// memory and SQLite backends; Redis has no per-store accounting (bound
    /// it with Redis's own `maxmemory`).
    pub max_store_size: u64,
}

impl Limits {
    /// The most one call's reply may count for ([`resp`]): a batch's keys
    /// and values, one value at its limit, and for each of a batch's keys
    /// the framing and parsed values of a key and its value; rounded up to
    /// a MiB, to read well in an error.
    fn largest_reply(&self) -> u64 {
        (self.max_batch_size as u64)
            .saturating_add(self.max_value_size as u64)
            .saturating_add((self.max_batch_keys as u64).saturating_mul(32 + 2 * resp::VALUE_COST))
            .checked_next_multiple_of(1 << 20)
            .unwrap_or(u64::MAX)
    }

    /// 256 bytes per key.
    pub const DEFAULT_KEY_SIZE: usize = 256;
    /// 1 MiB per value.
    pub const DEFAULT_VALUE_SIZE: usize = 1 << 20;
    /// 1000 keys per batch: a `list_keys` page, fetched in one `get_many`.
    pub const DEFAULT_BATCH_KEYS: usize = PAGE_SIZE;
    /// 16 MiB per batch: sixteen values of the default size, the default
    /// request body limit of `tern serve`, and an eighth of its default
    /// instance memory, so a default guest can take the whole result.
    pub const DEFAULT_BATCH_SIZE: usize = 16 << 20;
    /// 256 MiB per store.
    pub const DEFAULT_STORE_SIZE: u64 = 256 << 20;

    /// The batch limit when none is configured: [`Self::DEFAULT_BATCH_SIZE`],
    /// or one key and value at their limits if that is more, so a batch of
    /// one key never fails where a `get` of it succeeds.
    pub fn default_batch_size(max_key_size: usize, max_value_size: usize) -> usize {
        Self::DEFAULT_BATCH_SIZE.max(max_key_size.saturating_add(max_value_size))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_size: Self::DEFAULT_KEY_SIZE,
            max_value_size: Self::DEFAULT_VALUE_SIZE,
            max_batch_keys: Self::DEFAULT_BATCH_KEYS,
            max_batch_size: Self::default_batch_size(
                Self::DEFAULT_KEY_SIZE,
                Self::DEFAULT_VALUE_SIZE,
            ),
            max_store_size: Self::DEFAULT_STORE_SIZE,
        }
    }
}

/// What is left of a `get_many`'s [`Limits::max_batch_size`] as it reads.
#[derive(Clone)]
pub(crate) struct Budget {
    left: usize,
    max: usize,
}

impl Budget {
    fn new(max: usize) -> Self {
        Budget { left: max, max }
    }

    /// Counts a key and its value against the budget, before the value is
    /// copied anywhere.
    pub(crate) fn take(&mut self, key: &str, value_len: usize) -> Result<(), Error> {
        self.left = key
            .len()
            .checked_add(value_len)
            .and_then(|bytes| self.left.checked_sub(bytes))
            .ok_or(Error::ResultTooLarge { max: self.max })?;
        Ok(())
    }

    /// Bytes left for one more value after `key`, if any.
    pub(crate) fn room_after(&self, key: &str) -> Option<usize> {
        self.left.checked_sub(key.len())
    }

    pub(crate) fn left(&self) -> usize {
        self.left
    }

    pub(crate) fn exceeded(&self) -> Error {
        Error::ResultTooLarge { max: self.max }
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
    ($self:ident . $method:ident ( $($arg:expr),* $(,)? )) => {
        match &$self.backend {
            Backend::Memory(b) => b.$method($($arg),*),
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Redis(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// A store named `name` over `backend`.
    pub fn new(name: impl Into<String>, mut backend: Backend, limits: Limits) -> Self {
        if let Backend::Redis(redis) = &mut backend {
            redis.bound_replies(limits.largest_reply());
        }
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
        dispatch!(self.set(key, value, ttl, self.limits.max_store_size))
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

    /// Adds `delta` (which may be negative) to the counter at `key` (absent
    /// counts as 0) and returns the new value, atomically.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.check_key(key)?;
        dispatch!(self.increment(key, delta, self.limits.max_store_size))
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
        dispatch!(self.compare_and_swap(key, expected, new, self.limits.max_store_size))
    }

    /// The values of `keys`, in order; `None` for each absent key. Refused
    /// before any read if there are too many keys, and as soon as the keys
    /// and values found pass [`Limits::max_batch_size`].
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.check_batch_keys(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        let mut budget = Budget::new(self.limits.max_batch_size);
        let chunk = match self.backend {
            Backend::Redis(_) => REDIS_CHUNK,
            Backend::Memory(_) | Backend::Sqlite(_) => INLINE_CHUNK,
        };
        let mut values = Vec::with_capacity(keys.len());
        for (i, keys) in keys.chunks(chunk).enumerate() {
            if i > 0 {
                // A memory or SQLite chunk ran without yielding; this is
                // where a deadline (or another request) gets its turn.
                tokio::task::yield_now().await;
            }
            values.extend(dispatch!(self.get_many(keys, &mut budget))?);
        }
        Ok(values)
    }

    /// Sets every pair, all or none. Refused before anything is written if
    /// there are too many pairs or they carry more than
    /// [`Limits::max_batch_size`].
    pub async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        self.check_batch_keys(pairs.len())?;
        let mut total = 0usize;
        for (key, value) in pairs {
            self.check_key(key)?;
            self.check_value(value)?;
            total = total.saturating_add(key.len() + value.len());
        }
        if total > self.limits.max_batch_size {
            return Err(Error::BatchTooLarge {
                len: total,
                max: self.limits.max_batch_size,
            });
        }
        dispatch!(self.set_many(pairs, self.limits.max_store_size))
    }

    /// Removes every key.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.check_batch_keys(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        dispatch!(self.delete_many(keys))
    }

    fn check_batch_keys(&self, len: usize) -> Result<(), Error> {
        if len > self.limits.max_batch_keys {
            return Err(Error::TooManyKeys {
                len,
                max: self.limits.max_batch_keys,
            });
        }
        Ok(())
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
/// decimal digits after an optional `-`, without leading zeros (what Redis
/// accepts, but `+` and `-0`), within `i64` on every backend, since that is
/// where Redis stops.
fn add_to_counter(current: Option<&[u8]>, delta: i64) -> Result<i64, Error> {
    let current = match current {
        None => 0,
        Some(bytes) if is_counter(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(Error::Overflow)?,
        Some(_) => return Err(Error::NotACounter),
    };
    current.checked_add(delta).ok_or(Error::Overflow)
}

/// Decimal digits after an optional `-`, no leading zero (except `0`
/// itself, which has no sign): what `i64::to_string` writes.
fn is_counter(bytes: &[u8]) -> bool {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || bytes == b"0")
}
