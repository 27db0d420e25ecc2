//! Tern's WASI-NN backends, built from crates.io alone: GGUF language models
//! on `candle` ([`ggml`]) and ONNX models on `tract` ([`onnx`]). With the
//! `llama-cpp` cargo feature (off by default), GGUF models can also run on
//! llama.cpp, built from source with the crate ([`GgmlEngine`]).
//!
//! This crate owns models and inference, not guests: a [`Model`] is loaded
//! once and shared (through `Arc`) by every instance that may use it; a
//! [`Context`] is one instance's execution state (its inputs, outputs and,
//! for a language model, its KV cache). The WASI-NN interfaces themselves
//! (the component `wasi:nn` and the preview 1 `wasi_ephemeral_nn` ABI) are
//! bound in `tern-runtime`, which turns [`Error`]s into each ABI's codes.
//! [`backend`] plugs the same models into `wasmtime-wasi-nn`'s public
//! backend traits, for embedders that use its linker.
//!
//! ```no_run
//! use std::path::Path;
//! use tern_nn::{Cancel, Context, Encoding, Id, Limits, Model};
//!
//! let model = Model::load(Encoding::Onnx, Path::new("logreg_iris.onnx"))?;
//! let mut cx = Context::new(&model, b"", Limits::default(), Cancel::default())?;
//! let features = [5.1f32, 3.5, 1.4, 0.2];
//! let data = features.iter().flat_map(|f| f.to_le_bytes()).collect();
//! cx.set_input(Id::Index(0), tern_nn::Tensor::new(vec![1, 4], tern_nn::TensorType::Fp32, data))?;
//! cx.compute()?;
//! let label = cx.output(Id::Index(0))?;
//! # Ok::<(), tern_nn::Error>(())
//! ```

pub mod backend;
mod context;
mod error;
pub mod ggml;
pub mod onnx;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use context::{Context, Id};
pub use error::Error;
pub use wasmtime_wasi_nn::Tensor;
pub use wasmtime_wasi_nn::wit::TensorType;

/// How a model is encoded, and so which backend runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A GGUF language model (WASI-NN's `ggml`), on candle.
    Ggml,
    /// An ONNX model, on tract.
    Onnx,
}

impl Encoding {
    /// The encoding's WASI-NN name.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Ggml => "ggml",
            Encoding::Onnx => "onnx",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = String;

    /// `ggml` (or `gguf`) and `onnx`, in any case (WasmEdge writes `GGML`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ggml" | "gguf" => Ok(Encoding::Ggml),
            "onnx" => Ok(Encoding::Onnx),
            "openvino" | "tensorflow" | "pytorch" | "tensorflowlite" | "autodetect" => Err(
                format!("no {s} backend in this build (Tern runs ggml and onnx models)"),
            ),
            _ => Err(format!(
                "unknown model encoding `{s}` (expected ggml or onnx)"
            )),
        }
    }
}

/// What runs GGUF (`ggml`) language models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GgmlEngine {
    /// llama.cpp when this build has it (the `llama-cpp` feature), else
    /// candle.
    #[default]
    Auto,
    /// Tern's own forward pass on candle, in every build.
    Candle,
    /// llama.cpp: only in builds with the `llama-cpp` feature.
    LlamaCpp,
}

impl GgmlEngine {
    /// Whether this build has the llama.cpp engine.
    pub const LLAMA_CPP_BUILT: bool = cfg!(feature = "llama-cpp");

    /// The engine's name: `auto`, `candle` or `llama.cpp`.
    pub fn as_str(self) -> &'static str {
        match self {
            GgmlEngine::Auto => "auto",
            GgmlEngine::Candle => "candle",
            GgmlEngine::LlamaCpp => "llama.cpp",
        }
    }

    /// The engine `Auto` stands for in this build; an error if llama.cpp is
    /// asked for and not built in.
    pub fn resolve(self) -> Result<GgmlEngine, Error> {
        match self {
            GgmlEngine::Auto if Self::LLAMA_CPP_BUILT => Ok(GgmlEngine::LlamaCpp),
            GgmlEngine::Auto => Ok(GgmlEngine::Candle),
            GgmlEngine::LlamaCpp if !Self::LLAMA_CPP_BUILT => Err(Error::Unsupported(
                "this build of Tern has no llama.cpp engine (build it with `--features llama-cpp`)"
                    .into(),
            )),
            engine => Ok(engine),
        }
    }
}

impl fmt::Display for GgmlEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GgmlEngine {
    type Err = String;

    /// `auto`, `candle`, or `llama.cpp` (also `llama-cpp`), in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(GgmlEngine::Auto),
            "candle" => Ok(GgmlEngine::Candle),
            "llama.cpp" | "llama-cpp" | "llamacpp" => Ok(GgmlEngine::LlamaCpp),
            _ => Err(format!(
                "unknown ggml engine `{s}` (expected auto, candle or llama.cpp)"
            )),
        }
    }
}

/// A loaded model, shared by every instance that may use it.
#[derive(Clone)]
pub enum Model {
    /// A language model on candle.
    Ggml(Arc<ggml::LlamaModel>),
    /// A language model on llama.cpp.
    #[cfg(feature = "llama-cpp")]
    LlamaCpp(Arc<ggml::LlamaCppModel>),
    /// An ONNX graph.
    Onnx(Arc<onnx::OnnxModel>),
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Model({})", self.encoding())
    }
}

impl Model {
    /// Loads a model from `path`: a file, or a directory holding one
    /// (`model.onnx`, or the one `.gguf` file), as wasmtime's `--wasi
    /// nn-graph` gives it. A language model runs on the default engine
    /// ([`GgmlEngine::Auto`]).
    pub fn load(encoding: Encoding, path: &Path) -> Result<Model, Error> {
        Model::load_on(encoding, GgmlEngine::Auto, path)
    }

    /// [`Model::load`], with a language model on `engine`.
    pub fn load_on(encoding: Encoding, engine: GgmlEngine, path: &Path) -> Result<Model, Error> {
        let file = if path.is_dir() {
            model_in_dir(encoding, path)?
        } else {
            path.to_path_buf()
        };
        Ok(match encoding {
            Encoding::Ggml => match engine.resolve()? {
                #[cfg(feature = "llama-cpp")]
                GgmlEngine::LlamaCpp => Model::LlamaCpp(Arc::new(
                    ggml::LlamaCppModel::load(&file).map_err(Error::from_ggml_load)?,
                )),
                _ => Model::Ggml(Arc::new(
                    ggml::LlamaModel::load(&file).map_err(Error::from_ggml_load)?,
                )),
            },
            Encoding::Onnx => Model::Onnx(Arc::new(onnx::OnnxModel::load(&file)?)),
        })
    }

    /// Loads a model from the bytes a guest passed to `load`: one builder
    /// holding the whole file. A language model loaded this way runs on
    /// candle (llama.cpp loads from files only).
    pub fn from_builders(encoding: Encoding, builders: &[&[u8]]) -> Result<Model, Error> {
        let [bytes] = builders else {
            return Err(Error::InvalidArgument(format!(
                "a {encoding} model is loaded from 1 builder, not {}",
                builders.len()
            )));
        };
        Ok(match encoding {
            Encoding::Ggml => Model::Ggml(Arc::new(
                ggml::LlamaModel::from_bytes(bytes).map_err(Error::from_ggml_load)?,
            )),
            Encoding::Onnx => Model::Onnx(Arc::new(onnx::OnnxModel::from_bytes(bytes)?)),
        })
    }

    /// The backend that runs the model.
    pub fn encoding(&self) -> Encoding {
        match self {
            Model::Ggml(_) => Encoding::Ggml,
            #[cfg(feature = "llama-cpp")]
            Model::LlamaCpp(_) => Encoding::Ggml,
            Model::Onnx(_) => Encoding::Onnx,
        }
    }
}

/// The one model file in `dir` for `encoding`.
fn model_in_dir(encoding: Encoding, dir: &Path) -> Result<std::path::PathBuf, Error> {
    if encoding == Encoding::Onnx {
        return Ok(dir.join("model.onnx"));
    }
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::NotFound(format!("reading the model directory: {e}")))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"))
        {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::NotFound(
            "the model directory holds no .gguf file".into(),
        )),
        n => Err(Error::InvalidArgument(format!(
            "the model directory holds {n} .gguf files; name the one to use"
        ))),
    }
}

/// What one request may ask of a language model.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Tokens one generation may produce, whatever the guest asks.
    pub max_tokens: usize,
    /// The largest context one generation may use.
    pub context_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tokens: 1024,
            context_length: 4096,
        }
    }
}

/// Set when whoever waits for an inference gives up (its deadline passed,
/// its client went away): generation stops before its next token.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the inference to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
