//! `spin:postgres/postgres@4.2.0`: a guest's statements to a PostgreSQL
//! server, through the component's `allowed_outbound_hosts`
//! (`postgres://HOST:PORT`).
//!
//! The address is checked before any connection (see
//! [`super::checked_addresses`]), and Tern connects to an address it checked.
//! Connections are reused: when a guest drops one, it is reset
//! (`DISCARD ALL`, off the request's path) and kept for the component's next
//! request to the same address. A statement runs for at most the request's
//! deadline; one still running when its request ends (deadline, trap,
//! client gone) is cancelled on the server and its connection closed, so a
//! hostile guest cannot leave work running there.

// The interface's error carries PostgreSQL's whole error report; it is
// the guest's answer, made once per failed call, so its size is no cost.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{CancelToken, Client, Config, NoTls, Statement};
use wasmtime::Result;
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use super::HasSpin;
pub(super) use super::bindings::spin::postgres::postgres as api;
use crate::services::{Outbound, Reserved, ServicesView};

/// Connections (and connection builders) one instance may hold open at
/// once.
pub const MAX_OPEN_POSTGRES: u32 = 16;

/// The longest address a `connection-builder` holds.
pub const MAX_ADDRESS_LEN: usize = 4096;

/// Idle connections kept per address for the component's next requests.
const MAX_IDLE_PER_ADDRESS: usize = 8;

/// Idle connections kept for the component in all: addresses are the
/// guest's strings, which it may vary without end.
const MAX_IDLE: usize = 16;

/// How long the host's own exchanges with a server (a statement's cancel,
/// an idle connection's reset) may take before they are given up.
const HOUSEKEEPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most a query's rows may take once converted: a guest selecting a
/// huge result would otherwise grow host memory outside its memory limit.
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// Room left for what one value expands to as it is converted: a NUMERIC
/// of a dozen bytes on the wire is up to 147,455 characters as text, so
/// an array of them is counted as it converts, not after. Set around each
/// value's conversion, which runs on this thread without awaiting.
#[derive(Clone, Copy)]
enum Room {
    /// Outside a query's rows.
    Unbounded,
    Left(usize),
    Exhausted,
}

thread_local! {
    static ROOM: std::cell::Cell<Room> = const { std::cell::Cell::new(Room::Unbounded) };
}

/// Runs `convert` with `room` bytes left for what it expands to: `None`
/// when that was not enough.
fn within_room<T>(room: usize, convert: impl FnOnce() -> T) -> Option<T> {
    ROOM.with(|r| r.set(Room::Left(room)));
    let value = convert();
    match ROOM.with(|r| r.replace(Room::Unbounded)) {
        Room::Exhausted => None,
        _ => Some(value),
    }
}

/// Takes `len` bytes of the room, failing the conversion when it is not
/// there.
fn take_room(len: usize) -> Result<(), BoxError> {
    ROOM.with(|r| match r.get() {
        Room::Unbounded => Ok(()),
        Room::Left(room) if len <= room => {
            r.set(Room::Left(room - len));
            Ok(())
        }
        _ => {
            r.set(Room::Exhausted);
            Err("the value is larger than the result may hold".into())
        }
    })
}

fn result_too_large() -> api::Error {
    api::Error::Other(format!(
        "the query's result is larger than {} MiB",
        MAX_RESULT_BYTES >> 20
    ))
}

/// Seconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_SECONDS: i64 = 946_684_800;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The component's idle connections by address, shared by its instances.
#[derive(Clone, Default)]
pub struct PostgresConnections(Arc<Mutex<HashMap<String, Vec<Pooled>>>>);

/// A server connection and where it goes.
struct Pooled {
    client: Client,
    addr: SocketAddr,
    task: Task,
}

/// The task driving a connection, stopped when this is dropped: a
/// connection neither a guest nor the pool holds is closed, whatever the
/// server does (tokio-postgres would keep polling one with replies owed).
struct Task(tokio::task::AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PostgresConnections {
    fn take(&self, address: &str) -> Option<Pooled> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let idle = map.get_mut(address)?;
        while let Some(pooled) = idle.pop() {
            if !pooled.client.is_closed() {
                return Some(pooled);
            }
        }
        None
    }

    /// Resets `pooled` in the background and keeps it, if it is healthy
    /// and there is room.
    fn give_back(&self, address: String, pooled: Pooled) {
        if pooled.client.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            // Fails inside a transaction the guest left open: the connection
            // is then closed (its task stopped with `pooled`), which rolls
            // that transaction back.
            let reset = pooled.client.batch_execute("DISCARD ALL");
            if !matches!(
                tokio::time::timeout(HOUSEKEEPING_TIMEOUT, reset).await,
                Ok(Ok(()))
            ) {
                return;
            }
            let mut map = pool.0.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, idle| {
                idle.retain(|pooled| !pooled.client.is_closed());
                !idle.is_empty()
            });
            let total: usize = map.values().map(Vec::len).sum();
            let idle = map.entry(address).or_default();
            if idle.len() < MAX_IDLE_PER_ADDRESS && total < MAX_IDLE {
                idle.push(pooled);
            }
        });
    }
}

/// A guest's open connection.
pub struct PostgresConnection {
    address: String,
    /// Shared with the statements in flight on it; taken when dropped.
    client: Option<Arc<Client>>,
    addr: SocketAddr,
    /// Its task: stopped when the connection is dropped and not pooled.
    task: Option<Task>,
    /// Set when a statement on it was abandoned mid-way: its state on the
    /// server is unknown, so it must not be reused.
    abandoned: Arc<AtomicBool>,
    pool: PostgresConnections,
}

impl Drop for PostgresConnection {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.abandoned.load(Ordering::Acquire) {
            return;
        }
        // A statement still holding the client is in flight: when it is
        // abandoned, its guard cancels it and the connection closes.
        if let (Ok(client), Some(task)) = (Arc::try_unwrap(client), self.task.take()) {
            let pooled = Pooled {
                client,
                addr: self.addr,
                task,
            };
            self.pool
                .give_back(std::mem::take(&mut self.address), pooled);
        }
    }
}

/// What `connection-builder` collects before it connects.
pub struct PostgresBuilder {
    address: String,
}

/// A statement in flight. Dropped before [`InFlight::finish`] (its request
/// ended), it cancels the statement on the server and marks the connection
/// abandoned.
struct InFlight {
    cancel: Option<(CancelToken, SocketAddr)>,
    abandoned: Arc<AtomicBool>,
}

impl InFlight {
    fn finish(mut self) {
        self.cancel = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some((token, addr)) = self.cancel.take() else {
            return;
        };
        self.abandoned.store(true, Ordering::Release);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tokio::time::timeout(HOUSEKEEPING_TIMEOUT, async move {
                if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                    let _ = token.cancel_query_raw(stream, NoTls).await;
                }
            }));
        }
    }
}

/// Parses `address`, checks it against `outbound` and connects to an
/// address it allows, or reuses an idle connection to it.
async fn connect(
    outbound: &Outbound,
    pool: &PostgresConnections,
    address: &str,
) -> Result<PostgresConnection, api::Error> {
    let open = |pooled: Pooled| PostgresConnection {
        address: address.to_owned(),
        client: Some(Arc::new(pooled.client)),
        addr: pooled.addr,
        task: Some(pooled.task),
        abandoned: Arc::default(),
        pool: pool.clone(),
    };
    if let Some(pooled) = pool.take(address) {
        return Ok(open(pooled));
    }
    let failed = |why: String| api::Error::ConnectionFailed(why);
    let config = Config::from_str(address)
        .map_err(|e| failed(format!("invalid PostgreSQL address: {e}")))?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(failed(
            "sslmode=require: Tern does not connect to PostgreSQL over TLS yet".into(),
        ));
    }
    let host = match config.get_hosts() {
        [Host::Tcp(host)] => host.clone(),
        [] => return Err(failed("the address names no host".into())),
        [Host::Tcp(_), ..] => {
            return Err(failed("the address names more than one host".into()));
        }
        _ => return Err(failed("only TCP hosts are supported, not sockets".into())),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let checked = super::checked_addresses(outbound, "postgres", &host, port)
        .await
        .map_err(|why| failed(format!("outbound connection denied: {why}")))?;
    let mut last = String::from("no address to connect to");
    for addr in checked {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            config
                .connect_raw(stream, NoTls)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(outbound.connect_timeout, attempt).await {
            Ok(Ok((client, connection))) => {
                let task = Task(tokio::spawn(connection).abort_handle());
                return Ok(open(Pooled { client, addr, task }));
            }
            Ok(Err(why)) => last = why,
            Err(_) => {
                last = format!(
                    "no answer within {}",
                    tern_manifest::HumanDuration(outbound.connect_timeout)
                )
            }
        }
    }
    Err(failed(format!("cannot connect to PostgreSQL: {last}")))
}

/// The client behind `connection`, and what a statement on it needs.
fn client<T>(
    accessor: &Accessor<T, HasSpin>,
    connection: &Resource<PostgresConnection>,
) -> Result<(Arc<Client>, InFlight, Duration)> {
    accessor.with(|mut access| access.get().statement_on(connection))
}

/// The rows of a query, and their columns.
struct Rows {
    columns: Vec<api::Column>,
    rows: Vec<Vec<api::DbValue>>,
}

/// Runs `statement` as a query with `params`, for at most `budget`.
async fn query(
    client: &Client,
    budget: Duration,
    statement: &str,
    params: Vec<api::ParameterValue>,
) -> Result<Rows, api::Error> {
    let work = async {
        let prepared = client.prepare(statement).await.map_err(pg_error)?;
        let columns = columns_of(&prepared);
        let params = bound(&prepared, params)?;
        let stream = client
            .query_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
            .await
            .map_err(pg_error)?;
        futures::pin_mut!(stream);
        let mut rows = Vec::new();
        let mut size = 0;
        while let Some(row) = stream.next().await {
            let row = row.map_err(pg_error)?;
            let mut values = Vec::with_capacity(row.len());
            for i in 0..row.len() {
                let room = MAX_RESULT_BYTES.saturating_sub(size);
                let Value(value) = within_room(room, || row.try_get(i))
                    .ok_or_else(result_too_large)?
                    .map_err(|e| api::Error::ValueConversionFailed(format!("column {i}: {e}")))?;
                size += value_size(&value);
                values.push(value);
            }
            if size > MAX_RESULT_BYTES {
                return Err(result_too_large());
            }
            rows.push(values);
        }
        Ok(Rows { columns, rows })
    };
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(out_of_time(budget)),
    }
}

/// Runs `statement` as a command with `params`, for at most `budget`.
async fn execute(
    client: &Client,
    budget: Duration,
    statement: &str,
    params: Vec<api::ParameterValue>,
) -> Result<u64, api::Error> {
    let work = async {
        let prepared = client.prepare(statement).await.map_err(pg_error)?;
        let params = bound(&prepared, params)?;
        client
            .execute_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
            .await
            .map_err(pg_error)
    };
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(out_of_time(budget)),
    }
}

fn out_of_time(budget: Duration) -> api::Error {
    api::Error::Other(format!(
        "the statement ran for longer than {} and was cancelled",
        tern_manifest::HumanDuration(budget)
    ))
}

/// `params` as parameters of `statement`, as many as it takes.
fn bound(
    statement: &Statement,
    params: Vec<api::ParameterValue>,
) -> Result<Vec<Param>, api::Error> {
    let wanted = statement.params().len();
    if params.len() != wanted {
        return Err(api::Error::BadParameter(format!(
            "the statement takes {wanted} parameters, {} given",
            params.len()
        )));
    }
    Ok(params.into_iter().map(Param).collect())
}

fn columns_of(statement: &Statement) -> Vec<api::Column> {
    statement
        .columns()
        .iter()
        .map(|c| api::Column {
            name: c.name().to_owned(),
            data_type: data_type(c.type_()),
        })
        .collect()
}

fn pg_error(error: tokio_postgres::Error) -> api::Error {
    if let Some(db) = error.as_db_error() {
        let mut extras = Vec::new();
        let mut extra = |name: &str, value: Option<&str>| {
            if let Some(value) = value {
                extras.push((name.to_owned(), value.to_owned()));
            }
        };
        extra("hint", db.hint());
        extra("schema", db.schema());
        extra("table", db.table());
        extra("column", db.column());
        extra("datatype", db.datatype());
        extra("constraint", db.constraint());
        extra("where", db.where_());
        return api::Error::QueryFailed(api::QueryError::DbError(api::DbError {
            as_text: db.to_string(),
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras,
        }));
    }
    if error.is_closed() {
        return api::Error::ConnectionFailed("the connection to PostgreSQL is closed".into());
    }
    let text = match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    if text.starts_with("error serializing parameter") {
        api::Error::BadParameter(text)
    } else {
        api::Error::QueryFailed(api::QueryError::Text(text))
    }
}

fn value_size(value: &api::DbValue) -> usize {
    use api::DbValue as V;
    16 + match value {
        V::Str(s) | V::Uuid(s) | V::Decimal(s) => s.len(),
        V::Binary(b) | V::Jsonb(b) | V::Unsupported(b) => b.len(),
        V::ArrayInt32(a) => a.len() * 8,
        V::ArrayInt64(a) => a.len() * 16,
        V::ArrayStr(a) | V::ArrayDecimal(a) => a
            .iter()
            .map(|s| 24 + s.as_ref().map_or(0, String::len))
            .sum(),
        _ => 0,
    }
}

fn data_type(ty: &Type) -> api::DbDataType {
    use api::DbDataType as D;
    match *ty {
        Type::BOOL => D::Boolean,
        Type::CHAR => D::Int8,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::FLOAT4 => D::Floating32,
        Type::FLOAT8 => D::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => D::Str,
        Type::BYTEA => D::Binary,
        Type::DATE => D::Date,
        Type::TIME => D::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => D::Datetime,
        Type::UUID => D::Uuid,
        Type::JSONB | Type::JSON => D::Jsonb,
        Type::NUMERIC => D::Decimal,
        Type::INT4_RANGE => D::RangeInt32,
        Type::INT8_RANGE => D::RangeInt64,
        Type::NUM_RANGE => D::RangeDecimal,
        Type::INT4_ARRAY => D::ArrayInt32,
        Type::INT8_ARRAY => D::ArrayInt64,
        Type::NUMERIC_ARRAY => D::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => D::ArrayStr,
        Type::INTERVAL => D::Interval,
        _ => D::Other(ty.name().to_owned()),
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

/// A row's value, decoded from PostgreSQL's binary form by its column's
/// type; a type the interface has no case for comes as its raw bytes.
struct Value(api::DbValue);

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        use api::DbValue as V;
        Ok(Value(match *ty {
            Type::BOOL => V::Boolean(bool::from_sql(ty, raw)?),
            Type::CHAR => V::Int8(i8::from_sql(ty, raw)?),
            Type::INT2 => V::Int16(i16::from_sql(ty, raw)?),
            Type::INT4 => V::Int32(i32::from_sql(ty, raw)?),
            Type::INT8 => V::Int64(i64::from_sql(ty, raw)?),
            Type::FLOAT4 => V::Floating32(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => V::Floating64(f64::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                V::Str(String::from_sql(ty, raw)?)
            }
            Type::BYTEA => V::Binary(raw.to_vec()),
            Type::DATE => V::Date(date_of(i32::from_sql(&Type::INT4, raw)?)),
            Type::TIME => V::Time(time_of(i64::from_sql(&Type::INT8, raw)?)),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                V::Datetime(datetime_of(i64::from_sql(&Type::INT8, raw)?))
            }
            Type::UUID => V::Uuid(uuid_text(raw)?),
            Type::JSONB => match raw.split_first() {
                Some((1, json)) => V::Jsonb(json.to_vec()),
                _ => return Err("unknown jsonb version".into()),
            },
            Type::JSON => V::Jsonb(raw.to_vec()),
            Type::NUMERIC => V::Decimal(numeric_text(raw)?),
            Type::INT4_ARRAY => V::ArrayInt32(Vec::from_sql(ty, plausible_array(raw)?)?),
            Type::INT8_ARRAY => V::ArrayInt64(Vec::from_sql(ty, plausible_array(raw)?)?),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
                V::ArrayStr(Vec::from_sql(ty, plausible_array(raw)?)?)
            }
            Type::NUMERIC_ARRAY => {
                let items: Vec<Option<Numeric>> = Vec::from_sql(ty, plausible_array(raw)?)?;
                V::ArrayDecimal(items.into_iter().map(|n| n.map(|n| n.0)).collect())
            }
            Type::INTERVAL if raw.len() == 16 => V::Interval(api::Interval {
                micros: i64::from_be_bytes(raw[0..8].try_into()?),
                days: i32::from_be_bytes(raw[8..12].try_into()?),
                months: i32::from_be_bytes(raw[12..16].try_into()?),
            }),
            _ => V::Unsupported(raw.to_vec()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value(api::DbValue::DbNull))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A NUMERIC, as decimal text.
struct Numeric(String);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        numeric_text(raw).map(Numeric)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A guest's parameter, encoded in PostgreSQL's binary form for the type
/// the statement expects.
#[derive(Debug)]
struct Param(api::ParameterValue);

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        use api::ParameterValue as P;
        /// Encodes with `value`'s own encoding, if it suits `ty`.
        fn plain<T: ToSql>(
            value: &T,
            name: &str,
            ty: &Type,
            out: &mut BytesMut,
        ) -> Result<IsNull, BoxError> {
            if !T::accepts(ty) {
                return Err(format!("a {name} cannot be given where {ty} is expected").into());
            }
            value.to_sql(ty, out)
        }
        let expect = |types: &[Type], name: &str| {
            if types.contains(ty) {
                Ok(())
            } else {
                Err::<(), BoxError>(
                    format!("a {name} cannot be given where {ty} is expected").into(),
                )
            }
        };
        match &self.0 {
            P::Boolean(b) => plain(b, "boolean", ty, out),
            P::Int8(i) => plain(i, "int8", ty, out),
            P::Int16(i) => plain(i, "int16", ty, out),
            P::Int32(i) => plain(i, "int32", ty, out),
            P::Int64(i) => plain(i, "int64", ty, out),
            P::Floating32(f) => plain(f, "floating32", ty, out),
            P::Floating64(f) => plain(f, "floating64", ty, out),
            P::Str(s) => plain(&s.as_str(), "str", ty, out),
            P::Binary(b) => plain(&b.as_slice(), "binary", ty, out),
            P::Date((y, m, d)) => {
                expect(&[Type::DATE], "date")?;
                let days = days_from_civil(*y, *m, *d)?
                    .checked_sub(PG_EPOCH_DAYS)
                    .ok_or("the date is out of range")?;
                out.put_i32(days);
                Ok(IsNull::No)
            }
            P::Time((h, m, s, ns)) => {
                expect(&[Type::TIME], "time")?;
                out.put_i64(micros_of_day(*h, *m, *s, *ns)?);
                Ok(IsNull::No)
            }
            P::Datetime((y, mo, d, h, mi, s, ns)) => {
                expect(&[Type::TIMESTAMP, Type::TIMESTAMPTZ], "datetime")?;
                let days = i64::from(days_from_civil(*y, *mo, *d)?) - i64::from(PG_EPOCH_DAYS);
                let of_day = micros_of_day(*h, *mi, *s, *ns)?;
                let micros = days
                    .checked_mul(86_400_000_000)
                    .and_then(|m| m.checked_add(of_day))
                    .ok_or("the datetime is out of range")?;
                out.put_i64(micros);
                Ok(IsNull::No)
            }
            P::Timestamp(seconds) => {
                expect(&[Type::TIMESTAMP, Type::TIMESTAMPTZ], "timestamp")?;
                let micros = seconds
                    .checked_sub(PG_EPOCH_SECONDS)
                    .and_then(|s| s.checked_mul(1_000_000))
                    .ok_or("the timestamp is out of range")?;
                out.put_i64(micros);
                Ok(IsNull::No)
            }
            P::Uuid(text) => {
                expect(&[Type::UUID], "uuid")?;
                out.put_slice(&uuid_bytes(text)?);
                Ok(IsNull::No)
            }
            P::Jsonb(json) => {
                expect(&[Type::JSONB, Type::JSON], "jsonb")?;
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(json);
                Ok(IsNull::No)
            }
            P::Decimal(text) => {
                expect(&[Type::NUMERIC], "decimal")?;
                numeric_binary(text, out)?;
                Ok(IsNull::No)
            }
            P::ArrayInt32(items) => plain(items, "array-int32", ty, out),
            P::ArrayInt64(items) => plain(items, "array-int64", ty, out),
            P::ArrayStr(items) => plain(items, "array-str", ty, out),
            P::Interval(i) => {
                expect(&[Type::INTERVAL], "interval")?;
                out.put_i64(i.micros);
                out.put_i32(i.days);
                out.put_i32(i.months);
                Ok(IsNull::No)
            }
            P::DbNull => Ok(IsNull::Yes),
            P::ArrayDecimal(_) | P::RangeInt32(_) | P::RangeInt64(_) | P::RangeDecimal(_) => {
                Err("Tern does not pass decimal arrays or ranges as parameters yet; cast from text in the statement".into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// (year, month, day) of `days` after 2000-01-01.
fn date_of(days: i32) -> (i32, u8, u8) {
    let (year, month, day) =
        tern_manifest::civil_from_days(i64::from(days) + i64::from(PG_EPOCH_DAYS));
    (year as i32, month as u8, day as u8)
}

/// `raw`, an array in PostgreSQL's binary form, unless its header claims
/// more elements than its bytes could hold (each takes 4 at least): the
/// driver reserves room for every claimed element before reading one, so
/// a server could otherwise make the host reserve gigabytes in 30 bytes.
fn plausible_array(raw: &[u8]) -> Result<&[u8], BoxError> {
    let malformed = || -> BoxError { "a malformed array".into() };
    let word = |at: usize| {
        raw.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
    };
    let dims = usize::try_from(word(0).ok_or_else(malformed)?).map_err(|_| malformed())?;
    if dims > 6 {
        return Err(malformed());
    }
    let mut count: u64 = u64::from(dims > 0);
    for dim in 0..dims {
        let size = word(12 + dim * 8).ok_or_else(malformed)?;
        count = count.saturating_mul(u64::try_from(size).map_err(|_| malformed())?);
    }
    let room = raw.len().saturating_sub(12 + dims * 8) / 4;
    if count > room as u64 {
        return Err(format!("an array claiming {count} elements in {} bytes", raw.len()).into());
    }
    Ok(raw)
}

/// Days from 1970-01-01 to (year, month, day).
fn days_from_civil(year: i32, month: u8, day: u8) -> Result<i32, BoxError> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(format!("{year}-{month}-{day} is not a date").into());
    }
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).map_err(|_| "the date is out of range".into())
}

fn micros_of_day(hour: u8, minute: u8, second: u8, nanos: u32) -> Result<i64, BoxError> {
    if hour > 23 || minute > 59 || second > 60 || nanos >= 1_000_000_000 {
        return Err(format!("{hour}:{minute}:{second}.{nanos} is not a time").into());
    }
    Ok(
        ((i64::from(hour) * 60 + i64::from(minute)) * 60 + i64::from(second)) * 1_000_000
            + i64::from(nanos / 1000),
    )
}

fn time_of(micros: i64) -> (u8, u8, u8, u32) {
    let seconds = micros.div_euclid(1_000_000);
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    (
        (seconds / 3600 % 24) as u8,
        (seconds / 60 % 60) as u8,
        (seconds % 60) as u8,
        nanos,
    )
}

fn datetime_of(micros: i64) -> (i32, u8, u8, u8, u8, u8, u32) {
    let days = micros.div_euclid(86_400_000_000);
    let (year, month, day) = date_of(days as i32);
    let (hour, minute, second, nanos) = time_of(micros.rem_euclid(86_400_000_000));
    (year, month, day, hour, minute, second, nanos)
}

fn uuid_text(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("a uuid is 16 bytes".into());
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn uuid_bytes(text: &str) -> Result<[u8; 16], BoxError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    let bad = || -> BoxError { format!("`{text}` is not a uuid").into() };
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut bytes = [0; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(bytes)
}

/// NUMERIC's binary form (base-10000 digits with a weight and a display
/// scale) as decimal text.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("a numeric is cut short")?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let count = usize::from(word(0)?);
    let weight = word(1)? as i16;
    let sign = word(2)?;
    let scale = usize::from(word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    // The text's length, counted before it is made: sign, integer groups
    // of four digits, point and fraction.
    let integer = if weight < 0 {
        1
    } else {
        (weight as usize + 1) * 4
    };
    let fraction = if scale > 0 { 1 + scale } else { 0 };
    take_room(usize::from(sign == 0x4000) + integer + fraction)?;
    let digits = (0..count)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, _>>()?;
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    // The integer part: groups 0..=weight.
    if weight < 0 {
        text.push('0');
    } else {
        for group in 0..=weight as usize {
            let digit = digits.get(group).copied().unwrap_or(0);
            if group == 0 {
                text.push_str(&digit.to_string());
            } else {
                text.push_str(&format!("{digit:04}"));
            }
        }
    }
    if scale > 0 {
        let mut fraction = String::new();
        let mut group = i32::from(weight) + 1;
        while fraction.len() < scale {
            let digit = if group < 0 {
                0
            } else {
                digits.get(group as usize).copied().unwrap_or(0)
            };
            fraction.push_str(&format!("{digit:04}"));
            group += 1;
        }
        fraction.truncate(scale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// Decimal text (`-12.50`, `NaN`) in NUMERIC's binary form.
fn numeric_binary(text: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let bad = || -> BoxError { format!("`{text}` is not a decimal number").into() };
    let special = match text {
        "NaN" => Some(0xC000),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_slice(&[0, 0, 0, 0]);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole = whole.trim_start_matches('0');
    // Pad both parts to whole groups of four digits around the point.
    let lead = (4 - whole.len() % 4) % 4;
    let trail = (4 - fraction.len() % 4) % 4;
    let padded: String = "0".repeat(lead) + whole + fraction + &"0".repeat(trail);
    let mut groups: Vec<u16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| {
            std::str::from_utf8(c)
                .map_err(|_| bad())?
                .parse()
                .map_err(|_| bad())
        })
        .collect::<Result<_, BoxError>>()?;
    let mut weight = ((lead + whole.len()) / 4) as i32 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let count = u16::try_from(groups.len()).map_err(|_| bad())?;
    let weight = i16::try_from(weight).map_err(|_| bad())?;
    let scale = u16::try_from(fraction.len()).map_err(|_| bad())?;
    out.put_u16(count);
    out.put_i16(weight);
    out.put_u16(if negative { 0x4000 } else { 0 });
    out.put_u16(scale);
    for group in groups {
        out.put_u16(group);
    }
    Ok(())
}

impl api::Host for ServicesView<'_> {}

impl ServicesView<'_> {
    /// Counts a connection against the instance's limit; the count is
    /// given back unless the connection is kept.
    fn admit_postgres(&mut self) -> Result<Reserved, api::Error> {
        (self.services.open_postgres)
            .reserve(MAX_OPEN_POSTGRES)
            .ok_or_else(|| {
                api::Error::Other(format!(
                    "more than {MAX_OPEN_POSTGRES} connections open at once"
                ))
            })
    }
}

/// Opens a connection to `address` for the instance behind `accessor`.
async fn open<T>(
    accessor: &Accessor<T, HasSpin>,
    address: &str,
) -> Result<Result<Resource<PostgresConnection>, api::Error>> {
    let admitted = accessor.with(|mut access| {
        let mut view = access.get();
        view.admit_postgres().map(|reserved| {
            let services = &view.services;
            (
                services.outbound.clone(),
                services.postgres.clone(),
                reserved,
            )
        })
    });
    let (outbound, pool, reserved) = match admitted {
        Ok(admitted) => admitted,
        Err(e) => return Ok(Err(e)),
    };
    let conn = match connect(&outbound, &pool, address).await {
        Ok(conn) => conn,
        Err(e) => return Ok(Err(e)),
    };
    let handle = accessor.with(|mut access| access.get().table.push(conn))?;
    reserved.keep();
    Ok(Ok(handle))
}

type Answer<T> = Result<Result<T, api::Error>>;

impl ServicesView<'_> {
    /// What a statement on `connection` needs.
    fn statement_on(
        &mut self,
        connection: &Resource<PostgresConnection>,
    ) -> Result<(Arc<Client>, InFlight, Duration)> {
        let budget = self.services.statement_budget;
        let conn = self.table.get(connection)?;
        let client = conn
            .client
            .clone()
            .expect("a connection in the table has its client");
        let guard = InFlight {
            cancel: Some((client.cancel_token(), conn.addr)),
            abandoned: conn.abandoned.clone(),
        };
        Ok((client, guard, budget))
    }

    /// Connects this instance to `address`, as `open` and `build` do.
    async fn open_postgres(&mut self, address: &str) -> Answer<Resource<PostgresConnection>> {
        let reserved = match self.admit_postgres() {
            Ok(reserved) => reserved,
            Err(e) => return Ok(Err(e)),
        };
        let (outbound, pool) = (
            self.services.outbound.clone(),
            self.services.postgres.clone(),
        );
        match connect(&outbound, &pool, address).await {
            Ok(conn) => {
                let handle = self.table.push(conn)?;
                reserved.keep();
                Ok(Ok(handle))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl api::HostConnection for ServicesView<'_> {
    async fn open(&mut self, address: String) -> Answer<Resource<PostgresConnection>> {
        self.open_postgres(&address).await
    }

    async fn query(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<api::ParameterValue>,
    ) -> Answer<api::RowSet> {
        let (client, guard, budget) = self.statement_on(&connection)?;
        let result = query(&client, budget, &statement, params).await;
        guard.finish();
        Ok(result.map(|rows| api::RowSet {
            columns: rows.columns,
            rows: rows.rows,
        }))
    }

    async fn execute(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<api::ParameterValue>,
    ) -> Answer<u64> {
        let (client, guard, budget) = self.statement_on(&connection)?;
        let result = execute(&client, budget, &statement, params).await;
        guard.finish();
        Ok(result)
    }

    async fn drop(&mut self, connection: Resource<PostgresConnection>) -> Result<()> {
        self.table.delete(connection)?;
        self.services.open_postgres.release();
        Ok(())
    }
}

impl<T> api::HostConnectionWithStore<T> for HasSpin {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> Answer<Resource<PostgresConnection>> {
        open(accessor, &address).await
    }

    async fn query_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<api::ParameterValue>,
    ) -> Answer<(
        Vec<api::Column>,
        StreamReader<Vec<api::DbValue>>,
        FutureReader<Result<(), api::Error>>,
    )> {
        let (client, guard, budget) = client(accessor, &connection)?;
        let result = query(&client, budget, &statement, params).await;
        guard.finish();
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, rows.rows)?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((rows.columns, stream, done)))
        })
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<api::ParameterValue>,
    ) -> Answer<u64> {
        let (client, guard, budget) = client(accessor, &connection)?;
        let result = execute(&client, budget, &statement, params).await;
        guard.finish();
        Ok(result)
    }
}

impl api::HostConnectionBuilder for ServicesView<'_> {
    /// Builders count against the instance's connections, and hold an
    /// address of at most [`MAX_ADDRESS_LEN`]: a guest making them in a
    /// loop would otherwise grow host memory outside its memory limit. The
    /// constructor has no error case, so past either limit the guest traps.
    async fn new(&mut self, address: String) -> Result<Resource<PostgresBuilder>> {
        if address.len() > MAX_ADDRESS_LEN {
            wasmtime::bail!(
                "a PostgreSQL address longer than {MAX_ADDRESS_LEN} bytes was given to connection-builder"
            );
        }
        let reserved = match self.admit_postgres() {
            Ok(reserved) => reserved,
            Err(api::Error::Other(why)) => wasmtime::bail!("connection-builder: {why}"),
            Err(other) => wasmtime::bail!("connection-builder: {other:?}"),
        };
        let handle = self.table.push(PostgresBuilder { address })?;
        reserved.keep();
        Ok(handle)
    }

    async fn set_ca_root(
        &mut self,
        _: Resource<PostgresBuilder>,
        _: String,
    ) -> Result<Result<(), api::Error>> {
        Ok(Err(api::Error::Other(
            "Tern does not connect to PostgreSQL over TLS yet, so it takes no CA root".into(),
        )))
    }

    async fn build(
        &mut self,
        builder: Resource<PostgresBuilder>,
    ) -> Answer<Resource<PostgresConnection>> {
        let address = self.table.get(&builder)?.address.clone();
        self.open_postgres(&address).await
    }

    async fn drop(&mut self, builder: Resource<PostgresBuilder>) -> Result<()> {
        self.table.delete(builder)?;
        self.services.open_postgres.release();
        Ok(())
    }
}

impl<T> api::HostConnectionBuilderWithStore<T> for HasSpin {
    async fn build_async(
        accessor: &Accessor<T, Self>,
        builder: Resource<PostgresBuilder>,
    ) -> Answer<Resource<PostgresConnection>> {
        let address = accessor.with(|mut access| {
            Ok::<_, wasmtime::Error>(access.get().table.get(&builder)?.address.clone())
        })?;
        open(accessor, &address).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_claiming_more_than_they_hold_are_refused() {
        // One dimension of 2 int4 elements: length, then value, each.
        let mut two = Vec::new();
        for word in [1i32, 0, 23, 2, 1, 4, 7, 4, 8] {
            two.extend(word.to_be_bytes());
        }
        let parsed: Vec<Option<i32>> =
            Vec::from_sql(&Type::INT4_ARRAY, plausible_array(&two).unwrap()).unwrap();
        assert_eq!(parsed, [Some(7), Some(8)]);
        // The same header claiming 2^31 - 1 elements: refused before the
        // driver reserves room for them.
        let mut claiming = two.clone();
        claiming[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        let error = plausible_array(&claiming).unwrap_err().to_string();
        assert_eq!(error, "an array claiming 2147483647 elements in 36 bytes");
        let (minus, seven) = ((-1i32).to_be_bytes(), 7i32.to_be_bytes());
        let malformed: [&[u8]; 3] = [&[0, 0], &minus, &seven];
        for bad in malformed {
            assert!(plausible_array(bad).is_err());
        }
        assert!(
            plausible_array(&0i32.to_be_bytes()).is_ok(),
            "an empty array"
        );
    }

    #[test]
    fn dates_round_trip_through_days() {
        for (y, m, d) in [
            (2000, 1, 1),
            (1999, 12, 31),
            (2026, 11, 29),
            (1900, 2, 28),
            (2400, 2, 29),
        ] {
            let days = days_from_civil(y, m, d).unwrap() - PG_EPOCH_DAYS;
            assert_eq!(date_of(days), (y, m, d));
        }
        assert_eq!(days_from_civil(2000, 1, 1).unwrap(), PG_EPOCH_DAYS);
    }

    #[test]
    fn numerics_round_trip_through_binary() {
        for text in [
            "0",
            "12.50",
            "-0.0001",
            "123456789.123456789",
            "10000",
            "NaN",
            "-7",
        ] {
            let mut out = BytesMut::new();
            numeric_binary(text, &mut out).unwrap();
            assert_eq!(numeric_text(&out).unwrap(), text, "{text}");
        }
        assert!(numeric_binary("1e5", &mut BytesMut::new()).is_err());
        assert!(numeric_binary(".", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn a_numeric_is_counted_before_its_text_is_made() {
        // 1e131071: one base-10000 digit (1000), weight 32767; 131,072
        // digits as text, from 10 bytes.
        let huge = [0, 1, 0x7f, 0xff, 0, 0, 0, 0, 0x03, 0xe8];
        assert_eq!(
            within_room(200_000, || numeric_text(&huge).unwrap().len()),
            Some(131_072)
        );
        let refused = within_room(100_000, || numeric_text(&huge).map(|t| t.len()));
        assert!(refused.is_none());
        // Each conversion takes from the same room.
        let twice = within_room(200_000, || {
            numeric_text(&huge)
                .and_then(|_| numeric_text(&huge))
                .is_ok()
        });
        assert_eq!(twice, None);
        // Outside a query's rows, nothing is counted.
        assert!(numeric_text(&huge).is_ok());
    }

    #[test]
    fn uuids_round_trip() {
        let text = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(uuid_text(&uuid_bytes(text).unwrap()).unwrap(), text);
        assert!(uuid_bytes("not-a-uuid").is_err());
    }
}
