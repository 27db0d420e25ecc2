//! `native-kv BACKEND TARGET N`: N sets of a 100-byte value, then N gets,
//! of one key through tern-kv, on a current-thread runtime like a Tern
//! worker's. BACKEND is `memory`, `sqlite` (TARGET a file) or `redis`
//! (TARGET a URL). Prints `set NS` and `get NS`, nanoseconds per operation.

use std::time::Instant;

use tern_kv::{Backend, Limits, MemoryStore, RedisConfig, RedisStore, SqliteStore, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, backend, target, n] = args.as_slice() else {
        eprintln!("usage: native-kv memory|sqlite|redis TARGET N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let backend = match backend.as_str() {
        "memory" => Backend::Memory(MemoryStore::new()),
        "sqlite" => Backend::Sqlite(SqliteStore::open(target.as_ref()).expect("opening sqlite")),
        "redis" => Backend::Redis(Box::new(RedisStore::new(&RedisConfig::new(target.clone())).unwrap())),
        other => panic!("unknown backend {other}"),
    };
    let store = Store::new("default", backend, Limits::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let value = [b'v'; 100];
        store.set("bench", &value, None).await.unwrap();
        let start = Instant::now();
        for _ in 0..n {
            store.set("bench", &value, None).await.unwrap();
        }
        println!("set {}", start.elapsed().as_nanos() as u64 / n);
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(store.get("bench").await.unwrap());
        }
        println!("get {}", start.elapsed().as_nanos() as u64 / n);
    });
}
