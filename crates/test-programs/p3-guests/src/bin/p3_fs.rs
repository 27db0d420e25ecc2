//! Works on a preopened directory through `wasi:filesystem`, picking the
//! preopen by its guest path (DIR):
//!
//! - `read DIR FILE`: prints the file's contents.
//! - `write DIR FILE TEXT`: creates or truncates the file, writes TEXT,
//!   prints `ok`.
//! - `list DIR`: the entries' names, sorted, one per line.
//! - `symlink DIR TARGET LINK`: creates LINK pointing at TARGET
//!   (`symlink-at`), prints `ok`.
//! - `escape DIR PATH`: tries to open PATH (`../secret`, `/etc/passwd`, a
//!   symlink leading out...) for reading, following symlinks; prints
//!   `denied: CODE` if the open is refused, else `read: CONTENTS`.
//!
//! Any other failure prints `error: CODE` and exits with code 2, CODE being
//! the `Debug` of `wasi:filesystem`'s `error-code` (e.g.
//! `ErrorCode::NotPermitted`); so do an unknown preopen and bad usage, with
//! a message instead of a code.
use wasip3::filesystem::preopens;
use wasip3::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use wasip3::wit_stream;

/// The exit code of every failure.
const FAILED: u8 = 2;

struct Fs;

impl wasip3::exports::cli::run::Guest for Fs {
    async fn run() -> Result<(), ()> {
        let args = tern_p3_guests::args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(dir_name) = args.get(1) else {
            return usage().await;
        };
        let Some(dir) = preopen(dir_name) else {
            return tern_p3_guests::fail(&format!("error: no preopen {dir_name:?}"), FAILED).await;
        };
        let result = match args[..] {
            ["read", _, file] => read(&dir, file).await,
            ["write", _, file, text] => write(&dir, file, text).await.map(|()| b"ok\n".to_vec()),
            ["list", _] => list(&dir).await,
            ["symlink", _, target, link] => dir
                .symlink_at(target.to_owned(), link.to_owned())
                .await
                .map(|()| b"ok\n".to_vec()),
            ["escape", _, path] => {
                let flags = DescriptorFlags::READ;
                match dir
                    .open_at(
                        PathFlags::SYMLINK_FOLLOW,
                        path.to_owned(),
                        OpenFlags::empty(),
                        flags,
                    )
                    .await
                {
                    Err(code) => Ok(format!("denied: {code:?}\n").into_bytes()),
                    Ok(file) => read_all(&file).await.map(|contents| {
                        let mut out = b"read: ".to_vec();
                        out.extend_from_slice(&contents);
                        out
                    }),
                }
            }
            _ => return usage().await,
        };
        match result {
            Ok(out) => {
                tern_p3_guests::print(out).await;
                Ok(())
            }
            Err(code) => tern_p3_guests::fail(&format!("error: {code:?}"), FAILED).await,
        }
    }
}

/// Prints how to call this program and exits.
async fn usage<T>() -> T {
    tern_p3_guests::fail(
        "usage: p3_fs read DIR FILE | write DIR FILE TEXT | list DIR \
         | symlink DIR TARGET LINK | escape DIR PATH",
        FAILED,
    )
    .await
}

/// The preopened directory whose guest path is `name`.
fn preopen(name: &str) -> Option<Descriptor> {
    preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == name)
        .map(|(dir, _)| dir)
}

/// The contents of `file` in `dir`, following symlinks.
async fn read(dir: &Descriptor, file: &str) -> Result<Vec<u8>, ErrorCode> {
    let flags = DescriptorFlags::READ;
    let file = dir
        .open_at(
            PathFlags::SYMLINK_FOLLOW,
            file.to_owned(),
            OpenFlags::empty(),
            flags,
        )
        .await?;
    read_all(&file).await
}

/// Everything in the open `file`, from its start.
async fn read_all(file: &Descriptor) -> Result<Vec<u8>, ErrorCode> {
    let (contents, done) = file.read_via_stream(0);
    let contents = contents.collect().await;
    done.await?;
    Ok(contents)
}

/// Creates or truncates `file` in `dir`, and writes `text` into it.
async fn write(dir: &Descriptor, file: &str, text: &str) -> Result<(), ErrorCode> {
    let file = dir
        .open_at(
            PathFlags::empty(),
            file.to_owned(),
            OpenFlags::CREATE | OpenFlags::TRUNCATE,
            DescriptorFlags::WRITE,
        )
        .await?;
    let (mut tx, rx) = wit_stream::new();
    let done = file.write_via_stream(rx, 0);
    let _unwritten = tx.write_all(text.as_bytes().to_vec()).await;
    // The host reports the outcome once the stream is closed.
    drop(tx);
    done.await
}

/// The names in `dir`, sorted, one per line.
async fn list(dir: &Descriptor) -> Result<Vec<u8>, ErrorCode> {
    let (entries, done) = dir.read_directory();
    let entries = entries.collect().await;
    done.await?;
    let mut names: Vec<String> = entries.into_iter().map(|entry| entry.name).collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        out.push_str(&name);
        out.push('\n');
    }
    Ok(out.into_bytes())
}

wasip3::cli::command::export!(Fs);

/// Never called: the host runs the `wasi:cli/run@0.3.0` export instead.
fn main() {
    unreachable!("p3_fs runs through wasi:cli/run@0.3.0");
}
