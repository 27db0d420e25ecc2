//! What can go wrong reading a manifest, and where in the file it went wrong.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in the manifest text, 1-based; columns count characters.
///
/// ```
/// # use tern_manifest::Location;
/// assert_eq!(Location { line: 12, column: 1 }.to_string(), "12:1");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The line, starting at 1.
    pub line: usize,
    /// The column in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a manifest (or the runtime config, which reads the same way) could
/// not be loaded. Displays as one line that names the file and, when known,
/// the line and column:
/// `apps/shop/tern.toml:12:1: component.hello.source: file not found: apps/shop/hello.wasm`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("reading manifest {}: {error}", path.display())]
    Read {
        /// The manifest file as given.
        path: PathBuf,
        /// Why reading failed.
        error: io::Error,
    },
    /// The runtime config file (`--runtime-config`) could not be read.
    #[error("reading runtime config {}: {error}", path.display())]
    ReadRuntimeConfig {
        /// The runtime config file as given.
        path: PathBuf,
        /// Why reading failed.
        error: io::Error,
    },
    /// A directory given as the app holds no manifest: neither a `tern.toml`
    /// nor a `spin.toml`.
    #[error(
        "no tern.toml or spin.toml in {}: make an app there with `tern new http-rust {}`, \
         or serve a component as it is with `tern serve app.wasm`",
        dir.display(),
        dir.display()
    )]
    NoManifest {
        /// The directory as given.
        dir: PathBuf,
    },
    /// The text is not TOML, or does not have the manifest's shape
    /// (an unknown key, a value of the wrong type, a bad unit).
    #[error("{}: {message}", place(path, *location))]
    Toml {
        /// The manifest file as given.
        path: PathBuf,
        /// Where the parser stopped, when it said.
        location: Option<Location>,
        /// The parser's message, on one line.
        message: String,
    },
    /// The manifest has the right shape but a value in it is not acceptable.
    #[error("{}: {key}: {message}", place(path, *location))]
    Invalid {
        /// The manifest file as given.
        path: PathBuf,
        /// Where the offending key is; `None` when the problem is something missing.
        location: Option<Location>,
        /// The offending key, such as `component.hello.source` or `route[2].path`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ManifestError {
    /// Where in the manifest the problem is, when that is known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ManifestError::Read { .. }
            | ManifestError::ReadRuntimeConfig { .. }
            | ManifestError::NoManifest { .. } => None,
            ManifestError::Toml { location, .. } | ManifestError::Invalid { location, .. } => {
                *location
            }
        }
    }

    /// Converts a toml error, keeping its message but not its multi-line snippet.
    pub(crate) fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let message = one_line(error.message());
        // serde says "field"; a TOML author thinks in keys.
        let message = match message.strip_prefix("unknown field") {
            Some(rest) => format!("unknown key{rest}"),
            None => match message.strip_prefix("missing field") {
                Some(rest) => format!("missing key{rest}"),
                None => message,
            },
        };
        let message = without_rust_types(&message);
        ManifestError::Toml {
            path: path.to_owned(),
            location: error
                .span()
                .map(|span| Location::of_offset(text, span.start)),
            message,
        }
    }
}

/// `PATH:LINE:COLUMN`, or just `PATH` when the location is unknown.
fn place(path: &Path, location: Option<Location>) -> String {
    match location {
        Some(location) => format!("{}:{location}", path.display()),
        None => path.display().to_string(),
    }
}

/// serde says what it expected in Rust's terms (`u32`, `struct RawVariable`);
/// a TOML author wants the kind of value. The structs name their own
/// expectation (`#[serde(expecting)]`); this covers whatever else slips by.
fn without_rust_types(message: &str) -> String {
    const EXPECTED: &str = ", expected ";
    let Some(at) = message.rfind(EXPECTED) else {
        return message.to_owned();
    };
    let (head, expected) = message.split_at(at + EXPECTED.len());
    let plain = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "char" => "a single character",
        other if other.starts_with("struct ") || other.starts_with("tuple struct ") => "a table",
        other if other.starts_with("enum ") => "a string",
        _ => return message.to_owned(),
    };
    format!("{head}{plain}")
}

fn one_line(message: &str) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    words.join(" ").trim_end_matches('.').to_owned()
}

/// Locates keys in the manifest text so that errors can point at them.
pub(crate) struct Source<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// The location of the start of `span`.
    pub(crate) fn at(&self, span: &Range<usize>) -> Location {
        Location::of_offset(self.text, span.start)
    }

    /// The location of the key whose value starts at `value_span`.
    ///
    /// serde only gives spans for values, so this walks back over `=` to the
    /// key. A key and the start of its value share a line in TOML, so the walk
    /// never crosses a newline; if the text is not shaped as expected, the
    /// value's own location is close enough.
    pub(crate) fn key_at(&self, value_span: &Range<usize>) -> Location {
        let before = &self.text[..value_span.start.min(self.text.len())];
        let Some(before_eq) = before.trim_end_matches([' ', '\t']).strip_suffix('=') else {
            return self.at(value_span);
        };
        let key_end = before_eq.trim_end_matches([' ', '\t']);
        let key_start = match key_end.chars().last() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &key_end[..key_end.len() - 1];
                inner.rfind(quote).unwrap_or(inner.len())
            }
            _ => key_end
                .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                .len(),
        };
        Location::of_offset(self.text, key_start)
    }

    /// An [`ManifestError::Invalid`] pointing at `location`.
    pub(crate) fn invalid(
        &self,
        location: Option<Location>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.to_owned(),
            location,
            key: key.into(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        for (offset, line, column) in [(0, 1, 1), (4, 1, 5), (6, 2, 1), (10, 2, 4), (99, 3, 1)] {
            assert_eq!(
                Location::of_offset(text, offset),
                Location { line, column },
                "{offset}"
            );
        }
    }

    #[test]
    fn errors_name_kinds_of_value_not_rust_types() {
        for (message, expected) in [
            (
                "invalid type: string \"many\", expected u32",
                "invalid type: string \"many\", expected a non-negative integer",
            ),
            (
                "invalid type: string \"x\", expected struct RawVariable",
                "invalid type: string \"x\", expected a table",
            ),
            (
                "invalid type: integer `5`, expected enum Executor",
                "invalid type: integer `5`, expected a string",
            ),
            (
                "invalid type: integer `5`, expected a string",
                "invalid type: integer `5`, expected a string",
            ),
            ("unknown key `x`", "unknown key `x`"),
        ] {
            assert_eq!(without_rust_types(message), expected);
        }
    }

    #[test]
    fn keys_are_found_before_their_values() {
        let text = "source = \"a\"\nx = { \"my key\"=1, dotted.bare-key_2 = 2 }\ny = [7]\n";
        let source = Source {
            path: Path::new("tern.toml"),
            text,
        };
        let value = |needle: &str| {
            let start = text.find(needle).unwrap();
            start..start + needle.len()
        };
        assert_eq!(source.key_at(&value("\"a\"")).to_string(), "1:1");
        assert_eq!(source.key_at(&value("1,")).to_string(), "2:7");
        assert_eq!(source.key_at(&value("2 }")).to_string(), "2:26");
        assert_eq!(source.key_at(&value("{")).to_string(), "2:1");
        // Not after `=`: the value itself.
        assert_eq!(source.key_at(&value("7]")).to_string(), "3:6");
    }
}
