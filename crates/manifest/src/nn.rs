//! `[nn.models.NAME]`: the machine-learning models an app declares for
//! WASI-NN, which a component may use once its `nn_models` grants them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::Spanned;

use crate::error::Source;
use crate::raw::RawNnModel;
use crate::resolve::{Boundary, describe_io, is_valid_store_name};
use crate::{Location, ManifestError, OutsideGrant};

/// A `[nn.models.NAME]` table: a model file the app's components may be
/// granted (with `nn_models`), loaded once and shared by them.
///
/// ```
/// # use std::path::Path;
/// # use tern_manifest::{NnEncoding, NnModel, NnTarget};
/// let text = "manifest_version = 1\n[app]\nname = \"a\"\n\
///     [[route]]\npath = \"/\"\ncomponent = \"a\"\n\
///     [component.a]\nsource = \"Cargo.toml\"\nnn_models = [\"chat\"]\n\
///     [nn.models.chat]\nencoding = \"gguf\"\npath = \"Cargo.toml\"\nmax_tokens = 256\n";
/// let manifest = tern_manifest::parse(text, Path::new("tern.toml"))?;
/// let chat = &manifest.nn_models["chat"];
/// assert_eq!(chat.encoding, NnEncoding::Ggml);
/// assert_eq!(chat.target, NnTarget::Auto);
/// assert_eq!(chat.max_tokens, 256);
/// assert_eq!(chat.context_length, NnModel::DEFAULT_CONTEXT_LENGTH);
/// assert!(chat.path.is_absolute());
/// assert_eq!(manifest.components["a"].nn_models, ["chat"]);
/// # Ok::<(), tern_manifest::ManifestError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NnModel {
    /// How the file is encoded, hence which backend runs it.
    pub encoding: NnEncoding,
    /// The model file: the manifest's directory joined with `path` as
    /// written, made absolute. Exists and is a regular file; inside the app
    /// directory unless the operator allowed otherwise.
    pub path: PathBuf,
    /// Where inferences run.
    pub target: NnTarget,
    /// What runs a ggml model: `engine = "candle"`, `"llama.cpp"` or
    /// `"auto"` (the default). Whether this build of Tern has llama.cpp is
    /// checked when the model is loaded.
    pub engine: NnEngine,
    /// Where the `engine` key is, when the table sets it.
    pub engine_location: Option<Location>,
    /// Inferences of this model running at once across the app; at least
    /// 1. Requests beyond them are turned away (503).
    pub max_concurrency: u32,
    /// Tokens one request may generate; at least 1. Set only for
    /// [`NnEncoding::Ggml`]; an ONNX model keeps the default, unused.
    pub max_tokens: u32,
    /// The largest context one request may use; at least
    /// [`NnModel::MIN_CONTEXT_LENGTH`]. Set only for [`NnEncoding::Ggml`];
    /// an ONNX model keeps the default, unused.
    pub context_length: u32,
    /// Where the `path` key is, for errors found when the file is loaded:
    /// pass it to [`Manifest::error_at`](crate::Manifest::error_at) with the
    /// key `nn.models.NAME.path`.
    pub path_location: Location,
}

impl NnModel {
    /// `max_concurrency` when the table leaves it out.
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 2;
    /// `max_tokens` when the table leaves it out.
    pub const DEFAULT_MAX_TOKENS: u32 = 1024;
    /// `context_length` when the table leaves it out.
    pub const DEFAULT_CONTEXT_LENGTH: u32 = 4096;
    /// The smallest `context_length` accepted.
    pub const MIN_CONTEXT_LENGTH: u32 = 16;
}

/// How a model file is encoded: a `[nn.models.NAME]` table's `encoding`.
///
/// ```
/// # use tern_manifest::NnEncoding;
/// assert_eq!("GGUF".parse(), Ok(NnEncoding::Ggml));
/// assert_eq!(NnEncoding::Onnx.as_str(), "onnx");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NnEncoding {
    /// A language model in a GGUF file (`"ggml"`, or `"gguf"`).
    Ggml,
    /// An ONNX graph (`"onnx"`).
    Onnx,
}

impl NnEncoding {
    /// The name used in the manifest: `ggml` or `onnx`.
    pub fn as_str(self) -> &'static str {
        match self {
            NnEncoding::Ggml => "ggml",
            NnEncoding::Onnx => "onnx",
        }
    }
}

/// Prints [`NnEncoding::as_str`].
impl fmt::Display for NnEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `ggml`, `gguf` (the same) or `onnx`, in any case.
impl FromStr for NnEncoding {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "ggml" | "gguf" => Ok(NnEncoding::Ggml),
            "onnx" => Ok(NnEncoding::Onnx),
            _ => Err(format!(
                "unknown encoding \"{}\"; use \"ggml\" (GGUF language models) or \"onnx\"",
                text.escape_debug()
            )),
        }
    }
}

/// What runs a ggml model: a `[nn.models.NAME]` table's `engine`.
///
/// ```
/// # use tern_manifest::NnEngine;
/// assert_eq!("llama.cpp".parse(), Ok(NnEngine::LlamaCpp));
/// assert_eq!(NnEngine::Candle.as_str(), "candle");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NnEngine {
    /// llama.cpp when the build has it, else candle (`"auto"`, the default).
    Auto,
    /// Tern's own forward pass on candle (`"candle"`).
    Candle,
    /// llama.cpp (`"llama.cpp"`, or `"llama-cpp"`), in builds with the
    /// `llama-cpp` feature.
    LlamaCpp,
}

impl NnEngine {
    /// The name used in the manifest: `auto`, `candle` or `llama.cpp`.
    pub fn as_str(self) -> &'static str {
        match self {
            NnEngine::Auto => "auto",
            NnEngine::Candle => "candle",
            NnEngine::LlamaCpp => "llama.cpp",
        }
    }
}

/// Prints [`NnEngine::as_str`].
impl fmt::Display for NnEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `auto`, `candle`, `llama.cpp` or `llama-cpp`, in any case.
impl FromStr for NnEngine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(NnEngine::Auto),
            "candle" => Ok(NnEngine::Candle),
            "llama.cpp" | "llama-cpp" => Ok(NnEngine::LlamaCpp),
            _ => Err(format!(
                "unknown engine \"{}\"; use \"auto\", \"candle\" or \"llama.cpp\"",
                text.escape_debug()
            )),
        }
    }
}

/// Where a model's inferences run: a `[nn.models.NAME]` table's `target`.
///
/// ```
/// # use tern_manifest::NnTarget;
/// assert_eq!("CPU".parse(), Ok(NnTarget::Cpu));
/// assert_eq!(
///     "gpu".parse::<NnTarget>().unwrap_err(),
///     "no GPU/TPU backend in this build; use \"cpu\" or \"auto\""
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NnTarget {
    /// The best this build has (`"auto"`, the default); today the CPU.
    Auto,
    /// The CPU (`"cpu"`).
    Cpu,
}

impl NnTarget {
    /// The name used in the manifest: `auto` or `cpu`.
    pub fn as_str(self) -> &'static str {
        match self {
            NnTarget::Auto => "auto",
            NnTarget::Cpu => "cpu",
        }
    }
}

/// Prints [`NnTarget::as_str`].
impl fmt::Display for NnTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `auto` or `cpu`, in any case; refuses `gpu` and `tpu`, which
/// WASI-NN names but this build cannot run.
impl FromStr for NnTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(NnTarget::Auto),
            "cpu" => Ok(NnTarget::Cpu),
            "gpu" | "tpu" => {
                Err("no GPU/TPU backend in this build; use \"cpu\" or \"auto\"".to_owned())
            }
            _ => Err(format!(
                "unknown target \"{}\"; use \"cpu\" or \"auto\"",
                text.escape_debug()
            )),
        }
    }
}

/// The `[nn.models]` tables, by name: each name valid, each file found
/// (relative to `base`, the manifest's directory as given) and inside the
/// app directory unless the operator allowed otherwise.
pub(crate) fn resolve_models(
    source: &Source,
    base: &Path,
    raw: BTreeMap<Spanned<String>, RawNnModel>,
    boundary: &mut Boundary,
) -> Result<BTreeMap<String, NnModel>, ManifestError> {
    let mut models = BTreeMap::new();
    for (name, model) in raw {
        let key = format!("nn.models.{}", name.get_ref());
        if !is_valid_store_name(name.get_ref()) {
            let message = format!(
                "invalid model name \"{}\": use lowercase letters, digits, `-` and `_`, starting with a letter",
                name.get_ref().escape_debug()
            );
            return Err(source.invalid(Some(source.at(&name.span())), key, message));
        }
        let model = resolve_model(source, base, &key, name.get_ref(), model, boundary)?;
        models.insert(name.into_inner(), model);
    }
    Ok(models)
}

/// One `[nn.models.NAME]` table (`key`), its keys checked in the order
/// they are documented.
fn resolve_model(
    source: &Source,
    base: &Path,
    key: &str,
    name: &str,
    raw: RawNnModel,
    boundary: &mut Boundary,
) -> Result<NnModel, ManifestError> {
    let encoding: NnEncoding = word(source, &format!("{key}.encoding"), &raw.encoding)?;

    let path_key = format!("{key}.path");
    let path_location = source.key_at(&raw.path.span());
    let Some(written) = raw.path.get_ref().as_str() else {
        let message = format!(
            "must be a string (a file path), found {}",
            raw.path.get_ref()
        );
        return Err(source.invalid(Some(path_location), path_key, message));
    };
    let file = base.join(written);
    let problem = match fs::metadata(&file) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some("is a directory, expected a model file".to_owned()),
        Ok(_) => Some("not a regular file".to_owned()),
        Err(e) => Some(describe_io(&e)),
    };
    // As written: the manifest's own words, not a path on this host.
    if let Some(problem) = problem {
        let message = format!("{problem}: {}", written.escape_debug());
        return Err(source.invalid(Some(path_location), path_key, message));
    }
    boundary.check(
        source,
        path_location,
        &path_key,
        written,
        &file,
        (name, OutsideGrant::NnModel),
    )?;

    let target = match &raw.target {
        Some(target) => word(source, &format!("{key}.target"), target)?,
        None => NnTarget::Auto,
    };
    let max_concurrency = count(source, key, "max_concurrency", raw.max_concurrency, 1)?;
    let engine = match &raw.engine {
        Some(engine) => word(source, &format!("{key}.engine"), engine)?,
        None => NnEngine::Auto,
    };
    let engine_location = raw.engine.as_ref().map(|e| source.key_at(&e.span()));
    if encoding != NnEncoding::Ggml {
        for (field, value) in [
            ("engine", &raw.engine),
            ("max_tokens", &raw.max_tokens),
            ("context_length", &raw.context_length),
        ] {
            if let Some(value) = value {
                let message = format!(
                    "applies to \"ggml\" models only; this model's encoding is \"{encoding}\""
                );
                let location = Some(source.key_at(&value.span()));
                return Err(source.invalid(location, format!("{key}.{field}"), message));
            }
        }
    }
    let max_tokens = count(source, key, "max_tokens", raw.max_tokens, 1)?;
    let context_length = count(
        source,
        key,
        "context_length",
        raw.context_length,
        NnModel::MIN_CONTEXT_LENGTH,
    )?;

    Ok(NnModel {
        encoding,
        path: std::path::absolute(&file).unwrap_or(file),
        target,
        engine,
        engine_location,
        max_concurrency: max_concurrency.unwrap_or(NnModel::DEFAULT_MAX_CONCURRENCY),
        max_tokens: max_tokens.unwrap_or(NnModel::DEFAULT_MAX_TOKENS),
        context_length: context_length.unwrap_or(NnModel::DEFAULT_CONTEXT_LENGTH),
        path_location,
    })
}

/// A string under `key` that `T` reads.
fn word<T: FromStr<Err = String>>(
    source: &Source,
    key: &str,
    value: &Spanned<toml::Value>,
) -> Result<T, ManifestError> {
    let location = Some(source.key_at(&value.span()));
    match value.get_ref().as_str() {
        Some(text) => text
            .parse()
            .map_err(|message| source.invalid(location, key, message)),
        None => {
            let message = format!("must be a string, found {}", value.get_ref());
            Err(source.invalid(location, key, message))
        }
    }
}

/// The whole number under `key.field`, at least `min`; `None` when the
/// table leaves it out.
fn count(
    source: &Source,
    key: &str,
    field: &str,
    value: Option<Spanned<toml::Value>>,
    min: u32,
) -> Result<Option<u32>, ManifestError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let message = match value.get_ref().as_integer() {
        Some(n) if n < i64::from(min) => format!("must be at least {min}, got {n}"),
        Some(n) => match u32::try_from(n) {
            Ok(n) => return Ok(Some(n)),
            Err(_) => format!("must be at most {}, got {n}", u32::MAX),
        },
        None => format!(
            "must be an integer of at least {min}, found {}",
            value.get_ref()
        ),
    };
    let location = Some(source.key_at(&value.span()));
    Err(source.invalid(location, format!("{key}.{field}"), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_and_targets_read_in_any_case() {
        for (text, encoding) in [
            ("ggml", NnEncoding::Ggml),
            ("GGUF", NnEncoding::Ggml),
            ("Onnx", NnEncoding::Onnx),
        ] {
            assert_eq!(text.parse(), Ok(encoding), "{text}");
        }
        assert!("tensorflow".parse::<NnEncoding>().is_err());
        assert_eq!("Auto".parse(), Ok(NnTarget::Auto));
        assert_eq!("cpu".parse(), Ok(NnTarget::Cpu));
        for text in ["gpu", "TPU", "npu", ""] {
            assert!(text.parse::<NnTarget>().is_err(), "{text}");
        }
    }
}
