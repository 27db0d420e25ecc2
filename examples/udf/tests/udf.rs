//! `examples/udf` end to end, on a real SQLite file: plugins in Rust (an
//! Extism plug-in) and Python (a component) as SQL functions, a swap while
//! queries run, failures, and the `udf` command.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tern_example_udf::Udfs;
use tern_plugin::{CacheDir, PluginHost};
use test_programs::{UDF_SLUGIFY, UDF_SLUGIFY_V2, UDF_TITLECASE_PY};

/// The posts' titles, in rowid order: punctuation, runs of spaces,
/// non-ASCII letters, a `NULL`.
const TITLES: [Option<&str>; 5] = [
    Some("Hello, World!"),
    Some("  WebAssembly   plugins in SQL  "),
    Some("Crème brûlée: 3 ways"),
    None,
    Some("what's new? (v2.0)"),
];

/// `slugify` of each title: non-ASCII letters separate words as
/// punctuation does.
const SLUGS: [Option<&str>; 5] = [
    Some("hello-world"),
    Some("webassembly-plugins-in-sql"),
    Some("cr-me-br-l-e-3-ways"),
    None,
    Some("what-s-new-v2-0"),
];

/// `slugify` of each title, by the `v2` build.
const SLUGS_V2: [Option<&str>; 5] = [
    Some("hello_world"),
    Some("webassembly_plugins_in_sql"),
    Some("cr_me_br_l_e_3_ways"),
    None,
    Some("what_s_new_v2_0"),
];

/// `titlecase` of each title: Python's `str.capitalize` on each word.
const TITLECASED: [Option<&str>; 5] = [
    Some("Hello, World!"),
    Some("Webassembly Plugins In Sql"),
    Some("Crème Brûlée: 3 Ways"),
    None,
    Some("What's New? (v2.0)"),
];

/// `word_count` of each title.
const WORD_COUNTS: [Option<&str>; 5] = [Some("2"), Some("4"), Some("4"), None, Some("3")];

const SLUG_QUERY: &str = "SELECT slugify(title) FROM posts ORDER BY rowid";

/// Queries that must begin after the swap returned before the reader
/// stops.
const RUNS_AFTER_SWAP: usize = 20;

/// A bound on the reader's queries, should the swap never be seen.
const MAX_RUNS: usize = 100_000;

/// An SQLite file in `dir` with a `posts(title TEXT)` table of [`TITLES`].
fn posts_db(dir: &Path) -> PathBuf {
    let path = dir.join("posts.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE posts(title TEXT)")
        .unwrap();
    for title in TITLES {
        conn.execute("INSERT INTO posts(title) VALUES (?1)", [title])
            .unwrap();
    }
    path
}

fn udfs() -> Udfs {
    let host = PluginHost::builder()
        .max_instances(16)
        .cache(CacheDir::Off)
        .build()
        .unwrap();
    Udfs::with_host(host)
}

/// Every row of `sql`, each column as text or `None` for `NULL`.
fn rows(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Vec<Option<String>>>> {
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    let mut all = Vec::new();
    while let Some(row) = rows.next()? {
        all.push(
            (0..columns)
                .map(|i| row.get::<_, Option<String>>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(all)
}

/// The rows of these columns.
fn table(columns: &[[Option<&str>; 5]]) -> Vec<Vec<Option<String>>> {
    (0..TITLES.len())
        .map(|row| {
            columns
                .iter()
                .map(|column| column[row].map(str::to_owned))
                .collect()
        })
        .collect()
}

#[test]
fn plugins_in_rust_and_python_answer_as_sql_functions() {
    assert!(
        Path::new(UDF_TITLECASE_PY).exists(),
        "{UDF_TITLECASE_PY} was not built: componentize-py was not on PATH when test-programs was built (scripts/setup installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    let udfs = udfs();
    let slugify = udfs.load(UDF_SLUGIFY).unwrap();
    let titlecase = udfs.load(UDF_TITLECASE_PY).unwrap();
    let conn = Connection::open(&db).unwrap();
    udfs.register(&conn, "slugify", &slugify, "slugify")
        .unwrap();
    udfs.register(&conn, "titlecase", &titlecase, "titlecase")
        .unwrap();
    udfs.register(&conn, "word_count", &titlecase, "word-count")
        .unwrap();

    assert_eq!(
        rows(
            &conn,
            "SELECT slugify(title), titlecase(title) FROM posts ORDER BY rowid"
        )
        .unwrap(),
        table(&[SLUGS, TITLECASED])
    );
    assert_eq!(
        rows(&conn, "SELECT word_count(title) FROM posts ORDER BY rowid").unwrap(),
        table(&[WORD_COUNTS])
    );
    // Numbers are passed as their text.
    assert_eq!(
        rows(&conn, "SELECT slugify(2025), titlecase(1.5)").unwrap(),
        vec![vec![Some("2025".to_owned()), Some("1.5".to_owned())]]
    );
}

#[test]
fn a_swap_while_queries_run_changes_answers_between_calls_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    // A compile cache, warmed with the new version: the swap then takes
    // a few milliseconds, well inside the reader's bounded run.
    let host = PluginHost::builder()
        .max_instances(16)
        .cache(CacheDir::At(dir.path().join("cache")))
        .build()
        .unwrap();
    let udfs = Udfs::with_host(host);
    udfs.load(UDF_SLUGIFY_V2).unwrap();
    let slugify = udfs.load(UDF_SLUGIFY).unwrap();
    assert_eq!(slugify.version(), 1);

    let (started, first_query_done) = mpsc::channel();
    let reader = {
        let udfs = udfs.clone();
        let slugify = slugify.clone();
        thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            udfs.register(&conn, "slugify", &slugify, "slugify")
                .unwrap();
            let mut runs = Vec::new();
            let mut after_swap = 0;
            while after_swap < RUNS_AFTER_SWAP && runs.len() < MAX_RUNS {
                // Read before the query begins: a version above 1 means
                // the swap had returned.
                let version = slugify.version();
                let result = rows(&conn, SLUG_QUERY).map_err(|e| e.to_string());
                if runs.is_empty() {
                    started.send(()).unwrap();
                }
                if version > 1 {
                    after_swap += 1;
                }
                runs.push((version, result));
            }
            runs
        })
    };
    // Swapped while the reader is querying, not before it starts.
    first_query_done.recv().unwrap();
    slugify.swap(UDF_SLUGIFY_V2).unwrap();
    assert_eq!(slugify.version(), 2);
    let runs = reader.join().unwrap();

    let (old, new) = (table(&[SLUGS]), table(&[SLUGS_V2]));
    for (version, result) in &runs {
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => panic!("a query failed (plugin version {version} when it began): {e}"),
        };
        assert_eq!(answer.len(), TITLES.len());
        if *version > 1 {
            assert_eq!(answer, &new, "a query that began after the swap returned");
            continue;
        }
        // A query running across the swap may have rows of both
        // versions, each whole, the old ones first.
        let mut seen_new = false;
        for (i, row) in answer.iter().enumerate() {
            let (is_old, is_new) = (row == &old[i], row == &new[i]);
            assert!(
                is_old || is_new,
                "row {i} is of neither version: {answer:?}"
            );
            if is_new && !is_old {
                seen_new = true;
            }
            assert!(
                !(is_old && !is_new && seen_new),
                "row {i} is old after a new one: {answer:?}"
            );
        }
    }
    assert!(runs.iter().any(|(version, _)| *version == 1));
    assert_eq!(
        runs.iter().filter(|(version, _)| *version > 1).count(),
        RUNS_AFTER_SWAP,
        "the reader stopped after {} queries without seeing the swap",
        runs.len()
    );
}

#[test]
fn a_swap_that_fails_keeps_the_running_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    let not_wasm = dir.path().join("not.wasm");
    fs::write(&not_wasm, b"not wasm").unwrap();
    let udfs = udfs();
    let slugify = udfs.load(UDF_SLUGIFY).unwrap();
    let conn = Connection::open(&db).unwrap();
    udfs.register(&conn, "slugify", &slugify, "slugify")
        .unwrap();

    let error = slugify.swap(&not_wasm).unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("not a WebAssembly binary"), "{text}");
    assert_eq!(slugify.version(), 1);
    assert_eq!(rows(&conn, SLUG_QUERY).unwrap(), table(&[SLUGS]));
}

#[test]
fn a_failing_call_fails_the_query_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    let udfs = udfs();
    let slugify = udfs.load(UDF_SLUGIFY).unwrap();
    let conn = Connection::open(&db).unwrap();
    udfs.register(&conn, "missing", &slugify, "no_such_function")
        .unwrap();

    let error = rows(&conn, "SELECT missing(title) FROM posts ORDER BY rowid").unwrap_err();
    assert!(
        matches!(error, rusqlite::Error::SqliteFailure(_, Some(_))),
        "{error:?}"
    );
    let call = slugify.call("no_such_function", b"Hello").unwrap_err();
    assert_eq!(error.to_string(), call.message);
    assert!(call.message.contains("`no_such_function`"), "{call}");
    // NULL gives NULL without calling the plugin.
    assert_eq!(
        rows(&conn, "SELECT missing(NULL)").unwrap(),
        vec![vec![None]]
    );
}

/// The `udf` command, with its compile cache and signing key in `home`
/// rather than the user's.
fn udf(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_udf"));
    command
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"));
    command
}

#[test]
fn the_udf_command_prints_the_rows_tab_separated() {
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    let plugin = format!("slugify={UDF_SLUGIFY}:slugify");

    let output = udf(dir.path())
        .arg(&db)
        .args(["--plugin", plugin.as_str(), SLUG_QUERY])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "hello-world\nwebassembly-plugins-in-sql\ncr-me-br-l-e-3-ways\n\nwhat-s-new-v2-0\n"
    );

    // FUNCTION left out is NAME; NULL prints as nothing.
    let output = udf(dir.path())
        .arg(&db)
        .arg("--plugin")
        .arg(format!("slugify={UDF_SLUGIFY}"))
        .arg("SELECT rowid, slugify(title), title FROM posts WHERE rowid IN (1, 4) ORDER BY rowid")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "1\thello-world\tHello, World!\n4\t\t\n"
    );
}

#[test]
fn the_udf_command_reports_a_failing_call_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = posts_db(dir.path());
    let output = udf(dir.path())
        .arg(&db)
        .arg("--plugin")
        .arg(format!("missing={UDF_SLUGIFY}:no_such_function"))
        .arg("SELECT missing(title) FROM posts")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.starts_with("udf: error: running the SQL: ")
            && stderr.contains("`no_such_function`"),
        "{stderr}"
    );
}
