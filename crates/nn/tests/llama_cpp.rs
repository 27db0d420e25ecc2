//! The optional llama.cpp engine (`--features llama-cpp`, run by
//! `scripts/test-llama-cpp`, not by CI's default build) on the SmolLM2 file
//! `scripts/setup` downloads: the same token ids and greedy answer as the
//! candle engine and as llama.cpp's own Python binding, the WASI-NN
//! context's calls, and bad files refused with a one-line error.
#![cfg(feature = "llama-cpp")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_nn::ggml::{LlamaCppModel, LlamaModel, Options, Session};
use tern_nn::{
    Cancel, Context, Encoding, Error, GgmlEngine, Id, Limits, Model, Tensor, TensorType,
};

const PROMPT: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn path() -> PathBuf {
    Path::new(test_programs::MODELS_DIR).join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn model() -> Arc<LlamaCppModel> {
    use std::sync::OnceLock;
    static MODEL: OnceLock<Arc<LlamaCppModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(LlamaCppModel::load(&path()).expect("scripts/setup downloads the models"))
        })
        .clone()
}

fn greedy(max_tokens: usize) -> Options {
    Options {
        temperature: 0.0,
        max_tokens,
        ..Options::default()
    }
}

fn text_tensor(text: &str) -> Tensor {
    Tensor::new(
        vec![text.len() as u32],
        TensorType::U8,
        text.as_bytes().to_vec(),
    )
}

#[test]
fn tokens_match_the_candle_tokenizer_and_llama_cpp_python() {
    // llama.cpp 0.3.16 (llama-cpp-python), `tokenize(prompt, special=True)`,
    // without its BOS (the session adds that).
    let expected = [
        1, 9690, 198, 2683, 359, 253, 5356, 11173, 30, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575,
        282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(model().encode(PROMPT).unwrap(), expected);
    let candle = LlamaModel::load(&path()).unwrap();
    assert_eq!(candle.tokenizer().encode(PROMPT).unwrap(), expected);
    assert_eq!(model().architecture(), "llama");
}

#[test]
fn the_greedy_answer_is_the_candle_engine_s() {
    let mut session = Session::on_llama_cpp(model(), greedy(24));
    session.set_prompt(PROMPT).unwrap();
    let text = session.generate(&mut || true).unwrap();
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(session.engine(), "tern-llama.cpp");
    assert_eq!(session.input_tokens(), 27);

    let candle = Arc::new(LlamaModel::load(&path()).unwrap());
    let mut session = Session::new(candle, greedy(24));
    session.set_prompt(PROMPT).unwrap();
    assert_eq!(session.generate(&mut || true).unwrap(), text);
}

#[test]
fn a_session_is_reused_and_sessions_share_the_model() {
    let answers: Vec<String> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut session = Session::on_llama_cpp(model(), greedy(24));
                    let mut answers = Vec::new();
                    // A second prompt on the same session: the KV cache is
                    // emptied, not appended to.
                    for _ in 0..2 {
                        session.set_prompt(PROMPT).unwrap();
                        answers.push(session.generate(&mut || true).unwrap());
                    }
                    answers
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(answers, vec!["The capital of France is Paris."; 4]);
}

#[test]
fn a_context_made_for_a_short_answer_grows_when_the_budget_is_raised() {
    let story = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n";
    // Made for 300 tokens from the start: one context of 512.
    let mut planned = Session::on_llama_cpp(model(), greedy(300));
    planned.set_prompt(story).unwrap();
    let expected = planned.generate(&mut || true).unwrap();
    assert!(
        planned.input_tokens() + planned.output_tokens() > 256,
        "the answer should outgrow a first context of 256: {expected:?}"
    );
    // Made for 2 tokens (a context of 256), then raised: the context is
    // remade larger and the tokens so far run again.
    let mut raised = Session::on_llama_cpp(model(), greedy(2));
    raised.set_prompt(story).unwrap();
    raised.options_mut().max_tokens = 300;
    let text = raised.generate(&mut || true).unwrap();
    assert_eq!(raised.output_tokens(), planned.output_tokens());
    assert_eq!(raised.finish_reason(), planned.finish_reason());
    // The same text up to the regrowth and well past it. Running the
    // cached tokens again in one batch sums in another order, so the two
    // may part near the end of a long greedy answer.
    let same = text
        .chars()
        .zip(expected.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        same * 4 > expected.chars().count() * 3,
        "only {same} characters agree:\n{text}\n---\n{expected}"
    );
}

#[test]
fn a_context_made_small_takes_a_longer_prompt_later() {
    // A context of 16 tokens takes batches of 16 at most; llama.cpp aborts
    // the process on a larger one, so a longer prompt later in the session
    // must go in batches.
    let mut session = Session::on_llama_cpp(
        model(),
        Options {
            ctx_size: 16,
            ..greedy(1)
        },
    );
    session
        .set_prompt("<|im_start|>user\nhi<|im_end|>\n")
        .unwrap();
    session.generate(&mut || true).unwrap();
    session.options_mut().ctx_size = 4096;
    session.options_mut().max_tokens = 24;
    session.set_prompt(PROMPT).unwrap();
    assert_eq!(
        session.generate(&mut || true).unwrap(),
        "The capital of France is Paris."
    );
}

#[test]
fn stop_strings_max_tokens_and_a_small_context_hold() {
    let mut session = Session::on_llama_cpp(
        model(),
        Options {
            stop: vec![" is".into()],
            ..greedy(24)
        },
    );
    session.set_prompt(PROMPT).unwrap();
    assert_eq!(
        session.generate(&mut || true).unwrap(),
        "The capital of France"
    );

    let mut session = Session::on_llama_cpp(model(), greedy(3));
    session.set_prompt(PROMPT).unwrap();
    assert_eq!(session.generate(&mut || true).unwrap(), "The capital of");
    assert_eq!(session.output_tokens(), 3);

    // 27 prompt tokens in a context of 30: the first token comes from the
    // prompt's logits, three more fill the context, then it is full.
    let mut session = Session::on_llama_cpp(
        model(),
        Options {
            ctx_size: 30,
            ..greedy(100)
        },
    );
    session.set_prompt(PROMPT).unwrap();
    let text = session.generate(&mut || true).unwrap();
    assert_eq!(
        session.finish_reason(),
        Some(tern_nn::ggml::FinishReason::ContextFull)
    );
    assert_eq!(text, "The capital of France");
    assert_eq!(session.output_tokens(), 4);

    let mut session = Session::on_llama_cpp(
        model(),
        Options {
            ctx_size: 20,
            ..greedy(10)
        },
    );
    let err = session.set_prompt(PROMPT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the prompt has 27 tokens, too many for a context of 20"
    );
}

#[test]
fn the_wasi_nn_context_computes_streams_and_cancels_on_llama_cpp() {
    let model = Model::load_on(Encoding::Ggml, GgmlEngine::LlamaCpp, &path()).unwrap();
    assert!(matches!(model, Model::LlamaCpp(_)));
    // With the feature, the default engine is llama.cpp.
    assert!(matches!(
        Model::load(Encoding::Ggml, &path()).unwrap(),
        Model::LlamaCpp(_)
    ));

    let config = br#"{"temperature": 0, "n-predict": 24}"#;
    let mut cx = Context::new(&model, config, Limits::default(), Cancel::default()).unwrap();
    cx.set_input(Id::Index(0), text_tensor(PROMPT)).unwrap();
    cx.compute().unwrap();
    let text = cx.output(Id::Index(0)).unwrap().data;
    assert_eq!(text, b"The capital of France is Paris.");
    let metadata: serde_json::Value =
        serde_json::from_slice(&cx.output(Id::Index(1)).unwrap().data).unwrap();
    assert_eq!(metadata["llama_commit"], "tern-llama.cpp");
    assert_eq!(metadata["input_tokens"], 27);
    assert_eq!(metadata["finish_reason"], "stop");

    // Token by token, as WasmEdge's `compute_single` streams.
    let mut streamed = Vec::new();
    loop {
        match cx.compute_single() {
            Ok(()) => streamed.extend(cx.output_single(Id::Index(0)).unwrap().data),
            Err(Error::EndOfSequence) => break,
            Err(e) => panic!("streaming failed: {e}"),
        }
    }
    cx.fini_single().unwrap();
    assert_eq!(streamed, text);

    // A request whose deadline passed stops before its next token.
    let cancel = Cancel::default();
    let mut cx = Context::new(&model, config, Limits::default(), cancel.clone()).unwrap();
    cx.set_input(Id::Index(0), text_tensor(PROMPT)).unwrap();
    cancel.cancel();
    assert!(matches!(cx.compute(), Err(Error::Cancelled)));

    // The limits bound what a guest asks for.
    let limits = Limits {
        max_tokens: 2,
        context_length: 4096,
    };
    let mut cx = Context::new(&model, config, limits, Cancel::default()).unwrap();
    cx.set_input(Id::Index(0), text_tensor(PROMPT)).unwrap();
    cx.compute().unwrap();
    assert_eq!(cx.output(Id::Index(0)).unwrap().data, b"The capital");
}

#[test]
fn bad_files_are_refused_in_one_line_without_their_path() {
    let dir = std::env::temp_dir().join(format!("tern-llama-cpp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let not_gguf = dir.join("model.gguf");
    std::fs::write(&not_gguf, b"this is not a model at all").unwrap();
    let err = LlamaCppModel::load(&not_gguf).unwrap_err();
    assert_eq!(err.to_string(), "not a GGUF file (bad magic)");

    // The real file's header, cut short: llama.cpp itself refuses it.
    let whole = std::fs::read(path()).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &whole[..4096]).unwrap();
    let err = Model::load_on(Encoding::Ggml, GgmlEngine::LlamaCpp, &truncated).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidEncoding(_)), "{message}");
    assert!(
        message.starts_with("not a usable GGUF model: llama.cpp could not load the model"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert!(!message.contains(dir.to_str().unwrap()), "{message}");

    let missing =
        Model::load_on(Encoding::Ggml, GgmlEngine::LlamaCpp, &dir.join("nope.gguf")).unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
