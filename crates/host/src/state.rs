//! What a host keeps on disk, and how it survives a crash.
//!
//! ```text
//! STATE/admin-token            the admin API's token, when Tern made it (0600)
//! STATE/apps/NAME/app.json     the app's record: current version, versions kept, host names
//! STATE/apps/NAME/vN/          version N as unpacked from its bundle
//! STATE/apps/NAME/data/        the app's embedded key-value stores, across versions
//! STATE/apps/NAME/variables.json  values of the app's variables, set through the admin API (0600)
//! ```
//!
//! A deploy unpacks into a version directory the record does not name yet,
//! and the record is replaced (written whole, synced, renamed over the old
//! one, the directory synced) only once the version has loaded: a deploy cut
//! short at any point leaves the previous record, and the next start
//! removes the directory it left.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Versions kept per app for rollback; older ones are removed.
const KEEP: usize = 5;

/// An app's record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    /// The version served.
    pub(crate) version: u32,
    /// The versions kept on disk, oldest first.
    pub(crate) versions: Vec<u32>,
    /// The host names its manifest claims (besides `NAME.DOMAIN`).
    pub(crate) hosts: Vec<String>,
    /// Whether the version served has Redis triggers, whose subscriptions
    /// the host makes when it starts (absent in records made before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) redis: bool,
}

impl Record {
    /// The number the next deploy gets.
    pub(crate) fn next_version(&self) -> u32 {
        self.versions.iter().max().map_or(1, |v| v + 1)
    }

    /// The version before the one served, if one is kept.
    pub(crate) fn previous(&self) -> Option<u32> {
        let at = self.versions.iter().position(|v| *v == self.version)?;
        at.checked_sub(1).map(|at| self.versions[at])
    }
}

/// Where a host's state lives.
#[derive(Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn apps(&self) -> PathBuf {
        self.root.join("apps")
    }

    pub(crate) fn app(&self, name: &str) -> PathBuf {
        self.apps().join(name)
    }

    pub(crate) fn version(&self, name: &str, version: u32) -> PathBuf {
        self.app(name).join(format!("v{version}"))
    }

    pub(crate) fn data(&self, name: &str) -> PathBuf {
        self.app(name).join("data")
    }

    fn record(&self, name: &str) -> PathBuf {
        self.app(name).join("app.json")
    }

    /// The record of `name`, as last written.
    pub(crate) fn read(&self, name: &str) -> io::Result<Record> {
        let bytes = fs::read(self.record(name))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    fn variables_file(&self, name: &str) -> PathBuf {
        self.app(name).join("variables.json")
    }

    /// The values of `name`'s variables, as last set; none when never set.
    pub(crate) fn variables(&self, name: &str) -> io::Result<BTreeMap<String, String>> {
        match fs::read(self.variables_file(name)) {
            // Where it is wrong, not what is there: the file holds secrets.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::other(format!(
                    "not a JSON object of names to strings (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    /// Makes `variables` the values of `name`'s variables, durably, in a
    /// file only the host's user can read.
    pub(crate) fn write_variables(
        &self,
        name: &str,
        variables: &BTreeMap<String, String>,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(variables).map_err(io::Error::other)?;
        fs::create_dir_all(self.app(name))?;
        self.persist(name, &self.variables_file(name), &bytes)
    }

    /// Every app's record, after removing what deploys cut short left
    /// behind, and the apps whose record cannot be read, each with why:
    /// those are left alone, whole. Reads one small file per app and
    /// loads nothing.
    pub(crate) fn open(&self) -> io::Result<(Vec<Named>, Vec<Named<String>>)> {
        fs::create_dir_all(self.apps())?;
        let mut apps = Vec::new();
        let mut unreadable = Vec::new();
        for entry in fs::read_dir(self.apps())? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let record = match self.read(&name) {
                Ok(record) => Some(record),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    // Not served, and nothing of it removed: an operator
                    // may mend the record and restart.
                    let why = format!("its record apps/{name}/app.json cannot be read ({e})");
                    unreadable.push((name, why));
                    continue;
                }
            };
            let kept = record.as_ref().map_or(&[][..], |r| &r.versions[..]);
            self.remove_versions_except(&name, kept)?;
            if let Some(record) = record {
                apps.push((name, record));
            }
        }
        apps.sort_by(|a, b| a.0.cmp(&b.0));
        unreadable.sort();
        Ok((apps, unreadable))
    }

    /// Removes the version directories of `name` other than `kept`, and
    /// leftover temporary files.
    pub(crate) fn remove_versions_except(&self, name: &str, kept: &[u32]) -> io::Result<()> {
        for entry in fs::read_dir(self.app(name))? {
            let entry = entry?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            let version = file.strip_prefix('v').and_then(|v| v.parse::<u32>().ok());
            let stale = match version {
                Some(v) => !kept.contains(&v),
                None => file.starts_with(".tmp"),
            };
            if stale {
                remove(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Makes `record` the app's, durably: once this returns, a crash
    /// leaves it in place.
    pub(crate) fn write(&self, name: &str, record: &Record) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        self.persist(name, &self.record(name), &bytes)
    }

    /// Replaces `file` of the app `name` with `bytes`: written whole to a
    /// temporary file beside it (mode 0600), synced, renamed over it, the
    /// directories synced.
    fn persist(&self, name: &str, file: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = self.app(name);
        let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(file).map_err(|e| e.error)?;
        fs::File::open(&dir)?.sync_all()?;
        // The app's own directory may be new (its first deploy).
        fs::File::open(self.apps())?.sync_all()
    }

    /// Keeps at most [`KEEP`] versions in `record`, dropping the oldest
    /// (never the one it serves); returns those dropped, whose directories
    /// go only once the record no longer names them
    /// ([`Layout::remove_versions_except`]).
    pub(crate) fn prune(record: &mut Record) -> Vec<u32> {
        let mut dropped = Vec::new();
        while record.versions.len() > KEEP && record.versions[0] != record.version {
            dropped.push(record.versions.remove(0));
        }
        dropped
    }

    /// Makes what was unpacked into `dir` durable before a record names
    /// it: every file and directory synced.
    pub(crate) fn sync_tree(dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                Layout::sync_tree(&entry.path())?;
            } else if kind.is_file() {
                fs::File::open(entry.path())?.sync_all()?;
            }
        }
        fs::File::open(dir)?.sync_all()
    }

    /// Forgets the app: its record and versions go; its data stays unless
    /// `purge`.
    pub(crate) fn delete(&self, name: &str, purge: bool) -> io::Result<()> {
        self.unrecord(name)?;
        if purge {
            remove(&self.app(name))?;
            // Durably gone: after a crash, the next deploy of the name
            // must not find the purged data and variables back.
            fs::File::open(self.apps())?.sync_all()
        } else {
            self.remove_versions_except(name, &[])
        }
    }
}

impl Layout {
    /// Removes `name`'s record, durably: after a crash the app is gone,
    /// though its files may not be yet.
    pub(crate) fn unrecord(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.record(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::File::open(self.app(name))?.sync_all()
    }
}

/// An app's name and its record (or something else of it).
pub(crate) type Named<T = Record> = (String, T);

/// Removes a file or a directory tree; one already gone is fine.
fn remove(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The admin token: read from `file`, or from `STATE/admin-token`, made
/// there (32 random bytes, hex, mode 0600) when missing. Returns the token
/// and the file it is in.
pub(crate) fn admin_token(root: &Path, file: Option<&Path>) -> io::Result<(String, PathBuf)> {
    let path = file.map_or_else(|| root.join("admin-token"), Path::to_owned);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the admin token file {} is empty", path.display()),
                ));
            }
            Ok((token, path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && file.is_none() => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(io::Error::other)?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            fs::create_dir_all(root)?;
            tern_runtime::write_private(&path, format!("{token}\n").as_bytes())?;
            Ok((token, path))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read the admin token file {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_keeps_what_records_name_and_removes_what_deploys_left() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_owned());
        layout.open().unwrap();
        for v in [1, 2, 3] {
            fs::create_dir_all(layout.version("shop", v)).unwrap();
        }
        fs::create_dir_all(layout.data("shop")).unwrap();
        let record = Record {
            version: 2,
            versions: vec![1, 2],
            hosts: vec!["shop.example.com".into()],
            redis: true,
        };
        layout.write("shop", &record).unwrap();
        // A deploy that never got its record: only data and a version.
        fs::create_dir_all(layout.version("gone", 1)).unwrap();
        fs::create_dir_all(layout.data("gone")).unwrap();

        // A record that cannot be read: that app alone is left out, whole.
        fs::create_dir_all(layout.version("torn", 1)).unwrap();
        fs::write(layout.record("torn"), b"{\"version\": 1,").unwrap();

        let (apps, unreadable) = layout.open().unwrap();
        assert_eq!(apps, [("shop".to_string(), record.clone())]);
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].0, "torn");
        assert!(
            unreadable[0]
                .1
                .starts_with("its record apps/torn/app.json cannot be read ("),
            "{unreadable:?}"
        );
        assert!(layout.version("torn", 1).exists());
        fs::remove_dir_all(layout.app("torn")).unwrap();
        assert!(layout.version("shop", 2).exists());
        assert!(!layout.version("shop", 3).exists(), "v3 was never recorded");
        assert!(!layout.version("gone", 1).exists());
        assert!(layout.data("gone").exists(), "data outlives its app");
        assert_eq!(record.previous(), Some(1));
        assert_eq!(record.next_version(), 3);

        assert!(layout.variables("shop").unwrap().is_empty());
        let variables = BTreeMap::from([("api_token".to_string(), "s3cret".to_string())]);
        layout.write_variables("shop", &variables).unwrap();
        assert_eq!(layout.variables("shop").unwrap(), variables);
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = fs::metadata(layout.variables_file("shop")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }

        layout.delete("shop", false).unwrap();
        assert!(layout.open().unwrap().0.is_empty());
        assert!(layout.data("shop").exists());
        assert_eq!(layout.variables("shop").unwrap(), variables, "kept too");
        layout.delete("shop", true).unwrap();
        assert!(!layout.app("shop").exists());
    }

    #[test]
    fn the_admin_token_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (token, path) = admin_token(dir.path(), None).unwrap();
        assert_eq!(token.len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(admin_token(dir.path(), None).unwrap().0, token);
        let missing = dir.path().join("nope");
        let error = admin_token(dir.path(), Some(&missing)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot read the admin token file")
        );
    }
}
