//! Component binaries downloaded from a URL (a Spin manifest's `source = {
//! url, digest }`): fetched once, checked against their SHA-256, and kept
//! by content in the download cache, so that later loads use the file
//! without the network.
//!
//! A cached file is used only when its SHA-256 is the manifest's digest,
//! checked each time it is used. A download is written to a temporary file
//! in the cache directory and renamed into place only after its digest
//! matched, so neither a download cut short nor a wrong one ever looks
//! cached. Downloads are bounded in size ([`MAX_DOWNLOAD_SIZE`]) and time
//! ([`DOWNLOAD_CONNECT_TIMEOUT`], [`DOWNLOAD_TIMEOUT`]); HTTPS trusts the
//! web PKI roots; up to [`MAX_REDIRECTS`] redirects are followed.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HOST, LOCATION, USER_AGENT};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tern_manifest::{ByteSize, ComponentSource, Download, Manifest, ManifestError};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::outbound::{Io, tls_config};

/// The largest binary Tern downloads.
pub const MAX_DOWNLOAD_SIZE: u64 = 256 << 20;

/// How long finding and connecting to a server may take (the name lookup
/// and TCP connection, then the TLS handshake).
pub const DOWNLOAD_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one download may take in all, redirects and body included.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Redirects followed for one download.
pub const MAX_REDIRECTS: usize = 10;

/// Where downloaded binaries are kept: `DIR/sha256-HEX.wasm`, named by
/// their content.
#[derive(Clone, Debug)]
pub struct DownloadCache {
    dir: PathBuf,
}

impl DownloadCache {
    /// A cache in `dir`, made (mode 0700) at the first download.
    pub fn new(dir: PathBuf) -> Self {
        DownloadCache { dir }
    }

    /// The per-user cache, `$XDG_CACHE_HOME/tern/downloads` (else
    /// `~/.cache/tern/downloads`); `None` when the user has no home
    /// directory.
    pub fn open_default() -> Option<Self> {
        tern_runtime::dirs::cache_dir().map(|dir| DownloadCache::new(dir.join("downloads")))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file whose SHA-256 is `sha256` (hex) is kept.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("sha256-{sha256}.wasm"))
    }
}

/// Makes every downloaded source of `manifest` a file: the one in `cache`
/// whose SHA-256 is the manifest's digest, downloaded first when it is not
/// there. `downloading` is told before each download starts (the
/// component's id and the URL as messages show it, without user info or
/// query); a cached file is used without a word and without the network.
///
/// An error points at the component's `source` in the manifest and names
/// the URL: an HTTP status other than success, a server that cannot be
/// reached, a download past its size or time, or a file whose digest is
/// not the manifest's (both digests named; nothing is kept).
///
/// ```no_run
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let mut manifest = tern_manifest::load("spin.toml".as_ref())?;
/// let cache = tern_http::DownloadCache::open_default().ok_or("no home directory")?;
/// tern_http::fetch_sources(&mut manifest, &cache, &mut |id: &str, url: &str| {
///     eprintln!("downloading component `{id}` from {url}")
/// })?;
/// // Every `source` is a file now.
/// assert!(manifest.components.values().all(|c| c.source.file().is_some()));
/// # Ok(()) }
/// ```
pub fn fetch_sources(
    manifest: &mut Manifest,
    cache: &DownloadCache,
    downloading: &mut dyn FnMut(&str, &str),
) -> Result<(), ManifestError> {
    // Made at the first download: a cached app needs none.
    let mut runtime = None;
    for component in manifest.components.values_mut() {
        let ComponentSource::Download(download) = &component.source else {
            continue;
        };
        let download = download.clone();
        let cached = cache.path(&download.sha256);
        if file_sha256(&cached).as_deref() != Some(download.sha256.as_str()) {
            let failed = |message: String| ManifestError::Invalid {
                path: manifest.path.clone(),
                location: Some(component.source_location),
                key: format!("component.{}.source", component.id),
                message,
            };
            downloading(&component.id, &download.display_url());
            if runtime.is_none() {
                let built = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| failed(format!("cannot start downloading: {e}")))?;
                runtime = Some(built);
            }
            let runtime = runtime.as_ref().expect("made above");
            runtime
                .block_on(fetch(&download, cache, &cached))
                .map_err(failed)?;
        }
        component.source = ComponentSource::File(cached);
    }
    Ok(())
}

/// Downloads `download` to `dest` in `cache`, or says why not in one line
/// naming the URL (without its secrets).
async fn fetch(download: &Download, cache: &DownloadCache, dest: &Path) -> Result<(), String> {
    let url = download.display_url();
    let received = tokio::time::timeout(DOWNLOAD_TIMEOUT, async {
        let response = get(&download.url).await?;
        receive(response, cache).await
    })
    .await;
    let (file, sha256) = match received {
        Ok(Ok(received)) => received,
        Ok(Err(why)) => return Err(format!("downloading {url}: {why}")),
        Err(_) => {
            return Err(format!(
                "downloading {url}: not done within {}s",
                DOWNLOAD_TIMEOUT.as_secs()
            ));
        }
    };
    if sha256 != download.sha256 {
        // Dropping `file` removes it: nothing is kept.
        return Err(format!(
            "{url} has the digest sha256:{sha256}, not {} as the manifest says; nothing was kept",
            download.digest()
        ));
    }
    let keep =
        |e: std::io::Error| format!("downloading {url}: keeping it as {}: {e}", dest.display());
    file.as_file().sync_all().map_err(keep)?;
    file.persist(dest).map_err(|e| keep(e.error))?;
    Ok(())
}

/// GETs `url`, following redirects, and returns the successful response
/// whose body is the file.
async fn get(url: &str) -> Result<Response<Incoming>, String> {
    let mut uri: Uri = url
        .parse()
        .map_err(|e| format!("not a URL Tern can request: {e}"))?;
    // Sent to the URL's own origin only, never to one it redirects to.
    let credentials = basic_credentials(&uri);
    let origin = Origin::of(&uri);
    let mut redirects = 0;
    loop {
        let sent = credentials.as_ref().filter(|_| Origin::of(&uri) == origin);
        let response = request(&uri, sent).await?;
        let status = response.status();
        if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
            && let Some(location) = response.headers().get(LOCATION)
        {
            if redirects == MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            redirects += 1;
            uri = redirect_target(&uri, location)?;
            continue;
        }
        if !status.is_success() {
            let host = uri.host().unwrap_or_default();
            return Err(match redirects {
                0 => format!("the server answered {status}"),
                _ => format!("redirected to {host}, which answered {status}"),
            });
        }
        return Ok(response);
    }
}

/// Scheme, host and port: whom credentials may go to.
#[derive(PartialEq, Eq)]
struct Origin(Option<String>, Option<String>, Option<u16>);

impl Origin {
    fn of(uri: &Uri) -> Origin {
        Origin(
            uri.scheme_str().map(str::to_owned),
            uri.host().map(str::to_ascii_lowercase),
            uri.port_u16(),
        )
    }
}

/// Where a redirect's `Location` leads from `base`: an absolute URL, one
/// without a scheme (`//host/path`), an absolute path or a relative one.
fn redirect_target(base: &Uri, location: &HeaderValue) -> Result<Uri, String> {
    let location = location
        .to_str()
        .map_err(|_| "a redirect whose location is not text".to_owned())?;
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    let target = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |at| at + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = target
        .parse()
        .map_err(|_| "a redirect to a location that is not a URL".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!(
            "a redirect to {}, which is not an http:// or https:// URL",
            uri.scheme_str().unwrap_or("a location")
        )),
    }
}

/// One GET of `uri` on a new connection; the response's head.
async fn request(
    uri: &Uri,
    credentials: Option<&HeaderValue>,
) -> Result<Response<Incoming>, String> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http:// and https:// URLs can be downloaded".to_owned()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "the URL names no host".to_owned())?;
    // `[::1]` in a URL and a Host header; `::1` for lookups and TLS.
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let within = |what: &str| {
        format!(
            "{what} {host}:{port} took longer than {}s",
            DOWNLOAD_CONNECT_TIMEOUT.as_secs()
        )
    };

    let stream = tokio::time::timeout(DOWNLOAD_CONNECT_TIMEOUT, connect(bare, port))
        .await
        .map_err(|_| within("connecting to"))??;
    let io: Box<dyn Io> = if https {
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| format!("`{bare}` is not a name TLS can check"))?;
        let tls: Arc<rustls::ClientConfig> = tls_config(None)?;
        let handshake = TlsConnector::from(tls).connect(name, stream);
        let stream = tokio::time::timeout(DOWNLOAD_CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| within("the TLS handshake with"))?
            .map_err(|e| format!("TLS with {host}:{port}: {}", chain(&e)))?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let talking = |e: hyper::Error| format!("{host}:{port}: {}", chain(&e));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(talking)?;
    // The connection runs beside the request, and ends with its body.
    tokio::spawn(connection);

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host_header = match authority.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut request = Request::get(path)
        .header(HOST, host_header)
        .header(USER_AGENT, concat!("tern/", env!("CARGO_PKG_VERSION")))
        .header(ACCEPT, "*/*");
    if let Some(credentials) = credentials {
        request = request.header(AUTHORIZATION, credentials.clone());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot make the request: {e}"))?;
    sender.send_request(request).await.map_err(talking)
}

/// A TCP connection to `host` (a name or an IP address) on `port`, trying
/// each address it has in turn.
async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot find {host}: {e}"))?;
    let mut last = format!("{host} has no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("cannot connect to {address}: {e}"),
        }
    }
    Err(last)
}

/// Streams the body of `response` into a temporary file in the cache
/// directory, hashing it on the way; the file and its SHA-256 (hex).
async fn receive(
    mut response: Response<Incoming>,
    cache: &DownloadCache,
) -> Result<(tempfile::NamedTempFile, String), String> {
    let too_large = || {
        format!(
            "the file is larger than {}, the most Tern downloads",
            ByteSize(MAX_DOWNLOAD_SIZE)
        )
    };
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_DOWNLOAD_SIZE) {
        return Err(too_large());
    }
    let dir = cache.dir();
    let cannot = |e: std::io::Error| format!("writing to {}: {e}", dir.display());
    {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(cannot)?;
    }
    let mut file = tempfile::Builder::new()
        .prefix(".download-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(cannot)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let body = response.body_mut();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the file: {}", chain(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > MAX_DOWNLOAD_SIZE {
            return Err(too_large());
        }
        hasher.update(&data[..]);
        file.write_all(&data).map_err(cannot)?;
    }
    if let Some(length) = declared
        && length != size
    {
        return Err(format!(
            "the server announced {length} bytes and sent {size}"
        ));
    }
    Ok((file, hex(&hasher.finalize())))
}

/// The SHA-256 (hex) of the regular file at `path` (not a link), if it can
/// be read and is no larger than a download may be.
fn file_sha256(path: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_DOWNLOAD_SIZE {
        return None;
    }
    let mut file = fs::File::open(path).ok()?.take(MAX_DOWNLOAD_SIZE + 1);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buffer).ok()? {
            0 => break,
            n => hasher.update(&buffer[..n]),
        }
    }
    Some(hex(&hasher.finalize()))
}

/// An `Authorization: Basic` value from the user info of `uri`
/// (`user:password@`, percent-decoded), as Spin sends it.
fn basic_credentials(uri: &Uri) -> Option<HeaderValue> {
    let (userinfo, _) = uri.authority()?.as_str().rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut plain = percent_decode(user);
    plain.push(b':');
    plain.extend(percent_decode(password));
    let mut value = HeaderValue::from_str(&format!("Basic {}", base64(&plain))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `text` with each `%XX` replaced by the byte it stands for.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let escaped = bytes
            .get(at + 1..at + 3)
            .filter(|digits| digits.iter().all(u8::is_ascii_hexdigit))
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 16).ok());
        match (byte, escaped) {
            (b'%', Some(escaped)) => {
                decoded.push(escaped);
                at += 3;
            }
            _ => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    decoded
}

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[((bits >> (18 - 6 * i)) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// An error and its causes on one line (a cause its error already quotes
/// is not repeated).
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_user_info() {
        let uri: Uri = "https://Aladdin:open%20sesame@example.com/a.wasm"
            .parse()
            .unwrap();
        let value = basic_credentials(&uri).unwrap();
        assert_eq!(value, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
        let uri: Uri = "https://example.com/a.wasm".parse().unwrap();
        assert_eq!(basic_credentials(&uri), None);
    }

    #[test]
    fn base64_pads_and_percent_decoding_keeps_what_is_not_an_escape() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(percent_decode("a%3Ab%2f%zz%4"), b"a:b/%zz%4");
        assert_eq!(percent_decode("%+1"), b"%+1");
    }

    #[test]
    fn redirects_lead_where_browsers_go() {
        let base: Uri = "https://example.com/releases/v1/app.wasm?x=1"
            .parse()
            .unwrap();
        for (location, target) in [
            (
                "https://cdn.example.net/a.wasm",
                "https://cdn.example.net/a.wasm",
            ),
            ("//cdn.example.net/a.wasm", "https://cdn.example.net/a.wasm"),
            ("/b.wasm", "https://example.com/b.wasm"),
            (
                "c.wasm?sig=2",
                "https://example.com/releases/v1/c.wasm?sig=2",
            ),
            ("HTTP://example.org/d.wasm", "http://example.org/d.wasm"),
        ] {
            let location = HeaderValue::from_static(location);
            assert_eq!(
                redirect_target(&base, &location).unwrap().to_string(),
                target
            );
        }
        let ftp = HeaderValue::from_static("ftp://example.com/a.wasm");
        assert!(redirect_target(&base, &ftp).is_err());
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let of = |url: &str| Origin::of(&url.parse().unwrap());
        assert!(of("https://u:p@Example.com/a") == of("https://example.com/b"));
        assert!(of("https://example.com/a") != of("http://example.com/a"));
        assert!(of("https://example.com/a") != of("https://example.com:8443/a"));
        assert!(of("https://example.com/a") != of("https://cdn.example.com/a"));
    }

    #[test]
    fn cached_files_are_known_by_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DownloadCache::new(dir.path().to_owned());
        // sha256("abc")
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let path = cache.path(sha256);
        assert_eq!(file_sha256(&path), None);
        fs::write(&path, b"abc").unwrap();
        assert_eq!(file_sha256(&path).as_deref(), Some(sha256));
        // A link is not a cached file.
        let link = cache.path("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(file_sha256(&link), None);
    }
}
