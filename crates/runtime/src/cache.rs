//! The on-disk compile cache: one sealed artifact per (wasm bytes, engine
//! configuration, tern version), so a second run skips compilation.
//!
//! Only this user can have written what the cache trusts: the directory is
//! refused unless it is this user's own and writable by nobody else, and an
//! entry is used only if it is a regular file of this user's, writable by
//! nobody else, opened without following a link, whose seal verifies and
//! binds it to the wasm and engine it is looked up for. Anything else is
//! ignored, recompiled and replaced.

use std::fs::File;
use std::hash::Hash as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use wasmtime::error::Context as _;
use wasmtime::{Engine, Result};

use crate::artifact::{ArtifactKind, Binding, Blake3Hasher, SigningKey};
use crate::private::{self, Refused, Subject, Unusable};
use crate::stat_index::{self, FileStamp, Recalled};

/// A directory of sealed compiled artifacts.
pub struct CompileCache {
    dir: PathBuf,
    key: SigningKey,
    /// The stat-index record read last: a cold load asks for the same
    /// one twice (what its module declares, then where its code is).
    last_recalled: Mutex<LastRecalled>,
}

/// [`CompileCache::recall`]'s memory of the record it read last, and how
/// many times files were forgotten: a record read before a forget is not
/// kept after it.
#[derive(Default)]
struct LastRecalled {
    record: Option<(FileStamp, Recalled)>,
    forgets: u64,
}

/// A cache entry whose seal verified, with the open file it was read
/// from: its code can be mapped from that very file (the same inode, not
/// the path again), or deserialized from the bytes that were verified.
pub(crate) struct Entry {
    kind: ArtifactKind,
    file: File,
    bytes: Vec<u8>,
    payload_len: usize,
}

impl Entry {
    pub(crate) fn kind(&self) -> ArtifactKind {
        self.kind
    }

    /// What wasmtime serialized, without the seal.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[..self.payload_len]
    }

    /// How many bytes of the file the seal covered: all of them.
    pub(crate) fn verified_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The entry's file, open since it was checked and verified.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// A verified entry.
    Hit(Entry),
    /// No entry.
    Miss,
    /// An entry that is not used, and why.
    Rejected(String),
}

impl CompileCache {
    /// A cache in `dir`, sealing entries with `key`. `dir` is made (mode
    /// 0700) when the first entry is written; if it exists it must be a
    /// directory of this user's, not a link, that nobody else can write.
    pub fn new(dir: PathBuf, key: SigningKey) -> Result<Self> {
        match private::check_dir(&dir) {
            Ok(()) | Err(Unusable::Missing) => Ok(CompileCache {
                dir,
                key,
                last_recalled: Mutex::default(),
            }),
            Err(Unusable::Refused(why)) => Err(Refused::new(Subject::CacheDir, &dir, why).into()),
            Err(Unusable::Io(e)) => Err(e).with_context(|| {
                format!("cannot use the compile cache directory `{}`", dir.display())
            }),
        }
    }

    /// The per-user cache (`$XDG_CACHE_HOME/tern`) with the per-user key;
    /// `None` when the user has no home directory. A cache directory, key
    /// directory or key that someone else could have written is a
    /// [`Refused`] error (`Error::is::<Refused>()`), distinct from a cache
    /// that merely cannot be made.
    pub fn open_default() -> Result<Option<Self>> {
        let (Some(dir), Some(key_path)) = (crate::dirs::cache_dir(), SigningKey::default_path())
        else {
            return Ok(None);
        };
        let key = SigningKey::load_or_create(&key_path)?;
        CompileCache::new(dir, key).map(Some)
    }

    /// The key entries are sealed with.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Forgets what the stat index remembers of the files under `root`
    /// (symlinks not followed), before the caller removes them: a record
    /// made at once for a file `written_once` must not outlive the file,
    /// or a new file given its inode within the same timestamp tick could
    /// match it.
    pub fn forget_tree(&self, root: &Path) {
        // Before and after: a record read while this runs is not kept.
        self.forget_last();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else if meta.is_file() {
                    stat_index::forget(&self.dir, &FileStamp::of(&meta));
                }
            }
        }
        self.forget_last();
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

    /// The content hash and declarations remembered for this version of
    /// a module file.
    pub(crate) fn recall(&self, stamp: &FileStamp) -> Option<Recalled> {
        let forgets = {
            let last = self.last();
            match last.record {
                Some((seen, recalled)) if seen == *stamp => return Some(recalled),
                _ => last.forgets,
            }
        };
        let recalled = stat_index::recall(&self.dir, &self.key, stamp)?;
        let mut last = self.last();
        if last.forgets == forgets {
            last.record = Some((*stamp, recalled));
        }
        Some(recalled)
    }

    fn forget_last(&self) {
        let mut last = self.last();
        last.record = None;
        last.forgets += 1;
    }

    fn last(&self) -> std::sync::MutexGuard<'_, LastRecalled> {
        self.last_recalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers the content hash and declarations of this version of a
    /// module file; at once if the file is `written_once`, else once it
    /// has settled.
    pub(crate) fn remember(&self, stamp: &FileStamp, what: &Recalled, written_once: bool) {
        stat_index::remember(&self.dir, &self.key, stamp, what, written_once);
    }

    /// Reads the entry at `path` and verifies its seal and that it was
    /// compiled for `binding`; the entry keeps the file open, so its code
    /// can then be mapped from the inode that was verified (see
    /// `program::deserialize_entry` for why that is sound).
    pub(crate) fn lookup(&self, path: &Path, binding: &Binding) -> Lookup {
        let mut file = match private::open_file(path, false) {
            Ok(file) => file,
            Err(Unusable::Missing) => return Lookup::Miss,
            Err(why) => return Lookup::Rejected(why.to_string()),
        };
        // Sized up front: growing by doubling copies a large entry twice.
        let size = file.metadata().map_or(0, |m| m.len());
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        if let Err(e) = file.read_to_end(&mut bytes) {
            return Lookup::Rejected(e.to_string());
        }
        let opened = self
            .key
            .open(&bytes, binding)
            .map(|(kind, payload)| (kind, payload.len()));
        match opened {
            Ok((kind, payload_len)) => Lookup::Hit(Entry {
                kind,
                file,
                bytes,
                payload_len,
            }),
            Err(e) => Lookup::Rejected(e.to_string()),
        }
    }

    /// Writes an entry atomically (mode 0600, then renamed into place): a
    /// reader sees the old file, or the whole new one, never a torn write.
    pub(crate) fn store(
        &self,
        path: &Path,
        kind: ArtifactKind,
        payload: &[u8],
        binding: &Binding,
    ) -> Result<()> {
        private::make_dir(&self.dir).map_err(|e| {
            wasmtime::format_err!(
                "cannot use the compile cache directory `{}`: {e}",
                self.dir.display()
            )
        })?;
        let mut tmp = private::temp_file(&self.dir)
            .with_context(|| format!("writing to cache directory `{}`", self.dir.display()))?;
        tmp.write_all(&self.key.seal(kind, payload, binding))?;
        tmp.persist(path)
            .with_context(|| format!("writing cache entry `{}`", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::Declared;

    #[test]
    fn the_record_read_last_is_kept_until_files_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("key")).unwrap();
        let cache = CompileCache::new(dir.path().join("cache"), key).unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let module = app.join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let stamp = FileStamp::of(&std::fs::metadata(&module).unwrap());
        let what = Recalled {
            content: [7; 32],
            declared: Declared::of(b"\0asm\x01\0\0\0"),
        };
        cache.remember(&stamp, &what, true);
        assert_eq!(cache.recall(&stamp), Some(what));

        // Asked again, it answers without reading the index.
        std::fs::remove_dir_all(dir.path().join("cache/index")).unwrap();
        assert_eq!(cache.recall(&stamp), Some(what));

        // Forgetting the app's files forgets it too.
        cache.forget_tree(&app);
        assert_eq!(cache.recall(&stamp), None);
    }
}
