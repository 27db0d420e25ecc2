//! Where a guest's outbound connections may go: the check every outbound
//! path makes (HTTP in `tern-http`, Spin's Redis and MQTT here) before it
//! connects. A connection must match an `allowed_outbound_hosts` entry for
//! its scheme, host and port; then every address the host resolves to is
//! checked, and a non-public one (loopback, private, link-local, ...) is
//! refused unless the matching entry names that host itself rather than a
//! wildcard. The caller connects only to the addresses returned, so a name
//! cannot change its answer in between. Under `tern host`, whose apps others
//! deploy, naming a host is not enough: a non-public address must also be
//! one the operator lists ([`PrivateReach::Listed`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tern_manifest::{OutboundHost, RequestHost, canonical_ip, is_public};

/// Why a host's addresses cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// The name lookup took longer than allowed.
    DnsTimeout,
    /// The name lookup failed.
    DnsFailed,
    /// Every address is non-public and the allowlist does not name the host.
    Prohibited,
    /// The allowlist names the host, but its non-public addresses are none
    /// the operator lets apps reach.
    NotListed,
}

impl Unreachable {
    /// Why, for the guest and the log (`host` as the request named it).
    pub fn describe(&self, host: &RequestHost) -> String {
        match self {
            Unreachable::DnsTimeout | Unreachable::DnsFailed => format!("cannot resolve {host}"),
            Unreachable::Prohibited => {
                "the host resolves to a non-public address and the allowlist does not name it"
                    .to_owned()
            }
            Unreachable::NotListed => format!(
                "{host} resolves to a non-public address this host does not let apps reach (the operator's --allow-private-address)"
            ),
        }
    }
}

/// The non-public addresses (loopback, private, link-local, ...) a guest
/// may reach; every public one may be, through its allowlist.
#[derive(Clone, Debug, Default)]
pub enum PrivateReach {
    /// Those of a host that an allowlist entry names itself (`tern serve`
    /// and `tern run`: the operator wrote the manifest or the grant).
    #[default]
    Named,
    /// Only these, and only through an entry naming the host (`tern host`).
    Listed(Arc<[PrivateAddress]>),
}

impl PrivateReach {
    /// Whether a connection to `addr`, a non-public address, may be made
    /// when the allowlist names its host (`explicit`).
    fn allows(&self, addr: SocketAddr, explicit: bool) -> bool {
        match self {
            PrivateReach::Named => explicit,
            PrivateReach::Listed(listed) => explicit && listed.iter().any(|a| a.matches(addr)),
        }
    }
}

/// A non-public address an operator lets apps reach: `IP` (any port) or
/// `IP:PORT` (`[IPv6]:PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivateAddress {
    ip: IpAddr,
    port: Option<u16>,
}

impl PrivateAddress {
    fn matches(&self, addr: SocketAddr) -> bool {
        canonical_ip(self.ip) == addr.ip() && self.port.is_none_or(|port| port == addr.port())
    }
}

impl std::str::FromStr for PrivateAddress {
    type Err = String;

    /// ```
    /// # use tern_runtime::outbound::PrivateAddress;
    /// assert!("10.0.0.5:8080".parse::<PrivateAddress>().is_ok());
    /// assert!("[fd00::1]:6379".parse::<PrivateAddress>().is_ok());
    /// assert!("127.0.0.1".parse::<PrivateAddress>().is_ok());
    /// assert!("db.internal:5432".parse::<PrivateAddress>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(PrivateAddress {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| PrivateAddress { ip, port: None })
            .map_err(|_| format!("`{text}` is not an IP address, nor IP:PORT"))
    }
}

/// Whether `allowed` lets a connection reach `scheme://host:port`:
/// `Ok(explicit)`, `explicit` when a matching entry names the host itself;
/// otherwise the reason, for the guest and the log.
pub fn allowed_by(
    allowed: &[OutboundHost],
    scheme: &str,
    host: &RequestHost,
    port: u16,
) -> Result<bool, String> {
    if allowed.is_empty() {
        return Err("the component has no allowed_outbound_hosts".to_owned());
    }
    let mut matching = allowed
        .iter()
        .filter(|rule| rule.allows(scheme, host, port))
        .peekable();
    if matching.peek().is_none() {
        return Err(format!(
            "{scheme}://{host}:{port} is not in allowed_outbound_hosts"
        ));
    }
    Ok(matching.any(|rule| rule.names_host_explicitly()))
}

/// The addresses to connect to: the literal, or what the name resolves to
/// within `timeout`, minus the non-public addresses `private` does not let
/// through (given whether the allowlist names the host: `explicit`).
pub async fn resolve_checked(
    host: &RequestHost,
    port: u16,
    explicit: bool,
    private: &PrivateReach,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Unreachable> {
    let found: Vec<SocketAddr> = match host {
        RequestHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        RequestHost::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            tokio::time::timeout(timeout, lookup)
                .await
                .map_err(|_| Unreachable::DnsTimeout)?
                .map_err(|_| Unreachable::DnsFailed)?
                .collect()
        }
    };
    let checked: Vec<SocketAddr> = found
        .into_iter()
        .map(|addr| SocketAddr::new(canonical_ip(addr.ip()), addr.port()))
        .filter(|addr| is_public(addr.ip()) || private.allows(*addr, explicit))
        .collect();
    if checked.is_empty() {
        return Err(match (explicit, private) {
            (true, PrivateReach::Listed(_)) => Unreachable::NotListed,
            _ => Unreachable::Prohibited,
        });
    }
    Ok(checked)
}
