//! The LM-TAD decoder (upstream `code/models/LMTAD.py`, nanoGPT-derived), backend-generic.
//!
//! Token embedding `wte` [V, C] weight-tied to the LM head (logits = h · wteᵀ, no bias); learned
//! positions `wpe` [block_size, C] or fixed sinusoidal ones; dropout; `n_layer` pre-LN blocks
//! (bias-free LayerNorm, causal self-attention, 4× GELU MLP, bias-free linears); `ln_f`. Init
//! N(0, 0.02), residual projections (`c_proj`) N(0, 0.02/√(2·n_layer)), LayerNorm scales 1.
//!
//! Upstream names its sinusoidal option `integer_poe` (true = sinusoidal, so the flag reads
//! inverted) and applies that table by batch row instead of by position (its
//! `PositionalEncoding` expects `[T, B, C]` and is given `[B, T, C]`); here the option is
//! [`Positions::Sinusoidal`] and adds `pe[t]` at position `t`.
//!
//! Right padding is safe by construction: attention is causal, so a PAD after a row's last real
//! token never enters the context of any real position (the fork left-pads with a real cell and
//! no mask, which leaks padding into short rows' context). [`LmTad::next_token_log_probs`] reads
//! each row at its own last real position.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Standard deviation of upstream's initialisation.
const INIT_STD: f64 = 0.02;
/// LayerNorm epsilon (upstream `F.layer_norm(..., 1e-5)`).
const LN_EPS: f64 = 1e-5;

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned table `wpe` [block_size, C] (upstream `integer_poe: false`, the fork's teacher).
    #[default]
    Learned,
    /// Fixed sin/cos of the position (Vaswani et al.; upstream's `integer_poe: true`, applied
    /// by position here). Needs an even width.
    Sinusoidal,
}

/// Preset sizes of `model.size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSize {
    /// 2 layers, 2 heads, 32 wide: CI-fast.
    #[default]
    Test,
    /// 4 layers, 4 heads, 128 wide.
    Small,
    /// 8 layers, 12 heads, 768 wide: the teacher the distillation fork uses.
    Teacher,
}

impl ModelSize {
    /// `(n_layer, n_head, n_embd)`.
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            Self::Test => (2, 2, 32),
            Self::Small => (4, 4, 128),
            Self::Teacher => (8, 12, 768),
        }
    }
}

/// The decoder's dimensions. `vocab_size` comes from the token map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmTadConfig {
    /// Tokens: grid cells + PAD, EOT, SOT.
    pub vocab_size: usize,
    /// Longest input sequence (and rows of `wpe`).
    pub block_size: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Width.
    pub n_embd: usize,
    /// Dropout after the embeddings, on attention weights and after each residual branch
    /// (active only when training).
    pub dropout: f64,
    /// Learned or sinusoidal positions.
    pub positions: Positions,
}

impl LmTadConfig {
    /// A preset size over `vocab_size` tokens and inputs of at most `block_size`.
    pub fn preset(size: ModelSize, vocab_size: usize, block_size: usize) -> Self {
        let (n_layer, n_head, n_embd) = size.dims();
        Self { vocab_size, block_size, n_layer, n_head, n_embd, dropout: 0.0, positions: Positions::Learned }
    }

    /// What cannot work, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if v == 0 {
                p.push((key, "expected at least 1".to_string()));
            }
        }
        if self.n_head > 0 && !self.n_embd.is_multiple_of(self.n_head) {
            p.push(("n_embd", format!("{} is not a multiple of n_head = {}", self.n_embd, self.n_head)));
        }
        if self.positions == Positions::Sinusoidal && !self.n_embd.is_multiple_of(2) {
            p.push(("positions", format!("sinusoidal positions need an even n_embd, got {}", self.n_embd)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            p.push(("dropout", format!("expected a probability in [0, 1), got {}", self.dropout)));
        }
        p
    }

    /// Number of parameters, the tied embedding / head counted once:
    /// `V·C + [block_size·C] + n_layer·(12·C² + 2·C) + C` (per block: two LayerNorm scales, the
    /// q/k/v projection 3C², the output projection C², the MLP 4C² + 4C²; then `ln_f`).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let positions = match self.positions {
            Positions::Learned => self.block_size * c,
            Positions::Sinusoidal => 0,
        };
        self.vocab_size * c + positions + self.n_layer * (12 * c * c + 2 * c) + c
    }

    /// A freshly initialised model. The config must be free of [`LmTadConfig::problems`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> LmTad<B> {
        let c = self.n_embd;
        let normal = Initializer::Normal { mean: 0.0, std: INIT_STD };
        let proj = Initializer::Normal { mean: 0.0, std: INIT_STD / (2.0 * self.n_layer as f64).sqrt() };
        let linear = |i: usize, o: usize, init: &Initializer| {
            LinearConfig::new(i, o).with_bias(false).with_initializer(init.clone()).init(device)
        };
        let dropout = DropoutConfig::new(self.dropout).init();
        let h = (0..self.n_layer)
            .map(|_| Block {
                ln_1: BiasFreeLayerNorm::new(c, device),
                attn: CausalSelfAttention {
                    c_attn: linear(c, 3 * c, &normal),
                    c_proj: linear(c, c, &proj),
                    attn_dropout: dropout.clone(),
                    resid_dropout: dropout.clone(),
                    n_head: self.n_head,
                },
                ln_2: BiasFreeLayerNorm::new(c, device),
                mlp: Mlp { c_fc: linear(c, 4 * c, &normal), c_proj: linear(4 * c, c, &proj), dropout: dropout.clone() },
            })
            .collect();
        LmTad {
            wte: EmbeddingConfig::new(self.vocab_size, c).with_initializer(normal.clone()).init(device),
            wpe: match self.positions {
                Positions::Learned => {
                    Some(EmbeddingConfig::new(self.block_size, c).with_initializer(normal).init(device))
                }
                Positions::Sinusoidal => None,
            },
            drop: dropout,
            h,
            ln_f: BiasFreeLayerNorm::new(c, device),
            block_size: self.block_size,
        }
    }
}

/// LayerNorm with a scale and no bias (upstream `LayerNorm(ndim, bias=False)`), eps 1e-5.
#[derive(Module, Debug)]
pub struct BiasFreeLayerNorm<B: Backend> {
    /// The scale, initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
}

impl<B: Backend> BiasFreeLayerNorm<B> {
    fn new(width: usize, device: &B::Device) -> Self {
        Self { weight: Param::from_tensor(Tensor::ones([width], device)) }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean) / (var + LN_EPS).sqrt();
        normed * self.weight.val().unsqueeze::<3>()
    }
}

/// Causal multi-head self-attention with one joint q/k/v projection.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// q, k, v projections side by side `[C, 3C]` (upstream `[3C, C]`).
    pub c_attn: Linear<B>,
    /// Output projection.
    pub c_proj: Linear<B>,
    /// Dropout on the attention weights.
    pub attn_dropout: Dropout,
    /// Dropout after the output projection.
    pub resid_dropout: Dropout,
    /// Heads.
    pub n_head: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let h = self.n_head;
        let dh = c / h;
        let qkv = linear(&self.c_attn, x);
        let split = |i: usize| qkv.clone().narrow(2, i * c, c).reshape([b, t, h, dh]).swap_dims(1, 2);
        let (q, k, v) = (split(0), split(1), split(2)); // [B, H, T, dh]
        let att = q.matmul(k.swap_dims(2, 3)) * (1.0 / (dh as f64).sqrt());
        let att = softmax(att.mask_fill(mask.expand([b, h, t, t]), f32::NEG_INFINITY), 3);
        let y = self.attn_dropout.forward(att).matmul(v).swap_dims(1, 2).reshape([b, t, c]);
        self.resid_dropout.forward(linear(&self.c_proj, y))
    }
}

/// The 4× GELU MLP.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `C → 4C`.
    pub c_fc: Linear<B>,
    /// `4C → C`.
    pub c_proj: Linear<B>,
    /// Dropout after the projection.
    pub dropout: Dropout,
}

/// One pre-LN transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: BiasFreeLayerNorm<B>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<B>,
    /// Norm before the MLP.
    pub ln_2: BiasFreeLayerNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
}

/// The LM-TAD decoder. Field names follow upstream's `transformer.*` modules, so the weights map
/// onto upstream `state_dict` keys (see [`super::weights`]).
#[derive(Module, Debug)]
pub struct LmTad<B: Backend> {
    /// Token embedding, also the LM head (weight tying: one parameter).
    pub wte: Embedding<B>,
    /// Learned positions (absent for sinusoidal ones).
    pub wpe: Option<Embedding<B>>,
    /// Dropout after the embeddings.
    pub drop: Dropout,
    /// The blocks.
    pub h: Vec<Block<B>>,
    /// Final norm.
    pub ln_f: BiasFreeLayerNorm<B>,
    /// Longest input.
    pub block_size: usize,
}

/// `Linear` over the last axis of a 3-D input.
fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, c] = x.dims();
    let y = layer.forward(x.reshape([b * t, c]));
    let out = y.dims()[1];
    y.reshape([b, t, out])
}

/// `pe[t, 2i] = sin(t·ω_i)`, `pe[t, 2i+1] = cos(t·ω_i)`, `ω_i = exp(−2i·ln(10000)/C)`.
fn sinusoid<B: Backend>(t: usize, c: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut pe = vec![0f32; t * c];
    for pos in 0..t {
        for i in (0..c).step_by(2) {
            let w = (-(i as f64) * (10000f64).ln() / c as f64).exp();
            let a = pos as f64 * w;
            pe[pos * c + i] = a.sin() as f32;
            if i + 1 < c {
                pe[pos * c + i + 1] = a.cos() as f32;
            }
        }
    }
    Tensor::from_data(TensorData::new(pe, [t, c]), device)
}

/// `[1, 1, T, T]`, true above the diagonal (a position never sees a later one).
fn causal_mask<B: Backend>(t: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let mask: Vec<bool> = (0..t).flat_map(|i| (0..t).map(move |j| j > i)).collect();
    Tensor::from_data(TensorData::new(mask, [1, 1, t, t]), device)
}

impl<B: Backend> LmTad<B> {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.dims()[0]
    }

    /// Number of parameters (the tied table once).
    pub fn num_params(&self) -> usize {
        Module::num_params(self)
    }

    /// Hidden states after `ln_f`, `[B, T, C]`, of token ids `[B, T]` (T ≤ `block_size`; every id
    /// < vocab: the callers check).
    pub fn hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let tok = self.wte.forward(tokens);
        let c = tok.dims()[2];
        let pos = match &self.wpe {
            Some(wpe) => wpe.forward(Tensor::<B, 1, Int>::arange(0..t as i64, &device).reshape([1, t])),
            None => sinusoid::<B>(t, c, &device).unsqueeze::<3>(),
        };
        let mut x = self.drop.forward(tok + pos);
        let mask = causal_mask::<B>(t, &device);
        for block in &self.h {
            x = x.clone() + block.attn.forward(block.ln_1.forward(x), mask.clone());
            let m = &block.mlp;
            let y = linear(&m.c_proj, gelu(linear(&m.c_fc, block.ln_2.forward(x.clone()))));
            x = x + m.dropout.forward(y);
        }
        self.ln_f.forward(x)
    }

    /// The tied head: `h · wteᵀ` for hidden states `[N, C]`, giving `[N, V]`.
    pub fn head(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        h.matmul(self.wte.weight.val().transpose())
    }

    /// Logits `[B, T, V]` at every position (upstream `forward(idx)`).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let h = self.hidden(tokens);
        let c = h.dims()[2];
        self.head(h.reshape([b * t, c])).reshape([b, t, self.vocab_size()])
    }

    /// `log p(x_{t+1} | x_≤t)` of each next token of right-padded sequences `[B, T]` (upstream's
    /// training input `x[:, :-1]`, targets `x[:, 1:]`): `[B, T − 1]`. Entries whose target is PAD
    /// are meaningless; mask them with [`target_mask`].
    pub fn target_log_probs(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t] = tokens.dims();
        let input = tokens.clone().narrow(1, 0, t - 1);
        let targets = tokens.narrow(1, 1, t - 1);
        let logp = log_softmax(self.forward(input), 2);
        logp.gather(2, targets.unsqueeze_dim::<3>(2)).reshape([b, t - 1])
    }

    /// Mean next-token cross-entropy over the targets that are not PAD (upstream
    /// `F.cross_entropy(..., ignore_index=pad)`), `[1]`. The sequences must hold at least one
    /// non-PAD target.
    pub fn loss(&self, tokens: Tensor<B, 2, Int>, pad: u32) -> Tensor<B, 1> {
        let mask = target_mask(tokens.clone(), pad);
        let logp = self.target_log_probs(tokens);
        let count = mask.clone().sum();
        -(logp * mask).sum() / count
    }

    /// Each row's next-token log-distribution at its last real position: `tokens` `[B, T]` are
    /// right-padded histories, row `i` real in `0..lengths[i]` (`1 ≤ lengths[i] ≤ T`). Only the
    /// last real position of each row goes through the head. `[B, V]`.
    pub fn last_log_probs(&self, tokens: Tensor<B, 2, Int>, lengths: &[usize]) -> Tensor<B, 2> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let h = self.hidden(tokens);
        let c = h.dims()[2];
        let rows: Vec<i64> = lengths.iter().enumerate().map(|(i, &len)| (i * t + len - 1) as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), &device);
        let last = h.reshape([b * t, c]).select(0, index);
        log_softmax(self.head(last), 1)
    }

    /// [`LmTad::last_log_probs`] of variable-length histories (token ids, e.g. `[SOT] + cells`),
    /// right-padded with `pad` here. `[B, V]`; `exp` gives the probabilities.
    pub fn next_token_log_probs(
        &self,
        histories: &[Vec<u32>],
        pad: u32,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, InputError> {
        let (tokens, lengths) = right_padded::<B>(histories, pad, self.vocab_size(), self.block_size, device)?;
        Ok(self.last_log_probs(tokens, &lengths))
    }
}

/// 1.0 where the target `x[:, 1:]` is not PAD, `[B, T − 1]`.
pub fn target_mask<B: Backend>(tokens: Tensor<B, 2, Int>, pad: u32) -> Tensor<B, 2> {
    let [_, t] = tokens.dims();
    tokens.narrow(1, 1, t - 1).not_equal_elem(pad as i64).float()
}

/// Why a batch of token sequences cannot go through the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// No sequence.
    #[error("no sequence to score")]
    Empty,
    /// A sequence with no token.
    #[error("sequence {row} is empty")]
    EmptyRow {
        /// Its index in the batch.
        row: usize,
    },
    /// A sequence longer than the model's context.
    #[error("sequence {row} has {len} tokens, more than the model's block_size {block_size}")]
    TooLong {
        /// Its index in the batch.
        row: usize,
        /// Its length.
        len: usize,
        /// The context.
        block_size: usize,
    },
    /// A token id outside the vocabulary.
    #[error("sequence {row} holds token {token} at position {position}, outside the vocabulary of {vocab_size}")]
    Token {
        /// Its index in the batch.
        row: usize,
        /// Where.
        position: usize,
        /// The id.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
}

/// Right-pads `rows` with `pad` into `[B, max len]` token ids, checking lengths and ids.
pub fn right_padded<B: Backend>(
    rows: &[Vec<u32>],
    pad: u32,
    vocab_size: usize,
    block_size: usize,
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Vec<usize>), InputError> {
    if rows.is_empty() {
        return Err(InputError::Empty);
    }
    let t = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * t);
    for (row, r) in rows.iter().enumerate() {
        if r.is_empty() {
            return Err(InputError::EmptyRow { row });
        }
        if r.len() > block_size {
            return Err(InputError::TooLong { row, len: r.len(), block_size });
        }
        if let Some((position, &token)) = r.iter().enumerate().find(|(_, tok)| **tok as usize >= vocab_size) {
            return Err(InputError::Token { row, position, token, vocab_size });
        }
        ids.extend(r.iter().map(|&x| x as i64));
        ids.extend(std::iter::repeat_n(pad as i64, t - r.len()));
    }
    let lengths = rows.iter().map(Vec::len).collect();
    Ok((Tensor::from_data(TensorData::new(ids, [rows.len(), t]), device), lengths))
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};

    use super::*;

    type B = Flex;

    fn tiny(positions: Positions) -> LmTadConfig {
        LmTadConfig { vocab_size: 13, block_size: 8, n_layer: 2, n_head: 2, n_embd: 8, dropout: 0.0, positions }
    }

    fn ids(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
        let t = rows[0].len();
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// The formula against burn's own count of the module's parameters, for both position kinds
    /// and the fork's teacher on Beijing (≈ 97.1 M with the head counted once, §3.1).
    #[test]
    fn parameter_count_matches_the_formula_with_the_tied_table_once() {
        let device = Default::default();
        for positions in [Positions::Learned, Positions::Sinusoidal] {
            let c = tiny(positions);
            let m = c.init::<B>(&device);
            assert_eq!(m.num_params(), c.num_params(), "{positions:?}");
        }
        let beijing = LmTadConfig::preset(ModelSize::Teacher, 51_663, 1024);
        assert_eq!(beijing.num_params(), 97_099_776);
        // Tied: one table of V·C, not two.
        let c = tiny(Positions::Learned);
        let untied = c.num_params() + c.vocab_size * c.n_embd;
        assert_ne!(c.init::<B>(&device).num_params(), untied);
    }

    /// Upstream's init: N(0, 0.02) everywhere, the residual projections (attention and MLP
    /// `c_proj`) N(0, 0.02/√(2·n_layer)), LayerNorm scales 1.
    #[test]
    fn initialisation_follows_upstream() {
        let c = LmTadConfig {
            vocab_size: 500,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 64,
            dropout: 0.0,
            positions: Positions::Learned,
        };
        let m = c.init::<B>(&Default::default());
        let std = |t: Tensor<B, 2>| {
            let v = values(t);
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            assert!(mean.abs() < 2e-3, "mean {mean}");
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32).sqrt()
        };
        let near = |got: f32, want: f32| assert!((got / want - 1.0).abs() < 0.06, "std {got}, expected {want}");
        near(std(m.wte.weight.val()), 0.02);
        near(std(m.wpe.as_ref().unwrap().weight.val()), 0.02);
        let residual = 0.02 / (8f32).sqrt();
        for b in &m.h {
            near(std(b.attn.c_attn.weight.val()), 0.02);
            near(std(b.mlp.c_fc.weight.val()), 0.02);
            near(std(b.attn.c_proj.weight.val()), residual);
            near(std(b.mlp.c_proj.weight.val()), residual);
            assert!(values(b.ln_1.weight.val()).iter().chain(&values(b.ln_2.weight.val())).all(|&x| x == 1.0));
            assert!(b.attn.c_attn.bias.is_none() && b.mlp.c_fc.bias.is_none(), "linears are bias-free");
        }
    }

    #[test]
    fn changing_a_future_token_never_changes_an_earlier_position() {
        let device = Default::default();
        for positions in [Positions::Learned, Positions::Sinusoidal] {
            let m = tiny(positions).init::<B>(&device);
            let a = values(m.forward(ids(&[&[12, 3, 4, 5, 6, 7]])));
            let b = values(m.forward(ids(&[&[12, 3, 4, 9, 1, 0]])));
            let v = 13;
            // Positions 0..3 (the first three tokens are equal) give identical logits.
            assert_eq!(a[..3 * v], b[..3 * v], "{positions:?}");
            assert_ne!(a[3 * v..4 * v], b[3 * v..4 * v], "{positions:?}: the changed position must differ");
        }
    }

    #[test]
    fn right_padding_leaves_each_rows_last_distribution_as_alone() {
        let device = Default::default();
        let m = tiny(Positions::Learned).init::<B>(&device);
        let rows = vec![vec![12, 3, 4, 5, 6, 7], vec![12, 8], vec![12, 1, 1, 2]];
        let batch = values(m.next_token_log_probs(&rows, 10, &device).unwrap());
        for (i, row) in rows.iter().enumerate() {
            let alone = values(m.next_token_log_probs(std::slice::from_ref(row), 10, &device).unwrap());
            for (x, y) in batch[i * 13..(i + 1) * 13].iter().zip(&alone) {
                assert!((x.exp() - y.exp()).abs() < 1e-6, "row {i}: {x} vs {y}");
            }
            // Also equal to the full forward's logits at the row's last position.
            let full = log_softmax(m.forward(ids(&[&row.iter().map(|&x| x as i64).collect::<Vec<_>>()])), 2);
            let full = values(full);
            let last = &full[(row.len() - 1) * 13..row.len() * 13];
            for (x, y) in last.iter().zip(&alone) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bad_histories_are_errors_not_panics() {
        let device = Default::default();
        let m = tiny(Positions::Learned).init::<B>(&device);
        assert_eq!(m.next_token_log_probs(&[], 10, &device).unwrap_err(), InputError::Empty);
        assert_eq!(
            m.next_token_log_probs(&[vec![1], vec![]], 10, &device).unwrap_err(),
            InputError::EmptyRow { row: 1 }
        );
        assert!(matches!(
            m.next_token_log_probs(&[vec![1; 9]], 10, &device).unwrap_err(),
            InputError::TooLong { len: 9, block_size: 8, .. }
        ));
        assert!(matches!(
            m.next_token_log_probs(&[vec![1, 13]], 10, &device).unwrap_err(),
            InputError::Token { position: 1, token: 13, .. }
        ));
    }

    /// The loss against the mean of −log softmax computed here in f64 from the logits, skipping
    /// PAD targets (10).
    #[test]
    fn loss_ignores_pad_targets() {
        let device = Default::default();
        let m = tiny(Positions::Learned).init::<B>(&device);
        let rows: [&[i64]; 2] = [&[12, 3, 4, 11, 10], &[12, 5, 11, 10, 10]];
        let logits = values(m.forward(ids(&rows)));
        let (v, t) = (13, 5);
        let (mut sum, mut n) = (0f64, 0usize);
        for (b, row) in rows.iter().enumerate() {
            for pos in 0..t - 1 {
                let target = row[pos + 1] as usize;
                if target == 10 {
                    continue;
                }
                let l = &logits[(b * t + pos) * v..(b * t + pos + 1) * v];
                let max = l.iter().fold(f64::MIN, |a, &x| a.max(x as f64));
                let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                sum += lse - l[target] as f64;
                n += 1;
            }
        }
        assert_eq!(n, 5);
        let loss = values(m.loss(ids(&rows), 10))[0] as f64;
        assert!((loss - sum / n as f64).abs() < 1e-6, "{loss} vs {}", sum / n as f64);
    }

    /// One parameter for both uses: the tied table's gradient is the sum of the embedding's and
    /// the head's contributions, so it is non-zero on a row used only by the head.
    #[test]
    fn tied_table_gets_gradients_from_the_head_too() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let m = tiny(Positions::Learned).init::<A>(&device);
        // Token 9 never appears in the input; only the head (softmax over every token) uses its row.
        let tokens = Tensor::<A, 2, Int>::from_data(TensorData::new(vec![12i64, 3, 4, 11], [1, 4]), &device);
        let grads = m.loss(tokens, 10).backward();
        let g = m.wte.weight.grad(&grads).unwrap();
        let g: Vec<f32> = g.into_data().to_vec().unwrap();
        let row = |i: usize| g[i * 8..(i + 1) * 8].iter().map(|x| x.abs()).sum::<f32>();
        assert!(row(9) > 0.0, "head-only row has no gradient");
        assert!(row(3) > row(9), "an input row gets both contributions");
    }
}
