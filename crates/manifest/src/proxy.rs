//! The proxy parts of a manifest: `[upstream.NAME]` services that routes
//! forward to and filters may call, and `[filter.NAME]` proxy-wasm filters
//! that routes put in front of an upstream.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::error::Source;
use crate::raw::{RawFilter, RawUpstream};
use crate::resolve::Boundary;
use crate::{ByteSize, Location, ManifestError, OutsideGrant};

/// An upstream service: where a route forwards, or what a filter's
/// `dispatch_http_call` may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The name a route or filter uses; for a route's inline URL, the URL.
    pub name: String,
    /// `HOST:PORT` to connect to (HTTP/1.1, no TLS).
    pub authority: String,
    /// A path prefix requests are forwarded under (`""` for none).
    pub base_path: String,
    /// Time to connect; past it the client gets 502.
    pub connect_timeout: Duration,
    /// Time for the response head; past it the client gets 504.
    pub timeout: Duration,
    /// Where it is declared (a route's `upstream` for an inline URL).
    pub location: Location,
}

impl Upstream {
    /// The default connect timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default response timeout.
    pub const TIMEOUT: Duration = Duration::from_secs(30);

    /// Reads an `http://HOST:PORT[/PATH]` URL; the message says what is
    /// wrong with it.
    pub fn parse_url(name: &str, url: &str) -> Result<Upstream, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https upstreams are not supported yet; use http:// (on a private network or loopback)".to_string()
            } else {
                format!("`{url}` is not an http:// URL")
            }
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "`{url}` must be http://HOST[:PORT][/PATH], without user info, query or fragment"
            ));
        }
        let authority = match authority.rsplit_once(':') {
            Some((_, port)) if !authority.ends_with(']') => {
                port.parse::<u16>()
                    .map_err(|_| format!("`{url}` has an invalid port"))?;
                authority.to_string()
            }
            _ => format!("{authority}:80"),
        };
        Ok(Upstream {
            name: name.to_string(),
            authority,
            base_path: path.trim_end_matches('/').to_string(),
            connect_timeout: Self::CONNECT_TIMEOUT,
            timeout: Self::TIMEOUT,
            location: Location { line: 0, column: 0 },
        })
    }
}

/// What a request gets when a filter fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterFailure {
    /// 500 (the default).
    Closed,
    /// The request goes on without the filter.
    Open,
}

/// How a filter's VMs are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterIsolation {
    /// One VM per worker thread (the default).
    Worker,
    /// A fresh VM per request.
    Request,
}

/// A `[filter.NAME]` table: a proxy-wasm filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// The name routes use.
    pub name: String,
    /// The filter's `.wasm`, joined to the manifest's directory.
    pub source: std::path::PathBuf,
    /// Handed to the filter's `proxy_on_configure`.
    pub configuration: String,
    /// Handed to its `proxy_on_vm_start`.
    pub vm_configuration: String,
    /// What a request gets when the filter fails.
    pub failure: FilterFailure,
    /// VM per worker or per request.
    pub isolation: FilterIsolation,
    /// The lowest level logged: trace, debug, info, warn, error, critical.
    pub log_level: String,
    /// Linear memory of one VM.
    pub memory: ByteSize,
    /// Time one callback may run.
    pub callback_time: Duration,
    /// The upstreams its `dispatch_http_call` may name; each is declared.
    pub upstreams: Vec<String>,
    /// Where `source` is written, for errors found when loading it.
    pub source_location: Location,
}

impl FilterSpec {
    /// Default memory per VM.
    pub const MEMORY: ByteSize = ByteSize(64 << 20);
    /// Default time per callback.
    pub const CALLBACK_TIME: Duration = Duration::from_millis(100);
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "critical"];

pub(crate) fn resolve_upstreams(
    source: &Source,
    raw: BTreeMap<Spanned<String>, RawUpstream>,
) -> Result<BTreeMap<String, Upstream>, ManifestError> {
    let mut upstreams = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("upstream.{}", name.get_ref());
        if !crate::resolve::is_valid_id(name.get_ref()) {
            let message =
                "invalid name; use lowercase letters, digits, `-` and `_`, starting with a letter";
            return Err(source.invalid(Some(source.at(&name.span())), key, message));
        }
        let location = source.key_at(&raw.url.span());
        let mut upstream = Upstream::parse_url(name.get_ref(), raw.url.get_ref())
            .map_err(|message| source.invalid(Some(location), format!("{key}.url"), message))?;
        upstream.location = location;
        if let Some(timeout) = raw.connect_timeout {
            upstream.connect_timeout = timeout.0;
        }
        if let Some(timeout) = raw.timeout {
            upstream.timeout = timeout.0;
        }
        upstreams.insert(name.into_inner(), upstream);
    }
    Ok(upstreams)
}

pub(crate) fn resolve_filters(
    source: &Source,
    base: &Path,
    raw: BTreeMap<Spanned<String>, RawFilter>,
    upstreams: &BTreeMap<String, Upstream>,
    boundary: &mut Boundary,
) -> Result<BTreeMap<String, FilterSpec>, ManifestError> {
    let mut filters = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("filter.{}", name.get_ref());
        if !crate::resolve::is_valid_id(name.get_ref()) {
            let message =
                "invalid name; use lowercase letters, digits, `-` and `_`, starting with a letter";
            return Err(source.invalid(Some(source.at(&name.span())), key, message));
        }
        let written = raw.source.get_ref();
        let location = source.key_at(&raw.source.span());
        let path = base.join(written);
        if !path.is_file() {
            let message = format!("no such file: {}", written.escape_debug());
            return Err(source.invalid(Some(location), format!("{key}.source"), message));
        }
        boundary.check(
            source,
            location,
            &format!("{key}.source"),
            written,
            &path,
            (name.get_ref(), OutsideGrant::Filter),
        )?;
        let word = |value: &Option<Spanned<String>>, field: &str, words: &[&str]| {
            let Some(value) = value else {
                return Ok(None);
            };
            if words.contains(&value.get_ref().as_str()) {
                return Ok(Some(value.get_ref().clone()));
            }
            let message = format!(
                "`{}` is not one of: {}",
                value.get_ref().escape_debug(),
                words.join(", ")
            );
            let location = Some(source.key_at(&value.span()));
            Err(source.invalid(location, format!("{key}.{field}"), message))
        };
        let failure = match word(&raw.failure, "failure", &["closed", "open"])?.as_deref() {
            Some("open") => FilterFailure::Open,
            _ => FilterFailure::Closed,
        };
        let isolation = match word(&raw.isolation, "isolation", &["worker", "request"])?.as_deref()
        {
            Some("request") => FilterIsolation::Request,
            _ => FilterIsolation::Worker,
        };
        let log_level = word(&raw.log_level, "log_level", &LOG_LEVELS)?.unwrap_or("info".into());
        let mut granted = Vec::new();
        for upstream in raw.upstreams {
            if !upstreams.contains_key(upstream.get_ref()) {
                let message = format!(
                    "no upstream named \"{}\" is declared under [upstream]",
                    upstream.get_ref().escape_debug()
                );
                let location = Some(source.key_at(&upstream.span()));
                return Err(source.invalid(location, format!("{key}.upstreams"), message));
            }
            granted.push(upstream.into_inner());
        }
        let memory = match raw.limits.memory {
            Some(memory) if memory.get_ref().0 < (1 << 20) => {
                let location = Some(source.key_at(&memory.span()));
                let message = "must be at least 1MiB";
                return Err(source.invalid(location, format!("{key}.limits.memory"), message));
            }
            Some(memory) => memory.into_inner(),
            None => FilterSpec::MEMORY,
        };
        filters.insert(
            name.get_ref().clone(),
            FilterSpec {
                name: name.into_inner(),
                source: path,
                configuration: raw.configuration.unwrap_or_default(),
                vm_configuration: raw.vm_configuration.unwrap_or_default(),
                failure,
                isolation,
                log_level,
                memory,
                callback_time: raw
                    .limits
                    .callback_time
                    .map_or(FilterSpec::CALLBACK_TIME, |t| t.0),
                upstreams: granted,
                source_location: location,
            },
        );
    }
    Ok(filters)
}
