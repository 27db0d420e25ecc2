//! SQLite as Spin's documentation for SDK 5 shows it: `POST /?name=N&qty=Q`
//! inserts a row with parameters, `GET /?min=Q` lists the rows with at least
//! Q as `id name qty`, `POST /bad` runs a statement SQLite refuses.
//! `POST /v3?name=N` inserts through SDK 5's `sqlite3` module
//! (`spin:sqlite@3.0.0`) and answers its `last_insert_rowid` and `changes`.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::{Connection, Value};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let conn = match Connection::open_default() {
        Ok(conn) => conn,
        Err(e) => return Ok(Response::new(403, format!("cannot open: {e}"))),
    };
    conn.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL, note BLOB, price REAL)",
        &[],
    )?;
    let param = |name: &str| {
        req.query()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    if req.path() == "/v3" {
        return v3(req.query());
    }
    if req.path() == "/bad" {
        return Ok(match conn.execute("SELECT * FROM nowhere", &[]) {
            Ok(_) => Response::new(200, "no error"),
            Err(e) => Response::new(400, format!("error: {e}")),
        });
    }
    if *req.method() == Method::Post {
        let name = param("name").unwrap_or_default();
        let qty: i64 = param("qty").and_then(|q| q.parse().ok()).unwrap_or(0);
        // SDK 5's `sqlite` (fermyon:spin/sqlite@2.0.0) has no
        // `last_insert_rowid` or `changes`; the statement returns them.
        let inserted = conn.execute(
            "INSERT INTO items (name, qty, note, price) VALUES (?, ?, ?, ?) RETURNING id",
            &[
                Value::Text(name),
                Value::Integer(qty),
                Value::Blob(vec![1, 2, 3]),
                Value::Real(qty as f64 / 2.0),
            ],
        )?;
        let id: i64 = inserted.rows[0].get(0).unwrap();
        let changes = inserted.rows.len();
        return Ok(Response::new(201, format!("id={id} changes={changes}")));
    }
    let min: i64 = param("min").and_then(|q| q.parse().ok()).unwrap_or(0);
    let rows = conn.execute(
        "SELECT id, name, qty, note, price, NULL FROM items WHERE qty >= ? ORDER BY id",
        &[Value::Integer(min)],
    )?;
    let mut out = format!("{}\n", rows.columns.join(","));
    for row in &rows.rows {
        let id: i64 = row.get(0).unwrap();
        let name: &str = row.get(1).unwrap();
        let qty: i64 = row.get(2).unwrap();
        let note: &[u8] = row.get(3).unwrap();
        let price: f64 = row.get(4).unwrap();
        let null = matches!(row.values[5], Value::Null);
        out.push_str(&format!("{id} {name} {qty} {note:?} {price} {null}\n"));
    }
    Ok(Response::new(200, out))
}

/// An insert through `spin:sqlite@3.0.0`, whose connection tells the row id
/// and change count of its last statement.
fn v3(query: &str) -> anyhow::Result<Response> {
    use spin_sdk::sqlite3::{Connection, Value};
    let conn = match Connection::open_default() {
        Ok(conn) => conn,
        Err(e) => return Ok(Response::new(403, format!("cannot open: {e:?}"))),
    };
    let name = query.strip_prefix("name=").unwrap_or("").to_string();
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        &[],
    )?;
    conn.execute("INSERT INTO tags (name) VALUES (?)", &[Value::Text(name)])?;
    let (id, changes) = (conn.last_insert_rowid(), conn.changes());
    let count = conn.execute("SELECT count(*) FROM tags", &[])?;
    let Value::Integer(count) = count.rows[0].values[0] else {
        anyhow::bail!("count(*) is not an integer");
    };
    Ok(Response::new(
        201,
        format!("id={id} changes={changes} rows={count}"),
    ))
}
