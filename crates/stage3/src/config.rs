//! The `model:`, `data:` and `loss:` sections of stage 3, and the aliases that let
//! `configs/train/stage3.lowvr.yaml` keep seed 001's layout (`training.save_every_n_steps`,
//! `hardware.device`, `validation.every_n_steps`, ...).

use std::collections::BTreeMap;
use std::path::PathBuf;

use losses::grounding::SarConsistency;
use losses::lpips::LpipsConfig;
use sarmodels::GroundingConfig;
use sarmodels::config::{LoraConfig, ModelSize};
use serde::{Deserialize, Serialize};
use trainer::RunConfig;
use trainer::config::{ConfigProblem, Validate};

/// `model.pretrained`: the stage-1 base to ground with, or an explicit `false` for a random
/// base (tests and smoke runs). `true` — the seed's "use the pretrained model" — names no file
/// and is refused with what is expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pretrained {
    /// `false`: a randomly initialised base (warned about); `true`: refused (no file named).
    Flag(bool),
    /// A stage-1 `base_model.safetensors`.
    Path(PathBuf),
}

/// `model:` — the grounding model, its LoRA adapters and what trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `test` (CPU tests), `tiny` or `small`: must be the size of the stage-1 base.
    pub size: ModelSize,
    /// Grounding passes (`--timesteps`): the refinement `opt ← opt + r(sar, opt)` is applied this
    /// many times, in training and validation alike. Each pass costs one decoder's worth of
    /// compute and activations; out-of-memory recovery lowers it by `timestep_reduction`, never
    /// below `min_timesteps`.
    pub timesteps: usize,
    /// Floor of `timesteps` under out-of-memory recovery.
    pub min_timesteps: usize,
    /// Passes removed per out-of-memory.
    pub timestep_reduction: usize,
    /// Standardise SAR and optical inputs with TerraMind v1's statistics (as the stage-1 base was
    /// trained); the losses and metrics always see reflectance.
    pub standardize: bool,
    /// The stage-1 base (`base_model.safetensors`): SAR encoder, cross-attention and head.
    pub pretrained: Option<Pretrained>,
    /// LoRA on the grounding cross-attention (seed 001's `target_modules`); a target that would
    /// also adapt a non-cross-attention layer is refused. Keys left out take stage 3's defaults
    /// (seed 001's targets), not stage 1's.
    #[serde(deserialize_with = "sarmodels::grounding::deserialize_lora")]
    pub lora: LoraConfig,
    /// Freeze every parameter except the adapters (seed: `model.lora.freeze_base_model`).
    pub freeze_base_model: bool,
    /// Seed `hardware.cpu_offload`: not supported (refused when true).
    pub cpu_offload: bool,
    /// Seed `hardware.gradient_checkpointing`: not supported (refused when true).
    pub gradient_checkpointing: bool,
    /// Seed `hardware.distributed`: not supported yet (refused when true).
    pub distributed: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        let g = GroundingConfig::default();
        Self {
            size: ModelSize::Test,
            timesteps: 1,
            min_timesteps: 1,
            timestep_reduction: 1,
            standardize: true,
            pretrained: None,
            lora: g.lora,
            freeze_base_model: g.freeze_base_model,
            cpu_offload: false,
            gradient_checkpointing: false,
            distributed: false,
        }
    }
}

impl ModelSection {
    /// The grounding model this section describes.
    pub fn grounding(&self) -> GroundingConfig {
        GroundingConfig { size: self.size, lora: self.lora.clone(), freeze_base_model: self.freeze_base_model }
    }

    /// The base file, when one is named.
    pub fn base_path(&self) -> Option<&PathBuf> {
        match &self.pretrained {
            Some(Pretrained::Path(p)) => Some(p),
            _ => None,
        }
    }
}

impl Validate for ModelSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        for (key, message) in self.grounding().validate() {
            p.push(ConfigProblem::new(&format!("model.{key}"), message));
        }
        if self.timesteps == 0 {
            p.push(ConfigProblem::new("model.timesteps", "expected at least 1 grounding pass"));
        }
        if self.min_timesteps == 0 || self.min_timesteps > self.timesteps {
            p.push(ConfigProblem::new(
                "model.min_timesteps",
                format!("expected between 1 and model.timesteps ({}), got {}", self.timesteps, self.min_timesteps),
            ));
        }
        if self.timestep_reduction == 0 {
            p.push(ConfigProblem::new("model.timestep_reduction", "expected at least 1 pass"));
        }
        match &self.pretrained {
            None => p.push(ConfigProblem::new(
                "model.pretrained",
                "is not set: stage 3 grounds with stage 1's SAR encoder; set it (or --pretrained) to a stage-1 \
                 base_model.safetensors, or to false to start from a random base (tests only)",
            )),
            Some(Pretrained::Flag(true)) => p.push(ConfigProblem::new(
                "model.pretrained",
                "true names no file: expected the path of stage 1's base_model.safetensors (written at the end of \
                 every stage-1 run), e.g. --pretrained runs/stage1/base_model.safetensors",
            )),
            Some(Pretrained::Flag(false)) => {}
            Some(Pretrained::Path(path)) if !path.is_file() => p.push(ConfigProblem::new(
                "model.pretrained",
                format!("{} does not exist (expected stage 1's base_model.safetensors)", path.display()),
            )),
            Some(Pretrained::Path(_)) => {}
        }
        let unsupported = [
            ("model.cpu_offload", self.cpu_offload, "offloading parameters to the CPU is not supported"),
            (
                "model.gradient_checkpointing",
                self.gradient_checkpointing,
                "activation checkpointing is not supported; lower model.timesteps or training.batch_size to save memory",
            ),
            ("model.distributed", self.distributed, "multi-device training is not built yet; train on one device"),
        ];
        for (key, on, why) in unsupported {
            if on {
                p.push(ConfigProblem::new(key, format!("true is not supported: {why}")));
            }
        }
    }
}

/// Where `opt_v2` comes from when no stage-2 directory is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage2Proxy {
    /// The reference's proxy: `clip(truth + N(0, σ²), 0, 1)` with σ = `data.proxy_sigma`, drawn
    /// deterministically per (seed, epoch, tile) and logged as a proxy.
    NoisyTruth,
}

/// `data:` — tiles, the stage-2 estimates, and how they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Directory of NPZ tiles (`--data-dir`; seed: `data.train_dir`), with trainyard-tile's
    /// `manifest.json` for its splits or `val_split` by tile-id hash.
    pub data_dir: Option<PathBuf>,
    /// Validate on every tile of this directory instead of the data's val split.
    pub val_dir: Option<PathBuf>,
    /// Directory of stage-2 estimates (`--stage2-dir`): `DIR/<tile file name>` holding `opt_v2`
    /// `(4, H, W)` in reflectance, e.g. written by `stage1 predict`.
    pub stage2_dir: Option<PathBuf>,
    /// Without `stage2_dir`, the stage refuses to start unless this names a proxy.
    pub stage2_proxy: Option<Stage2Proxy>,
    /// σ of the `noisy_truth` proxy, in reflectance.
    pub proxy_sigma: f64,
    /// Fraction of the tiles that validate when `data_dir` has no manifest.
    pub val_split: f64,
    /// Required tile side in pixels (`null`: any size that fits the patch grid).
    pub tile_size: Option<usize>,
    /// Train on at most this many tiles (seed: `debug.max_samples`).
    pub max_tiles: Option<usize>,
    /// Validate on at most this many tiles (seed: `data.val_max_samples`).
    pub max_val_tiles: Option<usize>,
    /// Paired flips / rotations of training tiles (seed: `data.use_augmentation`).
    pub augment: bool,
    /// Threads decoding the tiles of a batch.
    pub num_workers: usize,
    /// Tiles per validation batch.
    pub val_batch_size: usize,
    /// Write `validation/step_N.png` at each validation (seed: `logging.save_example_images`).
    pub save_example_images: bool,
    /// Rows of that image, one per validation tile (seed: `logging.num_example_images`).
    pub num_example_images: usize,
    /// Compute `lpips_change` (LPIPS between opt_v3 and opt_v2) when LPIPS weights are given
    /// (seed: `validation.compute_lpips`).
    pub compute_lpips: bool,
    /// Warn when `lpips_change` exceeds this (seed: `validation.lpips_threshold`).
    pub lpips_threshold: f64,
    /// Seed `validation.compute_sar_agreement`: always on (it selects the best model).
    pub compute_sar_agreement: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            data_dir: None,
            val_dir: None,
            stage2_dir: None,
            stage2_proxy: None,
            proxy_sigma: 0.05,
            val_split: 0.1,
            tile_size: None,
            max_tiles: None,
            max_val_tiles: None,
            augment: true,
            num_workers: 2,
            val_batch_size: 4,
            save_example_images: true,
            num_example_images: 4,
            compute_lpips: true,
            lpips_threshold: 0.15,
            compute_sar_agreement: true,
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
        for (key, dir) in [("data.val_dir", &self.val_dir), ("data.stage2_dir", &self.stage2_dir)] {
            if let Some(d) = dir
                && !d.is_dir()
            {
                p.push(ConfigProblem::new(key, format!("{} is not a directory", d.display())));
            }
        }
        match (&self.stage2_dir, self.stage2_proxy) {
            (None, None) => p.push(ConfigProblem::new(
                "data.stage2_dir",
                "is not set: stage 3 refines stage-2 estimates (DIR/<tile>.npz with opt_v2); write them with \
                 `stage1 predict --weights RUN/best_model.safetensors --data-dir TILES --out DIR` and pass \
                 --stage2-dir DIR, or set data.stage2_proxy: noisy_truth for the reference's proxy (truth + noise)",
            )),
            (Some(_), Some(_)) => p.push(ConfigProblem::new(
                "data.stage2_proxy",
                "is set together with data.stage2_dir: choose one source of opt_v2",
            )),
            _ => {}
        }
        if !(self.proxy_sigma.is_finite() && self.proxy_sigma >= 0.0) {
            p.push(ConfigProblem::new(
                "data.proxy_sigma",
                format!("expected a non-negative number, got {}", self.proxy_sigma),
            ));
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
        if !(self.lpips_threshold.is_finite() && self.lpips_threshold > 0.0) {
            p.push(ConfigProblem::new(
                "data.lpips_threshold",
                format!("expected a positive number, got {}", self.lpips_threshold),
            ));
        }
        if !self.compute_sar_agreement {
            p.push(ConfigProblem::new(
                "data.compute_sar_agreement",
                "false is not supported: sar_agreement selects the best model and drives early stopping",
            ));
        }
    }
}

/// `loss:` — seed 001's five weighted terms, the SAR-consistency settings and LPIPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// SAR consistency: edge + texture agreement of opt_v3 with the SAR.
    pub sar_consistency_weight: f64,
    /// Cycle: MSE between opt_v3 and opt_v2.
    pub cycle_weight: f64,
    /// Identity: |opt_v3 − opt_v2| where the SAR is not confident.
    pub identity_weight: f64,
    /// LPIPS between opt_v3 and the truth (needs `lpips.weights`; never silently zero).
    pub lpips_weight: f64,
    /// Masked L1 between opt_v3 and the truth.
    pub spectral_weight: f64,
    /// `false` turns LPIPS off entirely (the term and `lpips_change`), whatever its weight.
    pub use_lpips: bool,
    /// Edge / texture weights, adaptive weighting and the urban boost of the SAR term.
    pub sar_consistency: SarConsistency,
    /// LPIPS network and weights.
    pub lpips: LpipsConfig,
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            sar_consistency_weight: 1.0,
            cycle_weight: 0.5,
            identity_weight: 0.3,
            lpips_weight: 0.0,
            spectral_weight: 1.0,
            use_lpips: true,
            sar_consistency: SarConsistency::default(),
            lpips: LpipsConfig::default(),
        }
    }
}

/// Loss-term names, as logged (`loss_<name>`).
pub const LOSS_TERMS: [&str; 5] = ["sar_consistency", "cycle", "identity", "lpips", "spectral"];

impl LossSection {
    /// Weights by term name (`lpips` is 0 when `use_lpips` is false).
    pub fn weights(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("sar_consistency".to_string(), self.sar_consistency_weight),
            ("cycle".to_string(), self.cycle_weight),
            ("identity".to_string(), self.identity_weight),
            ("lpips".to_string(), if self.use_lpips { self.lpips_weight } else { 0.0 }),
            ("spectral".to_string(), self.spectral_weight),
        ])
    }

    /// Whether LPIPS weights are needed and loaded (the term or the `lpips_change` metric).
    pub fn wants_lpips(&self, compute_lpips: bool) -> bool {
        self.use_lpips && (self.lpips_weight > 0.0 || (compute_lpips && self.lpips.weights.is_some()))
    }
}

impl Validate for LossSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if let Err(errors) = losses::combined::CombinedLoss::new(&self.weights(), &LOSS_TERMS) {
            for e in errors {
                p.push(ConfigProblem::new("loss", e.to_string()));
            }
        }
        for (key, message) in self.sar_consistency.validate() {
            p.push(ConfigProblem::new(&format!("loss.sar_consistency.{key}"), message));
        }
        let weight = if self.use_lpips { self.lpips_weight } else { 0.0 };
        if let Err(e) = self.lpips.validate(weight) {
            p.push(ConfigProblem::new("loss.lpips.weights", e));
        }
    }
}

/// The full config of stage 3.
pub type Stage3Config = RunConfig<ModelSection, DataSection, LossSection>;

/// Seed 001's section layout, `(as written, native key)`: `configs/train/stage3.lowvr.yaml` keeps
/// the names users of `train_stage3.py`'s README know, each mapped onto one native key.
pub const ALIASES: &[(&str, &str)] = &[
    ("model.lora.freeze_base_model", "model.freeze_base_model"),
    ("training.save_every_n_steps", "checkpoint.every_n_steps"),
    ("training.keep_last_n_checkpoints", "checkpoint.keep_last_n_steps"),
    ("training.early_stopping.metric", "early_stopping.monitor"),
    ("training.early_stopping", "early_stopping"),
    ("training.seed", "seed"),
    ("data.train_dir", "data.data_dir"),
    ("data.use_augmentation", "data.augment"),
    ("data.val_max_samples", "data.max_val_tiles"),
    ("logging.output_dir", "output_dir"),
    ("logging.log_every_n_steps", "logging.log_every"),
    ("logging.save_example_images", "data.save_example_images"),
    ("logging.num_example_images", "data.num_example_images"),
    ("hardware.device", "device"),
    ("hardware.cpu_offload", "model.cpu_offload"),
    ("hardware.gradient_checkpointing", "model.gradient_checkpointing"),
    ("hardware.distributed", "model.distributed"),
    ("validation.every_n_steps", "training.val_every"),
    ("validation.compute_lpips", "data.compute_lpips"),
    ("validation.lpips_threshold", "data.lpips_threshold"),
    ("validation.compute_sar_agreement", "data.compute_sar_agreement"),
    ("validation.max_samples", "data.max_val_tiles"),
    ("resume.checkpoint_path", "resume.path"),
    ("debug.max_samples", "data.max_tiles"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_lora_section_keeps_stage_3_targets() {
        let m: ModelSection = serde_yaml::from_str("lora:\n  rank: 4\n").unwrap();
        assert_eq!(m.lora.rank, 4);
        assert_eq!(m.lora.target_modules, ModelSection::default().lora.target_modules);
        assert!(m.lora.target_modules.iter().any(|t| t == "cross_attn"));
        assert!(!m.lora.target_modules.iter().any(|t| t == "proj"), "stage 1's list would adapt patch_embed.proj");
    }

    #[test]
    fn pretrained_reads_a_path_or_a_flag() {
        let m: ModelSection = serde_yaml::from_str("pretrained: runs/x/base_model.safetensors\n").unwrap();
        assert_eq!(m.base_path().map(|p| p.display().to_string()).as_deref(), Some("runs/x/base_model.safetensors"));
        let m: ModelSection = serde_yaml::from_str("pretrained: false\n").unwrap();
        assert_eq!(m.pretrained, Some(Pretrained::Flag(false)));
        let mut p = Vec::new();
        m.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let m: ModelSection = serde_yaml::from_str("pretrained: true\n").unwrap();
        let mut p = Vec::new();
        m.validate(&mut p);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("names no file"), "{p:?}");
    }
}
