//! The on-disk compile cache: one sealed artifact per (wasm bytes, engine
//! configuration, tern version), so a second run skips compilation.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::error::Context as _;
use wasmtime::{Engine, Result};

use crate::artifact::{ArtifactKind, SigningKey};
use crate::stat_index::{self, FileStamp};

/// A directory of sealed compiled artifacts.
pub struct CompileCache {
    dir: PathBuf,
    key: SigningKey,
}

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// A verified entry: its kind, and the open file to map.
    Hit(ArtifactKind, fs::File),
    /// No entry.
    Miss,
    /// An entry that did not verify, and why.
    Rejected(String),
}

impl CompileCache {
    /// A cache in `dir`, sealing entries with `key`.
    pub fn new(dir: PathBuf, key: SigningKey) -> Self {
        CompileCache { dir, key }
    }

    /// The per-user cache (`$XDG_CACHE_HOME/tern`) with the per-user key;
    /// `None` when the user has no home directory.
    pub fn open_default() -> Result<Option<Self>> {
        let (Some(dir), Some(key_path)) = (crate::dirs::cache_dir(), SigningKey::default_path())
        else {
            return Ok(None);
        };
        Ok(Some(CompileCache::new(
            dir,
            SigningKey::load_or_create(&key_path)?,
        )))
    }

    /// The key entries are sealed with.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Where the entry for the wasm with this content hash lives, for
    /// `engine`'s configuration.
    pub(crate) fn entry_path(&self, engine: &Engine, content: &[u8; 32]) -> PathBuf {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        hasher.0.update(b"tern compile cache\0");
        hasher.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(content);
        self.dir
            .join(format!("{}.twasm", hasher.0.finalize().to_hex()))
    }

    /// The content hash remembered for this version of a module file.
    pub(crate) fn recall(&self, stamp: &FileStamp) -> Option<[u8; 32]> {
        stat_index::recall(&self.dir, &self.key, stamp)
    }

    /// Remembers the content hash of this version of a module file.
    pub(crate) fn remember(&self, stamp: &FileStamp, content: &[u8; 32]) {
        stat_index::remember(&self.dir, &self.key, stamp, content);
    }

    pub(crate) fn lookup(&self, path: &Path) -> Lookup {
        let Ok(mut file) = fs::File::open(path) else {
            return Lookup::Miss;
        };
        match self.key.verify_file(&mut file) {
            Ok(kind) => Lookup::Hit(kind, file),
            Err(e) => Lookup::Rejected(e.to_string()),
        }
    }

    /// Writes an entry atomically: a reader sees the old file, or the whole
    /// new one, never a torn write.
    pub(crate) fn store(&self, path: &Path, kind: ArtifactKind, payload: &[u8]) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache directory `{}`", self.dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("writing to cache directory `{}`", self.dir.display()))?;
        tmp.write_all(&self.key.seal(kind, payload))?;
        tmp.persist(path)
            .with_context(|| format!("writing cache entry `{}`", path.display()))?;
        Ok(())
    }
}

/// Feeds `Hash` impls into BLAKE3, so the key is stable across runs.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only finalized as a whole BLAKE3 hash")
    }
}
