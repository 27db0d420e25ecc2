//! PostgreSQL through each of the three modules of the Spin Rust SDK 5, as
//! its documentation shows them, the address from the `pg_address`
//! variable. Each has its own table and routes under its prefix:
//! `/pg` (`fermyon:spin/postgres@2.0.0`), `/pg3` (`spin:postgres@3.0.0`) and
//! `/pg4` (`spin:postgres@4.0.0`).
//!
//! - `POST /PREFIX?title=T&stars=N` inserts a row, with a parameter of each
//!   type the interface has, and answers the count of rows changed;
//! - `GET /PREFIX?min=N` lists the rows with at least N stars, after a line
//!   of the columns and their types;
//! - `GET /PREFIX/bad` runs a statement PostgreSQL refuses;
//! - `GET /pg/u64` passes a `uint64` PostgreSQL cannot hold.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{http_component, pg, pg3, pg4, variables};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let address = variables::get("pg_address")?;
    let param = |name: &str| {
        req.query()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let post = req.method() == &spin_sdk::http::Method::Post;
    let title = param("title").unwrap_or_default();
    let stars: i32 = param("stars").and_then(|s| s.parse().ok()).unwrap_or(0);
    let min: i32 = param("min").and_then(|s| s.parse().ok()).unwrap_or(0);
    let (prefix, rest) = req.path()[1..]
        .split_once('/')
        .unwrap_or((&req.path()[1..], ""));
    Ok(match (prefix, rest) {
        ("pg", _) => v2(&address, rest, post, title, stars, min),
        ("pg3", _) => v3(&address, rest, post, title, stars, min),
        ("pg4", _) => v4(&address, rest, post, title, stars, min),
        _ => Err(format!("no route {}", req.path())),
    }
    .unwrap_or_else(|e| Response::new(400, format!("error: {e}"))))
}

type Answer = Result<Response, String>;

fn v2(address: &str, rest: &str, post: bool, title: String, stars: i32, min: i32) -> Answer {
    use pg::ParameterValue as P;
    let conn = pg::Connection::open(address).map_err(|e| format!("{e:?}"))?;
    let run = |sql: &str, params: &[P]| conn.execute(sql, params).map_err(|e| format!("{e:?}"));
    match rest {
        "bad" => return run("SELECT * FROM nowhere", &[]).map(|_| Response::new(200, "no error")),
        "u64" => {
            return run("SELECT $1::int8", &[P::Uint64(u64::MAX)])
                .map(|_| Response::new(200, "no error"));
        }
        _ => {}
    }
    run(
        "CREATE TABLE IF NOT EXISTS items_v2 (id SERIAL PRIMARY KEY, title TEXT NOT NULL, \
         stars INT NOT NULL, small SMALLINT, wide BIGINT, big BIGINT, ok BOOL, score FLOAT8, \
         cover BYTEA, day DATE, note TEXT)",
        &[],
    )?;
    if post {
        let changed = run(
            "INSERT INTO items_v2 (title, stars, small, wide, big, ok, score, cover, day, note) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '2026-11-30', $9)",
            &[
                P::Str(title),
                P::Int32(stars),
                P::Uint8(200),
                P::Uint32(4_000_000_000),
                P::Int64(-5),
                P::Boolean(stars > 2),
                P::Floating64(f64::from(stars) / 4.0),
                P::Binary(vec![1, 2, 255]),
                P::DbNull,
            ],
        )?;
        return Ok(Response::new(201, format!("changed={changed}")));
    }
    let rows = conn
        .query(
            "SELECT title, stars, small, wide, big, ok, score, cover, day, note FROM items_v2 \
             WHERE stars >= $1 ORDER BY id",
            &[P::Int32(min)],
        )
        .map_err(|e| format!("{e:?}"))?;
    let mut out = columns(
        rows.columns
            .iter()
            .map(|c| (&c.name, format!("{:?}", c.data_type))),
    );
    for row in &rows.rows {
        let values = row.iter().map(|value| match value {
            pg::DbValue::Boolean(b) => b.to_string(),
            pg::DbValue::Int16(i) => i.to_string(),
            pg::DbValue::Int32(i) => i.to_string(),
            pg::DbValue::Int64(i) => i.to_string(),
            pg::DbValue::Floating64(f) => f.to_string(),
            pg::DbValue::Str(s) => s.clone(),
            pg::DbValue::Binary(b) => format!("{b:?}"),
            pg::DbValue::DbNull => "null".into(),
            pg::DbValue::Unsupported => "unsupported".into(),
            other => format!("{other:?}"),
        });
        out.push_str(&values.collect::<Vec<_>>().join(" "));
        out.push('\n');
    }
    Ok(Response::new(200, out))
}

fn v3(address: &str, rest: &str, post: bool, title: String, stars: i32, min: i32) -> Answer {
    use pg3::ParameterValue as P;
    let conn = pg3::Connection::open(address).map_err(|e| format!("{e:?}"))?;
    let run = |sql: &str, params: &[P]| conn.execute(sql, params).map_err(|e| format!("{e:?}"));
    if rest == "bad" {
        return run("SELECT * FROM nowhere", &[]).map(|_| Response::new(200, "no error"));
    }
    run(
        "CREATE TABLE IF NOT EXISTS items_v3 (id SERIAL PRIMARY KEY, title TEXT NOT NULL, \
         stars INT NOT NULL, day DATE, at TIMESTAMP, alarm TIME, since TIMESTAMP, ref UUID)",
        &[],
    )?;
    if post {
        let changed = run(
            "INSERT INTO items_v3 (title, stars, day, at, alarm, since, ref) \
             VALUES ($1, $2, $3, $4, $5, $6, '67e55044-10b1-426f-9247-bb680e5fe0c8')",
            &[
                P::Str(title),
                P::Int32(stars),
                P::Date((2026, 11, 30)),
                P::Datetime((2026, 11, 30, 12, 30, 5, 250_000_000)),
                P::Time((7, 45, 0, 0)),
                P::Timestamp(1_000_000_000),
            ],
        )?;
        return Ok(Response::new(201, format!("changed={changed}")));
    }
    let rows = conn
        .query(
            "SELECT title, stars, day, at, alarm, since, ref FROM items_v3 \
             WHERE stars >= $1 ORDER BY id",
            &[P::Int32(min)],
        )
        .map_err(|e| format!("{e:?}"))?;
    let mut out = columns(
        rows.columns
            .iter()
            .map(|c| (&c.name, format!("{:?}", c.data_type))),
    );
    for row in &rows.rows {
        let values = row.iter().map(|value| match value {
            pg3::DbValue::Int32(i) => i.to_string(),
            pg3::DbValue::Str(s) => s.clone(),
            pg3::DbValue::Date((y, m, d)) => format!("{y}-{m:02}-{d:02}"),
            pg3::DbValue::Time((h, m, s, ns)) => format!("{h:02}:{m:02}:{s:02}.{ns:09}"),
            pg3::DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
                format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}")
            }
            pg3::DbValue::Unsupported => "unsupported".into(),
            other => format!("{other:?}"),
        });
        out.push_str(&values.collect::<Vec<_>>().join(" "));
        out.push('\n');
    }
    Ok(Response::new(200, out))
}

fn v4(address: &str, rest: &str, post: bool, title: String, stars: i32, min: i32) -> Answer {
    use pg4::ParameterValue as P;
    let conn = pg4::Connection::open(address).map_err(|e| format!("{e:?}"))?;
    let run = |sql: &str, params: &[P]| conn.execute(sql, params).map_err(|e| format!("{e:?}"));
    if rest == "bad" {
        return run("SELECT * FROM nowhere", &[]).map(|_| Response::new(200, "no error"));
    }
    run(
        "CREATE TABLE IF NOT EXISTS items_v4 (id SERIAL PRIMARY KEY, title TEXT NOT NULL, \
         stars INT NOT NULL, ref UUID, price NUMERIC, tags TEXT[])",
        &[],
    )?;
    if post {
        let changed = run(
            "INSERT INTO items_v4 (title, stars, ref, price, tags) VALUES ($1, $2, $3, $4, $5)",
            &[
                P::Str(title),
                P::Int32(stars),
                P::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
                P::Decimal("12.50".into()),
                P::ArrayStr(vec![Some("new".into()), None]),
            ],
        )?;
        return Ok(Response::new(201, format!("changed={changed}")));
    }
    let rows = conn
        .query(
            "SELECT title, stars, ref, price, tags FROM items_v4 WHERE stars >= $1 ORDER BY id",
            &[P::Int32(min)],
        )
        .map_err(|e| format!("{e:?}"))?;
    let mut out = columns(
        rows.columns
            .iter()
            .map(|c| (&c.name, format!("{:?}", c.data_type))),
    );
    for row in &rows.rows {
        let values = row.iter().map(|value| match value {
            pg4::DbValue::Int32(i) => i.to_string(),
            pg4::DbValue::Str(s) | pg4::DbValue::Uuid(s) | pg4::DbValue::Decimal(s) => s.clone(),
            other => format!("{other:?}"),
        });
        out.push_str(&values.collect::<Vec<_>>().join(" "));
        out.push('\n');
    }
    Ok(Response::new(200, out))
}

/// `name:TYPE,...` and a newline.
fn columns<'a>(columns: impl Iterator<Item = (&'a String, String)>) -> String {
    let mut line = columns
        .map(|(name, ty)| format!("{name}:{ty}"))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}
