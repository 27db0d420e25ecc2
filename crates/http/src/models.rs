//! The AI models an app declares (`[nn.models]`): loaded once when the app
//! loads, shared by every instance and request, and kept across reloads
//! while their file and settings are unchanged. Each model has a permit
//! count (`max_concurrency`): a request to a component granted the model
//! takes one before its guest starts, and gets 503 when none is free.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tern_manifest::{Manifest, NnEncoding, NnEngine, NnModel as Declared};
use tern_runtime::NnModel;
use tokio::sync::Semaphore;

use crate::app::{CompileNotes, LoadError};

/// An app's loaded models.
#[derive(Default)]
pub(crate) struct AppModels {
    pub(crate) loaded: Arc<BTreeMap<String, Arc<NnModel>>>,
    permits: BTreeMap<String, Arc<Semaphore>>,
    /// What each was loaded from, to tell whether a reload may keep it.
    sources: BTreeMap<String, Source>,
}

#[derive(PartialEq)]
struct Source {
    path: PathBuf,
    encoding: NnEncoding,
    engine: NnEngine,
    len: u64,
    modified: Option<SystemTime>,
    limits: (u32, u32, u32),
}

impl Source {
    fn of(declared: &Declared) -> Option<Source> {
        let meta = std::fs::metadata(&declared.path).ok()?;
        Some(Source {
            path: declared.path.clone(),
            encoding: declared.encoding,
            engine: declared.engine,
            len: meta.len(),
            modified: meta.modified().ok(),
            limits: (
                declared.max_concurrency,
                declared.max_tokens,
                declared.context_length,
            ),
        })
    }
}

impl AppModels {
    /// Loads `manifest`'s models, reusing those of `previous` (the version
    /// being replaced) whose file and settings are unchanged.
    pub(crate) fn load(
        manifest: &Manifest,
        previous: Option<&AppModels>,
        notes: Option<&dyn CompileNotes>,
    ) -> Result<AppModels, LoadError> {
        let mut models = AppModels::default();
        let mut loaded = BTreeMap::new();
        for (name, declared) in &manifest.nn_models {
            let key = format!("nn.models.{name}.path");
            let source = Source::of(declared);
            let kept = previous
                .filter(|p| source.is_some() && p.sources.get(name) == source.as_ref())
                .and_then(|p| Some((p.loaded.get(name)?.clone(), p.permits.get(name)?.clone())));
            let (model, permits) = match kept {
                Some(kept) => kept,
                None => {
                    let engine = engine(declared.engine).resolve().map_err(|err| {
                        let key = format!("nn.models.{name}.engine");
                        let location = declared.engine_location.unwrap_or(declared.path_location);
                        LoadError::Manifest(manifest.error_at(location, &key, err.to_string()))
                    })?;
                    if let (Some(notes), Some(source)) = (notes, &source) {
                        notes.loading_model(name, source.len);
                    }
                    let result = tern_nn::Model::load_on(
                        encoding(declared.encoding),
                        engine,
                        &declared.path,
                    );
                    if let Some(notes) = notes {
                        notes.loaded_model(name);
                    }
                    let model = result.map_err(|err| {
                        LoadError::Manifest(manifest.error_at(
                            declared.path_location,
                            &key,
                            format!("cannot load the {} model: {err}", declared.encoding),
                        ))
                    })?;
                    let model = Arc::new(NnModel {
                        model,
                        limits: tern_nn::Limits {
                            max_tokens: declared.max_tokens as usize,
                            context_length: declared.context_length as usize,
                        },
                    });
                    let permits = Arc::new(Semaphore::new(declared.max_concurrency as usize));
                    (model, permits)
                }
            };
            loaded.insert(name.clone(), model);
            models.permits.insert(name.clone(), permits);
            if let Some(source) = source {
                models.sources.insert(name.clone(), source);
            }
        }
        models.loaded = Arc::new(loaded);
        Ok(models)
    }

    /// The permits of the models in `granted`, with their names.
    pub(crate) fn permits_for(&self, granted: &[String]) -> Vec<(String, Arc<Semaphore>)> {
        granted
            .iter()
            .filter_map(|name| Some((name.clone(), self.permits.get(name)?.clone())))
            .collect()
    }
}

fn engine(engine: NnEngine) -> tern_nn::GgmlEngine {
    match engine {
        NnEngine::Auto => tern_nn::GgmlEngine::Auto,
        NnEngine::Candle => tern_nn::GgmlEngine::Candle,
        NnEngine::LlamaCpp => tern_nn::GgmlEngine::LlamaCpp,
    }
}

fn encoding(encoding: NnEncoding) -> tern_nn::Encoding {
    match encoding {
        NnEncoding::Ggml => tern_nn::Encoding::Ggml,
        NnEncoding::Onnx => tern_nn::Encoding::Onnx,
    }
}
