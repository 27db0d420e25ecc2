//! The embedded backend: one SQLite file per store, in WAL mode.
//!
//! A write returns once SQLite has committed it to the write-ahead log, so
//! it survives the server being killed (`synchronous = NORMAL` trades only
//! the last commits before a power loss, not a process crash). Calls are a
//! few microseconds and run on the calling thread under one mutex per
//! store; `BEGIN IMMEDIATE` keeps read-modify-write atomic even when another
//! process opens the same file.
//!
//! The bytes of keys and values the file holds are kept in `kv_size` by
//! triggers, in the same transaction as each change, so every process
//! sharing the file (and every version of Tern since) sees the same total;
//! a file made before the triggers existed is counted once when opened.
//! Writes check it against the store's quota before they commit.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{Budget, Error, PAGE_SIZE, Page, add_to_counter};

/// A store in an SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Writes with a time-to-live; every 256th also deletes expired rows.
    ttl_writes: AtomicU32,
}

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
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(Error::sqlite)?;
        conn.execute_batch(SCHEMA).map_err(Error::sqlite)?;
        conn.execute_batch(SIZE_SCHEMA).map_err(Error::sqlite)?;
        conn.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])
            .map_err(Error::sqlite)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            ttl_writes: AtomicU32::new(0),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>) -> Result<R, Error> {
        // SQLite rolls back whatever a panicking closure left open, so a
        // poisoned lock still guards a consistent connection.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn).map_err(Error::sqlite)
    }

    /// [`Self::with`] for closures that may also fail with a store error.
    fn with_checked<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, Fail>,
    ) -> Result<R, Error> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn).map_err(|fail| match fail {
            Fail::Sql(err) => Error::sqlite(err),
            Fail::Kv(err) => err,
        })
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|c| read(c, key, now_ms()))
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        quota: u64,
    ) -> Result<(), Error> {
        let expires = ttl.map(|ttl| now_ms().saturating_add(ttl.as_millis() as i64));
        let purge = ttl.is_some() && self.ttl_writes.fetch_add(1, Ordering::Relaxed) % 256 == 255;
        self.with_checked(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if purge {
                tx.execute("DELETE FROM kv WHERE expires_at <= ?", [now_ms()])?;
            }
            let before = stored_bytes(&tx)?;
            write(&tx, key, value, expires)?;
            admit(&tx, before, quota)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM kv WHERE key = ?", [key]).map(drop))
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Error> {
        let sql = concat!("SELECT 1 FROM kv WHERE key = ? AND ", live!());
        self.with(|c| c.prepare_cached(sql)?.exists(params![key, now_ms()]))
    }

    pub(crate) async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        // The cursor is the last rowid returned: stable under inserts.
        let sql = concat!(
            "SELECT rowid, key FROM kv WHERE rowid > ? AND ",
            live!(),
            " ORDER BY rowid LIMIT ?"
        );
        let after = cursor.unwrap_or(0) as i64;
        let rows: Vec<(i64, String)> = self.with(|c| {
            c.prepare_cached(sql)?
                .query_map(params![after, now_ms(), PAGE_SIZE as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect()
        })?;
        let cursor = (rows.len() == PAGE_SIZE).then(|| rows[rows.len() - 1].0 as u64);
        Ok(Page {
            keys: rows.into_iter().map(|(_, key)| key).collect(),
            cursor,
        })
    }

    pub(crate) async fn increment(&self, key: &str, delta: u64, quota: u64) -> Result<u64, Error> {
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
            let now = now_ms();
            let mut stmt = c.prepare_cached(sql)?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                // -1: not even an empty value fits after this key.
                let room = budget
                    .room_after(key)
                    .map_or(-1, |room| i64::try_from(room).unwrap_or(i64::MAX));
                let row: Option<(i64, Option<Vec<u8>>)> = stmt
                    .query_row(params![key, now, room], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                let value = match row {
                    None => None,
                    Some((_, None)) => return Err(budget.exceeded().into()),
                    Some((_, Some(value))) => {
                        budget.take(key, value.len())?;
                        Some(value)
                    }
                };
                values.push(value);
            }
            Ok(values)
        })
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
    }
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

/// Creates the store's file with mode 0600 if it does not exist yet, before
/// SQLite opens it: SQLite creates its `-wal` and `-shm` files with the
/// database file's mode, so all three stay private to this user.
fn create_private(path: &Path) -> std::io::Result<()> {
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn store_files_are_private() {
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
