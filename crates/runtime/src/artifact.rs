//! Sealed precompiled artifacts: the only form of native code Tern loads.
//!
//! wasmtime deserializes compiled code without checking it, so loading a
//! file someone else wrote means running their machine code. Every artifact
//! Tern writes (cache entries and `tern compile` output) is sealed with a
//! keyed BLAKE3 MAC under a per-user key that never leaves this machine;
//! anything whose MAC does not verify is refused.
//!
//! Layout: the payload wasmtime produced, then a 48-byte trailer: kind (u8),
//! three zero bytes, format version (u32 LE), MAC (32 bytes) over everything
//! before it, `TERNWASM` magic (8 bytes). The payload comes first so that a
//! verified file can be mapped as it is, with no copy.

use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use wasmtime::Result;
use wasmtime::error::Context as _;

const MAGIC: &[u8; 8] = b"TERNWASM";
const FORMAT: u32 = 1;
const TRAILER: usize = 4 + 4 + 32 + 8;

/// What a sealed artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A compiled core module.
    Module = 0,
    /// A compiled component.
    Component = 1,
}

/// Whether `bytes` claim to be a sealed Tern artifact.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.ends_with(MAGIC)
}

/// The per-user key that seals and verifies artifacts.
pub struct SigningKey([u8; 32]);

impl SigningKey {
    /// Loads the key from `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    wasmtime::format_err!("signing key `{}` is not 32 bytes", path.display())
                })?;
                Ok(SigningKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(e).with_context(|| format!("reading signing key `{}`", path.display())),
        }
    }

    fn create(path: &Path) -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| wasmtime::format_err!("no randomness for a signing key: {e}"))?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(&key)
                    .with_context(|| format!("writing signing key `{}`", path.display()))?;
                Ok(SigningKey(key))
            }
            // Another tern process won the race: use its key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
            Err(e) => Err(e).with_context(|| format!("creating signing key `{}`", path.display())),
        }
    }

    /// The default key location: `$XDG_DATA_HOME/tern/artifact.key`.
    pub fn default_path() -> Option<PathBuf> {
        crate::dirs::data_dir().map(|d| d.join("artifact.key"))
    }

    /// Seals a wasmtime-serialized payload.
    pub fn seal(&self, kind: ArtifactKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + TRAILER);
        out.extend_from_slice(payload);
        out.extend_from_slice(&[kind as u8, 0, 0, 0]);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        let mac = self.mac().update(&out).finalize();
        out.extend_from_slice(mac.as_bytes());
        out.extend_from_slice(MAGIC);
        out
    }

    /// Verifies a sealed artifact in memory; returns its kind and payload.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<(ArtifactKind, &'a [u8]), ArtifactError> {
        let (signed, trailer) = split_trailer(bytes)?;
        let kind = check_trailer(trailer, self.mac().update(signed).finalize())?;
        Ok((kind, &signed[..signed.len() - 8]))
    }

    /// Verifies a sealed artifact file by streaming it through the MAC,
    /// leaving `file` ready to be mapped. Only this user can write the files
    /// tern seals (mode 0600, replaced by rename, never edited in place), so
    /// the verified bytes are the bytes that get mapped.
    pub fn verify_file(&self, file: &mut File) -> Result<ArtifactKind, ArtifactError> {
        let len = file.metadata().map_err(|_| ArtifactError::Truncated)?.len();
        let signed_len = len
            .checked_sub(40)
            .filter(|&n| n >= 8)
            .ok_or(ArtifactError::Truncated)?;
        let mut trailer = [0u8; TRAILER];
        file.seek(SeekFrom::Start(len - TRAILER as u64))
            .map_err(|_| ArtifactError::Truncated)?;
        file.read_exact(&mut trailer)
            .map_err(|_| ArtifactError::Truncated)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|_| ArtifactError::Truncated)?;
        // `update_reader` reads in blocks big enough for BLAKE3's SIMD lanes.
        let mut mac = self.mac();
        mac.update_reader(&mut file.take(signed_len))
            .map_err(|_| ArtifactError::Truncated)?;
        check_trailer(&trailer, mac.finalize())
    }

    /// A MAC over `bytes` for small records sealed the same way.
    pub(crate) fn tag(&self, bytes: &[u8]) -> blake3::Hash {
        self.mac().update(b"tern record\0").update(bytes).finalize()
    }

    fn mac(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }
}

/// Splits `bytes` into the MAC'd part (payload, kind, format) and the
/// whole 48-byte trailer.
fn split_trailer(bytes: &[u8]) -> Result<(&[u8], &[u8]), ArtifactError> {
    if bytes.len() < TRAILER || !is_sealed(bytes) {
        return Err(ArtifactError::Truncated);
    }
    let signed = &bytes[..bytes.len() - 40];
    Ok((signed, &bytes[bytes.len() - TRAILER..]))
}

/// Checks a trailer against the MAC computed over what precedes its MAC.
fn check_trailer(trailer: &[u8], computed: blake3::Hash) -> Result<ArtifactKind, ArtifactError> {
    if !trailer.ends_with(MAGIC) {
        return Err(ArtifactError::Truncated);
    }
    if u32::from_le_bytes(trailer[4..8].try_into().unwrap()) != FORMAT {
        return Err(ArtifactError::Format);
    }
    // `blake3::Hash` compares in constant time.
    if computed != blake3::Hash::from_bytes(trailer[8..40].try_into().unwrap()) {
        return Err(ArtifactError::Signature);
    }
    match trailer[0] {
        0 => Ok(ArtifactKind::Module),
        1 => Ok(ArtifactKind::Component),
        _ => Err(ArtifactError::Format),
    }
}

/// Why a sealed artifact was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ArtifactError {
    /// Shorter than a header, or no magic.
    Truncated,
    /// Written by a different artifact format.
    Format,
    /// The MAC does not verify: altered, or sealed under another key.
    Signature,
}

impl std::fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactError::Truncated => "artifact is truncated",
            ArtifactError::Format => "artifact was written by an incompatible version of tern",
            ArtifactError::Signature => "artifact signature does not verify (altered, or not written by this tern installation)",
        })
    }
}

impl std::error::Error for ArtifactError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_artifacts_verify_and_tampering_is_caught() {
        let key = SigningKey([7; 32]);
        let sealed = key.seal(ArtifactKind::Component, b"native code");
        assert_eq!(
            key.open(&sealed),
            Ok((ArtifactKind::Component, &b"native code"[..]))
        );

        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(key.open(&flipped), Err(ArtifactError::Signature));
        assert_eq!(key.open(&sealed[1..]), Err(ArtifactError::Signature));
        let short = &sealed[..sealed.len() - 1];
        assert_eq!(key.open(short), Err(ArtifactError::Truncated));
        let tail = &sealed[sealed.len() - 20..];
        assert_eq!(key.open(tail), Err(ArtifactError::Truncated));
        assert_eq!(
            SigningKey([8; 32]).open(&sealed),
            Err(ArtifactError::Signature)
        );
    }

    #[test]
    fn key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/artifact.key");
        let first = SigningKey::load_or_create(&path).unwrap();
        let second = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, second.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
