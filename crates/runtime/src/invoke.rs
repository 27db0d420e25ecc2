//! `--invoke`: calling one exported function of a core module with
//! arguments given as text, the plugin/UDF case.

use wasmtime::{Result, Val, ValType, bail};

use crate::outcome::{Outcome, finish};
use crate::program::Program;
use crate::run::{RunConfig, block_on, guarded, instantiate_module, list_exports};

/// Calls one exported function of a core module with arguments parsed from
/// text, after running `_initialize` if the module has one.
pub fn invoke(
    engine: &wasmtime::Engine,
    program: &Program,
    name: &str,
    args: &[String],
    config: RunConfig<'_>,
) -> Result<Outcome> {
    let Program::Module(module) = program else {
        bail!("--invoke calls functions of core modules; this file is a component");
    };
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
            .map(|(ty, arg)| parse_val(ty, arg))
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
                result.map(|()| Outcome::Returned(results.iter().map(show_val).collect()));
            finish(outcome, &store.data().limiter, limits)
        })
        .await
    })
}

fn parse_val(ty: &ValType, arg: &str) -> Result<Val> {
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

fn show_val(val: &Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(v) => f32::from_bits(*v).to_string(),
        Val::F64(v) => f64::from_bits(*v).to_string(),
        Val::V128(v) => format!("{:#034x}", v.as_u128()),
        other => format!("{other:?}"),
    }
}
