//! The optional llama.cpp engine (cargo feature `llama-cpp`): the same GGUF
//! files, [`Session`](super::Session)s and options as the candle engine,
//! with llama.cpp's tokenizer and forward pass underneath.
//!
//! Only the forward pass and the vocabulary come from llama.cpp. Sampling,
//! stop strings, UTF-8 assembly and limits stay Tern's, so a guest sees the
//! same behaviour on either engine, and greedy answers agree wherever the
//! two forward passes pick the same most likely token.
//!
//! llama.cpp is built from the sources vendored in `llama-cpp-sys-2` and
//! linked statically: no library is loaded at run time. Its log output is
//! kept from the terminal; the last error it logged becomes the message of a
//! failed load.
//!
//! This module is the crate's only `unsafe` code: the engine's boundary
//! with llama.cpp. Each use says why it holds.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel as CppModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use super::Error;

/// A GGUF language model loaded by llama.cpp (memory-mapped), shared by
/// every session on it.
pub struct LlamaCppModel {
    /// Never replaced: sessions' contexts borrow it (see `Runner`).
    model: CppModel,
    /// Held while a context of this model is made: llama.cpp does not make
    /// two contexts of one model safely at once.
    making_context: Mutex<()>,
    /// Each token's bytes, as sessions assemble text from them.
    pieces: Vec<Vec<u8>>,
    /// Tokens that end generation (end of text, end of turn).
    ends: Vec<bool>,
    bos: Option<u32>,
    add_bos: bool,
    context_length: usize,
    architecture: String,
}

impl std::fmt::Debug for LlamaCppModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppModel")
            .field("architecture", &self.architecture)
            .field("vocab_size", &self.pieces.len())
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl LlamaCppModel {
    /// Loads the GGUF model at `path` with llama.cpp.
    pub fn load(path: &Path) -> Result<LlamaCppModel, Error> {
        check_magic(path)?;
        let backend = backend()?;
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::Format("the model's path is not UTF-8".into()))?;
        let model = {
            let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
            take_last_error();
            CppModel::load_from_file(backend, path_str, &LlamaModelParams::default()).map_err(
                |_| {
                    let why = take_last_error()
                        .unwrap_or_else(|| "unsupported architecture or corrupt file".into());
                    Error::Format(format!("llama.cpp could not load the model: {why}"))
                },
            )?
        };
        let vocab = model.vocab();
        let n_vocab = usize::try_from(vocab.n_tokens()).unwrap_or(0);
        let mut pieces = Vec::with_capacity(n_vocab);
        let mut ends = Vec::with_capacity(n_vocab);
        for token in vocab.tokens() {
            pieces.push(vocab.token_to_piece(token, false, None));
            ends.push(vocab.is_eog(token));
        }
        let bos = u32::try_from(vocab.bos().0).ok();
        let add_bos = vocab.should_add_bos();
        let context_length = model.n_ctx_train() as usize;
        let architecture = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        Ok(LlamaCppModel {
            making_context: Mutex::new(()),
            pieces,
            ends,
            bos,
            add_bos,
            context_length,
            architecture,
            model,
        })
    }

    /// The model's architecture, as its GGUF metadata names it.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The context length the model was trained with.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of `text`; special tokens written in it (`<|im_start|>`)
    /// are read as such, and no BOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        // llama.cpp counts in `i32`, and the crate panics past it.
        if text.len() > MAX_PROMPT_BYTES {
            return Err(Error::Tokenizer(format!(
                "a prompt of {} bytes is more than llama.cpp takes ({MAX_PROMPT_BYTES})",
                text.len()
            )));
        }
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .filter_map(|t| u32::try_from(t.0).ok())
            .collect())
    }

    pub(crate) fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub(crate) fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub(crate) fn is_end(&self, token: u32) -> bool {
        self.ends.get(token as usize).copied().unwrap_or(false)
    }

    pub(crate) fn piece(&self, token: u32) -> Option<&[u8]> {
        self.pieces.get(token as usize).map(Vec::as_slice)
    }
}

/// One session's llama.cpp context (its KV cache). llama.cpp allocates and
/// clears a context's whole cache when it makes it, so a context is made
/// for what a generation is expected to need (its prompt and token budget),
/// not for the largest context it may use; one that outgrows it is remade
/// larger, up to that limit, and the tokens so far are run again.
pub(crate) struct Runner {
    // Declared before `model` so it is dropped first: it borrows the model.
    context: Option<Context>,
    model: Arc<LlamaCppModel>,
    /// The tokens in the KV cache, in order.
    history: Vec<u32>,
    /// The session's context size: the cache never holds more.
    limit: usize,
}

struct Context {
    inner: LlamaContext<'static>,
    /// Tokens the KV cache holds (llama.cpp may round the size asked up).
    n_ctx: usize,
    /// Most tokens one `decode` takes.
    n_batch: usize,
}

// SAFETY: a llama.cpp context may be used from any thread, one at a time.
// `Runner` touches `inner` only through `&mut self` (`clear`, `reset`,
// `forward`), so a shared reference never reaches it.
unsafe impl Send for Context {}
// SAFETY: as above: nothing reads `inner` through `&self`. (wasmtime-wasi-nn's
// `BackendExecutionContext` asks for `Sync`.)
unsafe impl Sync for Context {}

/// Contexts are made in multiples of this many tokens.
const CONTEXT_STEP: usize = 256;

impl Runner {
    pub(crate) fn new(model: Arc<LlamaCppModel>) -> Runner {
        Runner {
            context: None,
            model,
            history: Vec::new(),
            limit: 0,
        }
    }

    pub(crate) fn model(&self) -> &LlamaCppModel {
        &self.model
    }

    pub(crate) fn len(&self) -> usize {
        self.history.len()
    }

    /// Empties the KV cache.
    pub(crate) fn clear(&mut self) {
        self.history.clear();
        if let Some(context) = &mut self.context {
            context.inner.clear_kv_cache();
        }
    }

    /// Empties the KV cache for a generation of up to `limit` tokens,
    /// expected to need about `expected`.
    pub(crate) fn reset(&mut self, limit: usize, expected: usize) -> Result<(), Error> {
        self.clear();
        self.limit = limit;
        let want = context_size(expected, limit);
        if self.context.as_ref().is_some_and(|c| want <= c.n_ctx) {
            return Ok(());
        }
        // The old context's memory goes before the new one's is taken.
        self.context = None;
        self.context = Some(self.new_context(want)?);
        Ok(())
    }

    fn new_context(&self, ctx: usize) -> Result<Context, Error> {
        let backend = backend()?;
        let n_ctx = u32::try_from(ctx)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| Error::LlamaCpp(format!("a context of {ctx} tokens is out of range")))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as i32);
        let batch = (super::PROMPT_CHUNK as u32).min(n_ctx.get());
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_batch(batch)
            .with_n_ubatch(batch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        // SAFETY: the model lives in the `Arc` this runner holds, which never
        // moves it, and the runner drops its context before that `Arc`.
        let model: &'static CppModel = unsafe { &*std::ptr::from_ref(&self.model.model) };
        let _one_at_a_time = self
            .model
            .making_context
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let inner = model.new_context(backend, params).map_err(|_| {
            Error::LlamaCpp(format!(
                "making a context of {ctx} tokens failed (out of memory?)"
            ))
        })?;
        let n_ctx = inner.n_ctx() as usize;
        let n_batch = (inner.n_batch() as usize).max(1);
        Ok(Context {
            inner,
            n_ctx,
            n_batch,
        })
    }

    /// Runs `tokens` through the model after those already in the cache and
    /// returns the logits for the next token.
    pub(crate) fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        if tokens.is_empty() {
            return Err(Error::LlamaCpp("no tokens to run".into()));
        }
        let needed = self.history.len() + tokens.len();
        if needed > self.limit {
            return Err(Error::ContextFull);
        }
        let room = self.context.as_ref().map_or(0, |c| c.n_ctx);
        if needed > room {
            self.grow(needed)?;
        }
        let logits = self.decode(self.history.len(), tokens)?;
        self.history.extend_from_slice(tokens);
        Ok(logits)
    }

    /// Remakes the context with room for `needed` tokens (at least twice
    /// the old room, within the limit) and runs the cached tokens again.
    fn grow(&mut self, needed: usize) -> Result<(), Error> {
        let room = self.context.as_ref().map_or(0, |c| c.n_ctx);
        let want = context_size(needed.max(room * 2), self.limit);
        self.context = None;
        self.context = Some(self.new_context(want)?);
        let history = std::mem::take(&mut self.history);
        if let Err(e) = self.decode(0, &history) {
            // The cache holds part of the history: start over empty.
            self.clear();
            return Err(e);
        }
        self.history = history;
        Ok(())
    }

    /// Decodes `tokens` at positions from `pos`, in batches the context
    /// takes (llama.cpp aborts the process on a larger one); the logits of
    /// the last token.
    fn decode(&mut self, pos: usize, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        let Some(context) = &mut self.context else {
            return Err(Error::LlamaCpp("no context: set a prompt first".into()));
        };
        let n_vocab = self.model.pieces.len();
        let mut logits = Vec::new();
        let mut at = pos;
        for chunk in tokens.chunks(context.n_batch) {
            let mut batch = LlamaBatch::new(chunk.len(), 1);
            let last = chunk.len() - 1;
            let is_last_chunk = at + chunk.len() == pos + tokens.len();
            for (i, &token) in chunk.iter().enumerate() {
                let id = i32::try_from(token)
                    .ok()
                    .filter(|&id| (id as usize) < n_vocab)
                    .ok_or_else(|| Error::LlamaCpp(format!("token id {token} is out of range")))?;
                let position = i32::try_from(at + i)
                    .map_err(|_| Error::LlamaCpp("position out of range".into()))?;
                batch
                    .add(LlamaToken(id), position, &[0], is_last_chunk && i == last)
                    .map_err(|e| Error::LlamaCpp(e.to_string()))?;
            }
            context
                .inner
                .decode(&mut batch)
                .map_err(|e| Error::LlamaCpp(e.to_string()))?;
            if is_last_chunk {
                logits = context.inner.get_logits_ith(last as i32).to_vec();
            }
            at += chunk.len();
        }
        Ok(logits)
    }
}

/// A context size for `expected` tokens: rounded up to [`CONTEXT_STEP`],
/// within `limit`.
fn context_size(expected: usize, limit: usize) -> usize {
    expected
        .max(1)
        .div_ceil(CONTEXT_STEP)
        .saturating_mul(CONTEXT_STEP)
        .min(limit)
        .max(1)
}

/// Held while llama.cpp loads a model, so that the last error it logged is
/// most likely about that load (a running session may log one of its own
/// meanwhile: the message is best effort, the failure itself is not).
static LOADING: Mutex<()> = Mutex::new(());

/// The last error llama.cpp logged.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The longest prompt handed to llama.cpp's tokenizer, which counts in
/// `i32` (half of it, since a token may be a byte).
const MAX_PROMPT_BYTES: usize = (i32::MAX / 2) as usize;

fn take_last_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// llama.cpp's process-wide state, set up once, its log kept for errors.
fn backend() -> Result<&'static LlamaBackend, Error> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // SAFETY: `log` is a plain function that lives forever and only
            // reads the NUL-terminated text it is given.
            unsafe { llama_cpp_sys_2::llama_log_set(Some(log), std::ptr::null_mut()) };
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| Error::LlamaCpp(format!("starting llama.cpp failed: {e}")))
}

unsafe extern "C" fn log(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const c_char,
    _: *mut c_void,
) {
    if level != llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR || text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string, valid for the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let line = first_line_without_paths(&text);
    if !line.is_empty() {
        *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
    }
}

/// llama.cpp's message, trimmed to one line, with anything that looks like a
/// file path left out (errors reach guests and clients).
fn first_line_without_paths(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.split_once(": ").map_or(line, |(prefix, rest)| {
        // llama.cpp prefixes messages with the function's name.
        if prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            rest
        } else {
            line
        }
    });
    line.split_whitespace()
        .map(|word| if word.contains('/') { "<path>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A file that does not start with `GGUF` is refused before llama.cpp sees it.
fn check_magic(path: &Path) -> Result<(), Error> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(Error::Io)?;
    if &magic != b"GGUF" {
        return Err(Error::Format("not a GGUF file (bad magic)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_sized_in_steps_within_the_limit() {
        assert_eq!(context_size(30, 4096), 256);
        assert_eq!(context_size(257, 4096), 512);
        assert_eq!(context_size(5000, 4096), 4096);
        assert_eq!(context_size(30, 20), 20);
        assert_eq!(context_size(0, 4096), 256);
    }

    #[test]
    fn error_lines_lose_function_names_and_paths() {
        assert_eq!(
            first_line_without_paths(
                "llama_model_load: error loading model: failed to open /srv/m.gguf\n"
            ),
            "error loading model: failed to open <path>"
        );
        assert_eq!(first_line_without_paths("\n\n"), "");
    }
}
