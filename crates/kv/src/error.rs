//! What can go wrong in a store. Messages are written for the guest that
//! asked: they name the limit or the backend, never a host path.

/// A failed key-value operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The key was empty.
    #[error("keys must not be empty")]
    EmptyKey,
    /// The key was longer than the store allows.
    #[error("key is {len} bytes, above the limit of {max} bytes")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// The value was larger than the store allows.
    #[error("value is {len} bytes, above the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// A batch named more keys than the store allows in one batch.
    #[error("the batch has {len} keys, above the limit of {max} keys per batch")]
    TooManyKeys {
        /// The keys in the batch.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// A `set_many` carried more bytes than one batch may.
    #[error("the batch is {len} bytes, above the limit of {max} bytes per batch")]
    BatchTooLarge {
        /// The keys' and values' bytes.
        len: usize,
        /// The store's limit.
        max: usize,
    },
    /// A `get_many` found more than one batch may return; reading stopped
    /// there.
    #[error(
        "the keys and values found come to more than {max} bytes, the limit per batch (ask for fewer keys at a time)"
    )]
    ResultTooLarge {
        /// The store's limit.
        max: usize,
    },
    /// The write would grow the store past its quota.
    #[error("the store is full: this write would take it past its quota of {max} bytes")]
    StoreFull {
        /// The store's quota, in bytes of keys and values.
        max: u64,
    },
    /// A zero time-to-live was asked for.
    #[error("a time-to-live must be at least 1ms")]
    ZeroTtl,
    /// A time-to-live beyond [`crate::MAX_TTL`].
    #[error("a time-to-live must be at most 100 years")]
    TtlTooLong,
    /// `increment` found a value that is not a decimal counter.
    #[error(
        "the value is not a counter (increment needs decimal digits, a `-` at most, no leading zeros)"
    )]
    NotACounter,
    /// `increment` would go past the range of a signed 64-bit integer.
    #[error("the counter would overflow")]
    Overflow,
    /// The backend failed or could not be reached.
    #[error("{backend} store is unavailable: {message}")]
    Unavailable {
        /// `sqlite` or `redis`.
        backend: &'static str,
        /// What the backend said.
        message: String,
    },
}

impl Error {
    pub(crate) fn sqlite(err: rusqlite::Error) -> Self {
        Error::Unavailable {
            backend: "sqlite",
            message: err.to_string(),
        }
    }
}
