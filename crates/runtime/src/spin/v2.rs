//! The `fermyon:spin@2.0.0` interfaces the Spin Rust SDK 5 (and Spin 2 and
//! 3's other SDKs) import: key-value, SQLite, variables and Redis, the same
//! services as their `spin:*@3` successors in [`super`], through the same
//! grants; and `wasi:config/store@0.2.0-draft-2024-09-27`, Tern's
//! `wasi:config` under the version Spin's SDKs import. PostgreSQL
//! (`fermyon:spin/postgres@2.0.0`, and SDK 5's `spin:postgres@3.0.0`) is in
//! [`super::postgres_legacy`], `wasi:keyvalue` draft2 in
//! [`super::keyvalue_draft2`]. Their functions are synchronous, so they are
//! linked for WASI 0.2 components too (an SDK 5 app is one, once made a
//! component).

use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

use super::redis::{RedisConnection, api as v3_redis};
use super::{SqlConnection, sqlite as v3_sqlite};
use crate::services::{Bucket, MAX_OPEN_BUCKETS, Refused, ServicesView};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/spin",
        world: "tern:spin-host/spin-v2-services",
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/key-value.store": crate::services::Bucket,
            "fermyon:spin/sqlite.connection": crate::spin::SqlConnection,
            "fermyon:spin/redis.connection": crate::spin::redis::RedisConnection,
            "fermyon:spin/postgres.connection": crate::spin::postgres::PostgresConnection,
            "wasi:keyvalue/store.bucket": crate::services::Bucket,
            "wasi:keyvalue/atomics.cas": crate::spin::keyvalue_draft2::Cas,
        },
    });
}

use bindings::fermyon::spin::key_value as kv;
use bindings::fermyon::spin::redis;
use bindings::fermyon::spin::sqlite;
use bindings::fermyon::spin::variables;
use bindings::wasi::config::store as config;

/// Adds the `fermyon:spin@2.0.0` interfaces to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    kv::add_to_linker::<T, super::HasSpin>(linker, get)?;
    sqlite::add_to_linker::<T, super::HasSpin>(linker, get)?;
    variables::add_to_linker::<T, super::HasSpin>(linker, get)?;
    redis::add_to_linker::<T, super::HasSpin>(linker, get)?;
    config::add_to_linker::<T, super::HasSpin>(linker, get)?;
    bindings::fermyon::spin::rdbms_types::add_to_linker::<T, super::HasSpin>(linker, get)?;
    bindings::fermyon::spin::postgres::add_to_linker::<T, super::HasSpin>(linker, get)?;
    super::postgres_legacy::add_to_linker(linker, get)?;
    super::keyvalue_draft2::add_to_linker(linker, get)?;
    Ok(())
}

type Answer<T, E> = Result<Result<T, E>>;

fn kv_error(error: tern_kv::Error) -> kv::Error {
    match error {
        tern_kv::Error::StoreFull { .. } => kv::Error::StoreTableFull,
        e => kv::Error::Other(e.to_string()),
    }
}

impl kv::Host for ServicesView<'_> {}

impl kv::HostStore for ServicesView<'_> {
    async fn open(&mut self, label: String) -> Answer<Resource<Bucket>, kv::Error> {
        Ok(self.open_bucket(&label)?.map_err(|refused| match refused {
            Refused::Unknown => kv::Error::NoSuchStore,
            Refused::Denied => kv::Error::AccessDenied,
            Refused::TooMany => {
                kv::Error::Other(format!("more than {MAX_OPEN_BUCKETS} stores open at once"))
            }
        }))
    }

    async fn get(
        &mut self,
        store: Resource<Bucket>,
        key: String,
    ) -> Answer<Option<Vec<u8>>, kv::Error> {
        Ok(self.bucket(&store)?.get(&key).await.map_err(kv_error))
    }

    async fn set(
        &mut self,
        store: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<(), kv::Error> {
        let store = self.bucket(&store)?;
        Ok(store.set(&key, &value, None).await.map_err(kv_error))
    }

    async fn delete(&mut self, store: Resource<Bucket>, key: String) -> Answer<(), kv::Error> {
        Ok(self.bucket(&store)?.delete(&key).await.map_err(kv_error))
    }

    async fn exists(&mut self, store: Resource<Bucket>, key: String) -> Answer<bool, kv::Error> {
        Ok(self.bucket(&store)?.exists(&key).await.map_err(kv_error))
    }

    async fn get_keys(&mut self, store: Resource<Bucket>) -> Answer<Vec<String>, kv::Error> {
        let store = self.bucket(&store)?;
        Ok(super::all_keys(&store).await.map_err(kv::Error::Other))
    }

    async fn drop(&mut self, store: Resource<Bucket>) -> Result<()> {
        self.close_bucket(store)
    }
}

impl variables::Host for ServicesView<'_> {
    async fn get(&mut self, name: String) -> Answer<String, variables::Error> {
        Ok(super::variable(self.services, name).map_err(|e| match e {
            super::variables::Error::InvalidName(n) => variables::Error::InvalidName(n),
            super::variables::Error::Undefined(n) => variables::Error::Undefined(n),
            super::variables::Error::Provider(n) => variables::Error::Provider(n),
            super::variables::Error::Other(n) => variables::Error::Other(n),
        }))
    }
}

/// SQLite through the `spin:sqlite@3` host, whose types these mirror.
fn sqlite_error(error: v3_sqlite::Error) -> sqlite::Error {
    match error {
        v3_sqlite::Error::NoSuchDatabase => sqlite::Error::NoSuchDatabase,
        v3_sqlite::Error::AccessDenied => sqlite::Error::AccessDenied,
        v3_sqlite::Error::InvalidConnection => sqlite::Error::InvalidConnection,
        v3_sqlite::Error::DatabaseFull => sqlite::Error::DatabaseFull,
        v3_sqlite::Error::Io(message) => sqlite::Error::Io(message),
    }
}

fn to_v3(value: sqlite::Value) -> v3_sqlite::Value {
    match value {
        sqlite::Value::Integer(i) => v3_sqlite::Value::Integer(i),
        sqlite::Value::Real(f) => v3_sqlite::Value::Real(f),
        sqlite::Value::Text(s) => v3_sqlite::Value::Text(s),
        sqlite::Value::Blob(b) => v3_sqlite::Value::Blob(b),
        sqlite::Value::Null => v3_sqlite::Value::Null,
    }
}

fn from_v3(value: v3_sqlite::Value) -> sqlite::Value {
    match value {
        v3_sqlite::Value::Integer(i) => sqlite::Value::Integer(i),
        v3_sqlite::Value::Real(f) => sqlite::Value::Real(f),
        v3_sqlite::Value::Text(s) => sqlite::Value::Text(s),
        v3_sqlite::Value::Blob(b) => sqlite::Value::Blob(b),
        v3_sqlite::Value::Null => sqlite::Value::Null,
    }
}

impl sqlite::Host for ServicesView<'_> {}

impl sqlite::HostConnection for ServicesView<'_> {
    async fn open(&mut self, database: String) -> Answer<Resource<SqlConnection>, sqlite::Error> {
        Ok(self.open_connection(&database)?.map_err(sqlite_error))
    }

    async fn execute(
        &mut self,
        connection: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> Answer<sqlite::QueryResult, sqlite::Error> {
        let parameters = parameters.into_iter().map(to_v3).collect();
        let result =
            v3_sqlite::HostConnection::execute(self, connection, statement, parameters).await?;
        Ok(result
            .map(|result| sqlite::QueryResult {
                columns: result.columns,
                rows: result
                    .rows
                    .into_iter()
                    .map(|row| sqlite::RowResult {
                        values: row.values.into_iter().map(from_v3).collect(),
                    })
                    .collect(),
            })
            .map_err(sqlite_error))
    }

    async fn drop(&mut self, connection: Resource<SqlConnection>) -> Result<()> {
        v3_sqlite::HostConnection::drop(self, connection).await
    }
}

fn redis_error(error: v3_redis::Error) -> redis::Error {
    match error {
        v3_redis::Error::InvalidAddress => redis::Error::InvalidAddress,
        v3_redis::Error::TooManyConnections => redis::Error::TooManyConnections,
        v3_redis::Error::TypeError => redis::Error::TypeError,
        v3_redis::Error::Other(message) => redis::Error::Other(message),
    }
}

impl ServicesView<'_> {
    /// A handle to the shared Redis connection behind `connection`.
    fn redis_of(&self, connection: &Resource<RedisConnection>) -> Result<RedisConnection> {
        Ok(self.table.get(connection)?.clone())
    }
}

impl redis::Host for ServicesView<'_> {}

impl redis::HostConnection for ServicesView<'_> {
    async fn open(&mut self, address: String) -> Answer<Resource<RedisConnection>, redis::Error> {
        let (outbound, pool, reserved) = match super::redis::opening(self.services) {
            Ok(opening) => opening,
            Err(e) => return Ok(Err(redis_error(e))),
        };
        match super::redis::open(&outbound, pool, address).await {
            Ok(conn) => {
                let handle = self.table.push(conn)?;
                reserved.keep();
                Ok(Ok(handle))
            }
            Err(e) => Ok(Err(redis_error(e))),
        }
    }

    async fn publish(
        &mut self,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Answer<(), redis::Error> {
        let conn = self.redis_of(&this)?;
        Ok(conn.publish(channel, payload).await.map_err(redis_error))
    }

    async fn get(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Option<Vec<u8>>, redis::Error> {
        Ok(self.redis_of(&this)?.get(key).await.map_err(redis_error))
    }

    async fn set(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<(), redis::Error> {
        Ok(self
            .redis_of(&this)?
            .set(key, value)
            .await
            .map_err(redis_error))
    }

    async fn incr(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<i64, redis::Error> {
        Ok(self.redis_of(&this)?.incr(key).await.map_err(redis_error))
    }

    async fn del(
        &mut self,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Answer<u32, redis::Error> {
        Ok(self.redis_of(&this)?.del(keys).await.map_err(redis_error))
    }

    async fn sadd(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32, redis::Error> {
        Ok(self
            .redis_of(&this)?
            .sadd(key, values)
            .await
            .map_err(redis_error))
    }

    async fn smembers(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Answer<Vec<String>, redis::Error> {
        Ok(self
            .redis_of(&this)?
            .smembers(key)
            .await
            .map_err(redis_error))
    }

    async fn srem(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Answer<u32, redis::Error> {
        Ok(self
            .redis_of(&this)?
            .srem(key, values)
            .await
            .map_err(redis_error))
    }

    async fn execute(
        &mut self,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<redis::RedisParameter>,
    ) -> Answer<Vec<redis::RedisResult>, redis::Error> {
        let arguments = arguments
            .into_iter()
            .map(|argument| match argument {
                redis::RedisParameter::Int64(i) => v3_redis::RedisParameter::Int64(i),
                redis::RedisParameter::Binary(b) => v3_redis::RedisParameter::Binary(b),
            })
            .collect();
        let results = self.redis_of(&this)?.execute(command, arguments).await;
        Ok(results.map_err(redis_error).map(|results| {
            results
                .into_iter()
                .map(|result| match result {
                    v3_redis::RedisResult::Nil => redis::RedisResult::Nil,
                    v3_redis::RedisResult::Status(s) => redis::RedisResult::Status(s),
                    v3_redis::RedisResult::Int64(i) => redis::RedisResult::Int64(i),
                    v3_redis::RedisResult::Binary(b) => redis::RedisResult::Binary(b),
                })
                .collect()
        }))
    }

    async fn drop(&mut self, connection: Resource<RedisConnection>) -> Result<()> {
        self.table.delete(connection)?;
        self.services.open_redis.release();
        Ok(())
    }
}

impl config::Host for ServicesView<'_> {
    async fn get(&mut self, key: String) -> Answer<Option<String>, config::Error> {
        Ok(Ok(self.services.variables.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> Answer<Vec<(String, String)>, config::Error> {
        let all = self.services.variables.iter();
        Ok(Ok(all.map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}
