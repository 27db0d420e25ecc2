//! Failures: `fail` returns an error, which the pdk hands the host with
//! `error_set` ("plugin failed: INPUT"); `trap` hits `unreachable` on every
//! call, a plain trap with no error set; `ok` answers "fine", to show that
//! the plug-in still works after either.

use extism_pdk::{Error, FnResult, plugin_fn};

#[plugin_fn]
pub fn fail(input: String) -> FnResult<String> {
    Err(Error::msg(format!("plugin failed: {input}")).into())
}

#[plugin_fn]
pub fn trap() -> FnResult<()> {
    std::arch::wasm32::unreachable()
}

#[plugin_fn]
pub fn ok() -> FnResult<&'static str> {
    Ok("fine")
}
