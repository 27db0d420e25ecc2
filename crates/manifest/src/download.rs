//! Where a component's binary comes from: a file of the app, or (in a Spin
//! manifest) a download checked against its SHA-256 digest. This crate only
//! reads and checks the URL and digest; the download happens where apps are
//! loaded.

use std::path::{Path, PathBuf};

/// Where a component's wasm binary comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentSource {
    /// A file: the manifest's directory joined with `source` as written.
    /// Exists and is not a directory (unless the manifest was loaded
    /// unbuilt); inside the app directory unless the operator allowed
    /// otherwise.
    File(PathBuf),
    /// A file to download, from a Spin manifest's `source = { url, digest
    /// }`. It is fetched (or found in the download cache) and made a
    /// [`ComponentSource::File`] before the app is loaded.
    Download(Download),
}

impl ComponentSource {
    /// The file, unless the binary is still to be downloaded.
    ///
    /// ```
    /// # use std::path::Path;
    /// # use tern_manifest::ComponentSource;
    /// let source = ComponentSource::File("app/hello.wasm".into());
    /// assert_eq!(source.file(), Some(Path::new("app/hello.wasm")));
    /// ```
    pub fn file(&self) -> Option<&Path> {
        match self {
            ComponentSource::File(path) => Some(path),
            ComponentSource::Download(_) => None,
        }
    }
}

/// A component binary to download: Spin's `source = { url = "...", digest =
/// "sha256:..." }`. What arrives is used only if its SHA-256 is `sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// An `http://` or `https://` URL with a host, as written. It may
    /// carry user info and a query, so messages show
    /// [`Download::display_url`] instead.
    pub url: String,
    /// The file's SHA-256: 64 lowercase hex digits.
    pub sha256: String,
}

impl Download {
    /// The URL as messages show it: scheme, host, port and path, without
    /// the user info, query or fragment, which may hold secrets.
    ///
    /// ```
    /// # use tern_manifest::Download;
    /// let download = Download {
    ///     url: "https://me:s3cret@example.com:8443/app.wasm?token=abc#top".into(),
    ///     sha256: "0".repeat(64),
    /// };
    /// assert_eq!(download.display_url(), "https://example.com:8443/app.wasm");
    /// ```
    pub fn display_url(&self) -> String {
        display_url(&self.url)
    }

    /// The digest as a manifest writes it: `sha256:` and the hex digits.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// `url` without user info, query or fragment.
pub(crate) fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

/// Why `url` cannot be downloaded from, if it cannot: Tern fetches
/// `http://` and `https://` URLs that name a host, written in printable
/// ASCII (anything else percent-encoded).
pub(crate) fn url_problem(url: &str) -> Option<String> {
    if !url.chars().all(|c| c.is_ascii_graphic()) {
        return Some(
            "must be printable ASCII without spaces; percent-encode other characters".to_owned(),
        );
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("must be an `https://` or `http://` URL".to_owned());
    };
    if scheme != "https" && scheme != "http" {
        return Some(format!(
            "`{scheme}://` URLs cannot be downloaded; use `https://` or `http://`"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or("", |(ip, _)| ip),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Some(format!("{} names no host", display_url(url)));
    }
    None
}

/// The hex digits of a `sha256:HEX` digest, or why `digest` is not one.
pub(crate) fn parse_digest(digest: &str) -> Result<String, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!(
            "\"{}\" is not a digest Tern can check; write `sha256:` and the file's SHA-256 in 64 lowercase hex digits (`sha256sum FILE` prints them)",
            digest.escape_debug()
        )
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(
            "must be `sha256:` and 64 lowercase hex digits (`sha256sum FILE` prints them)"
                .to_owned(),
        );
    }
    Ok(hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_keep_no_secrets() {
        for (url, shown) in [
            ("https://example.com/a.wasm", "https://example.com/a.wasm"),
            (
                "http://127.0.0.1:8080/x/a.wasm",
                "http://127.0.0.1:8080/x/a.wasm",
            ),
            (
                "https://u:p@example.com/a.wasm",
                "https://example.com/a.wasm",
            ),
            ("https://u@example.com?sig=1", "https://example.com"),
            (
                "https://example.com/a.wasm#frag",
                "https://example.com/a.wasm",
            ),
            ("https://[::1]:443/a.wasm?x", "https://[::1]:443/a.wasm"),
        ] {
            assert_eq!(display_url(url), shown, "{url}");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_downloaded() {
        for url in [
            "https://example.com/a.wasm",
            "http://127.0.0.1:8080/a.wasm",
            "https://u:p@example.com/a.wasm?sig=1",
            "https://[::1]/a.wasm",
        ] {
            assert_eq!(url_problem(url), None, "{url}");
        }
        for url in [
            "example.com/a.wasm",
            "ftp://example.com/a.wasm",
            "HTTPS://example.com/a.wasm",
            "file:///tmp/a.wasm",
            "https:///a.wasm",
            "https://u:p@/a.wasm",
            "https://:443/a.wasm",
            "https://[]/a.wasm",
            "https://example.com/a b.wasm",
            "https://exämple.com/a.wasm",
        ] {
            assert!(url_problem(url).is_some(), "{url}");
        }
    }

    #[test]
    fn digests_are_sha256_in_lowercase_hex() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(parse_digest(&format!("sha256:{hex}")), Ok(hex.clone()));
        for digest in [
            hex.clone(),
            format!("sha512:{hex}"),
            format!("SHA256:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}g", &hex[1..]),
            "sha256:".to_owned(),
        ] {
            assert!(parse_digest(&digest).is_err(), "{digest}");
        }
    }
}
