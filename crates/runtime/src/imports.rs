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

/// Links every interface `component` imports that `linker` cannot satisfy
/// to functions that trap when called, the trap naming the function, and
/// returns those interfaces' names. The stub is defined under the import's
/// exact name, which wasmtime looks up before a semver-compatible one; of
/// an interface the linker defines under that very name, what it defines
/// stays, and a function it defines with other types is still an error.
///
/// For hosts of apps whose SDKs import interfaces they may never call
/// (Spin's import their whole platform world).
pub fn trap_unprovided_imports<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    component: &wasmtime::component::Component,
) -> wasmtime::Result<Vec<String>> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;

    /// The resource type of stubbed resources: no host value ever has it.
    struct Unprovided;

    let engine = component.engine().clone();
    let ty = component.component_type();
    let mut stubbed = Vec::new();
    loop {
        let Err(error) = linker.instantiate_pre(component) else {
            return Ok(stubbed);
        };
        let name = error.chain().next().and_then(|line| {
            between(&line.to_string(), "component imports instance `").map(str::to_owned)
        });
        let Some(name) = name else {
            return Err(error);
        };
        if stubbed.contains(&name) {
            return Err(error);
        }
        let Some(ComponentItem::ComponentInstance(instance)) =
            ty.get_import(&engine, &name).map(|import| import.ty)
        else {
            return Err(error);
        };
        let mut stub = linker.instance(&name)?;
        for (export, item) in instance.exports(&engine) {
            let qualified = format!("{name}#{export}");
            match item.ty {
                // What the linker already defines under this very name
                // stays (defining it again fails, and is let fail).
                ComponentItem::ComponentFunc(func) if func.async_() => {
                    let _ = stub.func_new_concurrent(export, move |_, _, _, _| {
                        let qualified = qualified.clone();
                        Box::pin(
                            async move { wasmtime::bail!("`{qualified}` is not provided by Tern") },
                        )
                    });
                }
                ComponentItem::ComponentFunc(_) => {
                    let _ = stub.func_new(export, move |_, _, _, _| {
                        wasmtime::bail!("`{qualified}` is not provided by Tern")
                    });
                }
                ComponentItem::Resource(_) => {
                    let _ =
                        stub.resource(export, ResourceType::host::<Unprovided>(), |_, _| Ok(()));
                }
                // Types need no definition.
                ComponentItem::Type(_) => {}
                _ => return Err(error),
            }
        }
        stubbed.push(name);
    }
}
