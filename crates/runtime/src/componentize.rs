//! Core modules that carry their component type (what `wit-bindgen` leaves
//! in a `wasm32-wasip1` build, such as a Spin SDK 5 app) become components
//! here, as Spin makes them: `wit-component` wraps the module, and the
//! WASI preview 1 adapter of this wasmtime release turns its
//! `wasi_snapshot_preview1` imports into WASI 0.2 ones. Done once per
//! module: the result is compiled and cached under the module's own hash.

use wasmtime::Result;
use wasmtime::error::Context as _;

/// The prefix of the custom sections `wit-bindgen` writes the component
/// type into.
const COMPONENT_TYPE_SECTION: &str = "component-type";

/// Whether the core module `wasm` carries a component type. Only the
/// section headers are read.
pub fn carries_component_type(wasm: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .filter_map(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::CustomSection(section) => {
                section.name().starts_with(COMPONENT_TYPE_SECTION)
            }
            _ => false,
        })
}

/// Whether the core module `wasm` exports `_start`: a command, which gets
/// the command adapter (`wasi:cli/run`); anything else is a reactor.
fn is_command(wasm: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .filter_map(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::ExportSection(exports) => exports
                .into_iter()
                .filter_map(Result::ok)
                .any(|export| export.name == "_start"),
            _ => false,
        })
}

/// The component for the core module `wasm`, which carries its component
/// type.
pub fn componentize(wasm: &[u8]) -> Result<Vec<u8>> {
    use wasi_preview1_component_adapter_provider as adapters;
    let adapter = if is_command(wasm) {
        adapters::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
    } else {
        adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
    };
    let encoded = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(wasm)
        .and_then(|encoder| encoder.adapter(adapters::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter))
        .and_then(|mut encoder| encoder.encode());
    encoded
        // wit-component's messages may span lines; Tern's errors are one.
        .map_err(|e| wasmtime::format_err!("{}", one_line(&format!("{e:#}"))))
        .context("cannot make a component of this module (it carries a component type)")
}

/// `text` with each run of whitespace, line breaks included, one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_module_carries_no_component_type() {
        let plain = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        assert!(!carries_component_type(&plain));
        assert!(is_command(&plain));
    }

    #[test]
    fn a_module_with_a_broken_component_type_is_refused_in_one_line() {
        let broken = wat::parse_str("(module (@custom \"component-type\" \"nonsense\"))").unwrap();
        assert!(carries_component_type(&broken));
        let error = format!("{:#}", componentize(&broken).unwrap_err());
        assert!(error.starts_with("cannot make a component"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
