//! The embedded backend: one SQLite file per store, in WAL mode.
//!
//! A write returns once SQLite has committed it to the write-ahead log, so
//! it survives the server being killed (`synchronous = NORMAL` trades only
//! the last commits before a power loss, not a process crash). Calls are a
//! few microseconds and run on the calling thread under one mutex per
//! store; `BEGIN IMMEDIATE` keeps read-modify-write atomic even when another
//! process opens the same file. The connection's busy timeout is zero, so
//! no statement ever waits on the calling thread: a call that finds the file
//! locked by another connection waits on the runtime's timer instead and
//! tries again (see [`SqliteStore::with_checked`]), so a locked file delays
//! only the calls that use it.
//!
//! The bytes of keys and values the file holds are kept in `kv_size` by
//! triggers, in the same transaction as each change, so every process
//! sharing the file (and every version of Tern since) sees the same total;
//! a file made before the triggers existed is counted once when opened.
//! Writes check it against the store's quota before they commit.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::time::Instant;

use crate::{Budget, Error, PAGE_SIZE, Page, add_to_counter};

/// A store in an SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Writes with a time-to-live; every 256th also deletes expired rows.
    ttl_writes: AtomicU32,
}

/// How long a call waits for a lock another connection holds on the file
/// (another process, or `tern kv`) before it fails with
/// `sqlite store is unavailable: database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The pauses, in milliseconds, between tries of a call that found the file
/// locked, the last repeated until [`BUSY_TIMEOUT`]: those of SQLite's own
/// busy handler, which polls the same way (SQLite has no notice of another
/// process letting go of its lock).
const BUSY_PAUSES_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

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

/// The store's size, kept by triggers. Run in one transaction, so a file
/// that already has rows is counted exactly once, by whichever process
/// creates the table. Keys count their UTF-8 bytes (`length` of text
/// counts characters, hence the cast).
const SIZE_SCHEMA: &str = "
    BEGIN IMMEDIATE;
    CREATE TABLE IF NOT EXISTS kv_size (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        bytes INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO kv_size (id, bytes)
        SELECT 0, COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv;
    CREATE TRIGGER IF NOT EXISTS kv_size_insert AFTER INSERT ON kv BEGIN
        UPDATE kv_size SET bytes = bytes + length(CAST(NEW.key AS BLOB)) + length(NEW.value);
    END;
    CREATE TRIGGER IF NOT EXISTS kv_size_update AFTER UPDATE ON kv BEGIN
        UPDATE kv_size SET bytes = bytes
            + length(CAST(NEW.key AS BLOB)) + length(NEW.value)
            - length(CAST(OLD.key AS BLOB)) - length(OLD.value);
    END;
    CREATE TRIGGER IF NOT EXISTS kv_size_delete AFTER DELETE ON kv BEGIN
        UPDATE kv_size SET bytes = bytes - length(CAST(OLD.key AS BLOB)) - length(OLD.value);
    END;
    COMMIT;
";

/// Why a closure run on the connection failed: SQLite, or a store rule
/// (the transaction it was in rolls back either way).
enum Fail {
    Sql(rusqlite::Error),
    Kv(Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(err: rusqlite::Error) -> Self {
        Fail::Sql(err)
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Fail::Kv(err)
    }
}

impl Fail {
    fn into_error(self) -> Error {
        match self {
            Fail::Sql(err) => Error::sqlite(err),
            Fail::Kv(err) => err,
        }
    }
}

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
        create_private(path).map_err(|e| Error::Unavailable {
            backend: "sqlite",
            message: format!("cannot create the store's file: {e}"),
        })?;
        let conn = Connection::open(path).map_err(Error::sqlite)?;
        // Opening happens once, when the app is loaded, not on a serving
        // thread: it may wait for the file here.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(Error::sqlite)?;
        conn.execute_batch(SCHEMA).map_err(Error::sqlite)?;
        conn.execute_batch(SIZE_SCHEMA).map_err(Error::sqlite)?;
        conn.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])
            .map_err(Error::sqlite)?;
        // From here on a statement never waits: busy, it fails at once, and
        // `with_checked` waits off the thread and tries again.
        conn.busy_timeout(Duration::ZERO).map_err(Error::sqlite)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            ttl_writes: AtomicU32::new(0),
        })
    }

    /// Runs `f` on the connection, on the calling thread. With the busy
    /// timeout at zero, every statement returns at once: a call takes
    /// microseconds, and the store's mutex is never held longer.
    ///
    /// If another connection holds a lock `f` needs (`SQLITE_BUSY`), `f` has
    /// changed nothing: its statement or `BEGIN IMMEDIATE` did not start, or
    /// its transaction rolled back when `f` dropped it. The call then lets go
    /// of the connection, sleeps on the runtime's timer and runs `f` again,
    /// for up to [`BUSY_TIMEOUT`]. So a locked file delays only the calls
    /// that need its lock: the worker thread serves its other requests
    /// meanwhile, reads of this store still go through (WAL readers need no
    /// lock), and a call dropped while it waits (a request's deadline) stops
    /// at its sleep, having written nothing.
    ///
    /// `f` borrows the caller's keys and values and is simply called again,
    /// so no call copies them, whether it runs at once or has to wait. (Were
    /// the wait on a blocking thread instead, every call would need owned
    /// copies or a second, owned version of its closure, a blocked thread per
    /// waiting call, and a write dropped at its deadline could still commit
    /// afterwards.)
    async fn with_checked<R>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<R, Fail>,
    ) -> Result<R, Error> {
        // Set when the file is first found busy; the fast path reads no clock.
        let mut give_up = None;
        let mut tries = 0;
        loop {
            // The guard is dropped at the end of this statement: the
            // connection is free while the call sleeps.
            let attempt = f(&mut self.lock());
            let (now, deadline) = match attempt {
                Err(Fail::Sql(err)) if is_busy(&err) => {
                    let now = Instant::now();
                    let deadline = *give_up.get_or_insert(now + BUSY_TIMEOUT);
                    if now >= deadline {
                        return Err(Error::sqlite(err));
                    }
                    (now, deadline)
                }
                done => return done.map_err(Fail::into_error),
            };
            let pause = BUSY_PAUSES_MS[tries.min(BUSY_PAUSES_MS.len() - 1)];
            tries += 1;
            tokio::time::sleep_until((now + Duration::from_millis(pause)).min(deadline)).await;
        }
    }

    /// [`Self::with_checked`] for closures that fail only with SQLite errors.
    async fn with<R>(
        &self,
        mut f: impl FnMut(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, Error> {
        self.with_checked(|c| f(c).map_err(Fail::Sql)).await
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back whatever a panicking closure left open, so a
        // poisoned lock still guards a consistent connection.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|c| read(c, key, now_ms())).await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: u64,
    ) -> Result<(), Error> {
        let purge = ttl.is_some() && self.ttl_writes.fetch_add(1, Ordering::Relaxed) % 256 == 255;
        self.with_checked(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // From when the write is made, if it had to wait for the lock.
            let now = now_ms();
            let expires = ttl.map(|ttl| now.saturating_add(ttl.as_millis() as i64));
            if purge {
                tx.execute("DELETE FROM kv WHERE expires_at <= ?", [now])?;
            }
            let before = stored_bytes(&tx)?;
            write(&tx, key, value, expires)?;
            admit(&tx, before, quota)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM kv WHERE key = ?", [key]).map(drop))
            .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Error> {
        let sql = concat!("SELECT 1 FROM kv WHERE key = ? AND ", live!());
        self.with(|c| c.prepare_cached(sql)?.exists(params![key, now_ms()]))
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
            .with(|c| {
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

    pub(crate) async fn increment(&self, key: &str, delta: i64, quota: u64) -> Result<i64, Error> {
        self.with_checked(|c| {
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
            let next = add_to_counter(current.as_ref().map(|(v, _)| v.as_slice()), delta)?;
            let expires = current.and_then(|(_, expires)| expires);
            let before = stored_bytes(&tx)?;
            write(&tx, key, next.to_string().as_bytes(), expires)?;
            admit(&tx, before, quota)?;
            tx.commit()?;
            Ok(next)
        })
        .await
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        quota: u64,
    ) -> Result<bool, Error> {
        self.with_checked(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = read(&tx, key, now_ms())?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            let before = stored_bytes(&tx)?;
            write(&tx, key, new, None)?;
            admit(&tx, before, quota)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Reads `keys` under one lock. Each value's length is read first and
    /// counted against `budget`; the value itself only if it fits, so no
    /// more than the budget is ever copied out of SQLite.
    pub(crate) async fn get_many(
        &self,
        keys: &[String],
        budget: &mut Budget,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        // `length(value)` of a blob is read from the row header, without
        // loading the value.
        let sql = "SELECT length(value), CASE WHEN length(value) <= ?3 THEN value END
                   FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)";
        self.with_checked(|c| {
            // Counted against a copy, kept only when every key is read: a
            // read that finds the file busy starts again from the first key.
            let mut left = budget.clone();
            let now = now_ms();
            let mut stmt = c.prepare_cached(sql)?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                // -1: not even an empty value fits after this key.
                let room = left
                    .room_after(key)
                    .map_or(-1, |room| i64::try_from(room).unwrap_or(i64::MAX));
                let row: Option<(i64, Option<Vec<u8>>)> = stmt
                    .query_row(params![key, now, room], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                let value = match row {
                    None => None,
                    Some((_, None)) => return Err(left.exceeded().into()),
                    Some((_, Some(value))) => {
                        left.take(key, value.len())?;
                        Some(value)
                    }
                };
                values.push(value);
            }
            *budget = left;
            Ok(values)
        })
        .await
    }

    pub(crate) async fn set_many(
        &self,
        pairs: &[(String, Vec<u8>)],
        quota: u64,
    ) -> Result<(), Error> {
        self.with_checked(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = stored_bytes(&tx)?;
            for (key, value) in pairs {
                write(&tx, key, value, None)?;
            }
            admit(&tx, before, quota)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for key in keys {
                tx.prepare_cached("DELETE FROM kv WHERE key = ?")?
                    .execute([key])?;
            }
            tx.commit()
        })
        .await
    }
}

/// Whether `err` means another connection holds a lock the statement needs,
/// which waiting may free (what SQLite's busy timeout would wait for).
fn is_busy(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// The bytes of keys and values in the file, as the triggers keep them.
fn stored_bytes(c: &Connection) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT bytes FROM kv_size WHERE id = 0")?
        .query_row([], |row| row.get(0))
}

/// Checks, inside the write's transaction and after it, that the write
/// either did not grow the store (from `before` bytes) or left it within
/// `quota`; expired rows are purged before refusing. On an error the
/// caller's transaction rolls back, write and purge alike.
fn admit(c: &Connection, before: i64, quota: u64) -> Result<(), Fail> {
    let limit = i64::try_from(quota).unwrap_or(i64::MAX);
    let after = stored_bytes(c)?;
    if after <= before || after <= limit {
        return Ok(());
    }
    c.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])?;
    if stored_bytes(c)? <= limit {
        return Ok(());
    }
    Err(Fail::Kv(Error::StoreFull { max: quota }))
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

/// Creates an SQLite file with mode 0600 if it does not exist yet, before
/// SQLite opens it: SQLite creates its `-wal` and `-shm` files with the
/// database file's mode, so all three stay private to this user.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // An existing store keeps its mode; SQLite opens it as it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Milliseconds since the Unix epoch: expiry must survive a restart, so it
/// is wall-clock time.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No statement waits for a lock on the calling thread: that is left to
    /// `with_checked`, which waits on the runtime's timer (its behaviour is
    /// `tests/sqlite_busy.rs`).
    #[test]
    fn statements_never_wait_on_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("kv.sqlite")).unwrap();
        let timeout: i64 = store
            .lock()
            .pragma_query_value(None, "busy_timeout", |row| row.get(0))
            .unwrap();
        assert_eq!(timeout, 0);
    }

    #[cfg(unix)]
    #[test]
    fn store_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv/default.sqlite");
        let _store = SqliteStore::open(&path).unwrap();
        let wal = dir.path().join("kv/default.sqlite-wal");
        for file in [&path, &wal] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}
