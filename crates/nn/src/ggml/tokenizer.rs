//! The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
//!
//! Two kinds, as in llama.cpp:
//!
//! - `gpt2`: byte-level BPE (SmolLM2, Llama 3, Qwen2). Text is split by a
//!   pre-tokenizer regex chosen by `tokenizer.ggml.pre`, each piece's bytes are
//!   mapped to GPT-2's printable stand-in characters, and adjacent symbols are
//!   merged in the rank order of `tokenizer.ggml.merges`.
//! - `llama`: SentencePiece-style BPE (TinyLlama, Llama 2). Spaces become `▁`,
//!   a `▁` is put in front of the text, adjacent symbols are merged by the best
//!   score of the merged token, and characters with no token fall back to the
//!   `<0xNN>` byte tokens.
//!
//! In both, control and user-defined tokens written in the text (such as
//! `<|im_start|>`) become their ids, like llama.cpp's `parse_special`.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::Error;
use super::model::Metadata;

/// Marks "no neighbour" in the linked lists of symbols during merging.
const NONE: usize = usize::MAX;

/// SentencePiece's stand-in for a space.
const SPM_SPACE: char = '\u{2581}';

/// GPT-2's pre-tokenizer regex, the default.
const REGEX_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's: digits in groups of up to three, letters may take one leading
/// non-letter, newlines kept with the punctuation before them.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with every digit on its own.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What `tokenizer.ggml.token_type` says a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_code(code: i64) -> TokenKind {
        match code {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// A tokenizer built from a GGUF file's metadata: text to token ids and back.
pub struct Tokenizer {
    model: Model,
    /// Token text to id, for lookups during merging.
    vocab: HashMap<String, u32>,
    kinds: Vec<TokenKind>,
    /// The bytes each token decodes to, concatenated; token `i` is
    /// `pieces[piece_ends[i - 1]..piece_ends[i]]`.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
    specials: SpecialTokens,
    bos: Option<u32>,
    eos: u32,
    ends: Vec<u32>,
    add_bos: bool,
}

enum Model {
    Bpe(Bpe),
    Spm(Spm),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.model {
            Model::Bpe(_) => "gpt2",
            Model::Spm(_) => "llama",
        };
        f.debug_struct("Tokenizer")
            .field("model", &kind)
            .field("tokens", &self.kinds.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub(crate) fn from_metadata(md: &Metadata<'_>) -> Result<Tokenizer, Error> {
        let kind = md.required_str("tokenizer.ggml.model")?;
        let tokens = md.required_str_array("tokenizer.ggml.tokens")?;
        if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
            return Err(Error::Format(format!(
                "metadata key 'tokenizer.ggml.tokens' has an unusable length {}",
                tokens.len()
            )));
        }
        let kinds = token_kinds(md, tokens.len())?;
        let mut vocab = HashMap::with_capacity(tokens.len());
        for (id, text) in tokens.iter().enumerate() {
            // On duplicate texts the first id wins, as in llama.cpp.
            vocab.entry((*text).to_owned()).or_insert(id as u32);
        }
        let model = match kind {
            "gpt2" => Model::Bpe(Bpe::new(md, &vocab)?),
            "llama" => Model::Spm(Spm::new(md, &tokens, &vocab, &kinds)?),
            other => {
                return Err(Error::Format(format!(
                    "unsupported tokenizer model '{other}' (supported: gpt2, llama)"
                )));
            }
        };
        let (pieces, piece_ends) = decoded_pieces(&model, &tokens, &kinds);
        let specials = SpecialTokens::new(&tokens, &kinds);
        let token_id = |key: &str| md.token_id(key, tokens.len());
        let control_named = |name: &str| {
            vocab
                .get(name)
                .copied()
                .filter(|&id| kinds[id as usize] == TokenKind::Control)
        };
        let eos = match token_id("tokenizer.ggml.eos_token_id")? {
            Some(id) => id,
            None => ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "</s>"]
                .iter()
                .find_map(|name| control_named(name))
                .ok_or_else(|| {
                    Error::Format("missing metadata key 'tokenizer.ggml.eos_token_id'".into())
                })?,
        };
        let mut ends = vec![eos];
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            ends.extend(token_id(key)?);
        }
        // The end-of-turn markers llama.cpp also treats as the end of generation.
        for name in [
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|end|>",
        ] {
            ends.extend(control_named(name));
        }
        ends.sort_unstable();
        ends.dedup();
        let default_add_bos = match &model {
            Model::Spm(_) => true,
            Model::Bpe(bpe) => bpe.ignore_merges,
        };
        Ok(Tokenizer {
            bos: token_id("tokenizer.ggml.bos_token_id")?,
            add_bos: md
                .bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(default_add_bos),
            model,
            vocab,
            kinds,
            pieces,
            piece_ends,
            specials,
            eos,
            ends,
        })
    }

    /// Turns text into token ids. Control and user-defined tokens written in the
    /// text (such as `<|im_start|>`) become their ids. No BOS token is added;
    /// a [`Session`](super::Session) adds it when the model asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // SentencePiece puts a space in front of the text and after every
        // special token, as llama.cpp does.
        let mut after_special = true;
        for fragment in self.specials.split(text)? {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(text) => {
                    match &self.model {
                        Model::Bpe(bpe) => bpe.encode(text, &self.vocab, &mut out)?,
                        Model::Spm(spm) => {
                            spm.encode(text, after_special, &self.vocab, &mut out)?
                        }
                    }
                    after_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Turns token ids back into text. Bytes that are not valid UTF-8 become
    /// U+FFFD. For a SentencePiece model, the space put in front of the text
    /// by [`encode`](Self::encode) is removed again.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let mut bytes = Vec::new();
        for &id in ids {
            let piece = self
                .piece(id)
                .ok_or_else(|| Error::Tokenizer(format!("token id {id} is out of range")))?;
            bytes.extend_from_slice(piece);
        }
        let strip_space = match (&self.model, ids.first()) {
            (Model::Spm(spm), Some(&first)) => {
                spm.add_space_prefix && self.kinds[first as usize] == TokenKind::Normal
            }
            _ => false,
        };
        let bytes = match bytes.split_first() {
            Some((b' ', rest)) if strip_space => rest,
            _ => &bytes[..],
        };
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Whether `id` ends generation: the end-of-sequence token, the
    /// end-of-turn token (`tokenizer.ggml.eot_token_id`), and the control tokens
    /// `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<|eom_id|>` and `<|end|>`.
    pub fn is_end(&self, id: u32) -> bool {
        self.ends.binary_search(&id).is_ok()
    }

    /// Number of tokens in the vocabulary; every id below it can be decoded.
    pub fn vocab_size(&self) -> usize {
        self.kinds.len()
    }

    /// Whether a BOS token goes in front of a prompt
    /// (`tokenizer.ggml.add_bos_token`).
    pub(crate) fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The bytes token `id` stands for (possibly part of a UTF-8 sequence).
    pub(crate) fn piece(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        let end = *self.piece_ends.get(id)?;
        let start = if id == 0 { 0 } else { self.piece_ends[id - 1] };
        self.pieces.get(start..end)
    }
}

fn token_kinds(md: &Metadata<'_>, n_tokens: usize) -> Result<Vec<TokenKind>, Error> {
    let key = "tokenizer.ggml.token_type";
    match md.int_array(key)? {
        None => Ok(vec![TokenKind::Normal; n_tokens]),
        Some(codes) if codes.len() == n_tokens => {
            Ok(codes.into_iter().map(TokenKind::from_code).collect())
        }
        Some(codes) => Err(Error::Format(format!(
            "metadata key '{key}' has {} entries for {n_tokens} tokens",
            codes.len()
        ))),
    }
}

/// The bytes every token decodes to, flattened (see [`Tokenizer::piece`]).
fn decoded_pieces(model: &Model, tokens: &[&str], kinds: &[TokenKind]) -> (Vec<u8>, Vec<usize>) {
    let mut pieces = Vec::with_capacity(tokens.iter().map(|t| t.len()).sum());
    let mut ends = Vec::with_capacity(tokens.len());
    for (text, &kind) in tokens.iter().zip(kinds) {
        match (kind, model) {
            (TokenKind::Byte, _) => match parse_byte_token(text) {
                Some(b) => pieces.push(b),
                None => pieces.extend_from_slice(text.as_bytes()),
            },
            (TokenKind::Normal, Model::Bpe(_)) => byte_level_decode(text, &mut pieces),
            (TokenKind::Normal, Model::Spm(_)) => {
                for c in text.chars() {
                    let c = if c == SPM_SPACE { ' ' } else { c };
                    pieces.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            // Control, user-defined, unknown and unused tokens read as written.
            _ => pieces.extend_from_slice(text.as_bytes()),
        }
        ends.push(pieces.len());
    }
    (pieces, ends)
}

/// `<0x0A>` → 0x0A.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

// ---------------------------------------------------------------------------
// Special tokens in the text
// ---------------------------------------------------------------------------

/// A run of the text: plain text to tokenize, or a special token written in it.
#[derive(Debug, PartialEq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// Control and user-defined tokens, indexed by first byte so scanning the text
/// only compares at positions where one could start.
struct SpecialTokens {
    by_first_byte: HashMap<u8, Vec<(Vec<u8>, u32)>>,
}

impl SpecialTokens {
    fn new(tokens: &[&str], kinds: &[TokenKind]) -> SpecialTokens {
        let mut by_first_byte: HashMap<u8, Vec<(Vec<u8>, u32)>> = HashMap::new();
        for (id, (text, kind)) in tokens.iter().zip(kinds).enumerate() {
            if !matches!(kind, TokenKind::Control | TokenKind::UserDefined) {
                continue;
            }
            if let Some(&first) = text.as_bytes().first() {
                by_first_byte
                    .entry(first)
                    .or_default()
                    .push((text.as_bytes().to_vec(), id as u32));
            }
        }
        // Longest first, so `<|im_start|>` wins over a shorter token that is
        // its prefix; ties by id for a stable order.
        for candidates in by_first_byte.values_mut() {
            candidates.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        SpecialTokens { by_first_byte }
    }

    fn split<'a>(&self, text: &'a str) -> Result<Vec<Fragment<'a>>, Error> {
        let bytes = text.as_bytes();
        let mut fragments = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let found = self.by_first_byte.get(&bytes[i]).and_then(|candidates| {
                candidates
                    .iter()
                    .find(|(special, _)| bytes[i..].starts_with(special))
            });
            let Some((special, id)) = found else {
                i += 1;
                continue;
            };
            if i > start {
                fragments.push(Fragment::Text(slice(text, start, i)?));
            }
            fragments.push(Fragment::Token(*id));
            i += special.len();
            start = i;
        }
        if start < bytes.len() {
            fragments.push(Fragment::Text(slice(text, start, bytes.len())?));
        }
        Ok(fragments)
    }
}

/// `text[start..end]`, as an error rather than a panic if the bounds are not
/// on character boundaries (they always are: special tokens are valid UTF-8).
fn slice(text: &str, start: usize, end: usize) -> Result<&str, Error> {
    text.get(start..end)
        .ok_or_else(|| Error::Tokenizer("special token split inside a character".into()))
}

// ---------------------------------------------------------------------------
// Byte-level BPE (`gpt2`)
// ---------------------------------------------------------------------------

/// Which way `tokenizer.ggml.pre` says text is split before BPE.
enum PreTokenizer {
    /// Split by one regex.
    Regex(fancy_regex::Regex),
    /// Put every digit on its own first, then split the rest by the regex
    /// (SmolLM's tokenizer: HF's `Digits(individual_digits)` then `ByteLevel`).
    DigitsThenRegex(fancy_regex::Regex),
}

impl PreTokenizer {
    fn new(pre: &str) -> Result<PreTokenizer, Error> {
        let regex = |pattern: &str| {
            fancy_regex::Regex::new(pattern)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))
        };
        Ok(match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "pixtral" => {
                PreTokenizer::Regex(regex(REGEX_LLAMA3)?)
            }
            "qwen2" | "deepseek-r1-qwen" | "megrez" => PreTokenizer::Regex(regex(REGEX_QWEN2)?),
            "smollm" => PreTokenizer::DigitsThenRegex(regex(REGEX_GPT2)?),
            _ => PreTokenizer::Regex(regex(REGEX_GPT2)?),
        })
    }

    /// Calls `f` on each piece of `text`, in order.
    fn split(&self, text: &str, f: &mut dyn FnMut(&str) -> Result<(), Error>) -> Result<(), Error> {
        match self {
            PreTokenizer::Regex(re) => split_regex(re, text, f),
            PreTokenizer::DigitsThenRegex(re) => {
                let mut rest_start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        split_regex(re, &text[rest_start..i], f)?;
                        f(&text[i..i + c.len_utf8()])?;
                        rest_start = i + c.len_utf8();
                    }
                }
                split_regex(re, &text[rest_start..], f)
            }
        }
    }
}

/// Splits by the regex's matches; text between matches (which the patterns
/// above never leave, but a piece is never dropped) is a piece of its own.
fn split_regex(
    re: &fancy_regex::Regex,
    text: &str,
    f: &mut dyn FnMut(&str) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut last = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(|e| Error::Tokenizer(format!("pre-tokenizer: {e}")))?;
        if m.start() > last {
            f(&text[last..m.start()])?;
        }
        if m.end() > m.start() {
            f(m.as_str())?;
        }
        last = m.end();
    }
    if last < text.len() {
        f(&text[last..])?;
    }
    Ok(())
}

struct Bpe {
    pre: PreTokenizer,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The token of each byte's stand-in character.
    byte_tokens: [Option<u32>; 256],
    /// Llama 3: a piece that is a token as a whole is not merged step by step.
    ignore_merges: bool,
}

impl Bpe {
    fn new(md: &Metadata<'_>, vocab: &HashMap<String, u32>) -> Result<Bpe, Error> {
        let pre_name = md.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let merge_texts = md.required_str_array("tokenizer.ggml.merges")?;
        let mut merges = HashMap::with_capacity(merge_texts.len());
        for (rank, merge) in merge_texts.iter().enumerate() {
            let Some((left, right)) = merge.split_once(' ') else {
                continue;
            };
            let ids = (
                vocab.get(left),
                vocab.get(right),
                vocab.get(&format!("{left}{right}")),
            );
            // Merges whose parts are not tokens can never apply; skip them.
            if let (Some(&l), Some(&r), Some(&m)) = ids {
                merges.entry((l, r)).or_insert((rank as u32, m));
            }
        }
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let c = BYTE_CHARS[b];
            *slot = vocab.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
        }
        Ok(Bpe {
            pre: PreTokenizer::new(pre_name)?,
            merges,
            byte_tokens,
            ignore_merges: md.bool("tokenizer.ggml.ignore_merges")?.unwrap_or(matches!(
                pre_name,
                "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral"
            )),
        })
    }

    fn encode(
        &self,
        text: &str,
        vocab: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        self.pre
            .split(text, &mut |piece| self.encode_piece(piece, vocab, out))
    }

    fn encode_piece(
        &self,
        piece: &str,
        vocab: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        if self.ignore_merges {
            let stand_in: String = piece.bytes().map(|b| BYTE_CHARS[b as usize]).collect();
            if let Some(&id) = vocab.get(&stand_in) {
                out.push(id);
                return Ok(());
            }
        }
        let ids = piece
            .bytes()
            .map(|b| {
                self.byte_tokens[b as usize]
                    .ok_or_else(|| Error::Tokenizer(format!("no token for byte 0x{b:02x}")))
            })
            .collect::<Result<Vec<u32>, Error>>()?;
        bpe_merge(&ids, &self.merges, out);
        Ok(())
    }
}

/// Merges adjacent symbols, lowest rank first (leftmost among equal ranks),
/// until no pair has a merge; appends the result to `out`.
///
/// A heap of candidate pairs over a linked list of symbols keeps this
/// O(n log n), so a long run without spaces cannot make tokenization
/// quadratic. Entries go stale when a neighbour merges; they are recognised
/// on pop because the ids they recorded no longer match.
fn bpe_merge(ids: &[u32], merges: &HashMap<(u32, u32), (u32, u32)>, out: &mut Vec<u32>) {
    struct Symbol {
        id: u32,
        prev: usize,
        next: usize,
        alive: bool,
    }
    if ids.len() < 2 {
        out.extend_from_slice(ids);
        return;
    }
    let mut symbols: Vec<Symbol> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Symbol {
            id,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == ids.len() { NONE } else { i + 1 },
            alive: true,
        })
        .collect();
    // (rank, left index, left id, right id), smallest first.
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Reverse<(u32, usize, u32, u32)>>,
                symbols: &[Symbol],
                left: usize| {
        let right = symbols[left].next;
        if right == NONE {
            return;
        }
        let pair = (symbols[left].id, symbols[right].id);
        if let Some(&(rank, _)) = merges.get(&pair) {
            heap.push(Reverse((rank, left, pair.0, pair.1)));
        }
    };
    for left in 0..symbols.len() - 1 {
        push(&mut heap, &symbols, left);
    }
    while let Some(Reverse((_, left, left_id, right_id))) = heap.pop() {
        let right = symbols[left].next;
        let current = symbols[left].alive
            && right != NONE
            && symbols[left].id == left_id
            && symbols[right].id == right_id;
        if !current {
            continue;
        }
        let Some(&(_, merged)) = merges.get(&(left_id, right_id)) else {
            continue;
        };
        let after = symbols[right].next;
        symbols[left].id = merged;
        symbols[left].next = after;
        symbols[right].alive = false;
        if after != NONE {
            symbols[after].prev = left;
        }
        let before = symbols[left].prev;
        if before != NONE {
            push(&mut heap, &symbols, before);
        }
        push(&mut heap, &symbols, left);
    }
    // The first symbol is never merged away (only right-hand symbols are).
    let mut i = 0;
    while i != NONE {
        out.push(symbols[i].id);
        i = symbols[i].next;
    }
}

// GPT-2's byte-level mapping: printable bytes stand for themselves, the other
// 68 bytes (controls, space, DEL, NBSP, soft hyphen...) are moved to U+0100..
// so every token is printable text.

const fn is_printable_byte(b: u32) -> bool {
    matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff)
}

const fn build_byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0u32;
    while b < 256 {
        let code = if is_printable_byte(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// Byte → the character that stands for it in byte-level BPE tokens.
const BYTE_CHARS: [char; 256] = build_byte_chars();

const fn build_moved_bytes() -> [u8; 68] {
    let mut table = [0u8; 68];
    let mut n = 0;
    let mut b = 0u32;
    while b < 256 {
        if !is_printable_byte(b) && n < 68 {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
}

/// The bytes moved to U+0100.., in order: `MOVED_BYTES[c - 0x100]`.
const MOVED_BYTES: [u8; 68] = build_moved_bytes();

/// The byte a stand-in character means, if it is one.
fn stand_in_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 256 {
        return is_printable_byte(code).then_some(code as u8);
    }
    MOVED_BYTES.get(usize::try_from(code - 256).ok()?).copied()
}

/// Appends the bytes a byte-level token stands for; a character that is not a
/// stand-in (only in odd vocabularies) is kept as its UTF-8.
fn byte_level_decode(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match stand_in_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

// ---------------------------------------------------------------------------
// SentencePiece-style BPE (`llama`)
// ---------------------------------------------------------------------------

struct Spm {
    scores: Vec<f32>,
    /// The `<0xNN>` token of each byte, for characters with no token.
    byte_tokens: [Option<u32>; 256],
    unknown: Option<u32>,
    add_space_prefix: bool,
}

impl Spm {
    fn new(
        md: &Metadata<'_>,
        tokens: &[&str],
        vocab: &HashMap<String, u32>,
        kinds: &[TokenKind],
    ) -> Result<Spm, Error> {
        let key = "tokenizer.ggml.scores";
        let scores = md.required_f32_array(key)?;
        if scores.len() != tokens.len() {
            return Err(Error::Format(format!(
                "metadata key '{key}' has {} entries for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab.get(&format!("<0x{b:02X}>")).copied();
        }
        let unknown = md
            .token_id("tokenizer.ggml.unknown_token_id", tokens.len())?
            .or_else(|| {
                kinds
                    .iter()
                    .position(|&k| k == TokenKind::Unknown)
                    .map(|id| id as u32)
            });
        Ok(Spm {
            scores,
            byte_tokens,
            unknown,
            add_space_prefix: md.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
        })
    }

    fn encode(
        &self,
        text: &str,
        after_special: bool,
        vocab: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && after_special {
            escaped.push(SPM_SPACE);
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { SPM_SPACE } else { c }));
        for (start, end) in self.merge(&escaped, vocab) {
            self.emit(&escaped[start..end], vocab, out)?;
        }
        Ok(())
    }

    /// Merges the characters of `text`, best-scoring merged token first
    /// (leftmost among equal scores); returns the byte ranges of the symbols.
    fn merge(&self, text: &str, vocab: &HashMap<String, u32>) -> Vec<(usize, usize)> {
        struct Symbol {
            start: usize,
            len: usize,
            prev: usize,
            next: usize,
        }
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: NONE,
                next: NONE,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = if i == 0 { NONE } else { i - 1 };
            s.next = if i + 1 == n { NONE } else { i + 1 };
        }
        let mut heap = BinaryHeap::new();
        let push =
            |heap: &mut BinaryHeap<SpmBigram>, symbols: &[Symbol], left: usize, right: usize| {
                if left == NONE || right == NONE {
                    return;
                }
                let (start, end) = (
                    symbols[left].start,
                    symbols[right].start + symbols[right].len,
                );
                if let Some(&id) = text.get(start..end).and_then(|s| vocab.get(s)) {
                    let score = self
                        .scores
                        .get(id as usize)
                        .copied()
                        .unwrap_or(f32::NEG_INFINITY);
                    heap.push(SpmBigram {
                        score,
                        left,
                        right,
                        len: end - start,
                    });
                }
            };
        for i in 1..n {
            push(&mut heap, &symbols, i - 1, i);
        }
        while let Some(bigram) = heap.pop() {
            let (l, r) = (bigram.left, bigram.right);
            // Stale if either side has merged since the pair was queued.
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].next != r
                || symbols[l].len + symbols[r].len != bigram.len
            {
                continue;
            }
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            let after = symbols[r].next;
            symbols[l].next = after;
            if after != NONE {
                symbols[after].prev = l;
            }
            push(&mut heap, &symbols, symbols[l].prev, l);
            push(&mut heap, &symbols, l, after);
        }
        let mut ranges = Vec::new();
        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            ranges.push((symbols[i].start, symbols[i].start + symbols[i].len));
            i = symbols[i].next;
        }
        ranges
    }

    /// A symbol that is a token is that token; otherwise its bytes' `<0xNN>`
    /// tokens (or the unknown token when the vocabulary has no byte tokens).
    fn emit(
        &self,
        symbol: &str,
        vocab: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), Error> {
        if let Some(&id) = vocab.get(symbol) {
            out.push(id);
            return Ok(());
        }
        for b in symbol.bytes() {
            let id = self.byte_tokens[b as usize]
                .or(self.unknown)
                .ok_or_else(|| {
                    Error::Tokenizer(format!("no token for byte 0x{b:02x} and no unknown token"))
                })?;
            out.push(id);
        }
        Ok(())
    }
}

/// A candidate SentencePiece merge; the heap pops the best score first, then
/// the leftmost.
struct SpmBigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for SpmBigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for SpmBigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SpmBigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SpmBigram {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_mapping_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_CHARS[b as usize];
            assert!(seen.insert(c), "stand-in for {b} is not unique");
            assert!(
                !c.is_whitespace() && !c.is_control(),
                "stand-in for {b} is not printable"
            );
            assert_eq!(stand_in_byte(c), Some(b));
        }
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_CHARS[b'a' as usize], 'a');
        assert_eq!(stand_in_byte('\u{100}'), Some(0));
        assert_eq!(stand_in_byte('\u{144}'), None);
        assert_eq!(stand_in_byte('€'), None);
    }

    #[test]
    fn byte_level_decode_of_tokens() {
        let mut out = Vec::new();
        byte_level_decode("ĠHello", &mut out);
        byte_level_decode("Ċ", &mut out);
        assert_eq!(out, b" Hello\n");
        // "é" is the bytes C3 A9, each its own stand-in.
        let encoded: String = "é".bytes().map(|b| BYTE_CHARS[b as usize]).collect();
        let mut out = Vec::new();
        byte_level_decode(&encoded, &mut out);
        assert_eq!(out, "é".as_bytes());
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(0x0a));
        assert_eq!(parse_byte_token("<0xff>"), Some(0xff));
        assert_eq!(parse_byte_token("<0x0>"), None);
        assert_eq!(parse_byte_token("hello"), None);
    }

    #[test]
    fn bpe_merges_by_rank() {
        // ids: a=0 b=1 c=2 ab=3 bc=4 abc=5
        let mut merges = HashMap::new();
        merges.insert((1, 2), (0, 4)); // "b c" ranks first
        merges.insert((0, 1), (1, 3)); // "a b"
        merges.insert((0, 4), (2, 5)); // "a bc"
        let mut out = Vec::new();
        bpe_merge(&[0, 1, 2], &merges, &mut out);
        assert_eq!(out, vec![5]);
        out.clear();
        bpe_merge(&[0, 1, 0, 1], &merges, &mut out);
        assert_eq!(out, vec![3, 3]);
        out.clear();
        bpe_merge(&[2], &merges, &mut out);
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn bpe_equal_ranks_merge_leftmost_first() {
        // ids: a=0 aa=1; "a a" only.
        let mut merges = HashMap::new();
        merges.insert((0, 0), (0, 1));
        let mut out = Vec::new();
        bpe_merge(&[0, 0, 0], &merges, &mut out);
        assert_eq!(out, vec![1, 0]);
    }

    #[test]
    fn special_tokens_split_longest_first() {
        let tokens = ["<|a|>", "<|a|>x", "hi", "<s>"];
        let kinds = [
            TokenKind::Control,
            TokenKind::UserDefined,
            TokenKind::Normal,
            TokenKind::Normal,
        ];
        let specials = SpecialTokens::new(&tokens, &kinds);
        let fragments = specials.split("é<|a|>x<|a|>hi<s>").unwrap();
        assert_eq!(
            fragments,
            vec![
                Fragment::Text("é"),
                Fragment::Token(1),
                Fragment::Token(0),
                Fragment::Text("hi<s>"),
            ]
        );
        assert!(specials.split("").unwrap().is_empty());
    }

    use candle_core::quantized::gguf_file::Value;

    fn strings(items: &[String]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
    }

    fn build(md: &[(&str, Value)]) -> Result<Tokenizer, Error> {
        let map: HashMap<String, Value> =
            md.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        Tokenizer::from_metadata(&Metadata::new(&map))
    }

    /// A byte-level vocabulary: the 256 byte stand-ins, a few merges, two
    /// control tokens.
    fn gpt2_tokenizer() -> Tokenizer {
        let mut tokens: Vec<String> = BYTE_CHARS.iter().map(|c| c.to_string()).collect();
        for t in [
            "he",
            "ll",
            "hell",
            "hello",
            "Ġw",
            "Ġwo",
            "<|im_start|>",
            "<|im_end|>",
        ] {
            tokens.push(t.to_string());
        }
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let n = tokens.len();
        let types = (0..n)
            .map(|i| Value::I32(if i + 2 >= n { 3 } else { 1 }))
            .collect();
        build(&[
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&merges)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 1)),
        ])
        .unwrap()
    }

    #[test]
    fn gpt2_encode_decode() {
        let tok = gpt2_tokenizer();
        let id = |t: &str| tok.vocab[t];
        let byte = |b: u8| id(&BYTE_CHARS[b as usize].to_string());
        let ids = tok.encode("<|im_start|>hello world<|im_end|>").unwrap();
        assert_eq!(
            ids,
            vec![
                id("<|im_start|>"),
                id("hello"),
                id("Ġwo"),
                byte(b'r'),
                byte(b'l'),
                byte(b'd'),
                id("<|im_end|>")
            ]
        );
        assert_eq!(
            tok.decode(&ids).unwrap(),
            "<|im_start|>hello world<|im_end|>"
        );
        assert!(tok.is_end(id("<|im_end|>")));
        assert!(!tok.is_end(id("hello")));
        assert_eq!(tok.eos(), id("<|im_end|>"));
        assert_eq!(tok.bos(), None);
        assert!(!tok.add_bos());
        let text = "ünï 42 \u{1F600}\n\ttabs";
        assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
        assert!(tok.decode(&[u32::MAX]).is_err());
    }

    /// A SentencePiece vocabulary with byte fallback.
    fn spm_tokenizer() -> Tokenizer {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(Value::I32(6));
        }
        let words = [
            ("▁", -5.0),
            ("h", -5.0),
            ("i", -5.0),
            ("▁h", -2.0),
            ("▁hi", -1.0),
            ("hi", -3.0),
        ];
        let mut scores = vec![Value::F32(0.0); tokens.len()];
        for (word, score) in words {
            tokens.push(word.to_string());
            types.push(Value::I32(1));
            scores.push(Value::F32(score));
        }
        build(&[
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ])
        .unwrap()
    }

    #[test]
    fn spm_merges_by_score_with_byte_fallback() {
        let tok = spm_tokenizer();
        let id = |t: &str| tok.vocab[t];
        assert_eq!(tok.encode("hi").unwrap(), vec![id("▁hi")]);
        let ids = tok.encode("hé").unwrap();
        assert_eq!(ids, vec![id("▁h"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tok.decode(&ids).unwrap(), "hé");
        assert_eq!(tok.encode("<s>hi").unwrap(), vec![1, id("▁hi")]);
        assert_eq!((tok.bos(), tok.eos()), (Some(1), 2));
        assert!(tok.add_bos());
    }

    #[test]
    fn unsupported_tokenizer_is_named() {
        let err = build(&[
            ("tokenizer.ggml.model", Value::String("bert".into())),
            ("tokenizer.ggml.tokens", strings(&["a".to_string()])),
        ]);
        match err {
            Err(Error::Format(msg)) => assert!(msg.contains("'bert'"), "{msg}"),
            _ => panic!("expected a format error"),
        }
        match build(&[("tokenizer.ggml.model", Value::String("gpt2".into()))]) {
            Err(Error::Format(msg)) => assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}"),
            _ => panic!("expected a format error"),
        }
    }

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(pre).unwrap();
        let mut out = Vec::new();
        pre.split(text, &mut |p| {
            out.push(p.to_string());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn pre_tokenizers() {
        let text = "Hello'Ve world 1234\n\n  foo";
        assert_eq!(
            pieces("llama-bpe", text),
            [
                "Hello", "'Ve", " world", " ", "123", "4", "\n\n", " ", " foo"
            ]
        );
        assert_eq!(
            pieces("qwen2", text),
            [
                "Hello", "'Ve", " world", " ", "1", "2", "3", "4", "\n\n", " ", " foo"
            ]
        );
        assert_eq!(
            pieces("gpt2", "Hello world  123 x"),
            ["Hello", " world", " ", " 123", " x"]
        );
        assert_eq!(pieces("smollm", "a  12b"), ["a", "  ", "1", "2", "b"]);
    }
}
