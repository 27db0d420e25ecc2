//! The embedded backend: one SQLite file per store, in WAL mode.
//!
//! A write returns once SQLite has committed it to the write-ahead log, so
//! it survives the server being killed (`synchronous = NORMAL` trades only
//! the last commits before a power loss, not a process crash). Calls are a
//! few microseconds and run on the calling thread under one mutex per
//! store, unless the store is busy: then they wait on a blocking thread
//! (see [`SqliteStore::with`]). `BEGIN IMMEDIATE` keeps read-modify-write
//! atomic even when another process opens the same file.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::{Error, PAGE_SIZE, Page, add_to_counter};

/// A store in an SQLite file.
pub struct SqliteStore {
    /// Shared with the blocking thread a busy call waits on.
    conn: Arc<Mutex<Connection>>,
    /// Writes with a time-to-live; every 256th also deletes expired rows.
    ttl_writes: AtomicU32,
}

/// How long a call waits for another connection's write lock (another
/// process, or `tern kv`) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER
    );
    CREATE INDEX IF NOT EXISTS kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;
";

/// The condition that hides rows whose expiry has passed.
macro_rules! live {
    () => {
        "(expires_at IS NULL OR expires_at > ?)"
    };
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, and its directory.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Unavailable {
                backend: "sqlite",
                message: format!("cannot create the store's directory: {e}"),
            })?;
        }
        let conn = Connection::open(path).map_err(Error::sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(Error::sqlite)?;
        conn.execute_batch(SCHEMA).map_err(Error::sqlite)?;
        conn.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])
            .map_err(Error::sqlite)?;
        // From here on a call never waits on the serving thread: busy, it
        // fails at once and `with` retries it where waiting is harmless.
        conn.busy_timeout(Duration::ZERO).map_err(Error::sqlite)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            ttl_writes: AtomicU32::new(0),
        })
    }

    /// Runs `f` on the connection. When the store is free that happens
    /// right here: a call takes microseconds. When it is busy (another
    /// request of this process is using the connection, or another
    /// connection holds the database's write lock), `f` runs again on a
    /// blocking thread, which waits for the lock up to [`BUSY_TIMEOUT`]: a
    /// locked database delays only the requests that use it, never the other
    /// requests of the worker thread that asked. A busy `f` has changed
    /// nothing (its statement or `BEGIN IMMEDIATE` failed to start), so
    /// running it again is safe.
    async fn with<R: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, Error> {
        if let Some(done) = self.try_here(&mut f) {
            return done.map_err(Error::sqlite);
        }
        let conn = self.conn.clone();
        let wait = move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let result = f(&mut conn);
            let _ = conn.busy_timeout(Duration::ZERO);
            result
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(wait)
                .await
                .map_err(|_| Error::Unavailable {
                    backend: "sqlite",
                    message: "the call stopped unexpectedly".to_owned(),
                })?,
            // Outside a runtime there is no serving thread to keep free.
            Err(_) => wait(),
        };
        result.map_err(Error::sqlite)
    }

    /// Runs `f` on this thread if the connection is free and `f` needs no
    /// lock another connection holds; `None` when it could not.
    fn try_here<R>(
        &self,
        f: &mut impl FnMut(&mut Connection) -> rusqlite::Result<R>,
    ) -> Option<rusqlite::Result<R>> {
        // SQLite rolls back whatever a panicking closure left open, so a
        // poisoned lock still guards a consistent connection.
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match f(&mut conn) {
            Err(e) if is_busy(&e) => None,
            done => Some(done),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let key = key.to_owned();
        self.with(move |c| read(c, &key, now_ms())).await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let expires = ttl.map(|ttl| now_ms().saturating_add(ttl.as_millis() as i64));
        let purge = ttl.is_some() && self.ttl_writes.fetch_add(1, Ordering::Relaxed) % 256 == 255;
        let (key, value) = (key.to_owned(), value.to_vec());
        self.with(move |c| {
            if purge {
                c.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])?;
            }
            write(c, &key, &value, expires)
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        let key = key.to_owned();
        self.with(move |c| c.execute("DELETE FROM kv WHERE key = ?", [&key]).map(drop))
            .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Error> {
        let sql = concat!("SELECT 1 FROM kv WHERE key = ? AND ", live!());
        let key = key.to_owned();
        self.with(move |c| c.prepare_cached(sql)?.exists(params![key, now_ms()]))
            .await
    }

    pub(crate) async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        // The cursor is the last rowid returned: stable under inserts.
        let sql = concat!(
            "SELECT rowid, key FROM kv WHERE rowid > ? AND ",
            live!(),
            " ORDER BY rowid LIMIT ?"
        );
        let after = cursor.unwrap_or(0) as i64;
        let rows: Vec<(i64, String)> = self
            .with(move |c| {
                c.prepare_cached(sql)?
                    .query_map(params![after, now_ms(), PAGE_SIZE as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect()
            })
            .await?;
        let cursor = (rows.len() == PAGE_SIZE).then(|| rows[rows.len() - 1].0 as u64);
        Ok(Page {
            keys: rows.into_iter().map(|(_, key)| key).collect(),
            cursor,
        })
    }

    pub(crate) async fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        let key = key.to_owned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            let sql = concat!(
                "SELECT value, expires_at FROM kv WHERE key = ? AND ",
                live!()
            );
            let current: Option<(Vec<u8>, Option<i64>)> = tx
                .prepare_cached(sql)?
                .query_row(params![key, now], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let result = add_to_counter(current.as_ref().map(|(v, _)| v.as_slice()), delta);
            if let Ok(next) = result {
                let expires = current.and_then(|(_, expires)| expires);
                write(&tx, &key, next.to_string().as_bytes(), expires)?;
            }
            tx.commit()?;
            Ok(result)
        })
        .await?
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read(&tx, &key, now_ms())?;
            if current != expected {
                return Ok(false);
            }
            write(&tx, &key, &new, None)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let keys = keys.to_vec();
        self.with(move |c| {
            let now = now_ms();
            keys.iter().map(|key| read(c, key, now)).collect()
        })
        .await
    }

    pub(crate) async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let pairs = pairs.to_vec();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (key, value) in &pairs {
                write(&tx, key, value, None)?;
            }
            tx.commit()
        })
        .await
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        let keys = keys.to_vec();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for key in &keys {
                tx.prepare_cached("DELETE FROM kv WHERE key = ?")?
                    .execute([key])?;
            }
            tx.commit()
        })
        .await
    }
}

/// Whether `err` means another connection holds a lock `f` needed.
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn read(c: &Connection, key: &str, now: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    let sql = concat!("SELECT value FROM kv WHERE key = ? AND ", live!());
    c.prepare_cached(sql)?
        .query_row(params![key, now], |row| row.get(0))
        .optional()
}

fn write(c: &Connection, key: &str, value: &[u8], expires: Option<i64>) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = ?2, expires_at = ?3",
    )?
    .execute(params![key, value, expires])
    .map(drop)
}

/// Milliseconds since the Unix epoch: expiry must survive a restart, so it
/// is wall-clock time.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
