//! The `model:`, `data:` and `loss:` sections of stage 1, and the aliases that let
//! `configs/train/stage1.lowvr.yaml` keep seed 000's layout (`training.steps`, `system.seed`, ...).

use std::collections::BTreeMap;
use std::path::PathBuf;

use losses::lpips::LpipsConfig;
use sarmodels::config::{DenoiserConfig, GeneratorConfig, LoraConfig, ModelSize};
use serde::{Deserialize, Serialize};
use trainer::RunConfig;
use trainer::config::{ConfigProblem, Validate};

/// Input channels: Sentinel-1 VV, VH.
pub const SAR_CHANNELS: usize = 2;
/// Output channels: Sentinel-2 B2, B3, B4, B8.
pub const OPTICAL_CHANNELS: usize = 4;

/// `model:` — the generator, its LoRA adapters and the diffusion refiner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `test` (CPU tests), `tiny` or `small` (TerraMind-tiny / -small dimensions).
    pub size: ModelSize,
    /// DDIM steps of the refiner at validation and inference (`--timesteps`); lowered by
    /// `timestep_reduction` on an out-of-memory, never below `min_timesteps`.
    pub timesteps: usize,
    /// Floor of `timesteps` under out-of-memory recovery (seed: `system.oom_handling.min_timesteps`).
    pub min_timesteps: usize,
    /// Steps removed per out-of-memory (seed: `system.oom_handling.reduction_step`).
    pub timestep_reduction: usize,
    /// Standardise S1/S2 with TerraMind v1's statistics (false: train on tile units).
    pub standardize: bool,
    /// Base weights (safetensors written by a full-training run's `base_model.safetensors` or
    /// `sarmodels`' export) loaded before the adapters are attached.
    pub pretrained: Option<PathBuf>,
    /// LoRA adapters on the frozen base (`enabled: false` trains every weight: the full-training
    /// mode that produces a base).
    pub lora: LoraConfig,
    /// The conditional denoiser.
    pub denoiser: DenoiserConfig,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            size: ModelSize::Test,
            timesteps: 10,
            min_timesteps: 4,
            timestep_reduction: 2,
            standardize: true,
            pretrained: None,
            lora: LoraConfig::default(),
            denoiser: DenoiserConfig::default(),
        }
    }
}

impl ModelSection {
    /// The generator this section describes.
    pub fn generator(&self) -> GeneratorConfig {
        GeneratorConfig {
            size: self.size,
            in_channels: SAR_CHANNELS,
            out_channels: OPTICAL_CHANNELS,
            lora: self.lora.clone(),
            denoiser: self.denoiser.clone(),
        }
    }
}

impl Validate for ModelSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        for (key, message) in self.generator().validate() {
            p.push(ConfigProblem::new(&format!("model.{key}"), message));
        }
        if self.timesteps == 0 {
            p.push(ConfigProblem::new("model.timesteps", "expected at least 1 DDIM step"));
        }
        if self.timesteps > self.denoiser.train_timesteps {
            p.push(ConfigProblem::new(
                "model.timesteps",
                format!(
                    "{} DDIM steps exceed model.denoiser.train_timesteps = {}",
                    self.timesteps, self.denoiser.train_timesteps
                ),
            ));
        }
        if self.min_timesteps == 0 || self.min_timesteps > self.timesteps {
            p.push(ConfigProblem::new(
                "model.min_timesteps",
                format!("expected between 1 and model.timesteps ({}), got {}", self.timesteps, self.min_timesteps),
            ));
        }
        if self.timestep_reduction == 0 {
            p.push(ConfigProblem::new("model.timestep_reduction", "expected at least 1 step"));
        }
        if let Some(path) = &self.pretrained
            && !path.is_file()
        {
            p.push(ConfigProblem::new(
                "model.pretrained",
                format!("{} does not exist (expected a safetensors file)", path.display()),
            ));
        }
    }
}

/// `data:` — where the tiles are and how they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Directory of NPZ tiles (`--data-dir`). With a `manifest.json` (written by `trainyard-tile`)
    /// its train/val splits are used; without one, `val_split` of the tiles validate.
    pub data_dir: Option<PathBuf>,
    /// Directory of validation tiles (all of them, whatever their split), instead of `data_dir`'s
    /// val split: e.g. synthetic scenes rendered with another seed.
    pub val_dir: Option<PathBuf>,
    /// Fraction of the tiles that validate when `data_dir` has no manifest (chosen by a hash of
    /// the tile id, so the choice does not depend on file order).
    pub val_split: f64,
    /// Required tile side in pixels (`null`: any size that fits the patch grid).
    pub tile_size: Option<usize>,
    /// Train on at most this many tiles (`--max-tiles`; the first in manifest order).
    pub max_tiles: Option<usize>,
    /// Validate on at most this many tiles.
    pub max_val_tiles: Option<usize>,
    /// Paired flips / rotations of training tiles (never of validation tiles).
    pub augment: bool,
    /// Threads decoding the tiles of a batch.
    pub num_workers: usize,
    /// Tiles per validation batch (seed: `validation.val_batch_size`).
    pub val_batch_size: usize,
    /// Validation tiles drawn in the PNG grid written at every validation (0 disables).
    pub grid_tiles: usize,
    /// At most this many training tiles are averaged for the "predict the mean training
    /// image" baseline (`val_psnr_mean_image`).
    pub baseline_tiles: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            data_dir: None,
            val_dir: None,
            val_split: 0.1,
            tile_size: None,
            max_tiles: None,
            max_val_tiles: None,
            augment: true,
            num_workers: 2,
            val_batch_size: 4,
            grid_tiles: 4,
            baseline_tiles: 512,
        }
    }
}

impl Validate for DataSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        match &self.data_dir {
            None => p.push(ConfigProblem::new("data.data_dir", "no tiles: set data.data_dir or pass --data-dir")),
            Some(d) if !d.is_dir() => {
                p.push(ConfigProblem::new("data.data_dir", format!("{} is not a directory of NPZ tiles", d.display())))
            }
            Some(_) => {}
        }
        if let Some(d) = &self.val_dir
            && !d.is_dir()
        {
            p.push(ConfigProblem::new("data.val_dir", format!("{} is not a directory of NPZ tiles", d.display())));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            p.push(ConfigProblem::new(
                "data.val_split",
                format!("expected a fraction in [0, 1), got {}", self.val_split),
            ));
        }
        for (key, v) in [
            ("data.tile_size", self.tile_size),
            ("data.max_tiles", self.max_tiles),
            ("data.max_val_tiles", self.max_val_tiles),
        ] {
            if v == Some(0) {
                p.push(ConfigProblem::new(key, "expected a positive number, or null"));
            }
        }
        if self.num_workers == 0 {
            p.push(ConfigProblem::new("data.num_workers", "expected at least 1 thread"));
        }
        if self.val_batch_size == 0 {
            p.push(ConfigProblem::new("data.val_batch_size", "expected at least 1 tile"));
        }
    }
}

/// `loss:` — weights of the terms (seed 000's names) and the LPIPS network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// Masked L1 between the generator's output and the target.
    pub l1_weight: f64,
    /// `1 − MS-SSIM` (torchmetrics' definition; scales whose side is below the window are dropped).
    pub ms_ssim_weight: f64,
    /// LPIPS on B4/B3/B2 reflectance (needs `lpips.weights`; never silently zero).
    pub lpips_weight: f64,
    /// Colour ratios (R/G, R/B, NIR/R) on reflectance.
    pub color_consistency_weight: f64,
    /// Differentiable SAR-structure loss (the metric `sar_edge_agreement` is its value).
    pub sar_structure_weight: f64,
    /// The denoiser's own x0 loss (trained on the detached generator output).
    pub denoiser_weight: f64,
    /// LPIPS network and weights.
    pub lpips: LpipsConfig,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            l1_weight: 1.0,
            ms_ssim_weight: 0.5,
            lpips_weight: 0.0,
            color_consistency_weight: 0.0,
            sar_structure_weight: 0.2,
            denoiser_weight: 1.0,
            lpips: LpipsConfig::default(),
        }
    }
}

/// Loss-term names, as logged (`loss_<name>`).
pub const LOSS_TERMS: [&str; 6] = ["l1", "ms_ssim", "lpips", "color_consistency", "sar_structure", "denoiser"];

impl LossSection {
    /// Weights by term name.
    pub fn weights(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("l1".to_string(), self.l1_weight),
            ("ms_ssim".to_string(), self.ms_ssim_weight),
            ("lpips".to_string(), self.lpips_weight),
            ("color_consistency".to_string(), self.color_consistency_weight),
            ("sar_structure".to_string(), self.sar_structure_weight),
            ("denoiser".to_string(), self.denoiser_weight),
        ])
    }
}

impl Validate for LossSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if let Err(errors) = losses::combined::CombinedLoss::new(&self.weights(), &LOSS_TERMS) {
            for e in errors {
                p.push(ConfigProblem::new("loss", e.to_string()));
            }
        }
        if let Err(e) = self.lpips.validate(self.lpips_weight) {
            p.push(ConfigProblem::new("loss.lpips.weights", e));
        }
    }
}

/// The full config of stage 1.
pub type Stage1Config = RunConfig<ModelSection, DataSection, LossSection>;

/// Seed 000's section layout, `(as written, native key)`: `configs/train/stage1.lowvr.yaml` keeps
/// the names users of `train_stage1.py` know, each mapped onto one native key.
pub const ALIASES: &[(&str, &str)] = &[
    ("training.steps", "training.max_steps"),
    ("training.grad_accum_steps", "training.gradient_accumulation_steps"),
    ("training.max_grad_norm", "training.gradient_clip_norm"),
    ("training.optimizer.type", "optimizer.name"),
    ("training.optimizer", "optimizer"),
    ("training.scheduler.type", "optimizer.scheduler.name"),
    ("training.scheduler", "optimizer.scheduler"),
    ("validation.val_every", "training.val_every"),
    ("validation.val_batch_size", "data.val_batch_size"),
    ("checkpointing.save_every", "checkpoint.every_n_steps"),
    ("checkpointing.keep_last_n", "checkpoint.keep_last_n_steps"),
    ("top_k_checkpoints.k", "checkpoint.keep_top_k"),
    ("top_k_checkpoints.save_dir", "checkpoint.top_k_dir"),
    ("early_stopping.metric", "early_stopping.monitor"),
    ("output.output_dir", "output_dir"),
    ("logging.gpu_memory_every", "logging.memory_every"),
    ("system.seed", "seed"),
    ("system.device", "device"),
    ("system.oom_handling.enabled", "oom.enabled"),
    ("system.oom_handling.min_timesteps", "model.min_timesteps"),
    ("system.oom_handling.reduction_step", "model.timestep_reduction"),
];
