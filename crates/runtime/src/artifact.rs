//! Sealed precompiled artifacts: the only form of native code Tern loads.
//!
//! wasmtime deserializes compiled code without checking it, so loading a
//! file someone else wrote means running their machine code. Every artifact
//! Tern writes (cache entries and `tern compile` output) is sealed with a
//! keyed BLAKE3 MAC under a per-user key that never leaves this machine;
//! anything whose MAC does not verify is refused.
//!
//! The seal also binds what the code was compiled from and for: the BLAKE3
//! hash of the wasm (zero in `tern compile` artifacts, which run without
//! their wasm at hand) and the engine's compatibility hash. A cache entry
//! copied over another entry's path, or an artifact run by an engine it was
//! not compiled for, verifies but is refused for the wrong binding.
//!
//! Layout: the payload wasmtime produced, then a 112-byte trailer: wasm hash
//! (32 bytes), engine hash (32 bytes), kind (u8), three zero bytes, format
//! version (u32 LE), MAC (32 bytes) over everything before it, `TERNWASM`
//! magic (8 bytes).

use std::fs;
use std::hash::{Hash as _, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use wasmtime::error::Context as _;
use wasmtime::{Engine, Result};

use crate::private::{self, Refused, Subject, Unusable};

const MAGIC: &[u8; 8] = b"TERNWASM";
/// 2: the seal binds the wasm and engine hashes.
const FORMAT: u32 = 2;
const BINDING: usize = 32 + 32;
const TRAILER: usize = BINDING + 4 + 4 + 32 + 8;
/// Where kind and format start, counted from the end; the same in every
/// format so far, so an old artifact is reported as old, not as damaged.
const KIND_FROM_END: usize = 4 + 4 + 32 + 8;

/// What a sealed artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A compiled core module.
    Module = 0,
    /// A compiled component.
    Component = 1,
}

/// What the code in an artifact was compiled from and for; sealed with it,
/// and compared on every load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The BLAKE3 hash of the wasm binary; zero for `tern compile` output.
    pub(crate) wasm: [u8; 32],
    /// [`engine_hash`] of the engine it was compiled for.
    pub(crate) engine: [u8; 32],
}

impl Binding {
    /// The binding of a `tern compile` artifact for `engine`.
    pub(crate) fn precompiled(engine: [u8; 32]) -> Self {
        Binding {
            wasm: [0; 32],
            engine,
        }
    }
}

/// A stable hash of everything in `engine`'s configuration that changes
/// compiled code (wasmtime's compatibility hash).
pub(crate) fn engine_hash(engine: &Engine) -> [u8; 32] {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    hasher.0.update(b"tern engine\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    *hasher.0.finalize().as_bytes()
}

/// Feeds `Hash` impls into BLAKE3, so hashes are stable across runs.
pub(crate) struct Blake3Hasher(pub(crate) blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only finalized as a whole BLAKE3 hash")
    }
}

/// Whether `bytes` claim to be a sealed Tern artifact.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.ends_with(MAGIC)
}

/// The per-user key that seals and verifies artifacts.
pub struct SigningKey([u8; 32]);

impl SigningKey {
    /// Loads the key from `path`, creating it (mode 0600, in a directory of
    /// mode 0700) on first use. A key, or a key directory, that is a link,
    /// is not this user's, or that others can write (or read, for the key)
    /// is refused with an error naming it: never used, never replaced.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            match private::make_dir(dir) {
                Ok(()) => {}
                Err(Unusable::Refused(why)) => {
                    return Err(Refused::new(Subject::KeyDir, dir, why).into());
                }
                Err(e) => {
                    return Err(wasmtime::format_err!(
                        "cannot create the signing key directory `{}`: {e}",
                        dir.display()
                    ));
                }
            }
        }
        match private::open_file(path, true) {
            Ok(file) => Self::read(path, file),
            Err(Unusable::Missing) => Self::create(path),
            Err(Unusable::Refused(why)) => Err(Refused::new(Subject::Key, path, why).into()),
            Err(Unusable::Io(e)) => {
                Err(e).with_context(|| format!("reading signing key `{}`", path.display()))
            }
        }
    }

    fn read(path: &Path, file: fs::File) -> Result<Self> {
        let mut bytes = Vec::with_capacity(33);
        file.take(33)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading signing key `{}`", path.display()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            wasmtime::format_err!("signing key `{}` is not 32 bytes", path.display())
        })?;
        Ok(SigningKey(key))
    }

    fn create(path: &Path) -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| wasmtime::format_err!("no randomness for a signing key: {e}"))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let creating = || format!("creating signing key `{}`", path.display());
        // Written whole under a temporary name, then linked into place only
        // if no key is there yet: a reader never sees a partial key.
        let mut tmp = private::temp_file(dir).with_context(creating)?;
        tmp.write_all(&key).with_context(creating)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok(SigningKey(key)),
            // Another tern process won the race: use its key.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load_or_create(path)
            }
            Err(e) => Err(e.error).with_context(creating),
        }
    }

    /// The default key location: `$XDG_DATA_HOME/tern/artifact.key`.
    pub fn default_path() -> Option<PathBuf> {
        crate::dirs::data_dir().map(|d| d.join("artifact.key"))
    }

    /// Seals a wasmtime-serialized payload, bound to `binding`.
    pub(crate) fn seal(&self, kind: ArtifactKind, payload: &[u8], binding: &Binding) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + TRAILER);
        out.extend_from_slice(payload);
        out.extend_from_slice(&binding.wasm);
        out.extend_from_slice(&binding.engine);
        out.extend_from_slice(&[kind as u8, 0, 0, 0]);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        let mac = self.mac().update(&out).finalize();
        out.extend_from_slice(mac.as_bytes());
        out.extend_from_slice(MAGIC);
        out
    }

    /// Verifies a sealed artifact in memory and that it is bound to
    /// `expected`; returns its kind and payload.
    ///
    /// Callers deserialize from these very bytes, which nothing outside
    /// this process can change: what runs is what was verified.
    pub(crate) fn open<'a>(
        &self,
        bytes: &'a [u8],
        expected: &Binding,
    ) -> Result<(ArtifactKind, &'a [u8]), ArtifactError> {
        if bytes.len() < KIND_FROM_END || !is_sealed(bytes) {
            return Err(ArtifactError::Truncated);
        }
        let tail = &bytes[bytes.len() - KIND_FROM_END..];
        if u32::from_le_bytes(tail[4..8].try_into().unwrap()) != FORMAT {
            return Err(ArtifactError::Format);
        }
        if bytes.len() < TRAILER {
            return Err(ArtifactError::Truncated);
        }
        let signed = &bytes[..bytes.len() - 40];
        let computed = self.mac().update(signed).finalize();
        // `blake3::Hash` compares in constant time.
        if computed != blake3::Hash::from_bytes(tail[8..40].try_into().unwrap()) {
            return Err(ArtifactError::Signature);
        }
        let kind = match tail[0] {
            0 => ArtifactKind::Module,
            1 => ArtifactKind::Component,
            _ => return Err(ArtifactError::Format),
        };
        let payload_len = bytes.len() - TRAILER;
        let binding = &bytes[payload_len..payload_len + BINDING];
        if binding[32..] != expected.engine {
            return Err(ArtifactError::Engine);
        }
        if binding[..32] != expected.wasm {
            return Err(ArtifactError::Program);
        }
        Ok((kind, &bytes[..payload_len]))
    }

    /// A MAC over `bytes` for small records sealed the same way.
    pub(crate) fn tag(&self, bytes: &[u8]) -> blake3::Hash {
        self.mac().update(b"tern record\0").update(bytes).finalize()
    }

    fn mac(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
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
    /// Sealed by this key, but compiled for another engine configuration.
    Engine,
    /// Sealed by this key, but compiled from other wasm (a cache entry
    /// copied to another entry's path, say).
    Program,
}

impl std::fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactError::Truncated => "artifact is truncated",
            ArtifactError::Format => "artifact was written by an incompatible version of tern",
            ArtifactError::Signature => "artifact signature does not verify (altered, or not written by this tern installation)",
            ArtifactError::Engine => "artifact was compiled for another engine configuration",
            ArtifactError::Program => "artifact was sealed for another program",
        })
    }
}

impl std::error::Error for ArtifactError {}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Binding = Binding {
        wasm: [1; 32],
        engine: [2; 32],
    };

    #[test]
    fn sealed_artifacts_verify_and_tampering_is_caught() {
        let key = SigningKey([7; 32]);
        let sealed = key.seal(ArtifactKind::Component, b"native code", &BOUND);
        assert_eq!(sealed.len(), b"native code".len() + TRAILER);
        assert_eq!(
            key.open(&sealed, &BOUND),
            Ok((ArtifactKind::Component, &b"native code"[..]))
        );

        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(key.open(&flipped, &BOUND), Err(ArtifactError::Signature));
        assert_eq!(
            key.open(&sealed[1..], &BOUND),
            Err(ArtifactError::Signature)
        );
        let short = &sealed[..sealed.len() - 1];
        assert_eq!(key.open(short, &BOUND), Err(ArtifactError::Truncated));
        let tail = &sealed[sealed.len() - 20..];
        assert_eq!(key.open(tail, &BOUND), Err(ArtifactError::Truncated));
        assert_eq!(
            SigningKey([8; 32]).open(&sealed, &BOUND),
            Err(ArtifactError::Signature)
        );
    }

    #[test]
    fn the_seal_binds_wasm_and_engine() {
        let key = SigningKey([7; 32]);
        let sealed = key.seal(ArtifactKind::Module, b"native code", &BOUND);
        let other_wasm = Binding {
            wasm: [3; 32],
            ..BOUND
        };
        assert_eq!(key.open(&sealed, &other_wasm), Err(ArtifactError::Program));
        let other_engine = Binding {
            engine: [3; 32],
            ..BOUND
        };
        assert_eq!(key.open(&sealed, &other_engine), Err(ArtifactError::Engine));

        // Rewriting the binding in the file breaks the seal.
        let mut rebound = sealed.clone();
        let at = rebound.len() - TRAILER;
        rebound[at..at + 32].copy_from_slice(&[3; 32]);
        assert_eq!(
            key.open(&rebound, &other_wasm),
            Err(ArtifactError::Signature)
        );

        // An artifact of the previous format is old, not damaged.
        let mut old = sealed[..sealed.len() - TRAILER].to_vec();
        old.extend_from_slice(&[0, 0, 0, 0]);
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&[0; 32]);
        old.extend_from_slice(MAGIC);
        assert_eq!(key.open(&old, &BOUND), Err(ArtifactError::Format));
    }

    #[test]
    fn key_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/artifact.key");
        let first = SigningKey::load_or_create(&path).unwrap();
        let second = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, second.0);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }

    #[test]
    fn a_key_others_could_write_is_refused_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // In a directory tern makes (0700): a temporary directory follows
        // the umask, which may let the group write.
        let path = dir.path().join("data/artifact.key");
        SigningKey::load_or_create(&path).unwrap();
        let before = fs::read(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = SigningKey::load_or_create(&path).err().unwrap();
        assert!(err.is::<Refused>(), "{err}");
        assert!(
            err.to_string().contains("is writable by group or others"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);

        // A link to a good key is refused too.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("data/link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = SigningKey::load_or_create(&link).err().unwrap();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }
}
