//! A plugin version: its compiled code, linked against the host's
//! functions once, ready to instantiate. A version that does not link is
//! refused here, before it can replace a running one.

use tern_runtime::Program;
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Engine, InstancePre, Linker, Module, Result, bail};

use crate::HostFunctions;
use crate::ctx::PluginCtx;

/// What kind of plugin a program is, which decides how `call` talks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// A core module importing the Extism ABI: bytes in, bytes out.
    Extism,
    /// A plain core module: numbers in, numbers out.
    Core,
    /// A component: typed values.
    Component,
}

/// One linked version of a plugin.
pub(crate) struct Code {
    pub(crate) kind: PluginKind,
    pub(crate) linked: Linked,
    /// Whether a call must run on a fiber (an async host function).
    pub(crate) is_async: bool,
}

pub(crate) enum Linked {
    Module {
        pre: InstancePre<PluginCtx>,
        module: Module,
        /// Whether it imports WASI preview 1.
        wasi: bool,
    },
    Component {
        pre: wasmtime::component::InstancePre<PluginCtx>,
        component: Component,
        /// Its exported functions, listed once.
        exports: Vec<tern_runtime::ExportedFunc>,
    },
}

const WASI_P1: &str = "wasi_snapshot_preview1";

impl Code {
    pub(crate) fn link(
        engine: &Engine,
        program: Program,
        functions: &HostFunctions,
    ) -> Result<Self> {
        let is_async = functions.any_async();
        match program {
            Program::Module(module) => {
                let mut linker = Linker::new(engine);
                let imports_from = |name| module.imports().any(|i| i.module() == name);
                let extism = imports_from(crate::extism::MODULE);
                let wasi = imports_from(WASI_P1);
                if extism {
                    crate::extism::add_to_linker(&mut linker)?;
                }
                if wasi {
                    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, PluginCtx::p1)?;
                }
                functions.link_module(&mut linker, &module)?;
                let pre = linker.instantiate_pre(&module).map_err(unlinked)?;
                Ok(Code {
                    kind: if extism {
                        PluginKind::Extism
                    } else {
                        PluginKind::Core
                    },
                    linked: Linked::Module { pre, module, wasi },
                    is_async,
                })
            }
            Program::Component(component) => {
                let mut linker = wasmtime::component::Linker::new(engine);
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
                functions.link_component(&mut linker)?;
                let pre = linker.instantiate_pre(&component).map_err(unlinked)?;
                let exports = tern_runtime::exported_funcs(engine, &component);
                Ok(Code {
                    kind: PluginKind::Component,
                    linked: Linked::Component {
                        pre,
                        component,
                        exports,
                    },
                    is_async,
                })
            }
        }
    }

    /// The functions a caller may call, for listings and errors.
    pub(crate) fn functions(&self) -> Vec<String> {
        match &self.linked {
            Linked::Module { module, .. } => module
                .exports()
                .filter(|e| e.ty().func().is_some())
                .map(|e| e.name().to_owned())
                .filter(|name| !is_lifecycle(name))
                .collect(),
            Linked::Component { exports, .. } => exports.iter().map(|f| f.name()).collect(),
        }
    }

    /// Where a component's function `name` is, with its type.
    pub(crate) fn component_func(
        &self,
        name: &str,
    ) -> Result<(
        ComponentExportIndex,
        wasmtime::component::types::ComponentFunc,
        String,
    )> {
        let Linked::Component {
            component, exports, ..
        } = &self.linked
        else {
            bail!("not a component");
        };
        let func = tern_runtime::find_export(exports, name)?;
        let full = func.name();
        let index = func
            .index(component)
            .ok_or_else(|| wasmtime::format_err!("cannot find `{full}` among the exports"))?;
        Ok((index, func.ty.clone(), full))
    }
}

/// Exports the host calls itself, not offered as plugin functions.
pub(crate) fn is_lifecycle(name: &str) -> bool {
    matches!(
        name,
        "_initialize" | "_start" | "__wasm_call_ctors" | "hs_init"
    )
}

fn unlinked(e: wasmtime::Error) -> wasmtime::Error {
    wasmtime::format_err!(
        "the plugin cannot be linked: {e:#} (the host provides the Extism ABI, WASI and the functions registered in HostFunctions)"
    )
}
