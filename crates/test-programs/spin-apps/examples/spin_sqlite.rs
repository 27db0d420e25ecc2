//! SQLite as Spin's documentation shows it: `POST /?name=N&qty=Q` inserts a
//! row with parameters, `GET /?min=Q` lists the rows with at least Q as
//! `id name qty`, `POST /bad` runs a statement SQLite refuses, `GET /endless`
//! runs a query that never ends and `POST /sql` runs its body as a statement,
//! answering `N rows` or the error (a hostile guest).

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_service;
use spin_sdk::sqlite::{Connection, Value};

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let conn = match Connection::open_default().await {
        Ok(conn) => conn,
        Err(e) => return Ok(text(403, format!("cannot open: {e}"))),
    };
    conn.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL, note BLOB, price REAL)",
        [],
    )
    .await?;
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    if req.uri().path() == "/endless" {
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
        conn.execute(endless, []).await?;
        return Ok(text(200, "it ended".into()));
    }
    if req.uri().path() == "/sql" {
        let statement = String::from_utf8(req.into_body().bytes().await?.to_vec())?;
        return Ok(match conn.execute(statement, []).await {
            Ok(rows) => match rows.collect().await {
                Ok(rows) => text(200, format!("{} rows", rows.len())),
                Err(e) => text(400, format!("error: {e}")),
            },
            Err(e) => text(400, format!("error: {e}")),
        });
    }
    if req.uri().path() == "/bad" {
        return Ok(match conn.execute("SELECT * FROM nowhere", []).await {
            Ok(_) => text(200, "no error".into()),
            Err(e) => text(400, format!("error: {e}")),
        });
    }
    if req.method() == Method::POST {
        let name = param("name").unwrap_or_default();
        let qty: i64 = param("qty").and_then(|q| q.parse().ok()).unwrap_or(0);
        conn.execute(
            "INSERT INTO items (name, qty, note, price) VALUES (?, ?, ?, ?)",
            [
                Value::Text(name),
                Value::Integer(qty),
                Value::Blob(vec![1, 2, 3]),
                Value::Real(qty as f64 / 2.0),
            ],
        )
        .await?;
        let id = conn.last_insert_rowid().await;
        let changes = conn.changes().await;
        return Ok(text(201, format!("id={id} changes={changes}")));
    }
    let min: i64 = param("min").and_then(|q| q.parse().ok()).unwrap_or(0);
    let rows = conn
        .execute(
            "SELECT id, name, qty, note, price, NULL FROM items WHERE qty >= ? ORDER BY id",
            [Value::Integer(min)],
        )
        .await?;
    let columns = rows.columns().join(",");
    let mut out = format!("{columns}\n");
    for row in rows.collect().await? {
        let id: i64 = row.get(0).unwrap();
        let name: &str = row.get(1).unwrap();
        let qty: i64 = row.get(2).unwrap();
        let note: &[u8] = row.get(3).unwrap();
        let price: f64 = row.get(4).unwrap();
        let null = matches!(row.values[5], Value::Null);
        out.push_str(&format!("{id} {name} {qty} {note:?} {price} {null}\n"));
    }
    Ok(text(200, out))
}

fn text(status: u16, body: String) -> Response<String> {
    Response::builder().status(status).body(body).unwrap()
}
