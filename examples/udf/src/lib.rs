//! User-defined SQL functions as WebAssembly plugins. [`Udfs`] loads
//! plugins through tern-plugin and registers their functions with SQLite
//! as scalar functions, so that `SELECT slugify(title) FROM posts` calls a
//! plugin once per row, each call on a fresh, sandboxed instance. Any
//! plugin that [`Plugin::call`] talks to in bytes will do: an Extism plugin,
//! or a component whose function takes a `string` and returns one.
//!
//! [`Plugin::swap`] replaces a plugin's code while queries run: a call
//! that has started finishes on the old code, and every call after the
//! swap returns runs the new.
//!
//! ```no_run
//! use tern_example_udf::Udfs;
//! let udfs = Udfs::new()?;
//! let slugify = udfs.load("slugify.wasm")?;
//! let conn = rusqlite::Connection::open("posts.sqlite")?;
//! udfs.register(&conn, "slugify", &slugify, "slugify")?;
//! let slug: String =
//!     conn.query_row("SELECT slugify('Hello, World!')", [], |row| row.get(0))?;
//! assert_eq!(slug, "hello-world");
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::borrow::Cow;
use std::path::Path;

use anyhow::Context as _;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Error};
use tern_plugin::{Plugin, PluginConfig, PluginHost};

/// Loads plugins and registers their functions with SQLite connections.
/// Cheap to clone.
#[derive(Clone)]
pub struct Udfs {
    host: PluginHost,
}

impl Udfs {
    /// With a plugin host of the default settings, which caches compiled
    /// plugins where `tern` caches its programs.
    ///
    /// ```no_run
    /// let udfs = tern_example_udf::Udfs::new()?;
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn new() -> anyhow::Result<Self> {
        let host = PluginHost::new()
            .map_err(plugin_error)
            .context("starting the plugin host")?;
        Ok(Udfs::with_host(host))
    }

    /// With the plugin host `host`.
    ///
    /// ```no_run
    /// use tern_plugin::{CacheDir, PluginHost};
    /// let host = PluginHost::builder().cache(CacheDir::Off).build()?;
    /// let udfs = tern_example_udf::Udfs::with_host(host);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_host(host: PluginHost) -> Self {
        Udfs { host }
    }

    /// The plugin host.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Loads the plugin in `path`. It is granted nothing (no files, no
    /// network, no environment) and runs under tern-plugin's default
    /// limits: a function that loops forever fails its query after the
    /// timeout instead of hanging it.
    ///
    /// ```no_run
    /// let udfs = tern_example_udf::Udfs::new()?;
    /// let slugify = udfs.load("slugify.wasm")?;
    /// assert!(slugify.functions().contains(&"slugify".to_owned()));
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn load(&self, path: impl AsRef<Path>) -> anyhow::Result<Plugin> {
        let path = path.as_ref();
        self.host
            .load(path, PluginConfig::default())
            .map_err(plugin_error)
            .with_context(|| format!("loading plugin {}", path.display()))
    }

    /// Makes `sql_name(x)` a scalar function of `conn` that calls
    /// `function` of `plugin` with `x` and answers with its output, as
    /// text. Text and blobs are passed as their bytes, numbers as their
    /// decimal text; `NULL` gives `NULL` without a call. A call that fails
    /// fails the query, with the call's error as the query's error message.
    ///
    /// ```no_run
    /// # let udfs = tern_example_udf::Udfs::new()?;
    /// # let conn = rusqlite::Connection::open_in_memory()?;
    /// let titlecase = udfs.load("titlecase.wasm")?;
    /// // A component's function named in kebab case, as in its WIT.
    /// udfs.register(&conn, "word_count", &titlecase, "word-count")?;
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn register(
        &self,
        conn: &Connection,
        sql_name: &str,
        plugin: &Plugin,
        function: &str,
    ) -> rusqlite::Result<()> {
        let plugin = plugin.clone();
        let function = function.to_owned();
        // Not SQLITE_DETERMINISTIC, though a version of a plugin answers
        // alike for alike: a swap changes the answers, so SQLite must not
        // reuse one it had before (in an index, or within a statement).
        conn.create_scalar_function(sql_name, 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
            let input: Cow<[u8]> = match ctx.get_raw(0) {
                ValueRef::Null => return Ok(None),
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Cow::Borrowed(bytes),
                ValueRef::Integer(n) => Cow::Owned(n.to_string().into_bytes()),
                ValueRef::Real(x) => Cow::Owned(x.to_string().into_bytes()),
            };
            let (output, _report) = plugin
                .call(&function, &input)
                .map_err(|e| Error::UserFunctionError(Box::new(e)))?;
            String::from_utf8(output).map(Some).map_err(|_| {
                Error::UserFunctionError(
                    format!("`{function}` answered with bytes that are not UTF-8").into(),
                )
            })
        })
    }
}

/// tern-plugin's errors are wasmtime's, which become anyhow's through a
/// box (wasmtime's `anyhow` feature is not on in this workspace).
fn plugin_error(e: tern_plugin::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}
