//! Where a guest's outbound connections may go: the check every outbound
//! path makes (HTTP in `tern-http`, Spin's Redis and MQTT here) before it
//! connects. A connection must match an `allowed_outbound_hosts` entry for
//! its scheme, host and port; then every address the host resolves to is
//! checked, and a non-public one (loopback, private, link-local, ...) is
//! refused unless the matching entry names that host itself rather than a
//! wildcard. The caller connects only to the addresses returned, so a name
//! cannot change its answer in between.

use std::net::SocketAddr;
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
/// within `timeout`, minus non-public addresses unless `explicit`.
pub async fn resolve_checked(
    host: &RequestHost,
    port: u16,
    explicit: bool,
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
        .filter(|addr| explicit || is_public(addr.ip()))
        .collect();
    if checked.is_empty() {
        return Err(Unreachable::Prohibited);
    }
    Ok(checked)
}
