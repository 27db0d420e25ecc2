//! Sampling and generation options, parsed from the JSON a guest passes.
//!
//! The keys follow WasmEdge's GGML (llama.cpp) backend, so guests written for
//! WasmEdge (LlamaEdge and friends) work unchanged, plus the snake_case and
//! OpenAI-style aliases people tend to write by hand.

use serde_json::{Map, Value};

use super::Error;

/// How a session samples and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Softmax temperature; 0 means greedy decoding (always the most likely token).
    pub temperature: f64,
    /// Nucleus sampling: sample only from the smallest set of most likely
    /// tokens whose probabilities add up to at least this much. In (0, 1].
    pub top_p: f64,
    /// Seed of the session's random number generator; the same seed, prompt and
    /// options give the same text.
    pub seed: u64,
    /// Most tokens to generate; `usize::MAX` means until the context is full.
    pub max_tokens: usize,
    /// Strings that end generation when they appear in the output; the text is
    /// cut before them.
    pub stop: Vec<String>,
    /// Context size (prompt plus generated tokens) of a session, clamped to the
    /// model's context length when a prompt is set.
    pub ctx_size: usize,
}

impl Default for Options {
    /// WasmEdge's GGML backend defaults, except `max_tokens`: WasmEdge generates
    /// until the context is full by default, Tern stops after 1024 tokens.
    fn default() -> Self {
        Options {
            temperature: 0.8,
            top_p: 0.9,
            seed: 42,
            max_tokens: 1024,
            stop: Vec::new(),
            ctx_size: 4096,
        }
    }
}

impl Options {
    /// Parses the JSON options object a guest passes (WasmEdge's GGML backend
    /// keys and common aliases): `"temp"` | `"temperature"`, `"top-p"` |
    /// `"top_p"`, `"seed"`, `"n-predict"` | `"n_predict"` | `"max-tokens"` |
    /// `"max_tokens"` (negative = until the context is full), `"reverse-prompt"`
    /// | `"stop"` (a string or an array of strings), `"ctx-size"` | `"ctx_size"`.
    ///
    /// Unknown keys are ignored (WasmEdge guests send many, such as
    /// `"enable-log"` or `"n-gpu-layers"`), and so is a known key whose value is
    /// `null`. A known key with a wrong type or an out-of-range value is
    /// [`Error::Options`] naming the key. Empty input, or only whitespace, gives
    /// the defaults.
    pub fn from_json(json: &[u8]) -> Result<Options, Error> {
        let mut options = Options::default();
        options.merge_json(json)?;
        Ok(options)
    }

    /// Applies the keys present in `json` over `self`, so load-time
    /// configuration and per-request metadata can be layered. Accepts the same
    /// input as [`Options::from_json`]; on error `self` is left unchanged.
    pub fn merge_json(&mut self, json: &[u8]) -> Result<(), Error> {
        // Guests written in C may pass the terminating NUL along.
        let json = json.strip_suffix(b"\0").unwrap_or(json);
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| Error::Options(format!("options are not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::Options("options must be a JSON object".into()));
        };
        // Work on a copy so a bad key leaves `self` as it was.
        let mut next = self.clone();
        next.apply(&map)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, map: &Map<String, Value>) -> Result<(), Error> {
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "temp" | "temperature" => self.temperature = parse_temperature(key, value)?,
                "top-p" | "top_p" => self.top_p = parse_top_p(key, value)?,
                "seed" => self.seed = parse_seed(key, value)?,
                "n-predict" | "n_predict" | "max-tokens" | "max_tokens" => {
                    self.max_tokens = parse_max_tokens(key, value)?
                }
                "reverse-prompt" | "stop" => self.stop = parse_stop(key, value)?,
                "ctx-size" | "ctx_size" => self.ctx_size = parse_ctx_size(key, value)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn number(key: &str, value: &Value) -> Result<f64, Error> {
    value
        .as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(|| Error::Options(format!("option '{key}' must be a number, got {value}")))
}

/// An integer, also accepting a float with no fractional part (`42.0`), which
/// some JSON writers produce.
fn integer(key: &str, value: &Value) -> Result<i128, Error> {
    if let Some(v) = value.as_i64() {
        return Ok(i128::from(v));
    }
    if let Some(v) = value.as_u64() {
        return Ok(i128::from(v));
    }
    match value.as_f64() {
        // The range check keeps the cast exact.
        Some(v) if v.fract() == 0.0 && v.abs() < 1e30 => Ok(v as i128),
        _ => Err(Error::Options(format!(
            "option '{key}' must be an integer, got {value}"
        ))),
    }
}

fn parse_temperature(key: &str, value: &Value) -> Result<f64, Error> {
    let v = number(key, value)?;
    if v < 0.0 {
        return Err(Error::Options(format!(
            "option '{key}' must be >= 0, got {v}"
        )));
    }
    Ok(v)
}

fn parse_top_p(key: &str, value: &Value) -> Result<f64, Error> {
    let v = number(key, value)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(Error::Options(format!(
            "option '{key}' must be in (0, 1], got {v}"
        )));
    }
    Ok(v)
}

/// Negative seeds (llama.cpp's `-1` means "random") are taken modulo 2^64 so a
/// guest still gets a fixed, reproducible seed.
fn parse_seed(key: &str, value: &Value) -> Result<u64, Error> {
    let v = integer(key, value)?;
    u64::try_from(v)
        .or_else(|_| i64::try_from(v).map(|v| v as u64))
        .map_err(|_| Error::Options(format!("option '{key}' is out of range, got {v}")))
}

fn parse_max_tokens(key: &str, value: &Value) -> Result<usize, Error> {
    let v = integer(key, value)?;
    if v < 0 {
        return Ok(usize::MAX);
    }
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

fn parse_ctx_size(key: &str, value: &Value) -> Result<usize, Error> {
    let v = integer(key, value)?;
    if v <= 0 {
        return Err(Error::Options(format!(
            "option '{key}' must be > 0, got {v}"
        )));
    }
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

/// A string or an array of strings; empty strings are dropped since they would
/// stop generation before it starts.
fn parse_stop(key: &str, value: &Value) -> Result<Vec<String>, Error> {
    let wrong = || {
        Error::Options(format!(
            "option '{key}' must be a string or an array of strings"
        ))
    };
    let stops = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(wrong()),
    };
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Options, Error> {
        Options::from_json(json.as_bytes())
    }

    fn options_error(json: &str) -> String {
        match parse(json) {
            Err(Error::Options(msg)) => msg,
            other => panic!("expected an options error for {json}, got {other:?}"),
        }
    }

    #[test]
    fn empty_input_gives_defaults() {
        assert_eq!(parse("").ok(), Some(Options::default()));
        assert_eq!(parse(" \n\t ").ok(), Some(Options::default()));
        assert_eq!(parse("{}").ok(), Some(Options::default()));
        assert_eq!(parse("{\"seed\": 3}\0").unwrap().seed, 3);
    }

    #[test]
    fn defaults_follow_wasmedge() {
        let o = Options::default();
        assert_eq!(o.temperature, 0.8);
        assert_eq!(o.top_p, 0.9);
        assert_eq!(o.seed, 42);
        assert_eq!(o.max_tokens, 1024);
        assert!(o.stop.is_empty());
        assert_eq!(o.ctx_size, 4096);
    }

    #[test]
    fn wasmedge_keys() {
        let o = parse(
            r#"{"temp": 0.5, "top-p": 0.7, "seed": 7, "n-predict": 12,
                "reverse-prompt": "User:", "ctx-size": 512,
                "enable-log": true, "n-gpu-layers": 100, "stream-stdout": false}"#,
        )
        .unwrap();
        assert_eq!(o.temperature, 0.5);
        assert_eq!(o.top_p, 0.7);
        assert_eq!(o.seed, 7);
        assert_eq!(o.max_tokens, 12);
        assert_eq!(o.stop, vec!["User:".to_string()]);
        assert_eq!(o.ctx_size, 512);
    }

    #[test]
    fn aliases() {
        let o = parse(
            r#"{"temperature": 0, "top_p": 1, "max_tokens": 3,
                "stop": ["a", "", "b"], "ctx_size": 64}"#,
        )
        .unwrap();
        assert_eq!(o.temperature, 0.0);
        assert_eq!(o.top_p, 1.0);
        assert_eq!(o.max_tokens, 3);
        assert_eq!(o.stop, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(o.ctx_size, 64);
        assert_eq!(parse(r#"{"n_predict": 5}"#).unwrap().max_tokens, 5);
        assert_eq!(parse(r#"{"max-tokens": 6}"#).unwrap().max_tokens, 6);
    }

    #[test]
    fn negative_n_predict_means_unbounded() {
        assert_eq!(
            parse(r#"{"n-predict": -1}"#).unwrap().max_tokens,
            usize::MAX
        );
    }

    #[test]
    fn integral_floats_and_negative_seeds() {
        assert_eq!(parse(r#"{"ctx-size": 2048.0}"#).unwrap().ctx_size, 2048);
        assert_eq!(parse(r#"{"seed": -1}"#).unwrap().seed, u64::MAX);
    }

    #[test]
    fn null_is_ignored() {
        assert_eq!(parse(r#"{"temp": null}"#).unwrap().temperature, 0.8);
    }

    #[test]
    fn wrong_types_name_the_key() {
        assert!(options_error(r#"{"temp": "hot"}"#).contains("'temp'"));
        assert!(options_error(r#"{"top_p": true}"#).contains("'top_p'"));
        assert!(options_error(r#"{"seed": 1.5}"#).contains("'seed'"));
        assert!(options_error(r#"{"n-predict": "10"}"#).contains("'n-predict'"));
        assert!(options_error(r#"{"stop": 3}"#).contains("'stop'"));
        assert!(options_error(r#"{"reverse-prompt": ["a", 1]}"#).contains("'reverse-prompt'"));
        assert!(options_error(r#"{"ctx-size": [1]}"#).contains("'ctx-size'"));
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        assert!(options_error(r#"{"temperature": -0.1}"#).contains("'temperature'"));
        assert!(options_error(r#"{"top-p": 0}"#).contains("'top-p'"));
        assert!(options_error(r#"{"top-p": 1.5}"#).contains("'top-p'"));
        assert!(options_error(r#"{"ctx_size": 0}"#).contains("'ctx_size'"));
        assert!(options_error(r#"{"ctx_size": -3}"#).contains("'ctx_size'"));
    }

    #[test]
    fn not_an_object() {
        assert!(options_error("[1, 2]").contains("object"));
        assert!(options_error("{oops").contains("JSON"));
    }

    #[test]
    fn merge_layers_and_keeps_state_on_error() {
        let mut o = parse(r#"{"temp": 0.1, "stop": ["x"]}"#).unwrap();
        o.merge_json(br#"{"seed": 9}"#).unwrap();
        assert_eq!((o.temperature, o.seed), (0.1, 9));
        assert_eq!(o.stop, vec!["x".to_string()]);
        o.merge_json(b"").unwrap();
        assert_eq!(o.seed, 9);
        assert!(o.merge_json(br#"{"seed": 1, "temp": -1}"#).is_err());
        assert_eq!((o.temperature, o.seed), (0.1, 9));
    }
}
