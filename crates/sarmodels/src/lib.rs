//! The stage-1 SAR→optical generator: a scaled-down TerraMind encoder–decoder with LoRA adapters,
//! a small DDIM denoiser that refines its output, and the stage-3 grounding model built from the
//! generator's base. Generic over the burn backend.
//!
//! # Architecture ([`Generator`])
//!
//! - **Patch embedding** `patch_embed.proj`: the SAR image `[b, C, H, W]` (C = `in_channels`, VV and
//!   VH) is cut into non-overlapping p×p patches, each flattened channel-major (`C·p·p`) and mapped
//!   to d without bias. A fixed 2-D sin-cos positional embedding (MAE's, computed for the actual
//!   `H/p × W/p` grid, so any H, W that are multiples of p work) and a learned SAR modality embedding
//!   `input_modality_embed` are added.
//! - **Encoder** `encoder.{i}`: pre-norm transformer blocks, `x + attn(norm1(x))` then
//!   `x + mlp(norm2(x))`, attention with a fused `attn.qkv` (d → 3d) and `attn.proj`, MLP `mlp.fc1`
//!   → GELU → `mlp.fc2`; final `encoder_norm`. Every LayerNorm has eps 1e-6 and **no bias** (a
//!   scale `gamma` only, as 4M/TerraMind; burn's `LayerNormConfig::with_bias(false)`).
//! - **Decoder** `decoder.{i}`: the context is `decoder_proj_context(encoder output)` plus the
//!   positional embedding; one query per output patch, `mask_token` + positional embedding +
//!   `output_modality_embed`. 4M-style blocks: `x + self_attn(norm1(x))`,
//!   `x + cross_attn(query_norm(x), context_norm(context))` (`cross_attn.q` d → d, `cross_attn.kv`
//!   d → 2d, `cross_attn.proj`), `x + mlp(norm2(x))`; final `decoder_norm`.
//! - **Pixel head** `head`: d → `out_channels·p·p` per token, unpatchified to `[b, out_channels, H, W]`
//!   (B2, B3, B4, B8 by default).
//!
//! Sizes ([`ModelSize`]): `test` (d 32, 2 + 1 blocks, patch 8) for tests, `tiny` and `small` with
//! TerraMind-tiny / -small's widths, heads and encoder depth.
//!
//! # LoRA ([`lora`])
//!
//! Every linear layer of the generator is a [`LoraLinear`] constructed with its dotted module path;
//! it carries an adapter iff `lora.enabled` and its lowercase name contains one of
//! `lora.target_modules`. The default list (`proj`, `q_proj`, `k_proj`, `v_proj`, `o_proj`,
//! `cross_attn`) places adapters, like the reference, on `patch_embed.proj`, every `attn.proj` and
//! `self_attn.proj`, every `cross_attn.{q,kv,proj}` and `decoder_proj_context`; the fused `qkv`, the
//! MLPs and the `head` are not matched. With LoRA enabled the whole base is frozen (norms, embeddings
//! and the head too) and only the adapters train; with it disabled every parameter trains.
//! [`Generator::merge_lora`] folds the adapters into the base; [`Generator::save_base`] /
//! [`Generator::load_base`] exchange base weights as safetensors keyed by burn parameter path.
//!
//! # Denoiser ([`denoiser`])
//!
//! A separate, always-trainable [`Denoiser`] refines the generator output `cond`: it is trained on the
//! residual `target − cond` (x0 prediction) with a zero-terminal-SNR linear DDIM schedule, and
//! [`denoiser::sample`] returns a refined residual that the caller adds to `cond`.
//!
//! # Grounding model ([`grounding`], stage 3)
//!
//! [`GroundingModel`] refines a standardised optical estimate `opt` `[b, 4, H, W]` with the SAR tile
//! `[b, 2, H, W]`: stage 1's frozen SAR encoder (`patch_embed`, `encoder`, `encoder_norm`,
//! `decoder_proj_context`, shared code with [`Generator::forward`]) gives the context; optical tokens
//! `optical_embed.proj(patches(opt)) + pos + output_modality_embed` (a new frozen, bias-free patch
//! embedding) pass through `grounding.{k}` blocks, `t + cross_attn(query_norm(t), context_norm(context))`,
//! whose norms and `cross_attn.{q,kv,proj}` come from stage 1's `decoder.{k}`, twice: with the LoRA
//! adapters (`t_a`) and with the frozen bases alone (`t_b`). The residual `(t_a − t_b)·head.weight`
//! (stage 1's head, bias cancelled) is unpatchified and added: `opt_v3 = opt + r`, repeated for
//! `passes` (stage 3's `timesteps`). LoRA adapters sit only on `grounding.{k}.cross_attn.{q,kv,proj}`
//! (seed 001's `target_modules`; [`GroundingConfig::validate`] refuses targets that would match any
//! other layer). Because a fresh adapter's B is zero, both paths compute the same values and a fresh
//! model returns `opt` exactly; with `freeze_base_model: true` only the adapters train.
//! [`GroundingModel::load_base`]
//! reads a stage-1 `base_model.safetensors`, and [`GroundingModel::merge_lora`] folds the adapters in.
//!
//! # Departures from TerraMind
//!
//! - TerraMind generates optical images as discrete tokens (FSQ codes of a per-modality tokenizer)
//!   that a diffusion decoder turns back into pixels; here a linear **pixel head** regresses the bands
//!   directly and all decoder queries are predicted in one pass (no iterative token decoding).
//! - TerraMind's tokenizer diffusion decoder is replaced by the small residual [`Denoiser`], which
//!   refines the regressed image rather than decoding tokens.
//! - The blocks are plain pre-norm ViT blocks as specified for this project: GELU MLPs and linear
//!   layers with biases (except the patch embedding); TerraMind's 4M-derived blocks may differ in
//!   these details (gated MLPs, bias-free layers), so a TerraMind checkpoint needs a conversion to
//!   this layout before [`Generator::load_base`] can read it.
//! - There is no token masking or modality sampling: one SAR input, one optical output.
//! - The sizes keep TerraMind's widths and encoder depths but make the decoders shallower.

pub mod config;
pub mod denoiser;
pub mod generator;
pub mod grounding;
pub mod lora;
pub mod report;
pub mod weights;

pub use config::{DenoiserConfig, Dims, GeneratorConfig, LoraConfig, ModelSize};
pub use denoiser::{DdimSchedule, Denoiser, ddim_step, sample, training_loss};
pub use generator::{Generator, ModelError};
pub use grounding::{GroundingConfig, GroundingModel, LayerSpec, OPTICAL_CHANNELS, SAR_CHANNELS};
pub use lora::{LoraAdapter, LoraLinear};
pub use report::{ParamCount, lora_adapter_names};
pub use weights::{ParamSnapshot, WeightError};
