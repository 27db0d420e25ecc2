//! An SQLite store whose file another connection has locked (`BEGIN
//! IMMEDIATE`, as another process or `tern kv` would): a call that needs the
//! lock waits for it without holding up the thread that made it, so the
//! other requests a serving thread carries go on meanwhile; one that needs
//! no lock is answered at once; and a lock held too long is an error after
//! 5 s. Everything runs on one current-thread runtime, as a serving worker
//! thread does, and the steps are ordered by polling, not by sleeping.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rusqlite::Connection;
use tern_kv::{Backend, Error, Limits, SqliteStore, Store};

/// A store at `dir/kv.sqlite`, and another connection to its file.
fn store_and_other(dir: &tempfile::TempDir) -> (Arc<Store>, Connection) {
    let path = dir.path().join("kv.sqlite");
    let store = Store::new(
        "default",
        Backend::Sqlite(SqliteStore::open(&path).unwrap()),
        Limits::default(),
    );
    let other = Connection::open(&path).unwrap();
    (Arc::new(store), other)
}

/// A current-thread runtime, as each serving worker thread has.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `fut` once.
async fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

#[test]
fn a_locked_file_delays_only_the_calls_that_need_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (store, other) = store_and_other(&dir);
    runtime().block_on(async {
        store.set("k", b"before", None).await.unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let mut write = pin!(store.set("k", b"after", None));
        assert!(
            poll_once(write.as_mut()).await.is_pending(),
            "the write did not wait for the lock"
        );
        // It did not wait on this thread first: the connection's busy
        // timeout is zero (`statements_never_wait_on_the_calling_thread` in
        // `src/sqlite.rs`), so the first poll returned at once.

        // A read needs no write lock (WAL): answered on its first poll,
        // while the write waits.
        let mut read = pin!(store.get("k"));
        assert_eq!(
            poll_once(read.as_mut()).await,
            Poll::Ready(Ok(Some(b"before".to_vec())))
        );
        // Another task on this runtime (another request on this worker
        // thread) runs to its end meanwhile.
        let task = tokio::spawn({
            let store = store.clone();
            async move { store.exists("k").await }
        });
        assert_eq!(task.await.unwrap(), Ok(true));
        assert!(poll_once(write.as_mut()).await.is_pending());

        // The other connection lets go: the write goes through.
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(write.await, Ok(()));
        assert_eq!(store.get("k").await, Ok(Some(b"after".to_vec())));
    });
}

/// A store call that writes, boxed to be polled among others.
type Write<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

/// Every call that writes waits for the lock, none writes before it has
/// it, and all of them go through once it is free.
#[test]
fn every_write_waits_for_the_lock_and_then_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let (store, other) = store_and_other(&dir);
    runtime().block_on(async {
        store.set("gone", b"x", None).await.unwrap();
        store.set("gone2", b"x", None).await.unwrap();
        store.set("n", b"1", None).await.unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let pairs = vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ];
        let gone2 = vec!["gone2".to_string()];
        let mut writes: Vec<Write<'_>> = vec![
            Box::pin(store.set("t", b"v", Some(Duration::from_secs(60)))),
            Box::pin(store.delete("gone")),
            Box::pin(async { store.increment("n", 2).await.map(drop) }),
            Box::pin(async {
                let swapped = store.compare_and_swap("cas", None, b"new").await?;
                assert!(swapped);
                Ok(())
            }),
            Box::pin(store.set_many(&pairs)),
            Box::pin(store.delete_many(&gone2)),
        ];
        for (i, write) in writes.iter_mut().enumerate() {
            assert!(
                poll_once(write.as_mut()).await.is_pending(),
                "write {i} did not wait for the lock"
            );
        }
        // Nothing was written meanwhile.
        let keys = ["gone", "gone2", "n", "t", "cas", "a"].map(String::from);
        let seen = store.get_many(&keys).await.unwrap();
        let seen: Vec<_> = seen.iter().map(Option::as_deref).collect();
        assert_eq!(
            seen,
            [Some(&b"x"[..]), Some(b"x"), Some(b"1"), None, None, None]
        );

        other.execute_batch("COMMIT").unwrap();
        for write in writes {
            assert_eq!(write.await, Ok(()));
        }
        assert_eq!(store.all_keys().await.unwrap(), ["a", "b", "cas", "n", "t"]);
        assert_eq!(store.get("n").await, Ok(Some(b"3".to_vec())));
        assert_eq!(store.get("cas").await, Ok(Some(b"new".to_vec())));
    });
}

/// A call dropped while it waits (a request's deadline) stops there: it
/// writes nothing, even once the lock is free.
#[test]
fn a_write_dropped_while_it_waits_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, other) = store_and_other(&dir);
    runtime().block_on(async {
        store.set("k", b"before", None).await.unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut write = pin!(store.set("k", b"after", None));
            assert!(poll_once(write.as_mut()).await.is_pending());
        }
        other.execute_batch("COMMIT").unwrap();
        // The connection is free, and the dropped write left nothing behind.
        store.set("other", b"v", None).await.unwrap();
        assert_eq!(store.get("k").await, Ok(Some(b"before".to_vec())));
    });
}

/// A lock held past 5 s: the call fails then, with an error the guest sees.
/// The runtime's clock is paused and jumps ahead whenever every task
/// sleeps, so the test takes no 5 s of its own.
#[test]
fn a_lock_held_too_long_is_an_error_after_5s() {
    let dir = tempfile::tempdir().unwrap();
    let (store, other) = store_and_other(&dir);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            let start = tokio::time::Instant::now();
            let err = store.set("k", b"v", None).await.unwrap_err();
            let waited = start.elapsed();
            assert_eq!(
                err.to_string(),
                "sqlite store is unavailable: database is locked"
            );
            assert!(
                (Duration::from_secs(5)..Duration::from_millis(5100)).contains(&waited),
                "waited {waited:?}"
            );
            other.execute_batch("ROLLBACK").unwrap();
            store.set("k", b"v", None).await.unwrap();
        });
}

/// The host awaits store calls from wasmtime's async host functions, which
/// need `Send` futures: waiting for a lock keeps them so. (Checked when this
/// compiles; the futures are made and dropped, never polled.)
#[test]
fn store_calls_are_send() {
    fn send<T: Send>(_: T) {}
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_and_other(&dir);
    let (keys, pairs) = (
        vec!["k".to_string()],
        vec![("k".to_string(), b"v".to_vec())],
    );
    send(store.get("k"));
    send(store.set("k", b"v", None));
    send(store.delete("k"));
    send(store.exists("k"));
    send(store.list_keys(None));
    send(store.increment("k", 1));
    send(store.compare_and_swap("k", None, b"v"));
    send(store.get_many(&keys));
    send(store.set_many(&pairs));
    send(store.delete_many(&keys));
}
