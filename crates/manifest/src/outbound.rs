//! `allowed_outbound_hosts`: where a component may send requests.
//!
//! An entry is `SCHEME://HOST[:PORT]`. The scheme is `http`, `https`,
//! `redis`, `rediss`, `postgres`, `mysql`, `mqtt`, `mqtts`, or `*` for any
//! scheme. The host is a DNS name, an IP literal (`127.0.0.1`, `[::1]`),
//! `*.SUFFIX` for any subdomain of SUFFIX, or `*` for any host. The port is
//! a number or `*`, and when left out is the scheme's default (see
//! [`default_port`]); a `*` scheme has no default, so it needs a port
//! (`*://localhost:*`).
//!
//! The host `self` (or `self.alt`, as Spin also spells it) is the app
//! itself, wherever it is served: `http://self` lets a component send
//! requests with a relative URL (`/api/items`) back to its own app. It
//! takes no port and only the schemes `http` and `https`, and no wildcard
//! host grants it. Likewise `http://COMPONENT.spin.internal` (or
//! `http://*.spin.internal`) lets it call a component of its app directly,
//! route or none (Spin's service chaining); no wider wildcard grants that.
//!
//! ```
//! use tern_manifest::{OutboundHost, RequestHost};
//! let rule: OutboundHost = "https://*.example.com:8443".parse().unwrap();
//! let host = RequestHost::parse("api.example.com").unwrap();
//! assert!(rule.allows("https", &host, 8443));
//! assert!(!rule.allows("http", &host, 8443));
//! assert!(!rule.allows("https", &RequestHost::parse("example.com").unwrap(), 8443));
//!
//! let local: OutboundHost = "*://localhost:*".parse().unwrap();
//! let localhost = RequestHost::parse("localhost").unwrap();
//! assert!(local.allows("redis", &localhost, 6379));
//! assert!(local.allows("http", &localhost, 3000));
//! assert!(!local.is_app_itself());
//!
//! let app: OutboundHost = "http://self".parse().unwrap();
//! assert!(app.is_app_itself());
//! assert!(!app.allows("http", &RequestHost::parse("self").unwrap(), 80));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The schemes an `allowed_outbound_hosts` entry may name; `*` is any scheme.
const SCHEMES: &[&str] = &[
    "http", "https", "redis", "rediss", "postgres", "mysql", "mqtt", "mqtts", "*",
];

/// The domain under which a component of the app is a host of its own
/// (`auth.spin.internal`), as Spin names them for service chaining.
pub const COMPONENTS_DOMAIN: &str = ".spin.internal";

/// One entry of `allowed_outbound_hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundHost {
    /// One of [`SCHEMES`].
    scheme: &'static str,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    Name(String),
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
    Ip(IpAddr),
    /// `self`: the app itself, never a host on the network.
    App,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortPattern {
    Default,
    Exact(u16),
    Any,
}

/// The host of an outgoing request, in canonical form: a lowercase DNS
/// name without a trailing dot, or an IP address (an IPv4-mapped IPv6
/// address is its IPv4 address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHost {
    /// A DNS name.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl RequestHost {
    /// Reads a request's host. Refuses what could be an IP address in
    /// another spelling (`2130706433`, `0x7f.1`, `0177.0.0.1`): resolvers
    /// accept those, so they would slip past a rule naming the address.
    pub fn parse(host: &str) -> Result<Self, String> {
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip =
                Ipv6Addr::from_str(inner).map_err(|_| format!("invalid IPv6 address `{host}`"))?;
            return Ok(RequestHost::Ip(canonical_ip(IpAddr::V6(ip))));
        }
        if let Ok(ip) = Ipv4Addr::from_str(host) {
            return Ok(RequestHost::Ip(IpAddr::V4(ip)));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!("invalid host name `{host}`"));
        }
        // A name whose last label is numeric is an IPv4 address in some
        // other spelling; real top-level domains are never numeric.
        let last = name.rsplit('.').next().unwrap_or_default();
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        if numeric {
            return Err(format!(
                "`{host}` is an IP address in a non-standard spelling; write it as a dotted quad"
            ));
        }
        Ok(RequestHost::Name(name))
    }
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestHost::Name(name) => f.write_str(name),
            RequestHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RequestHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is on the public internet: not loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let embedded = |at: usize| IpAddr::from([o[at], o[at + 1], o[at + 2], o[at + 3]]);
            // Forms that carry an IPv4 address are judged by that address:
            // NAT64 (64:ff9b::/96), IPv4-compatible (::a.b.c.d), 6to4 (2002::/16).
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[..6] == [0; 6] && s[6] != 0) {
                return is_public(embedded(12));
            }
            if s[0] == 0x2002 {
                return is_public(embedded(2));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || (s[0] == 0x2001 && s[1] == 0) // Teredo: tunnels to any IPv4 address
                || s[..6] == [0, 0, 0, 0, 0xffff, 0] // IPv4-translated (SIIT)
                || s[..4] == [0x100, 0, 0, 0]) // discard
        }
    }
}

impl OutboundHost {
    /// Whether a request to `scheme://host:port` matches this entry. An
    /// entry with the scheme `*` matches every scheme.
    pub fn allows(&self, scheme: &str, host: &RequestHost, port: u16) -> bool {
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == port,
            PortPattern::Default => port == default_port(self.scheme),
        };
        let host_ok = match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(a), RequestHost::Name(b)) => a == b,
            (HostPattern::Suffix(s), RequestHost::Name(b)) => b.ends_with(s.as_str()),
            (HostPattern::Ip(a), RequestHost::Ip(b)) => a == b,
            _ => false,
        };
        (self.scheme == "*" || self.scheme == scheme) && port_ok && host_ok
    }

    /// Whether this entry names one host (a name or an address) rather than
    /// a family of them. Only such entries may reach loopback, private and
    /// link-local addresses.
    pub fn names_host_explicitly(&self) -> bool {
        matches!(self.host, HostPattern::Name(_) | HostPattern::Ip(_))
    }

    /// Whether this entry is `self`: it lets a component send requests to
    /// its own app (a relative URL), and matches no host on the network.
    pub fn is_app_itself(&self) -> bool {
        self.host == HostPattern::App
    }

    /// Whether this entry names components of the app (Spin's service
    /// chaining): `http://COMPONENT.spin.internal` or
    /// `http://*.spin.internal`. Only such entries let a request reach one.
    pub fn names_components(&self) -> bool {
        match &self.host {
            HostPattern::Name(name) => name.ends_with(COMPONENTS_DOMAIN),
            HostPattern::Suffix(suffix) => suffix == COMPONENTS_DOMAIN,
            _ => false,
        }
    }
}

/// The port a scheme implies: 80 for `http`, 443 for `https`, 6379 for
/// `redis` and `rediss`, 5432 for `postgres`, 3306 for `mysql`, 1883 for
/// `mqtt`, 8883 for `mqtts`; 80 for any other scheme.
///
/// ```
/// # use tern_manifest::default_port;
/// assert_eq!(default_port("https"), 443);
/// assert_eq!(default_port("postgres"), 5432);
/// ```
pub fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" => 443,
        "redis" | "rediss" => 6379,
        "postgres" => 5432,
        "mysql" => 3306,
        "mqtt" => 1883,
        "mqtts" => 8883,
        _ => 80,
    }
}

impl fmt::Display for OutboundHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for OutboundHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "\"{text}\" needs a scheme, such as \"https://{text}\""
            ));
        };
        let Some(&scheme) = SCHEMES.iter().find(|known| **known == scheme) else {
            return Err(format!(
                "unsupported scheme \"{scheme}\"; use http, https, redis, rediss, postgres, mysql, mqtt, mqtts or *"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "\"{text}\" must be only SCHEME://HOST[:PORT], without a path, query or user"
            ));
        }
        let (host, port) = split_port(rest)?;
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => PortPattern::Exact(p),
                _ => return Err(format!("invalid port \"{p}\"; use 1-65535 or *")),
            },
        };
        if scheme == "*" && port == PortPattern::Default {
            return Err("`*://` needs a port, such as `*://localhost:*`".to_owned());
        }
        let host = if host == "self" || host == "self.alt" {
            if !matches!(scheme, "http" | "https") || port != PortPattern::Default {
                return Err(format!(
                    "`self` is the app itself, wherever it is served: write \"http://self\" or \"https://self\", not \"{text}\""
                ));
            }
            HostPattern::App
        } else if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            match RequestHost::parse(suffix) {
                // `*.com` would be every host in a top-level domain.
                Ok(RequestHost::Name(name)) if name.contains('.') => {
                    HostPattern::Suffix(format!(".{name}"))
                }
                _ => return Err(format!("invalid wildcard host \"{host}\"")),
            }
        } else {
            match RequestHost::parse(host) {
                Ok(RequestHost::Name(name)) => HostPattern::Name(name),
                Ok(RequestHost::Ip(ip)) => HostPattern::Ip(ip),
                Err(message) => return Err(message),
            }
        };
        Ok(OutboundHost {
            scheme,
            host,
            port,
            text: text.to_owned(),
        })
    }
}

/// `host:port`, `[v6]:port`, or either without a port.
fn split_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if rest.starts_with('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("unclosed `[` in \"{rest}\""))?;
        let (host, after) = rest.split_at(end + 1);
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected \"{after}\" after the address")),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> RequestHost {
        RequestHost::parse(h).unwrap()
    }

    #[test]
    fn entries_and_what_they_allow() {
        let cases: &[(&str, &str, &str, u16, bool)] = &[
            (
                "https://api.example.com",
                "https",
                "api.example.com",
                443,
                true,
            ),
            (
                "https://api.example.com",
                "https",
                "API.Example.com.",
                443,
                true,
            ),
            (
                "https://api.example.com",
                "https",
                "api.example.com",
                8443,
                false,
            ),
            (
                "https://api.example.com",
                "http",
                "api.example.com",
                443,
                false,
            ),
            ("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, true),
            (
                "http://127.0.0.1:8080",
                "http",
                "[::ffff:127.0.0.1]",
                8080,
                true,
            ),
            ("http://127.0.0.1:8080", "http", "localhost", 8080, false),
            (
                "https://*.example.com:8443",
                "https",
                "a.b.example.com",
                8443,
                true,
            ),
            (
                "https://*.example.com:8443",
                "https",
                "example.com",
                8443,
                false,
            ),
            (
                "https://*.example.com:8443",
                "https",
                "evilexample.com",
                8443,
                false,
            ),
            ("http://[::1]:*", "http", "[::1]", 1, true),
            ("http://*:*", "http", "anything.test", 9, true),
            ("http://*", "http", "10.0.0.1", 80, true),
            ("redis://localhost", "redis", "localhost", 6379, true),
            ("redis://localhost", "redis", "localhost", 6380, false),
            ("redis://localhost", "rediss", "localhost", 6379, false),
            (
                "rediss://cache.example.com",
                "rediss",
                "cache.example.com",
                6379,
                true,
            ),
            ("postgres://db:5432", "postgres", "db", 5432, true),
            ("postgres://db", "postgres", "db", 5432, true),
            ("postgres://db", "mysql", "db", 5432, false),
            ("mysql://db", "mysql", "db", 3306, true),
            ("mqtt://broker", "mqtt", "broker", 1883, true),
            ("mqtts://broker", "mqtts", "broker", 8883, true),
            ("mqtts://broker", "mqtt", "broker", 8883, false),
            ("*://localhost:*", "http", "localhost", 8080, true),
            ("*://localhost:*", "redis", "localhost", 6379, true),
            ("*://localhost:*", "https", "example.com", 443, false),
            ("*://localhost:5432", "postgres", "localhost", 5432, true),
            ("*://localhost:5432", "postgres", "localhost", 5433, false),
            ("*://*:*", "mqtt", "broker.example.com", 1883, true),
        ];
        for &(rule, scheme, h, port, expected) in cases {
            let parsed: OutboundHost = rule.parse().unwrap();
            assert_eq!(
                parsed.allows(scheme, &host(h), port),
                expected,
                "{rule} vs {scheme}://{h}:{port}"
            );
        }
    }

    #[test]
    fn bad_entries() {
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://x.com:0",
            "https://x.com:http",
            "http://2130706433",
            "http://0x7f.0.0.1",
            "https://[::1",
            "https://*.com",
            "postgresql://db",
            "*://localhost",
            "*://*",
            "redis://self",
            "http://self:8080",
            "*://self:*",
        ] {
            assert!(bad.parse::<OutboundHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn self_is_the_app_and_no_host() {
        for entry in [
            "http://self",
            "https://self",
            "http://self.alt",
            "https://self/",
        ] {
            let parsed: OutboundHost = entry.parse().unwrap();
            assert!(parsed.is_app_itself(), "{entry}");
            assert!(!parsed.names_host_explicitly(), "{entry}");
            for name in ["self", "self.alt", "localhost"] {
                assert!(!parsed.allows("http", &host(name), 80), "{entry} vs {name}");
            }
        }
        for entry in ["http://*", "*://*:*", "http://*.self.alt", "http://selfish"] {
            let parsed: OutboundHost = entry.parse().unwrap();
            assert!(!parsed.is_app_itself(), "{entry}");
        }
        for (entry, components) in [
            ("http://*.spin.internal", true),
            ("http://auth.spin.internal", true),
            ("https://auth.spin.internal:*", true),
            ("http://*", false),
            ("http://*.other.internal", false),
            ("http://spin.internal.example.com", false),
        ] {
            let parsed: OutboundHost = entry.parse().unwrap();
            assert_eq!(parsed.names_components(), components, "{entry}");
        }
        assert_eq!(
            "redis://self".parse::<OutboundHost>(),
            Err("`self` is the app itself, wherever it is served: write \"http://self\" or \"https://self\", not \"redis://self\"".to_owned())
        );
    }

    #[test]
    fn schemes_imply_their_ports() {
        for (scheme, port) in [
            ("http", 80),
            ("https", 443),
            ("redis", 6379),
            ("rediss", 6379),
            ("postgres", 5432),
            ("mysql", 3306),
            ("mqtt", 1883),
            ("mqtts", 8883),
        ] {
            assert_eq!(default_port(scheme), port, "{scheme}");
        }
        assert_eq!(
            "*://localhost".parse::<OutboundHost>(),
            Err("`*://` needs a port, such as `*://localhost:*`".to_owned())
        );
        assert_eq!(
            "ftp://x.com".parse::<OutboundHost>(),
            Err(
                "unsupported scheme \"ftp\"; use http, https, redis, rediss, postgres, mysql, mqtt, mqtts or *"
                    .to_owned()
            )
        );
    }

    #[test]
    fn other_ip_spellings_are_refused() {
        for spelling in [
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "0x7f.1",
            "127.0.0.01",
        ] {
            assert!(RequestHost::parse(spelling).is_err(), "{spelling}");
        }
        assert_eq!(host("[::ffff:169.254.169.254]"), host("169.254.169.254"));
    }

    #[test]
    fn public_and_not() {
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
            "64:ff9b:1::1",
            "2001:db8::1",
            "100::1",
            "192.0.0.8",
            "198.18.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:5db8:d822",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
