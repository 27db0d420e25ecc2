//! The in-process backend: a sorted map behind a mutex.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, PAGE_SIZE, Page, add_to_counter};

/// A store that lives and dies with this process.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, Entry>>,
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

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Map, Instant) -> R) -> R {
        // A panic while holding the lock cannot leave the map half-written
        // (every change is one insert or remove), so a poisoned lock is safe
        // to keep using.
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut map, Instant::now())
    }

    fn live_value(map: &Map, key: &str, now: Instant) -> Option<Vec<u8>> {
        map.get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.with(|map, now| Self::live_value(map, key, now)))
    }

    pub(crate) fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), Error> {
        self.with(|map, now| {
            if ttl.is_some() && map.len() % 256 == 0 {
                // Expired keys would otherwise stay until listed.
                map.retain(|_, e| e.live(now));
            }
            let expires = ttl.map(|ttl| now + ttl);
            map.insert(
                key.to_string(),
                Entry {
                    value: value.to_vec(),
                    expires,
                },
            );
        });
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str) -> Result<(), Error> {
        self.with(|map, _| map.remove(key));
        Ok(())
    }

    pub(crate) fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.with(|map, now| map.get(key).is_some_and(|e| e.live(now))))
    }

    pub(crate) fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        // The cursor is the last key's position among live keys; keys are
        // sorted, so a page boundary is stable while nothing is removed.
        let skip = cursor.unwrap_or(0) as usize;
        Ok(self.with(|map, now| {
            map.retain(|_, e| e.live(now));
            let keys: Vec<String> = map.keys().skip(skip).take(PAGE_SIZE).cloned().collect();
            let next = skip + keys.len();
            let cursor = (next < map.len()).then_some(next as u64);
            Page { keys, cursor }
        }))
    }

    pub(crate) fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        self.with(|map, now| {
            let current = map.get(key).filter(|e| e.live(now));
            let next = add_to_counter(current.map(|e| e.value.as_slice()), delta)?;
            let expires = current.and_then(|e| e.expires);
            let value = next.to_string().into_bytes();
            map.insert(key.to_string(), Entry { value, expires });
            Ok(next)
        })
    }

    pub(crate) fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        Ok(self.with(|map, now| {
            let current = Self::live_value(map, key, now);
            if current.as_deref() != expected {
                return false;
            }
            let entry = Entry {
                value: new.to_vec(),
                expires: None,
            };
            map.insert(key.to_string(), entry);
            true
        }))
    }

    pub(crate) fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        Ok(self.with(|map, now| keys.iter().map(|k| Self::live_value(map, k, now)).collect()))
    }

    pub(crate) fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        self.with(|map, _| {
            for (key, value) in pairs {
                let entry = Entry {
                    value: value.clone(),
                    expires: None,
                };
                map.insert(key.clone(), entry);
            }
        });
        Ok(())
    }

    pub(crate) fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.with(|map, _| {
            for key in keys {
                map.remove(key);
            }
        });
        Ok(())
    }
}
