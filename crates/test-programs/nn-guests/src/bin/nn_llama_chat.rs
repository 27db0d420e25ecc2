//! A one-shot chat with a GGUF language model that the host preloads, the
//! way LlamaEdge's `llama-chat` talks to WasmEdge's GGML backend: the model
//! by alias (`load_by_name_with_config`), the options as JSON, the prompt
//! built by LlamaEdge's ChatML template (`chat-prompts`), as input 0.
//!
//! ```text
//! tern run --nn-preload default:GGML:AUTO:SmolLM2-135M-Instruct.Q4_1.gguf \
//!     nn_llama_chat.wasm --prompt "What is WebAssembly?" [--stream]
//! ```
//!
//! Without `--stream` it sets inputs 0 (prompt) and 1 (options), runs
//! `compute` once and prints output 0 (the answer). With `--stream` it
//! calls `compute_single` until the end of the sequence, printing each
//! token (`get_output_single`) as it comes, then `fini_single`. Either way
//! stdout is the answer and a newline, and stderr ends with
//! `tokens: JSON`, output 1 (the token counts, `input_tokens` and
//! `output_tokens`, among the backend's other metadata). A
//! full context in streaming mode adds `warning: context full` to stderr.
//!
//! Errors print `error: MESSAGE` on stderr and exit 1; bad usage is clap's
//! (exit 2).

use std::io::Write;
use std::time::{Duration, Instant};
use std::process::ExitCode;

use chat_prompts::{BuildChatPrompt, ChatPrompt, PromptTemplateType};
use clap::Parser;
use endpoints::chat::{ChatCompletionRequestMessage, ChatCompletionUserMessageContent};
use wasmedge_wasi_nn::{
    BackendError, Error, ExecutionTarget, GraphBuilder, GraphEncoding, GraphExecutionContext,
    TensorType,
};

/// The system prompt of SmolLM2-Instruct's own chat template.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Room for a whole answer: `get_output` copies it in one go.
const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Room for one token's text.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Parser)]
#[command(name = "llama-chat", about = "Chat with a preloaded GGUF model")]
struct Args {
    /// The user's message.
    #[arg(long)]
    prompt: String,
    /// The name the model was preloaded under (`--nn-preload NAME:...`).
    #[arg(long, default_value = "default")]
    model_alias: String,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 64)]
    n_predict: u64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temp: f64,
    /// Seed of the sampler.
    #[arg(long)]
    seed: Option<u64>,
    /// Print tokens as they are generated.
    #[arg(long)]
    stream: bool,
    /// The system prompt.
    #[arg(long, default_value = DEFAULT_SYSTEM)]
    system: String,
    /// With --stream: print to stderr how long the first token took (the
    /// prompt processed, then one token) and the rest, as the guest's own
    /// clock saw them: `stats: first_ms=F rest_ms=R rest_tokens=N`.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match chat(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn chat(args: &Args) -> Result<(), String> {
    let mut options = serde_json::json!({
        "temp": args.temp,
        "n-predict": args.n_predict,
    });
    if let Some(seed) = args.seed {
        options["seed"] = seed.into();
    }
    let options = options.to_string();

    let graph = GraphBuilder::new(GraphEncoding::Ggml, ExecutionTarget::AUTO)
        .config(options.clone())
        .build_from_cache(&args.model_alias)
        .map_err(|e| format!("loading model {:?}: {e}", args.model_alias))?;
    let mut context = graph
        .init_execution_context()
        .map_err(|e| format!("creating an execution context: {e}"))?;

    let prompt = build_prompt(&args.system, &args.prompt)?;
    context
        .set_input(0, TensorType::U8, &[1], prompt.as_bytes())
        .map_err(|e| format!("setting the prompt: {e}"))?;
    context
        .set_input(1, TensorType::U8, &[1], options.as_bytes())
        .map_err(|e| format!("setting the options: {e}"))?;

    let mut stdout = std::io::stdout().lock();
    if args.stream {
        let (first, rest, tokens) = stream(&mut context, &mut stdout)?;
        if args.stats {
            eprintln!(
                "stats: first_ms={:.3} rest_ms={:.3} rest_tokens={tokens}",
                first.as_secs_f64() * 1e3,
                rest.as_secs_f64() * 1e3
            );
        }
    } else {
        context.compute().map_err(|e| format!("computing: {e}"))?;
        let answer = output(&context, 0)?;
        stdout.write_all(&answer).map_err(|e| e.to_string())?;
    }
    writeln!(stdout).map_err(|e| e.to_string())?;
    let tokens = output(&context, 1)?;
    eprintln!("tokens: {}", String::from_utf8_lossy(&tokens));
    if args.stream {
        // Ends the stream: the next one starts counting tokens afresh.
        context
            .fini_single()
            .map_err(|e| format!("ending the stream: {e}"))?;
    }
    Ok(())
}

/// The ChatML prompt (SmolLM2-Instruct's template) for one exchange. The
/// template stops at `<|im_start|>assistant`; the model's own template puts
/// a newline after it, where the answer begins.
fn build_prompt(system: &str, user: &str) -> Result<String, String> {
    let template = ChatPrompt::from(PromptTemplateType::ChatML);
    let mut messages = vec![
        ChatCompletionRequestMessage::new_system_message(system, None),
        ChatCompletionRequestMessage::new_user_message(
            ChatCompletionUserMessageContent::Text(user.to_owned()),
            None,
        ),
    ];
    let mut prompt = template
        .build(&mut messages)
        .map_err(|e| format!("building the prompt: {e}"))?;
    prompt.push('\n');
    Ok(prompt)
}

/// Generates token by token, writing each one out as it comes. Returns
/// how long the first token took, how long the others took, and how many
/// others there were.
fn stream(
    context: &mut GraphExecutionContext,
    out: &mut impl Write,
) -> Result<(Duration, Duration, u64), String> {
    let mut token = vec![0u8; MAX_TOKEN_BYTES];
    let started = Instant::now();
    let mut first = None;
    let mut produced: u64 = 0;
    loop {
        let done = match context.compute_single() {
            Ok(()) => false,
            Err(Error::BackendError(BackendError::EndOfSequence)) => true,
            Err(Error::BackendError(BackendError::ContextFull)) => {
                eprintln!("warning: context full");
                true
            }
            Err(e) => return Err(format!("computing a token: {e}")),
        };
        let first = *first.get_or_insert_with(|| started.elapsed());
        if done {
            return Ok((first, started.elapsed() - first, produced.saturating_sub(1)));
        }
        produced += 1;
        let size = context
            .get_output_single(0, &mut token)
            .map_err(|e| format!("reading a token: {e}"))?;
        let piece = token
            .get(..size)
            .ok_or_else(|| format!("a token of {size} bytes does not fit {MAX_TOKEN_BYTES}"))?;
        // Raw bytes: a character split across two tokens is whole again
        // once both are out.
        out.write_all(piece).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
}

/// Output `index` of the last computation.
fn output(context: &GraphExecutionContext, index: usize) -> Result<Vec<u8>, String> {
    let mut buffer = vec![0u8; MAX_OUTPUT_BYTES];
    let size = context
        .get_output(index, &mut buffer)
        .map_err(|e| format!("reading output {index}: {e}"))?;
    if size > buffer.len() {
        return Err(format!(
            "output {index} has {size} bytes, more than {MAX_OUTPUT_BYTES}"
        ));
    }
    buffer.truncate(size);
    Ok(buffer)
}
