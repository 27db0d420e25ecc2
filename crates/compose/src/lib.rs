//! Composition: one component made of several. [`compose`] plugs library
//! components into an app component: each import of the app that a library
//! exports under the same name (version included) is wired to that export,
//! and the libraries are embedded in the result. Every other import stays
//! an import of the composed component.
//!
//! wasm-compose does the wiring. What this crate adds is the error a user
//! can act on: a library that the app does not use is refused instead of
//! being dropped silently, and an interface whose types differ is reported
//! as the interface, the function and the difference, not as "not
//! compatible".
//!
//! This crate never imports wasmtime: it works on binaries only.

use std::path::{Path, PathBuf};

use wasm_compose::composer::ComponentComposer;
use wasm_compose::config::Config;
use wasm_compose::graph::Component;
use wasmparser::component_types::SubtypeCx;
use wasmparser::{ComponentExternalKind, Validator, WasmFeatures};

/// Why composing failed. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A file could not be read or is not a component.
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A library exports nothing the app imports.
    #[error(
        "{} exports nothing {} imports: it exports {exports}, the app imports {imports}; names must match exactly, version included",
        library.display(), app.display()
    )]
    Unused {
        /// The app component.
        app: PathBuf,
        /// The library.
        library: PathBuf,
        /// What the library exports, comma-separated.
        exports: String,
        /// What the app imports, comma-separated.
        imports: String,
    },
    /// An interface the library exports differs from the one the app imports.
    #[error("interface `{interface}` differs between {} and {}: {difference}", app.display(), library.display())]
    Mismatch {
        /// The app component.
        app: PathBuf,
        /// The library.
        library: PathBuf,
        /// The interface's name, such as `example:text/markup@0.1.0`.
        interface: String,
        /// What differs: the function, and how.
        difference: String,
    },
    /// wasm-compose refused for another reason.
    #[error("composing {}: {message}", app.display())]
    Compose {
        /// The app component.
        app: PathBuf,
        /// wasm-compose's reason.
        message: String,
    },
}

/// The bytes of `app` with `libraries` plugged into its imports.
pub fn compose(app: &Path, libraries: &[PathBuf]) -> Result<Vec<u8>, ComposeError> {
    check(app, libraries)?;
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|e| ComposeError::Input {
            path: path.to_owned(),
            message: format!("cannot resolve: {e}"),
        })
    };
    let config = Config {
        definitions: libraries
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<_, _>>()?,
        // wasm-compose also looks for `IMPORT.wasm` files in `dir`; only
        // the plugs given may be embedded, so point it nowhere.
        dir: PathBuf::from("/nonexistent/tern-compose"),
        ..Config::default()
    };
    ComponentComposer::new(app, &config)
        .compose()
        .map_err(|e| ComposeError::Compose {
            app: app.to_owned(),
            message: one_line(&format!("{e:#}")),
        })
}

/// Refuses libraries the app does not use, and interfaces whose types
/// differ, saying how.
fn check(app: &Path, libraries: &[PathBuf]) -> Result<(), ComposeError> {
    // One validator for every file: types compared with `SubtypeCx` must
    // come from the same one.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let root = parse(&mut validator, app)?;
    for path in libraries {
        let library = parse(&mut validator, path)?;
        let plugged: Vec<&str> = library
            .exports()
            .filter(|(_, name, kind, _)| {
                *kind == ComponentExternalKind::Instance && root.import_by_name(name).is_some()
            })
            .map(|(_, name, _, _)| name)
            .collect();
        if plugged.is_empty() {
            let names = |names: Vec<&str>| {
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            };
            return Err(ComposeError::Unused {
                app: app.to_owned(),
                library: path.clone(),
                exports: names(library.exports().map(|(_, n, _, _)| n).collect()),
                imports: names(root.imports().map(|(_, n, _)| n).collect()),
            });
        }
        for interface in plugged {
            let (Some(export), Some(import)) = (
                library.types().component_item_for_export(interface),
                root.types().component_item_for_import(interface),
            ) else {
                continue;
            };
            let mut cx = SubtypeCx::new_with_refs(library.types(), root.types());
            if let Err(e) = cx.component_entity_type(&export.ty, &import.ty, 0) {
                return Err(ComposeError::Mismatch {
                    app: app.to_owned(),
                    library: path.clone(),
                    interface: interface.to_owned(),
                    difference: explain(e.message()),
                });
            }
        }
    }
    Ok(())
}

fn parse<'a>(validator: &mut Validator, path: &Path) -> Result<Component<'a>, ComposeError> {
    let input = |message: String| ComposeError::Input {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| input(format!("cannot read: {e}")))?;
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(input(
            "not a component (a core module? only components can be composed)".to_owned(),
        ));
    }
    Component::from_bytes(validator, "input", bytes).map_err(|e| {
        input(format!(
            "invalid component: {}",
            one_line(&format!("{e:#}"))
        ))
    })
}

/// wasmparser's subtype error, one reason per line from the outside in,
/// as one line in the app's and the library's terms.
fn explain(message: &str) -> String {
    let parts: Vec<String> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            if let Some(name) = between(line, "type mismatch in instance export `") {
                format!("`{name}`")
            } else if let Some(name) = between(line, "type mismatch in function parameter `") {
                format!("parameter `{name}`")
            } else if let Some(name) = between(line, "missing expected export `") {
                format!("`{name}` is imported by the app but missing from the library")
            } else if let Some((expected, found)) = line
                .strip_prefix("expected ")
                .and_then(|rest| rest.split_once(", found ").or(rest.split_once(" found ")))
            {
                let plain = |s: &str| s.replace("primitive ", "");
                format!(
                    "the app expects {}, the library has {}",
                    plain(expected),
                    plain(found)
                )
            } else if line == "type mismatch with result type" {
                "result".to_owned()
            } else {
                line.strip_prefix("type mismatch in ")
                    .map_or_else(|| line.to_owned(), str::to_owned)
            }
        })
        .collect();
    parts.join(": ")
}

/// The text between `prefix` and the next backtick.
fn between<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.split('`').next()
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtype_errors_read_in_the_app_and_library_terms() {
        let cases = [
            (
                "type mismatch in instance export `render`\ntype mismatch in function parameter `source`\nexpected string, found u32",
                "`render`: parameter `source`: the app expects string, the library has u32",
            ),
            (
                "type mismatch in instance export `render`\ntype mismatch in function parameter `source`\nexpected primitive `string` found primitive `u32`",
                "`render`: parameter `source`: the app expects `string`, the library has `u32`",
            ),
            (
                "missing expected export `slugify`",
                "`slugify` is imported by the app but missing from the library",
            ),
            (
                "type mismatch in instance export `render`\ntype mismatch with result type\nexpected string, found u32",
                "`render`: result: the app expects string, the library has u32",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(explain(message), expected);
        }
    }
}
