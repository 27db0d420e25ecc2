//! SQL databases for components (`sqlite_databases` in the manifest): real
//! SQLite files under the app's state directory, one per database name,
//! shared by every instance and kept open for the life of the app.
//!
//! A statement runs on tokio's blocking pool, so a long query holds no
//! worker thread that other requests need. It is bounded twice: by the
//! caller's budget (the request's timeout), after which SQLite's progress
//! handler interrupts it, and by dropping the call (the request's deadline
//! dropped the guest), which interrupts it the same way. A result is read
//! into memory up to [`MAX_RESULT_BYTES`]; a bigger one is an error that
//! asks for a `LIMIT`, so a guest cannot make the host hold a table.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as Raw, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// The most bytes of rows one statement may return.
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// How long a statement waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// SQLite virtual machine steps between two checks of a statement's budget.
const STEPS_PER_CHECK: i32 = 10_000;

/// The app's databases by name.
pub type Databases = Arc<BTreeMap<String, Arc<Database>>>;

/// One SQL value, as the Spin SDK's interfaces carry it.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// SQL `NULL`.
    Null,
}

/// What a statement gave back.
#[derive(Debug, Default)]
pub struct Rows {
    /// The result's column names, in order.
    pub columns: Vec<String>,
    /// Each row's values, one per column.
    pub rows: Vec<Vec<SqlValue>>,
    /// The connection's last inserted row id after the statement.
    pub last_insert_rowid: i64,
    /// Rows the statement changed (0 for a query).
    pub changes: u64,
}

/// Why a statement failed.
#[derive(Debug, PartialEq)]
pub enum SqlError {
    /// The disk or the database's size limit is full.
    Full,
    /// Anything else, in SQLite's words or Tern's.
    Io(String),
}

/// An open database file.
pub struct Database {
    name: String,
    conn: Arc<Mutex<Connection>>,
    /// The connection's turn: statements wait for it as futures (which a
    /// deadline drops), not as blocking threads parked on `conn`, so that
    /// a guest sending many at once cannot take tokio's blocking pool.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Where database `name` lives under `state_dir`.
pub fn database_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("sqlite").join(format!("{name}.db"))
}

/// Opens each database in `names` under `state_dir` (at the path
/// `configured` gives it, relative to `state_dir`, or the default one),
/// reusing those of `already` (a previous version of the app) by name. A
/// new file and its directory are created, readable by the owner only.
pub fn open_databases<'a>(
    names: impl IntoIterator<Item = &'a str>,
    state_dir: &Path,
    configured: &BTreeMap<String, PathBuf>,
    already: Option<&Databases>,
) -> Result<Databases, String> {
    let mut open = BTreeMap::new();
    for name in names {
        if open.contains_key(name) {
            continue;
        }
        let database = match already.and_then(|dbs| dbs.get(name)) {
            Some(db) => db.clone(),
            None => {
                let path = match configured.get(name) {
                    Some(path) => state_dir.join(path),
                    None => database_path(state_dir, name),
                };
                Arc::new(Database::open(name, &path)?)
            }
        };
        open.insert(name.to_owned(), database);
    }
    Ok(Arc::new(open))
}

impl Database {
    /// Opens (creating) the SQLite file at `path` as database `name`.
    pub fn open(name: &str, path: &Path) -> Result<Database, String> {
        let fail = |e: &dyn std::fmt::Display| {
            format!("sqlite database `{name}` ({}): {e}", path.display())
        };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(&e))?;
        }
        tern_kv::create_private(path).map_err(|e| fail(&e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| fail(&e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        confine(&mut conn).map_err(|e| fail(&e))?;
        Ok(Database {
            name: name.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::default(),
        })
    }

    /// The database's name in the manifest.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every statement of `sql` (the operator's, at start: `tern serve
    /// --sqlite`), with no parameters and no budget.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // The operator's SQL is not confined as a guest's is (a dump may
        // set pragmas, a seed may be long); the guests' confinement is
        // put back whatever happened.
        conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
            .map_err(sql_error)?;
        for limit in [
            Limit::SQLITE_LIMIT_ATTACHED,
            Limit::SQLITE_LIMIT_LENGTH,
            Limit::SQLITE_LIMIT_SQL_LENGTH,
        ] {
            conn.set_limit(limit, i32::MAX).map_err(sql_error)?;
        }
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
            .map_err(sql_error)?;
        let ran = conn.execute_batch(sql).map_err(sql_error);
        confine(&mut conn).map_err(sql_error)?;
        ran
    }

    /// Runs the first statement of `statement` with `params` bound to its
    /// `?` placeholders, for at most `budget`, and reads its rows.
    /// Dropping the returned future stops the statement.
    pub async fn execute(
        &self,
        statement: String,
        params: Vec<SqlValue>,
        budget: Duration,
    ) -> Result<Rows, SqlError> {
        let conn = self.conn.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let deadline = Instant::now() + budget;
        let turn = self.turn.clone().lock_owned().await;
        let task = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let interrupted = stop.clone();
            conn.progress_handler(
                STEPS_PER_CHECK,
                Some(move || interrupted.load(Ordering::Relaxed) || Instant::now() > deadline),
            )
            .map_err(sql_error)?;
            let result = run(&conn, &statement, &params);
            // Only the next statement's handler matters; it replaces this one.
            let _ = conn.progress_handler(STEPS_PER_CHECK, None::<fn() -> bool>);
            match result {
                Err(SqlError::Io(message)) if message.contains("interrupted") => {
                    Err(SqlError::Io(format!(
                        "statement stopped: it ran longer than {}ms",
                        budget.as_millis()
                    )))
                }
                other => other,
            }
        });
        task.await
            .unwrap_or_else(|_| Err(SqlError::Io("statement failed".into())))
    }
}

/// Sets the stop flag when the awaiting future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a guest's SQL may do on its database's connection: nothing beyond
/// that database. No other file (`ATTACH`, and `VACUUM INTO`, which
/// attaches; only a temporary database, as a plain `VACUUM` attaches), no
/// setting of the connection or the process (any pragma but the schema's
/// and the data's own, [`GUEST_PRAGMAS`]), no value or statement past
/// [`MAX_RESULT_BYTES`], and SQLite's defensive mode (no writable schema,
/// no corrupting the file by hand).
fn confine(conn: &mut Connection) -> rusqlite::Result<()> {
    let bound = i32::try_from(MAX_RESULT_BYTES).unwrap_or(i32::MAX);
    // One: the temporary database a plain `VACUUM` attaches as `''`.
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 1)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, bound)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, bound)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.authorizer(Some(|context: AuthContext<'_>| match context.action {
        // A temporary database (no file of anyone's) is the only one, and
        // may be detached again.
        AuthAction::Attach { filename: "" } | AuthAction::Detach { .. } => Authorization::Allow,
        AuthAction::Attach { .. } => Authorization::Deny,
        // An attach whose name is not a literal comes without it.
        AuthAction::Unknown { code, .. } if code == rusqlite::ffi::SQLITE_ATTACH => {
            Authorization::Deny
        }
        AuthAction::Pragma { pragma_name, .. }
            if !GUEST_PRAGMAS
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(pragma_name)) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }))
}

/// The pragmas a guest may run: its schema's and data's own. Others read
/// or change the connection (`busy_timeout`, `locking_mode`), the process
/// (`temp_store_directory`) or the host (`database_list` names the file).
const GUEST_PRAGMAS: &[&str] = &[
    "application_id",
    "defer_foreign_keys",
    "foreign_key_check",
    "foreign_key_list",
    "foreign_keys",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "recursive_triggers",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

fn run(conn: &Connection, statement: &str, params: &[SqlValue]) -> Result<Rows, SqlError> {
    let mut stmt = conn.prepare(statement).map_err(sql_error)?;
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(SqlError::Io(format!(
            "the statement has {expected} parameters, and {} were given",
            params.len()
        )));
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let bound: Vec<Raw> = params.iter().map(to_raw).collect();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(bound))
        .map_err(sql_error)?;
    while let Some(row) = cursor.next().map_err(sql_error)? {
        let mut values = Vec::with_capacity(columns.len());
        bytes += size_of::<Vec<SqlValue>>();
        for index in 0..columns.len() {
            // Counted before it is copied.
            let value = row.get_ref(index).map_err(sql_error)?;
            bytes += size_of::<SqlValue>()
                + match value {
                    ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
                    _ => 0,
                };
            if bytes > MAX_RESULT_BYTES {
                return Err(SqlError::Io(format!(
                    "the result is larger than {}MiB; ask for fewer rows with LIMIT",
                    MAX_RESULT_BYTES >> 20
                )));
            }
            values.push(from_ref(value));
        }
        rows.push(values);
    }
    drop(cursor);
    drop(stmt);
    Ok(Rows {
        columns,
        rows,
        last_insert_rowid: conn.last_insert_rowid(),
        changes: conn.changes(),
    })
}

fn to_raw(value: &SqlValue) -> Raw {
    match value {
        SqlValue::Integer(i) => Raw::Integer(*i),
        SqlValue::Real(f) => Raw::Real(*f),
        SqlValue::Text(s) => Raw::Text(s.clone()),
        SqlValue::Blob(b) => Raw::Blob(b.clone()),
        SqlValue::Null => Raw::Null,
    }
}

fn from_ref(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        ValueRef::Null => SqlValue::Null,
    }
}

fn sql_error(error: rusqlite::Error) -> SqlError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => SqlError::Full,
        Some(ErrorCode::OperationInterrupted) => SqlError::Io("interrupted".into()),
        // The authorizer's refusal, whichever way SQLite words it (a
        // statement it prepares itself, `VACUUM INTO`'s attach, loses the
        // text on the way).
        Some(ErrorCode::AuthorizationForStatementDenied) => SqlError::Io("not authorized".into()),
        _ => SqlError::Io(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open("default", &database_path(dir.path(), "default")).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn parameters_bind_and_every_type_comes_back() {
        let (_dir, db) = db();
        let second = Duration::from_secs(1);
        db.execute(
            "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)".into(),
            vec![],
            second,
        )
        .await
        .unwrap();
        let values = vec![
            SqlValue::Integer(-7),
            SqlValue::Real(2.5),
            SqlValue::Text("héllo".into()),
            SqlValue::Blob(vec![0, 255]),
            SqlValue::Null,
        ];
        let insert = db
            .execute(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)".into(),
                values.clone(),
                second,
            )
            .await
            .unwrap();
        assert_eq!((insert.last_insert_rowid, insert.changes), (1, 1));
        let rows = db
            .execute(
                "SELECT * FROM t WHERE i = ?".into(),
                vec![SqlValue::Integer(-7)],
                second,
            )
            .await
            .unwrap();
        assert_eq!(rows.columns, ["i", "r", "s", "b", "n"]);
        assert_eq!(rows.rows, [values]);
    }

    #[tokio::test]
    async fn a_guest_reaches_nothing_beyond_its_database() {
        let (dir, db) = db();
        let second = Duration::from_secs(1);
        let run = |sql: String| db.execute(sql, vec![], second);
        let other = dir.path().join("other.db");
        let other = other.to_str().unwrap();
        for sql in [
            format!("ATTACH '{other}' AS other"),
            format!("VACUUM INTO '{other}'"),
            "PRAGMA database_list".to_owned(),
            "SELECT * FROM pragma_database_list".to_owned(),
            "PRAGMA busy_timeout = 2147483647".to_owned(),
            "PRAGMA temp_store_directory = '/tmp'".to_owned(),
            "PRAGMA writable_schema = ON".to_owned(),
        ] {
            let refused = run(sql.clone()).await.unwrap_err();
            let SqlError::Io(why) = &refused else {
                panic!("{sql}: {refused:?}")
            };
            assert_eq!(why, "not authorized", "{sql}");
            assert!(!why.contains(dir.path().to_str().unwrap()), "{sql}: {why}");
        }
        assert!(!std::path::Path::new(other).exists(), "nothing was written");
        for sql in [
            format!("ATTACH ('{other}') AS other"),
            format!("ATTACH '{other}' || '' AS other"),
        ] {
            let refused = run(sql.clone()).await.unwrap_err();
            assert_eq!(refused, SqlError::Io("not authorized".into()), "{sql}");
        }
        // A temporary database is no file of anyone's: a plain VACUUM
        // attaches one.
        run("VACUUM".into()).await.unwrap();
        // The schema's own pragmas are the guest's.
        run("PRAGMA foreign_keys = ON".into()).await.unwrap();
        run("CREATE TABLE t (x)".into()).await.unwrap();
        let info = run("PRAGMA table_info(t)".into()).await.unwrap();
        assert_eq!(info.rows.len(), 1);
        // No value SQLite makes may be larger than a result may be.
        let big = run(format!("SELECT zeroblob({})", MAX_RESULT_BYTES + 1)).await;
        assert_eq!(
            big.unwrap_err(),
            SqlError::Io("string or blob too big".into())
        );
    }

    #[tokio::test]
    async fn errors_name_the_problem() {
        let (_dir, db) = db();
        let second = Duration::from_secs(1);
        let missing = db
            .execute("SELECT * FROM nowhere".into(), vec![], second)
            .await;
        assert_eq!(
            missing.unwrap_err(),
            SqlError::Io("no such table: nowhere".into())
        );
        let count = db.execute("SELECT ?".into(), vec![], second).await;
        assert_eq!(
            count.unwrap_err(),
            SqlError::Io("the statement has 1 parameters, and 0 were given".into())
        );
    }

    #[tokio::test]
    async fn a_statement_past_its_budget_is_stopped() {
        let (_dir, db) = db();
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        let started = Instant::now();
        let result = db
            .execute(endless.into(), vec![], Duration::from_millis(100))
            .await;
        assert_eq!(
            result.unwrap_err(),
            SqlError::Io("statement stopped: it ran longer than 100ms".into())
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The connection is usable afterwards.
        let one = db
            .execute("SELECT 1".into(), vec![], Duration::from_secs(1))
            .await;
        assert_eq!(one.unwrap().rows, [[SqlValue::Integer(1)]]);
    }

    #[tokio::test]
    async fn a_huge_result_is_refused() {
        let (_dir, db) = db();
        let big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000) SELECT x, zeroblob(1000) FROM c";
        let result = db
            .execute(big.into(), vec![], Duration::from_secs(10))
            .await;
        assert_eq!(
            result.unwrap_err(),
            SqlError::Io("the result is larger than 16MiB; ask for fewer rows with LIMIT".into())
        );
    }
}
