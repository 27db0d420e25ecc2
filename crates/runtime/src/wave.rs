//! WAVE, the WebAssembly Value Encoding, for `--invoke` on components:
//! reading a call (`add(1, 2)`) or separate arguments (`add` `1` `2`),
//! checking each argument against its parameter's type, and writing
//! results and signatures back as text.
//!
//! wasm-wave does the parsing and printing; this module turns its errors
//! into lines that name the argument, the parameter and its type.

use wasm_wave::ast::Node;
use wasm_wave::parser::{ParserError, ParserErrorKind};
use wasm_wave::untyped::UntypedValue;
use wasm_wave::wasm::DisplayType;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::{Type, Val};
use wasmtime::{Result, bail, format_err};

/// What `--invoke` asks for: a function's name and its arguments, read
/// but not yet checked against the function's types.
pub struct Call<'a> {
    /// The name as given: `add`, `example:calc/ops#mul`.
    pub name: &'a str,
    args: Vec<Arg<'a>>,
}

/// One argument as written.
enum Arg<'a> {
    /// A command-line argument of its own, parsed once its type is known.
    Separate(&'a str),
    /// One value of a `name(arg, ...)` call: a node of the parsed
    /// `(arg, ...)`, which is `source`.
    InCall { source: &'a str, node: Node },
}

impl<'a> Call<'a> {
    /// Reads `--invoke`'s value and the arguments after the file: either
    /// `name(arg, ...)` with nothing after the file, or a name with one
    /// WAVE value per argument.
    pub fn parse(invoke: &'a str, args: &'a [String]) -> Result<Self> {
        let Some(open) = invoke.find('(') else {
            return Ok(Call {
                name: invoke.trim(),
                args: args.iter().map(|arg| Arg::Separate(arg.as_str())).collect(),
            });
        };
        if !args.is_empty() {
            bail!(
                "`--invoke {invoke}` gives its arguments in parentheses, so none may follow the file (got {})",
                args.len()
            );
        }
        let (name, list) = invoke.split_at(open);
        let args = in_call(list).map_err(|err| {
            format_err!(
                "cannot read the arguments of `{invoke}` as WAVE: {}",
                message(&err, list, list)
            )
        })?;
        Ok(Call {
            name: name.trim(),
            args,
        })
    }

    /// The arguments as values of `func`'s parameter types (`name` is the
    /// function's, for errors). Trailing `option` parameters may be left
    /// out: they are `none`.
    pub fn values(&self, name: &str, func: &ComponentFunc) -> Result<Vec<Val>> {
        let params: Vec<(&str, Type)> = func.params().collect();
        let given = self.args.len();
        let omitted_are_options = params
            .get(given..)
            .is_some_and(|rest| rest.iter().all(|(_, ty)| matches!(ty, Type::Option(_))));
        if !omitted_are_options {
            bail!(
                "function `{name}` takes {} argument(s) ({}), but {given} were given",
                params.len(),
                params_text(&params)
            );
        }
        let mut values = self
            .args
            .iter()
            .zip(&params)
            .map(|(arg, (param, ty))| arg.value(param, ty))
            .collect::<Result<Vec<_>>>()?;
        values.extend(params[given..].iter().map(|_| Val::Option(None)));
        Ok(values)
    }
}

impl Arg<'_> {
    /// The argument's own text.
    fn text(&self) -> &str {
        match self {
            Arg::Separate(text) => text,
            Arg::InCall { source, node } => &source[node.span()],
        }
    }

    /// The argument as a value of `ty`, the type of parameter `param`.
    fn value(&self, param: &str, ty: &Type) -> Result<Val> {
        let (source, parsed) = match self {
            Arg::Separate(text) => (*text, wasm_wave::from_str::<Val>(ty, text)),
            Arg::InCall { source, node } => (*source, node.to_wasm_value::<Val>(ty, source)),
        };
        parsed.map_err(|err| {
            let text = self.text();
            let hint = if matches!(ty, Type::String) && !text.trim_start().starts_with('"') {
                format!(" (a WAVE string is quoted: \"{text}\")")
            } else {
                String::new()
            };
            format_err!(
                "argument `{text}` for parameter `{param}` is not a valid {}: {}{hint}",
                type_text(ty),
                message(&err, source, text)
            )
        })
    }
}

/// The values of `(arg, ...)`, the part of a call after the name.
fn in_call(list: &str) -> Result<Vec<Arg<'_>>, ParserError> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'));
    if inner.is_some_and(|inner| inner.trim().is_empty()) {
        return Ok(Vec::new());
    }
    let parsed = UntypedValue::parse(list)?;
    let nodes = parsed.node().as_tuple()?;
    Ok(nodes
        .map(|node| Arg::InCall {
            source: list,
            node: node.clone(),
        })
        .collect())
}

/// wasm-wave's error as one line. Its span is a byte range of `source`:
/// the text there is quoted when it is only part of `whole`, the text the
/// message is about (the end of the input needs no quoting).
fn message(err: &ParserError, source: &str, whole: &str) -> String {
    let mut line = err.kind().to_string();
    if let Some(detail) = err.detail() {
        line = format!("{line}: {detail}");
    } else if let Some(cause) = std::error::Error::source(err) {
        line = format!("{line}: {cause}");
    }
    if err.kind() == ParserErrorKind::UnexpectedEnd {
        return line;
    }
    match source.get(err.span()) {
        Some(at) if !at.trim().is_empty() && at != whole => format!("{line} at `{at}`"),
        _ => line,
    }
}

/// A result as WAVE; a value WAVE cannot write (a resource) as wasmtime
/// shows it.
pub fn show(val: &Val) -> String {
    if !writable(val) {
        return format!("{val:?}");
    }
    wasm_wave::to_string(val).unwrap_or_else(|_| format!("{val:?}"))
}

/// Whether WAVE can write `val`: wasm-wave's writer panics on a resource,
/// future, stream, error context or map anywhere in a value.
fn writable(val: &Val) -> bool {
    match val {
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) | Val::Map(_) => {
            false
        }
        Val::List(items) | Val::FixedLengthList(items) | Val::Tuple(items) => {
            items.iter().all(writable)
        }
        Val::Record(fields) => fields.iter().all(|(_, val)| writable(val)),
        Val::Variant(_, payload) | Val::Option(payload) => payload.as_deref().is_none_or(writable),
        Val::Result(Ok(payload) | Err(payload)) => payload.as_deref().is_none_or(writable),
        _ => true,
    }
}

/// `add(a: u32, b: u32) -> u32`: a function as `--invoke` lists it.
pub(crate) fn signature(name: &str, func: &ComponentFunc) -> String {
    let params: Vec<(&str, Type)> = func.params().collect();
    let results: Vec<String> = func.results().map(|ty| type_text(&ty)).collect();
    let params = params_text(&params);
    match results.as_slice() {
        [] => format!("{name}({params})"),
        [one] => format!("{name}({params}) -> {one}"),
        several => format!("{name}({params}) -> ({})", several.join(", ")),
    }
}

/// `a: u32, b: u32`.
fn params_text(params: &[(&str, Type)]) -> String {
    let params: Vec<String> = params
        .iter()
        .map(|(name, ty)| format!("{name}: {}", type_text(ty)))
        .collect();
    params.join(", ")
}

/// A type in WIT's words. Types have no names here, so a record shows its
/// fields: `record { x: s32, y: s32 }`.
fn type_text(ty: &Type) -> String {
    match ty {
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Map(_) => "map".into(),
        _ => DisplayType(ty).to_string(),
    }
}
