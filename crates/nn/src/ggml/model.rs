//! Weights and forward pass of a Llama-architecture model read from GGUF.
//!
//! The weights stay quantised (candle's `QMatMul` multiplies by them
//! directly); only norms, biases and RoPE frequencies are kept as `f32`. The
//! model is immutable once loaded, so any number of sessions can run it at
//! once; everything that changes during generation lives in a [`KvCache`]
//! owned by the session.
//!
//! The small per-token kernels (RMSNorm, RoPE with the move to head-major
//! layout, causal softmax, SwiGLU) work directly on the `f32` slices: each is
//! one pass and one allocation instead of a chain of tensor ops.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Storage, Tensor};

use super::Error;
use super::tokenizer::Tokenizer;

/// The KV cache grows by at least this many positions at a time.
const MIN_CACHE_GROWTH: usize = 256;

/// A Llama-architecture language model (`llama` or `qwen2`) loaded from a
/// GGUF file: quantised weights, hyperparameters and tokenizer. Immutable and
/// `Send + Sync`: share it through an `Arc` between sessions and threads.
pub struct LlamaModel {
    architecture: String,
    name: Option<String>,
    context_length: usize,
    tokenizer: Tokenizer,
    hp: Hparams,
    token_embd: Arc<QTensor>,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: QMatMul,
    /// RoPE frequency of each rotated pair: `freq_base^(-2i/rot_dim)`,
    /// divided by `rope_freqs.weight` when the model has one (Llama 3.1+).
    inv_freq: Vec<f64>,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("architecture", &self.architecture)
            .field("name", &self.name)
            .field("context_length", &self.context_length)
            .field("layers", &self.blocks.len())
            .field("embedding_length", &self.hp.n_embd)
            .finish_non_exhaustive()
    }
}

/// Hyperparameters from the `{arch}.*` metadata.
struct Hparams {
    n_embd: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    rot_dim: usize,
    eps: f32,
    /// GGML's NEOX RoPE (pairs `i`, `i + rot/2`) instead of the normal,
    /// interleaved one (pairs `2i`, `2i + 1`).
    neox: bool,
    /// Logits computed: the output rows the tokenizer can decode.
    n_logits: usize,
}

/// One transformer block.
struct Block {
    attn_norm: Vec<f32>,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    /// Projection biases (Qwen2 has them; Llama usually not).
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

impl LlamaModel {
    /// Loads a GGUF file. It is read through a buffered reader (a memory map
    /// would need `unsafe`), and candle copies the tensor data into its
    /// `QTensor`s, so the file is not kept open.
    pub fn load(path: &Path) -> Result<LlamaModel, Error> {
        let file = std::fs::File::open(path).map_err(Error::Io)?;
        LlamaModel::read(&mut std::io::BufReader::new(file))
    }

    /// Loads a GGUF model from bytes already in memory (a guest's `load` call).
    pub fn from_bytes(bytes: &[u8]) -> Result<LlamaModel, Error> {
        LlamaModel::read(&mut std::io::Cursor::new(bytes))
    }

    /// The architecture, `general.architecture`: `llama` or `qwen2`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The model's name, `general.name`, if the file gives one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The context length the model was trained with, `{arch}.context_length`.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The tokenizer described by the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn read<R: Read + Seek>(reader: &mut R) -> Result<LlamaModel, Error> {
        let content = guarded("not a valid gguf file", || {
            gguf_file::Content::read(&mut *reader)
        })?;
        let md = Metadata::new(&content.metadata);
        let architecture = md.required_str("general.architecture")?.to_owned();
        let name = md.str("general.name")?.map(str::to_owned);
        let (mut hp, context_length) = hparams(&md, &architecture)?;
        let tokenizer = Tokenizer::from_metadata(&md)?;
        let mut tensors = TensorReader {
            content: &content,
            reader,
        };

        let (token_embd, n_vocab) = tensors.embedding(hp.n_embd, tokenizer.vocab_size())?;
        let token_embd = Arc::new(token_embd);
        let (output, n_out) = if tensors.has("output.weight") {
            let n_out = tensors
                .dims("output.weight")?
                .first()
                .copied()
                .unwrap_or(0)
                .max(1);
            (tensors.matmul("output.weight", &[n_out, hp.n_embd])?, n_out)
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            let output = QMatMul::from_arc(token_embd.clone()).map_err(candle_error)?;
            (output, n_vocab)
        };
        hp.n_logits = n_out.min(tokenizer.vocab_size());
        let n_ff = md.usize(&format!("{architecture}.feed_forward_length"))?;

        let mut blocks = Vec::new();
        for i in 0..md.required_usize(&format!("{architecture}.block_count"))? {
            blocks.push(tensors.block(i, &hp, n_ff)?);
        }
        let inv_freq = rope_frequencies(&md, &architecture, &hp, &mut tensors)?;
        Ok(LlamaModel {
            output_norm: tensors.vector("output_norm.weight", hp.n_embd)?,
            architecture,
            name,
            context_length,
            tokenizer,
            hp,
            token_embd,
            blocks,
            output,
            inv_freq,
        })
    }

    /// An empty KV cache sized for this model, growing up to `limit` positions.
    pub(crate) fn new_cache(&self, limit: usize) -> KvCache {
        KvCache {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
            limit,
            n_layers: self.blocks.len(),
            n_kv_head: self.hp.n_kv_head,
            head_dim: self.hp.head_dim,
        }
    }

    /// Runs `tokens` through the model at the cache's next positions, appends
    /// their keys and values to the cache, and returns the logits of the last
    /// token (one per token the tokenizer can decode).
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, Error> {
        let t = tokens.len();
        if t == 0 {
            return Err(Error::Candle("forward called with no tokens".into()));
        }
        let pos = cache.len;
        cache.reserve(pos + t)?;
        let rope = Rope::new(&self.inv_freq, pos, t, self.hp.neox);
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.token_embd.embedding(&ids)?;
        for (block, layer) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = rms_norm(&x, &block.attn_norm, self.hp.eps)?;
            x = x.add(&self.attention(block, &h, &rope, layer, pos)?)?;
            let h = rms_norm(&x, &block.ffn_norm, self.hp.eps)?;
            x = x.add(&self.mlp(block, &h)?)?;
        }
        cache.len = pos + t;
        // Only the last position's logits are needed to pick the next token.
        let last = x.narrow(0, t - 1, 1)?;
        let h = rms_norm(&last, &self.output_norm, self.hp.eps)?;
        let logits = self.output.forward(&h)?;
        let mut logits = with_f32(&logits, <[f32]>::to_vec)?;
        logits.truncate(self.hp.n_logits);
        Ok(logits)
    }

    /// Self-attention of one block over the chunk `h` (`[t, n_embd]`) at
    /// position `pos`, with the cache holding the earlier positions.
    fn attention(
        &self,
        block: &Block,
        h: &Tensor,
        rope: &Rope,
        cache: &mut LayerCache,
        pos: usize,
    ) -> Result<Tensor, Error> {
        let hp = &self.hp;
        let t = h.dim(0)?;
        let [q, k, v] = project(&[&block.wq, &block.wk, &block.wv], h)?;
        let q = to_heads(&q, block.bq.as_deref(), hp.n_head, hp.head_dim, Some(rope))?;
        let k = to_heads(
            &k,
            block.bk.as_deref(),
            hp.n_kv_head,
            hp.head_dim,
            Some(rope),
        )?;
        let v = to_heads(&v, block.bv.as_deref(), hp.n_kv_head, hp.head_dim, None)?;
        cache.k.slice_set(&k, 1, pos)?;
        cache.v.slice_set(&v, 1, pos)?;
        let out = attend(&q, cache, hp, t, pos)?;
        Ok(block.wo.forward(&out)?)
    }

    /// The SwiGLU feed-forward network: `down(silu(gate(h)) * up(h))`.
    fn mlp(&self, block: &Block, h: &Tensor) -> Result<Tensor, Error> {
        let [gate, up] = project(&[&block.gate, &block.up], h)?;
        Ok(block.down.forward(&silu_mul(&gate, &up)?)?)
    }
}

/// Scaled dot-product attention of the chunk's queries (`[n_head, t,
/// head_dim]`) over the cache's first `pos + t` positions, causally masked,
/// as `[t, n_head * head_dim]`. Written as plain loops rather than batched
/// matmuls so that every query row is summed in the same order however the
/// prompt is chunked: a 4-bit model's greedy answer can turn on the last
/// bits of one score, and a prompt must give the same answer processed in
/// one batch or token by token.
fn attend(
    q: &Tensor,
    cache: &LayerCache,
    hp: &Hparams,
    t: usize,
    pos: usize,
) -> Result<Tensor, Error> {
    let d = hp.head_dim;
    let group = hp.n_head / hp.n_kv_head;
    let scale = 1.0 / (d as f32).sqrt();
    let capacity = cache.k.dim(1)?;
    let mut out = vec![0f32; t * hp.n_head * d];
    with_f32(q, |qs| {
        with_f32(&cache.k, |ks| {
            with_f32(&cache.v, |vs| {
                let mut scores = Vec::with_capacity(pos + t);
                for head in 0..hp.n_head {
                    let kv = head / group;
                    let keys = &ks[kv * capacity * d..(kv + 1) * capacity * d];
                    let values = &vs[kv * capacity * d..(kv + 1) * capacity * d];
                    for row in 0..t {
                        let query = &qs[(head * t + row) * d..(head * t + row + 1) * d];
                        let visible = pos + row + 1;
                        scores.clear();
                        scores.extend(
                            keys.chunks_exact(d)
                                .take(visible)
                                .map(|key| dot(query, key) * scale),
                        );
                        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                        let mut sum = 0f32;
                        for s in scores.iter_mut() {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                        let dst = &mut out
                            [(row * hp.n_head + head) * d..(row * hp.n_head + head + 1) * d];
                        for (p, value) in scores.iter().zip(values.chunks_exact(d)) {
                            let p = p / sum;
                            dst.iter_mut().zip(value).for_each(|(o, v)| *o += p * v);
                        }
                    }
                }
            })
        })
    })???;
    Ok(Tensor::from_vec(out, (t, hp.n_head * d), &Device::Cpu)?)
}

/// A dot product in eight lanes, which the compiler vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Multiplies `x` by several weights. (candle's fused kernel for weights
/// sharing one input quantises that input its own way on some CPUs, so a
/// token's answer would depend on whether it came in a batch: one matmul
/// each keeps every path alike.)
fn project<const N: usize>(weights: &[&QMatMul; N], x: &Tensor) -> Result<[Tensor; N], Error> {
    let outputs = weights
        .iter()
        .map(|w| w.forward(x))
        .collect::<Result<Vec<_>, _>>()?;
    outputs
        .try_into()
        .map_err(|_| Error::Candle("a projection returned the wrong number of outputs".into()))
}

// ---------------------------------------------------------------------------
// KV cache
// ---------------------------------------------------------------------------

/// Keys and values of the positions processed so far, per layer, each
/// `[n_kv_head, capacity, head_dim]`. It grows geometrically (up to the
/// session's context size) and is reused across prompts, so a generation
/// step writes one position in place instead of reallocating the cache.
pub(crate) struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
    limit: usize,
    n_layers: usize,
    n_kv_head: usize,
    head_dim: usize,
}

struct LayerCache {
    k: Tensor,
    v: Tensor,
}

impl KvCache {
    /// Positions in the cache.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets all positions (keeping the memory) and sets the most positions
    /// the cache may grow to.
    pub(crate) fn reset(&mut self, limit: usize) {
        self.len = 0;
        self.limit = limit;
    }

    /// Makes room for `needed` positions.
    fn reserve(&mut self, needed: usize) -> Result<(), Error> {
        if needed <= self.capacity {
            return Ok(());
        }
        if needed > self.limit {
            return Err(Error::ContextFull);
        }
        let capacity = needed
            .max(self.capacity.saturating_mul(2))
            .max(MIN_CACHE_GROWTH)
            .min(self.limit);
        let shape = (self.n_kv_head, capacity, self.head_dim);
        let grow = |old: Option<&Tensor>| -> Result<Tensor, Error> {
            let new = Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu)?;
            if let Some(old) = old {
                new.slice_set(old, 1, 0)?;
            }
            Ok(new)
        };
        let mut layers = Vec::with_capacity(self.n_layers);
        for i in 0..self.n_layers {
            let old = self.layers.get(i);
            layers.push(LayerCache {
                k: grow(old.map(|l| &l.k))?,
                v: grow(old.map(|l| &l.v))?,
            });
        }
        self.layers = layers;
        self.capacity = capacity;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Kernels on f32 slices
// ---------------------------------------------------------------------------

/// Calls `f` on the tensor's `f32` data in row-major order, without copying
/// it when the tensor is already contiguous.
fn with_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, Error> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Candle("tensor is not in cpu memory".into()));
    };
    let data = cpu.as_slice::<f32>()?;
    let start = layout.start_offset();
    let data = data
        .get(start..start + layout.shape().elem_count())
        .ok_or_else(|| Error::Candle("tensor layout is out of bounds".into()))?;
    Ok(f(data))
}

/// RMSNorm of each row of `x` (`[rows, n]`), scaled by `weight`. The mean
/// square is summed in f64, as ggml does.
fn rms_norm(x: &Tensor, weight: &[f32], eps: f32) -> Result<Tensor, Error> {
    let (rows, n) = x.dims2()?;
    if n != weight.len() || n == 0 {
        return Err(Error::Candle(format!(
            "rms norm of width {n} with {} weights",
            weight.len()
        )));
    }
    let out = with_f32(x, |xs| {
        let mut out = Vec::with_capacity(xs.len());
        for row in xs.chunks_exact(n) {
            let mean_square = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / n as f64;
            let scale = (1.0 / (mean_square + f64::from(eps)).sqrt()) as f32;
            out.extend(row.iter().zip(weight).map(|(&v, &w)| v * scale * w));
        }
        out
    })?;
    Ok(Tensor::from_vec(out, (rows, n), &Device::Cpu)?)
}

/// `silu(gate) * up`, elementwise.
fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor, Error> {
    if gate.dims() != up.dims() {
        return Err(Error::Candle(
            "gate and up projections differ in shape".into(),
        ));
    }
    let out = with_f32(gate, |gs| {
        with_f32(up, |us| {
            gs.iter()
                .zip(us)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect::<Vec<f32>>()
        })
    })??;
    Ok(Tensor::from_vec(out, gate.dims(), &Device::Cpu)?)
}

/// Rotation angles for the positions of one chunk, shared by all layers.
struct Rope {
    /// `cos`/`sin` of position `pos + t`, pair `i` at `[t * pairs + i]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    pairs: usize,
    neox: bool,
}

impl Rope {
    fn new(inv_freq: &[f64], pos: usize, t: usize, neox: bool) -> Rope {
        let pairs = inv_freq.len();
        let mut cos = Vec::with_capacity(t * pairs);
        let mut sin = Vec::with_capacity(t * pairs);
        for p in pos..pos + t {
            for &f in inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        Rope {
            cos,
            sin,
            pairs,
            neox,
        }
    }

    /// Rotates one head's vector at chunk row `t`. GGML's normal mode (Llama
    /// GGUFs, whose q/k rows were permuted for it at conversion) rotates
    /// interleaved pairs; NEOX mode (Qwen2) rotates element `i` with `i + rot/2`.
    fn rotate(&self, head: &mut [f32], t: usize) {
        let range = t * self.pairs..(t + 1) * self.pairs;
        let (cos, sin) = (&self.cos[range.clone()], &self.sin[range]);
        for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
            let (a, b) = if self.neox {
                (i, i + self.pairs)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x, y) = (head[a], head[b]);
            head[a] = x * c - y * s;
            head[b] = x * s + y * c;
        }
    }
}

/// Rearranges a projection (`[t, n_heads * head_dim]`) into head-major order
/// (`[n_heads, t, head_dim]`), adding the bias and applying RoPE on the way.
fn to_heads(
    proj: &Tensor,
    bias: Option<&[f32]>,
    n_heads: usize,
    head_dim: usize,
    rope: Option<&Rope>,
) -> Result<Tensor, Error> {
    let (t, width) = proj.dims2()?;
    if width != n_heads * head_dim || bias.is_some_and(|b| b.len() != width) {
        return Err(Error::Candle(format!(
            "projection of width {width} for {n_heads} heads"
        )));
    }
    if let Some(rope) = rope
        && (rope.pairs * 2 > head_dim || rope.cos.len() < t * rope.pairs)
    {
        return Err(Error::Candle("rope tables do not fit the heads".into()));
    }
    let mut out = vec![0f32; n_heads * t * head_dim];
    with_f32(proj, |xs| {
        for (ti, row) in xs.chunks_exact(width).enumerate() {
            for (h, src) in row.chunks_exact(head_dim).enumerate() {
                let start = (h * t + ti) * head_dim;
                let dst = &mut out[start..start + head_dim];
                dst.copy_from_slice(src);
                if let Some(bias) = bias {
                    let bias = &bias[h * head_dim..(h + 1) * head_dim];
                    dst.iter_mut().zip(bias).for_each(|(d, b)| *d += b);
                }
                if let Some(rope) = rope {
                    rope.rotate(dst, ti);
                }
            }
        }
    })?;
    Ok(Tensor::from_vec(out, (n_heads, t, head_dim), &Device::Cpu)?)
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Reads the hyperparameters; returns them with the context length.
fn hparams(md: &Metadata<'_>, arch: &str) -> Result<(Hparams, usize), Error> {
    let neox = match arch {
        "llama" => false,
        "qwen2" => true,
        other => {
            return Err(Error::Format(format!(
                "unsupported model architecture '{other}' (supported: llama, qwen2)"
            )));
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let n_embd = md.required_usize(&key("embedding_length"))?;
    let n_head = md.required_usize(&key("attention.head_count"))?;
    let n_kv_head = md.usize(&key("attention.head_count_kv"))?.unwrap_or(n_head);
    let context_length = md.required_usize(&key("context_length"))?;
    let eps = md
        .f32(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| missing_key(&key("attention.layer_norm_rms_epsilon")))?;
    if n_embd == 0 || n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
        return Err(Error::Format(format!(
            "unusable attention shape: {n_embd} wide, {n_head} heads, {n_kv_head} kv heads"
        )));
    }
    let head_dim = md
        .usize(&key("attention.key_length"))?
        .unwrap_or(n_embd / n_head);
    let rot_dim = md.usize(&key("rope.dimension_count"))?.unwrap_or(head_dim);
    // The projection widths must not overflow (they are compared with the
    // tensors' shapes later).
    let too_wide = n_head
        .checked_mul(head_dim)
        .is_none_or(|w| w > u32::MAX as usize);
    if head_dim == 0 || too_wide || rot_dim % 2 != 0 || rot_dim > head_dim {
        return Err(Error::Format(format!(
            "unusable head size {head_dim} with {rot_dim} rotary dimensions"
        )));
    }
    if let Some(v) = md.usize(&key("attention.value_length"))?
        && v != head_dim
    {
        return Err(Error::Format(format!(
            "unsupported value length {v} different from key length {head_dim}"
        )));
    }
    if context_length == 0 || !eps.is_finite() || eps < 0.0 {
        return Err(Error::Format(
            "unusable context length or norm epsilon".into(),
        ));
    }
    let hp = Hparams {
        n_embd,
        n_head,
        n_kv_head,
        head_dim,
        rot_dim,
        eps,
        neox,
        n_logits: 0,
    };
    Ok((hp, context_length))
}

/// RoPE frequencies, with Llama 3.1's per-pair factors (`rope_freqs.weight`)
/// when present.
fn rope_frequencies<R: Read + Seek>(
    md: &Metadata<'_>,
    arch: &str,
    hp: &Hparams,
    tensors: &mut TensorReader<'_, R>,
) -> Result<Vec<f64>, Error> {
    let base = md
        .f32(&format!("{arch}.rope.freq_base"))?
        .unwrap_or(10000.0);
    if !(base.is_finite() && base > 0.0) {
        return Err(Error::Format(format!(
            "unusable rope frequency base {base}"
        )));
    }
    let pairs = hp.rot_dim / 2;
    let factors = tensors.optional_vector("rope_freqs.weight", pairs)?;
    Ok((0..pairs)
        .map(|i| {
            let freq = f64::from(base).powf(-2.0 * i as f64 / hp.rot_dim as f64);
            match &factors {
                Some(factors) if factors[i] != 0.0 => freq / f64::from(factors[i]),
                _ => freq,
            }
        })
        .collect())
}

/// Reads tensors out of the GGUF file, checking their shapes first so a
/// malformed file is a clear error rather than a failure deep in a matmul.
struct TensorReader<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
}

impl<R: Read + Seek> TensorReader<'_, R> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Shape in candle's order (GGUF's reversed): `[rows, columns]`, so a
    /// weight is `[out_features, in_features]`.
    fn dims(&self, name: &str) -> Result<Vec<usize>, Error> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::Format(format!("missing tensor '{name}'")))?;
        Ok(info.shape.dims().to_vec())
    }

    fn qtensor(&mut self, name: &str, dims: &[usize]) -> Result<QTensor, Error> {
        let found = self.dims(name)?;
        if found != dims {
            return Err(Error::Format(format!(
                "tensor '{name}' has shape {found:?}, expected {dims:?}"
            )));
        }
        let content = self.content;
        let reader = &mut *self.reader;
        guarded(&format!("tensor '{name}'"), || {
            content.tensor(&mut *reader, name, &Device::Cpu)
        })
    }

    fn matmul(&mut self, name: &str, dims: &[usize]) -> Result<QMatMul, Error> {
        let weights = widened(self.qtensor(name, dims)?).map_err(|e| {
            Error::Format(format!("tensor '{name}': {}", first_line(&e.to_string())))
        })?;
        QMatMul::from_qtensor(weights).map_err(candle_error)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, Error> {
        let tensor = self.qtensor(name, &[len])?;
        let values = guarded(&format!("tensor '{name}'"), || {
            tensor
                .dequantize(&Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()
        })?;
        Ok(values)
    }

    fn optional_vector(&mut self, name: &str, len: usize) -> Result<Option<Vec<f32>>, Error> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `token_embd.weight`, `[vocab, n_embd]`, and its number of rows. It
    /// stays quantised: the rows of a chunk's tokens are dequantised at lookup.
    fn embedding(&mut self, n_embd: usize, n_tokens: usize) -> Result<(QTensor, usize), Error> {
        let name = "token_embd.weight";
        let vocab = self.dims(name)?.first().copied().unwrap_or(0);
        if vocab < n_tokens {
            return Err(Error::Format(format!(
                "tensor '{name}' has {vocab} rows for {n_tokens} tokens"
            )));
        }
        Ok((self.qtensor(name, &[vocab, n_embd])?, vocab))
    }

    fn block(&mut self, i: usize, hp: &Hparams, n_ff: Option<usize>) -> Result<Block, Error> {
        let name = |t: &str| format!("blk.{i}.{t}");
        let (e, q_width, kv_width) = (
            hp.n_embd,
            hp.n_head * hp.head_dim,
            hp.n_kv_head * hp.head_dim,
        );
        let n_ff = match n_ff {
            Some(n) => n,
            None => self
                .dims(&name("ffn_gate.weight"))?
                .first()
                .copied()
                .unwrap_or(0),
        };
        if n_ff == 0 {
            return Err(Error::Format(format!(
                "block {i} has an empty feed-forward layer"
            )));
        }
        Ok(Block {
            attn_norm: self.vector(&name("attn_norm.weight"), e)?,
            wq: self.matmul(&name("attn_q.weight"), &[q_width, e])?,
            wk: self.matmul(&name("attn_k.weight"), &[kv_width, e])?,
            wv: self.matmul(&name("attn_v.weight"), &[kv_width, e])?,
            wo: self.matmul(&name("attn_output.weight"), &[e, q_width])?,
            bq: self.optional_vector(&name("attn_q.bias"), q_width)?,
            bk: self.optional_vector(&name("attn_k.bias"), kv_width)?,
            bv: self.optional_vector(&name("attn_v.bias"), kv_width)?,
            ffn_norm: self.vector(&name("ffn_norm.weight"), e)?,
            gate: self.matmul(&name("ffn_gate.weight"), &[n_ff, e])?,
            up: self.matmul(&name("ffn_up.weight"), &[n_ff, e])?,
            down: self.matmul(&name("ffn_down.weight"), &[e, n_ff])?,
        })
    }
}

/// Weights in a format candle multiplies without SIMD (Q4_1, Q5_0, Q5_1:
/// a scalar loop, four times slower than llama.cpp) are widened to Q8_0 at
/// load, which candle has AVX2 kernels for: 1.7 times their memory, and a
/// rounding of each weight far below the 4- or 5-bit one it already has.
fn widened(weights: QTensor) -> candle_core::Result<QTensor> {
    match weights.dtype() {
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => {
            QTensor::quantize(&weights.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
        }
        _ => Ok(weights),
    }
}

/// Runs a candle parsing step, turning its errors, and any panic from a
/// malformed file (candle divides by `general.alignment` unchecked, for
/// one), into [`Error::Format`].
fn guarded<T>(what: &str, f: impl FnOnce() -> candle_core::Result<T>) -> Result<T, Error> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Format(format!(
            "{what}: {}",
            first_line(&e.to_string())
        ))),
        Err(_) => Err(Error::Format(format!("{what}: malformed data"))),
    }
}

fn candle_error(e: candle_core::Error) -> Error {
    Error::Candle(first_line(&e.to_string()))
}

/// Candle errors can carry a backtrace after the first line.
pub(crate) fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

fn missing_key(key: &str) -> Error {
    Error::Format(format!("missing metadata key '{key}'"))
}

// ---------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------

/// Typed access to GGUF metadata; a value of the wrong type is an
/// [`Error::Format`] naming the key.
pub(crate) struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
}

impl<'a> Metadata<'a> {
    pub(crate) fn new(map: &'a HashMap<String, Value>) -> Metadata<'a> {
        Metadata { map }
    }

    fn wrong_type(key: &str, expected: &str) -> Error {
        Error::Format(format!("metadata key '{key}' must be {expected}"))
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Self::wrong_type(key, "a string")),
        }
    }

    pub(crate) fn required_str(&self, key: &str) -> Result<&'a str, Error> {
        self.str(key)?.ok_or_else(|| missing_key(key))
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => int_value(v)
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "an integer")),
        }
    }

    pub(crate) fn usize(&self, key: &str) -> Result<Option<usize>, Error> {
        match self.int(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| Self::wrong_type(key, "a non-negative integer")),
        }
    }

    pub(crate) fn required_usize(&self, key: &str) -> Result<usize, Error> {
        self.usize(key)?.ok_or_else(|| missing_key(key))
    }

    /// A token id below `n_tokens`; a negative or out-of-range id (some files
    /// write -1 for "none") reads as absent.
    pub(crate) fn token_id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>, Error> {
        Ok(self
            .int(key)?
            .and_then(|id| usize::try_from(id).ok())
            .filter(|&id| id < n_tokens)
            .and_then(|id| u32::try_from(id).ok()))
    }

    pub(crate) fn f32(&self, key: &str) -> Result<Option<f32>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(v) => int_value(v)
                .map(|v| Some(v as f32))
                .ok_or_else(|| Self::wrong_type(key, "a number")),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Self::wrong_type(key, "a boolean")),
        }
    }

    fn required_array(&self, key: &str) -> Result<&'a [Value], Error> {
        match self.map.get(key) {
            None => Err(missing_key(key)),
            Some(Value::Array(items)) => Ok(items.as_slice()),
            Some(_) => Err(Self::wrong_type(key, "an array")),
        }
    }

    pub(crate) fn required_str_array(&self, key: &str) -> Result<Vec<&'a str>, Error> {
        self.required_array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(Self::wrong_type(key, "an array of strings")),
            })
            .collect()
    }

    pub(crate) fn required_f32_array(&self, key: &str) -> Result<Vec<f32>, Error> {
        self.required_array(key)?
            .iter()
            .map(|v| match v {
                Value::F32(f) => Ok(*f),
                Value::F64(f) => Ok(*f as f32),
                _ => Err(Self::wrong_type(key, "an array of numbers")),
            })
            .collect()
    }

    pub(crate) fn int_array(&self, key: &str) -> Result<Option<Vec<i64>>, Error> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        self.required_array(key)?
            .iter()
            .map(|v| int_value(v).ok_or_else(|| Self::wrong_type(key, "an array of integers")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn int_value(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(v) => Some(i64::from(v)),
        Value::I8(v) => Some(i64::from(v)),
        Value::U16(v) => Some(i64::from(v)),
        Value::I16(v) => Some(i64::from(v)),
        Value::U32(v) => Some(i64::from(v)),
        Value::I32(v) => Some(i64::from(v)),
        Value::U64(v) => i64::try_from(v).ok(),
        Value::I64(v) => Some(v),
        _ => None,
    }
}
