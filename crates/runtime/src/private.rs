//! Files and directories only this user can have written.
//!
//! Tern runs native code from its compile cache and trusts whatever its
//! signing key seals, so neither may be within anyone else's reach: a
//! directory or file Tern trusts is not a symbolic link, is owned by the
//! effective user and is writable by nobody else (the key is not even
//! readable by anyone else). Files are opened without following a link and
//! without blocking, so a FIFO planted where a file should be is refused
//! instead of hanging Tern, and their type is checked on the open file.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why Tern does not trust a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link: what it names could be anyone's.
    Symlink,
    /// Not a regular file (a FIFO, a device, a directory, ...).
    NotFile,
    /// Not a directory.
    NotDirectory,
    /// Owned by another user, with this uid.
    Owner(u32),
    /// Group or others may write to it.
    Writable,
    /// Group or others may read it (a secret).
    Readable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink => f.write_str("it is a symbolic link"),
            Refusal::NotFile => f.write_str("it is not a regular file"),
            Refusal::NotDirectory => f.write_str("it is not a directory"),
            Refusal::Owner(uid) => write!(
                f,
                "it is owned by uid {uid}, not by this user (uid {})",
                euid()
            ),
            Refusal::Writable => f.write_str("it is writable by group or others"),
            Refusal::Readable => f.write_str("it is readable by group or others"),
        }
    }
}

/// What a refused path was for; says how to put it right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    /// The compile cache directory.
    CacheDir,
    /// The directory the signing key lives in.
    KeyDir,
    /// The signing key.
    Key,
}

/// A cache or key directory, or a key file, that Tern refuses to use
/// because someone other than this user could have written it.
#[derive(Debug)]
pub struct Refused {
    subject: Subject,
    path: PathBuf,
    why: Refusal,
}

impl Refused {
    pub(crate) fn new(subject: Subject, path: &Path, why: Refusal) -> Self {
        Refused {
            subject,
            path: path.to_owned(),
            why,
        }
    }

    /// The refused path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why it was refused.
    pub fn why(&self) -> Refusal {
        self.why
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, fix) = match self.subject {
            Subject::CacheDir => (
                "compile cache directory",
                "remove it (it is only a cache), or run with --no-cache",
            ),
            Subject::KeyDir => (
                "signing key directory",
                "it must be a directory of your own that only you can write",
            ),
            Subject::Key => (
                "signing key",
                "remove it to have a new key made (then recompile your `tern compile` artifacts)",
            ),
        };
        write!(
            f,
            "refusing {what} `{}`: {}; {fix}",
            self.path.display(),
            self.why
        )
    }
}

impl std::error::Error for Refused {}

/// Why a path cannot be used.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// Nothing is there.
    Missing,
    /// Something is there that Tern must not trust.
    Refused(Refusal),
    /// It could not be opened or inspected.
    Io(io::Error),
}

impl From<io::Error> for Unusable {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            Unusable::Missing
        } else if e.raw_os_error() == Some(libc::ELOOP) {
            // What `O_NOFOLLOW` reports for a link in the last component.
            Unusable::Refused(Refusal::Symlink)
        } else {
            Unusable::Io(e)
        }
    }
}

impl From<Refusal> for Unusable {
    fn from(why: Refusal) -> Self {
        Unusable::Refused(why)
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Missing => f.write_str("it does not exist"),
            Unusable::Refused(why) => fmt::Display::fmt(why, f),
            Unusable::Io(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// The effective user id: who owns what Tern may trust.
#[allow(unsafe_code)]
pub(crate) fn euid() -> u32 {
    // SAFETY: `geteuid` takes no arguments, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() }
}

#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File,
    /// A file nobody else may even read.
    Secret,
}

fn check(meta: &Metadata, kind: Kind) -> Result<(), Refusal> {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return Err(Refusal::Symlink);
    }
    match kind {
        Kind::Dir if !file_type.is_dir() => return Err(Refusal::NotDirectory),
        Kind::File | Kind::Secret if !file_type.is_file() => return Err(Refusal::NotFile),
        _ => {}
    }
    if meta.uid() != euid() {
        return Err(Refusal::Owner(meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Refusal::Writable);
    }
    if matches!(kind, Kind::Secret) && meta.mode() & 0o044 != 0 {
        return Err(Refusal::Readable);
    }
    Ok(())
}

/// Checks that `dir` itself (not what a link names) is a directory of this
/// user's that nobody else can write.
pub(crate) fn check_dir(dir: &Path) -> Result<(), Unusable> {
    check(&fs::symlink_metadata(dir)?, Kind::Dir)?;
    Ok(())
}

/// Makes `dir` and its missing parents (mode 0700) if it is missing, then
/// checks it as [`check_dir`] does.
pub(crate) fn make_dir(dir: &Path) -> Result<(), Unusable> {
    match check_dir(dir) {
        Err(Unusable::Missing) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            check_dir(dir)
        }
        checked => checked,
    }
}

/// Opens a file for reading that only this user can have written: the last
/// component is not followed if it is a link, the open never blocks (on a
/// FIFO, say), and the open file must be a regular file owned by this user
/// and writable by nobody else (with `secret`, not readable either).
pub(crate) fn open_file(path: &Path, secret: bool) -> Result<File, Unusable> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // `File::metadata` is `fstat` on the open descriptor: the checked file is
    // the one that will be read, whatever happens to the path meanwhile.
    let kind = if secret { Kind::Secret } else { Kind::File };
    check(&file.metadata()?, kind)?;
    Ok(file)
}

/// A temporary file in `dir`, mode 0600, to be written and then renamed
/// into place (entries are replaced whole, never edited in place).
pub(crate) fn temp_file(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
}

/// Writes `bytes` to `path` as a new file of mode 0600: whole under a
/// temporary name beside it, then renamed into place (so a link at `path`
/// is replaced, not written through, and nobody sees half a file).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = temp_file(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn only_private_files_and_dirs_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sub = root.join("a/b");
        make_dir(&sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let file = sub.join("file");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_file(&file, false).is_ok());
        assert!(matches!(
            open_file(&file, true),
            Err(Unusable::Refused(Refusal::Readable))
        ));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            open_file(&file, false),
            Err(Unusable::Refused(Refusal::Writable))
        ));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

        let link = sub.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            open_file(&link, false),
            Err(Unusable::Refused(Refusal::Symlink))
        ));
        let dir_link = root.join("dir-link");
        std::os::unix::fs::symlink(&sub, &dir_link).unwrap();
        assert!(matches!(
            check_dir(&dir_link),
            Err(Unusable::Refused(Refusal::Symlink))
        ));
        assert!(matches!(
            make_dir(&dir_link),
            Err(Unusable::Refused(Refusal::Symlink))
        ));
        assert!(matches!(
            check_dir(&file),
            Err(Unusable::Refused(Refusal::NotDirectory))
        ));
        assert!(matches!(
            open_file(&sub, false),
            Err(Unusable::Refused(Refusal::NotFile))
        ));
        assert!(matches!(
            open_file(&root.join("missing"), false),
            Err(Unusable::Missing)
        ));

        fs::set_permissions(&sub, fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(
            check_dir(&sub),
            Err(Unusable::Refused(Refusal::Writable))
        ));
    }
}
