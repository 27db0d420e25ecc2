//! [`Context`]: one instance's execution state for one model, with the
//! calls both WASI-NN ABIs are made of.
//!
//! A language model (`ggml`) follows WasmEdge's GGML backend, so guests
//! written for it run unchanged: input 0 is the prompt (UTF-8 bytes),
//! input 1 optional JSON options; output 0 is the text, output 1 JSON token
//! counts. `compute` generates the whole answer; `compute_single` one more
//! token, ending with [`Error::EndOfSequence`] or [`Error::ContextFull`].
//! Over the component interface (one `compute` taking and returning named
//! tensors), `"stream": true` in the options makes `compute` stop after the
//! first token and each `compute([])` produce the next.

use serde_json::json;

use crate::ggml::{self, FinishReason, Session};
use crate::onnx::OnnxModel;
use crate::{Cancel, Error, Limits, Model, Tensor, TensorType};
use std::sync::Arc;

/// A tensor's place among a model's inputs or outputs.
#[derive(Clone, Debug)]
pub enum Id {
    /// By position.
    Index(u32),
    /// By name; a name that is a number is also read as a position.
    Name(String),
}

impl Id {
    fn index(&self) -> Option<usize> {
        match self {
            Id::Index(i) => Some(*i as usize),
            Id::Name(n) => n.parse().ok(),
        }
    }
}

/// One instance's use of one model.
pub struct Context {
    kind: Kind,
    cancel: Cancel,
}

enum Kind {
    Ggml(Box<Llm>),
    Onnx(Onnx),
}

struct Llm {
    session: Session,
    /// Options from the graph's configuration (WasmEdge's
    /// `load_by_name_with_config`), clamped by the limits.
    base: ggml::Options,
    limits: Limits,
    prompt: Option<String>,
    /// The options of the next compute, over `base`.
    options: Option<Vec<u8>>,
    /// The whole text of the last `compute`.
    text: String,
    /// The piece the last `compute_single` produced.
    piece: String,
    /// A `compute_single` stream is going.
    streaming: bool,
}

struct Onnx {
    model: Arc<OnnxModel>,
    inputs: Vec<Option<Tensor>>,
    outputs: Vec<(String, Tensor)>,
}

impl Context {
    /// A fresh context for `model`. `config` is the graph's JSON options
    /// (empty for none); `limits` bound every generation; `cancel` stops one.
    pub fn new(
        model: &Model,
        config: &[u8],
        limits: Limits,
        cancel: Cancel,
    ) -> Result<Context, Error> {
        let kind = match model {
            Model::Ggml(model) => Llm::kind(config, limits, |options| {
                Session::new(model.clone(), options)
            })?,
            #[cfg(feature = "llama-cpp")]
            Model::LlamaCpp(model) => Llm::kind(config, limits, |options| {
                Session::on_llama_cpp(model.clone(), options)
            })?,
            Model::Onnx(onnx) => Kind::Onnx(Onnx {
                inputs: vec![None; onnx.input_names().count()],
                model: onnx.clone(),
                outputs: Vec::new(),
            }),
        };
        Ok(Context { kind, cancel })
    }

    /// Sets input `id`.
    pub fn set_input(&mut self, id: Id, tensor: Tensor) -> Result<(), Error> {
        match &mut self.kind {
            Kind::Ggml(llm) => llm.set_input(&id, tensor),
            Kind::Onnx(onnx) => onnx.set_input(&id, tensor),
        }
    }

    /// Runs the model on the inputs set: a language model generates its
    /// whole answer.
    pub fn compute(&mut self) -> Result<(), Error> {
        match &mut self.kind {
            Kind::Ggml(llm) => llm.compute(&self.cancel),
            Kind::Onnx(onnx) => onnx.compute(),
        }
    }

    /// Output `id` of the last compute.
    pub fn output(&self, id: Id) -> Result<Tensor, Error> {
        match &self.kind {
            Kind::Ggml(llm) => llm.output(&id, &llm.text),
            Kind::Onnx(onnx) => onnx.output(&id),
        }
    }

    /// Generates one more token (a language model only).
    pub fn compute_single(&mut self) -> Result<(), Error> {
        match &mut self.kind {
            Kind::Ggml(llm) => llm.compute_single(&self.cancel),
            Kind::Onnx(_) => Err(unsupported_single()),
        }
    }

    /// Output `id` of the last `compute_single`: the new piece of text, or
    /// the token counts.
    pub fn output_single(&self, id: Id) -> Result<Tensor, Error> {
        match &self.kind {
            Kind::Ggml(llm) => llm.output(&id, &llm.piece),
            Kind::Onnx(_) => Err(unsupported_single()),
        }
    }

    /// Ends a `compute_single` stream.
    pub fn fini_single(&mut self) -> Result<(), Error> {
        match &mut self.kind {
            Kind::Ggml(llm) => {
                llm.streaming = false;
                llm.piece.clear();
                Ok(())
            }
            Kind::Onnx(_) => Err(unsupported_single()),
        }
    }

    /// The component interface's `compute`: sets `inputs`, runs, and
    /// returns every output by name. See the module docs for streaming.
    pub fn compute_with_io(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, Error> {
        match &mut self.kind {
            Kind::Ggml(llm) => llm.compute_with_io(inputs, &self.cancel),
            Kind::Onnx(onnx) => {
                for (name, tensor) in inputs {
                    onnx.set_input(&Id::Name(name), tensor)?;
                }
                onnx.compute()?;
                Ok(onnx.outputs.clone())
            }
        }
    }
}

fn unsupported_single() -> Error {
    Error::Unsupported("single-token computation is for ggml language models".into())
}

/// The options a request asked for, within the model's limits.
fn clamp(mut options: ggml::Options, limits: Limits) -> ggml::Options {
    options.max_tokens = options.max_tokens.min(limits.max_tokens);
    options.ctx_size = options.ctx_size.min(limits.context_length);
    options
}

fn text_tensor(text: &str) -> Tensor {
    Tensor::new(
        vec![text.len() as u32],
        TensorType::U8,
        text.as_bytes().to_vec(),
    )
}

impl Llm {
    /// A language model's context: its options start from `config`, within
    /// `limits`, and `session` makes the session on its engine.
    fn kind(
        config: &[u8],
        limits: Limits,
        session: impl FnOnce(ggml::Options) -> Session,
    ) -> Result<Kind, Error> {
        let mut base = ggml::Options::default();
        base.merge_json(config)?;
        let base = clamp(base, limits);
        Ok(Kind::Ggml(Box::new(Llm {
            session: session(base.clone()),
            base,
            limits,
            prompt: None,
            options: None,
            text: String::new(),
            piece: String::new(),
            streaming: false,
        })))
    }

    fn set_input(&mut self, id: &Id, tensor: Tensor) -> Result<(), Error> {
        let slot = match id {
            Id::Name(n) if n == "prompt" => 0,
            Id::Name(n) if n == "options" || n == "metadata" => 1,
            _ => id.index().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a ggml model has inputs \"prompt\" (0) and \"options\" (1), not {id:?}"
                ))
            })?,
        };
        match slot {
            0 => {
                let prompt = String::from_utf8(tensor.data)
                    .map_err(|_| Error::InvalidArgument("the prompt is not UTF-8".into()))?;
                self.prompt = Some(prompt);
            }
            1 => self.options = Some(tensor.data),
            n => {
                return Err(Error::InvalidArgument(format!(
                    "a ggml model has 2 inputs (prompt, options), not input {n}"
                )));
            }
        }
        Ok(())
    }

    /// Starts a generation from the prompt set and the options given.
    fn start(&mut self) -> Result<(), Error> {
        let Some(prompt) = self.prompt.as_deref() else {
            return Err(Error::InvalidArgument("no prompt was set (input 0)".into()));
        };
        let mut options = self.base.clone();
        if let Some(json) = &self.options {
            options.merge_json(json)?;
        }
        *self.session.options_mut() = clamp(options, self.limits);
        self.session.set_prompt(prompt)?;
        self.text.clear();
        self.piece.clear();
        Ok(())
    }

    fn compute(&mut self, cancel: &Cancel) -> Result<(), Error> {
        self.streaming = false;
        self.start()?;
        let text = self.session.generate(&mut || !cancel.is_cancelled())?;
        self.text = text;
        Ok(())
    }

    fn compute_single(&mut self, cancel: &Cancel) -> Result<(), Error> {
        if !self.streaming {
            self.start()?;
            self.streaming = true;
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        match self.session.step()? {
            Some(piece) => {
                self.piece = piece;
                Ok(())
            }
            None => {
                self.piece.clear();
                match self.session.finish_reason() {
                    Some(FinishReason::ContextFull) => Err(Error::ContextFull),
                    _ => Err(Error::EndOfSequence),
                }
            }
        }
    }

    fn metadata(&self) -> String {
        let finish = self.session.finish_reason().map(|r| match r {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
        });
        // `llama_build_number` and `llama_commit` are what LlamaEdge's
        // programs read first to check the backend; the commit names Tern's
        // engine.
        json!({
            "input_tokens": self.session.input_tokens(),
            "output_tokens": self.session.output_tokens(),
            "finish_reason": finish,
            "llama_build_number": 0,
            "llama_commit": self.session.engine(),
        })
        .to_string()
    }

    fn output(&self, id: &Id, text: &str) -> Result<Tensor, Error> {
        match id {
            Id::Name(n) if n == "text" => Ok(text_tensor(text)),
            Id::Name(n) if n == "metadata" => Ok(text_tensor(&self.metadata())),
            _ => match id.index() {
                Some(0) => Ok(text_tensor(text)),
                Some(1) => Ok(text_tensor(&self.metadata())),
                _ => Err(Error::NotFound(format!(
                    "a ggml model has outputs \"text\" (0) and \"metadata\" (1), not {id:?}"
                ))),
            },
        }
    }

    fn compute_with_io(
        &mut self,
        inputs: Vec<(String, Tensor)>,
        cancel: &Cancel,
    ) -> Result<Vec<(String, Tensor)>, Error> {
        if inputs.is_empty() {
            if !self.streaming {
                return Err(Error::InvalidArgument(
                    "compute with no inputs continues a stream, and none is going (set \"stream\": true in the options)".into(),
                ));
            }
            return self.stream_step(cancel);
        }
        self.options = None;
        for (name, tensor) in inputs {
            self.set_input(&Id::Name(name), tensor)?;
        }
        if !wants_stream(self.options.as_deref()) {
            self.compute(cancel)?;
            return Ok(self.named_outputs(&self.text));
        }
        self.streaming = false;
        self.stream_step(cancel)
    }

    /// One token of a stream over the component interface: its piece, or
    /// "" with the finish reason once generation has ended.
    fn stream_step(&mut self, cancel: &Cancel) -> Result<Vec<(String, Tensor)>, Error> {
        match self.compute_single(cancel) {
            Ok(()) => Ok(self.named_outputs(&self.piece)),
            Err(Error::EndOfSequence | Error::ContextFull) => {
                self.streaming = false;
                Ok(self.named_outputs(""))
            }
            Err(e) => Err(e),
        }
    }

    fn named_outputs(&self, text: &str) -> Vec<(String, Tensor)> {
        vec![
            ("text".to_owned(), text_tensor(text)),
            ("metadata".to_owned(), text_tensor(&self.metadata())),
        ]
    }
}

/// Whether the options ask for `"stream": true`.
fn wants_stream(options: Option<&[u8]>) -> bool {
    options
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(json).ok())
        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
        .unwrap_or(false)
}

impl Onnx {
    fn set_input(&mut self, id: &Id, tensor: Tensor) -> Result<(), Error> {
        let index = match id {
            Id::Name(name) => self.model.input_index(name).or_else(|| id.index()),
            Id::Index(i) => Some(*i as usize),
        };
        let slot = index.and_then(|i| self.inputs.get_mut(i)).ok_or_else(|| {
            let names: Vec<&str> = self.model.input_names().collect();
            Error::InvalidArgument(format!(
                "the model has no input {id:?} (its inputs: {names:?})"
            ))
        })?;
        *slot = Some(tensor);
        Ok(())
    }

    fn compute(&mut self) -> Result<(), Error> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (slot, name) in self.inputs.iter().zip(self.model.input_names()) {
            match slot {
                Some(t) => inputs.push(t.clone()),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "input `{name}` was not set"
                    )));
                }
            }
        }
        self.outputs = self.model.run(&inputs)?;
        Ok(())
    }

    fn output(&self, id: &Id) -> Result<Tensor, Error> {
        let found = match id {
            Id::Name(name) => self
                .outputs
                .iter()
                .find(|(n, _)| n == name)
                .or_else(|| id.index().and_then(|i| self.outputs.get(i))),
            Id::Index(i) => self.outputs.get(*i as usize),
        };
        found.map(|(_, t)| t.clone()).ok_or_else(|| {
            if self.outputs.is_empty() {
                Error::InvalidArgument("no output yet: compute first".into())
            } else {
                Error::NotFound(format!(
                    "the model has no output {id:?} (its outputs: {:?})",
                    self.model.output_names()
                ))
            }
        })
    }
}
