//! Logging: `log_input` logs its input once at each level (trace, debug,
//! info, warn, error), each line the input as it is, and answers it
//! unchanged; the host decides which levels it keeps.

use extism_pdk::{FnResult, debug, error, info, plugin_fn, trace, warn};

#[plugin_fn]
pub fn log_input(input: String) -> FnResult<String> {
    trace!("{input}");
    debug!("{input}");
    info!("{input}");
    warn!("{input}");
    error!("{input}");
    Ok(input)
}
