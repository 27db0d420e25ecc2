//! The GGUF backend called natively, for `bench/nn`: generates greedily
//! from a ChatML prompt, token by token, and prints the answer on stdout and
//! `stats: first_ms=F rest_ms=R rest_tokens=N` on stderr, measured as
//! `nn_llama_chat --stream --stats` measures them inside the guest.
//!
//! ```text
//! cargo run --release -p tern-nn --example generate -- MODEL.gguf SYSTEM USER N_PREDICT [ENGINE]
//! ```
//!
//! ENGINE is `candle` (the default) or, in a build with the `llama-cpp`
//! feature, `llama.cpp`.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use tern_nn::GgmlEngine;
use tern_nn::ggml::{LlamaModel, Options, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, system, user, n_predict, engine) = match args.as_slice() {
        [_, model, system, user, n_predict] => (model, system, user, n_predict, "candle"),
        [_, model, system, user, n_predict, engine] => {
            (model, system, user, n_predict, engine.as_str())
        }
        _ => return Err("usage: generate MODEL.gguf SYSTEM USER N_PREDICT [ENGINE]".into()),
    };
    let options = Options {
        temperature: 0.0,
        max_tokens: n_predict.parse()?,
        ..Options::default()
    };
    let prompt = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    let mut session = match engine.parse::<GgmlEngine>()? {
        GgmlEngine::Candle => Session::new(Arc::new(LlamaModel::load(model.as_ref())?), options),
        #[cfg(feature = "llama-cpp")]
        GgmlEngine::LlamaCpp => Session::on_llama_cpp(
            Arc::new(tern_nn::ggml::LlamaCppModel::load(model.as_ref())?),
            options,
        ),
        other => return Err(format!("engine {other} is not in this build").into()),
    };
    let mut out = std::io::stdout().lock();
    // Timed from the prompt on, as the guest's first `compute_single` is:
    // tokenizing it and setting up the KV cache count.
    let started = Instant::now();
    session.set_prompt(&prompt)?;
    let mut first = None;
    let mut produced = 0u64;
    loop {
        let piece = session.step()?;
        let first = *first.get_or_insert_with(|| started.elapsed());
        let Some(piece) = piece else {
            writeln!(out)?;
            eprintln!(
                "stats: first_ms={:.3} rest_ms={:.3} rest_tokens={}",
                first.as_secs_f64() * 1e3,
                (started.elapsed() - first).as_secs_f64() * 1e3,
                produced.saturating_sub(1)
            );
            eprintln!(
                "tokens: input={} output={}",
                session.input_tokens(),
                session.output_tokens()
            );
            return Ok(());
        };
        produced += 1;
        out.write_all(piece.as_bytes())?;
        out.flush()?;
    }
}
