//! The SAR→optical generator: a scaled-down TerraMind (4M-style) encoder–decoder with a pixel head.
//!
//! See the crate documentation for the architecture; parameter names (burn paths) are listed on
//! [`Generator`].

use burn::module::{Initializer, Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};

use crate::config::{GeneratorConfig, LoraConfig};
use crate::lora::{LoraLinear, apply_trainability};

/// LayerNorm epsilon of every norm in the generator (4M / TerraMind use 1e-6).
pub const NORM_EPS: f64 = 1e-6;

/// Standard deviation of the learned embeddings (mask token, modality embeddings) at initialisation.
const EMBED_INIT_STD: f64 = 0.02;

/// Invalid input or configuration for the generator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The input's height or width is not a positive multiple of the patch size.
    #[error("input size {height}×{width} is not a multiple of the patch size {patch} (height and width must both be)")]
    PatchMultiple {
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// Patch size p.
        patch: usize,
    },
    /// The input has the wrong number of channels.
    #[error("input has {got} channels, the generator expects {expected} (model.in_channels)")]
    Channels {
        /// `in_channels`.
        expected: usize,
        /// The input's channels.
        got: usize,
    },
    /// The configuration does not validate: `(key, message)` per problem.
    #[error("invalid generator config: {}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidConfig(Vec<(String, String)>),
    /// A grounding input has the wrong number of channels (SAR 2, optical 4).
    #[error("{input} input has {got} channels, the grounding model expects {expected}")]
    GroundingChannels {
        /// Which input: `SAR` or `optical`.
        input: &'static str,
        /// The channels the model expects.
        expected: usize,
        /// The input's channels.
        got: usize,
    },
    /// The SAR and optical inputs of the grounding model differ in batch size, height or width.
    #[error("SAR input {sar:?} and optical input {opt:?} must have the same batch size, height and width")]
    GroundingShapes {
        /// `[b, c, H, W]` of the SAR input.
        sar: [usize; 4],
        /// `[b, c, H, W]` of the optical input.
        opt: [usize; 4],
    },
    /// The grounding model was asked for zero passes (stage 3's `timesteps`), which would not run it.
    #[error("grounding passes (timesteps) must be at least 1, got {passes}")]
    Passes {
        /// The requested passes.
        passes: usize,
    },
    /// The grounding model's configuration does not validate: `(key, message)` per problem.
    #[error("invalid grounding model config: {}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidGroundingConfig(Vec<(String, String)>),
    /// The number of DDIM sampling steps is outside `1..=train_timesteps`.
    #[error("{steps} sampling steps requested, must be between 1 and train_timesteps = {train_timesteps}")]
    SamplingSteps {
        /// Requested steps.
        steps: usize,
        /// T of the schedule.
        train_timesteps: usize,
    },
}

impl GeneratorConfig {
    /// Checks that an `h × w` input fits the patch grid (both positive multiples of the patch size).
    pub fn check_input(&self, h: usize, w: usize) -> Result<(), ModelError> {
        check_patch_multiple(self.size.dims().patch_size, h, w)
    }

    /// A randomly initialised generator; see [`GeneratorConfig::try_init`].
    ///
    /// # Panics
    /// If the config does not validate (a programmer error: the stage validates its config on load).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        match self.try_init(device) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// A randomly initialised generator, or the config's problems.
    ///
    /// With `lora.enabled` every base parameter is frozen and the adapters are trainable; otherwise
    /// every parameter is trainable. Build it on the backend it will train on (the autodiff one):
    /// trainability is recorded on the parameters.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Generator<B>, ModelError> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(ModelError::InvalidConfig(problems));
        }
        let dims = self.size.dims();
        let (d, p) = (dims.dim, dims.patch_size);
        let lora = &self.lora;
        let embed = |dev: &B::Device| Initializer::Normal { mean: 0.0, std: EMBED_INIT_STD }.init([1, 1, d], dev);
        let generator = Generator {
            patch_embed: PatchEmbed {
                proj: LoraLinear::new("patch_embed.proj", self.in_channels * p * p, d, false, lora, device),
            },
            input_modality_embed: embed(device),
            encoder: (0..dims.enc_depth)
                .map(|i| EncoderBlock::new(&format!("encoder.{i}"), d, dims.heads, dims.mlp_hidden, lora, device))
                .collect(),
            encoder_norm: norm(d, device),
            decoder_proj_context: LoraLinear::new("decoder_proj_context", d, d, true, lora, device),
            mask_token: embed(device),
            output_modality_embed: embed(device),
            decoder: (0..dims.dec_depth)
                .map(|i| DecoderBlock::new(&format!("decoder.{i}"), d, dims.heads, dims.mlp_hidden, lora, device))
                .collect(),
            decoder_norm: norm(d, device),
            head: LoraLinear::new("head", d, self.out_channels * p * p, true, lora, device),
            dim: d,
            patch_size: p,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            lora_enabled: lora.enabled,
        };
        Ok(generator.apply_trainability())
    }
}

pub(crate) fn check_patch_multiple(patch: usize, h: usize, w: usize) -> Result<(), ModelError> {
    if h == 0 || w == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        return Err(ModelError::PatchMultiple { height: h, width: w, patch });
    }
    Ok(())
}

/// LayerNorm without bias (burn's `LayerNormConfig::with_bias(false)`), eps [`NORM_EPS`]: parameter `gamma` only.
pub(crate) fn norm<B: Backend>(d: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(NORM_EPS).with_bias(false).init(device)
}

/// Splits `[b, n, h·hd]` into heads `[b, h, n, hd]`.
fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// Merges heads `[b, h, n, hd]` into `[b, n, h·hd]`.
fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * hd])
}

/// Non-overlapping patch embedding: a linear map of each flattened `C·p·p` patch (channel-major,
/// then row, then column: the order of a PyTorch conv weight), no bias.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `patch_embed.proj`: `C·p·p → d`, no bias.
    pub proj: LoraLinear<B>,
}

/// Multi-head self-attention with a fused `qkv` projection (timm / 4M layout: q, k, v each `d` wide,
/// heads contiguous within each).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `qkv`: `d → 3d`.
    pub qkv: LoraLinear<B>,
    /// `proj`: `d → d`.
    pub proj: LoraLinear<B>,
    /// Heads.
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    pub(crate) fn new(name: &str, d: usize, heads: usize, lora: &LoraConfig, device: &B::Device) -> Self {
        Self {
            qkv: LoraLinear::new(format!("{name}.qkv"), d, 3 * d, true, lora, device),
            proj: LoraLinear::new(format!("{name}.proj"), d, d, true, lora, device),
            heads,
        }
    }

    /// `[b, n, d]` → `[b, n, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut qkv = self.qkv.forward(x).chunk(3, 2).into_iter();
        let (Some(q), Some(k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
            unreachable!("chunk of a 3d-wide tensor into 3 gives 3 parts")
        };
        let h = self.heads;
        let out = attention(
            split_heads(q, h),
            split_heads(k, h),
            split_heads(v, h),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        self.proj.forward(merge_heads(out))
    }
}

/// Multi-head cross-attention: queries from the decoder tokens, keys and values from the context.
#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    /// `q`: `d → d`.
    pub q: LoraLinear<B>,
    /// `kv`: `d → 2d` (k then v).
    pub kv: LoraLinear<B>,
    /// `proj`: `d → d`.
    pub proj: LoraLinear<B>,
    /// Heads.
    pub heads: usize,
}

impl<B: Backend> CrossAttention<B> {
    pub(crate) fn new(name: &str, d: usize, heads: usize, lora: &LoraConfig, device: &B::Device) -> Self {
        Self {
            q: LoraLinear::new(format!("{name}.q"), d, d, true, lora, device),
            kv: LoraLinear::new(format!("{name}.kv"), d, 2 * d, true, lora, device),
            proj: LoraLinear::new(format!("{name}.proj"), d, d, true, lora, device),
            heads,
        }
    }

    /// Queries `[b, n, d]`, context `[b, m, d]` → `[b, n, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_with(x, context, true)
    }

    /// [`CrossAttention::forward`] with the adapters' terms (`adapters: true`) or with the frozen
    /// bases alone (`false`).
    pub fn forward_with(&self, x: Tensor<B, 3>, context: Tensor<B, 3>, adapters: bool) -> Tensor<B, 3> {
        let apply = |l: &LoraLinear<B>, x: Tensor<B, 3>| if adapters { l.forward(x) } else { l.forward_base(x) };
        let h = self.heads;
        let q = split_heads(apply(&self.q, x), h);
        let mut kv = apply(&self.kv, context).chunk(2, 2).into_iter();
        let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
            unreachable!("chunk of a 2d-wide tensor into 2 gives 2 parts")
        };
        let out = attention(q, split_heads(k, h), split_heads(v, h), None, None, AttentionModuleOptions::default());
        apply(&self.proj, merge_heads(out))
    }
}

/// Two-layer MLP with exact (erf) GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `fc1`: `d → mlp_hidden`.
    pub fc1: LoraLinear<B>,
    /// `fc2`: `mlp_hidden → d`.
    pub fc2: LoraLinear<B>,
}

impl<B: Backend> Mlp<B> {
    pub(crate) fn new(name: &str, d: usize, hidden: usize, lora: &LoraConfig, device: &B::Device) -> Self {
        Self {
            fc1: LoraLinear::new(format!("{name}.fc1"), d, hidden, true, lora, device),
            fc2: LoraLinear::new(format!("{name}.fc2"), hidden, d, true, lora, device),
        }
    }

    /// `[b, n, d]` → `[b, n, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// Pre-norm encoder block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> EncoderBlock<B> {
    pub(crate) fn new(
        name: &str,
        d: usize,
        heads: usize,
        hidden: usize,
        lora: &LoraConfig,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: norm(d, device),
            attn: Attention::new(&format!("{name}.attn"), d, heads, lora, device),
            norm2: norm(d, device),
            mlp: Mlp::new(&format!("{name}.mlp"), d, hidden, lora, device),
        }
    }

    /// `[b, n, d]` → `[b, n, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Pre-norm decoder block (4M's `DecoderBlock`): `x + self_attn(norm1(x))`,
/// `x + cross_attn(query_norm(x), context_norm(context))`, `x + mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    /// Norm before self-attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention over the queries.
    pub self_attn: Attention<B>,
    /// Norm of the queries before cross-attention.
    pub query_norm: LayerNorm<B>,
    /// Norm of the context before cross-attention.
    pub context_norm: LayerNorm<B>,
    /// Cross-attention to the encoder context.
    pub cross_attn: CrossAttention<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderBlock<B> {
    pub(crate) fn new(
        name: &str,
        d: usize,
        heads: usize,
        hidden: usize,
        lora: &LoraConfig,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: norm(d, device),
            self_attn: Attention::new(&format!("{name}.self_attn"), d, heads, lora, device),
            query_norm: norm(d, device),
            context_norm: norm(d, device),
            cross_attn: CrossAttention::new(&format!("{name}.cross_attn"), d, heads, lora, device),
            norm2: norm(d, device),
            mlp: Mlp::new(&format!("{name}.mlp"), d, hidden, lora, device),
        }
    }

    /// Queries `[b, n, d]`, context `[b, m, d]` → `[b, n, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.norm1.forward(x));
        let x = x.clone() + self.cross_attn.forward(self.query_norm.forward(x), self.context_norm.forward(context));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// The stage-1 generator (built by [`GeneratorConfig::init`]).
///
/// Parameters (burn paths, also the safetensors keys of [`Generator::save_base`]):
/// `patch_embed.proj.weight`, `input_modality_embed`, `encoder.{i}.{norm1,norm2}.gamma`,
/// `encoder.{i}.attn.{qkv,proj}.{weight,bias}`, `encoder.{i}.mlp.{fc1,fc2}.{weight,bias}`,
/// `encoder_norm.gamma`, `decoder_proj_context.{weight,bias}`, `mask_token`, `output_modality_embed`,
/// `decoder.{i}.{norm1,query_norm,context_norm,norm2}.gamma`, `decoder.{i}.self_attn.{qkv,proj}.*`,
/// `decoder.{i}.cross_attn.{q,kv,proj}.*`, `decoder.{i}.mlp.{fc1,fc2}.*`, `decoder_norm.gamma`,
/// `head.{weight,bias}`; adapters add `<layer>.adapter.lora_a` / `.lora_b`.
#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    /// SAR patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Learned SAR modality embedding `[1, 1, d]`, added to every input token.
    pub input_modality_embed: Param<Tensor<B, 3>>,
    /// Encoder blocks.
    pub encoder: Vec<EncoderBlock<B>>,
    /// Final encoder norm.
    pub encoder_norm: LayerNorm<B>,
    /// Projection of the encoder output into the decoder's context.
    pub decoder_proj_context: LoraLinear<B>,
    /// Learned mask token `[1, 1, d]`: every decoder query starts from it.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Learned optical modality embedding `[1, 1, d]`, added to every decoder query.
    pub output_modality_embed: Param<Tensor<B, 3>>,
    /// Decoder blocks.
    pub decoder: Vec<DecoderBlock<B>>,
    /// Final decoder norm.
    pub decoder_norm: LayerNorm<B>,
    /// Pixel head: `d → out_channels·p·p` per token.
    pub head: LoraLinear<B>,
    /// Token width d.
    pub dim: usize,
    /// Patch size p.
    pub patch_size: usize,
    /// SAR channels.
    pub in_channels: usize,
    /// Optical channels.
    pub out_channels: usize,
    /// Whether the base is frozen for LoRA training.
    pub lora_enabled: bool,
}

impl<B: Backend> Generator<B> {
    /// Checks that an `h × w` input fits the patch grid.
    pub fn check_input(&self, h: usize, w: usize) -> Result<(), ModelError> {
        check_patch_multiple(self.patch_size, h, w)
    }

    /// SAR `[b, in_channels, H, W]` → optical `[b, out_channels, H, W]`.
    ///
    /// # Panics
    /// If the channel count differs from `in_channels` or H, W are not multiples of the patch size
    /// (programmer errors: check the data config with [`GeneratorConfig::check_input`] on load).
    pub fn forward(&self, sar: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = sar.dims();
        if c != self.in_channels {
            panic!("{}", ModelError::Channels { expected: self.in_channels, got: c });
        }
        if let Err(e) = self.check_input(h, w) {
            panic!("{e}");
        }
        let Encoded { context, pos, gh, gw } = self.encode(sar);
        let queries = (self.mask_token.val() + self.output_modality_embed.val() + pos).repeat_dim(0, b);
        let mut y = queries;
        for block in &self.decoder {
            y = block.forward(y, context.clone());
        }
        let y = self.head.forward(self.decoder_norm.forward(y));
        unpatchify(y, gh, gw, self.out_channels, self.patch_size)
    }

    /// The SAR half of [`Generator::forward`]: the decoder context and the positional embedding of
    /// the patch grid. The input is assumed checked (channels, patch multiple).
    pub(crate) fn encode(&self, sar: Tensor<B, 4>) -> Encoded<B> {
        SarEncoder {
            patch_embed: &self.patch_embed,
            input_modality_embed: &self.input_modality_embed,
            encoder: &self.encoder,
            encoder_norm: &self.encoder_norm,
            decoder_proj_context: &self.decoder_proj_context,
            dim: self.dim,
            patch_size: self.patch_size,
        }
        .encode(sar)
    }

    /// Every linear layer, in module order.
    pub fn linears(&self) -> Vec<&LoraLinear<B>> {
        let mut v = vec![&self.patch_embed.proj];
        for blk in &self.encoder {
            v.extend([&blk.attn.qkv, &blk.attn.proj, &blk.mlp.fc1, &blk.mlp.fc2]);
        }
        v.push(&self.decoder_proj_context);
        for blk in &self.decoder {
            v.extend([
                &blk.self_attn.qkv,
                &blk.self_attn.proj,
                &blk.cross_attn.q,
                &blk.cross_attn.kv,
                &blk.cross_attn.proj,
                &blk.mlp.fc1,
                &blk.mlp.fc2,
            ]);
        }
        v.push(&self.head);
        v
    }

    /// The generator with every adapter folded into its base weight and removed; it computes the same
    /// function (dropout aside). Trainability of the base is unchanged (frozen if LoRA was enabled).
    pub fn merge_lora(self) -> Self {
        let m = |l: LoraLinear<B>| l.merged();
        Self {
            patch_embed: PatchEmbed { proj: m(self.patch_embed.proj) },
            encoder: self
                .encoder
                .into_iter()
                .map(|blk| EncoderBlock {
                    attn: Attention { qkv: m(blk.attn.qkv), proj: m(blk.attn.proj), heads: blk.attn.heads },
                    mlp: Mlp { fc1: m(blk.mlp.fc1), fc2: m(blk.mlp.fc2) },
                    ..blk
                })
                .collect(),
            decoder_proj_context: m(self.decoder_proj_context),
            decoder: self
                .decoder
                .into_iter()
                .map(|blk| DecoderBlock {
                    self_attn: Attention {
                        qkv: m(blk.self_attn.qkv),
                        proj: m(blk.self_attn.proj),
                        heads: blk.self_attn.heads,
                    },
                    cross_attn: CrossAttention {
                        q: m(blk.cross_attn.q),
                        kv: m(blk.cross_attn.kv),
                        proj: m(blk.cross_attn.proj),
                        heads: blk.cross_attn.heads,
                    },
                    mlp: Mlp { fc1: m(blk.mlp.fc1), fc2: m(blk.mlp.fc2) },
                    ..blk
                })
                .collect(),
            head: m(self.head),
            ..self
        }
    }

    /// Re-applies the trainability rule: with LoRA enabled every parameter outside an adapter is frozen
    /// and every adapter parameter trainable; without, every parameter is trainable.
    pub(crate) fn apply_trainability(self) -> Self {
        let frozen_base = self.lora_enabled;
        apply_trainability(self, frozen_base)
    }
}

/// The SAR context of a batch and the positional embedding of its patch grid (see [`SarEncoder::encode`]).
pub(crate) struct Encoded<B: Backend> {
    /// `decoder_proj_context(encoder_norm(encoder(tokens))) + pos`, `[b, n, d]`.
    pub context: Tensor<B, 3>,
    /// The 2-D sin-cos positional embedding, `[1, n, d]`.
    pub pos: Tensor<B, 3>,
    /// Patch rows.
    pub gh: usize,
    /// Patch columns.
    pub gw: usize,
}

/// Borrowed SAR-encoder layers, shared by [`Generator`] and the grounding model so both compute the
/// context with the same operations.
pub(crate) struct SarEncoder<'a, B: Backend> {
    pub patch_embed: &'a PatchEmbed<B>,
    pub input_modality_embed: &'a Param<Tensor<B, 3>>,
    pub encoder: &'a [EncoderBlock<B>],
    pub encoder_norm: &'a LayerNorm<B>,
    pub decoder_proj_context: &'a LoraLinear<B>,
    pub dim: usize,
    pub patch_size: usize,
}

impl<B: Backend> SarEncoder<'_, B> {
    /// `context = decoder_proj_context(encoder_norm(encoder(patch_embed(sar) + pos + input_modality_embed))) + pos`.
    /// `sar`: `[b, c, H, W]` with H, W multiples of the patch size (not checked here).
    pub(crate) fn encode(&self, sar: Tensor<B, 4>) -> Encoded<B> {
        let [_, _, h, w] = sar.dims();
        let (p, d) = (self.patch_size, self.dim);
        let (gh, gw) = (h / p, w / p);
        let n = gh * gw;
        let device = sar.device();

        let patches = patchify(sar, p);
        let pos = Tensor::<B, 3>::from_data(TensorData::new(sincos_pos_embed_2d(d, gh, gw), [1, n, d]), &device);

        let mut x = self.patch_embed.proj.forward(patches) + pos.clone() + self.input_modality_embed.val();
        for block in self.encoder {
            x = block.forward(x);
        }
        let x = self.encoder_norm.forward(x);
        let context = self.decoder_proj_context.forward(x) + pos.clone();
        Encoded { context, pos, gh, gw }
    }
}

/// `[b, c, H, W]` → `[b, (H/p)·(W/p), c·p·p]`: non-overlapping patches in row-major grid order, each
/// flattened channel-major, then row, then column.
pub(crate) fn patchify<B: Backend>(x: Tensor<B, 4>, p: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = x.dims();
    let (gh, gw) = (h / p, w / p);
    x.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, c * p * p])
}

/// The inverse of [`patchify`]: `[b, gh·gw, o·p·p]` → `[b, o, gh·p, gw·p]`.
pub(crate) fn unpatchify<B: Backend>(y: Tensor<B, 3>, gh: usize, gw: usize, o: usize, p: usize) -> Tensor<B, 4> {
    let [b, _, _] = y.dims();
    y.reshape([b, gh, gw, o, p, p]).permute([0, 3, 1, 4, 2, 5]).reshape([b, o, gh * p, gw * p])
}

/// MAE's 2-D sin-cos positional embedding for a `gh × gw` grid, row-major `[gh·gw, d]` (token `i·gw + j`
/// is row i, column j). As in MAE's `get_2d_sincos_pos_embed`, the first `d/2` dims encode the column
/// index and the last `d/2` the row index, each as `[sin(pos·ω_k), cos(pos·ω_k)]` with
/// `ω_k = 10000^(−k/(d/4))`, `k < d/4`.
///
/// # Panics
/// If d is not a multiple of 4 (every [`crate::ModelSize`] is).
pub fn sincos_pos_embed_2d(d: usize, gh: usize, gw: usize) -> Vec<f32> {
    assert!(d.is_multiple_of(4), "2-D sin-cos embedding needs a width divisible by 4, got {d}");
    let quarter = d / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity(gh * gw * d);
    for i in 0..gh {
        for j in 0..gw {
            for pos in [j as f64, i as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Dims, ModelSize};
    use crate::report::{ParamCount, lora_adapter_names};
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleMapper, ModuleVisitor};
    use burn::tensor::Distribution;

    type B = Flex;
    type AB = Autodiff<Flex>;

    pub(crate) fn host<BK: Backend, const D: usize>(t: Tensor<BK, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    pub(crate) fn config(lora: bool) -> GeneratorConfig {
        let mut c = GeneratorConfig::default();
        c.lora.enabled = lora;
        c
    }

    /// Replaces every adapter matrix (A and B) with N(0, 0.3²) values, trainable.
    pub(crate) fn randomize_adapters<BK: Backend>(g: Generator<BK>) -> Generator<BK> {
        struct R(Vec<String>);
        impl<BK: Backend> ModuleMapper<BK> for R {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_owned());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<BK, D>>) -> Param<Tensor<BK, D>> {
                if !self.0.iter().any(|s| s == "adapter") {
                    return p;
                }
                let (id, t, mapper) = p.consume();
                let r = Tensor::random(t.shape(), Distribution::Normal(0.0, 0.3), &t.device()).require_grad();
                Param::from_mapped_value(id, r, mapper)
            }
        }
        g.map(&mut R(Vec::new()))
    }

    /// Every float parameter: `(dotted path, shape)`.
    pub(crate) fn param_shapes<BK: Backend, M: Module<BK>>(m: &M) -> Vec<(String, Vec<usize>)> {
        struct V(Vec<String>, Vec<(String, Vec<usize>)>);
        impl<BK: Backend> ModuleVisitor<BK> for V {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_owned());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<BK, D>>) {
                self.1.push((self.0.join("."), p.shape().as_slice().to_vec()));
            }
        }
        let mut v = V(Vec::new(), Vec::new());
        m.visit(&mut v);
        v.1
    }

    /// The base parameter count written out from the architecture (independent of the module code).
    fn analytic_base(d: Dims, cin: usize, cout: usize) -> usize {
        let (dim, m, p) = (d.dim, d.mlp_hidden, d.patch_size);
        let lin = |i: usize, o: usize| i * o + o;
        let attn = lin(dim, 3 * dim) + lin(dim, dim);
        let mlp = lin(dim, m) + lin(m, dim);
        let enc_block = 2 * dim + attn + mlp;
        let dec_block = 4 * dim + attn + lin(dim, dim) + lin(dim, 2 * dim) + lin(dim, dim) + mlp;
        cin * p * p * dim // patch embedding, no bias
            + dim // input modality
            + d.enc_depth * enc_block
            + dim // encoder norm
            + lin(dim, dim) // decoder_proj_context
            + 2 * dim // mask token, output modality
            + d.dec_depth * dec_block
            + dim // decoder norm
            + lin(dim, cout * p * p)
    }

    #[test]
    fn output_shapes_follow_the_input() {
        let device = Default::default();
        let g = config(true).init::<B>(&device);
        for (h, w) in [(64, 64), (32, 48)] {
            let x = Tensor::<B, 4>::random([2, 2, h, w], Distribution::Normal(0.0, 1.0), &device);
            assert_eq!(g.forward(x).dims(), [2, 4, h, w]);
        }
        let c = config(true);
        assert!(c.check_input(32, 48).is_ok());
        assert_eq!(c.check_input(30, 48), Err(ModelError::PatchMultiple { height: 30, width: 48, patch: 8 }));
        assert!(c.check_input(0, 8).is_err());
        assert!(g.check_input(32, 44).unwrap_err().to_string().contains("32×44"));
    }

    #[test]
    fn try_init_reports_config_problems() {
        let mut c = config(true);
        c.lora.rank = 0;
        match c.try_init::<B>(&Default::default()) {
            Err(ModelError::InvalidConfig(p)) => assert_eq!(p[0].0, "lora.rank"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "3 channels")]
    fn wrong_channel_count_is_a_clear_panic() {
        let device = Default::default();
        let g = config(true).init::<B>(&device);
        g.forward(Tensor::<B, 4>::zeros([1, 3, 16, 16], &device));
    }

    /// With a zero head weight the output is the head bias unpatchified: pixel (gi·p + r, gj·p + c) of
    /// channel o must hold bias[o·p² + r·p + c] for every patch (gi, gj).
    #[test]
    fn unpatchify_places_pixels_like_the_reference() {
        let device = Default::default();
        let mut g = config(false).init::<B>(&device);
        let (p, o) = (8, 4);
        g.head.weight = Param::from_tensor(Tensor::zeros([32, o * p * p], &device));
        let bias: Vec<f32> = (0..o * p * p).map(|i| i as f32).collect();
        g.head.bias = Some(Param::from_data(TensorData::new(bias, [o * p * p]), &device));
        let (h, w) = (16, 24);
        let y = host(g.forward(Tensor::<B, 4>::random([1, 2, h, w], Distribution::Normal(0.0, 1.0), &device)));
        for ch in 0..o {
            for row in 0..h {
                for col in 0..w {
                    let want = (ch * p * p + (row % p) * p + col % p) as f32;
                    assert_eq!(y[(ch * h + row) * w + col], want, "channel {ch} pixel ({row}, {col})");
                }
            }
        }
    }

    #[test]
    fn sincos_embedding_matches_mae() {
        // d 8: ω = [1, 1/100]; token (row 1, column 2) = [sin 2, sin .02, cos 2, cos .02, sin 1, sin .01, cos 1, cos .01].
        let e = sincos_pos_embed_2d(8, 2, 3);
        assert_eq!(e.len(), 6 * 8);
        let tok = &e[(3 + 2) * 8..(3 + 3) * 8];
        let want = [
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
        ];
        for (g, w) in tok.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{tok:?}");
        }
    }

    #[test]
    fn tiny_parameter_count_matches_the_formula() {
        let mut c = config(false);
        c.size = ModelSize::Tiny;
        let g = c.init::<B>(&Default::default());
        let expected = analytic_base(ModelSize::Tiny.dims(), 2, 4);
        assert_eq!(ParamCount::of(&g).total, expected);
        assert_eq!(g.num_params(), expected);
        assert!(lora_adapter_names(&g).is_empty());
    }

    #[test]
    fn default_targets_place_eight_adapters() {
        let device = Default::default();
        let g = config(true).init::<AB>(&device);
        let names = lora_adapter_names(&g);
        assert_eq!(
            names,
            [
                "patch_embed.proj",
                "encoder.0.attn.proj",
                "encoder.1.attn.proj",
                "decoder_proj_context",
                "decoder.0.self_attn.proj",
                "decoder.0.cross_attn.q",
                "decoder.0.cross_attn.kv",
                "decoder.0.cross_attn.proj",
            ]
        );
        // The stored names are the burn paths of the adapters' parameters.
        let shapes = param_shapes(&g);
        let from_paths: Vec<String> =
            shapes.iter().filter_map(|(k, _)| k.strip_suffix(".adapter.lora_a").map(String::from)).collect();
        assert_eq!(from_paths, names);
        for l in g.linears() {
            assert!(shapes.iter().any(|(k, _)| *k == format!("{}.weight", l.name)), "{}", l.name);
        }
        // Trainable = r·(in + out) per adapter, with (in, out) from the architecture.
        let (r, d, pe_in) = (8, 32, 2 * 8 * 8);
        let io = [(pe_in, d), (d, d), (d, d), (d, d), (d, d), (d, d), (d, 2 * d), (d, d)];
        let trainable: usize = io.iter().map(|(i, o)| r * (i + o)).sum();
        let base = analytic_base(ModelSize::Test.dims(), 2, 4);
        assert_eq!(ParamCount::of(&g), ParamCount { total: base + trainable, trainable });
        // And from the named shapes: every `adapter` parameter and nothing else is trainable.
        let adapter_sum: usize =
            shapes.iter().filter(|(k, _)| k.contains(".adapter.")).map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(adapter_sum, trainable);
        let full = config(false).init::<AB>(&device);
        assert_eq!(ParamCount::of(&full), ParamCount { total: base, trainable: base });
    }

    #[test]
    fn fresh_lora_equals_base_exactly_and_merge_matches_after_training() {
        let device = Default::default();
        let g = config(true).init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 2, 16, 24], Distribution::Normal(0.0, 1.0), &device);
        let base = g.clone().merge_lora();
        assert!(lora_adapter_names(&base).is_empty());
        assert_eq!(host(g.forward(x.clone())), host(base.forward(x.clone())));
        // B = 0 folds in as an exact no-op.
        assert_eq!(host(g.patch_embed.proj.weight.val()), host(base.patch_embed.proj.weight.val()));

        let g = randomize_adapters(g);
        let unmerged = host(g.forward(x.clone()));
        assert!(max_abs_diff(&unmerged, &host(base.forward(x.clone()))) > 1e-3, "adapters change the output");
        let merged = g.merge_lora();
        assert!(lora_adapter_names(&merged).is_empty());
        // f32 summation order differs between x·(W + s·AᵀBᵀ) and x·W + s·(x·Aᵀ)·Bᵀ: compare relative
        // to the output's scale (random adapters make outputs of order 10-100).
        let scale = unmerged.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&unmerged, &host(merged.forward(x)));
        assert!(diff < 1e-5 * scale, "merged differs by {diff} at output scale {scale}");
    }

    fn grads_by_path(
        g: &Generator<AB>,
        grads: &<AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    ) -> Vec<(String, Option<f32>)> {
        struct V<'a>(
            Vec<String>,
            Vec<(String, Option<f32>)>,
            &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
        );
        impl ModuleVisitor<AB> for V<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.0.push(name.to_owned());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
                let g = p.val().grad(self.2).map(|g| g.abs().sum().into_scalar());
                self.1.push((self.0.join("."), g));
            }
        }
        let mut v = V(Vec::new(), Vec::new(), grads);
        g.visit(&mut v);
        v.1
    }

    #[test]
    fn lora_gradients_reach_adapters_and_input_only() {
        let device = Default::default();
        let g = randomize_adapters(config(true).init::<AB>(&device));
        let x = Tensor::<AB, 4>::random([2, 2, 16, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let y = g.forward(x.clone());
        let grads = (y.clone() * y).mean().backward();
        let by_path = grads_by_path(&g, &grads);
        assert_eq!(by_path.iter().filter(|(k, _)| k.contains(".adapter.")).count(), 16);
        for (k, gr) in &by_path {
            if k.contains(".adapter.") {
                assert!(gr.is_some_and(|s| s > 0.0), "{k}: {gr:?}");
            } else {
                assert!(gr.is_none(), "frozen {k} got a gradient");
            }
        }
        let gx = x.grad(&grads).expect("input gradient through the frozen layers");
        assert!(gx.abs().sum().into_scalar() > 0.0);
    }

    #[test]
    fn full_training_gives_every_parameter_a_gradient() {
        let device = Default::default();
        let g = config(false).init::<AB>(&device);
        let x = Tensor::<AB, 4>::random([2, 2, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let y = g.forward(x);
        let grads = (y.clone() * y).mean().backward();
        let by_path = grads_by_path(&g, &grads);
        assert_eq!(by_path.len(), param_shapes(&g).len());
        for (k, gr) in by_path {
            assert!(gr.is_some_and(|s| s > 0.0), "{k}: {gr:?}");
        }
    }
}
