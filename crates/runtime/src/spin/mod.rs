//! The Spin SDK's host interfaces (`spin:key-value@3.0.0`,
//! `spin:variables@3.0.0`, `spin:sqlite@3.1.0`, `spin:redis@3.0.0`, `spin:mqtt@3.0.0`,
//! `spin:postgres@4.2.0`), so that components built
//! with the Spin SDK run unchanged. They sit on the same grants as Tern's own
//! services: the key-value stores and variables of
//! [`Services`](crate::Services), and the
//! app's SQL databases. The WIT is in `crates/runtime/wit/spin`.
//!
//! These interfaces use WASI 0.3's async functions, so they are linked only
//! where the engine has component-model concurrency (`p3` linkers).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Result;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

use crate::databases::{Database, Rows, SqlError, SqlValue};
use crate::services::{Bucket, MAX_OPEN_BUCKETS, Refused, ServicesView};

mod keyvalue_draft2;
mod mqtt;
mod postgres;
mod postgres_legacy;
pub(crate) mod redis;
mod v2;

pub use keyvalue_draft2::MAX_OPEN_CAS;
pub use postgres::PostgresConnections;
pub use redis::RedisConnections;

/// The error a `spin:redis/inbound-redis@3.0.0` handler returns
/// (`spin:redis/redis.error`): what the Redis trigger's call of it gives
/// back.
pub use bindings::spin::redis::redis::Error as RedisError;

// Generated; `RedisError` is re-exported from it, as the WIT documents it.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/spin",
        world: "tern:spin-host/spin-services",
        imports: { default: async | trappable },
        with: {
            "spin:key-value/key-value.store": crate::services::Bucket,
            "spin:sqlite/sqlite.connection": super::SqlConnection,
            "spin:redis/redis.connection": super::redis::RedisConnection,
            "spin:mqtt/mqtt.connection": super::mqtt::MqttConnection,
            "spin:postgres/postgres.connection": super::postgres::PostgresConnection,
            "spin:postgres/postgres.connection-builder": super::postgres::PostgresBuilder,
        },
    });
}

use bindings::spin::key_value::key_value as kv;
use bindings::spin::sqlite::sqlite;
use bindings::spin::variables::variables;

/// Where a connection to `host:port` for `scheme` may go, as
/// [`crate::outbound`] checks it; the error says why, for the guest.
pub(crate) async fn checked_addresses(
    outbound: &crate::services::Outbound,
    scheme: &str,
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, String> {
    use crate::outbound::{allowed_by, resolve_checked};
    let host =
        tern_manifest::RequestHost::parse(host.trim_start_matches('[').trim_end_matches(']'))?;
    let explicit = allowed_by(&outbound.allowed, scheme, &host, port)?;
    resolve_checked(
        &host,
        port,
        explicit,
        &outbound.private,
        outbound.connect_timeout,
    )
    .await
    .map_err(|unreachable| unreachable.describe(&host))
}

/// Connections one instance may hold open at once.
pub const MAX_OPEN_CONNECTIONS: u32 = 64;

/// A guest's open connection to one of the app's databases. The row id and
/// change count are the connection's own, taken right after each of its
/// statements, since the file's SQLite connection is shared.
pub struct SqlConnection {
    database: Arc<Database>,
    last_insert_rowid: i64,
    changes: u64,
}

struct HasSpin;

impl HasData for HasSpin {
    type Data<'a> = ServicesView<'a>;
}

/// Adds the Spin interfaces to `linker`. With component-model concurrency
/// (`concurrent`), the `spin:*@3` interfaces are linked whole; without it,
/// only the synchronous functions of those that have some (`spin:sqlite@3`,
/// `spin:postgres@4`), which is what the WASI 0.2 components the Spin SDK 5
/// makes import. The `fermyon:spin@2.0.0` interfaces and the drafts are
/// synchronous, linked either way.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
    concurrent: bool,
) -> Result<()> {
    v2::add_to_linker(linker, get)?;
    if concurrent {
        add_concurrent_to_linker(linker, get)
    } else {
        add_sync_to_linker(linker, get)
    }
}

fn add_concurrent_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    kv::add_to_linker::<T, HasSpin>(linker, get)?;
    variables::add_to_linker::<T, HasSpin>(linker, get)?;
    sqlite::add_to_linker::<T, HasSpin>(linker, get)?;
    bindings::spin::redis::redis::add_to_linker::<T, HasSpin>(linker, get)?;
    bindings::spin::mqtt::mqtt::add_to_linker::<T, HasSpin>(linker, get)?;
    bindings::spin::postgres::postgres::add_to_linker::<T, HasSpin>(linker, get)?;
    Ok(())
}

/// Links the synchronous functions of `spin:sqlite@3.1.0` and
/// `spin:postgres@4.2.0` by hand: their bindings' own `add_to_linker` also
/// links the `async func`s, which need component-model concurrency. A
/// component importing an earlier minor version (`spin:sqlite@3.0.0`,
/// `spin:postgres@4.0.0`) finds these through the linker's semver matching;
/// the types are the same.
fn add_sync_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    use postgres::{PostgresBuilder, PostgresConnection, api as pg};
    use wasmtime::component::ResourceType;

    /// Defines `$name` in `$instance` as `$call` on the view of the
    /// store's data, with the function's parameters bound to `$params`.
    macro_rules! sync_fn {
        ($instance:ident, $name:literal, |$view:ident, ($($param:ident: $ty:ty),*)| $call:expr) => {
            $instance.func_wrap_async($name, move |mut store, ($($param,)*): ($($ty,)*)| {
                Box::new(async move {
                    let $view = &mut get(store.data_mut());
                    Ok(($call.await?,))
                })
            })?;
        };
    }

    let mut sql = linker.instance("spin:sqlite/sqlite@3.1.0")?;
    sql.resource_async(
        "connection",
        ResourceType::host::<SqlConnection>(),
        move |mut store, rep| {
            Box::new(async move {
                let view = &mut get(store.data_mut());
                sqlite::HostConnection::drop(view, Resource::new_own(rep)).await
            })
        },
    )?;
    sync_fn!(sql, "[static]connection.open", |view, (database: String)| {
        sqlite::HostConnection::open(view, database)
    });
    sync_fn!(sql, "[method]connection.execute", |view, (
        this: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>
    )| {
        sqlite::HostConnection::execute(view, this, statement, parameters)
    });
    sync_fn!(sql, "[method]connection.last-insert-rowid", |view, (
        this: Resource<SqlConnection>
    )| { sqlite::HostConnection::last_insert_rowid(view, this) });
    sync_fn!(sql, "[method]connection.changes", |view, (this: Resource<SqlConnection>)| {
        sqlite::HostConnection::changes(view, this)
    });

    let mut pg = linker.instance("spin:postgres/postgres@4.2.0")?;
    pg.resource_async(
        "connection",
        ResourceType::host::<PostgresConnection>(),
        move |mut store, rep| {
            Box::new(async move {
                let view = &mut get(store.data_mut());
                pg::HostConnection::drop(view, Resource::new_own(rep)).await
            })
        },
    )?;
    pg.resource_async(
        "connection-builder",
        ResourceType::host::<PostgresBuilder>(),
        move |mut store, rep| {
            Box::new(async move {
                let view = &mut get(store.data_mut());
                pg::HostConnectionBuilder::drop(view, Resource::new_own(rep)).await
            })
        },
    )?;
    sync_fn!(pg, "[static]connection.open", |view, (address: String)| {
        pg::HostConnection::open(view, address)
    });
    sync_fn!(pg, "[method]connection.query", |view, (
        this: Resource<PostgresConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>
    )| { pg::HostConnection::query(view, this, statement, params) });
    sync_fn!(pg, "[method]connection.execute", |view, (
        this: Resource<PostgresConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>
    )| { pg::HostConnection::execute(view, this, statement, params) });
    sync_fn!(pg, "[constructor]connection-builder", |view, (address: String)| {
        pg::HostConnectionBuilder::new(view, address)
    });
    sync_fn!(pg, "[method]connection-builder.set-ca-root", |view, (
        this: Resource<PostgresBuilder>,
        certificate: String
    )| { pg::HostConnectionBuilder::set_ca_root(view, this, certificate) });
    sync_fn!(pg, "[method]connection-builder.build", |view, (
        this: Resource<PostgresBuilder>
    )| { pg::HostConnectionBuilder::build(view, this) });
    Ok(())
}

fn kv_error(error: tern_kv::Error) -> kv::Error {
    kv::Error::Other(error.to_string())
}

/// The most key bytes `get-keys` gathers for one call, each key charged
/// its bookkeeping too ([`KEY_COST`]): the interface answers every key at
/// once, so a store of millions of keys must not become as many strings.
const MAX_KEYS_BYTES: usize = 16 << 20;

/// What a listed key costs besides its bytes.
const KEY_COST: usize = size_of::<String>();

/// Every key of `store`, page by page as the store lists them (yielding
/// between pages, so a long listing holds no worker), up to
/// [`MAX_KEYS_BYTES`]; past that, why not.
pub(crate) async fn all_keys(store: &tern_kv::Store) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = None;
    loop {
        let page = store.list_keys(cursor).await.map_err(|e| e.to_string())?;
        bytes += page.keys.iter().map(|k| k.len() + KEY_COST).sum::<usize>();
        if bytes > MAX_KEYS_BYTES {
            return Err(format!(
                "the store has more keys than one listing holds ({} MiB of them); list them page by page with wasi:keyvalue's list-keys",
                MAX_KEYS_BYTES >> 20
            ));
        }
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
        tokio::task::yield_now().await;
    }
}

/// The store behind `store`, taken out of the instance's table.
fn bucket<T>(
    accessor: &Accessor<T, HasSpin>,
    store: &Resource<Bucket>,
) -> Result<Arc<tern_kv::Store>> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.store.clone()))
}

impl kv::Host for ServicesView<'_> {}

impl kv::HostStore for ServicesView<'_> {
    async fn drop(&mut self, store: Resource<Bucket>) -> Result<()> {
        self.close_bucket(store)
    }
}

impl<T> kv::HostStoreWithStore<T> for HasSpin {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> Result<Result<Resource<Bucket>, kv::Error>> {
        let opened = accessor.with(|mut access| access.get().open_bucket(&label))?;
        Ok(opened.map_err(|refused| match refused {
            Refused::Unknown => kv::Error::NoSuchStore,
            Refused::Denied => kv::Error::AccessDenied,
            Refused::TooMany => {
                kv::Error::Other(format!("more than {MAX_OPEN_BUCKETS} stores open at once"))
            }
        }))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> Result<Result<Option<Vec<u8>>, kv::Error>> {
        let store = bucket(accessor, &store)?;
        Ok(store.get(&key).await.map_err(kv_error))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), kv::Error>> {
        let store = bucket(accessor, &store)?;
        Ok(store.set(&key, &value, None).await.map_err(|e| match e {
            tern_kv::Error::StoreFull { .. } => kv::Error::StoreTableFull,
            e => kv_error(e),
        }))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> Result<Result<(), kv::Error>> {
        let store = bucket(accessor, &store)?;
        Ok(store.delete(&key).await.map_err(kv_error))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> Result<Result<bool, kv::Error>> {
        let store = bucket(accessor, &store)?;
        Ok(store.exists(&key).await.map_err(kv_error))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
    ) -> Result<(StreamReader<String>, FutureReader<Result<(), kv::Error>>)> {
        let store = bucket(accessor, &store)?;
        let (keys, outcome) = match all_keys(&store).await {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(kv::Error::Other(e))),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(
                &mut access,
                async move { Ok::<_, wasmtime::Error>(outcome) },
            )?;
            Ok((stream, done))
        })
    }
}

impl variables::Host for ServicesView<'_> {}

impl<T> variables::HostWithStore<T> for HasSpin {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> Result<Result<String, variables::Error>> {
        Ok(accessor.with(|mut access| variable(access.get().services, name)))
    }
}

/// The component's variable `name`, as Spin's `variables.get` answers it.
fn variable(services: &crate::Services, name: String) -> Result<String, variables::Error> {
    if !is_variable_name(&name) {
        return Err(variables::Error::InvalidName(name));
    }
    match services.variables.get(&name) {
        Some(value) => Ok(value.clone()),
        None => Err(variables::Error::Undefined(format!(
            "no variable named `{name}`"
        ))),
    }
}

/// Spin's rule for a variable name: lowercase ASCII letters, digits and
/// `_`, starting with a letter.
fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl sqlite::Host for ServicesView<'_> {}

impl ServicesView<'_> {
    fn open_connection(
        &mut self,
        database: &str,
    ) -> Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        let services = &mut *self.services;
        let Some(db) = services.databases.get(database).cloned() else {
            return Ok(Err(sqlite::Error::NoSuchDatabase));
        };
        if !services.granted_databases.iter().any(|g| g == database) {
            return Ok(Err(sqlite::Error::AccessDenied));
        }
        if services.open_connections >= MAX_OPEN_CONNECTIONS {
            let message = format!("more than {MAX_OPEN_CONNECTIONS} connections open at once");
            return Ok(Err(sqlite::Error::Io(message)));
        }
        services.open_connections += 1;
        Ok(Ok(self.table.push(SqlConnection {
            database: db,
            last_insert_rowid: 0,
            changes: 0,
        })?))
    }
}

fn to_sql(value: sqlite::Value) -> SqlValue {
    match value {
        sqlite::Value::Integer(i) => SqlValue::Integer(i),
        sqlite::Value::Real(f) => SqlValue::Real(f),
        sqlite::Value::Text(s) => SqlValue::Text(s),
        sqlite::Value::Blob(b) => SqlValue::Blob(b),
        sqlite::Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: SqlValue) -> sqlite::Value {
    match value {
        SqlValue::Integer(i) => sqlite::Value::Integer(i),
        SqlValue::Real(f) => sqlite::Value::Real(f),
        SqlValue::Text(s) => sqlite::Value::Text(s),
        SqlValue::Blob(b) => sqlite::Value::Blob(b),
        SqlValue::Null => sqlite::Value::Null,
    }
}

fn sql_error(error: SqlError) -> sqlite::Error {
    match error {
        SqlError::Full => sqlite::Error::DatabaseFull,
        SqlError::Io(message) => sqlite::Error::Io(message),
    }
}

/// Runs `statement` on `database` with `parameters` bound.
async fn run(
    database: Arc<Database>,
    budget: Duration,
    statement: String,
    parameters: Vec<sqlite::Value>,
) -> Result<Rows, sqlite::Error> {
    let params = parameters.into_iter().map(to_sql).collect();
    database
        .execute(statement, params, budget)
        .await
        .map_err(sql_error)
}

impl SqlConnection {
    /// Keeps what a statement of this connection left: its row id and
    /// change count.
    fn note(&mut self, rows: &Rows) {
        self.last_insert_rowid = rows.last_insert_rowid;
        self.changes = rows.changes;
    }
}

fn rows_of(rows: Vec<Vec<SqlValue>>) -> Vec<sqlite::RowResult> {
    rows.into_iter()
        .map(|values| sqlite::RowResult {
            values: values.into_iter().map(from_sql).collect(),
        })
        .collect()
}

impl sqlite::HostConnection for ServicesView<'_> {
    async fn open(
        &mut self,
        database: String,
    ) -> Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        self.open_connection(&database)
    }

    async fn execute(
        &mut self,
        connection: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let database = self.table.get(&connection)?.database.clone();
        let budget = self.services.statement_budget;
        let rows = match run(database, budget, statement, parameters).await {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        self.table.get_mut(&connection)?.note(&rows);
        Ok(Ok(sqlite::QueryResult {
            columns: rows.columns,
            rows: rows_of(rows.rows),
        }))
    }

    async fn last_insert_rowid(&mut self, connection: Resource<SqlConnection>) -> Result<i64> {
        Ok(self.table.get(&connection)?.last_insert_rowid)
    }

    async fn changes(&mut self, connection: Resource<SqlConnection>) -> Result<u64> {
        Ok(self.table.get(&connection)?.changes)
    }

    async fn drop(&mut self, connection: Resource<SqlConnection>) -> Result<()> {
        self.table.delete(connection)?;
        self.services.open_connections -= 1;
        Ok(())
    }
}

impl<T> sqlite::HostConnectionWithStore<T> for HasSpin {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        accessor.with(|mut access| access.get().open_connection(&database))
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> Result<
        Result<
            (
                Vec<String>,
                StreamReader<sqlite::RowResult>,
                FutureReader<Result<(), sqlite::Error>>,
            ),
            sqlite::Error,
        >,
    > {
        // The table cannot be held across the statement's await: its
        // database goes out, and what the statement left comes back in.
        let (database, budget) = accessor.with(|mut access| {
            let view = access.get();
            let database = view.table.get(&connection)?.database.clone();
            Ok::<_, wasmtime::Error>((database, view.services.statement_budget))
        })?;
        let rows = match run(database, budget, statement, parameters).await {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            access.get().table.get_mut(&connection)?.note(&rows);
            let stream = StreamReader::new(&mut access, rows_of(rows.rows))?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((rows.columns, stream, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SqlConnection>,
    ) -> Result<i64> {
        accessor.with(|mut access| Ok(access.get().table.get(&connection)?.last_insert_rowid))
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SqlConnection>,
    ) -> Result<u64> {
        accessor.with(|mut access| Ok(access.get().table.get(&connection)?.changes))
    }
}
