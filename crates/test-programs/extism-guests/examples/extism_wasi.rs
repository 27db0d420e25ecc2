//! A WASI plug-in (a wasm32-wasip1 cdylib): `env_and_files` prints a line
//! to stdout, reads the environment variable `GREETING` and lists the
//! directory `/data` when the host grants it, and answers what it found as
//! JSON: `{"greeting": "..." or null, "data": ["name", ...] or null}`.

use extism_pdk::json::{Value, json};
use extism_pdk::{FnResult, Json, plugin_fn};

#[plugin_fn]
pub fn env_and_files() -> FnResult<Json<Value>> {
    println!("extism_wasi: hello from stdout");
    let greeting = std::env::var("GREETING").ok();
    let data = std::fs::read_dir("/data").ok().map(|entries| {
        let mut names: Vec<String> = entries
            .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    });
    Ok(Json(json!({ "greeting": greeting, "data": data })))
}
