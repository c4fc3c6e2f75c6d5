//! `stage3`: SAR grounding (seed 001's `train_stage3.py`) on the shared trainer.
//!
//! `stage3 --config configs/train/stage3.lowvr.yaml --data-dir tiles/ --stage2-dir opt_v2/
//! --pretrained runs/stage1/base_model.safetensors` trains the LoRA adapters of the grounding
//! cross-attention, validates every `validation.every_n_steps` steps, keeps `best_model` by
//! `sar_agreement` and stops early on it.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use stage3::{DataSection, LossSection, ModelSection, Stage2Source, Stage3Config, Stage3Task};
use trainer::cli::{self, Stage, set_if};
use trainer::{LoopState, RunSummary, StopReason, TrainError};

/// Flags of stage 3 (seed 001's names).
#[derive(Debug, Clone, Args)]
struct Stage3Args {
    /// `data.data_dir`: directory of NPZ tiles (with trainyard-tile's manifest.json for its splits).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `data.stage2_dir`: directory of stage-2 estimates (`DIR/<tile>.npz` with `opt_v2`), e.g.
    /// from `stage1 predict`.
    #[arg(long, value_name = "DIR")]
    stage2_dir: Option<PathBuf>,
    /// `data.val_dir`: validate on every tile of this directory instead of the data's val split.
    #[arg(long, value_name = "DIR")]
    val_dir: Option<PathBuf>,
    /// `model.pretrained`: stage 1's `base_model.safetensors`.
    #[arg(long, value_name = "FILE")]
    pretrained: Option<PathBuf>,
    /// `model.timesteps`: grounding passes.
    #[arg(long, value_name = "N")]
    timesteps: Option<u64>,
    /// `model.lora.rank`.
    #[arg(long, value_name = "R")]
    lora_rank: Option<u64>,
    /// `model.lora.alpha`.
    #[arg(long, value_name = "ALPHA")]
    lora_alpha: Option<f64>,
    /// `checkpoint.every_n_steps`: save `checkpoints/checkpoint_step_N` every N steps.
    #[arg(long, value_name = "N")]
    save_every: Option<u64>,
}

struct Stage3;

impl Stage for Stage3 {
    const NAME: &'static str = stage3::NAME;
    type Model = ModelSection;
    type Data = DataSection;
    type Loss = LossSection;
    type Args = Stage3Args;

    fn overrides(a: &Stage3Args) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        let path = |p: &Option<PathBuf>| p.as_ref().map(|d| d.display().to_string());
        set_if(&mut o, "data.data_dir", path(&a.data_dir));
        set_if(&mut o, "data.stage2_dir", path(&a.stage2_dir));
        set_if(&mut o, "data.val_dir", path(&a.val_dir));
        set_if(&mut o, "model.pretrained", path(&a.pretrained));
        set_if(&mut o, "model.timesteps", a.timesteps);
        set_if(&mut o, "model.lora.rank", a.lora_rank);
        set_if(&mut o, "model.lora.alpha", a.lora_alpha);
        set_if(&mut o, "checkpoint.every_n_steps", a.save_every);
        o
    }

    /// Seed 001's stage-3 settings: AdamW lr 1e-4, weight decay 1e-5, 500 warm-up steps then
    /// cosine to 1e-6, clip 1.0, batch 1 × 8 accumulation; validation every 500 steps, a
    /// checkpoint every 1000 (last 3 kept), `best_model` by `sar_agreement` (higher is better)
    /// in the output directory, early stopping on it (patience 5, δ 1e-4).
    fn defaults() -> Vec<(String, Value)> {
        vec![
            ("training.batch_size".into(), Value::from(1u64)),
            ("training.gradient_accumulation_steps".into(), Value::from(8u64)),
            ("training.gradient_clip_norm".into(), Value::from(1.0)),
            ("training.val_every".into(), Value::from(500u64)),
            ("optimizer.lr".into(), Value::from(1e-4)),
            ("optimizer.weight_decay".into(), Value::from(1e-5)),
            ("optimizer.scheduler.name".into(), Value::from("cosine")),
            ("optimizer.scheduler.warmup_steps".into(), Value::from(500u64)),
            ("optimizer.scheduler.min_lr".into(), Value::from(1e-6)),
            ("checkpoint.every_n_steps".into(), Value::from(1000u64)),
            ("checkpoint.keep_last_n_steps".into(), Value::from(3u64)),
            ("checkpoint.export_best".into(), Value::from("best_model")),
            ("checkpoint.export_best_dir".into(), Value::from(".")),
            ("early_stopping.monitor".into(), Value::from("sar_agreement")),
            ("early_stopping.mode".into(), Value::from("max")),
            ("early_stopping.patience".into(), Value::from(5u64)),
            ("early_stopping.min_delta".into(), Value::from(1e-4)),
        ]
    }

    fn aliases() -> Vec<(String, String)> {
        stage3::config::ALIASES.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    type Task<B: AutodiffBackend> = Stage3Task<B>;

    fn task<B: AutodiffBackend>(config: &Stage3Config, device: &B::Device) -> Result<Stage3Task<B>, TrainError> {
        Stage3Task::<B>::new(config, device).map_err(|e| TrainError::Data(e.to_string()))
    }

    /// Seed 001's start-up lines.
    fn before_training<B: AutodiffBackend>(config: &Stage3Config, task: &Stage3Task<B>) {
        let (train, val) = task.sizes();
        let t = &config.training;
        eprintln!("{train} training tiles, {val} validation tiles");
        match task.stage2_source() {
            Stage2Source::Dir(d) => eprintln!("opt_v2: stage-2 estimates from {}", d.display()),
            Stage2Source::NoisyTruth { sigma, .. } => {
                eprintln!("opt_v2: PROXY noisy_truth (truth + N(0, {sigma}²), clipped) — not a stage-2 estimate")
            }
        }
        match (t.max_steps, t.epochs) {
            (Some(s), _) => eprintln!("Training from step 0 to {s} (min_steps {})...", t.min_steps),
            (None, Some(e)) => eprintln!("Training for {e} epochs..."),
            _ => {}
        }
        eprintln!(
            "Precision: {} (training.mixed_precision {}, amp_dtype {:?})",
            t.effective_precision().name(),
            t.mixed_precision,
            t.amp_dtype
        );
        eprintln!("Grounding passes (timesteps): {}", task.timesteps());
        let es = &config.early_stopping;
        if es.enabled {
            eprintln!("Early stopping on sar_agreement: patience={}, min_delta={}", es.patience, es.min_delta);
        }
        eprintln!("{}", "=".repeat(80));
    }

    /// Seed 001's closing block.
    fn after_training<B: AutodiffBackend>(
        _config: &Stage3Config,
        summary: RunSummary<stage3::Stage3Model<B>>,
    ) -> (StopReason, LoopState) {
        if let Some((step, best)) = summary.state.best {
            eprintln!("{}", "=".repeat(80));
            if let StopReason::Requested { .. } = &summary.reason {
                eprintln!("Early stopping triggered - training complete!");
            }
            eprintln!("Best SAR agreement: {best:.6} at step {step}");
            eprintln!("{}", "=".repeat(80));
        }
        (summary.reason, summary.state)
    }
}

fn main() -> ExitCode {
    cli::main::<Stage3>()
}
