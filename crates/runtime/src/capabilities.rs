//! What a guest may touch: directories, environment variables, network
//! addresses. Every grant is explicit data; nothing here grants by default.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use wasmtime::Result;
use wasmtime::error::Context as _;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A host directory preopened at a guest path (`--dir HOST::GUEST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// The path the guest sees it at.
    pub guest: String,
    /// Whether the guest is refused writes, creates, renames and deletes.
    pub read_only: bool,
}

impl DirGrant {
    /// Parses `HOST::GUEST`, or `DIR` meaning `DIR::DIR`.
    ///
    /// ```
    /// use tern_runtime::DirGrant;
    /// let grant = DirGrant::parse("./data::/data", true).unwrap();
    /// assert_eq!(grant.guest, "/data");
    /// assert!(grant.read_only);
    /// ```
    pub fn parse(spec: &str, read_only: bool) -> Result<Self, String> {
        let (host, guest) = spec.split_once("::").unwrap_or((spec, spec));
        if host.is_empty() || guest.is_empty() {
            return Err(format!(
                "invalid directory grant `{spec}`: expected HOST::GUEST or DIR"
            ));
        }
        Ok(DirGrant {
            host: host.into(),
            guest: guest.to_string(),
            read_only,
        })
    }
}

/// An environment variable for the guest (`--env KEY=VALUE`, or `--env KEY`
/// to pass the host's value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvGrant {
    /// Set KEY to VALUE.
    Set(String, String),
    /// Pass the host's value of KEY, if it has one.
    Inherit(String),
}

impl FromStr for EnvGrant {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let grant = match spec.split_once('=') {
            Some((key, value)) => EnvGrant::Set(key.to_string(), value.to_string()),
            None => EnvGrant::Inherit(spec.to_string()),
        };
        let (EnvGrant::Set(key, _) | EnvGrant::Inherit(key)) = &grant;
        if key.is_empty() {
            return Err(format!(
                "invalid environment grant `{spec}`: expected KEY=VALUE or KEY"
            ));
        }
        Ok(grant)
    }
}

/// Network access to matching addresses (`--allow-net HOST:PORT`, `*` for
/// any host or any port). Granting any address also allows name lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetGrant {
    /// `None` for `*`.
    pub host: Option<String>,
    /// `None` for `*`.
    pub port: Option<u16>,
}

impl FromStr for NetGrant {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid network grant `{spec}`: expected HOST:PORT, e.g. 127.0.0.1:8080, example.com:*, *:443"
            )
        };
        let (host, port) = spec.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| bad())?),
        };
        let host = (host != "*").then(|| host.to_string());
        Ok(NetGrant { host, port })
    }
}

/// Everything a guest is granted. `Capabilities::default()` grants nothing.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables.
    pub env: Vec<EnvGrant>,
    /// Network addresses the guest may connect to or bind.
    pub net: Vec<NetGrant>,
}

impl Capabilities {
    /// Applies the grants to a WASI context builder, resolving host names in
    /// network grants once, now.
    pub fn apply(&self, wasi: &mut WasiCtxBuilder) -> Result<()> {
        for dir in &self.dirs {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .with_context(|| {
                    format!("cannot open directory `{}` for --dir", dir.host.display())
                })?;
        }
        for grant in &self.env {
            match grant {
                EnvGrant::Set(key, value) => wasi.env(key, value),
                EnvGrant::Inherit(key) => match std::env::var(key) {
                    Ok(value) => wasi.env(key, value),
                    Err(_) => wasi,
                },
            };
        }
        let granted = !self.net.is_empty();
        wasi.allow_tcp(granted)
            .allow_udp(granted)
            .allow_ip_name_lookup(granted);
        // Without grants wasmtime's default address check already refuses
        // everything; `tern serve` builds a context per request, so skip
        // building a policy that would refuse the same.
        if granted {
            let allowed = Arc::new(NetPolicy::resolve(&self.net)?);
            wasi.socket_addr_check(move |addr, usage| {
                let ok = allowed.permits(addr) || is_implicit_bind(addr, usage);
                Box::pin(async move { ok })
            });
        }
        Ok(())
    }
}

/// The check wasmtime makes before a connect or send on an unbound socket:
/// the OS picks the local address, so any grant covers it.
fn is_implicit_bind(addr: SocketAddr, usage: SocketAddrUse) -> bool {
    matches!(usage, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind)
        && addr.ip().is_unspecified()
        && addr.port() == 0
}

/// Network grants with host names resolved to addresses.
struct NetPolicy {
    rules: Vec<(Option<HashSet<IpAddr>>, Option<u16>)>,
}

impl NetPolicy {
    fn resolve(grants: &[NetGrant]) -> Result<Self> {
        let mut rules = Vec::new();
        for grant in grants {
            let ips = match &grant.host {
                None => None,
                Some(host) => Some(match host.parse::<IpAddr>() {
                    Ok(ip) => HashSet::from([ip]),
                    Err(_) => (host.as_str(), 0)
                        .to_socket_addrs()
                        .with_context(|| format!("cannot resolve --allow-net host `{host}`"))?
                        .map(|a| a.ip())
                        .collect(),
                }),
            };
            rules.push((ips, grant.port));
        }
        Ok(NetPolicy { rules })
    }

    fn permits(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.rules.iter().any(|(ips, port)| {
            ips.as_ref().is_none_or(|ips| ips.contains(&ip))
                && port.is_none_or(|p| p == addr.port())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_parse() {
        assert_eq!(
            DirGrant::parse("/srv/data::/data", false).unwrap(),
            DirGrant {
                host: "/srv/data".into(),
                guest: "/data".into(),
                read_only: false
            }
        );
        assert_eq!(DirGrant::parse("data", false).unwrap().guest, "data");
        assert!(DirGrant::parse("::/data", false).is_err());
    }

    #[test]
    fn env_grants_parse() {
        assert_eq!(
            "A=b=c".parse::<EnvGrant>().unwrap(),
            EnvGrant::Set("A".into(), "b=c".into())
        );
        assert_eq!(
            "HOME".parse::<EnvGrant>().unwrap(),
            EnvGrant::Inherit("HOME".into())
        );
        assert!("=x".parse::<EnvGrant>().is_err());
    }

    #[test]
    fn net_grants_match_addresses() {
        let grants: Vec<NetGrant> = ["127.0.0.1:8080", "*:443", "[::1]:*"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let policy = NetPolicy::resolve(&grants).unwrap();
        for (addr, allowed) in [
            ("127.0.0.1:8080", true),
            ("127.0.0.1:8081", false),
            ("10.1.2.3:443", true),
            ("[::1]:9", true),
            ("[::ffff:127.0.0.1]:8080", true),
            ("10.1.2.3:80", false),
        ] {
            assert_eq!(policy.permits(addr.parse().unwrap()), allowed, "{addr}");
        }
        assert!("localhost".parse::<NetGrant>().is_err());
        assert!("host:http".parse::<NetGrant>().is_err());
        assert!(NetPolicy::resolve(&[]).unwrap().rules.is_empty());
    }
}
