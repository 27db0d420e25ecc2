//! An SQLite store whose database another connection has locked: the call
//! waits for the lock without holding up the thread that made it, so the
//! other requests a serving thread carries go on meanwhile.

use rusqlite::{Connection, TransactionBehavior};
use tern_kv::{Backend, Limits, SqliteStore, Store};

#[test]
fn a_locked_database_is_waited_for_off_the_calling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let store = Store::new(
        "default",
        Backend::Sqlite(SqliteStore::open(&path).unwrap()),
        Limits::default(),
    );
    // The write lock, held by another connection as another process would.
    let mut other = Connection::open(&path).unwrap();
    let lock = other
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let write = store.set("k", b"v", None);
            // Runs on this one thread only while the write waits elsewhere;
            // a write blocking the thread would give up on the lock first.
            let release = async move {
                tokio::task::yield_now().await;
                drop(lock);
            };
            let (written, ()) = tokio::join!(write, release);
            assert_eq!(written, Ok(()));
            assert_eq!(store.get("k").await, Ok(Some(b"v".to_vec())));
        });
}
