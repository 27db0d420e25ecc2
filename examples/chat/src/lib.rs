//! A chat endpoint: answers a prompt with the language model the app
//! declares as `chat` (`[nn.models.chat]` in tern.toml), streaming the
//! answer as server-sent events while it is generated.
//!
//! `POST /chat` with the prompt as the body. The prompt goes into
//! SmolLM2-Instruct's ChatML template; the query's `max_tokens` (64 unless
//! given) and `temperature` (0, greedy, unless given) into the options,
//! with `"stream": true`. The answer is `200`, `text/event-stream`: one
//! event `data: JSON-STRING` per piece of text, as it comes, then
//! `event: done` with Tern's metadata (`input_tokens`, `output_tokens`,
//! `finish_reason` and more) as its data. A wasi-nn error before the first piece
//! answers `500` `inference failed: CODE: MESSAGE`; one after it ends the
//! stream with `event: error` and that text as a JSON string. An empty
//! prompt or a bad query answers `400`, another method `405`.
//!
//! How Tern runs a language model through `wasi:nn`: `load-by-name` gives
//! the model the manifest granted; `compute` on a new context takes the
//! inputs `prompt` and `options` (JSON), both `u8` tensors. With
//! `"stream": true` it returns after the first piece of the answer, and
//! each `compute` with no inputs returns the next one, as the outputs
//! `text` and `metadata`, until the metadata has a `finish_reason`.

use wasip3::exports::http::handler::Guest;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::wit_bindgen::StreamWriter;
use wasip3::{wit_future, wit_stream};

use nn::{Graph, GraphExecutionContext, Tensor, TensorType};

/// Bindings for `wasi:nn@0.2.0-rc-2024-10-28` (wit/wasi-nn.wit). Its
/// functions are synchronous: `compute` returns once the host has the next
/// piece.
mod nn {
    wit_bindgen::generate!({
        path: "wit/wasi-nn.wit",
        world: "ml",
    });

    pub use wasi::nn::errors::Error;
    pub use wasi::nn::graph::{Graph, load_by_name};
    pub use wasi::nn::inference::GraphExecutionContext;
    pub use wasi::nn::tensor::{Tensor, TensorType};
}

/// The model, by the name the manifest grants it under.
const MODEL: &str = "chat";

/// A plain system prompt: with SmolLM2's own ("You are a helpful AI
/// assistant named SmolLM, ..."), the 135M model answers in French.
const SYSTEM: &str = "You are a helpful assistant.";

const DEFAULT_MAX_TOKENS: u64 = 64;

struct Chat;

impl Guest for Chat {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        if !matches!(request.get_method(), Method::Post) {
            return respond(405, &[("allow", "POST")], "POST a prompt\n");
        }
        let path = request.get_path_with_query().unwrap_or_default();
        let max_tokens = match max_tokens(&path) {
            Ok(n) => n,
            Err(why) => return respond(400, &[], why),
        };
        let temperature = match temperature(&path) {
            Ok(t) => t,
            Err(why) => return respond(400, &[], why),
        };
        let body = read_body(request).await?;
        let Ok(prompt) = String::from_utf8(body) else {
            return respond(400, &[], "the prompt is not UTF-8");
        };
        if prompt.trim().is_empty() {
            return respond(400, &[], "empty prompt: POST the prompt as the body");
        }

        let options = format!(r#"{{"stream":true,"n-predict":{max_tokens},"temp":{temperature}}}"#);
        // The first piece comes before the head, so that a failure to start
        // is still a 500.
        let (session, first) = match start(&chatml(SYSTEM, &prompt), &options) {
            Ok(started) => started,
            Err(why) => return respond(500, &[], format!("inference failed: {why}")),
        };
        let (response, body) = streaming_response(
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
        )?;
        // Runs once `handle` has returned the head. At most one piece per
        // token, plus the one that says generation is over.
        let max_steps = max_tokens.saturating_add(2);
        wasip3::spawn(stream(session, first, max_steps, body));
        Ok(response)
    }
}

/// What one `compute` gave: the next piece of text (possibly part of a
/// character) and the metadata JSON.
struct Step {
    text: Vec<u8>,
    metadata: String,
}

/// A loaded graph and the context generating the answer. The graph is
/// kept until the answer is over: the context comes from it.
struct Session {
    _graph: Graph,
    context: GraphExecutionContext,
}

/// Loads the model, and computes the prompt and the first token.
fn start(prompt: &str, options: &str) -> Result<(Session, Step), String> {
    let graph = nn::load_by_name(MODEL).map_err(|e| describe(&e))?;
    let context = graph.init_execution_context().map_err(|e| describe(&e))?;
    let inputs = vec![
        ("prompt".to_owned(), bytes_tensor(prompt.as_bytes())),
        ("options".to_owned(), bytes_tensor(options.as_bytes())),
    ];
    let first = compute(&context, inputs)?;
    Ok((
        Session {
            _graph: graph,
            context,
        },
        first,
    ))
}

/// One `compute`: with the inputs at the start, with none for each next
/// piece.
fn compute(context: &GraphExecutionContext, inputs: Vec<(String, Tensor)>) -> Result<Step, String> {
    let outputs = context.compute(inputs).map_err(|e| describe(&e))?;
    let output = |name: &str| {
        outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, tensor)| tensor.data())
            .ok_or_else(|| format!("no output {name:?}"))
    };
    Ok(Step {
        text: output("text")?,
        metadata: String::from_utf8_lossy(&output("metadata")?).into_owned(),
    })
}

/// Writes `step` and the pieces after it as events, until the metadata
/// has a `finish_reason`, then the `done` event; at most `max_steps`
/// pieces. Stops early, which drops the context, if the client goes away.
async fn stream(session: Session, mut step: Step, max_steps: u64, mut body: StreamWriter<u8>) {
    let mut text = Utf8Pieces::default();
    for _ in 0..max_steps {
        let piece = text.push(&step.text);
        if !piece.is_empty()
            && !send(&mut body, &format!("data: {}\n\n", json_string(&piece))).await
        {
            return;
        }
        if finish_reason(&step.metadata).is_some() {
            let rest = text.finish();
            if !rest.is_empty()
                && !send(&mut body, &format!("data: {}\n\n", json_string(&rest))).await
            {
                return;
            }
            // An event's data is one line; JSON allows a space for any
            // newline outside its strings, and has none inside them.
            let metadata = step.metadata.replace(['\n', '\r'], " ");
            send(&mut body, &format!("event: done\ndata: {metadata}\n\n")).await;
            return;
        }
        step = match compute(&session.context, Vec::new()) {
            Ok(step) => step,
            Err(why) => {
                let why = format!("inference failed: {why}");
                send(
                    &mut body,
                    &format!("event: error\ndata: {}\n\n", json_string(&why)),
                )
                .await;
                return;
            }
        };
    }
    let why = format!("no finish_reason after {max_steps} pieces");
    send(
        &mut body,
        &format!("event: error\ndata: {}\n\n", json_string(&why)),
    )
    .await;
}

/// Writes `event` to the body; false if the client has gone away.
async fn send(body: &mut StreamWriter<u8>, event: &str) -> bool {
    body.write_all(event.as_bytes().to_vec()).await.is_empty()
}

/// A wasi-nn error as `CODE: MESSAGE`, e.g. `NotFound: ...`.
fn describe(error: &nn::Error) -> String {
    format!("{:?}: {}", error.code(), error.data())
}

/// A `u8` tensor of dimensions `[len]` holding `bytes`.
fn bytes_tensor(bytes: &[u8]) -> Tensor {
    Tensor::new(&[bytes.len() as u32], TensorType::U8, bytes)
}

/// The ChatML prompt of SmolLM2-Instruct's template for one exchange,
/// as LlamaEdge's `chat-prompts` builds it (the user's text trimmed), with
/// the newline that starts the assistant's answer.
fn chatml(system: &str, user: &str) -> String {
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
        user.trim()
    )
}

/// The value of `finish_reason` in the metadata JSON, unless it is absent
/// or `null`. A scan rather than a parser: Tern writes a flat object.
fn finish_reason(metadata: &str) -> Option<&str> {
    let (_, after) = metadata.split_once("\"finish_reason\"")?;
    let value = after.trim_start().strip_prefix(':')?.trim_start();
    let reason = value.strip_prefix('"')?;
    reason.split_once('"').map(|(reason, _)| reason)
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Turns the bytes of successive pieces into text, holding back a character
/// that a token boundary splits until its last byte has come.
#[derive(Default)]
struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// The text that `bytes` completes.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // Only the last character is incomplete: keep it for later.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Bytes that no later piece can make valid.
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Whatever is left once the answer is over.
    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

/// `max_tokens` from the query: 64 unless given.
fn max_tokens(path_with_query: &str) -> Result<u64, String> {
    match query_param(path_with_query, "max_tokens") {
        None => Ok(DEFAULT_MAX_TOKENS),
        Some(text) => text
            .parse()
            .map_err(|_| format!("max_tokens must be a number, got {text:?}")),
    }
}

/// `temperature` from the query: 0 unless given, else a finite number that
/// is not negative.
fn temperature(path_with_query: &str) -> Result<f64, String> {
    let Some(text) = query_param(path_with_query, "temperature") else {
        return Ok(0.0);
    };
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("temperature must be a number from 0, got {text:?}")),
    }
}

/// The raw value of `key` in the query of `path_with_query`.
fn query_param<'a>(path_with_query: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value)
}

/// The whole body of `request`, or the error the host reported at its end.
async fn read_body(request: Request) -> Result<Vec<u8>, ErrorCode> {
    // Through this future a handler could tell the host that it failed to
    // process the body; its writer, dropped here, reports success.
    let (_, handled) = wit_future::new(|| Ok(()));
    let (body, trailers) = Request::consume_body(request, handled);
    let bytes = body.collect().await;
    trailers.await?;
    Ok(bytes)
}

/// A response with `status` and `headers` whose body is whatever is
/// written to the returned writer, until it is dropped. Without a
/// `content-length`, Tern sends each write to the client as it comes.
fn streaming_response(
    status: u16,
    headers: &[(&str, &str)],
) -> Result<(Response, StreamWriter<u8>), ErrorCode> {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&headers)
        .map_err(|e| ErrorCode::InternalError(Some(format!("invalid headers: {e:?}"))))?;
    let (body_writer, body_reader) = wit_stream::new();
    // No trailers: dropping the writer sends the default, `Ok(None)`.
    let (trailers_writer, trailers_reader) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(body_reader), trailers_reader);
    drop(trailers_writer);
    response
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some(format!("invalid status {status}"))))?;
    Ok((response, body_writer))
}

/// A complete `text/plain` response with `extra_headers`.
fn respond(
    status: u16,
    extra_headers: &[(&str, &str)],
    body: impl Into<String>,
) -> Result<Response, ErrorCode> {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let length = body.len().to_string();
    let mut headers = vec![
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", length.as_str()),
    ];
    headers.extend_from_slice(extra_headers);
    let (response, mut writer) = streaming_response(status, &headers)?;
    wasip3::spawn(async move {
        let _unsent = writer.write_all(body.into_bytes()).await;
    });
    Ok(response)
}

wasip3::http::service::export!(Chat);
