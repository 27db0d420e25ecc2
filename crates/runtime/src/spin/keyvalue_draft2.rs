//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch), the key-value
//! draft Spin's SDKs import next to Spin's own interface. Over the same
//! stores and grants as Tern's `wasi:keyvalue@0.2.0-draft` in
//! [`crate::services`]; what differs is the draft's shapes: a string cursor,
//! a signed `increment`, and compare-and-swap as a `cas` handle that holds
//! the value it read.
//!
//! A `cas` handle holds up to one value, so an instance may hold at most
//! [`MAX_OPEN_CAS`] at once: a guest making them in a loop would otherwise
//! grow host memory outside its memory limit.

use std::sync::Arc;

use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

use super::v2::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::services::{Bucket, MAX_OPEN_BUCKETS, Refused, ServicesView};

/// `cas` handles one instance may hold at once.
pub const MAX_OPEN_CAS: u32 = 16;

/// A compare-and-swap in progress: the key and the value `new` read.
pub struct Cas {
    store: Arc<tern_kv::Store>,
    key: String,
    current: Option<Vec<u8>>,
}

/// Adds the draft's three interfaces to `linker`.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    store::add_to_linker::<T, super::HasSpin>(linker, get)?;
    atomics::add_to_linker::<T, super::HasSpin>(linker, get)?;
    batch::add_to_linker::<T, super::HasSpin>(linker, get)?;
    Ok(())
}

type Answer<T> = Result<Result<T, store::Error>>;

fn other(error: tern_kv::Error) -> store::Error {
    store::Error::Other(error.to_string())
}

impl ServicesView<'_> {
    /// Reads `key` and holds what it read in a new `cas` handle.
    async fn new_cas(&mut self, store: Arc<tern_kv::Store>, key: String) -> Answer<Resource<Cas>> {
        if self.services.open_cas >= MAX_OPEN_CAS {
            return Ok(Err(store::Error::Other(format!(
                "more than {MAX_OPEN_CAS} compare-and-swap handles open at once"
            ))));
        }
        let current = match store.get(&key).await {
            Ok(current) => current,
            Err(e) => return Ok(Err(other(e))),
        };
        let cas = self.table.push(Cas {
            store,
            key,
            current,
        })?;
        self.services.open_cas += 1;
        Ok(Ok(cas))
    }

    fn take_cas(&mut self, cas: Resource<Cas>) -> Result<Cas> {
        let cas = self.table.delete(cas)?;
        self.services.open_cas -= 1;
        Ok(cas)
    }
}

impl store::Host for ServicesView<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
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
    crate::services::bucket_basics!(store::Error);

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Answer<store::KeyResponse> {
        let cursor = match cursor.map(|c| c.parse::<u64>()).transpose() {
            Ok(cursor) => cursor,
            Err(_) => {
                return Ok(Err(store::Error::Other(
                    "the cursor is not one list-keys returned".into(),
                )));
            }
        };
        let page = self.bucket(&bucket)?.list_keys(cursor).await;
        Ok(page
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor.map(|c| c.to_string()),
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
        delta: i64,
    ) -> Answer<i64> {
        let store = self.bucket(&bucket)?;
        Ok(store.increment(&key, delta).await.map_err(other))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Result<Result<(), atomics::CasError>> {
        let Cas {
            store,
            key,
            current,
        } = self.take_cas(cas)?;
        match store
            .compare_and_swap(&key, current.as_deref(), &value)
            .await
        {
            Ok(true) => Ok(Ok(())),
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
            // Another writer came first: a fresh handle, holding what it
            // wrote, lets the guest retry.
            Ok(false) => Ok(Err(match self.new_cas(store, key).await? {
                Ok(fresh) => atomics::CasError::CasFailed(fresh),
                Err(e) => atomics::CasError::StoreError(e),
            })),
        }
    }
}

impl atomics::HostCas for ServicesView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        let store = self.bucket(&bucket)?;
        self.new_cas(store, key).await
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> Result<()> {
        self.take_cas(cas).map(drop)
    }
}

impl batch::Host for ServicesView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<(String, Option<Vec<u8>>)>> {
        let values = self.bucket(&bucket)?.get_many(&keys).await;
        Ok(values
            .map(|values| keys.into_iter().zip(values).collect())
            .map_err(other))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        Ok(store.set_many(&key_values).await.map_err(other))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        Ok(store.delete_many(&keys).await.map_err(other))
    }
}
