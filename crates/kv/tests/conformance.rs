//! One suite, every backend: each case in `cases` runs against memory,
//! SQLite (a real file) and Redis (a real `redis-server` per test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_kv::{Backend, Error, Limits, MemoryStore, RedisConfig, RedisStore, SqliteStore, Store};
use test_programs::redis::RedisServer;

/// A backend under test: the store, and a way to open a second, independent
/// handle on the same data (another connection, as another process would).
trait Fixture {
    fn store(&self) -> Arc<Store>;
    fn another(&self) -> Arc<Store>;
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
}

fn store(backend: Backend) -> Store {
    let limits = Limits {
        max_key_size: 16,
        max_value_size: 64,
    };
    Store::new("default", backend, limits)
}

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
                concurrent_increments_lose_nothing, second_handle_sees_writes);
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
        for not_counter in ["-5", "+5", "007", "", "1e3", " 1"] {
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
