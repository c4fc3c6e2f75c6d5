//! Model configuration: serde types that read from the stage's YAML `model` section.
//!
//! Every struct carries `#[serde(default)]`, so a partial section fills the rest from the
//! defaults; [`GeneratorConfig::validate`] checks value ranges beyond the types.

use serde::{Deserialize, Serialize};

/// Transformer dimensions of one model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Token width d.
    pub dim: usize,
    /// Attention heads (d is divisible by it).
    pub heads: usize,
    /// Encoder blocks.
    pub enc_depth: usize,
    /// Decoder blocks.
    pub dec_depth: usize,
    /// Hidden width of the MLPs.
    pub mlp_hidden: usize,
    /// Side of the square, non-overlapping patches p (input H and W must be multiples of it).
    pub patch_size: usize,
}

/// Generator size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSize {
    /// A very small model for tests and smoke runs: d 32, 2 heads, 2 + 1 blocks, MLP 64, patch 8.
    #[default]
    Test,
    /// TerraMind-tiny's widths: d 192, 3 heads, 12 + 4 blocks, MLP 768, patch 16.
    Tiny,
    /// TerraMind-small's widths: d 384, 6 heads, 12 + 6 blocks, MLP 1536, patch 16.
    Small,
}

impl ModelSize {
    /// The dimensions of this size.
    pub fn dims(self) -> Dims {
        match self {
            Self::Test => Dims { dim: 32, heads: 2, enc_depth: 2, dec_depth: 1, mlp_hidden: 64, patch_size: 8 },
            Self::Tiny => Dims { dim: 192, heads: 3, enc_depth: 12, dec_depth: 4, mlp_hidden: 768, patch_size: 16 },
            Self::Small => Dims { dim: 384, heads: 6, enc_depth: 12, dec_depth: 6, mlp_hidden: 1536, patch_size: 16 },
        }
    }
}

/// Low-rank adapters on selected linear layers (PEFT-style LoRA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    /// Attach adapters and freeze the whole generator base; `false` trains every parameter.
    pub enabled: bool,
    /// Adapter rank r.
    pub rank: usize,
    /// LoRA alpha; the adapter output is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input, in `[0, 1)`.
    pub dropout: f64,
    /// A linear layer gets an adapter iff its lowercase dotted name contains one of these as a substring.
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: ["proj", "q_proj", "k_proj", "v_proj", "o_proj", "cross_attn"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

impl LoraConfig {
    /// `alpha / rank`, the factor on the adapter's output.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the linear layer with this dotted name gets an adapter (LoRA enabled and a target is a
    /// substring of the lowercase name).
    pub fn targets(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.enabled && self.target_modules.iter().any(|t| name.contains(&t.to_lowercase()))
    }
}

impl LoraConfig {
    /// Problems with the adapter settings, as `(key, message)` with keys `lora.rank`, `lora.alpha`,
    /// `lora.dropout` and `lora.target_modules`; empty when valid.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |key: &str, message: String| p.push((key.to_owned(), message));
        if self.rank == 0 {
            push("lora.rank", "must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            push("lora.alpha", format!("must be a positive number, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            push("lora.dropout", format!("must be in [0, 1), got {}", self.dropout));
        }
        if self.enabled && self.target_modules.is_empty() {
            push("lora.target_modules", "must name at least one module when lora.enabled is true".into());
        }
        if self.target_modules.iter().any(|t| t.trim().is_empty()) {
            push("lora.target_modules", "an empty name would match every layer".into());
        }
        p
    }
}

/// The conditional residual denoiser (see [`crate::denoiser`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenoiserConfig {
    /// Feature channels of the convolutions (even: it is also the timestep embedding width).
    pub channels: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Diffusion steps T of the training schedule.
    pub train_timesteps: usize,
}

impl Default for DenoiserConfig {
    fn default() -> Self {
        Self { channels: 32, blocks: 2, train_timesteps: 1000 }
    }
}

/// The stage-1 generator: size, band counts, LoRA and the denoiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorConfig {
    /// Transformer size.
    pub size: ModelSize,
    /// SAR input channels (2: VV, VH).
    pub in_channels: usize,
    /// Optical output channels (4: B2, B3, B4, B8).
    pub out_channels: usize,
    /// Low-rank adapters.
    pub lora: LoraConfig,
    /// Residual denoiser.
    pub denoiser: DenoiserConfig,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            size: ModelSize::default(),
            in_channels: 2,
            out_channels: 4,
            lora: LoraConfig::default(),
            denoiser: DenoiserConfig::default(),
        }
    }
}

impl GeneratorConfig {
    /// Problems with the values, as `(dotted key relative to this section, message)`; empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |key: &str, message: String| p.push((key.to_owned(), message));
        if self.in_channels == 0 {
            push("in_channels", "must be at least 1".into());
        }
        if self.out_channels == 0 {
            push("out_channels", "must be at least 1".into());
        }
        for (key, message) in self.lora.problems() {
            push(&key, message);
        }
        let d = &self.denoiser;
        if d.channels == 0 || !d.channels.is_multiple_of(2) {
            push("denoiser.channels", format!("must be a positive even number, got {}", d.channels));
        }
        if d.train_timesteps < 2 {
            push("denoiser.train_timesteps", format!("must be at least 2, got {}", d.train_timesteps));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_the_documented_dims() {
        let d = |dim, heads, enc_depth, dec_depth, mlp_hidden, patch_size| Dims {
            dim,
            heads,
            enc_depth,
            dec_depth,
            mlp_hidden,
            patch_size,
        };
        assert_eq!(ModelSize::Test.dims(), d(32, 2, 2, 1, 64, 8));
        assert_eq!(ModelSize::Tiny.dims(), d(192, 3, 12, 4, 768, 16));
        assert_eq!(ModelSize::Small.dims(), d(384, 6, 12, 6, 1536, 16));
        for s in [ModelSize::Test, ModelSize::Tiny, ModelSize::Small] {
            let d = s.dims();
            assert!(d.dim.is_multiple_of(d.heads) && d.dim.is_multiple_of(4), "{s:?}");
        }
    }

    #[test]
    fn partial_yaml_fills_defaults() {
        let c: GeneratorConfig =
            serde_yaml::from_str("size: tiny\nlora:\n  rank: 4\ndenoiser:\n  blocks: 3\n").unwrap();
        assert_eq!(c.size, ModelSize::Tiny);
        assert_eq!(c.in_channels, 2);
        assert_eq!(c.out_channels, 4);
        assert_eq!(c.lora.rank, 4);
        assert!(c.lora.enabled);
        assert_eq!(c.lora.alpha, 16.0);
        assert_eq!(c.lora.target_modules, ["proj", "q_proj", "k_proj", "v_proj", "o_proj", "cross_attn"]);
        assert_eq!(c.denoiser, DenoiserConfig { channels: 32, blocks: 3, train_timesteps: 1000 });
        let empty: GeneratorConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(empty, GeneratorConfig::default());
        assert!(serde_yaml::from_str::<GeneratorConfig>("size: huge").is_err());
        let round: GeneratorConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        assert!(serde_json::to_string(&c).unwrap().contains("\"size\":\"tiny\""));
    }

    #[test]
    fn defaults_validate() {
        assert!(GeneratorConfig::default().validate().is_empty());
    }

    #[test]
    fn validate_names_each_bad_key() {
        let keys = |c: &GeneratorConfig| c.validate().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let mut c = GeneratorConfig::default();
        c.lora.rank = 0;
        c.lora.alpha = 0.0;
        c.lora.dropout = 1.0;
        c.lora.target_modules.clear();
        c.denoiser.channels = 0;
        c.denoiser.train_timesteps = 1;
        c.in_channels = 0;
        c.out_channels = 0;
        assert_eq!(
            keys(&c),
            [
                "in_channels",
                "out_channels",
                "lora.rank",
                "lora.alpha",
                "lora.dropout",
                "lora.target_modules",
                "denoiser.channels",
                "denoiser.train_timesteps"
            ]
        );
        // Empty targets are fine when LoRA is off; negative dropout and odd channels are not.
        let mut c = GeneratorConfig::default();
        c.lora.enabled = false;
        c.lora.target_modules.clear();
        assert!(c.validate().is_empty());
        c.lora.dropout = -0.1;
        c.lora.alpha = f64::NAN;
        c.denoiser.channels = 7;
        assert_eq!(keys(&c), ["lora.alpha", "lora.dropout", "denoiser.channels"]);
        let mut c = GeneratorConfig::default();
        c.lora.target_modules.push(" ".into());
        assert_eq!(keys(&c), ["lora.target_modules"]);
    }

    #[test]
    fn targets_match_lowercase_substrings() {
        let l = LoraConfig::default();
        assert!(l.targets("encoder.3.attn.proj"));
        assert!(l.targets("decoder.0.cross_attn.kv"));
        assert!(l.targets("Patch_Embed.PROJ"));
        assert!(!l.targets("encoder.3.attn.qkv"));
        assert!(!l.targets("encoder.3.mlp.fc1"));
        assert!(!l.targets("head"));
        assert!(!LoraConfig { enabled: false, ..l.clone() }.targets("encoder.3.attn.proj"));
        assert!(LoraConfig { target_modules: vec!["QKV".into()], ..l }.targets("encoder.3.attn.qkv"));
        assert_eq!(LoraConfig::default().scaling(), 2.0);
    }
}
