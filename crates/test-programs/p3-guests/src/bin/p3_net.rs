//! Network access through `wasi:sockets` (exit code 3 for every refusal):
//!
//! - `connect ADDR:PORT`: connects over TCP, sends `ping\n` (through the
//!   socket's `send` stream) and prints `connected`; if the socket cannot
//!   be made or connected, prints `refused: CODE`, and if sending fails,
//!   `send failed: CODE`.
//! - `lookup NAME`: resolves NAME (`ip-name-lookup.resolve-addresses`) and
//!   prints each address on a line, or `lookup failed: CODE`.
//! - `udp ADDR:PORT TEXT`: sends TEXT as one datagram, prints `sent` or
//!   `refused: CODE`.
//!
//! ADDR is a literal IP address (`127.0.0.1`, `[::1]`): nothing is looked
//! up. CODE is the `Debug` of the interface's `error-code` (e.g.
//! `ErrorCode::AccessDenied`). Bad usage exits with code 2.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wasip3::sockets::ip_name_lookup;
use wasip3::sockets::types::{
    IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress, TcpSocket,
    UdpSocket,
};
use wasip3::wit_stream;

/// The exit code of every refusal.
const REFUSED: u8 = 3;

struct Net;

impl wasip3::exports::cli::run::Guest for Net {
    async fn run() -> Result<(), ()> {
        let args = tern_p3_guests::args();
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["connect", addr] => connect(parse(addr).await).await,
            ["lookup", name] => lookup(name).await,
            ["udp", addr, text] => udp(parse(addr).await, text).await,
            _ => {
                tern_p3_guests::fail(
                    "usage: p3_net connect ADDR:PORT | lookup NAME | udp ADDR:PORT TEXT",
                    2,
                )
                .await
            }
        }
    }
}

/// Connects to `addr` over TCP and sends `ping\n`.
async fn connect(addr: SocketAddr) -> Result<(), ()> {
    let socket = match TcpSocket::create(family(&addr)) {
        Ok(socket) => socket,
        Err(code) => return refused("refused", &code).await,
    };
    if let Err(code) = socket.connect(socket_address(addr)).await {
        return refused("refused", &code).await;
    }
    let (mut tx, rx) = wit_stream::new();
    let sent = socket.send(rx);
    let _unwritten = tx.write_all(b"ping\n".to_vec()).await;
    // The host reports the outcome once the stream is closed.
    drop(tx);
    if let Err(code) = sent.await {
        return refused("send failed", &code).await;
    }
    tern_p3_guests::print("connected\n").await;
    Ok(())
}

/// Prints every address `name` resolves to.
async fn lookup(name: &str) -> Result<(), ()> {
    match ip_name_lookup::resolve_addresses(name.to_owned()).await {
        Ok(addresses) => {
            let mut text = String::new();
            for address in addresses {
                text.push_str(&ip_address(address).to_string());
                text.push('\n');
            }
            tern_p3_guests::print(text).await;
            Ok(())
        }
        Err(code) => refused("lookup failed", &code).await,
    }
}

/// Sends `text` to `addr` as one UDP datagram.
async fn udp(addr: SocketAddr, text: &str) -> Result<(), ()> {
    let socket = match UdpSocket::create(family(&addr)) {
        Ok(socket) => socket,
        Err(code) => return refused("refused", &code).await,
    };
    // An unbound socket is bound to an ephemeral port by the send itself.
    let sent = socket
        .send(text.as_bytes().to_vec(), Some(socket_address(addr)))
        .await;
    if let Err(code) = sent {
        return refused("refused", &code).await;
    }
    tern_p3_guests::print("sent\n").await;
    Ok(())
}

/// Prints `what: CODE` and exits with [`REFUSED`].
async fn refused<T>(what: &str, code: &impl std::fmt::Debug) -> T {
    tern_p3_guests::fail(&format!("{what}: {code:?}"), REFUSED).await
}

/// `text` as an IP address and port, or a usage error.
async fn parse(text: &str) -> SocketAddr {
    match text.parse() {
        Ok(addr) => addr,
        Err(_) => {
            let message = format!("expected ADDR:PORT with a literal IP address, got {text:?}");
            tern_p3_guests::fail(&message, 2).await
        }
    }
}

fn family(addr: &SocketAddr) -> IpAddressFamily {
    match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}

/// `addr` as `wasi:sockets` has it.
fn socket_address(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(addr) => {
            let [a, b, c, d] = addr.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: addr.port(),
                address: (a, b, c, d),
            })
        }
        SocketAddr::V6(addr) => {
            let [a, b, c, d, e, f, g, h] = addr.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: addr.port(),
                flow_info: addr.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: addr.scope_id(),
            })
        }
    }
}

/// A `wasi:sockets` address as Rust has it, for printing.
fn ip_address(address: IpAddress) -> IpAddr {
    match address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

wasip3::cli::command::export!(Net);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_net runs through wasi:cli/run@0.3.0");
}
