//! `--invoke`: calling one exported function with arguments given as text,
//! the plugin/UDF case. A core module's arguments and results are plain
//! numbers; a component's are WAVE text (see [`crate::wave`]), and its
//! function may be one of an exported interface.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Val as ComponentVal};
use wasmtime::{Engine, Module, Result, Val, ValType, bail, format_err};

use crate::outcome::{Outcome, finish};
use crate::program::Program;
use crate::run::{
    RunConfig, block_on, guarded, instantiate_component, instantiate_module, list_exports,
};
use crate::wave;

/// Calls one exported function with arguments parsed from text.
///
/// For a core module, `call` is the function's name and `args` are
/// numbers; `_initialize` runs first if the module has one. For a
/// component, `call` is either `name(arg, ...)` in WAVE, with no `args`,
/// or a name with one WAVE value per argument in `args`; the name is a
/// top-level function, `interface#function`, or a function that exactly one
/// exported interface has.
pub fn invoke(
    engine: &Engine,
    program: &Program,
    call: &str,
    args: &[String],
    config: RunConfig<'_>,
) -> Result<Outcome> {
    match program {
        Program::Module(module) => invoke_module(engine, module, call, args, config),
        Program::Component(component) => invoke_component(engine, component, call, args, config),
    }
}

fn invoke_module(
    engine: &Engine,
    module: &Module,
    name: &str,
    args: &[String],
    config: RunConfig<'_>,
) -> Result<Outcome> {
    if name.contains('(') {
        bail!(
            "`--invoke {name}`: the `name(arg, ...)` form is for components; call a core module's function as `--invoke NAME FILE ARGS...`"
        );
    }
    block_on(async {
        let (mut store, instance) = instantiate_module(engine, module, &config).await?;
        let Some(func) = instance.get_func(&mut store, name) else {
            bail!(
                "module has no exported function `{name}`; {}",
                list_exports(module)
            );
        };
        let ty = func.ty(&store);
        let params: Vec<ValType> = ty.params().collect();
        if params.len() != args.len() {
            let types: Vec<String> = params.iter().map(ToString::to_string).collect();
            bail!(
                "function `{name}` takes {} argument(s) ({}), but {} were given",
                params.len(),
                types.join(", "),
                args.len()
            );
        }
        let params = params
            .iter()
            .zip(args)
            .map(|(ty, arg)| parse_core_val(ty, arg))
            .collect::<Result<Vec<_>>>()?;
        let mut results = vec![Val::I32(0); ty.results().len()];
        let limits = config.limits;
        guarded(engine, limits, async {
            let result = async {
                if let Some(init) = instance.get_func(&mut store, "_initialize") {
                    init.call_async(&mut store, &[], &mut []).await?;
                }
                func.call_async(&mut store, &params, &mut results).await
            }
            .await;
            let outcome =
                result.map(|()| Outcome::Returned(results.iter().map(show_core_val).collect()));
            finish(outcome, &store.data().limiter, limits)
        })
        .await
    })
}

/// Finds the function and types the arguments before instantiating, so a
/// misspelt call runs no guest code; then calls it under the limits.
fn invoke_component(
    engine: &Engine,
    component: &Component,
    call: &str,
    args: &[String],
    config: RunConfig<'_>,
) -> Result<Outcome> {
    let call = wave::Call::parse(call, args)?;
    let exports = exported_funcs(engine, component);
    let export = find_export(&exports, call.name)?;
    let name = export.name();
    let params = call.values(&name, &export.ty)?;
    let index = export
        .index(component)
        .ok_or_else(|| format_err!("cannot find `{name}` among the component's exports"))?;
    block_on(async {
        // A component importing WASI 0.3 gets it linked.
        let p3 = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| name.starts_with("wasi:") && name.contains("@0.3."));
        let (mut store, instance) = instantiate_component(engine, component, &config, p3).await?;
        let Some(func) = instance.get_func(&mut store, index) else {
            bail!("the component's export `{name}` is not a function");
        };
        let mut results = vec![ComponentVal::Bool(false); export.ty.results().len()];
        let limits = config.limits;
        guarded(engine, limits, async {
            let result = func.call_async(&mut store, &params, &mut results).await;
            let outcome =
                result.map(|()| Outcome::Returned(results.iter().map(wave::show).collect()));
            finish(outcome, &store.data().limiter, limits)
        })
        .await
    })
}

/// A function a component exports, at the top level or in an exported
/// instance (an interface).
pub struct ExportedFunc {
    /// The export names from the component down to the function: `["add"]`,
    /// or `["example:calc/ops", "mul"]`.
    path: Vec<String>,
    /// Its type.
    pub ty: ComponentFunc,
}

impl ExportedFunc {
    /// The full name: `add`, or `example:calc/ops#mul`.
    pub fn name(&self) -> String {
        self.path.join("#")
    }

    /// Whether `asked` is this function's full name. An interface asked for
    /// without a version (`wasi:cli/run#run`) matches any version of it.
    fn is_named(&self, asked: &str) -> bool {
        let asked: Vec<&str> = asked.split('#').collect();
        asked.len() == self.path.len()
            && self.path.iter().zip(asked).all(|(have, asked)| {
                have == asked
                    || (!asked.contains('@')
                        && have.split_once('@').is_some_and(|(bare, _)| bare == asked))
            })
    }

    /// The version of the interface the function is in, as numbers
    /// (`wasi:cli/run@0.3.0` is `[0, 3, 0]`); empty for none.
    fn version(&self) -> Vec<u64> {
        let Some((_, version)) = self.path[0].split_once('@') else {
            return Vec::new();
        };
        version
            .split(['.', '-'])
            .map_while(|part| part.parse().ok())
            .collect()
    }

    /// The function's place in `component`, to find it in an instance.
    pub fn index(&self, component: &Component) -> Option<ComponentExportIndex> {
        let mut index = None;
        for name in &self.path {
            index = Some(component.get_export_index(index.as_ref(), name.as_str())?);
        }
        index
    }
}

/// Every function `component` exports, in the order of its exports, those
/// of exported instances included.
pub fn exported_funcs(engine: &Engine, component: &Component) -> Vec<ExportedFunc> {
    let mut found = Vec::new();
    let ty = component.component_type();
    for (name, export) in ty.exports(engine) {
        collect_funcs(engine, vec![name.to_string()], export.ty, &mut found);
    }
    found
}

fn collect_funcs(
    engine: &Engine,
    path: Vec<String>,
    item: ComponentItem,
    found: &mut Vec<ExportedFunc>,
) {
    match item {
        ComponentItem::ComponentFunc(ty) => found.push(ExportedFunc { path, ty }),
        ComponentItem::ComponentInstance(instance) => {
            for (name, export) in instance.exports(engine) {
                let mut inner = path.clone();
                inner.push(name.to_string());
                collect_funcs(engine, inner, export.ty, found);
            }
        }
        _ => {}
    }
}

/// The function `name` asks for: one named in full, or else the one
/// exported interface function with that bare name.
pub fn find_export<'a>(funcs: &'a [ExportedFunc], name: &str) -> Result<&'a ExportedFunc> {
    // A name without a version may match several versions of one
    // interface (a Rust WASI 0.3 program exports 0.2's `wasi:cli/run`
    // too): the newest is the one meant.
    let newest = funcs
        .iter()
        .filter(|f| f.is_named(name))
        .max_by_key(|f| f.version());
    if let Some(func) = newest {
        return Ok(func);
    }
    let in_interfaces: Vec<&ExportedFunc> = funcs
        .iter()
        .filter(|f| f.path.len() > 1 && f.path.last().is_some_and(|last| last == name))
        .collect();
    match in_interfaces.as_slice() {
        [func] => Ok(*func),
        [] => bail!(
            "component has no exported function `{name}`; {}",
            list_funcs(funcs)
        ),
        several => {
            let names: Vec<String> = several.iter().map(|f| format!("`{}`", f.name())).collect();
            bail!(
                "more than one interface exports `{name}` ({}); give the full name",
                names.join(", ")
            )
        }
    }
}

/// The component's functions with their signatures, for an error line.
fn list_funcs(funcs: &[ExportedFunc]) -> String {
    if funcs.is_empty() {
        return "it exports no functions".into();
    }
    let signatures: Vec<String> = funcs
        .iter()
        .map(|f| format!("`{}`", wave::signature(&f.name(), &f.ty)))
        .collect();
    format!("exported functions: {}", signatures.join(", "))
}

/// A core function's argument from text: an integer (signed or unsigned
/// spelling) or a float.
pub fn parse_core_val(ty: &ValType, arg: &str) -> Result<Val> {
    let bad = || wasmtime::format_err!("argument `{arg}` is not a valid {ty}");
    Ok(match ty {
        // Accept both signed and unsigned spellings of integers.
        ValType::I32 => Val::I32(
            arg.parse::<i32>()
                .or_else(|_| arg.parse::<u32>().map(|u| u as i32))
                .map_err(|_| bad())?,
        ),
        ValType::I64 => Val::I64(
            arg.parse::<i64>()
                .or_else(|_| arg.parse::<u64>().map(|u| u as i64))
                .map_err(|_| bad())?,
        ),
        ValType::F32 => Val::F32(arg.parse::<f32>().map_err(|_| bad())?.to_bits()),
        ValType::F64 => Val::F64(arg.parse::<f64>().map_err(|_| bad())?.to_bits()),
        other => bail!("cannot pass a {other} from the command line"),
    })
}

/// A core function's result as text.
pub fn show_core_val(val: &Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(v) => f32::from_bits(*v).to_string(),
        Val::F64(v) => f64::from_bits(*v).to_string(),
        Val::V128(v) => format!("{:#034x}", v.as_u128()),
        other => format!("{other:?}"),
    }
}
