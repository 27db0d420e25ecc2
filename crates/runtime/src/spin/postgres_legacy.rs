//! The PostgreSQL interfaces of earlier Spin SDKs: `fermyon:spin/postgres@2.0.0`
//! (with its `rdbms-types`) and `spin:postgres/postgres@3.0.0`, both
//! imported by the Spin Rust SDK 5. They are the `spin:postgres@4.2.0` host
//! of [`super::postgres`] under older types: the same connections, grants,
//! reuse, deadlines and limits, with values converted on the way in and out.
//!
//! What the older types cannot carry:
//! - `fermyon:spin@2.0.0` has unsigned integers, which PostgreSQL lacks: a
//!   `uint8`/`uint16`/`uint32` parameter goes as the next wider signed
//!   integer, a `uint64` as `int64` when it fits. Its values have no dates,
//!   times, UUIDs, JSON or decimals: such a column reads as `unsupported`,
//!   as on Spin.
//! - `spin:postgres@3.0.0` adds dates and times; UUIDs, JSON, decimals,
//!   ranges, arrays and intervals read as `unsupported`.
//! - Neither has a structured database error: a failed statement is
//!   `query-failed` with PostgreSQL's text.

// The interface's error carries PostgreSQL's whole error report; it is
// the guest's answer, made once per failed call, so its size is no cost.
#![allow(clippy::result_large_err)]

use wasmtime::Result;
use wasmtime::component::{Linker, Resource};

use super::postgres::{PostgresConnection, api};
use super::v2::bindings::fermyon::spin::{postgres as v2, rdbms_types as v2_types};
use crate::services::ServicesView;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/spin-postgres-3",
        world: "tern:spin-postgres-3/postgres-3",
        imports: { default: async | trappable },
        with: {
            "spin:postgres/postgres.connection": crate::spin::postgres::PostgresConnection,
        },
    });
}

use bindings::spin::postgres::postgres as v3;

/// Adds `spin:postgres/postgres@3.0.0` to `linker`; `fermyon:spin@2.0.0`'s
/// PostgreSQL comes with the other `fermyon:spin` interfaces.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ServicesView<'_>,
) -> Result<()> {
    v3::add_to_linker::<T, super::HasSpin>(linker, get)
}

type Answer<T, E> = Result<Result<T, E>>;

/// The text of a failed statement, for interfaces whose `query-failed`
/// carries a string.
fn query_failed_text(error: api::QueryError) -> String {
    match error {
        api::QueryError::Text(text) => text,
        api::QueryError::DbError(db) => db.as_text,
    }
}

/// Matches `$value` of enum `$from`, mapping each of `cases` to the case of
/// the same name in `$to`, and the rest by the arms given.
macro_rules! convert {
    ($value:expr, $from:ident => $to:ident, [$($case:ident),* $(,)?], $($pat:pat => $rest:expr),* $(,)?) => {
        match $value {
            $($from::$case(v) => $to::$case(v),)*
            $($pat => $rest,)*
        }
    };
}

fn v2_error(error: api::Error) -> v2_types::Error {
    use api::Error as A;
    use v2_types::Error as E;
    convert!(error, A => E, [ConnectionFailed, BadParameter, ValueConversionFailed, Other],
        A::QueryFailed(e) => E::QueryFailed(query_failed_text(e)))
}

fn v3_error(error: api::Error) -> v3::Error {
    use api::Error as A;
    use v3::Error as E;
    convert!(error, A => E, [ConnectionFailed, BadParameter, ValueConversionFailed, Other],
        A::QueryFailed(e) => E::QueryFailed(query_failed_text(e)))
}

/// A `fermyon:spin@2.0.0` parameter as 4.2's: unsigned integers widen to
/// the signed type that holds them.
fn from_v2_param(value: v2_types::ParameterValue) -> Result<api::ParameterValue, v2_types::Error> {
    use api::ParameterValue as P;
    use v2_types::ParameterValue as V;
    Ok(convert!(value, V => P,
        [Boolean, Int8, Int16, Int32, Int64, Floating32, Floating64, Str, Binary],
        V::Uint8(u) => P::Int16(i16::from(u)),
        V::Uint16(u) => P::Int32(i32::from(u)),
        V::Uint32(u) => P::Int64(i64::from(u)),
        V::Uint64(u) => P::Int64(i64::try_from(u).map_err(|_| {
            v2_types::Error::BadParameter(format!(
                "uint64 {u} is larger than PostgreSQL's largest integer (int8)"
            ))
        })?),
        V::DbNull => P::DbNull))
}

fn to_v2_value(value: api::DbValue) -> v2_types::DbValue {
    use api::DbValue as D;
    use v2_types::DbValue as V;
    convert!(value, D => V,
        [Boolean, Int8, Int16, Int32, Int64, Floating32, Floating64, Str, Binary],
        D::DbNull => V::DbNull,
        _ => V::Unsupported)
}

fn to_v2_type(ty: api::DbDataType) -> v2_types::DbDataType {
    use api::DbDataType as D;
    use v2_types::DbDataType as V;
    match ty {
        D::Boolean => V::Boolean,
        D::Int8 => V::Int8,
        D::Int16 => V::Int16,
        D::Int32 => V::Int32,
        D::Int64 => V::Int64,
        D::Floating32 => V::Floating32,
        D::Floating64 => V::Floating64,
        D::Str => V::Str,
        D::Binary => V::Binary,
        _ => V::Other,
    }
}

fn from_v3_param(value: v3::ParameterValue) -> api::ParameterValue {
    use api::ParameterValue as P;
    use v3::ParameterValue as V;
    convert!(value, V => P,
        [Boolean, Int8, Int16, Int32, Int64, Floating32, Floating64, Str, Binary,
         Date, Time, Datetime, Timestamp],
        V::DbNull => P::DbNull)
}

fn to_v3_value(value: api::DbValue) -> v3::DbValue {
    use api::DbValue as D;
    use v3::DbValue as V;
    convert!(value, D => V,
        [Boolean, Int8, Int16, Int32, Int64, Floating32, Floating64, Str, Binary,
         Date, Time, Datetime, Timestamp],
        D::DbNull => V::DbNull,
        _ => V::Unsupported)
}

fn to_v3_type(ty: api::DbDataType) -> v3::DbDataType {
    use api::DbDataType as D;
    use v3::DbDataType as V;
    match ty {
        D::Boolean => V::Boolean,
        D::Int8 => V::Int8,
        D::Int16 => V::Int16,
        D::Int32 => V::Int32,
        D::Int64 => V::Int64,
        D::Floating32 => V::Floating32,
        D::Floating64 => V::Floating64,
        D::Str => V::Str,
        D::Binary => V::Binary,
        D::Date => V::Date,
        D::Time => V::Time,
        D::Datetime => V::Datetime,
        D::Timestamp => V::Timestamp,
        _ => V::Other,
    }
}

impl v2_types::Host for ServicesView<'_> {}

impl v2::Host for ServicesView<'_> {}

impl v2::HostConnection for ServicesView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> Answer<Resource<PostgresConnection>, v2_types::Error> {
        let opened = api::HostConnection::open(self, address).await?;
        Ok(opened.map_err(v2_error))
    }

    async fn query(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<v2_types::ParameterValue>,
    ) -> Answer<v2_types::RowSet, v2_types::Error> {
        let params = match params.into_iter().map(from_v2_param).collect() {
            Ok(params) => params,
            Err(e) => return Ok(Err(e)),
        };
        let rows = api::HostConnection::query(self, connection, statement, params).await?;
        Ok(rows.map_err(v2_error).map(|set| v2_types::RowSet {
            columns: set
                .columns
                .into_iter()
                .map(|c| v2_types::Column {
                    name: c.name,
                    data_type: to_v2_type(c.data_type),
                })
                .collect(),
            rows: set
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(to_v2_value).collect())
                .collect(),
        }))
    }

    async fn execute(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<v2_types::ParameterValue>,
    ) -> Answer<u64, v2_types::Error> {
        let params = match params.into_iter().map(from_v2_param).collect() {
            Ok(params) => params,
            Err(e) => return Ok(Err(e)),
        };
        let changed = api::HostConnection::execute(self, connection, statement, params).await?;
        Ok(changed.map_err(v2_error))
    }

    async fn drop(&mut self, connection: Resource<PostgresConnection>) -> Result<()> {
        api::HostConnection::drop(self, connection).await
    }
}

impl v3::Host for ServicesView<'_> {}

impl v3::HostConnection for ServicesView<'_> {
    async fn open(&mut self, address: String) -> Answer<Resource<PostgresConnection>, v3::Error> {
        let opened = api::HostConnection::open(self, address).await?;
        Ok(opened.map_err(v3_error))
    }

    async fn query(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> Answer<v3::RowSet, v3::Error> {
        let params = params.into_iter().map(from_v3_param).collect();
        let rows = api::HostConnection::query(self, connection, statement, params).await?;
        Ok(rows.map_err(v3_error).map(|set| v3::RowSet {
            columns: set
                .columns
                .into_iter()
                .map(|c| v3::Column {
                    name: c.name,
                    data_type: to_v3_type(c.data_type),
                })
                .collect(),
            rows: set
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(to_v3_value).collect())
                .collect(),
        }))
    }

    async fn execute(
        &mut self,
        connection: Resource<PostgresConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> Answer<u64, v3::Error> {
        let params = params.into_iter().map(from_v3_param).collect();
        let changed = api::HostConnection::execute(self, connection, statement, params).await?;
        Ok(changed.map_err(v3_error))
    }

    async fn drop(&mut self, connection: Resource<PostgresConnection>) -> Result<()> {
        api::HostConnection::drop(self, connection).await
    }
}
