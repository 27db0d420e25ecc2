//! GGUF language models on candle: Tern's pure-Rust stand-in for WasmEdge's
//! llama.cpp-based GGML backend.
//!
//! This module owns everything between a GGUF file and generated text:
//!
//! - [`LlamaModel`]: the quantised weights and forward pass of a `llama` or
//!   `qwen2` model (CPU only). Loaded once, immutable, shared through an `Arc`
//!   by any number of sessions on any threads.
//! - [`Tokenizer`]: byte-level BPE (`gpt2`) or SentencePiece-style (`llama`)
//!   tokenization, built from the file's `tokenizer.ggml.*` metadata.
//! - [`Options`]: sampling options parsed from the JSON a guest passes, with
//!   WasmEdge's keys and defaults.
//! - [`Session`]: one generation at a time over a shared model: its own KV
//!   cache, random number generator, stop-string handling and timings.
//!
//! With the `llama-cpp` cargo feature, [`LlamaCppModel`] runs the same files
//! on llama.cpp, and a [`Session`] made with [`Session::on_llama_cpp`] drives
//! it: the tokenizer and forward pass are llama.cpp's, everything else
//! (sampling, options, stop strings) is the same code as on candle.
//!
//! It does not own the WASI-NN plumbing (graphs, contexts, tensors as guests
//! see them); that layer turns guest calls into these types.

#[cfg(feature = "llama-cpp")]
mod llama_cpp;
mod model;
mod options;
mod tokenizer;

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "llama-cpp")]
pub use llama_cpp::LlamaCppModel;
pub use model::LlamaModel;
pub use options::Options;
pub use tokenizer::Tokenizer;

use model::KvCache;

/// Most prompt tokens run through the model in one batch; longer prompts go
/// in chunks, which bounds the size of the attention scores.
const PROMPT_CHUNK: usize = 512;

/// What went wrong loading a model, parsing options or generating.
///
/// Messages are one line and name what was wrong; they never include host
/// paths (callers add the model's name).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the model file failed.
    #[error("reading the model file failed: {0}")]
    Io(#[source] std::io::Error),
    /// The model file is not a usable GGUF model: not GGUF at all, an
    /// unsupported architecture or tokenizer, a missing or malformed tensor or
    /// metadata key (named in the message).
    #[error("{0}")]
    Format(String),
    /// A tensor operation failed while running the model.
    #[error("inference failed: {0}")]
    Candle(String),
    /// An option has the wrong type or an out-of-range value (the key is named).
    #[error("{0}")]
    Options(String),
    /// The prompt does not leave room for a single generated token.
    #[error("the prompt has {tokens} tokens, too many for a context of {ctx}")]
    PromptTooLong {
        /// Tokens in the prompt (including BOS).
        tokens: usize,
        /// The session's context size.
        ctx: usize,
    },
    /// The context is full.
    #[error("the context is full")]
    ContextFull,
    /// Text could not be tokenized or token ids could not be decoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The caller asked generation to stop.
    #[error("generation was cancelled")]
    Cancelled,
    /// llama.cpp failed (the `llama-cpp` engine).
    #[error("llama.cpp: {0}")]
    LlamaCpp(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(model::first_line(&e.to_string()))
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end token, or a stop string appeared.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// The context is full.
    ContextFull,
}

/// Time a session spent running the model, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Prompt processing.
    pub prompt: Duration,
    /// Generation: one forward pass and one sampling per token.
    pub generation: Duration,
}

/// One generation at a time over a shared model. Owns its KV cache, so
/// sessions on the same [`LlamaModel`] run independently (and in parallel).
pub struct Session {
    engine: Engine,
    options: Options,
    rng: sampling::Rng,
    /// Whether a prompt has been set (and not failed).
    started: bool,
    /// Nothing more will be produced: a finish reason is set (and the last
    /// text returned), or generation failed.
    done: bool,
    /// Prompt tokens; run through the model on the first step.
    prompt: Vec<u32>,
    prompt_done: bool,
    /// The session's context size: the options' clamped to the model's.
    ctx: usize,
    /// Logits waiting to be sampled from.
    logits: Option<Vec<f32>>,
    /// The last sampled token, not yet run through the model.
    last_token: Option<u32>,
    /// Bytes of an incomplete UTF-8 sequence, waiting for the next token.
    bytes: Vec<u8>,
    /// Decoded text held back because it could be the start of a stop string.
    pending: String,
    text: String,
    output_tokens: usize,
    finish: Option<FinishReason>,
    timings: Timings,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("options", &self.options)
            .field("input_tokens", &self.prompt.len())
            .field("output_tokens", &self.output_tokens)
            .field("finish_reason", &self.finish)
            .finish_non_exhaustive()
    }
}

// Sessions move between threads and models are shared by them.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    const fn sendable<T: Send>() {}
    shareable::<LlamaModel>();
    #[cfg(feature = "llama-cpp")]
    shareable::<LlamaCppModel>();
    sendable::<Session>();
};

impl Session {
    /// A session on `model` with `options`; call [`set_prompt`](Self::set_prompt)
    /// to start generating.
    pub fn new(model: Arc<LlamaModel>, options: Options) -> Session {
        Session::with_engine(
            Engine::Candle {
                cache: model.new_cache(0),
                model,
            },
            options,
        )
    }

    /// A session on a model loaded by llama.cpp.
    #[cfg(feature = "llama-cpp")]
    pub fn on_llama_cpp(model: Arc<LlamaCppModel>, options: Options) -> Session {
        Session::with_engine(Engine::LlamaCpp(llama_cpp::Runner::new(model)), options)
    }

    fn with_engine(engine: Engine, options: Options) -> Session {
        Session {
            engine,
            rng: sampling::Rng::new(options.seed),
            options,
            started: false,
            done: false,
            prompt: Vec::new(),
            prompt_done: false,
            ctx: 0,
            logits: None,
            last_token: None,
            bytes: Vec::new(),
            pending: String::new(),
            text: String::new(),
            output_tokens: 0,
            finish: None,
            timings: Timings::default(),
        }
    }

    /// The options; changes apply from the next step on, except `ctx_size`
    /// (read by [`set_prompt`](Self::set_prompt)) and `seed` (read when the
    /// prompt is processed, on the first step after `set_prompt`).
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// Replaces the prompt: clears the KV cache and any generation, then
    /// tokenizes `prompt`, adding BOS in front when the model's
    /// `tokenizer.ggml.add_bos_token` says so (and the text does not already
    /// start with it). The session's context size is `ctx_size` clamped to the
    /// model's context length; [`Error::PromptTooLong`] if the prompt's tokens
    /// do not leave room to generate.
    pub fn set_prompt(&mut self, prompt: &str) -> Result<(), Error> {
        self.clear();
        let text_tokens = self.engine.encode(prompt)?;
        let mut tokens = Vec::with_capacity(text_tokens.len() + 1);
        if let Some(bos) = self.engine.bos() {
            let wants_bos = self.engine.add_bos() || text_tokens.is_empty();
            if wants_bos && text_tokens.first() != Some(&bos) {
                tokens.push(bos);
            }
        }
        tokens.extend(text_tokens);
        if tokens.is_empty() {
            return Err(Error::Tokenizer(
                "the prompt is empty and the model has no bos token to start from".into(),
            ));
        }
        let ctx = self
            .options
            .ctx_size
            .min(self.engine.context_length())
            .max(1);
        if tokens.len() >= ctx {
            return Err(Error::PromptTooLong {
                tokens: tokens.len(),
                ctx,
            });
        }
        let expected = tokens.len().saturating_add(self.options.max_tokens);
        self.engine.reset(ctx, expected)?;
        self.ctx = ctx;
        self.prompt = tokens;
        self.started = true;
        Ok(())
    }

    /// Produces the next piece of text. The first call after
    /// [`set_prompt`](Self::set_prompt) first runs the prompt through the model
    /// (in chunks of at most 512 tokens).
    ///
    /// `Ok(Some(piece))` is the newly decodable text, possibly `""` while a
    /// token is an incomplete UTF-8 sequence or could be the start of a stop
    /// string (such text is held back until it is known not to be). `Ok(None)`
    /// means generation has ended, see [`finish_reason`](Self::finish_reason):
    /// an end token (not included in the text), `max_tokens` reached, a stop
    /// string appeared (the text is cut before it, and no piece contains any of
    /// it), or the context is full. Also `Ok(None)` before any prompt is set.
    /// After an error, the generation is over and further steps return
    /// `Ok(None)`.
    pub fn step(&mut self) -> Result<Option<String>, Error> {
        if self.done || !self.started {
            return Ok(None);
        }
        let result = self.advance();
        if result.is_err() {
            self.done = true;
        }
        result
    }

    /// Runs [`step`](Self::step) until generation ends, calling `keep_going()`
    /// before each step; if it returns false, stops with [`Error::Cancelled`]
    /// (the session can be stepped on afterwards). Returns the whole text.
    pub fn generate(&mut self, keep_going: &mut dyn FnMut() -> bool) -> Result<String, Error> {
        loop {
            if !keep_going() {
                return Err(Error::Cancelled);
            }
            if self.step()?.is_none() {
                return Ok(self.text.clone());
            }
        }
    }

    /// All text produced since [`set_prompt`](Self::set_prompt), after
    /// stop-string cutting.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Tokens in the prompt, including BOS.
    pub fn input_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// Tokens sampled since [`set_prompt`](Self::set_prompt), including an end
    /// token that ended generation (as llama.cpp counts them).
    pub fn output_tokens(&self) -> usize {
        self.output_tokens
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// What runs the model: `tern-candle` or `tern-llama.cpp`.
    pub fn engine(&self) -> &'static str {
        self.engine.name()
    }

    /// Time spent in prompt processing and in generation since
    /// [`set_prompt`](Self::set_prompt).
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Forgets the prompt and any generation, keeping the cache's memory.
    fn clear(&mut self) {
        self.engine.clear();
        self.started = false;
        self.done = false;
        self.prompt.clear();
        self.prompt_done = false;
        self.ctx = 0;
        self.logits = None;
        self.last_token = None;
        self.bytes.clear();
        self.pending.clear();
        self.text.clear();
        self.output_tokens = 0;
        self.finish = None;
        self.timings = Timings::default();
    }

    /// One token: sample it, decode it, and return the text that is now safe
    /// to hand out.
    fn advance(&mut self) -> Result<Option<String>, Error> {
        let token = match self.next_token()? {
            Next::Token(token) => token,
            Next::End(reason) => return Ok(self.end_with(reason)),
        };
        if self.engine.is_end(token) {
            return Ok(self.end_with(FinishReason::Stop));
        }
        let piece = self
            .engine
            .piece(token)
            .ok_or_else(|| Error::Tokenizer(format!("sampled token id {token} is out of range")))?;
        self.bytes.extend_from_slice(piece);
        let decoded = text::drain_utf8(&mut self.bytes);
        self.pending.push_str(&decoded);
        match text::scan_stops(&self.pending, &self.options.stop) {
            text::Scan::Stop(_) => Ok(self.end_with(FinishReason::Stop)),
            text::Scan::Emit(safe) => {
                let piece: String = self.pending.drain(..safe).collect();
                self.text.push_str(&piece);
                Ok(Some(piece))
            }
        }
    }

    /// Ends generation: whatever text was held back goes out now (cut before a
    /// stop string if one appeared). Returns that last piece, if any.
    fn end_with(&mut self, reason: FinishReason) -> Option<String> {
        let mut reason = reason;
        let rest = String::from_utf8_lossy(&self.bytes).into_owned();
        self.bytes.clear();
        self.pending.push_str(&rest);
        if let text::Scan::Stop(at) = text::scan_stops(&self.pending, &self.options.stop) {
            self.pending.truncate(at);
            reason = FinishReason::Stop;
        }
        self.finish = Some(reason);
        self.done = true;
        let piece = std::mem::take(&mut self.pending);
        self.text.push_str(&piece);
        (!piece.is_empty()).then_some(piece)
    }

    /// Samples the next token, first running the prompt or the previous token
    /// through the model as needed.
    fn next_token(&mut self) -> Result<Next, Error> {
        if self.output_tokens >= self.options.max_tokens {
            return Ok(Next::End(FinishReason::Length));
        }
        if !self.prompt_done {
            self.process_prompt()?;
        }
        let started = Instant::now();
        let logits = match (self.logits.take(), self.last_token) {
            (Some(logits), _) => logits,
            (None, Some(last)) => {
                if self.engine.len() >= self.ctx {
                    return Ok(Next::End(FinishReason::ContextFull));
                }
                self.engine.forward(&[last])?
            }
            (None, None) => return Err(Error::Candle("no logits to sample from".into())),
        };
        let token = sampling::sample(
            &logits,
            self.options.temperature,
            self.options.top_p,
            &mut self.rng,
        );
        self.last_token = Some(token);
        self.output_tokens += 1;
        self.timings.generation += started.elapsed();
        Ok(Next::Token(token))
    }

    fn process_prompt(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        // Seeded here, not in `set_prompt`, so a seed set through
        // `options_mut` after the prompt still applies.
        self.rng = sampling::Rng::new(self.options.seed);
        let mut logits = None;
        for chunk in self.prompt.chunks(PROMPT_CHUNK) {
            logits = Some(self.engine.forward(chunk)?);
        }
        self.logits = logits;
        self.prompt_done = true;
        self.timings.prompt += started.elapsed();
        Ok(())
    }
}

/// What runs the model for a session: its tokenizer, forward pass and KV
/// cache.
enum Engine {
    Candle {
        model: Arc<LlamaModel>,
        cache: KvCache,
    },
    #[cfg(feature = "llama-cpp")]
    LlamaCpp(llama_cpp::Runner),
}

impl Engine {
    fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        match self {
            Engine::Candle { model, .. } => model.tokenizer().encode(text),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().encode(text),
        }
    }

    fn bos(&self) -> Option<u32> {
        match self {
            Engine::Candle { model, .. } => model.tokenizer().bos(),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().bos(),
        }
    }

    fn add_bos(&self) -> bool {
        match self {
            Engine::Candle { model, .. } => model.tokenizer().add_bos(),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().add_bos(),
        }
    }

    fn is_end(&self, token: u32) -> bool {
        match self {
            Engine::Candle { model, .. } => model.tokenizer().is_end(token),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().is_end(token),
        }
    }

    fn piece(&self, token: u32) -> Option<&[u8]> {
        match self {
            Engine::Candle { model, .. } => model.tokenizer().piece(token),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().piece(token),
        }
    }

    fn context_length(&self) -> usize {
        match self {
            Engine::Candle { model, .. } => model.context_length(),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.model().context_length(),
        }
    }

    /// Tokens in the KV cache.
    fn len(&self) -> usize {
        match self {
            Engine::Candle { cache, .. } => cache.len(),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.len(),
        }
    }

    /// Empties the KV cache, ready for up to `ctx` tokens, of which a
    /// generation is expected to use about `expected`.
    fn reset(&mut self, ctx: usize, expected: usize) -> Result<(), Error> {
        match self {
            Engine::Candle { cache, .. } => {
                // Candle's cache grows as tokens arrive.
                let _ = expected;
                cache.reset(ctx);
                Ok(())
            }
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.reset(ctx, expected),
        }
    }

    /// Empties the KV cache, keeping its memory.
    fn clear(&mut self) {
        match self {
            Engine::Candle { cache, .. } => cache.reset(0),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.clear(),
        }
    }

    /// Runs `tokens` after those in the cache; the logits of the next token.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        match self {
            Engine::Candle { model, cache } => model.forward(tokens, cache),
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(runner) => runner.forward(tokens),
        }
    }

    /// The engine's name, as the output metadata gives it.
    fn name(&self) -> &'static str {
        match self {
            Engine::Candle { .. } => "tern-candle",
            #[cfg(feature = "llama-cpp")]
            Engine::LlamaCpp(_) => "tern-llama.cpp",
        }
    }
}

/// What the next step of generation is.
enum Next {
    Token(u32),
    End(FinishReason),
}

/// Choosing the next token from logits.
mod sampling {
    /// Top-p starts from this many most likely tokens and widens only if they
    /// do not cover `top_p`; sorting the whole vocabulary for every token
    /// would cost more than the rest of sampling.
    const FIRST_CANDIDATES: usize = 64;

    /// xoshiro256** seeded through splitmix64: small, fast, and the same
    /// sequence for a seed on every platform.
    pub(super) struct Rng {
        s: [u64; 4],
    }

    impl Rng {
        pub(super) fn new(seed: u64) -> Rng {
            let mut state = seed;
            let mut next = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            };
            Rng {
                s: [next(), next(), next(), next()],
            }
        }

        fn next_u64(&mut self) -> u64 {
            let s = &mut self.s;
            let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            result
        }

        /// Uniform in [0, 1).
        pub(super) fn next_f64(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }
    }

    /// Picks a token: greedy when `temperature` is 0, otherwise from
    /// softmax(logits / temperature) restricted to the top-p nucleus.
    pub(super) fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
        let t = temperature as f32;
        if t.is_nan() || t < f32::MIN_POSITIVE || logits.len() < 2 {
            return argmax(logits);
        }
        let max = logits
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        // Unnormalised probabilities; the most likely token has 1.
        let probs: Vec<f32> = logits
            .iter()
            .map(|&l| {
                let p = ((l - max) / t).exp();
                if p.is_nan() { 0.0 } else { p }
            })
            .collect();
        if top_p < 1.0 {
            pick(&probs, nucleus(&probs, top_p), rng)
        } else {
            pick(&probs, 0..probs.len() as u32, rng)
        }
    }

    /// The most likely token; the lowest id among equals, NaN never wins.
    pub(super) fn argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        let mut best_value = f32::NEG_INFINITY;
        for (id, &v) in logits.iter().enumerate() {
            if v > best_value {
                best = id;
                best_value = v;
            }
        }
        best as u32
    }

    /// The smallest set of most likely tokens whose probabilities add up to
    /// at least `top_p` of the total, most likely first (ties by id, so the
    /// result does not depend on sort internals).
    pub(super) fn nucleus(probs: &[f32], top_p: f64) -> Vec<u32> {
        let target = top_p * probs.iter().map(|&p| f64::from(p)).sum::<f64>();
        let by_probability = |a: &u32, b: &u32| {
            probs[*b as usize]
                .total_cmp(&probs[*a as usize])
                .then(a.cmp(b))
        };
        let mut k = FIRST_CANDIDATES.min(probs.len());
        loop {
            let mut ids: Vec<u32> = (0..probs.len() as u32).collect();
            if k < ids.len() && k > 0 {
                ids.select_nth_unstable_by(k - 1, by_probability);
                ids.truncate(k);
            }
            ids.sort_unstable_by(by_probability);
            let mut covered = 0.0;
            for (i, &id) in ids.iter().enumerate() {
                covered += f64::from(probs[id as usize]);
                if covered >= target {
                    ids.truncate(i + 1);
                    return ids;
                }
            }
            if k >= probs.len() {
                return ids;
            }
            k = k.saturating_mul(8).min(probs.len());
        }
    }

    /// Draws one of `ids` with probability proportional to `probs`.
    fn pick(probs: &[f32], ids: impl IntoIterator<Item = u32> + Clone, rng: &mut Rng) -> u32 {
        let total: f64 = ids
            .clone()
            .into_iter()
            .map(|id| f64::from(probs[id as usize]))
            .sum();
        let mut r = rng.next_f64() * total;
        let mut chosen = None;
        for id in ids {
            let p = f64::from(probs[id as usize]);
            if p <= 0.0 {
                continue;
            }
            chosen = Some(id);
            if r < p {
                break;
            }
            r -= p;
        }
        // Rounding can leave `r` just above the last probability: take the
        // last token with any weight.
        chosen.unwrap_or_else(|| argmax(probs))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn greedy_takes_the_lowest_id_among_ties() {
            assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
            assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN]), 1);
            let mut rng = Rng::new(1);
            assert_eq!(sample(&[0.0, 5.0, 5.0], 0.0, 0.9, &mut rng), 1);
        }

        #[test]
        fn same_seed_same_tokens() {
            let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
            let run = |seed| {
                let mut rng = Rng::new(seed);
                (0..50)
                    .map(|_| sample(&logits, 0.8, 0.9, &mut rng))
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(42), run(42));
            assert_ne!(run(42), run(43));
        }

        #[test]
        fn nucleus_keeps_the_smallest_covering_set() {
            // Powers of two, so the sums are exact.
            let probs = [0.125, 0.5, 0.25, 0.125];
            assert_eq!(nucleus(&probs, 0.5), vec![1]);
            assert_eq!(nucleus(&probs, 0.75), vec![1, 2]);
            assert_eq!(nucleus(&probs, 0.8), vec![1, 2, 0]);
            // Wider than the first candidate window.
            let flat = vec![1.0f32; 1000];
            assert_eq!(nucleus(&flat, 0.5).len(), 500);
        }

        #[test]
        fn samples_stay_in_the_nucleus() {
            let logits = [10.0, 0.0, 9.9, -5.0];
            let mut rng = Rng::new(7);
            for _ in 0..200 {
                let id = sample(&logits, 1.0, 0.9, &mut rng);
                assert!(id == 0 || id == 2);
            }
        }

        #[test]
        fn uniform_floats() {
            let mut rng = Rng::new(0);
            for _ in 0..1000 {
                let x = rng.next_f64();
                assert!((0.0..1.0).contains(&x));
            }
        }
    }
}

/// Turning token bytes into text that is safe to hand out.
mod text {
    /// Where pending text stands against the stop strings.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Scan {
        /// A stop string starts at this byte offset: the text ends there.
        Stop(usize),
        /// The first this-many bytes can go out; the rest could be the start
        /// of a stop string and waits for more text.
        Emit(usize),
    }

    /// Checks `pending` (text not yet handed out, which holds the start of any
    /// stop string that might be forming) against `stops`.
    pub(super) fn scan_stops(pending: &str, stops: &[String]) -> Scan {
        let active = || stops.iter().filter(|s| !s.is_empty());
        if let Some(at) = active().filter_map(|s| pending.find(s.as_str())).min() {
            return Scan::Stop(at);
        }
        // Hold back the longest suffix that is a proper prefix of a stop
        // string; longer suffixes cannot be one, so only look that far back.
        let longest = active().map(String::len).max().unwrap_or(0);
        let hold_from = pending
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| pending.len() - i < longest)
            .find(|&i| active().any(|s| s.starts_with(&pending[i..])));
        Scan::Emit(hold_from.unwrap_or(pending.len()))
    }

    /// Takes the decodable part out of `bytes`: complete UTF-8 characters,
    /// invalid sequences as U+FFFD. An incomplete sequence at the end stays
    /// for the next token to complete.
    pub(super) fn drain_utf8(bytes: &mut Vec<u8>) -> String {
        let mut out = String::new();
        let mut start = 0;
        while start < bytes.len() {
            match std::str::from_utf8(&bytes[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = bytes.len();
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&bytes[start..valid]));
                    start = valid;
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{fffd}');
                            start += len;
                        }
                        None => break,
                    }
                }
            }
        }
        bytes.drain(..start);
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn stops(list: &[&str]) -> Vec<String> {
            list.iter().map(|s| s.to_string()).collect()
        }

        #[test]
        fn no_stops_emits_everything() {
            assert_eq!(scan_stops("hello", &[]), Scan::Emit(5));
            assert_eq!(scan_stops("hello", &stops(&[""])), Scan::Emit(5));
        }

        #[test]
        fn complete_stop_cuts_at_the_earliest() {
            let s = stops(&["User:", "lo"]);
            assert_eq!(scan_stops("hello User: hi", &s), Scan::Stop(3));
            assert_eq!(scan_stops("say User:", &stops(&["User:"])), Scan::Stop(4));
        }

        #[test]
        fn possible_stop_start_is_held_back() {
            let s = stops(&["User:"]);
            assert_eq!(scan_stops("hello Us", &s), Scan::Emit(6));
            assert_eq!(scan_stops("hello U", &s), Scan::Emit(6));
            assert_eq!(scan_stops("hello", &s), Scan::Emit(5));
            // "UU": only the second U can start the stop string.
            assert_eq!(scan_stops("UU", &s), Scan::Emit(1));
        }

        #[test]
        fn hold_back_respects_char_boundaries() {
            let s = stops(&["éa"]);
            assert_eq!(scan_stops("xé", &s), Scan::Emit(1));
            assert_eq!(scan_stops("é", &stops(&["b"])), Scan::Emit(2));
        }

        #[test]
        fn streaming_pieces_never_contain_a_stop_string() {
            let s = stops(&["<end>"]);
            let mut pending = String::new();
            let mut out = String::new();
            for piece in ["Hi", " <", "e", "n", "d", "> more"] {
                pending.push_str(piece);
                match scan_stops(&pending, &s) {
                    Scan::Emit(n) => out.extend(pending.drain(..n)),
                    Scan::Stop(at) => {
                        pending.truncate(at);
                        out.push_str(&pending);
                        break;
                    }
                }
            }
            assert_eq!(out, "Hi ");
        }

        #[test]
        fn utf8_is_held_until_complete() {
            let euro = "€".as_bytes(); // 3 bytes
            let mut bytes = euro[..2].to_vec();
            assert_eq!(drain_utf8(&mut bytes), "");
            assert_eq!(bytes.len(), 2);
            bytes.push(euro[2]);
            bytes.extend_from_slice(b"ab");
            assert_eq!(drain_utf8(&mut bytes), "€ab");
            assert!(bytes.is_empty());
        }

        #[test]
        fn invalid_utf8_becomes_replacement_characters() {
            let mut bytes = vec![b'a', 0xff, b'b', 0xe2, 0x82];
            assert_eq!(drain_utf8(&mut bytes), "a\u{fffd}b");
            assert_eq!(bytes, vec![0xe2, 0x82]);
        }
    }
}
