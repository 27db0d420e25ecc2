//! One suite, every backend: each case in `cases` runs against memory,
//! SQLite (a real file) and Redis (a real `redis-server` per test).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tern_kv::{Backend, Error, Limits, MemoryStore, RedisConfig, RedisStore, SqliteStore, Store};
use test_programs::redis::RedisServer;

/// A backend under test: the store, and a way to open a second, independent
/// handle on the same data (another connection, as another process would).
trait Fixture {
    fn store(&self) -> Arc<Store>;
    fn another(&self) -> Arc<Store>;
    /// A new, empty store on the same kind of backend, with `limits`.
    fn fresh(&self, limits: Limits) -> Store;
}

/// Names fresh stores apart.
static FRESH: AtomicUsize = AtomicUsize::new(0);

fn fresh_name() -> String {
    format!("fresh{}", FRESH.fetch_add(1, Ordering::Relaxed))
}

struct Memory(Arc<Store>);

impl Memory {
    fn new() -> Self {
        Memory(Arc::new(store(Backend::Memory(MemoryStore::new()))))
    }
}

impl Fixture for Memory {
    fn store(&self) -> Arc<Store> {
        self.0.clone()
    }
    fn another(&self) -> Arc<Store> {
        self.0.clone()
    }
    fn fresh(&self, limits: Limits) -> Store {
        Store::new("fresh", Backend::Memory(MemoryStore::new()), limits)
    }
}

struct Sqlite(tempfile::TempDir, Arc<Store>);

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let first = Self::open(&dir);
        Sqlite(dir, first)
    }
    fn open(dir: &tempfile::TempDir) -> Arc<Store> {
        let path = dir.path().join("stores/default.sqlite");
        Arc::new(store(Backend::Sqlite(SqliteStore::open(&path).unwrap())))
    }
}

impl Fixture for Sqlite {
    fn store(&self) -> Arc<Store> {
        self.1.clone()
    }
    fn another(&self) -> Arc<Store> {
        Self::open(&self.0)
    }
    fn fresh(&self, limits: Limits) -> Store {
        let path = self
            .0
            .path()
            .join(format!("stores/{}.sqlite", fresh_name()));
        let backend = Backend::Sqlite(SqliteStore::open(&path).unwrap());
        Store::new("fresh", backend, limits)
    }
}

struct Redis(RedisServer, Arc<Store>);

impl Redis {
    fn new() -> Self {
        let server = RedisServer::start();
        let first = Self::open(&server);
        Redis(server, first)
    }
    fn open(server: &RedisServer) -> Arc<Store> {
        let mut config = RedisConfig::new(server.url());
        config.key_prefix = "default:".into();
        Arc::new(store(Backend::Redis(Box::new(
            RedisStore::new(&config).unwrap(),
        ))))
    }
}

impl Fixture for Redis {
    fn store(&self) -> Arc<Store> {
        self.1.clone()
    }
    fn another(&self) -> Arc<Store> {
        Self::open(&self.0)
    }
    fn fresh(&self, limits: Limits) -> Store {
        let mut config = RedisConfig::new(self.0.url());
        config.key_prefix = format!("{}:", fresh_name());
        let backend = Backend::Redis(Box::new(RedisStore::new(&config).unwrap()));
        Store::new("fresh", backend, limits)
    }
}

fn store(backend: Backend) -> Store {
    let limits = Limits {
        max_key_size: 16,
        max_value_size: 64,
        ..Limits::default()
    };
    Store::new("default", backend, limits)
}

/// Small limits, so the batch and quota cases stay small.
const SMALL: Limits = Limits {
    max_key_size: 16,
    max_value_size: 64,
    max_batch_keys: 4,
    max_batch_size: 200,
    max_store_size: 100,
};

/// Runs `case` on a fresh runtime against a fresh fixture.
fn run<F: Fixture, Fut: Future<Output = ()>>(fixture: F, case: impl FnOnce(F) -> Fut) {
    block_on(case(fixture));
}

fn block_on(fut: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut);
}

/// Declares every case for one backend.
macro_rules! conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $fixture;
                set_get_overwrite, delete_and_exists, increment_counts_from_zero,
                increment_refuses_non_counters, compare_and_swap, expiry, plain_set_clears_expiry,
                list_keys_pages_through_everything, batches, limits_are_enforced,
                concurrent_increments_lose_nothing, second_handle_sees_writes,
                batch_key_count_is_capped, get_many_stops_at_the_byte_cap,
                set_many_is_capped_by_bytes, the_issue_s_get_many_is_refused,
                batch_reads_yield_and_can_be_dropped);
        }
    };
    // The quota is enforced on the backends that can count a store's bytes.
    (quota: $backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $fixture;
                quota_refuses_writes_that_grow_a_full_store, expired_keys_make_room);
        }
    };
    (@cases $fixture:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                run($fixture, cases::$case);
            }
        )*
    };
}

conformance!(memory, Memory::new());
conformance!(sqlite, Sqlite::new());
conformance!(redis, Redis::new());

mod quota {
    use super::*;
    conformance!(quota: memory, Memory::new());
    conformance!(quota: sqlite, Sqlite::new());
}

mod cases {
    use super::*;

    pub async fn set_get_overwrite(f: impl Fixture) {
        let s = f.store();
        assert_eq!(s.get("a").await, Ok(None));
        s.set("a", b"one", None).await.unwrap();
        assert_eq!(s.get("a").await, Ok(Some(b"one".to_vec())));
        s.set("a", b"", None).await.unwrap();
        assert_eq!(
            s.get("a").await,
            Ok(Some(Vec::new())),
            "empty values are values"
        );
        s.set("a", &[0, 255, 1], None).await.unwrap();
        assert_eq!(
            s.get("a").await,
            Ok(Some(vec![0, 255, 1])),
            "values are bytes"
        );
    }

    pub async fn delete_and_exists(f: impl Fixture) {
        let s = f.store();
        s.set("k", b"v", None).await.unwrap();
        assert_eq!(s.exists("k").await, Ok(true));
        s.delete("k").await.unwrap();
        assert_eq!(s.exists("k").await, Ok(false));
        assert_eq!(s.get("k").await, Ok(None));
        s.delete("k").await.expect("deleting an absent key is fine");
    }

    pub async fn increment_counts_from_zero(f: impl Fixture) {
        let s = f.store();
        assert_eq!(s.increment("n", 5).await, Ok(5));
        assert_eq!(s.increment("n", 1).await, Ok(6));
        assert_eq!(
            s.get("n").await,
            Ok(Some(b"6".to_vec())),
            "counters are decimal text"
        );
        s.set("m", b"41", None).await.unwrap();
        assert_eq!(s.increment("m", 1).await, Ok(42));
        assert_eq!(s.increment("m", 0).await, Ok(42));
        assert_eq!(
            s.increment("m", -50).await,
            Ok(-8),
            "deltas may be negative"
        );
        assert_eq!(s.get("m").await, Ok(Some(b"-8".to_vec())));
        assert_eq!(s.increment("m", 8).await, Ok(0));
        assert_eq!(
            s.get("m").await,
            Ok(Some(b"0".to_vec())),
            "zero has no sign"
        );
    }

    pub async fn increment_refuses_non_counters(f: impl Fixture) {
        let s = f.store();
        s.set("word", b"hello", None).await.unwrap();
        assert_eq!(s.increment("word", 1).await, Err(Error::NotACounter));
        assert_eq!(
            s.get("word").await,
            Ok(Some(b"hello".to_vec())),
            "left alone"
        );
        for not_counter in ["-0", "--5", "-", "+5", "007", "-07", "", "1e3", " 1"] {
            s.set("odd", not_counter.as_bytes(), None).await.unwrap();
            assert_eq!(
                s.increment("odd", 1).await,
                Err(Error::NotACounter),
                "{not_counter:?}"
            );
            assert_eq!(
                s.get("odd").await,
                Ok(Some(not_counter.as_bytes().to_vec()))
            );
        }
        s.set("big", (i64::MAX as u64).to_string().as_bytes(), None)
            .await
            .unwrap();
        assert_eq!(s.increment("big", 1).await, Err(Error::Overflow));
        s.set("small", i64::MIN.to_string().as_bytes(), None)
            .await
            .unwrap();
        assert_eq!(s.increment("small", -1).await, Err(Error::Overflow));
        assert_eq!(s.increment("small", 1).await, Ok(i64::MIN + 1));
    }

    pub async fn compare_and_swap(f: impl Fixture) {
        let s = f.store();
        assert_eq!(s.compare_and_swap("c", None, b"1").await, Ok(true));
        assert_eq!(
            s.compare_and_swap("c", None, b"2").await,
            Ok(false),
            "no longer absent"
        );
        assert_eq!(s.compare_and_swap("c", Some(b"0"), b"2").await, Ok(false));
        assert_eq!(
            s.get("c").await,
            Ok(Some(b"1".to_vec())),
            "a failed swap writes nothing"
        );
        assert_eq!(s.compare_and_swap("c", Some(b"1"), b"2").await, Ok(true));
        assert_eq!(s.get("c").await, Ok(Some(b"2".to_vec())));
        assert_eq!(
            s.compare_and_swap("d", Some(b""), b"x").await,
            Ok(false),
            "absent is not empty"
        );
    }

    pub async fn expiry(f: impl Fixture) {
        let s = f.store();
        s.set("short", b"v", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        s.set("long", b"v", Some(Duration::from_secs(600)))
            .await
            .unwrap();
        assert_eq!(
            s.set("zero", b"v", Some(Duration::ZERO)).await,
            Err(Error::ZeroTtl)
        );
        let forever = Some(Duration::from_millis(u64::MAX));
        assert_eq!(
            s.set("forever", b"v", forever).await,
            Err(Error::TtlTooLong)
        );
        // Waiting for the clock is what is under test here; the bound only
        // turns a key that never expires into a failure.
        let start = Instant::now();
        while s.exists("short").await.unwrap() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "`short` never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.get("short").await, Ok(None));
        assert_eq!(
            s.all_keys().await,
            Ok(vec!["long".to_string()]),
            "expired keys are not listed"
        );
        assert_eq!(
            s.increment("short", 1).await,
            Ok(1),
            "an expired counter starts again"
        );
        assert_eq!(s.get("long").await, Ok(Some(b"v".to_vec())));
    }

    pub async fn plain_set_clears_expiry(f: impl Fixture) {
        let s = f.store();
        s.set("k", b"v", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        s.set("k", b"w", None).await.unwrap();
        s.set("probe", b"v", Some(Duration::from_millis(30)))
            .await
            .unwrap();
        let start = Instant::now();
        while s.exists("probe").await.unwrap() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "`probe` never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            s.get("k").await,
            Ok(Some(b"w".to_vec())),
            "`k` outlived its old expiry"
        );
    }

    pub async fn list_keys_pages_through_everything(f: impl Fixture) {
        let s = f.store();
        assert_eq!(s.all_keys().await, Ok(Vec::new()));
        let mut expected: Vec<String> = (0..2500).map(|i| format!("key{i:05}")).collect();
        for chunk in expected.chunks(500) {
            let pairs: Vec<_> = chunk.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
            s.set_many(&pairs).await.unwrap();
        }
        let first = s.list_keys(None).await.unwrap();
        assert!(first.cursor.is_some(), "2500 keys take more than one page");
        // Redis treats the page size as a hint, so only "not everything".
        assert!(first.keys.len() < 2500, "{}", first.keys.len());
        expected.sort();
        assert_eq!(s.all_keys().await.unwrap(), expected);
    }

    pub async fn batches(f: impl Fixture) {
        let s = f.store();
        let pairs = vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ];
        s.set_many(&pairs).await.unwrap();
        let keys = ["a", "missing", "b"].map(String::from);
        assert_eq!(
            s.get_many(&keys).await,
            Ok(vec![Some(b"1".to_vec()), None, Some(b"2".to_vec())])
        );
        s.delete_many(&["a".to_string(), "missing".to_string()])
            .await
            .unwrap();
        assert_eq!(s.all_keys().await, Ok(vec!["b".to_string()]));
        assert_eq!(s.get_many(&[]).await, Ok(Vec::new()));
    }

    pub async fn limits_are_enforced(f: impl Fixture) {
        let s = f.store();
        let long = "k".repeat(17);
        let too_long = Err(Error::KeyTooLong { len: 17, max: 16 });
        assert_eq!(s.set(&long, b"v", None).await, too_long);
        assert_eq!(s.get(&long).await.map(drop), too_long);
        assert_eq!(s.increment(&long, 1).await.map(drop), too_long);
        s.set(&"k".repeat(16), b"v", None)
            .await
            .expect("a key at the limit is fine");
        let big = vec![0; 65];
        assert_eq!(
            s.set("k", &big, None).await,
            Err(Error::ValueTooLarge { len: 65, max: 64 })
        );
        assert_eq!(
            s.compare_and_swap("k", None, &big).await,
            Err(Error::ValueTooLarge { len: 65, max: 64 })
        );
        assert_eq!(s.set("", b"v", None).await, Err(Error::EmptyKey));
        assert_eq!(
            Error::KeyTooLong { len: 17, max: 16 }.to_string(),
            "key is 17 bytes, above the limit of 16 bytes"
        );
    }

    /// Four threads, each with its own handle (connection, file handle) as
    /// separate processes would have, increment one counter.
    pub async fn concurrent_increments_lose_nothing(f: impl Fixture) {
        const THREADS: u64 = 4;
        const EACH: u64 = 200;
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let store = f.another();
                std::thread::spawn(move || {
                    block_on(async move {
                        for _ in 0..EACH {
                            store.increment("hits", 1).await.unwrap();
                        }
                    })
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let total = (THREADS * EACH).to_string();
        assert_eq!(f.store().get("hits").await, Ok(Some(total.into_bytes())));
    }

    pub async fn second_handle_sees_writes(f: impl Fixture) {
        let (a, b) = (f.store(), f.another());
        a.set("shared", b"from a", None).await.unwrap();
        assert_eq!(b.get("shared").await, Ok(Some(b"from a".to_vec())));
        assert_eq!(
            b.compare_and_swap("shared", Some(b"from a"), b"from b")
                .await,
            Ok(true)
        );
        assert_eq!(a.get("shared").await, Ok(Some(b"from b".to_vec())));
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| k.to_string()).collect()
    }

    pub async fn batch_key_count_is_capped(f: impl Fixture) {
        let s = f.fresh(SMALL);
        let four = keys(&["a", "b", "c", "d"]);
        let five = keys(&["a", "b", "c", "d", "e"]);
        let too_many = || Error::TooManyKeys { len: 5, max: 4 };
        let pairs = |keys: &[String]| -> Vec<(String, Vec<u8>)> {
            keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect()
        };
        assert_eq!(s.set_many(&pairs(&five)).await, Err(too_many()));
        assert_eq!(s.all_keys().await, Ok(Vec::new()), "nothing written");
        s.set_many(&pairs(&four)).await.expect("four keys are fine");
        assert_eq!(s.get_many(&five).await, Err(too_many()));
        assert_eq!(s.get_many(&four).await.unwrap().len(), 4);
        assert_eq!(s.delete_many(&five).await, Err(too_many()));
        assert_eq!(s.all_keys().await, Ok(four.clone()), "nothing deleted");
        s.delete_many(&four).await.unwrap();
        assert_eq!(
            too_many().to_string(),
            "the batch has 5 keys, above the limit of 4 keys per batch"
        );
    }

    pub async fn get_many_stops_at_the_byte_cap(f: impl Fixture) {
        let s = f.fresh(SMALL);
        let value = vec![7; 60];
        s.set("big", &value, None).await.unwrap();
        s.set("e", b"", None).await.unwrap();
        // Each `big` found counts 3 + 60 bytes, against 200.
        let three = s.get_many(&keys(&["big", "big", "nope", "big"])).await;
        assert_eq!(
            three,
            Ok(vec![
                Some(value.clone()),
                Some(value.clone()),
                None,
                Some(value.clone())
            ]),
            "absent keys count nothing"
        );
        let too_large = Err(Error::ResultTooLarge { max: 200 });
        assert_eq!(
            s.get_many(&keys(&["big", "big", "big", "big"])).await,
            too_large
        );
        assert_eq!(
            s.get_many(&keys(&["e", "e", "e", "e"])).await,
            Ok(vec![Some(Vec::new()); 4]),
            "empty values are found"
        );
        assert_eq!(
            Error::ResultTooLarge { max: 200 }.to_string(),
            "the keys and values found come to more than 200 bytes, the limit per batch (ask for fewer keys at a time)"
        );
        assert_eq!(
            s.get("big").await,
            Ok(Some(value)),
            "the store still serves"
        );
    }

    pub async fn set_many_is_capped_by_bytes(f: impl Fixture) {
        let s = f.fresh(Limits {
            max_store_size: u64::MAX,
            ..SMALL
        });
        let pair = |k: &str| (k.to_string(), vec![1; 60]);
        let err = s
            .set_many(&[pair("a"), pair("b"), pair("c"), pair("d")])
            .await;
        assert_eq!(err, Err(Error::BatchTooLarge { len: 244, max: 200 }));
        assert_eq!(s.all_keys().await, Ok(Vec::new()), "nothing written");
        s.set_many(&[pair("a"), pair("b"), pair("c")])
            .await
            .expect("183 bytes are fine");
        assert_eq!(
            Error::BatchTooLarge { len: 244, max: 200 }.to_string(),
            "the batch is 244 bytes, above the limit of 200 bytes per batch"
        );
    }

    /// The batch from the issue: 1,500 copies of a key holding 1 MiB, under
    /// the default limits, used to build 1.5 GiB on the host.
    pub async fn the_issue_s_get_many_is_refused(f: impl Fixture) {
        let s = f.fresh(Limits::default());
        let mib = vec![b'x'; Limits::DEFAULT_VALUE_SIZE];
        s.set("big", &mib, None).await.unwrap();
        let copies = |n: usize| vec!["big".to_string(); n];
        assert_eq!(
            s.get_many(&copies(1500)).await,
            Err(Error::TooManyKeys {
                len: 1500,
                max: 1000
            })
        );
        let start = Instant::now();
        assert_eq!(
            s.get_many(&copies(1000)).await,
            Err(Error::ResultTooLarge { max: 16 << 20 })
        );
        // Reading stops after 16 values, not 1000.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
        let fifteen = s.get_many(&copies(15)).await.unwrap();
        assert!(fifteen.iter().all(|v| v.as_deref() == Some(&mib[..])));
    }

    /// A long batch read yields between chunks, so the request's deadline
    /// can drop it there; dropped, it leaves the store as it was.
    pub async fn batch_reads_yield_and_can_be_dropped(f: impl Fixture) {
        let s = f.store();
        s.set("k", b"v", None).await.unwrap();
        let many = vec!["k".to_string(); 500];
        {
            let mut read = pin!(s.get_many(&many));
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "500 keys were read without yielding");
        }
        s.set("k", b"w", None).await.expect("no lock is left held");
        let values = s.get_many(&many).await.unwrap();
        assert!(values.iter().all(|v| v.as_deref() == Some(&b"w"[..])));
    }

    pub async fn quota_refuses_writes_that_grow_a_full_store(f: impl Fixture) {
        // 100 bytes of keys and values.
        let s = f.fresh(SMALL);
        let full = || Err(Error::StoreFull { max: 100 });
        let full_bool = || Err(Error::StoreFull { max: 100 });
        let full_u64 = || Err(Error::StoreFull { max: 100 });
        s.set("a", &[1; 40], None).await.unwrap();
        s.set("b", &[2; 40], None).await.unwrap(); // 82 bytes
        assert_eq!(s.set("c", &[3; 40], None).await, full());
        assert_eq!(s.get("c").await, Ok(None), "a refused write writes nothing");
        s.set("a", &[1; 50], None).await.expect("92 bytes fit");
        assert_eq!(s.set("a", &[1; 60], None).await, full(), "102 do not");
        s.set("b", &[2; 40], None)
            .await
            .expect("an overwrite of the same size does not grow the store");
        s.set("a", &[1; 30], None).await.expect("shrinking"); // 72 bytes
        let pairs = [
            ("c".to_string(), vec![3; 20]),
            ("d".to_string(), vec![4; 20]),
        ];
        assert_eq!(s.set_many(&pairs).await, full(), "114 bytes");
        assert_eq!(s.get("c").await, Ok(None), "all or none");
        assert_eq!(s.get("d").await, Ok(None), "all or none");
        assert_eq!(s.increment("n", 7).await, Ok(7)); // 74 bytes
        assert_eq!(s.compare_and_swap("x", None, &[5; 30]).await, full_bool());
        assert_eq!(s.get("x").await, Ok(None));
        s.set("f", &[6; 20], None).await.unwrap(); // 95 bytes
        assert_eq!(
            s.increment("counter-0123", 1).await,
            full_u64(),
            "108 bytes"
        );
        assert_eq!(s.get("counter-0123").await, Ok(None));
        s.delete_many(&keys(&["b", "f"])).await.unwrap(); // 33 bytes
        s.set("c", &[3; 40], None)
            .await
            .expect("deleting made room");
        s.set_many(&pairs[1..]).await.expect("95 bytes");
        assert_eq!(
            Error::StoreFull { max: 100 }.to_string(),
            "the store is full: this write would take it past its quota of 100 bytes"
        );
    }

    pub async fn expired_keys_make_room(f: impl Fixture) {
        let s = f.fresh(SMALL);
        s.set("t", &[1; 60], Some(Duration::from_millis(30)))
            .await
            .unwrap();
        let start = Instant::now();
        while s.exists("t").await.unwrap() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "`t` never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // 61 + 61 bytes, until the expired key is purged.
        s.set("a", &[2; 60], None)
            .await
            .expect("the expired key was purged to make room");
        assert_eq!(
            s.set("b", &[3; 60], None).await,
            Err(Error::StoreFull { max: 100 })
        );
    }
}

#[test]
fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let first = Sqlite::open(&dir);
    block_on(async { first.set("kept", b"yes", None).await.unwrap() });
    drop(first);
    let reopened = Sqlite::open(&dir);
    block_on(async { assert_eq!(reopened.get("kept").await, Ok(Some(b"yes".to_vec()))) });
}

#[test]
fn redis_down_is_an_error_in_bounded_time() {
    let mut server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.connect_timeout = Duration::from_millis(500);
    config.response_timeout = Duration::from_millis(500);
    let s = store(Backend::Redis(Box::new(RedisStore::new(&config).unwrap())));
    block_on(async move {
        s.set("k", b"v", None).await.unwrap();
        server.stop();
        let start = Instant::now();
        let err = s.get("k").await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    backend: "redis",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
        let err = s.increment("n", 1).await.unwrap_err();
        assert!(
            err.to_string().starts_with("redis store is unavailable: "),
            "{err}"
        );
    });
}

#[test]
fn redis_stores_sharing_a_database_stay_apart() {
    let server = RedisServer::start();
    let open = |prefix: &str| {
        let mut config = RedisConfig::new(server.url());
        config.key_prefix = prefix.into();
        Store::new(
            prefix,
            Backend::Redis(Box::new(RedisStore::new(&config).unwrap())),
            Limits::default(),
        )
    };
    let (sessions, cache) = (open("sessions:"), open("cache:"));
    block_on(async {
        sessions.set("user", b"secret", None).await.unwrap();
        cache.set("page", b"html", None).await.unwrap();
        assert_eq!(cache.get("user").await, Ok(None));
        assert_eq!(cache.all_keys().await, Ok(vec!["page".to_string()]));
        assert_eq!(sessions.all_keys().await, Ok(vec!["user".to_string()]));
        cache.delete_many(&["user".to_string()]).await.unwrap();
        assert_eq!(sessions.get("user").await, Ok(Some(b"secret".to_vec())));
    });
}

fn sqlite_at(path: &std::path::Path, max_store_size: u64) -> Store {
    let limits = Limits {
        max_store_size,
        ..SMALL
    };
    Store::new(
        "default",
        Backend::Sqlite(SqliteStore::open(path).unwrap()),
        limits,
    )
}

#[test]
fn sqlite_quota_counts_every_handle_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.sqlite");
    let (a, b) = (sqlite_at(&path, 100), sqlite_at(&path, 100));
    block_on(async {
        a.set("a", &[1; 60], None).await.unwrap();
        assert_eq!(
            b.set("b", &[2; 60], None).await,
            Err(Error::StoreFull { max: 100 }),
            "b counts what a wrote"
        );
        b.delete("a").await.unwrap();
        a.set("b", &[2; 60], None)
            .await
            .expect("a counts what b freed");
    });
    drop((a, b));
    // 61 bytes, reopened with a quota it is already past.
    let c = sqlite_at(&path, 50);
    block_on(async {
        c.set("b", &[3; 60], None)
            .await
            .expect("a write that does not grow the store");
        assert_eq!(
            c.set("z", b"1", None).await,
            Err(Error::StoreFull { max: 50 })
        );
        c.set("b", &[3; 10], None).await.expect("shrinking");
        c.set("z", b"1", None).await.expect("13 bytes");
    });
}

#[test]
fn sqlite_counts_a_file_made_before_quotas_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        // The schema as it was before stores had a size.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, expires_at INTEGER);",
        )
        .unwrap();
        let mut insert = conn
            .prepare("INSERT INTO kv (key, value) VALUES (?, ?)")
            .unwrap();
        // `clé` is 4 bytes of UTF-8 but 3 characters: 125 bytes in all.
        insert
            .execute(rusqlite::params!["clé", vec![1u8; 60]])
            .unwrap();
        insert
            .execute(rusqlite::params!["a", vec![2u8; 60]])
            .unwrap();
    }
    let s = sqlite_at(&path, 128);
    block_on(async {
        assert_eq!(s.get("clé").await, Ok(Some(vec![1; 60])));
        s.set("b", b"xx", None).await.expect("128 bytes");
        assert_eq!(
            s.set("c", b"", None).await,
            Err(Error::StoreFull { max: 128 }),
            "129 bytes (128 if characters were counted)"
        );
        s.delete("clé").await.unwrap();
        s.set("c", b"", None)
            .await
            .expect("deleting counts bytes too");
    });
}

#[test]
fn a_redis_value_grown_past_what_a_call_returns_is_refused_not_read() {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.key_prefix = "app:".into();
    let redis = RedisStore::new(&config).unwrap();
    let s = Store::new("app", Backend::Redis(Box::new(redis)), Limits::default());
    // Another client grows a value under the store's prefix past what one
    // call may return: with the default limits, a 16MiB batch and a 1MiB
    // value, rounded up to 18MiB.
    let grown = std::process::Command::new("redis-cli")
        .args(["-p", &server.port().to_string()])
        .args(["SETRANGE", "app:big", "19000000", "x"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&grown.stdout), "19000001\n");
    block_on(async {
        s.set("small", b"ok", None).await.unwrap();
        let err = s.get("big").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis store is unavailable: a Redis reply over 18MiB was refused"
        );
        // The connection is made again for the next call.
        assert_eq!(s.get("small").await, Ok(Some(b"ok".to_vec())));
    });
}
