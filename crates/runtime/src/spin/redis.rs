//! `spin:redis/redis@3.0.0`: a guest's commands to a Redis server, through
//! the component's `allowed_outbound_hosts` (`redis://HOST:PORT`).
//!
//! Checked before any connection (see [`super::checked_addresses`]); Tern
//! connects to an address it checked. A connection is made once per address and shared by
//! the component's instances (Redis connections are multiplexed), and made
//! again after it fails. Each command waits at most the component's
//! `outbound_timeout`; connecting, its `outbound_connect_timeout`. Each
//! reply is bounded ([`tern_kv::resp`]) before the client reads it whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, Value};
use wasmtime::Result;
use wasmtime::component::{Accessor, Resource};

use super::HasSpin;
pub(super) use super::bindings::spin::redis::redis as api;
use crate::services::{Outbound, Reserved, ServicesView};
use tern_kv::resp::{MAX_REDIS_REPLY, Multiplexed as Shared};

/// Connections one instance may hold open at once.
pub const MAX_OPEN_REDIS: u32 = 16;

/// The component's Redis connections by address, shared by its instances.
#[derive(Clone, Default)]
pub struct RedisConnections(Arc<Mutex<HashMap<String, Shared>>>);

impl RedisConnections {
    fn get(&self, address: &str) -> Option<Shared> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned()
    }

    fn put(&self, address: &str, conn: Shared) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(address.to_owned(), conn);
    }

    fn forget(&self, address: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }
}

/// A guest's open connection: handles to the shared connection, cheap to
/// clone.
#[derive(Clone)]
pub struct RedisConnection {
    address: String,
    conn: Shared,
    pool: RedisConnections,
}

/// Checks `address` against `outbound` and connects to an address it
/// allows.
async fn connect(
    outbound: &Outbound,
    pool: &RedisConnections,
    address: &str,
) -> Result<Shared, api::Error> {
    if let Some(conn) = pool.get(address) {
        return Ok(conn);
    }
    let info = address
        .into_connection_info()
        .map_err(|_| api::Error::InvalidAddress)?;
    let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
        return Err(api::Error::Other(
            "outbound connection denied: only redis:// addresses are supported".into(),
        ));
    };
    let checked = super::checked_addresses(outbound, "redis", &host, port)
        .await
        .map_err(|why| api::Error::Other(format!("outbound connection denied: {why}")))?;
    let mut last = String::from("no address to connect to");
    for addr in checked {
        let to = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port());
        let connecting = tern_kv::resp::connect(
            &to,
            info.redis_settings(),
            AsyncConnectionConfig::new().set_response_timeout(Some(outbound.response_timeout)),
            MAX_REDIS_REPLY,
        );
        match tokio::time::timeout(outbound.connect_timeout, connecting).await {
            Ok(Ok(conn)) => {
                pool.put(address, conn.clone());
                return Ok(conn);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {:?}", outbound.connect_timeout),
        }
    }
    Err(api::Error::Other(format!(
        "cannot connect to Redis: {last}"
    )))
}

/// The connection behind `connection`.
fn connection<T>(
    accessor: &Accessor<T, HasSpin>,
    connection: &Resource<RedisConnection>,
) -> Result<RedisConnection> {
    accessor.with(|mut access| Ok(access.get().table.get(connection)?.clone()))
}

impl RedisConnection {
    /// Runs `cmd`, forgetting the shared connection if it failed.
    async fn query<R: redis::FromRedisValue>(mut self, cmd: redis::Cmd) -> Result<R, api::Error> {
        cmd.query_async(&mut self.conn.conn).await.map_err(|e| {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                self.pool.forget(&self.address);
            }
            match e.kind() {
                redis::ErrorKind::UnexpectedReturnType => api::Error::TypeError,
                _ => api::Error::Other(e.to_string()),
            }
        })
    }
}

impl api::Host for ServicesView<'_> {}

impl api::HostConnection for ServicesView<'_> {
    async fn drop(&mut self, connection: Resource<RedisConnection>) -> Result<()> {
        self.table.delete(connection)?;
        self.services.open_redis.release();
        Ok(())
    }
}

type Answer<T> = Result<Result<T, api::Error>>;

/// What opening a connection needs of the instance: where it may connect,
/// the component's shared connections, and the connection counted against
/// the instance's bound (given back unless the open succeeds and keeps it).
pub(super) fn opening(
    services: &mut crate::Services,
) -> Result<(std::sync::Arc<Outbound>, RedisConnections, Reserved), api::Error> {
    let reserved = (services.open_redis)
        .reserve(MAX_OPEN_REDIS)
        .ok_or(api::Error::TooManyConnections)?;
    Ok((services.outbound.clone(), services.redis.clone(), reserved))
}

/// The commands `execute` refuses: each changes the state of the
/// connection, which every instance of the component shares, so one
/// request's would reach another's replies (`MULTI` queues them,
/// `CLIENT REPLY OFF` shifts them, `SELECT` moves everyone's database,
/// `SUBSCRIBE` and `MONITOR` take the connection over), or blocks it,
/// holding every later reply behind it (`BLPOP`, `WAIT`).
const CONNECTION_STATE: &[&str] = &[
    "AUTH",
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "CLIENT",
    "DISCARD",
    "EXEC",
    "HELLO",
    "MONITOR",
    "MULTI",
    "PSUBSCRIBE",
    "PSYNC",
    "PUNSUBSCRIBE",
    "QUIT",
    "RESET",
    "SELECT",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "SYNC",
    "UNSUBSCRIBE",
    "UNWATCH",
    "WAIT",
    "WAITAOF",
    "WATCH",
];

/// Opens a connection to `address` through `pool`, where `outbound` allows.
pub(super) async fn open(
    outbound: &Outbound,
    pool: RedisConnections,
    address: String,
) -> Result<RedisConnection, api::Error> {
    let conn = connect(outbound, &pool, &address).await?;
    Ok(RedisConnection {
        address,
        conn,
        pool,
    })
}

/// The commands of the interface, on a handle to the shared connection.
impl RedisConnection {
    pub(super) async fn publish(self, channel: String, payload: Vec<u8>) -> Result<(), api::Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.query::<i64>(cmd).await.map(|_| ())
    }

    pub(super) async fn get(self, key: String) -> Result<Option<Vec<u8>>, api::Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(cmd).await
    }

    pub(super) async fn set(self, key: String, value: Vec<u8>) -> Result<(), api::Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        self.query::<()>(cmd).await
    }

    pub(super) async fn incr(self, key: String) -> Result<i64, api::Error> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(key);
        self.query(cmd).await
    }

    pub(super) async fn del(self, keys: Vec<String>) -> Result<u32, api::Error> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(keys);
        self.query(cmd).await
    }

    pub(super) async fn sadd(self, key: String, values: Vec<String>) -> Result<u32, api::Error> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(key).arg(values);
        self.query(cmd).await
    }

    pub(super) async fn smembers(self, key: String) -> Result<Vec<String>, api::Error> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(key);
        self.query(cmd).await
    }

    pub(super) async fn srem(self, key: String, values: Vec<String>) -> Result<u32, api::Error> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(key).arg(values);
        self.query(cmd).await
    }

    pub(super) async fn execute(
        self,
        command: String,
        arguments: Vec<api::RedisParameter>,
    ) -> Result<Vec<api::RedisResult>, api::Error> {
        // XREAD and XREADGROUP block only when asked to.
        let blocking_read = ["XREAD", "XREADGROUP"]
            .iter()
            .any(|read| read.eq_ignore_ascii_case(&command))
            && arguments.iter().any(|argument| {
                matches!(argument, api::RedisParameter::Binary(b) if b.eq_ignore_ascii_case(b"BLOCK"))
            });
        if blocking_read
            || CONNECTION_STATE
                .iter()
                .any(|refused| refused.eq_ignore_ascii_case(&command))
        {
            return Err(api::Error::Other(format!(
                "`{}` is not allowed: the connection is shared with the component's other requests",
                command.escape_debug()
            )));
        }
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                api::RedisParameter::Int64(i) => cmd.arg(i),
                api::RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        let value: Value = self.query(cmd).await?;
        results(value)
    }
}

impl<T> api::HostConnectionWithStore<T> for HasSpin {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> Answer<Resource<RedisConnection>> {
        let (outbound, pool, reserved) =
            match accessor.with(|mut access| opening(access.get().services)) {
                Ok(opening) => opening,
                Err(e) => return Ok(Err(e)),
            };
        let conn = match open(&outbound, pool, address).await {
            Ok(conn) => conn,
            Err(e) => return Ok(Err(e)),
        };
        let handle = accessor.with(|mut access| access.get().table.push(conn))?;
        reserved.keep();
        Ok(Ok(handle))
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Answer<()> {
        Ok(connection(accessor, &this)?.publish(channel, payload).await)
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Option<Vec<u8>>> {
        Ok(connection(accessor, &this)?.get(key).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<()> {
        Ok(connection(accessor, &this)?.set(key, value).await)
    }

    async fn incr(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<i64> {
        Ok(connection(accessor, &this)?.incr(key).await)
    }

    async fn del(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Answer<u32> {
        Ok(connection(accessor, &this)?.del(keys).await)
    }

    async fn sadd(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        Ok(connection(accessor, &this)?.sadd(key, values).await)
    }

    async fn smembers(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Vec<String>> {
        Ok(connection(accessor, &this)?.smembers(key).await)
    }

    async fn srem(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        Ok(connection(accessor, &this)?.srem(key, values).await)
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<api::RedisParameter>,
    ) -> Answer<Vec<api::RedisResult>> {
        Ok(connection(accessor, &this)?
            .execute(command, arguments)
            .await)
    }
}

/// A reply as the interface's list of results: an array flattened one
/// level, anything else one result.
fn results(value: Value) -> Result<Vec<api::RedisResult>, api::Error> {
    match value {
        Value::Array(items) | Value::Set(items) => items.into_iter().map(result).collect(),
        other => Ok(vec![result(other)?]),
    }
}

fn result(value: Value) -> Result<api::RedisResult, api::Error> {
    Ok(match value {
        Value::Nil => api::RedisResult::Nil,
        Value::Int(i) => api::RedisResult::Int64(i),
        Value::BulkString(b) => api::RedisResult::Binary(b),
        Value::SimpleString(s) => api::RedisResult::Status(s),
        Value::Okay => api::RedisResult::Status("OK".into()),
        Value::Boolean(b) => api::RedisResult::Int64(i64::from(b)),
        Value::Double(d) => api::RedisResult::Binary(d.to_string().into_bytes()),
        Value::ServerError(e) => return Err(api::Error::Other(e.to_string())),
        _ => return Err(api::Error::TypeError),
    })
}
