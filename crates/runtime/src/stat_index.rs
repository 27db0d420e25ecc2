//! The stat index: the content hash of a module file, and what the module
//! declares ([`Declared`]), remembered by the file's identity and change
//! times, so a warm run finds its cache entry without reading and hashing
//! the module (git's index does the same for a work tree). Records are
//! sealed like artifacts, so a damaged one is a miss, and are read only
//! from files of this user's that nobody else can write.

use std::fs::Metadata;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::artifact::SigningKey;
use crate::declared::Declared;
use crate::private;

/// Files changed more recently than this are not remembered: timestamps
/// tick coarsely, so such a file could change again without moving them.
const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp([i64; 7]);

impl FileStamp {
    pub(crate) fn of(meta: &Metadata) -> Self {
        FileStamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|n| n.to_le_bytes()).collect()
    }

    fn settled(&self) -> bool {
        let changed =
            SystemTime::UNIX_EPOCH + Duration::new(self.0[5].max(0) as u64, self.0[6] as u32);
        SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= SETTLE)
    }
}

fn record_path(dir: &Path, stamp: &FileStamp) -> PathBuf {
    dir.join("index")
        .join(format!("{:x}-{:x}", stamp.0[0], stamp.0[1]))
}

/// The records' format: what [`Declared`] holds and how it is encoded.
/// Bump it with any change to either: Tern's version (still 0.1.0) does
/// not move between builds, so it cannot tell an older build's record.
/// 2: one request per instance.
const FORMAT: u32 = 2;

/// A record's MAC, over its body, its format and this Tern's version: a
/// record written in another format or by another version is a miss (the
/// module is read once more), never trusted.
fn tag(key: &SigningKey, body: &[u8]) -> [u8; 32] {
    let version = env!("CARGO_PKG_VERSION");
    let mut tagged = format!("tern stat index {version} format {FORMAT}\0").into_bytes();
    tagged.extend_from_slice(body);
    *key.tag(&tagged).as_bytes()
}

/// What is remembered of one version of a module file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recalled {
    pub(crate) content: [u8; 32],
    pub(crate) declared: Declared,
}

/// What is remembered for this version of the file, if anything.
pub(crate) fn recall(dir: &Path, key: &SigningKey, stamp: &FileStamp) -> Option<Recalled> {
    let mut record = Vec::new();
    private::open_file(&record_path(dir, stamp), false)
        .ok()?
        .take(1024)
        .read_to_end(&mut record)
        .ok()?;
    let stamp_bytes = stamp.bytes();
    let (body, mac) = record.split_at_checked(stamp_bytes.len() + 32 + 9)?;
    if !body.starts_with(&stamp_bytes) || tag(key, body) != mac {
        return None;
    }
    let (content, declared) = body[stamp_bytes.len()..].split_at(32);
    Some(Recalled {
        content: content.try_into().ok()?,
        declared: Declared::from_bytes(declared.try_into().ok()?)?,
    })
}

/// Remembers `what` of this version of the file, once it has settled, or
/// at once if the caller says it is `written_once` (never changed after
/// it was written, so coarse timestamps cannot hide a change). Failing to
/// write only costs the next run a read.
pub(crate) fn remember(
    dir: &Path,
    key: &SigningKey,
    stamp: &FileStamp,
    what: &Recalled,
    written_once: bool,
) {
    if !written_once && !stamp.settled() {
        return;
    }
    let mut body = stamp.bytes();
    body.extend_from_slice(&what.content);
    body.extend_from_slice(&what.declared.to_bytes());
    let mac = tag(key, &body);
    body.extend_from_slice(&mac);
    let path = record_path(dir, stamp);
    let Some(parent) = path.parent() else { return };
    if private::make_dir(parent).is_err() {
        return;
    }
    let _ = private::temp_file(parent).and_then(|mut tmp| {
        tmp.write_all(&body)?;
        tmp.persist(&path).map(drop).map_err(|e| e.error)
    });
}

/// Removes the record for this file's identity, if there is one.
pub(crate) fn forget(dir: &Path, stamp: &FileStamp) {
    let _ = std::fs::remove_file(record_path(dir, stamp));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn settled_files_are_recalled_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("data/key")).unwrap();
        let module = dir.path().join("m.wasm");
        fs::write(&module, b"version one").unwrap();
        let fresh = FileStamp::of(&fs::metadata(&module).unwrap());
        let what = |byte: u8, wasi_p3: bool, initial_memory: Option<u64>| Recalled {
            content: [byte; 32],
            declared: Declared {
                wasi_p3,
                initial_memory,
                one_request_per_instance: byte == 3,
            },
        };
        let (one, two) = (what(1, false, Some(1 << 16)), what(2, true, None));

        // Just written: too fresh to trust its timestamps.
        remember(dir.path(), &key, &fresh, &one, false);
        assert_eq!(recall(dir.path(), &key, &fresh), None);
        // Unless its writer never changes it, until the file is forgotten.
        remember(dir.path(), &key, &fresh, &two, true);
        assert_eq!(recall(dir.path(), &key, &fresh), Some(two));
        forget(dir.path(), &fresh);
        assert_eq!(recall(dir.path(), &key, &fresh), None);

        // Settled (an old ctime, as a stamp from long ago would have).
        let mut settled = fresh;
        settled.0[5] -= 60;
        remember(dir.path(), &key, &settled, &one, false);
        assert_eq!(recall(dir.path(), &key, &settled), Some(one));

        // Any change to the file is a different stamp: a miss.
        let mut changed = settled;
        changed.0[2] += 1;
        assert_eq!(recall(dir.path(), &key, &changed), None);

        // A memory that fills all 64 bits is remembered as such, and so is
        // a component whose instances answer one request each.
        let mut huge = settled;
        huge.0[1] += 1;
        let most = what(3, false, Some(u64::MAX));
        remember(dir.path(), &key, &huge, &most, true);
        assert_eq!(recall(dir.path(), &key, &huge), Some(most));

        // A damaged record is a miss, never a wrong answer.
        let record = record_path(dir.path(), &settled);
        let mut bytes = fs::read(&record).unwrap();
        bytes[60] ^= 1;
        fs::write(&record, &bytes).unwrap();
        assert_eq!(recall(dir.path(), &key, &settled), None);
        // So is one whose declared facts were changed (the flag byte).
        bytes[60] ^= 1;
        bytes[56 + 32] ^= 1;
        fs::write(&record, &bytes).unwrap();
        assert_eq!(recall(dir.path(), &key, &settled), None);

        // And one an earlier build wrote in the format before this one
        // (its MAC over the version alone), whose flags could not say "one
        // request per instance".
        bytes[56 + 32] ^= 1;
        let body = bytes.len() - 32;
        let mut unnumbered =
            format!("tern stat index {}\0", env!("CARGO_PKG_VERSION")).into_bytes();
        unnumbered.extend_from_slice(&bytes[..body]);
        let old_mac = *key.tag(&unnumbered).as_bytes();
        bytes[body..].copy_from_slice(&old_mac);
        fs::write(&record, &bytes).unwrap();
        assert_eq!(recall(dir.path(), &key, &settled), None);
        let mac = tag(&key, &bytes[..body]);
        bytes[body..].copy_from_slice(&mac);
        fs::write(&record, &bytes).unwrap();
        assert_eq!(recall(dir.path(), &key, &settled), Some(one));
    }
}
