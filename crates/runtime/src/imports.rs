//! Linking errors in a user's terms. When a component imports an interface
//! Tern does not provide, or provides with other types, wasmtime says so in
//! linker terms ("a matching implementation was not found in the linker");
//! [`explain_link_error`] names the interface, the function and what
//! differs, and says what to do.

use wasmtime::Error;

/// One line for a component that could not be linked, or `None` when the
/// error is about something else.
///
/// ```
/// let error = wasmtime::Error::msg("function implementation is missing")
///     .context("instance export `render` has the wrong type")
///     .context("component imports instance `example:text/markup@0.1.0`, but a matching implementation was not found in the linker");
/// assert_eq!(
///     tern_runtime::explain_link_error(&error).unwrap(),
///     "it imports `example:text/markup@0.1.0`, which Tern does not provide (function `render`); \
/// plug in a component that exports it with `tern compose`",
/// );
/// ```
pub fn explain_link_error(error: &Error) -> Option<String> {
    let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
    let first = chain.first()?;
    let interface = between(first, "component imports instance `")?;
    let function = chain
        .iter()
        .find_map(|line| between(line, "instance export `"));
    let missing = chain
        .last()
        .is_some_and(|l| l.contains("implementation is missing"));
    let provided = [
        "wasi:cli/",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:filesystem/",
        "wasi:sockets/",
        "wasi:http/",
        "wasi:keyvalue/",
        "wasi:config/",
        "tern:keyvalue/",
    ]
    .iter()
    .any(|prefix| interface.starts_with(prefix));
    let function = function.map_or_else(String::new, |f| format!(" (function `{f}`)"));
    Some(if missing && !provided {
        format!(
            "it imports `{interface}`, which Tern does not provide{function}; plug in a component that exports it with `tern compose`"
        )
    } else if missing {
        format!(
            "it imports `{interface}`, which Tern does not provide here{function}; Tern provides the WASI 0.2 interfaces, WASI 0.3.0's to components that speak 0.3, and wasi:keyvalue, wasi:config and tern:keyvalue of Tern's `wit/`"
        )
    } else {
        let detail: Vec<String> = chain[1..]
            .iter()
            .filter(|l| !l.starts_with("instance export `"))
            .map(|l| in_user_terms(l))
            .collect();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.join(": "))
        };
        format!(
            "it imports `{interface}`, which Tern provides with different types{function}{detail}; build against the WIT Tern ships (see `wit/` and the WASI 0.2 packages)"
        )
    })
}

/// One of wasmtime's type-check lines, with "expected" and "found" as
/// Tern's side and the component's.
fn in_user_terms(line: &str) -> String {
    if let Some((tern, component)) = line
        .strip_prefix("expected ")
        .and_then(|rest| rest.split_once(" found "))
    {
        return format!("Tern's is {tern}, the component's is {component}");
    }
    line.strip_prefix("type mismatch with ")
        .unwrap_or(line)
        .to_owned()
}

/// The text between `prefix` and the next backtick.
fn between<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.split('`').next()
}
