//! `spin:redis/redis@3.0.0`: a guest's commands to a Redis server, through
//! the component's `allowed_outbound_hosts` (`redis://HOST:PORT`).
//!
//! Checked before any connection (see [`super::checked_addresses`]); Tern
//! connects to an address it checked. A connection is made once per address and shared by
//! the component's instances (Redis connections are multiplexed), and made
//! again after it fails. Each command waits at most the component's
//! `outbound_timeout`; connecting, its `outbound_connect_timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, Value};
use wasmtime::Result;
use wasmtime::component::{Accessor, Resource};

use super::HasSpin;
use super::bindings::spin::redis::redis as api;
use crate::services::{Outbound, ServicesView};

/// Connections one instance may hold open at once.
pub const MAX_OPEN_REDIS: u32 = 16;

/// The component's Redis connections by address, shared by its instances.
#[derive(Clone, Default)]
pub struct RedisConnections(Arc<Mutex<HashMap<String, MultiplexedConnection>>>);

impl RedisConnections {
    fn get(&self, address: &str) -> Option<MultiplexedConnection> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .cloned()
    }

    fn put(&self, address: &str, conn: MultiplexedConnection) {
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
    conn: MultiplexedConnection,
    pool: RedisConnections,
}

/// Checks `address` against `outbound` and connects to an address it
/// allows.
async fn connect(
    outbound: &Outbound,
    pool: &RedisConnections,
    address: &str,
) -> Result<MultiplexedConnection, api::Error> {
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
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(outbound.connect_timeout))
        .set_response_timeout(Some(outbound.response_timeout));
    let mut last = String::from("no address to connect to");
    for addr in checked {
        let info = info
            .clone()
            .set_addr(ConnectionAddr::Tcp(addr.ip().to_string(), addr.port()));
        let client = Client::open(info).map_err(|_| api::Error::InvalidAddress)?;
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                pool.put(address, conn.clone());
                return Ok(conn);
            }
            Err(e) => last = e.to_string(),
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
        cmd.query_async(&mut self.conn).await.map_err(|e| {
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
        self.services.open_redis -= 1;
        Ok(())
    }
}

type Answer<T> = Result<Result<T, api::Error>>;

impl<T> api::HostConnectionWithStore<T> for HasSpin {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> Answer<Resource<RedisConnection>> {
        let (outbound, pool, open) = accessor.with(|mut access| {
            let services = &*access.get().services;
            (
                services.outbound.clone(),
                services.redis.clone(),
                services.open_redis,
            )
        });
        if open >= MAX_OPEN_REDIS {
            return Ok(Err(api::Error::TooManyConnections));
        }
        let conn = match connect(&outbound, &pool, &address).await {
            Ok(conn) => conn,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            let view = access.get();
            view.services.open_redis += 1;
            Ok(Ok(view.table.push(RedisConnection {
                address,
                conn,
                pool,
            })?))
        })
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Answer<()> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        Ok(connection(accessor, &this)?
            .query::<i64>(cmd)
            .await
            .map(|_| ()))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        Ok(connection(accessor, &this)?.query::<()>(cmd).await)
    }

    async fn incr(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<i64> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(key);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn del(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Answer<u32> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(keys);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn sadd(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(key).arg(values);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn smembers(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(key);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn srem(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(key).arg(values);
        Ok(connection(accessor, &this)?.query(cmd).await)
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<api::RedisParameter>,
    ) -> Answer<Vec<api::RedisResult>> {
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                api::RedisParameter::Int64(i) => cmd.arg(i),
                api::RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        let value: Result<Value, _> = connection(accessor, &this)?.query(cmd).await;
        Ok(value.and_then(results))
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
