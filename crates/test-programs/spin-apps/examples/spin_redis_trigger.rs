//! A Redis-triggered component as Spin's documentation shows it: each
//! message published on its channel is pushed onto the `received` list of
//! the Redis at `redis_address`. A message `trap` makes the handler panic,
//! `fail` makes it return an error, `block` holds it until a GET of the
//! variable `hold_url` is answered (a blocking Redis command is refused on
//! the host's shared connection), and two are hostile: `spin` loops for
//! ever and `bomb` takes memory until it gets no more.

use spin_sdk::http::{EmptyBody, Request, Response, send};
use spin_sdk::redis::{Connection, RedisParameter};
use spin_sdk::{redis_subscriber, variables};

#[redis_subscriber]
async fn on_message(message: Vec<u8>) -> anyhow::Result<()> {
    match message.as_slice() {
        b"trap" => panic!("asked to trap"),
        b"fail" => anyhow::bail!("asked to fail"),
        b"spin" => loop {
            std::hint::black_box(());
        },
        b"bomb" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => {}
    }
    let address = variables::get("redis_address").await?;
    let conn = Connection::open(&address).await?;
    if message == b"block" {
        let hold = Request::get(variables::get("hold_url").await?).body(EmptyBody::new())?;
        let _: Response = send(hold).await?;
    }
    let args = [
        RedisParameter::Binary(b"received".to_vec()),
        RedisParameter::Binary(message),
    ];
    conn.execute("RPUSH", args).await?;
    Ok(())
}
