//! Bundles: the tar (or gzipped tar) archive that `tern deploy` packs and
//! the host unpacks into an app's directory.
//!
//! A bundle is hostile input: whoever holds the admin token chooses every
//! byte. So [`unpack`] writes each entry itself instead of trusting the `tar`
//! crate's unpacking, and holds to these rules:
//! - a path is plain names below the app directory (`./` is allowed; `..`, a
//!   root or a Windows prefix is refused);
//! - only regular files and directories: links, devices and FIFOs are
//!   refused, and the archive's modes and owners are ignored (files 0644,
//!   directories 0755, narrowed by the umask);
//! - a file is created new, never opened through something already there;
//! - entries and bytes are capped while decompressing, so a gzip bomb stops
//!   at the cap, not after;
//! - a long name or pax header is at most [`MAX_EXTENSION`] bytes, checked
//!   in a first pass that holds none of them: `tar` reads each whole into
//!   memory.
//!
//! Nothing is written outside the destination on any error; the destination
//! itself may be left half filled, and the caller deletes it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tar::{Archive, Builder, EntryType, Header};
use tern_manifest::ByteSize;

/// Room per entry for what the stream carries besides file contents
/// (headers, padding, long names), when capping the decompressed stream.
const ENTRY_OVERHEAD: u64 = 8 << 10;

/// The most a long name, long link or pax header may hold.
pub const MAX_EXTENSION: u64 = 64 << 10;

/// How much one bundle may unpack to.
#[derive(Clone, Copy, Debug)]
pub struct BundleLimits {
    /// Total bytes of its files (default 1GiB).
    pub max_unpacked: u64,
    /// Entries of any kind, directories included (default 10000).
    pub max_entries: u32,
}

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_unpacked: 1 << 30,
            max_entries: 10_000,
        }
    }
}

/// What [`unpack`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u32,
    /// Their total size.
    pub bytes: u64,
}

/// Why a bundle was refused. Displays as one line naming the entry as the
/// bundle spells it, never a host path.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bytes are neither a tar nor a gzipped tar.
    #[error("the bundle is not a tar or tar.gz archive")]
    NotTar,
    /// The archive starts well but breaks off or goes bad later.
    #[error("the bundle is damaged: {0}")]
    Damaged(io::Error),
    /// The files add up to more than this limit
    /// ([`BundleLimits::max_unpacked`]).
    #[error("the bundle unpacks to more than {0}")]
    TooLarge(ByteSize),
    /// More than this many entries ([`BundleLimits::max_entries`]).
    #[error("the bundle holds more than {0} entries")]
    TooManyEntries(u32),
    /// The entry at this path is absolute, climbs with `..`, or is empty.
    #[error("bundle entry {0:?}: leads outside the app directory")]
    Outside(String),
    /// A link, device, FIFO or other entry that is not a file or directory.
    #[error("bundle entry {entry:?}: is {kind}; bundles hold regular files and directories only")]
    NotFileOrDir {
        /// The entry's path.
        entry: String,
        /// What it is, such as `a symbolic link`.
        kind: &'static str,
    },
    /// This path is already taken by an earlier entry.
    #[error("bundle entry {0:?}: is both a file and a directory, or appears twice")]
    Conflict(String),
    /// A long name, long link or pax header above [`MAX_EXTENSION`].
    #[error("the bundle has a path or pax header of {0} bytes; at most 65536 are allowed")]
    LongHeader(u64),
    /// Reading the entry from the archive, or writing it to disk, failed.
    #[error("bundle entry {entry:?}: {doing}: {error}")]
    Io {
        /// The entry's path.
        entry: String,
        /// What was being done, such as `reading it`.
        doing: &'static str,
        /// Why it failed.
        error: io::Error,
    },
}

/// Unpacks `bytes`, a tar or a tar.gz (told apart by the gzip magic
/// `1f 8b`), into `dest`, an existing empty directory, under `limits`.
pub fn unpack(bytes: &[u8], dest: &Path, limits: &BundleLimits) -> Result<Unpacked, BundleError> {
    // Capping the whole stream bounds what tar reads on its own behalf too:
    // long names and pax headers it holds in memory, data it skips.
    let cap_hit = Cell::new(false);
    let overhead = (u64::from(limits.max_entries) + 1) * ENTRY_OVERHEAD;
    let left = limits.max_unpacked.saturating_add(overhead);
    let stream = || -> Box<dyn Read + '_> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(GzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        }
    };
    check_extensions(Capped {
        inner: stream(),
        left,
        hit: &Cell::new(false),
    })?;
    let mut archive = Archive::new(Capped {
        inner: stream(),
        left,
        hit: &cap_hit,
    });
    let too_large = || BundleError::TooLarge(ByteSize(limits.max_unpacked));
    let mut done = Unpacked::default();
    for (seen, entry) in (1u32..).zip(archive.entries().map_err(|_| BundleError::NotTar)?) {
        let mut entry = entry.map_err(|error| match seen {
            _ if cap_hit.get() => too_large(),
            1 => BundleError::NotTar,
            _ => BundleError::Damaged(error),
        })?;
        if seen > limits.max_entries {
            return Err(BundleError::TooManyEntries(limits.max_entries));
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = entry.path().ok().and_then(|path| plain_path(&path));
        let outside = || BundleError::Outside(name.clone());
        match entry.header().entry_type() {
            // Pax defaults for the entries after it: nothing to write.
            EntryType::XGlobalHeader => {}
            EntryType::Directory => make_dirs(dest, &rel.ok_or_else(outside)?, &name)?,
            EntryType::Regular | EntryType::Continuous => {
                let rel = rel
                    .filter(|r| r.file_name().is_some())
                    .ok_or_else(outside)?;
                // The header's size refuses most files before a byte is
                // written; counting what comes holds the cap regardless.
                let room = limits.max_unpacked - done.bytes;
                if entry.size() > room {
                    return Err(too_large());
                }
                if let Some(parent) = rel.parent() {
                    make_dirs(dest, parent, &name)?;
                }
                let mut counted = Capped {
                    inner: &mut entry,
                    left: room,
                    hit: &cap_hit,
                };
                done.bytes += write_file(&mut counted, &dest.join(rel), &name)
                    .map_err(|e| if cap_hit.get() { too_large() } else { e })?;
                done.files += 1;
            }
            kind => {
                return Err(BundleError::NotFileOrDir {
                    entry: name,
                    kind: describe(kind),
                });
            }
        }
    }
    Ok(done)
}

/// Refuses a bundle with a long name, long link or pax header above
/// [`MAX_EXTENSION`], reading the archive's raw entries without holding
/// any. Any other fault is left for the unpacking pass to name.
fn check_extensions(stream: impl Read) -> Result<(), BundleError> {
    let mut archive = Archive::new(stream);
    let Ok(entries) = archive.entries() else {
        return Ok(());
    };
    for entry in entries.raw(true) {
        let Ok(entry) = entry else {
            return Ok(());
        };
        let extension = matches!(
            entry.header().entry_type(),
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        );
        if extension && entry.size() > MAX_EXTENSION {
            return Err(BundleError::LongHeader(entry.size()));
        }
    }
    Ok(())
}

/// Packs `files` (paths relative to `root`; directories are walked) into a
/// .tar.gz that [`unpack`] accepts. The output depends only on the paths
/// and contents: sorted, each path once, files 0644, directories 0755,
/// mtime 0, no owners. Symbolic links and other special files are left
/// out, not followed. A path that is absolute or climbs with `..` is an
/// [`io::ErrorKind::InvalidInput`] error.
pub fn pack(root: &Path, files: &[PathBuf]) -> io::Result<Vec<u8>> {
    let mut found = BTreeMap::new();
    for file in files {
        let rel = plain_path(file).ok_or_else(|| {
            let outside = format!("{} leads outside the app directory", file.display());
            io::Error::new(io::ErrorKind::InvalidInput, outside)
        })?;
        collect(root, rel, &mut found)?;
    }
    let mut tar = Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (rel, kind) in found {
        let mut header = Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, rel, io::empty())?;
        } else {
            let data = fs::read(root.join(&rel)).map_err(|e| named(&rel, e))?;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, rel, data.as_slice())?;
        }
    }
    tar.into_inner()?.finish()
}

/// `path` as plain names (`.` dropped), or `None` if it is absolute or
/// climbs. An empty result is the directory itself.
fn plain_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Creates `dest/rel` and the directories above it, a level at a time so
/// that nothing already there is followed.
fn make_dirs(dest: &Path, rel: &Path, name: &str) -> Result<(), BundleError> {
    let entry = || name.to_owned();
    let mut dir = dest.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        let made = match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            // Bundles bring no links, so one here was put by someone else:
            // never write through it.
            Ok(meta) if meta.is_symlink() => return Err(BundleError::Outside(entry())),
            Ok(_) => return Err(BundleError::Conflict(entry())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().mode(0o755).create(&dir)
            }
            Err(e) => Err(e),
        };
        made.map_err(|error| BundleError::Io {
            entry: entry(),
            doing: "creating its directory",
            error,
        })?;
    }
    Ok(())
}

/// Copies `entry` to a new file at `path`.
fn write_file(entry: &mut impl Read, path: &Path, name: &str) -> Result<u64, BundleError> {
    let failed = |doing, error| BundleError::Io {
        entry: name.to_owned(),
        doing,
        error,
    };
    let open = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path);
    let mut file = match open {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BundleError::Conflict(name.to_owned()));
        }
        Err(e) => return Err(failed("creating it", e)),
    };
    let mut buf = vec![0; 64 << 10];
    let mut written = 0;
    loop {
        match entry.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => {
                file.write_all(&buf[..n])
                    .map_err(|e| failed("writing it", e))?;
                written += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed("reading it", e)),
        }
    }
}

/// What an entry that is neither a file nor a directory is, for the error.
fn describe(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Symlink => "a symbolic link",
        EntryType::Link => "a hard link",
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        EntryType::Fifo => "a FIFO",
        EntryType::GNUSparse => "a sparse file",
        _ => "an entry of an unsupported type",
    }
}

/// A stream that fails, setting `hit`, if it goes on past `left` bytes.
struct Capped<'a, R> {
    inner: R,
    left: u64,
    /// Tells the cap from other errors, which tar's wrapping hides.
    hit: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Exactly at the cap is fine if the stream ends there.
            if buf.is_empty() || self.inner.read(&mut [0u8])? == 0 {
                return Ok(0);
            }
            self.hit.set(true);
            return Err(io::Error::other("over the size cap"));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Records `rel` and, for a directory, everything below it.
fn collect(root: &Path, rel: PathBuf, found: &mut BTreeMap<PathBuf, FileType>) -> io::Result<()> {
    let path = root.join(&rel);
    let kind = fs::symlink_metadata(&path)
        .map_err(|e| named(&rel, e))?
        .file_type();
    if kind.is_dir() {
        for child in fs::read_dir(&path).map_err(|e| named(&rel, e))? {
            let child = child.map_err(|e| named(&rel, e))?;
            collect(root, rel.join(child.file_name()), found)?;
        }
    } else if !kind.is_file() {
        return Ok(());
    }
    if !rel.as_os_str().is_empty() {
        found.insert(rel, kind);
    }
    Ok(())
}

/// `e`, saying which file it is about.
fn named(rel: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", rel.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use tar::EntryType::*;

    use super::*;

    /// A header written byte for byte, as a hostile client could, with a
    /// mode that unpacking must not honour.
    fn header(name: &str, kind: EntryType, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o4777);
        header.set_size(size);
        header.set_link_name("../../etc/passwd").unwrap();
        header.set_cksum();
        header
    }

    fn tar(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = Builder::new(Vec::new());
        for (name, kind, data) in entries {
            tar.append(&header(name, *kind, data.len() as u64), *data)
                .unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Unpacks into `app` in a fresh directory, checking that nothing
    /// appears beside `app` and that no error names a host path.
    fn unpack_in_app(
        bytes: &[u8],
        limits: BundleLimits,
    ) -> (tempfile::TempDir, Result<Unpacked, String>) {
        let parent = tempfile::tempdir().unwrap();
        fs::create_dir(parent.path().join("app")).unwrap();
        let result = unpack(bytes, &parent.path().join("app"), &limits).map_err(|e| e.to_string());
        assert_eq!(
            fs::read_dir(parent.path()).unwrap().count(),
            1,
            "beside app"
        );
        if let Err(message) = &result {
            assert!(
                !message.contains(&*parent.path().to_string_lossy()),
                "{message}"
            );
        }
        (parent, result)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// The process's umask, which narrows the modes unpacking asks for.
    fn umask() -> u32 {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("probe")).unwrap(); // asks for 0777
        !mode(&dir.path().join("probe")) & 0o777
    }

    #[test]
    fn unpacks_files_and_directories() {
        let bundle = tar(&[
            ("./", Directory, b""),
            ("./tern.toml", Regular, b"[app]\n"),
            ("static/", Directory, b""),
            ("static/css/site.css", Regular, b"body {}"),
        ]);
        for bytes in [bundle.clone(), gzip(&bundle)] {
            let (parent, result) = unpack_in_app(&bytes, BundleLimits::default());
            assert_eq!(result.map(|u| (u.files, u.bytes)), Ok((2, 13)));
            let app = parent.path().join("app");
            assert_eq!(fs::read(app.join("tern.toml")).unwrap(), b"[app]\n");
            assert_eq!(
                fs::read(app.join("static/css/site.css")).unwrap(),
                b"body {}"
            );
            assert_eq!(mode(&app.join("tern.toml")), 0o644 & !umask());
            assert_eq!(mode(&app.join("static/css")), 0o755 & !umask());
        }
    }

    #[test]
    fn refuses_hostile_entries() {
        let cases = [
            ("../evil", Regular, ""),
            ("a/../../evil", Regular, ""),
            ("/tmp/evil", Regular, ""),
            ("../up", Directory, ""),
            ("link", Symlink, "a symbolic link"),
            ("hard", Link, "a hard link"),
            ("tty", Char, "a character device"),
            ("disk", Block, "a block device"),
            ("pipe", Fifo, "a FIFO"),
        ];
        for (name, kind, what) in cases {
            let bytes = tar(&[("ok", Regular, b"ok"), (name, kind, b"")]);
            let (_parent, result) = unpack_in_app(&bytes, BundleLimits::default());
            let problem = match what {
                "" => "leads outside the app directory".to_owned(),
                _ => format!("is {what}; bundles hold regular files and directories only"),
            };
            assert_eq!(result, Err(format!("bundle entry {name:?}: {problem}")));
        }
    }

    #[test]
    fn long_names_up_to_a_bound() {
        // A path past a header's 100 bytes travels as a GNU long name.
        let deep = format!("{}f", "d/".repeat(100));
        let mut builder = Builder::new(Vec::new());
        let mut head = Header::new_gnu();
        head.set_size(2);
        head.set_mode(0o644);
        builder.append_data(&mut head, &deep, &b"ok"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let (parent, result) = unpack_in_app(&bytes, BundleLimits::default());
        assert_eq!(result.map(|u| u.files), Ok(1));
        assert_eq!(
            fs::read(parent.path().join("app").join(&deep)).unwrap(),
            b"ok"
        );

        // One of 100,000 bytes (a compressed bomb could make it a GiB) is
        // refused before tar holds it.
        let long = vec![b'a'; 100_000];
        let bytes = tar(&[("././@LongLink", GNULongName, &long), ("x", Regular, b"1")]);
        for bytes in [bytes.clone(), gzip(&bytes)] {
            let (parent, result) = unpack_in_app(&bytes, BundleLimits::default());
            let message =
                "the bundle has a path or pax header of 100000 bytes; at most 65536 are allowed";
            assert_eq!(result, Err(message.into()));
            assert!(!parent.path().join("app/x").exists());
        }
    }

    #[test]
    fn refuses_a_path_taken_twice() {
        for second in [Regular, Directory] {
            let bytes = tar(&[("a", Regular, b"1"), ("a", second, b"")]);
            let (_parent, result) = unpack_in_app(&bytes, BundleLimits::default());
            let message = r#"bundle entry "a": is both a file and a directory, or appears twice"#;
            assert_eq!(result, Err(message.into()));
        }
    }

    #[test]
    fn caps_entries() {
        let bytes = tar(&[
            ("a", Regular, b""),
            ("b", Regular, b""),
            ("c", Regular, b""),
        ]);
        let limits = BundleLimits {
            max_entries: 2,
            ..Default::default()
        };
        let (parent, result) = unpack_in_app(&bytes, limits);
        assert_eq!(result, Err("the bundle holds more than 2 entries".into()));
        assert!(!parent.path().join("app/c").exists());
    }

    #[test]
    fn caps_bytes_before_they_reach_the_disk() {
        let limits = BundleLimits {
            max_unpacked: 1 << 20,
            max_entries: 10,
        };
        let too_large = Err("the bundle unpacks to more than 1MiB".to_owned());

        // 64MiB of zeros in about 64KiB of gzip.
        let mut builder = Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let zeros = io::repeat(0).take(64 << 20);
        builder
            .append(&header("bomb", Regular, 64 << 20), zeros)
            .unwrap();
        let bomb = builder.into_inner().unwrap().finish().unwrap();
        let (parent, result) = unpack_in_app(&bomb, limits);
        assert_eq!(result, too_large);
        let on_disk = fs::metadata(parent.path().join("app/bomb")).map_or(0, |m| m.len());
        assert!(on_disk <= 1 << 20, "{on_disk} bytes written");

        let exactly = vec![7u8; 1 << 20];
        let (_parent, result) = unpack_in_app(&tar(&[("full", Regular, &exactly)]), limits);
        assert_eq!(result.map(|u| u.bytes), Ok(1 << 20));
        let (_parent, result) = unpack_in_app(
            &tar(&[("full", Regular, &exactly), ("more", Regular, b"1")]),
            limits,
        );
        assert_eq!(result, too_large);

        // A pax header tar would read whole is refused before it is.
        let skipped = vec![0u8; 8 << 20];
        let (_parent, result) = unpack_in_app(
            &tar(&[("pax_global_header", XGlobalHeader, &skipped)]),
            limits,
        );
        let message =
            "the bundle has a path or pax header of 8388608 bytes; at most 65536 are allowed";
        assert_eq!(result, Err(message.into()));
    }

    #[test]
    fn refuses_what_is_not_a_tar() {
        let gzip_garbage = gzip(&[0x55; 2048]);
        let cases: [&[u8]; 4] = [
            b"not a bundle",
            &[0x55; 2048],
            &[0x1f, 0x8b, 1, 2, 3],
            &gzip_garbage,
        ];
        let not_tar = Err("the bundle is not a tar or tar.gz archive".to_owned());
        for bytes in cases {
            assert_eq!(unpack_in_app(bytes, BundleLimits::default()).1, not_tar);
        }
    }

    #[test]
    fn pack_round_trips_and_is_stable() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("static/sub")).unwrap();
        fs::write(root.path().join("tern.toml"), "[app]\n").unwrap();
        fs::write(root.path().join("static/a.txt"), "a").unwrap();
        fs::write(root.path().join("static/sub/b.txt"), "bb").unwrap();
        symlink("../tern.toml", root.path().join("static/link")).unwrap();
        let files = ["tern.toml", "static", "static/a.txt"].map(PathBuf::from);

        let bytes = pack(root.path(), &files).unwrap();
        assert_eq!(bytes, pack(root.path(), &files).unwrap());
        let (parent, result) = unpack_in_app(&bytes, BundleLimits::default());
        assert_eq!(result.map(|u| (u.files, u.bytes)), Ok((3, 9)));
        let app = parent.path().join("app");
        assert_eq!(
            fs::read_to_string(app.join("static/sub/b.txt")).unwrap(),
            "bb"
        );
        assert!(fs::symlink_metadata(app.join("static/link")).is_err());

        for outside in ["../x", "/etc"] {
            let error = pack(root.path(), &[PathBuf::from(outside)]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
