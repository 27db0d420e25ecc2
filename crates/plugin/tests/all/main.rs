//! The plugin host against real plugins: extism-pdk's own examples and
//! plugins written against extism-pdk (compared byte for byte with the
//! real Extism runtime), hostile plugins, components and plain modules.

mod extism;
mod host;
mod hostile;

use std::sync::OnceLock;

use tern_plugin::{CacheDir, HostFunctions, Plugin, PluginConfig, PluginHost};

/// One host for the whole binary, as an embedder would have.
fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(|| {
        PluginHost::builder()
            .cache(CacheDir::Off)
            .build()
            .expect("a plugin host")
    })
}

fn load(path: &str, config: PluginConfig) -> Plugin {
    host()
        .load(path, config)
        .unwrap_or_else(|e| panic!("loading {path}: {e:#}"))
}

fn call(plugin: &Plugin, name: &str, input: &[u8]) -> String {
    let (output, _) = plugin
        .call(name, input)
        .unwrap_or_else(|e| panic!("calling {name}: {e}"));
    String::from_utf8(output).expect("UTF-8 output")
}

/// The default configuration with `functions`.
fn with_functions(functions: HostFunctions) -> PluginConfig {
    PluginConfig {
        functions,
        ..PluginConfig::default()
    }
}
