//! The in-process backend: a sorted map behind a mutex, and the bytes it
//! holds, kept exact on every insert and removal for the store's quota.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Budget, Error, PAGE_SIZE, Page, add_to_counter};

/// A store that lives and dies with this process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

type Map = BTreeMap<String, Entry>;

/// The map and the bytes of its keys and values (expired entries
/// included until they are purged), which only `insert`, `remove` and
/// `purge` change.
#[derive(Default)]
struct Inner {
    map: Map,
    bytes: u64,
}

/// The bytes an entry counts against the quota.
fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl Inner {
    fn insert(&mut self, key: &str, entry: Entry) {
        self.bytes += size(key, &entry.value);
        if let Some(old) = self.map.insert(key.to_string(), entry) {
            self.bytes -= size(key, &old.value);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= size(key, &old.value);
        }
    }

    fn purge(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|key, e| {
            let live = e.live(now);
            if !live {
                freed += size(key, &e.value);
            }
            live
        });
        self.bytes -= freed;
    }

    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.map.get(key).filter(|e| e.live(now))
    }

    /// Whether writing `writes` (distinct keys, each with the bytes it will
    /// count) keeps the store within `quota`; a write that does not grow
    /// the store always does. Purges expired entries before refusing.
    fn admit(&mut self, writes: &[(&str, u64)], quota: u64, now: Instant) -> Result<(), Error> {
        for attempt in 0..2 {
            let new: u64 = writes.iter().map(|(_, bytes)| bytes).sum();
            let old: u64 = writes
                .iter()
                .filter_map(|(key, _)| self.map.get(*key).map(|e| size(key, &e.value)))
                .sum();
            if new <= old || self.bytes - old + new <= quota {
                return Ok(());
            }
            if attempt == 0 {
                self.purge(now);
            }
        }
        Err(Error::StoreFull { max: quota })
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner, Instant) -> R) -> R {
        // A panic while holding the lock cannot leave the map half-written
        // or its size wrong (every change is one insert or remove, counted
        // together), so a poisoned lock is safe to keep using.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner, Instant::now())
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.with(|inner, now| inner.live(key, now).map(|e| e.value.clone())))
    }

    pub(crate) fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: u64,
    ) -> Result<(), Error> {
        self.with(|inner, now| {
            if ttl.is_some() && inner.map.len() % 256 == 0 {
                // Expired keys would otherwise stay until listed.
                inner.purge(now);
            }
            inner.admit(&[(key, size(key, value))], quota, now)?;
            let expires = ttl.map(|ttl| now + ttl);
            let entry = Entry {
                value: value.to_vec(),
                expires,
            };
            inner.insert(key, entry);
            Ok(())
        })
    }

    pub(crate) fn delete(&self, key: &str) -> Result<(), Error> {
        self.with(|inner, _| inner.remove(key));
        Ok(())
    }

    pub(crate) fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.with(|inner, now| inner.live(key, now).is_some()))
    }

    pub(crate) fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        // The cursor is the last key's position among live keys; keys are
        // sorted, so a page boundary is stable while nothing is removed.
        let skip = cursor.unwrap_or(0) as usize;
        Ok(self.with(|inner, now| {
            inner.purge(now);
            let map = &inner.map;
            let keys: Vec<String> = map.keys().skip(skip).take(PAGE_SIZE).cloned().collect();
            let next = skip + keys.len();
            let cursor = (next < map.len()).then_some(next as u64);
            Page { keys, cursor }
        }))
    }

    pub(crate) fn increment(&self, key: &str, delta: i64, quota: u64) -> Result<i64, Error> {
        self.with(|inner, now| {
            let current = inner.live(key, now);
            let next = add_to_counter(current.map(|e| e.value.as_slice()), delta)?;
            let expires = current.and_then(|e| e.expires);
            let value = next.to_string().into_bytes();
            inner.admit(&[(key, size(key, &value))], quota, now)?;
            inner.insert(key, Entry { value, expires });
            Ok(next)
        })
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        quota: u64,
    ) -> Result<bool, Error> {
        self.with(|inner, now| {
            let current = inner.live(key, now).map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            inner.admit(&[(key, size(key, new))], quota, now)?;
            let entry = Entry {
                value: new.to_vec(),
                expires: None,
            };
            inner.insert(key, entry);
            Ok(true)
        })
    }

    /// Reads `keys` under one lock, counting each value against `budget`
    /// before copying it.
    pub(crate) fn get_many(
        &self,
        keys: &[String],
        budget: &mut Budget,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.with(|inner, now| {
            keys.iter()
                .map(|key| match inner.live(key, now) {
                    Some(e) => {
                        budget.take(key, e.value.len())?;
                        Ok(Some(e.value.clone()))
                    }
                    None => Ok(None),
                })
                .collect()
        })
    }

    pub(crate) fn set_many(&self, pairs: &[(String, Vec<u8>)], quota: u64) -> Result<(), Error> {
        // A key given twice counts once, with its last value (the one kept).
        let last: BTreeMap<&str, u64> = pairs
            .iter()
            .map(|(key, value)| (key.as_str(), size(key, value)))
            .collect();
        let writes: Vec<(&str, u64)> = last.into_iter().collect();
        self.with(|inner, now| {
            inner.admit(&writes, quota, now)?;
            for (key, value) in pairs {
                let entry = Entry {
                    value: value.clone(),
                    expires: None,
                };
                inner.insert(key, entry);
            }
            Ok(())
        })
    }

    pub(crate) fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.with(|inner, _| {
            for key in keys {
                inner.remove(key);
            }
        });
        Ok(())
    }
}
