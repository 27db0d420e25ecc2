//! MQTT publishing as Spin's documentation shows it: `POST /TOPIC?qos=N`
//! publishes the body on TOPIC at the broker named by the `mqtt_address`
//! variable, with the user name and password of `mqtt_username` and
//! `mqtt_password`.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::mqtt::{Connection, Qos};
use spin_sdk::{http_service, variables};

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let address = variables::get("mqtt_address").await?;
    let username = variables::get("mqtt_username").await?;
    let password = variables::get("mqtt_password").await?;
    let topic = req.uri().path().trim_start_matches('/').to_string();
    let qos = match req.uri().query() {
        Some("qos=1") => Qos::AtLeastOnce,
        Some("qos=2") => Qos::ExactlyOnce,
        _ => Qos::AtMostOnce,
    };
    let payload = req.into_body().bytes().await?.to_vec();
    let conn = match Connection::open(&address, &username, &password, 30).await {
        Ok(conn) => conn,
        Err(e) => return Ok(text(502, format!("cannot open: {e}"))),
    };
    Ok(match conn.publish(&topic, payload, qos).await {
        Ok(()) => text(200, "published".into()),
        Err(e) => text(502, format!("cannot publish: {e}")),
    })
}

fn text(status: u16, body: String) -> Response<String> {
    Response::builder().status(status).body(body).unwrap()
}
