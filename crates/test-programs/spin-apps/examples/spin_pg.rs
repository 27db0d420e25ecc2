//! PostgreSQL as Spin's documentation shows it, the address from the
//! `pg_address` variable: `POST /?title=T&stars=N` inserts a row with
//! parameters and answers the count of rows changed, `GET /?min=N` lists the
//! rows with at least N stars (typed: int, text, bool, float, bytea, date,
//! timestamp, uuid, jsonb, numeric, int[] and null), `GET /bad` runs a statement
//! PostgreSQL refuses, `GET /pid` answers the server process id of the
//! connection (to see connections reused), `GET /sleep?s=N` sleeps on the
//! server for N seconds (a hostile guest when N is large), and `GET
//! /huge?n=N` selects an array of N numerics of 131,072 digits each (a
//! dozen bytes apiece on the wire).

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::pg::{Connection, DbValue, Decode, ParameterValue};
use spin_sdk::{http_service, variables};

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let address = variables::get("pg_address").await?;
    let conn = match Connection::open(address).await {
        Ok(conn) => conn,
        Err(e) => return Ok(text(502, format!("cannot open: {e}"))),
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    match req.uri().path() {
        "/bad" => {
            return Ok(match conn.execute("SELECT * FROM nowhere", vec![]).await {
                Ok(_) => text(200, "no error".into()),
                Err(e) => text(400, format!("error: {e}")),
            });
        }
        "/pid" => {
            let rows = conn.query("SELECT pg_backend_pid()", vec![]).await?;
            let rows = rows.collect().await?;
            let pid = i32::decode(&rows[0][0])?;
            return Ok(text(200, pid.to_string()));
        }
        "/huge" => {
            let n: i32 = param("n").and_then(|s| s.parse().ok()).unwrap_or(1);
            let selected = async {
                let statement = "SELECT array_fill(1e131071::numeric, ARRAY[$1::int])";
                let rows = conn.query(statement, vec![ParameterValue::Int32(n)]).await?;
                anyhow::Ok(rows.collect().await?)
            };
            return Ok(match selected.await {
                Ok(rows) => text(200, format!("rows={}", rows.len())),
                Err(e) => text(400, format!("error: {e}")),
            });
        }
        "/sleep" => {
            let seconds: f64 = param("s").and_then(|s| s.parse().ok()).unwrap_or(0.0);
            conn.execute("SELECT pg_sleep($1)", vec![ParameterValue::Floating64(seconds)])
                .await?;
            return Ok(text(200, "slept".into()));
        }
        _ => {}
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS articles (id SERIAL PRIMARY KEY, title TEXT NOT NULL, \
         stars INT NOT NULL, published BOOL, score FLOAT8, cover BYTEA, day DATE, \
         at TIMESTAMP, ref UUID, meta JSONB, price NUMERIC, tags INT[], note TEXT)",
        vec![],
    )
    .await?;
    if req.method() == Method::POST {
        let title = param("title").unwrap_or_default();
        let stars: i32 = param("stars").and_then(|s| s.parse().ok()).unwrap_or(0);
        let changed = conn
            .execute(
                "INSERT INTO articles (title, stars, published, score, cover, day, at, ref, meta, price, tags, note) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::numeric, $11, $12)",
                vec![
                    ParameterValue::Str(title),
                    ParameterValue::Int32(stars),
                    ParameterValue::Boolean(stars > 2),
                    ParameterValue::Floating64(stars as f64 / 4.0),
                    ParameterValue::Binary(vec![1, 2, 255]),
                    ParameterValue::Date((2026, 11, 29)),
                    ParameterValue::Datetime((2026, 11, 29, 12, 30, 5, 250_000_000)),
                    ParameterValue::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
                    ParameterValue::Jsonb(br#"{"draft": false}"#.to_vec()),
                    ParameterValue::Str("12.50".into()),
                    ParameterValue::ArrayInt32(vec![Some(1), None, Some(3)]),
                    ParameterValue::DbNull,
                ],
            )
            .await?;
        return Ok(text(201, format!("changed={changed}")));
    }
    let min: i32 = param("min").and_then(|s| s.parse().ok()).unwrap_or(0);
    let rows = conn
        .query(
            "SELECT id, title, stars, published, score, cover, day, at, ref, meta, price, tags, note \
             FROM articles WHERE stars >= $1 ORDER BY id",
            vec![ParameterValue::Int32(min)],
        )
        .await?;
    let columns: Vec<String> = rows.columns().iter().map(|c| c.name.clone()).collect();
    let mut out = format!("{}\n", columns.join(","));
    for row in rows.collect().await? {
        let title: String = row.get("title").unwrap();
        let stars: i32 = row.get("stars").unwrap();
        let published: bool = row.get("published").unwrap();
        let score: f64 = row.get("score").unwrap();
        let cover: Vec<u8> = row.get("cover").unwrap();
        let fields: Vec<String> = (6..13).map(|i| show(&row[i])).collect();
        out.push_str(&format!(
            "{title} {stars} {published} {score} {cover:?} {}\n",
            fields.join(" ")
        ));
    }
    Ok(text(200, out))
}

/// A value as the test expects to read it.
fn show(value: &DbValue) -> String {
    match value {
        DbValue::Date((y, m, d)) => format!("{y}-{m:02}-{d:02}"),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}")
        }
        DbValue::Uuid(u) => u.clone(),
        DbValue::Jsonb(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        DbValue::Decimal(d) => d.clone(),
        DbValue::ArrayInt32(items) => format!("{items:?}"),
        DbValue::DbNull => "null".into(),
        other => format!("unexpected {other:?}"),
    }
}

fn text(status: u16, body: String) -> Response<String> {
    Response::builder().status(status).body(body).unwrap()
}
