//! `spin:mqtt/mqtt@3.0.0`: a guest publishes to an MQTT broker, through the
//! component's `allowed_outbound_hosts` (`mqtt://HOST:PORT`), checked as
//! every outbound connection is (see [`super::checked_addresses`]).
//!
//! Tern speaks MQTT 3.1.1 itself, the few packets publishing needs:
//! CONNECT and its CONNACK, PUBLISH with its acknowledgements for QoS 1
//! (PUBACK) and 2 (PUBREC, PUBREL, PUBCOMP), PINGREQ when the connection
//! has been quiet for half its keep-alive, DISCONNECT when the guest drops
//! the connection. `publish` returns once the packet is written (QoS 0) or
//! acknowledged (QoS 1 and 2), so a message is out before the request
//! ends. Connecting waits at most the component's
//! `outbound_connect_timeout`, an acknowledgement its `outbound_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use wasmtime::Result;
use wasmtime::component::{Accessor, Resource};

use super::HasSpin;
use super::bindings::spin::mqtt::mqtt as api;
use crate::services::{Outbound, ServicesView};

/// Connections one instance may hold open at once.
pub const MAX_OPEN_MQTT: u32 = 16;

/// The largest packet Tern writes: MQTT's own limit is 256 MiB.
const MAX_PACKET: usize = 16 << 20;

/// A guest's connection to a broker.
pub struct MqttConnection {
    session: Arc<Mutex<Session>>,
}

struct Session {
    stream: TcpStream,
    keep_alive: Duration,
    last_sent: Instant,
    next_id: u16,
    response_timeout: Duration,
}

fn failed(why: impl std::fmt::Display) -> api::Error {
    api::Error::ConnectionFailed(why.to_string())
}

/// Appends MQTT's variable-length "remaining length".
fn put_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed UTF-8 string or byte field.
fn put_field(out: &mut Vec<u8>, field: &[u8]) -> Result<(), api::Error> {
    let len = u16::try_from(field.len())
        .map_err(|_| api::Error::Other("a field longer than 65535 bytes".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// A packet of `kind` (the fixed header's first byte) around `body`.
fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    put_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

impl Session {
    /// Reads one packet: its first byte and its body.
    async fn read(&mut self) -> Result<(u8, Vec<u8>), api::Error> {
        let read = async {
            let kind = self.stream.read_u8().await?;
            let mut len = 0usize;
            for shift in 0..4 {
                let byte = self.stream.read_u8().await?;
                len |= usize::from(byte & 0x7f) << (7 * shift);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if len > MAX_PACKET {
                return Err(std::io::Error::other("the broker sent an oversized packet"));
            }
            let mut body = vec![0; len];
            self.stream.read_exact(&mut body).await?;
            Ok((kind, body))
        };
        match tokio::time::timeout(self.response_timeout, read).await {
            Ok(Ok(packet)) => Ok(packet),
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(format!(
                "the broker did not answer within {}ms",
                self.response_timeout.as_millis()
            ))),
        }
    }

    /// Reads packets until one of `kind` (its type nibble) for `id`.
    async fn expect(&mut self, kind: u8, id: u16) -> Result<(), api::Error> {
        loop {
            let (got, body) = self.read().await?;
            if got >> 4 == kind && body.get(..2) == Some(&id.to_be_bytes()) {
                return Ok(());
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), api::Error> {
        self.stream.write_all(bytes).await.map_err(failed)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: api::Qos,
    ) -> Result<(), api::Error> {
        if !self.keep_alive.is_zero() && self.last_sent.elapsed() > self.keep_alive / 2 {
            self.write(&[0xc0, 0x00]).await?; // PINGREQ
            self.expect_ping().await?;
        }
        let level = match qos {
            api::Qos::AtMostOnce => 0u8,
            api::Qos::AtLeastOnce => 1,
            api::Qos::ExactlyOnce => 2,
        };
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
        put_field(&mut body, topic.as_bytes())?;
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        if level > 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        if body.len() > MAX_PACKET {
            return Err(api::Error::Other(format!(
                "a message larger than {}MiB",
                MAX_PACKET >> 20
            )));
        }
        self.write(&packet(0x30 | (level << 1), &body)).await?;
        match level {
            1 => self.expect(4, id).await, // PUBACK
            2 => {
                self.expect(5, id).await?; // PUBREC
                let mut release = vec![0x62, 0x02];
                release.extend_from_slice(&id.to_be_bytes());
                self.write(&release).await?; // PUBREL
                self.expect(7, id).await // PUBCOMP
            }
            _ => Ok(()),
        }
    }

    async fn expect_ping(&mut self) -> Result<(), api::Error> {
        loop {
            let (kind, _) = self.read().await?;
            if kind >> 4 == 13 {
                return Ok(());
            }
        }
    }
}

/// Connects to the broker `address` names (`mqtt://HOST[:PORT][?client_id=ID]`)
/// as `outbound` allows, and logs in.
async fn connect(
    outbound: &Outbound,
    address: &str,
    username: &str,
    password: &str,
    keep_alive: u64,
) -> Result<Session, api::Error> {
    let rest = address
        .strip_prefix("mqtt://")
        .ok_or(api::Error::InvalidAddress)?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().map_err(|_| api::Error::InvalidAddress)?)
        }
        _ => (authority, 1883),
    };
    let client_id = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("client_id="))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("tern-{hex}")
        });
    let addresses = super::checked_addresses(outbound, "mqtt", host, port)
        .await
        .map_err(|why| {
            api::Error::ConnectionFailed(format!("outbound connection denied: {why}"))
        })?;

    let keep_alive_secs = u16::try_from(keep_alive).unwrap_or(u16::MAX);
    let mut body = Vec::new();
    put_field(&mut body, b"MQTT")?;
    body.push(4); // protocol level: 3.1.1
    let mut flags = 0x02; // clean session
    if !username.is_empty() {
        flags |= 0x80;
    }
    if !password.is_empty() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    put_field(&mut body, client_id.as_bytes())?;
    if !username.is_empty() {
        put_field(&mut body, username.as_bytes())?;
    }
    if !password.is_empty() {
        put_field(&mut body, password.as_bytes())?;
    }
    let hello = packet(0x10, &body);

    let mut last = failed("no address to connect to");
    for addr in addresses {
        let attempt = async {
            let stream = TcpStream::connect(addr).await.map_err(failed)?;
            let _ = stream.set_nodelay(true);
            let mut session = Session {
                stream,
                keep_alive: Duration::from_secs(u64::from(keep_alive_secs)),
                last_sent: Instant::now(),
                next_id: 1,
                response_timeout: outbound.connect_timeout,
            };
            session.write(&hello).await?;
            let (kind, body) = session.read().await?;
            match (kind >> 4, body.get(1)) {
                (2, Some(0)) => Ok(session),
                (2, Some(4)) => Err(failed("the broker refused the user name or password")),
                (2, Some(5)) => Err(failed("the broker refused the connection: not authorized")),
                (2, Some(code)) => Err(failed(format!(
                    "the broker refused the connection (code {code})"
                ))),
                _ => Err(failed(
                    "the broker answered with something other than CONNACK",
                )),
            }
        };
        match tokio::time::timeout(outbound.connect_timeout, attempt).await {
            Ok(Ok(mut session)) => {
                session.response_timeout = outbound.response_timeout;
                return Ok(session);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = failed("connecting timed out"),
        }
    }
    Err(last)
}

impl api::Host for ServicesView<'_> {}

impl api::HostConnection for ServicesView<'_> {
    async fn drop(&mut self, connection: Resource<MqttConnection>) -> Result<()> {
        let connection = self.table.delete(connection)?;
        self.services.open_mqtt.release();
        // Say goodbye without waiting for the broker.
        if let Ok(session) = connection.session.try_lock() {
            let _ = session.stream.try_write(&[0xe0, 0x00]);
        }
        Ok(())
    }
}

impl<T> api::HostConnectionWithStore<T> for HasSpin {
    async fn open(
        accessor: &Accessor<T, Self>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> Result<Result<Resource<MqttConnection>, api::Error>> {
        // Counted before the connection is made; given back unless it is
        // kept.
        let admitted = accessor.with(|mut access| {
            let services = &mut *access.get().services;
            let reserved = services.open_mqtt.reserve(MAX_OPEN_MQTT)?;
            Some((services.outbound.clone(), reserved))
        });
        let Some((outbound, reserved)) = admitted else {
            return Ok(Err(api::Error::TooManyConnections));
        };
        let connected = connect(
            &outbound,
            &address,
            &username,
            &password,
            keep_alive_interval_in_secs,
        )
        .await;
        let session = match connected {
            Ok(session) => session,
            Err(e) => return Ok(Err(e)),
        };
        let connection = MqttConnection {
            session: Arc::new(Mutex::new(session)),
        };
        let handle = accessor.with(|mut access| access.get().table.push(connection))?;
        reserved.keep();
        Ok(Ok(handle))
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<MqttConnection>,
        topic: String,
        payload: Vec<u8>,
        qos: api::Qos,
    ) -> Result<Result<(), api::Error>> {
        let session = accessor.with(|mut access| {
            Ok::<_, wasmtime::Error>(access.get().table.get(&this)?.session.clone())
        })?;
        let mut session = session.lock().await;
        Ok(session.publish(&topic, &payload, qos).await)
    }
}
