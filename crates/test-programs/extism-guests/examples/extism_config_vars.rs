//! Config and vars: `greet` answers "GREETING, INPUT!" with the config key
//! `greeting` ("Hello" when the host sets none); `count` keeps a call count
//! in the var `count` (a u64, little-endian) and answers it in decimal;
//! `unset` deletes that var.

use extism_pdk::{FnResult, config, plugin_fn, var};

#[plugin_fn]
pub fn greet(name: String) -> FnResult<String> {
    let greeting = config::get("greeting")?.unwrap_or_else(|| "Hello".into());
    Ok(format!("{greeting}, {name}!"))
}

#[plugin_fn]
pub fn count() -> FnResult<String> {
    let previous = match var::get::<Vec<u8>>("count")? {
        Some(bytes) => u64::from_le_bytes(bytes.as_slice().try_into()?),
        None => 0,
    };
    let count = previous + 1;
    var::set("count", count.to_le_bytes().as_slice())?;
    Ok(count.to_string())
}

#[plugin_fn]
pub fn unset() -> FnResult<()> {
    var::remove("count")?;
    Ok(())
}
