//! The GGUF backend on a real model (SmolLM2-135M-Instruct, from the PyPI
//! wheel `scripts/setup` downloads), against what llama.cpp does with the
//! same file: its token ids for a ChatML prompt, and its greedy answer.

use std::path::Path;
use std::sync::Arc;

use tern_nn::ggml::{LlamaModel, Options, Session};

const PROMPT: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn model() -> Arc<LlamaModel> {
    let path = Path::new(test_programs::MODELS_DIR).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    Arc::new(LlamaModel::load(&path).expect("scripts/setup downloads the test models"))
}

#[test]
fn tokens_match_llama_cpp() {
    let model = model();
    // llama.cpp 0.3.16 (llama-cpp-python), `tokenize(prompt, special=True)`.
    let expected = [
        1, 9690, 198, 2683, 359, 253, 5356, 11173, 30, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575,
        282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(model.tokenizer().encode(PROMPT).unwrap(), expected);
}

#[test]
fn greedy_answer_matches_llama_cpp() {
    let options = Options {
        temperature: 0.0,
        max_tokens: 24,
        ..Options::default()
    };
    let mut session = Session::new(model(), options);
    session.set_prompt(PROMPT).unwrap();
    let text = session.generate(&mut || true).unwrap();
    // llama.cpp's greedy answer on the same file.
    assert_eq!(text, "The capital of France is Paris.");
}
