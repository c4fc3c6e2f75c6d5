//! The stage-3 grounding model: optical tokens of a stage-2 estimate cross-attend to the SAR context
//! of stage 1's encoder, and the result is decoded as a residual on the estimate.
//!
//! Inputs are standardised tensors, SAR `[b, 2, H, W]` and optical `[b, 4, H, W]` (stage 3
//! standardises; the model does not). H and W are positive multiples of the patch size.
//!
//! # Architecture ([`GroundingModel`])
//!
//! - **SAR encoder** (stage 1's, loaded and frozen): `patch_embed.proj`, `input_modality_embed`,
//!   `encoder.{i}`, `encoder_norm` and `decoder_proj_context` compute
//!   `context = decoder_proj_context(encoder_norm(encoder(patch_embed(sar) + pos + input_modality_embed))) + pos`
//!   with the same code as [`crate::Generator::forward`]; `pos` is the 2-D sin-cos embedding of the grid.
//! - **Optical tokens**: `t₀ = optical_embed.proj(patches(opt)) + pos + output_modality_embed`.
//!   `optical_embed.proj` (`4·p·p → d`, no bias) is new: it is not in a stage-1 file, is initialised
//!   like burn's `Linear` from the backend RNG, never carries an adapter and is frozen.
//!   `output_modality_embed` is stage 1's.
//! - **Grounding blocks** `grounding.{k}`, `k < dec_depth`: `t ← t + cross_attn(query_norm(t), context_norm(context))`
//!   (pre-norm residual cross-attention; no self-attention, no MLP). `query_norm`, `context_norm` and
//!   `cross_attn.{q,kv,proj}` are loaded from stage 1's `decoder.{k}.*` layers of the same names.
//! - **Two paths, one difference**: the blocks run twice from the same `t₀`, once with the LoRA
//!   adapters (`t_a`) and once with the frozen bases alone (`t_b`, the reference path).
//! - **Decode**: `r = head(t_a) − head(t_b)`, computed as `(t_a − t_b)·head.weight` (the bias
//!   cancels) with stage 1's `head.weight`, unpatchified to `[b, 4, H, W]`. The output is `opt + r`:
//!   the grounding is what the adapters change in stage 1's own cross-attention reading of the SAR.
//! - **Passes** (stage 3's `timesteps`): [`GroundingModel::forward`] with `passes = n` applies the
//!   grounding n times, `opt_{k+1} = opt_k + r(sar, opt_k)`, encoding the SAR context once.
//!
//! # Identity at initialisation
//!
//! A fresh adapter's B is zero, so its term is exactly 0 and the adapted path computes the same
//! operations on the same values as the reference path: `t_a == t_b` bit for bit, `r == 0` exactly
//! and the output equals `opt` exactly, for any loaded base and finite inputs (an infinite input
//! would make `t_a − t_b` NaN; stage 3 zeroes invalid pixels before the model sees them). Training
//! moves only the adapters (with `freeze_base_model: true`).
//!
//! # Why two paths, not a zero-initialised output projection
//!
//! A zero base under the `proj` adapter also gives the identity, but then every block's update is
//! `B·A·x` — one fixed rank-r subspace of the token space for every patch, which cannot fit even a
//! single batch (measured: the spectral loss of one overfitted batch fell 1.03× in 300 steps). Through
//! stage 1's trained q/kv/proj, a change of the attention moves each patch's tokens differently,
//! within the whole span stage 1's cross-attention and head can express.
//!
//! Merging ([`GroundingModel::merge_lora`]) folds the adapters into the grounding blocks and keeps the
//! bases as `reference` blocks, so the merged model computes the same function.
//!
//! # LoRA and trainability
//!
//! Adapters are stage 1's [`LoraLinear`] adapters (rank, alpha, dropout, A kaiming-uniform with
//! a = √5, B zero). They are attached only to the grounding cross-attention layers
//! `grounding.{k}.cross_attn.{q,kv,proj}` whose name contains one of `lora.target_modules`
//! (default: seed 001's list). [`GroundingConfig::validate`] refuses targets that would also match
//! another layer of the model (stage 3 trains only cross-attention). With `freeze_base_model: true`
//! every parameter but the adapters is frozen; with `false` every parameter trains.
//!
//! # Stage-1 weights
//!
//! [`GroundingModel::load_base`] reads a stage-1 `base_model.safetensors` (see
//! [`crate::Generator::save_base`]) and maps `decoder.{k}.{query_norm,context_norm,cross_attn.*}`
//! to `grounding.{k}.*`; the stage-1 keys the grounding model has no use for (self-attention, MLPs,
//! `norm1`/`norm2`, `mask_token`, `decoder_norm`, `head.bias`) are
//! accepted and listed by [`GroundingModel::load_base_with_unused`].

use std::path::Path;

use burn::module::{Initializer, Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use checkpoints::weights::{FileKey, WeightFile, load_module};
use serde::{Deserialize, Serialize};

use crate::config::{LoraConfig, ModelSize};
use crate::generator::{
    CrossAttention, EncoderBlock, ModelError, PatchEmbed, SarEncoder, check_patch_multiple, norm, patchify, unpatchify,
};
use crate::lora::{LoraAdapter, LoraLinear, apply_trainability};
use crate::weights::WeightError;

/// SAR channels of the grounding model's input (VV, VH).
pub const SAR_CHANNELS: usize = 2;

/// Optical channels of the grounding model's input and output (B2, B3, B4, B8).
pub const OPTICAL_CHANNELS: usize = 4;

/// Standard deviation of a learned embedding at initialisation (as the generator's).
const EMBED_INIT_STD: f64 = 0.02;

/// Seed 001's stage-3 LoRA targets.
const SEED_TARGETS: [&str; 7] = ["cross_attn", "cross_attention", "ca_", "q_proj", "k_proj", "v_proj", "o_proj"];

/// The grounding model's section of a stage-3 config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroundingConfig {
    /// Transformer size; must be the size of the stage-1 base that is loaded.
    pub size: ModelSize,
    /// Adapters on the grounding cross-attention layers. Default: enabled, rank 8, alpha 16,
    /// dropout 0, seed 001's `target_modules`
    /// (`cross_attn, cross_attention, ca_, q_proj, k_proj, v_proj, o_proj`). A partial section fills
    /// the rest from these defaults, not from stage 1's.
    #[serde(deserialize_with = "deserialize_lora")]
    pub lora: LoraConfig,
    /// `true`: only the adapters train; `false`: every parameter trains (the base too).
    pub freeze_base_model: bool,
}

impl Default for GroundingConfig {
    fn default() -> Self {
        Self { size: ModelSize::default(), lora: default_lora(), freeze_base_model: true }
    }
}

/// Stage 3's defaults for [`LoraConfig`]: stage 1's, with seed 001's stage-3 `target_modules`.
pub fn default_lora() -> LoraConfig {
    LoraConfig { target_modules: SEED_TARGETS.into_iter().map(String::from).collect(), ..LoraConfig::default() }
}

/// The `lora` section as [`LoraConfig`] reads it, but with the absent keys from [`default_lora`].
#[derive(Deserialize)]
#[serde(default)]
struct PartialLora {
    enabled: bool,
    rank: usize,
    alpha: f64,
    dropout: f64,
    target_modules: Vec<String>,
}

impl Default for PartialLora {
    fn default() -> Self {
        let LoraConfig { enabled, rank, alpha, dropout, target_modules } = default_lora();
        Self { enabled, rank, alpha, dropout, target_modules }
    }
}

/// Reads a `lora` section with the keys it lacks taken from [`default_lora`] (stage 3's targets), not
/// from [`LoraConfig::default`] (stage 1's): for `#[serde(deserialize_with = ...)]` on a stage-3
/// config's `lora` field.
pub fn deserialize_lora<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LoraConfig, D::Error> {
    let PartialLora { enabled, rank, alpha, dropout, target_modules } = PartialLora::deserialize(d)?;
    Ok(LoraConfig { enabled, rank, alpha, dropout, target_modules })
}

/// One linear layer of the grounding model as the config describes it (no model is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Dotted module name, the prefix of its burn parameter paths.
    pub name: String,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Whether it is a grounding cross-attention projection (`grounding.{k}.cross_attn.*`), the
    /// only layers that may carry an adapter.
    pub cross_attention: bool,
}

impl GroundingConfig {
    /// Every linear layer of the model, in module order, derived from the size alone.
    pub fn linear_layers(&self) -> Vec<LayerSpec> {
        let dims = self.size.dims();
        let (d, p, m) = (dims.dim, dims.patch_size, dims.mlp_hidden);
        let spec = |name: String, d_in, d_out, cross_attention| LayerSpec { name, d_in, d_out, cross_attention };
        let mut v = vec![spec("patch_embed.proj".into(), SAR_CHANNELS * p * p, d, false)];
        for i in 0..dims.enc_depth {
            v.push(spec(format!("encoder.{i}.attn.qkv"), d, 3 * d, false));
            v.push(spec(format!("encoder.{i}.attn.proj"), d, d, false));
            v.push(spec(format!("encoder.{i}.mlp.fc1"), d, m, false));
            v.push(spec(format!("encoder.{i}.mlp.fc2"), m, d, false));
        }
        v.push(spec("decoder_proj_context".into(), d, d, false));
        v.push(spec("optical_embed.proj".into(), OPTICAL_CHANNELS * p * p, d, false));
        for k in 0..dims.dec_depth {
            v.push(spec(format!("grounding.{k}.cross_attn.q"), d, d, true));
            v.push(spec(format!("grounding.{k}.cross_attn.kv"), d, 2 * d, true));
            v.push(spec(format!("grounding.{k}.cross_attn.proj"), d, d, true));
        }
        v.push(spec("head".into(), d, OPTICAL_CHANNELS * p * p, false));
        v
    }

    /// Whether the layer `name` gets an adapter: a grounding cross-attention layer that
    /// `lora.target_modules` matches (with LoRA enabled).
    fn adapted(&self, name: &str) -> bool {
        name.starts_with("grounding.") && name.contains(".cross_attn.") && self.lora.targets(name)
    }

    /// The adapter parameters the model will have, `Σ r·(d_in + d_out)` over the adapted layers,
    /// computed from the dimensions only. With `freeze_base_model: true` this is the trainable count.
    pub fn lora_parameter_count(&self) -> usize {
        self.linear_layers().iter().filter(|l| self.adapted(&l.name)).map(|l| self.lora.rank * (l.d_in + l.d_out)).sum()
    }

    /// Checks that an `h × w` input fits the patch grid (both positive multiples of the patch size).
    pub fn check_input(&self, h: usize, w: usize) -> Result<(), ModelError> {
        check_patch_multiple(self.size.dims().patch_size, h, w)
    }

    /// Problems with the values, as `(dotted key relative to this section, message)`; empty when valid.
    ///
    /// Beyond the adapter settings' ranges: with LoRA enabled, a target that matches a layer other
    /// than a grounding cross-attention projection (`proj` matches `patch_embed.proj`, `qkv`
    /// `encoder.0.attn.qkv`, ...) and a list that matches no layer at all. `lora.enabled: false` is refused: the grounding is what the adapters
    /// change, so without them nothing moves.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = self.lora.problems();
        let l = &self.lora;
        if !l.enabled {
            p.push((
                "lora.enabled".into(),
                "must be true: the grounding is the change the LoRA adapters make to stage 1's cross-attention \
                 (adapted path minus frozen path), so without adapters nothing would train or move"
                    .into(),
            ));
            return p;
        }
        let layers = self.linear_layers();
        for target in &l.target_modules {
            let t = target.to_lowercase();
            if t.trim().is_empty() {
                continue; // reported by `problems`
            }
            if let Some(other) = layers.iter().find(|x| !x.cross_attention && x.name.to_lowercase().contains(&t)) {
                p.push((
                    "lora.target_modules".into(),
                    format!(
                        "target {target:?} matches {}, which is not a cross-attention layer: stage 3 trains only \
                         the cross-attention projections grounding.{{k}}.cross_attn.{{q,kv,proj}}",
                        other.name
                    ),
                ));
            }
        }
        if l.target_modules.is_empty() {
            // reported by `problems`
        } else if !layers.iter().any(|x| self.adapted(&x.name)) {
            p.push((
                "lora.target_modules".into(),
                format!(
                    "{:?} matches no layer of the grounding model (its cross-attention layers are \
                     grounding.{{k}}.cross_attn.{{q,kv,proj}})",
                    l.target_modules
                ),
            ));
        }
        p
    }

    /// A grounding model with random weights; see [`GroundingConfig::try_init`].
    ///
    /// # Panics
    /// If the config does not validate (a programmer error: the stage validates its config on load).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroundingModel<B> {
        match self.try_init(device) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// A grounding model with random base weights (load a stage-1 base with
    /// [`GroundingModel::load_base`]) and fresh adapters, or the
    /// config's problems. Build it on the backend it trains on: trainability is recorded on the
    /// parameters.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<GroundingModel<B>, ModelError> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(ModelError::InvalidGroundingConfig(problems));
        }
        let dims = self.size.dims();
        let (d, p, heads) = (dims.dim, dims.patch_size, dims.heads);
        // The base layers never carry adapters.
        let plain = LoraConfig { enabled: false, ..self.lora.clone() };
        let embed = |dev: &B::Device| Initializer::Normal { mean: 0.0, std: EMBED_INIT_STD }.init([1, 1, d], dev);
        let adapter = |name: &str, d_in: usize, d_out: usize| {
            self.adapted(name)
                .then(|| LoraAdapter::new(d_in, d_out, self.lora.rank, self.lora.scaling(), self.lora.dropout, device))
        };
        let grounded = |name: String, d_in: usize, d_out: usize| {
            let base = LoraLinear::<B>::new(name.clone(), d_in, d_out, true, &plain, device);
            let a = adapter(&name, d_in, d_out);
            LoraLinear::from_linear(name, Linear { weight: base.weight, bias: base.bias }, a)
        };
        let model = GroundingModel {
            patch_embed: PatchEmbed {
                proj: LoraLinear::new("patch_embed.proj", SAR_CHANNELS * p * p, d, false, &plain, device),
            },
            input_modality_embed: embed(device),
            encoder: (0..dims.enc_depth)
                .map(|i| EncoderBlock::new(&format!("encoder.{i}"), d, heads, dims.mlp_hidden, &plain, device))
                .collect(),
            encoder_norm: norm(d, device),
            decoder_proj_context: LoraLinear::new("decoder_proj_context", d, d, true, &plain, device),
            optical_embed: PatchEmbed {
                proj: LoraLinear::new("optical_embed.proj", OPTICAL_CHANNELS * p * p, d, false, &plain, device),
            },
            output_modality_embed: embed(device),
            grounding: (0..dims.dec_depth)
                .map(|k| {
                    let name = format!("grounding.{k}.cross_attn");
                    GroundingBlock {
                        query_norm: norm(d, device),
                        context_norm: norm(d, device),
                        cross_attn: CrossAttention {
                            q: grounded(format!("{name}.q"), d, d),
                            kv: grounded(format!("{name}.kv"), d, 2 * d),
                            proj: grounded(format!("{name}.proj"), d, d),
                            heads,
                        },
                    }
                })
                .collect(),
            head: LoraLinear::new("head", d, OPTICAL_CHANNELS * p * p, false, &plain, device),
            reference: Vec::new(),
            dim: d,
            patch_size: p,
            freeze_base: self.freeze_base_model,
        };
        Ok(model.apply_trainability())
    }
}

/// One grounding block: `t + cross_attn(query_norm(t), context_norm(context))`.
#[derive(Module, Debug)]
pub struct GroundingBlock<B: Backend> {
    /// Norm of the optical tokens (stage 1's `decoder.{k}.query_norm`).
    pub query_norm: LayerNorm<B>,
    /// Norm of the SAR context (stage 1's `decoder.{k}.context_norm`).
    pub context_norm: LayerNorm<B>,
    /// Cross-attention: q, kv and proj from stage 1's `decoder.{k}.cross_attn`.
    pub cross_attn: CrossAttention<B>,
}

impl<B: Backend> GroundingBlock<B> {
    /// Tokens `[b, n, d]` and the already normalised context `context_norm(context)` `[b, m, d]` →
    /// `[b, n, d]`, with the adapters' terms (`adapters: true`) or the frozen bases alone.
    fn forward_with(&self, t: Tensor<B, 3>, normed_context: Tensor<B, 3>, adapters: bool) -> Tensor<B, 3> {
        t.clone() + self.cross_attn.forward_with(self.query_norm.forward(t), normed_context, adapters)
    }

    /// This block without its adapters (the frozen base alone).
    fn without_adapters(&self) -> Self {
        Self {
            query_norm: self.query_norm.clone(),
            context_norm: self.context_norm.clone(),
            cross_attn: CrossAttention {
                q: self.cross_attn.q.without_adapter(),
                kv: self.cross_attn.kv.without_adapter(),
                proj: self.cross_attn.proj.without_adapter(),
                heads: self.cross_attn.heads,
            },
        }
    }
}

/// The stage-3 grounding model (built by [`GroundingConfig::init`]; see the module documentation).
///
/// Parameters (burn paths): stage 1's `patch_embed.proj.weight`, `input_modality_embed`,
/// `encoder.{i}.*`, `encoder_norm.gamma`, `decoder_proj_context.{weight,bias}`,
/// `output_modality_embed`, `head.weight`; new `optical_embed.proj.weight`;
/// `grounding.{k}.{query_norm,context_norm}.gamma` and `grounding.{k}.cross_attn.{q,kv,proj}.{weight,bias}`;
/// adapters add `grounding.{k}.cross_attn.{q,kv,proj}.adapter.{lora_a,lora_b}`.
#[derive(Module, Debug)]
pub struct GroundingModel<B: Backend> {
    /// SAR patch embedding (stage 1).
    pub patch_embed: PatchEmbed<B>,
    /// SAR modality embedding `[1, 1, d]` (stage 1).
    pub input_modality_embed: Param<Tensor<B, 3>>,
    /// SAR encoder blocks (stage 1).
    pub encoder: Vec<EncoderBlock<B>>,
    /// Final encoder norm (stage 1).
    pub encoder_norm: LayerNorm<B>,
    /// Projection of the encoder output into the context (stage 1).
    pub decoder_proj_context: LoraLinear<B>,
    /// Optical patch embedding `4·p·p → d`, no bias (new, frozen, never adapted).
    pub optical_embed: PatchEmbed<B>,
    /// Optical modality embedding `[1, 1, d]` (stage 1).
    pub output_modality_embed: Param<Tensor<B, 3>>,
    /// Grounding blocks, one per stage-1 decoder block.
    pub grounding: Vec<GroundingBlock<B>>,
    /// Pixel head weight `d → 4·p·p` (stage 1's `head.weight`; no bias: it cancels in the residual).
    pub head: LoraLinear<B>,
    /// The reference path's blocks once the adapters are merged ([`GroundingModel::merge_lora`]):
    /// the frozen bases the adapted path is compared with. Empty before merging, when the
    /// reference path is `grounding` without its adapters.
    pub reference: Vec<GroundingBlock<B>>,
    /// Token width d.
    pub dim: usize,
    /// Patch size p.
    pub patch_size: usize,
    /// Whether everything but the adapters is frozen (`freeze_base_model`).
    pub freeze_base: bool,
}

impl<B: Backend> GroundingModel<B> {
    /// Checks that an `h × w` input fits the patch grid.
    pub fn check_input(&self, h: usize, w: usize) -> Result<(), ModelError> {
        check_patch_multiple(self.patch_size, h, w)
    }

    /// Checks a pair of inputs and the pass count: SAR `[b, 2, H, W]`, optical `[b, 4, H, W]` with the
    /// same b, H, W fitting the patch grid, and `passes ≥ 1`.
    pub fn check_forward(&self, sar: [usize; 4], opt: [usize; 4], passes: usize) -> Result<(), ModelError> {
        if sar[1] != SAR_CHANNELS {
            return Err(ModelError::GroundingChannels { input: "SAR", expected: SAR_CHANNELS, got: sar[1] });
        }
        if opt[1] != OPTICAL_CHANNELS {
            return Err(ModelError::GroundingChannels { input: "optical", expected: OPTICAL_CHANNELS, got: opt[1] });
        }
        if sar[0] != opt[0] || sar[2..] != opt[2..] {
            return Err(ModelError::GroundingShapes { sar, opt });
        }
        self.check_input(sar[2], sar[3])?;
        if passes == 0 {
            return Err(ModelError::Passes { passes });
        }
        Ok(())
    }

    /// `opt_v3` from SAR `[b, 2, H, W]` and `opt_v2` `[b, 4, H, W]`, applying the grounding `passes`
    /// times; or the problem with the inputs (see [`GroundingModel::check_forward`]).
    pub fn try_forward(&self, sar: Tensor<B, 4>, opt: Tensor<B, 4>, passes: usize) -> Result<Tensor<B, 4>, ModelError> {
        self.check_forward(sar.dims(), opt.dims(), passes)?;
        let encoded = SarEncoder {
            patch_embed: &self.patch_embed,
            input_modality_embed: &self.input_modality_embed,
            encoder: &self.encoder,
            encoder_norm: &self.encoder_norm,
            decoder_proj_context: &self.decoder_proj_context,
            dim: self.dim,
            patch_size: self.patch_size,
        }
        .encode(sar);
        let contexts: Vec<Tensor<B, 3>> =
            self.grounding.iter().map(|blk| blk.context_norm.forward(encoded.context.clone())).collect();
        let mut opt = opt;
        for _ in 0..passes {
            let t0 = self.optical_embed.proj.forward(patchify(opt.clone(), self.patch_size))
                + encoded.pos.clone()
                + self.output_modality_embed.val();
            // The adapted path and the reference path (the frozen bases) from the same tokens.
            let (mut adapted, mut reference) = (t0.clone(), t0);
            for (k, (blk, context)) in self.grounding.iter().zip(&contexts).enumerate() {
                adapted = blk.forward_with(adapted, context.clone(), true);
                reference = match self.reference.get(k) {
                    Some(base) => base.forward_with(reference, context.clone(), false),
                    None => blk.forward_with(reference, context.clone(), false),
                };
            }
            let r = linear(adapted - reference, self.head.weight.val(), None);
            opt = opt + unpatchify(r, encoded.gh, encoded.gw, OPTICAL_CHANNELS, self.patch_size);
        }
        Ok(opt)
    }

    /// [`GroundingModel::try_forward`] for inputs the caller has checked.
    ///
    /// # Panics
    /// On a problem [`GroundingModel::check_forward`] reports (wrong channels, mismatched shapes, a size
    /// off the patch grid, zero passes): programmer errors, since the stage checks its data and
    /// `timesteps` on load.
    pub fn forward(&self, sar: Tensor<B, 4>, opt: Tensor<B, 4>, passes: usize) -> Tensor<B, 4> {
        match self.try_forward(sar, opt, passes) {
            Ok(y) => y,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every linear layer, in module order (the order of [`GroundingConfig::linear_layers`]).
    pub fn linears(&self) -> Vec<&LoraLinear<B>> {
        let mut v = vec![&self.patch_embed.proj];
        for blk in &self.encoder {
            v.extend([&blk.attn.qkv, &blk.attn.proj, &blk.mlp.fc1, &blk.mlp.fc2]);
        }
        v.extend([&self.decoder_proj_context, &self.optical_embed.proj]);
        for blk in &self.grounding {
            v.extend([&blk.cross_attn.q, &blk.cross_attn.kv, &blk.cross_attn.proj]);
        }
        v.push(&self.head);
        v
    }

    /// The dotted names of the layers that carry an adapter, in module order.
    pub fn adapter_names(&self) -> Vec<String> {
        self.linears().into_iter().filter(|l| l.has_adapter()).map(|l| l.name.clone()).collect()
    }

    /// The model with every adapter folded into its base weight and removed, the bases kept as the
    /// `reference` blocks of the frozen path; it computes the same function (dropout aside). Base trainability is
    /// unchanged.
    pub fn merge_lora(self) -> Self {
        let reference = if self.reference.is_empty() {
            self.grounding.iter().map(GroundingBlock::without_adapters).collect()
        } else {
            self.reference
        };
        Self {
            reference,
            grounding: self
                .grounding
                .into_iter()
                .map(|blk| GroundingBlock {
                    cross_attn: CrossAttention {
                        q: blk.cross_attn.q.merged(),
                        kv: blk.cross_attn.kv.merged(),
                        proj: blk.cross_attn.proj.merged(),
                        heads: blk.cross_attn.heads,
                    },
                    ..blk
                })
                .collect(),
            ..self
        }
    }

    /// Loads the stage-1 base from a `base_model.safetensors` written by
    /// [`crate::Generator::save_base`]; see [`GroundingModel::load_base_with_unused`].
    pub fn load_base(self, path: &Path) -> Result<Self, WeightError> {
        self.load_base_with_unused(path).map(|(model, _)| model)
    }

    /// Loads every stage-1 parameter the model uses (the SAR encoder, `output_modality_embed`,
    /// `head.weight`, and `decoder.{k}.{query_norm,context_norm,cross_attn.{q,kv,proj}}` into
    /// `grounding.{k}.*`) and returns the model with the stage-1 keys it did not use, sorted.
    /// `optical_embed.proj` and the adapters keep their values; trainability is re-applied.
    ///
    /// A missing key, a mis-shaped tensor (a file of another size) or a key that no stage-1 generator
    /// of this size has is an error naming the file and the key (and both shapes).
    pub fn load_base_with_unused(self, path: &Path) -> Result<(Self, Vec<String>), WeightError> {
        let unused_ok = stage1_unused_keys(self.grounding.len());
        let mut file = WeightFile::open(path)?;
        let model = load_module(self, &mut file, stage1_key)?;
        file.finish(|k| unused_ok.iter().any(|u| u == k))?;
        let unused = file.unread();
        Ok((model.apply_trainability(), unused))
    }

    /// Re-applies the trainability rule (only adapters train iff `freeze_base`).
    fn apply_trainability(self) -> Self {
        let frozen = self.freeze_base;
        apply_trainability(self, frozen)
    }
}

/// The stage-1 file key of the grounding parameter at `path`, or `None` for parameters a stage-1 file
/// does not hold (adapters, `optical_embed`).
fn stage1_key(path: &[String], _rank: usize) -> Option<FileKey> {
    if path.iter().any(|p| p == "adapter") {
        return None;
    }
    match path {
        [first, ..] if first == "optical_embed" => None,
        // The reference blocks of a merged model hold the same stage-1 bases as the grounding blocks.
        [first, k, rest @ ..] if first == "grounding" || first == "reference" => {
            Some(FileKey::same(format!("decoder.{k}.{}", rest.join("."))))
        }
        _ => Some(FileKey::same(path.join("."))),
    }
}

/// The keys of a stage-1 base file (of a generator with `dec_depth` decoder blocks) that the grounding
/// model does not use.
fn stage1_unused_keys(dec_depth: usize) -> Vec<String> {
    let mut keys: Vec<String> =
        ["mask_token", "decoder_norm.gamma", "head.bias"].into_iter().map(String::from).collect();
    for k in 0..dec_depth {
        for name in [
            "norm1.gamma",
            "norm2.gamma",
            "self_attn.qkv.weight",
            "self_attn.qkv.bias",
            "self_attn.proj.weight",
            "self_attn.proj.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        ] {
            keys.push(format!("decoder.{k}.{name}"));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &GroundingConfig) -> Vec<String> {
        c.validate().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn defaults_are_seed_001s_and_validate() {
        let c = GroundingConfig::default();
        assert_eq!(c.lora.target_modules, SEED_TARGETS);
        assert!(c.lora.enabled && c.freeze_base_model);
        assert_eq!((c.lora.rank, c.lora.alpha, c.lora.dropout), (8, 16.0, 0.0));
        for size in [ModelSize::Test, ModelSize::Tiny, ModelSize::Small] {
            assert_eq!(GroundingConfig { size, ..c.clone() }.validate(), Vec::<(String, String)>::new());
        }
        let partial: GroundingConfig = serde_yaml::from_str("size: small\nlora:\n  rank: 4\n").unwrap();
        assert_eq!(partial.lora.target_modules, SEED_TARGETS);
        assert_eq!(partial.lora.rank, 4);
        assert!(partial.freeze_base_model);
        assert!(partial.lora.enabled && partial.lora.alpha == 16.0);
        let empty: GroundingConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(empty, c);
        let round: GroundingConfig = serde_json::from_str(&serde_json::to_string(&partial).unwrap()).unwrap();
        assert_eq!(round, partial);
        let off: GroundingConfig =
            serde_yaml::from_str("freeze_base_model: false\nlora:\n  target_modules: [cross_attn.q]\n").unwrap();
        assert_eq!(off.lora.target_modules, ["cross_attn.q"]);
        assert!(!off.freeze_base_model);
        assert!(serde_yaml::from_str::<GroundingConfig>("lora:\n  rank: -1\n").is_err());
    }

    #[test]
    fn layer_specs_name_every_linear() {
        let c = GroundingConfig::default();
        let names: Vec<String> = c.linear_layers().into_iter().map(|l| l.name).collect();
        assert_eq!(
            names,
            [
                "patch_embed.proj",
                "encoder.0.attn.qkv",
                "encoder.0.attn.proj",
                "encoder.0.mlp.fc1",
                "encoder.0.mlp.fc2",
                "encoder.1.attn.qkv",
                "encoder.1.attn.proj",
                "encoder.1.mlp.fc1",
                "encoder.1.mlp.fc2",
                "decoder_proj_context",
                "optical_embed.proj",
                "grounding.0.cross_attn.q",
                "grounding.0.cross_attn.kv",
                "grounding.0.cross_attn.proj",
                "head",
            ]
        );
    }

    /// r·(d_in + d_out) per adapted layer, written out per size: 3 layers per block.
    #[test]
    fn lora_count_formula() {
        let per_block = |d: usize, r: usize| r * (2 * d) + r * (3 * d) + r * (2 * d);
        let mut c = GroundingConfig::default();
        assert_eq!(c.lora_parameter_count(), per_block(32, 8));
        c.size = ModelSize::Small;
        assert_eq!(c.lora_parameter_count(), 6 * per_block(384, 8));
        assert_eq!(c.lora_parameter_count(), 129_024);
        c.lora.target_modules = vec!["cross_attn.proj".into(), "cross_attn.q".into()];
        assert_eq!(c.lora_parameter_count(), 6 * (8 * 768 + 8 * 768));
        c.lora.enabled = false;
        assert_eq!(c.lora_parameter_count(), 0);
    }

    #[test]
    fn targets_outside_cross_attention_are_refused_by_name() {
        for (target, layer) in [
            ("proj", "patch_embed.proj"),
            ("qkv", "encoder.0.attn.qkv"),
            ("fc1", "encoder.0.mlp.fc1"),
            ("head", "head"),
        ] {
            let mut c = GroundingConfig::default();
            c.lora.target_modules.push(target.into());
            let p = c.validate();
            assert_eq!(p.len(), 1, "{target}: {p:?}");
            assert_eq!(p[0].0, "lora.target_modules");
            assert!(p[0].1.contains(&format!("{target:?}")) && p[0].1.contains(layer), "{target}: {}", p[0].1);
            assert!(p[0].1.contains("only"), "{}", p[0].1);
        }
        let mut c = GroundingConfig::default();
        c.lora.target_modules = vec!["optical".into()];
        let msg = &c.validate()[0].1;
        assert!(msg.contains("optical_embed.proj"), "{msg}");
    }

    #[test]
    fn useless_target_lists_are_refused() {
        let mut c = GroundingConfig::default();
        c.lora.target_modules = vec!["q_proj".into(), "nothing".into()];
        let p = c.validate();
        assert_eq!(keys(&c), ["lora.target_modules"]);
        assert!(p[0].1.contains("matches no layer"), "{}", p[0].1);

        c.lora.target_modules = vec!["cross_attn.q".into()];
        assert!(c.validate().is_empty(), "adapters on q alone still move the adapted path");

        let mut c = GroundingConfig::default();
        c.lora.enabled = false;
        let p = c.validate();
        assert_eq!(keys(&c), ["lora.enabled"]);
        assert!(p[0].1.contains("nothing would train"), "{}", p[0].1);
        c.freeze_base_model = false;
        assert_eq!(keys(&c), ["lora.enabled"], "without adapters both paths are one function");

        let mut c = GroundingConfig::default();
        c.lora.rank = 0;
        c.lora.target_modules.clear();
        assert_eq!(keys(&c), ["lora.rank", "lora.target_modules"]);
    }

    #[test]
    fn stage1_keys_map_grounding_to_decoder() {
        let k = |p: &[&str]| stage1_key(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), 2).map(|k| k.key);
        assert_eq!(k(&["grounding", "3", "cross_attn", "q", "weight"]).unwrap(), "decoder.3.cross_attn.q.weight");
        assert_eq!(k(&["grounding", "0", "query_norm", "gamma"]).unwrap(), "decoder.0.query_norm.gamma");
        assert_eq!(k(&["grounding", "0", "cross_attn", "proj", "bias"]).unwrap(), "decoder.0.cross_attn.proj.bias");
        assert_eq!(k(&["reference", "1", "cross_attn", "kv", "weight"]).unwrap(), "decoder.1.cross_attn.kv.weight");
        assert_eq!(k(&["grounding", "0", "cross_attn", "q", "adapter", "lora_a"]), None);
        assert_eq!(k(&["optical_embed", "proj", "weight"]), None);
        assert_eq!(k(&["encoder", "1", "attn", "qkv", "weight"]).unwrap(), "encoder.1.attn.qkv.weight");
        assert_eq!(k(&["head", "weight"]).unwrap(), "head.weight");
    }

    #[test]
    fn invalid_config_is_an_error_not_a_panic() {
        let mut c = GroundingConfig::default();
        c.lora.target_modules = vec!["proj".into()];
        match c.try_init::<burn::backend::Flex>(&Default::default()) {
            Err(e @ ModelError::InvalidGroundingConfig(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("lora.target_modules") && msg.contains("patch_embed.proj"), "{msg}");
            }
            other => panic!("expected InvalidGroundingConfig, got {other:?}"),
        }
    }
}
