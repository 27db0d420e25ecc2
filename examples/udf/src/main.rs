//! `udf`: runs one SQL statement on an SQLite database, with WebAssembly
//! plugins as SQL functions, and prints the rows it gives, their columns
//! separated by tabs (`NULL` as nothing, as `sqlite3` does). With
//! `--watch` it runs the statement every second until interrupted, swaps
//! in a plugin whose file changed, and prints the rows again when they
//! change.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tern_example_udf::Udfs;
use tern_plugin::Plugin;

/// How often `--watch` looks at the plugin files and runs the SQL.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Run SQL on an SQLite database with WebAssembly plugins as its functions.
#[derive(Parser)]
#[command(name = "udf")]
struct Args {
    /// The SQLite database; created if it does not exist
    #[arg(value_name = "DB")]
    db: PathBuf,
    /// An SQL function of one argument that calls a plugin's function;
    /// FUNCTION is NAME when left out
    #[arg(long = "plugin", value_name = "NAME=PLUGIN.wasm[:FUNCTION]", value_parser = parse_plugin)]
    plugins: Vec<FunctionArg>,
    /// Run the SQL every second until interrupted, swapping in each plugin
    /// whose file changes, and print the rows whenever they change
    #[arg(long)]
    watch: bool,
    /// One SQL statement
    sql: String,
}

/// One `--plugin`: the SQL function `name`, calling `function` of the
/// plugin in `path`.
#[derive(Clone, Debug)]
struct FunctionArg {
    name: String,
    path: PathBuf,
    function: String,
}

fn parse_plugin(arg: &str) -> Result<FunctionArg, String> {
    let Some((name, rest)) = arg.split_once('=') else {
        return Err("expected NAME=PLUGIN.wasm[:FUNCTION]".into());
    };
    if name.is_empty() {
        return Err("the SQL function's name is empty".into());
    }
    // A function name holds no `:`; a path may.
    let (path, function) = match rest.rsplit_once(':') {
        Some((path, function)) if !function.is_empty() => (path, function),
        _ => (rest, name),
    };
    if path.is_empty() {
        return Err("the plugin's path is empty".into());
    }
    Ok(FunctionArg {
        name: name.to_owned(),
        path: PathBuf::from(path),
        function: function.to_owned(),
    })
}

/// A plugin file, loaded once however many functions it gives, and the
/// modification time it was loaded (or last swapped) at.
struct Loaded {
    path: PathBuf,
    plugin: Plugin,
    modified: Option<SystemTime>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udf: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let udfs = Udfs::new()?;
    let conn = Connection::open(&args.db)
        .with_context(|| format!("opening the database {}", args.db.display()))?;
    let mut loaded: Vec<Loaded> = Vec::new();
    for arg in &args.plugins {
        let index = match loaded.iter().position(|l| l.path == arg.path) {
            Some(index) => index,
            None => {
                let modified = modified(&arg.path);
                let plugin = udfs.load(&arg.path)?;
                loaded.push(Loaded {
                    path: arg.path.clone(),
                    plugin,
                    modified,
                });
                loaded.len() - 1
            }
        };
        udfs.register(&conn, &arg.name, &loaded[index].plugin, &arg.function)
            .with_context(|| format!("registering the SQL function {}", arg.name))?;
    }
    if args.watch {
        watch(&conn, &args.sql, &mut loaded)
    } else {
        print(&query(&conn, &args.sql)?)?;
        Ok(())
    }
}

/// Runs `sql` every [`WATCH_INTERVAL`], first swapping in the plugins
/// whose files changed; prints the rows (or the error) when they differ
/// from the last run's. Returns only if printing fails.
fn watch(conn: &Connection, sql: &str, loaded: &mut [Loaded]) -> anyhow::Result<()> {
    let mut last: Option<Result<Vec<String>, String>> = None;
    loop {
        for entry in loaded.iter_mut() {
            let modified = modified(&entry.path);
            if modified == entry.modified {
                continue;
            }
            // Once per change, whatever comes of it: a file half written
            // is refused now and swapped in when its writer is done and
            // its time changes again.
            entry.modified = modified;
            match entry.plugin.swap(&entry.path) {
                Ok(()) => eprintln!(
                    "udf: swapped in {} (version {})",
                    entry.path.display(),
                    entry.plugin.version()
                ),
                Err(e) => eprintln!(
                    "udf: kept the running version of {}: {e:#}",
                    entry.path.display()
                ),
            }
        }
        let result = query(conn, sql).map_err(|e| format!("{e:#}"));
        if last.as_ref() != Some(&result) {
            if last.is_some() {
                println!();
            }
            match &result {
                Ok(rows) => print(rows)?,
                Err(e) => eprintln!("udf: error: {e}"),
            }
            last = Some(result);
        }
        thread::sleep(WATCH_INTERVAL);
    }
}

/// The rows `sql` gives, each as its columns separated by tabs.
fn query(conn: &Connection, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut statement = conn.prepare(sql).context("preparing the SQL")?;
    let columns = statement.column_count();
    let mut rows = statement.query([]).context("running the SQL")?;
    let mut lines = Vec::new();
    while let Some(row) = rows.next().context("running the SQL")? {
        let mut fields = Vec::with_capacity(columns);
        for i in 0..columns {
            fields.push(show(row.get_ref(i)?));
        }
        lines.push(fields.join("\t"));
    }
    Ok(lines)
}

fn show(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

fn print(lines: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}
