//! The shared backend: a Redis database. Several Tern processes pointed at
//! one Redis see each other's writes; `increment` is `INCRBY` and
//! compare-and-swap is a Lua script, both atomic inside Redis.
//!
//! One multiplexed connection per store, made on first use and again after
//! it fails. Connecting and every command are bounded by timeouts, so a
//! Redis that is down or stalled costs a guest an error, never a hang.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Script};

use crate::{Error, PAGE_SIZE, Page};

/// How to reach a Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one command may take.
    pub response_timeout: Duration,
}

impl RedisConfig {
    /// Both timeouts' default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            connect_timeout: Self::DEFAULT_TIMEOUT,
            response_timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// A store in a Redis database.
pub struct RedisStore {
    client: Client,
    config: AsyncConnectionConfig,
    conn: Mutex<Option<MultiplexedConnection>>,
}

/// Swaps only when the current value is the expected one. `ARGV[1]` says
/// whether a value is expected at all (`1`) or the key must be absent (`0`).
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

impl RedisStore {
    /// A store for `config`; nothing connects until the first command, so
    /// an unreachable Redis is reported to the guest that uses it.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let client = Client::open(config.url.as_str()).map_err(|e| unavailable(&e))?;
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        Ok(RedisStore {
            client,
            config: connection,
            conn: Mutex::new(None),
        })
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        // The guarded value is a handle that is either there or not.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        if let Some(conn) = self.cached().clone() {
            return Ok(conn);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| unavailable(&e))?;
        *self.cached() = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd`; a connection that failed is dropped so the next command
    /// reconnects.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let mut conn = self.connection().await?;
        cmd.query_async(&mut conn).await.map_err(|e| self.failed(e))
    }

    fn failed(&self, err: redis::RedisError) -> Error {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            self.cached().take();
        }
        match err.detail() {
            Some(detail) if detail.contains("not an integer") => Error::NotACounter,
            Some(detail) if detail.contains("overflow") => Error::Overflow,
            _ => unavailable(&err),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        self.query(&cmd).await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(drop)
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    pub(crate) async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        let (next, keys): (u64, Vec<String>) = self
            .query(
                redis::cmd("SCAN")
                    .arg(cursor.unwrap_or(0))
                    .arg("COUNT")
                    .arg(PAGE_SIZE),
            )
            .await?;
        Ok(Page {
            keys,
            cursor: (next != 0).then_some(next),
        })
    }

    pub(crate) async fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        let delta = i64::try_from(delta).map_err(|_| Error::Overflow)?;
        let value: i64 = self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await?;
        // A counter some client set negative is not one `increment` made.
        u64::try_from(value).map_err(|_| Error::NotACounter)
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        let script = Script::new(COMPARE_AND_SWAP);
        let mut invocation = script.key(key);
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new);
        let mut conn = self.connection().await?;
        let swapped: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(swapped == 1)
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query(redis::cmd("MGET").arg(keys)).await
    }

    pub(crate) async fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(key).arg(value);
        }
        self.query(&cmd).await
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("DEL").arg(keys))
            .await
            .map(drop)
    }
}

fn unavailable(err: &redis::RedisError) -> Error {
    Error::Unavailable {
        backend: "redis",
        message: err.to_string(),
    }
}
