//! `--nn-preload` and `--nn-graph` for `tern run`: models named on the
//! command line, loaded before the guest starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tern_nn::Encoding;
use tern_runtime::{Nn, NnModel, Result};

/// A model given on the command line.
#[derive(Clone, Debug)]
pub struct Preload {
    name: String,
    encoding: Encoding,
    path: PathBuf,
}

impl Preload {
    /// WasmEdge's `NAME:ENCODING:TARGET:PATH`.
    pub fn parse_wasmedge(text: &str) -> Result<Preload, String> {
        let mut parts = text.splitn(4, ':');
        let (Some(name), Some(encoding), Some(target), Some(path)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected NAME:ENCODING:TARGET:PATH, got `{text}`"));
        };
        if name.is_empty() || path.is_empty() {
            return Err(format!("expected NAME:ENCODING:TARGET:PATH, got `{text}`"));
        }
        check_target(target)?;
        Ok(Preload {
            name: name.to_owned(),
            encoding: encoding.parse()?,
            path: PathBuf::from(path),
        })
    }

    /// wasmtime's `ENCODING::DIR`, named as wasmtime names it: by the
    /// directory's last component (`models/iris` is `iris`).
    pub fn parse_wasmtime(text: &str) -> Result<Preload, String> {
        let Some((encoding, dir)) = text.split_once("::") else {
            return Err(format!("expected ENCODING::DIR, got `{text}`"));
        };
        let path = PathBuf::from(dir);
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(format!("expected ENCODING::DIR, got `{text}`"));
        };
        Ok(Preload {
            name,
            encoding: encoding.parse()?,
            path,
        })
    }
}

fn check_target(target: &str) -> Result<(), String> {
    match target.to_ascii_uppercase().as_str() {
        "AUTO" | "CPU" => Ok(()),
        "GPU" | "TPU" => Err(format!(
            "no {target} backend in this build; use AUTO or CPU"
        )),
        _ => Err(format!("unknown target `{target}` (expected AUTO or CPU)")),
    }
}

/// Loads every model (a ggml one on `engine`) and grants them all to the
/// guest, which may also load models from bytes up to `budget` (its memory
/// limit).
pub fn load_preloads(
    preloads: &[&Preload],
    engine: tern_nn::GgmlEngine,
    budget: u64,
) -> Result<Nn> {
    let mut models = BTreeMap::new();
    for preload in preloads {
        if models.contains_key(&preload.name) {
            return Err(tern_runtime::Error::msg(format!(
                "model `{}` is given twice",
                preload.name
            )));
        }
        let model =
            tern_nn::Model::load_on(preload.encoding, engine, &preload.path).map_err(|e| {
                tern_runtime::Error::msg(format!(
                    "cannot load {} model `{}` from `{}`: {e}",
                    preload.encoding,
                    preload.name,
                    preload.path.display()
                ))
            })?;
        let model = NnModel {
            model,
            limits: tern_nn::Limits::default(),
        };
        models.insert(preload.name.clone(), Arc::new(model));
    }
    let names: Vec<String> = models.keys().cloned().collect();
    // `tern run`'s program is the user's own, reading only what it was
    // granted: it may load models from bytes.
    Ok(Nn::new(Arc::new(models), &names, budget).loading_bytes(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmedge_and_wasmtime_spellings_parse() {
        let p = Preload::parse_wasmedge("default:GGML:AUTO:/m/a:b.gguf").unwrap();
        assert_eq!((p.name.as_str(), p.encoding), ("default", Encoding::Ggml));
        assert_eq!(p.path, PathBuf::from("/m/a:b.gguf"));
        let p = Preload::parse_wasmtime("onnx::models/iris").unwrap();
        assert_eq!((p.name.as_str(), p.encoding), ("iris", Encoding::Onnx));
        assert_eq!(p.path, PathBuf::from("models/iris"));
        let err = Preload::parse_wasmedge("default:GGML:GPU:m.gguf").unwrap_err();
        assert_eq!(err, "no GPU backend in this build; use AUTO or CPU");
        let err = Preload::parse_wasmedge("default:openvino:CPU:m.xml").unwrap_err();
        assert!(err.contains("no openvino backend"), "{err}");
        assert!(Preload::parse_wasmedge("default:GGML").is_err());
        assert!(Preload::parse_wasmtime("onnx:dir").is_err());
    }
}
