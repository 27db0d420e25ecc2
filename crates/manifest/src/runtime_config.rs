//! The runtime config (`tern serve --runtime-config FILE`): the operator's
//! choices, kept out of the app's manifest. Which backend each key-value
//! store uses, values for app variables, whether the app may reach
//! outside its directory, and certificate authorities that outbound HTTPS
//! trusts besides the public ones.
//!
//! ```toml
//! allow_outside_app_dir = false      # the default; see `LoadOptions`
//!
//! [key_value_store.default]
//! type = "sqlite"                    # the default for every declared store
//! path = "kv/default.sqlite"         # relative to the state directory
//! max_store_size = "1GiB"            # keys and values (not for redis)
//! max_batch_keys = 1000              # keys per get-many/set-many/delete-many
//! max_batch_size = "16MiB"           # bytes one batch may carry or return
//!
//! [key_value_store.cache]
//! type = "redis"
//! url = "redis://127.0.0.1:6379/0"
//! timeout = "2s"                     # connecting, and each command
//!
//! [variables]
//! api_token = "..."
//!
//! [outbound]
//! ca_file = "internal-ca.pem"        # relative to this file's directory
//! ```
//!
//! Errors name the file, line and key, like the manifest's. A Redis URL
//! may carry a password, so no message ever quotes one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::Source;
use crate::resolve::is_valid_store_name;
use crate::{ByteSize, HumanDuration, ManifestError};

/// A checked runtime config. Its `Debug` shows variable names, never
/// their values.
#[derive(Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    /// `[key_value_store.NAME]` tables, by store name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// `[variables]`: values for app variables, by name.
    pub variables: BTreeMap<String, String>,
    /// `allow_outside_app_dir = true`: a component's `source` and `files`
    /// may lead outside the app directory (see
    /// [`LoadOptions::allow_outside_app_dir`](crate::LoadOptions::allow_outside_app_dir)).
    pub allow_outside_app_dir: bool,
    /// `[outbound] ca_file`: PEM certificates of authorities that outbound
    /// HTTPS trusts besides the web PKI roots (an internal CA, say), joined
    /// to the runtime config's directory.
    pub outbound_ca_file: Option<PathBuf>,
    /// Environment variables every component gets, over its own
    /// `environment` (`tern serve -e KEY=VALUE`; not read from the file).
    pub environment: BTreeMap<String, String>,
    /// `[sqlite_database.NAME]` tables (Spin's runtime config): where each
    /// SQL database's file is, relative to the state directory.
    pub databases: BTreeMap<String, PathBuf>,
}

/// One `[key_value_store.NAME]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Where the data lives.
    pub backend: StoreBackend,
    /// Longest key; `None` for the default.
    pub max_key_size: Option<ByteSize>,
    /// Largest value; `None` for the default.
    pub max_value_size: Option<ByteSize>,
    /// Most keys in one batch; `None` for the default.
    pub max_batch_keys: Option<u32>,
    /// Most bytes one batch may carry or return; `None` for the default.
    pub max_batch_size: Option<ByteSize>,
    /// Most bytes of keys and values the store may hold; `None` for the
    /// default. Never set for a Redis store, which cannot enforce it.
    pub max_store_size: Option<ByteSize>,
}

impl StoreConfig {
    /// `backend` with every limit at its default.
    pub fn new(backend: StoreBackend) -> Self {
        StoreConfig {
            backend,
            max_key_size: None,
            max_value_size: None,
            max_batch_keys: None,
            max_batch_size: None,
            max_store_size: None,
        }
    }
}

/// A store's backend. Its `Debug` never shows a Redis URL.
#[derive(Clone, PartialEq)]
pub enum StoreBackend {
    /// An SQLite file; `None` for `kv/NAME.sqlite`. Relative paths are
    /// relative to the state directory.
    Sqlite {
        /// The file, as written.
        path: Option<PathBuf>,
    },
    /// A Redis database.
    Redis {
        /// `redis://...`; may hold a password, so never print it.
        url: String,
        /// Bound on connecting and on each command; `None` for the default.
        timeout: Option<Duration>,
    },
    /// This process's memory.
    Memory,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("stores", &self.stores)
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("allow_outside_app_dir", &self.allow_outside_app_dir)
            .field("outbound_ca_file", &self.outbound_ca_file)
            .finish()
    }
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreBackend::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreBackend::Redis { timeout, .. } => f
                .debug_struct("Redis")
                .field("url", &"<redacted>")
                .field("timeout", timeout)
                .finish(),
            StoreBackend::Memory => f.write_str("Memory"),
        }
    }
}

impl RuntimeConfig {
    /// The backend for a store nobody configured: its SQLite file.
    pub fn store(&self, name: &str) -> StoreConfig {
        self.stores
            .get(name)
            .cloned()
            .unwrap_or_else(|| StoreConfig::new(StoreBackend::Sqlite { path: None }))
    }

    /// What this runtime config sets that `manifest` never uses, one line
    /// each, for the CLI to print as a warning: a `[key_value_store.NAME]`
    /// that no component declares in `key_value_stores` (a typo would
    /// otherwise send the data to the default SQLite store instead of the
    /// backend configured for it), and a `[variables]` entry the app does
    /// not declare. Each names what is declared. Never a value.
    ///
    /// ```
    /// # use std::path::Path;
    /// let rc = "[key_value_store.cahce]\ntype = \"memory\"\n";
    /// let rc = tern_manifest::runtime_config::parse(rc, Path::new("rc.toml")).unwrap();
    /// let app = "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/\"\n\
    ///            component = \"a\"\n[component.a]\nsource = \"Cargo.toml\"\n\
    ///            key_value_stores = [\"default\", \"cache\"]\n";
    /// let app = tern_manifest::parse(app, Path::new("tern.toml")).unwrap();
    /// assert_eq!(
    ///     rc.unused_by(&app),
    ///     ["the runtime config sets key_value_store.cahce, which no component declares; declared: cache, default"]
    /// );
    /// ```
    pub fn unused_by(&self, manifest: &crate::Manifest) -> Vec<String> {
        let mut unused = Vec::new();
        let mut stores = manifest.key_value_stores();
        stores.sort_unstable();
        let declared_stores = if stores.is_empty() {
            "no component declares a store".to_owned()
        } else {
            format!("declared: {}", stores.join(", "))
        };
        for name in self.stores.keys() {
            if !stores.contains(&name.as_str()) {
                unused.push(format!(
                    "the runtime config sets key_value_store.{name}, which no component declares; {declared_stores}"
                ));
            }
        }
        let variables: Vec<&str> = manifest.variables.keys().map(String::as_str).collect();
        let declared_variables = if variables.is_empty() {
            "the app declares no variables".to_owned()
        } else {
            format!("declared: {}", variables.join(", "))
        };
        for name in self.variables.keys() {
            if !manifest.variables.contains_key(name) {
                unused.push(format!(
                    "the runtime config sets variables.{}, which the app does not declare; {declared_variables}",
                    toml_key(name)
                ));
            }
        }
        unused
    }
}

/// `name` as a TOML key: bare when it can be, else quoted and escaped, so
/// a name chosen by whoever wrote the file prints on one line.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("\"{}\"", name.escape_debug())
    }
}

impl StoreBackend {
    /// Where an SQLite store's file is, given the state directory.
    pub fn sqlite_path(path: Option<&Path>, state_dir: &Path, store: &str) -> PathBuf {
        match path {
            Some(path) => state_dir.join(path),
            None => state_dir.join("kv").join(format!("{store}.sqlite")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRuntimeConfig {
    #[serde(default)]
    allow_outside_app_dir: bool,
    #[serde(default)]
    key_value_store: BTreeMap<Spanned<String>, RawStore>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    outbound: RawOutbound,
    #[serde(default)]
    sqlite_database: BTreeMap<Spanned<String>, RawDatabase>,
}

/// A `[sqlite_database.NAME]` table, as Spin's runtime config writes it.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ type = \"spin\", path = \"data/app.db\" }`"
)]
struct RawDatabase {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    path: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ ca_file = \"ca.pem\" }`"
)]
struct RawOutbound {
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ type = \"sqlite\" }`"
)]
struct RawStore {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    timeout: Option<HumanDuration>,
    max_key_size: Option<ByteSize>,
    max_value_size: Option<ByteSize>,
    max_batch_keys: Option<Spanned<u32>>,
    max_batch_size: Option<ByteSize>,
    max_store_size: Option<Spanned<ByteSize>>,
}

/// Reads and checks the runtime config at `path`.
pub fn load(path: &Path) -> Result<RuntimeConfig, ManifestError> {
    let text = fs::read_to_string(path).map_err(|error| ManifestError::ReadRuntimeConfig {
        path: path.to_owned(),
        error,
    })?;
    parse(&text, path)
}

/// Checks runtime config `text` read from `path`.
///
/// ```
/// # use std::path::Path;
/// let text = "[key_value_store.cache]\ntype = \"redis\"\n";
/// let error = tern_manifest::runtime_config::parse(text, Path::new("rc.toml")).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "rc.toml:2:1: key_value_store.cache: a redis store needs `url = \"redis://HOST:PORT/DB\"`"
/// );
/// ```
pub fn parse(text: &str, path: &Path) -> Result<RuntimeConfig, ManifestError> {
    let source = Source { path, text };
    let raw: RawRuntimeConfig = toml::from_str(text).map_err(|error| {
        // The parser quotes offending values; here they may be secrets.
        match ManifestError::from_toml(path, text, &error) {
            ManifestError::Toml {
                path,
                location,
                message,
            } => ManifestError::Toml {
                path,
                location,
                message: redact_values(&message),
            },
            other => other,
        }
    })?;
    let mut stores = BTreeMap::new();
    for (name, store) in raw.key_value_store {
        let key = format!("key_value_store.{}", name.get_ref());
        if !is_valid_store_name(name.get_ref()) {
            let message = "invalid store name; use lowercase letters, digits, `-` and `_`, starting with a letter";
            return Err(source.invalid(Some(source.at(&name.span())), key, message));
        }
        let at = Some(source.key_at(&store.kind.span()));
        let misplaced = |field: &str, kind: &str| {
            source.invalid(
                at,
                &key,
                format!("`{field}` does not apply to a {kind} store"),
            )
        };
        let backend = match store.kind.get_ref().as_str() {
            // Spin's name for its default, SQLite-backed store.
            "sqlite" | "spin" => {
                if store.url.is_some() {
                    return Err(misplaced("url", "sqlite"));
                }
                StoreBackend::Sqlite {
                    path: store.path.map(|p| PathBuf::from(p.into_inner())),
                }
            }
            "redis" => {
                if store.path.is_some() {
                    return Err(misplaced("path", "redis"));
                }
                if let Some(max) = &store.max_store_size {
                    let at = Some(source.key_at(&max.span()));
                    let message = "does not apply to a redis store: Tern cannot count a Redis store's bytes (bound it with Redis's `maxmemory`)";
                    return Err(source.invalid(at, format!("{key}.max_store_size"), message));
                }
                let Some(url) = store.url else {
                    let message = "a redis store needs `url = \"redis://HOST:PORT/DB\"`";
                    return Err(source.invalid(at, key, message));
                };
                let scheme_ok = ["redis://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|s| url.get_ref().starts_with(s));
                if !scheme_ok {
                    let at = Some(source.key_at(&url.span()));
                    let message = "`url` must start with redis:// or redis+unix:// (TLS to Redis is not supported yet)";
                    return Err(source.invalid(at, format!("{key}.url"), message));
                }
                StoreBackend::Redis {
                    url: url.into_inner(),
                    timeout: store.timeout.map(|t| t.0),
                }
            }
            "memory" => {
                if let Some(field) = [("path", store.path.is_some()), ("url", store.url.is_some())]
                    .iter()
                    .find_map(|(f, set)| set.then_some(*f))
                {
                    return Err(misplaced(field, "memory"));
                }
                StoreBackend::Memory
            }
            other => {
                let message = format!(
                    "unknown store type \"{}\"; use \"sqlite\" (Spin's \"spin\"), \"redis\" or \"memory\"",
                    other.escape_debug()
                );
                return Err(source.invalid(at, format!("{key}.type"), message));
            }
        };
        if let Some(max) = &store.max_batch_keys
            && *max.get_ref() == 0
        {
            let at = Some(source.key_at(&max.span()));
            let key = format!("{key}.max_batch_keys");
            return Err(source.invalid(at, key, "must be at least 1"));
        }
        stores.insert(
            name.into_inner(),
            StoreConfig {
                backend,
                max_key_size: store.max_key_size,
                max_value_size: store.max_value_size,
                max_batch_keys: store.max_batch_keys.map(Spanned::into_inner),
                max_batch_size: store.max_batch_size,
                max_store_size: store.max_store_size.map(Spanned::into_inner),
            },
        );
    }
    let outbound_ca_file = match raw.outbound.ca_file {
        Some(file) => {
            let at = Some(source.key_at(&file.span()));
            let joined = path.parent().map_or_else(
                || PathBuf::from(file.get_ref()),
                |dir| dir.join(file.get_ref()),
            );
            if !joined.is_file() {
                let message = format!("file not found: {}", joined.display());
                return Err(source.invalid(at, "outbound.ca_file", message));
            }
            Some(joined)
        }
        None => None,
    };
    let mut databases = BTreeMap::new();
    for (name, database) in raw.sqlite_database {
        let key = format!("sqlite_database.{}", name.get_ref());
        if !is_valid_store_name(name.get_ref()) {
            let message = "invalid database name; use lowercase letters, digits, `-` and `_`, starting with a letter";
            return Err(source.invalid(Some(source.at(&name.span())), key, message));
        }
        if database.kind.get_ref() != "spin" {
            let at = Some(source.key_at(&database.kind.span()));
            let message = format!(
                "unknown database type \"{}\"; Tern's SQL databases are SQLite files: use \"spin\"",
                database.kind.get_ref().escape_debug()
            );
            return Err(source.invalid(at, format!("{key}.type"), message));
        }
        if let Some(path) = database.path {
            databases.insert(name.into_inner(), PathBuf::from(path));
        }
    }
    Ok(RuntimeConfig {
        stores,
        variables: raw.variables,
        allow_outside_app_dir: raw.allow_outside_app_dir,
        outbound_ca_file,
        environment: BTreeMap::new(),
        databases,
    })
}

/// `invalid type: string "redis://:pw@host", expected ...` without the value.
fn redact_values(message: &str) -> String {
    for prefix in ["invalid type", "invalid value", "invalid length"] {
        if message.starts_with(prefix) {
            let expected = message.find(", expected").map_or("", |at| &message[at..]);
            return format!("{prefix} (value not shown){expected}");
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_not_repeated_in_errors() {
        for text in [
            "[key_value_store]\ncache = \"redis://:hunter2@host\"\n",
            "[variables]\ntoken = 123456789\n",
        ] {
            let error = parse(text, Path::new("rc.toml")).unwrap_err().to_string();
            assert!(
                !error.contains("hunter2") && !error.contains("123456789"),
                "{error}"
            );
            assert!(error.contains("(value not shown)"), "{error}");
        }
    }

    #[test]
    fn store_limits() {
        let text = "[key_value_store.default]\ntype = \"sqlite\"\nmax_store_size = \"64MiB\"\nmax_batch_keys = 100\nmax_batch_size = \"4MiB\"\n";
        let config = parse(text, Path::new("rc.toml")).unwrap();
        let store = config.store("default");
        assert_eq!(store.max_store_size, Some(ByteSize(64 << 20)));
        assert_eq!(store.max_batch_keys, Some(100));
        assert_eq!(store.max_batch_size, Some(ByteSize(4 << 20)));
        let unset = config.store("other");
        assert_eq!(unset, StoreConfig::new(StoreBackend::Sqlite { path: None }));
    }

    #[test]
    fn store_limit_errors() {
        for (text, expected) in [
            (
                "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://h/0\"\nmax_store_size = \"1GiB\"\n",
                "rc.toml:4:1: key_value_store.cache.max_store_size: does not apply to a redis store: Tern cannot count a Redis store's bytes (bound it with Redis's `maxmemory`)",
            ),
            (
                "[key_value_store.default]\ntype = \"memory\"\nmax_batch_keys = 0\n",
                "rc.toml:3:1: key_value_store.default.max_batch_keys: must be at least 1",
            ),
        ] {
            let error = parse(text, Path::new("rc.toml")).unwrap_err().to_string();
            assert_eq!(error, expected);
        }
    }

    #[test]
    fn the_operator_may_allow_reaching_outside_the_app_directory() {
        let rc = Path::new("rc.toml");
        assert!(!parse("", rc).unwrap().allow_outside_app_dir);
        let config = parse("allow_outside_app_dir = true\n[variables]\nk = \"v\"\n", rc).unwrap();
        assert!(config.allow_outside_app_dir);
        let error = parse("allow_outside_app_dir = \"yes\"\n", rc).unwrap_err();
        let error = error.to_string();
        assert!(
            error.starts_with("rc.toml:") && error.contains("boolean"),
            "{error}"
        );
    }

    #[test]
    fn the_outbound_ca_file_is_found_beside_the_runtime_config() {
        let dir = std::env::temp_dir().join(format!("tern-rc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not checked here").unwrap();
        let rc = dir.join("rc.toml");
        let config = parse("[outbound]\nca_file = \"ca.pem\"\n", &rc).unwrap();
        assert_eq!(config.outbound_ca_file, Some(dir.join("ca.pem")));
        let error = parse("[outbound]\nca_file = \"nope.pem\"\n", &rc)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "{}:2:1: outbound.ca_file: file not found: {}",
                rc.display(),
                dir.join("nope.pem").display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_named_as_the_runtime_config() {
        let error = load(Path::new("no/such/rc.toml")).unwrap_err().to_string();
        assert!(
            error.starts_with("reading runtime config no/such/rc.toml: "),
            "{error}"
        );
        assert!(!error.contains("manifest"), "{error}");
    }

    #[test]
    fn stores_and_variables_the_app_does_not_declare_are_named() {
        let app = "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/\"\n\
                   component = \"a\"\n[component.a]\nsource = \"Cargo.toml\"\n\
                   key_value_stores = [\"default\", \"cache\"]\n\
                   [variables]\napi_token = { required = true }\n";
        let app = crate::parse(app, Path::new("tern.toml")).unwrap();
        let rc = "[key_value_store.cache]\ntype = \"memory\"\n\
                  [key_value_store.cahce]\ntype = \"memory\"\n\
                  [variables]\napi_token = \"s3cret\"\napi_tokne = \"s3cret\"\n\"a b\" = \"s3cret\"\n";
        let rc = parse(rc, Path::new("rc.toml")).unwrap();
        assert_eq!(
            rc.unused_by(&app),
            [
                "the runtime config sets key_value_store.cahce, which no component declares; declared: cache, default",
                "the runtime config sets variables.\"a b\", which the app does not declare; declared: api_token",
                "the runtime config sets variables.api_tokne, which the app does not declare; declared: api_token",
            ]
        );
        // Everything used: nothing to say.
        let used = parse(
            "[key_value_store.default]\ntype = \"memory\"\n",
            Path::new("rc.toml"),
        );
        assert!(used.unwrap().unused_by(&app).is_empty());
        // An app that declares nothing says so.
        let bare = "manifest_version = 1\n[app]\nname = \"a\"\n[[route]]\npath = \"/\"\n\
                    component = \"a\"\n[component.a]\nsource = \"Cargo.toml\"\n";
        let bare = crate::parse(bare, Path::new("tern.toml")).unwrap();
        assert_eq!(
            rc.unused_by(&bare),
            [
                "the runtime config sets key_value_store.cache, which no component declares; no component declares a store",
                "the runtime config sets key_value_store.cahce, which no component declares; no component declares a store",
                "the runtime config sets variables.\"a b\", which the app does not declare; the app declares no variables",
                "the runtime config sets variables.api_token, which the app does not declare; the app declares no variables",
                "the runtime config sets variables.api_tokne, which the app does not declare; the app declares no variables",
            ]
        );
    }

    #[test]
    fn spin_runtime_config_types_are_read() {
        let text = "[key_value_store.default]\ntype = \"spin\"\n\
                    [sqlite_database.default]\ntype = \"spin\"\npath = \"db/app.db\"\n";
        let rc = parse(text, Path::new("rc.toml")).unwrap();
        assert_eq!(
            rc.stores["default"].backend,
            StoreBackend::Sqlite { path: None }
        );
        assert_eq!(rc.databases["default"], PathBuf::from("db/app.db"));
        let text = "[sqlite_database.default]\ntype = \"libsql\"\n";
        let error = parse(text, Path::new("rc.toml")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "rc.toml:2:1: sqlite_database.default.type: unknown database type \"libsql\"; Tern's SQL databases are SQLite files: use \"spin\""
        );
    }

    #[test]
    fn debug_hides_urls_and_values() {
        let text = "[key_value_store.c]\ntype = \"redis\"\nurl = \"redis://:hunter2@h\"\n[variables]\nk = \"s3cret\"\n";
        let shown = format!("{:?}", parse(text, Path::new("rc.toml")).unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
