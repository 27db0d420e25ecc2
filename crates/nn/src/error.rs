//! One error type for both backends, with the WASI-NN code each ABI maps
//! it to.

use crate::ggml;

/// Why a model could not be loaded or run. Messages are one line and name
/// what was wrong; they never hold host paths (callers name the model).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest passed something malformed: a tensor whose data does not
    /// match its dimensions, an input the model does not have, bad options.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model is not in the encoding it was said to be in, or is corrupt.
    #[error("{0}")]
    InvalidEncoding(String),
    /// No such model, input or output.
    #[error("{0}")]
    NotFound(String),
    /// The backend failed while running the model.
    #[error("{0}")]
    RuntimeError(String),
    /// Something this backend does not do.
    #[error("{0}")]
    Unsupported(String),
    /// Over a limit: a model too big to load, a prompt longer than the
    /// context.
    #[error("{0}")]
    TooLarge(String),
    /// Generation ended (streaming): no more tokens.
    #[error("end of sequence")]
    EndOfSequence,
    /// Generation filled the context (streaming).
    #[error("the context is full")]
    ContextFull,
    /// The prompt does not fit the context.
    #[error("the prompt is {tokens} tokens, more than the context of {ctx} allows")]
    PromptTooLong {
        /// The prompt's tokens.
        tokens: usize,
        /// The context length.
        ctx: usize,
    },
    /// The caller gave up (deadline, client gone) and generation stopped.
    #[error("inference cancelled: the request's deadline passed")]
    Cancelled,
}

impl Error {
    /// A model file that failed to load: corrupt data is the encoding's
    /// fault, anything else a runtime error.
    pub(crate) fn from_ggml_load(err: ggml::Error) -> Error {
        match err {
            ggml::Error::Io(e) => Error::NotFound(format!("reading the model: {e}")),
            ggml::Error::Format(m) => {
                Error::InvalidEncoding(format!("not a usable GGUF model: {m}"))
            }
            other => Error::from(other),
        }
    }

    /// WasmEdge's preview 1 error number (`wasi_ephemeral_nn`).
    pub fn errno(&self) -> u32 {
        match self {
            Error::InvalidArgument(_) => 1,
            Error::InvalidEncoding(_) => 2,
            Error::RuntimeError(_) | Error::Cancelled => 5,
            Error::Unsupported(_) => 6,
            Error::TooLarge(_) => 7,
            Error::NotFound(_) => 8,
            Error::EndOfSequence => 100,
            Error::ContextFull => 101,
            Error::PromptTooLong { .. } => 102,
        }
    }
}

impl From<ggml::Error> for Error {
    fn from(err: ggml::Error) -> Error {
        match err {
            ggml::Error::Options(m) => Error::InvalidArgument(format!("options: {m}")),
            ggml::Error::PromptTooLong { tokens, ctx } => Error::PromptTooLong { tokens, ctx },
            ggml::Error::ContextFull => Error::ContextFull,
            ggml::Error::Cancelled => Error::Cancelled,
            ggml::Error::Format(m) => Error::InvalidEncoding(m),
            other => Error::RuntimeError(other.to_string()),
        }
    }
}
