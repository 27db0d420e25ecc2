//! The shared backend: a Redis database. Several Tern processes pointed at
//! one Redis see each other's writes; `increment` is `INCRBY` and
//! compare-and-swap is a Lua script, both atomic inside Redis.
//!
//! One multiplexed connection per store, made on first use and again after
//! it fails. Connecting and every command are bounded by timeouts, so a
//! Redis that is down or stalled costs a guest an error, never a hang.
//! Each reply is bounded ([`crate::resp`]) by what the store's limits let
//! a call return, at least 16MiB: a value someone else grew past it under
//! the store's prefix fails the read instead of being held whole.
//!
//! Batch limits hold here as on the other backends: `get_many` is a Lua
//! script that stops inside Redis as soon as the values found pass the
//! batch's budget, so no more than that crosses to Tern. The per-store
//! quota does not: Redis cannot say how many bytes the keys under one
//! prefix take without visiting them all, and a counter kept beside them
//! would drift as keys expire. Bound a Redis store with Redis's own
//! `maxmemory` (a full Redis refuses writes, which the guest sees as the
//! store being unavailable).

use std::sync::Mutex;
use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Script, Value};

use crate::resp::{MAX_REDIS_REPLY, Multiplexed};
use crate::{Budget, Error, PAGE_SIZE, Page};

/// How to reach a Redis store. Its `Debug` leaves out the URL, which may
/// hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB` (or `rediss://`, `redis+unix://`).
    pub url: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one command may take.
    pub response_timeout: Duration,
    /// Put before every key, so stores sharing a database stay apart
    /// (Tern uses `STORE:`).
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
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
            key_prefix: String::new(),
        }
    }
}

/// A store in a Redis database.
pub struct RedisStore {
    prefix: String,
    client: Client,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    max_reply: u64,
    conn: Mutex<Option<Multiplexed>>,
}

/// `INCRBY` only on a counter: what `INCRBY` would accept besides (`+5`,
/// `-0`) the other backends refuse, so Redis refuses it too.
const INCREMENT: &str = r"
local current = redis.call('GET', KEYS[1])
if current and not string.match(current, '^-?[1-9]%d*$') and current ~= '0' then
  return redis.error_reply('ERR not a counter')
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
";

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

/// `MGET` that stops at a budget: `ARGV[1]` is the bytes left, `ARGV[2]`
/// the length of the key prefix (keys count as the guest spelled them).
/// Returns the values (`false`, a nil reply, for an absent key), or the
/// integer `-1` as soon as the keys and values found pass the budget.
/// A key holding something other than a string reads as absent, as with
/// `MGET`.
const GET_MANY: &str = r"
local left = tonumber(ARGV[1])
local prefix = tonumber(ARGV[2])
local values = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('MGET', key)[1]
  if value then
    left = left - (#key - prefix) - #value
    if left < 0 then return -1 end
  end
  values[i] = value
end
return values
";

impl RedisStore {
    /// A store for `config`; nothing connects until the first command, so
    /// an unreachable Redis is reported to the guest that uses it.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let client = Client::open(config.url.as_str()).map_err(|e| unavailable(&e))?;
        let connection =
            AsyncConnectionConfig::new().set_response_timeout(Some(config.response_timeout));
        Ok(RedisStore {
            prefix: config.key_prefix.clone(),
            client,
            config: connection,
            connect_timeout: config.connect_timeout,
            max_reply: MAX_REDIS_REPLY,
            conn: Mutex::new(None),
        })
    }

    /// Bounds each reply to `max` bytes (at least [`MAX_REDIS_REPLY`]),
    /// from the next connection on.
    pub(crate) fn bound_replies(&mut self, max: u64) {
        self.max_reply = max.max(MAX_REDIS_REPLY);
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Multiplexed>> {
        // The guarded value is a handle that is either there or not.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connection(&self) -> Result<Multiplexed, Error> {
        if let Some(conn) = self.cached().clone() {
            return Ok(conn);
        }
        let info = self.client.get_connection_info();
        let connecting = crate::resp::connect(
            info.addr(),
            info.redis_settings(),
            self.config.clone(),
            self.max_reply,
        );
        let conn = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(connected) => connected.map_err(|e| unavailable(&e))?,
            Err(_) => {
                return Err(Error::Unavailable {
                    backend: "redis",
                    message: format!("no answer within {:?}", self.connect_timeout),
                });
            }
        };
        *self.cached() = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd`; a connection that failed is dropped so the next command
    /// reconnects.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let mut shared = self.connection().await?;
        cmd.query_async(&mut shared.conn)
            .await
            .map_err(|e| self.failed(e))
    }

    fn failed(&self, err: redis::RedisError) -> Error {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
            self.cached().take();
        }
        let detail = err.detail().or(err.code()).unwrap_or_default();
        match detail {
            _ if detail.contains("not an integer") || detail.contains("not a counter") => {
                Error::NotACounter
            }
            _ if detail.contains("overflow") => Error::Overflow,
            _ => unavailable(&err),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn keys(&self, keys: &[String]) -> Vec<String> {
        keys.iter().map(|k| self.key(k)).collect()
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.query(redis::cmd("GET").arg(self.key(key))).await
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        _quota: u64,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
        }
        self.query(&cmd).await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), Error> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await
            .map(drop)
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.query(redis::cmd("EXISTS").arg(self.key(key))).await
    }

    pub(crate) async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, Error> {
        let (next, keys): (u64, Vec<String>) = self.query(&self.scan(cursor.unwrap_or(0))).await?;
        Ok(Page {
            // SCAN answers keys under the prefix; a server that answers
            // others has them skipped, not sliced.
            keys: keys
                .into_iter()
                .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned))
                .collect(),
            cursor: (next != 0).then_some(next),
        })
    }

    /// One page of the store's keys from `cursor`: `SCAN` of its prefix.
    fn scan(&self, cursor: u64) -> Cmd {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(&self.prefix)))
            .arg("COUNT")
            .arg(PAGE_SIZE);
        scan
    }

    /// Removes every key under the store's prefix, a page at a time,
    /// whatever the keys are (another client may have written them past
    /// the store's limits, or not as UTF-8).
    pub async fn purge(&self) -> Result<(), Error> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(&self.scan(cursor)).await?;
            if !keys.is_empty() {
                self.query::<i64>(redis::cmd("UNLINK").arg(keys)).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64, _quota: u64) -> Result<i64, Error> {
        let script = Script::new(INCREMENT);
        let mut invocation = script.key(self.key(key));
        invocation.arg(delta);
        let mut shared = self.connection().await?;
        // The script answers the counter as its text: an integer reply
        // passes through Lua's doubles, which round beyond 2^53.
        let counter: String = invocation
            .invoke_async(&mut shared.conn)
            .await
            .map_err(|e| self.failed(e))?;
        counter.parse().map_err(|_| Error::NotACounter)
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        _quota: u64,
    ) -> Result<bool, Error> {
        let script = Script::new(COMPARE_AND_SWAP);
        let mut invocation = script.key(self.key(key));
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new);
        let mut shared = self.connection().await?;
        let swapped: i64 = invocation
            .invoke_async(&mut shared.conn)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(swapped == 1)
    }

    pub(crate) async fn get_many(
        &self,
        keys: &[String],
        budget: &mut Budget,
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let script = Script::new(GET_MANY);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys(keys))
            .arg(budget.left())
            .arg(self.prefix.len());
        let mut shared = self.connection().await?;
        let reply: Value = invocation
            .invoke_async(&mut shared.conn)
            .await
            .map_err(|e| self.failed(e))?;
        if let Value::Int(_) = reply {
            return Err(budget.exceeded());
        }
        let values: Vec<Option<Vec<u8>>> =
            redis::from_redis_value(reply).map_err(|e| Error::Unavailable {
                backend: "redis",
                message: e.to_string(),
            })?;
        // Redis counted the same bytes; this keeps the budget right for the
        // next chunk.
        for (key, value) in keys.iter().zip(&values) {
            if let Some(value) = value {
                budget.take(key, value.len())?;
            }
        }
        Ok(values)
    }

    /// Quota: not enforced on Redis (see the module's documentation).
    pub(crate) async fn set_many(
        &self,
        pairs: &[(String, Vec<u8>)],
        _quota: u64,
    ) -> Result<(), Error> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(self.key(key)).arg(value);
        }
        self.query(&cmd).await
    }

    pub(crate) async fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("DEL").arg(self.keys(keys)))
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

/// Escapes `SCAN MATCH` glob characters.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
