//! `tern new`: a new app from a template embedded in the binary. Templates
//! are plain files under `templates/NAME` in Tern's repository; the tokens
//! `{{project-name}}` and `{{project_name}}` in them become the app's name
//! (with `-` and with `_`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use tern_runtime::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// Arguments of `tern new`.
#[derive(Args)]
#[command(after_help = "Templates: run `tern new --list`. Then `cd NAME && tern up`.")]
pub struct NewArgs {
    /// The template to start from
    #[arg(value_name = "TEMPLATE", required_unless_present = "list")]
    template: Option<String>,
    /// The app's name, or a path whose last part is the name (as `cargo new`
    /// takes it): lowercase letters, digits, `-` and `_`, starting with a letter
    #[arg(value_name = "NAME|PATH", required_unless_present = "list")]
    name: Option<String>,
    /// Where to create the app [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// List the templates, one per line
    #[arg(long, exclusive = true)]
    list: bool,
}

/// What a template is, beyond its files.
struct Template {
    name: &'static str,
    summary: &'static str,
    /// Programs its build needs, and how to install each.
    tools: &'static [(&'static str, &'static str)],
    /// Whether Tern's WIT (key-value, config) is copied in as `wit/`.
    wit: bool,
}

const CARGO: (&str, &str) = (
    "cargo",
    "install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`",
);

const TEMPLATES: &[Template] = &[
    Template {
        name: "http-rust",
        summary: "HTTP component in Rust, an async WASI 0.3 handler (wasip3 crate, wasm32-wasip2)",
        tools: &[CARGO],
        wit: false,
    },
    Template {
        name: "http-c",
        summary: "CGI-style HTTP handler in C (WAGI), built with clang for wasm32-wasi",
        tools: &[(
            "clang",
            "on Debian 12: `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`",
        )],
        wit: false,
    },
    Template {
        name: "http-python",
        summary: "HTTP component in Python, built with componentize-py",
        tools: &[(
            "componentize-py",
            "`pip install componentize-py==0.25.1` (Python 3.9 or later)",
        )],
        wit: false,
    },
    Template {
        name: "http-js",
        summary: "HTTP component in JavaScript, built with jco componentize (npm)",
        tools: &[("npm", "install Node.js 18 or later with npm")],
        wit: false,
    },
    Template {
        name: "kv-rust",
        summary: "Visit counter in Rust on Tern's key-value store (wasi:keyvalue)",
        tools: &[CARGO],
        wit: true,
    },
];

pub fn main(args: NewArgs) -> Result<ExitCode> {
    if args.list {
        let width = TEMPLATES.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for template in TEMPLATES {
            println!("{:width$}  {}", template.name, template.summary);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(wanted), Some(name)) = (args.template, args.name) else {
        return Err(Error::msg("give a TEMPLATE and a NAME, or --list"));
    };
    let Some(template) = TEMPLATES.iter().find(|t| t.name == wanted) else {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        return Err(Error::msg(format!(
            "no template named `{wanted}`; the templates are: {}",
            names.join(", ")
        )));
    };
    // `tern new http-rust apps/shop` makes the app `shop` in apps/shop.
    let given = PathBuf::from(&name);
    let name = match given.file_name().and_then(|n| n.to_str()) {
        Some(last) if given.components().count() > 1 => last.to_owned(),
        _ => name,
    };
    check_name(&name)?;
    let dir = args.dir.unwrap_or(given);
    let count = create(template, &name, &dir)?;
    let shown = dir.display();
    eprintln!(
        "tern: created {shown} from template {} ({count} files)",
        template.name
    );
    for (program, install) in template.tools {
        if !on_path(program) {
            eprintln!("tern: note: the build needs `{program}`, which is not on PATH; {install}");
        }
    }
    eprintln!(
        "next:\n  cd {shown}\n  tern up          # builds, then serves on http://127.0.0.1:3000"
    );
    Ok(ExitCode::SUCCESS)
}

/// Names become package names, component ids and directory names.
fn check_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(Error::msg(format!(
            "invalid app name `{}`: use lowercase letters, digits, `-` and `_`, starting with a letter",
            name.escape_debug()
        )));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(Error::msg(format!(
            "invalid app name `{name}`: reserved by Rust or Cargo; choose another"
        )));
    }
    Ok(())
}

/// Names Cargo refuses for a package: Rust keywords and the standard crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Writes `template`'s files for `name` into `dir`, which must not exist
/// or be empty. Returns how many files it wrote.
fn create(template: &Template, name: &str, dir: &Path) -> Result<usize> {
    if dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        return Err(Error::msg(format!(
            "{} already exists and is not empty; choose another NAME or --dir",
            dir.display()
        )));
    }
    let files = embedded::TEMPLATES
        .iter()
        .find(|(n, _)| *n == template.name)
        .map_or(&[][..], |(_, files)| *files);
    let wit = embedded::WIT
        .iter()
        .map(|(path, bytes)| (format!("wit/{path}"), *bytes));
    let all: Vec<(String, &[u8])> = files
        .iter()
        .map(|(path, bytes)| ((*path).to_owned(), *bytes))
        .chain(wit.filter(|_| template.wit))
        .collect();
    let snake = name.replace('-', "_");
    for (path, bytes) in &all {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::msg(format!("creating {}: {e}", parent.display())))?;
        }
        let contents = match std::str::from_utf8(bytes) {
            Ok(text) => text
                .replace("{{project-name}}", name)
                .replace("{{project_name}}", &snake)
                .into_bytes(),
            Err(_) => bytes.to_vec(),
        };
        std::fs::write(&target, contents)
            .map_err(|e| Error::msg(format!("writing {}: {e}", target.display())))?;
    }
    Ok(all.len())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_directory_is_listed_and_every_listed_one_exists() {
        let embedded: Vec<&str> = embedded::TEMPLATES.iter().map(|(n, _)| *n).collect();
        let listed: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(embedded, sorted);
        for (name, files) in embedded::TEMPLATES {
            let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
            for required in ["tern.toml", "README.md", ".gitignore"] {
                assert!(paths.contains(&required), "{name} has no {required}");
            }
        }
    }

    #[test]
    fn names_are_checked() {
        for name in ["a", "my-app", "app_2"] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        for name in [
            "", "My", "1a", "-a", "a b", "a/b", "../x", "test", "std", "fn",
        ] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }
}
