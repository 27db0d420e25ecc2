//! TLS for `tern serve --tls-cert FILE --tls-key FILE`: the server's
//! certificate chain and private key, read from PEM files and checked before
//! Tern listens (and again on each reload). Errors name the file and what is
//! wrong with it; they never quote a key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The protocols offered in ALPN, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate chain and the private key that goes with it, loaded and
/// checked: what the server presents to clients.
#[derive(Clone)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    pub(crate) server: Arc<rustls::ServerConfig>,
}

/// Paths only: the key never goes anywhere it could be printed.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a certificate or key cannot be used: one line naming the file.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsConfig {
    /// Reads the certificate chain from `cert` (PEM, the server's own
    /// certificate first, then any intermediates) and the private key from
    /// `key` (PEM: PKCS#8, PKCS#1 or SEC1), and checks that the key is the
    /// certificate's. Offers HTTP/2 and HTTP/1.1 in ALPN.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let chain = read_chain(cert)?;
        let private = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError(format!(
                        "the TLS private key {} does not match the certificate {} \
                         (the server's own certificate must come first)",
                        key.display(),
                        cert.display()
                    ))
                }
                other => TlsError(format!(
                    "the TLS certificate {} and private key {} cannot be used: {other}",
                    cert.display(),
                    key.display()
                )),
            })?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConfig {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            server: Arc::new(server),
        })
    }

    /// Reads the same files again: a renewed certificate, say.
    pub fn reload(&self) -> Result<TlsConfig, TlsError> {
        Self::load(&self.cert, &self.key)
    }

    /// The certificate chain's file.
    pub fn cert_file(&self) -> &Path {
        &self.cert
    }

    /// The private key's file.
    pub fn key_file(&self) -> &Path {
        &self.key
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "reading the TLS certificate {}: {e}",
            path.display()
        ))
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "the TLS certificate file {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "the TLS certificate file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "reading the TLS private key {}: {e}",
            path.display()
        ))
    })?;
    // The parser's own message could quote a line of the file: not for a key.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let what = match e {
            pem::Error::NoItemsFound => "holds no PEM private key",
            _ => "is not a valid PEM private key",
        };
        TlsError(format!("the TLS key file {} {what}", path.display()))
    })
}

/// Where the server's TLS configuration lives: [`TlsSlot::replace`] swaps
/// in a reloaded certificate and key. Handshakes already under way finish
/// with the old one; new connections get the new one.
#[derive(Clone)]
pub struct TlsSlot(pub(crate) Arc<ArcSwap<rustls::ServerConfig>>);

impl TlsSlot {
    /// Presents `tls` to new connections from now on.
    pub fn replace(&self, tls: TlsConfig) {
        self.0.store(tls.server);
    }
}
