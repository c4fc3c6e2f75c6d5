//! `stage1`: the SAR→optical generator (seed 000's `train_stage1.py`) on the shared trainer.
//!
//! `stage1 --config configs/train/stage1.lowvr.yaml --data-dir tiles/` trains, validates every
//! `validation.val_every` steps, keeps the top-K checkpoints by SAR-edge agreement, exports the
//! best model by validation loss and stops early when asked.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use stage1::{DataSection, LossSection, ModelSection, Stage1Config, Stage1Model, Stage1Task};
use trainer::cli::{self, Stage, set_if};
use trainer::{LoopState, RunSummary, StopReason, TrainError};

/// Flags of stage 1 (seed 000's names).
#[derive(Debug, Clone, Args)]
struct Stage1Args {
    /// `data.data_dir`: directory of NPZ tiles (with trainyard-tile's manifest.json for its splits).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `data.val_dir`: validate on every tile of this directory instead of the data's val split.
    #[arg(long, value_name = "DIR")]
    val_dir: Option<PathBuf>,
    /// `data.max_tiles`: train on at most N tiles.
    #[arg(long, value_name = "N")]
    max_tiles: Option<u64>,
    /// `model.timesteps`: DDIM steps of the refiner.
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

struct Stage1;

impl Stage for Stage1 {
    const NAME: &'static str = stage1::NAME;
    type Model = ModelSection;
    type Data = DataSection;
    type Loss = LossSection;
    type Args = Stage1Args;

    fn overrides(a: &Stage1Args) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        set_if(&mut o, "data.data_dir", a.data_dir.as_ref().map(|d| d.display().to_string()));
        set_if(&mut o, "data.val_dir", a.val_dir.as_ref().map(|d| d.display().to_string()));
        set_if(&mut o, "data.max_tiles", a.max_tiles);
        set_if(&mut o, "model.timesteps", a.timesteps);
        set_if(&mut o, "model.lora.rank", a.lora_rank);
        set_if(&mut o, "model.lora.alpha", a.lora_alpha);
        set_if(&mut o, "checkpoint.every_n_steps", a.save_every);
        o
    }

    /// Seed 000's stage-1 settings: AdamW lr 1e-4, weight decay 0.01, warm-up then cosine,
    /// clip 1.0, batch 1 × 8 accumulation; top-3 checkpoints by `sar_edge_agreement` (lower is
    /// better) in `checkpoints/top_k`, `best_model` by validation loss in the output directory,
    /// early stopping (when enabled) on `sar_edge_agreement`.
    fn defaults() -> Vec<(String, Value)> {
        vec![
            ("training.batch_size".into(), Value::from(1u64)),
            ("training.gradient_accumulation_steps".into(), Value::from(8u64)),
            ("training.gradient_clip_norm".into(), Value::from(1.0)),
            ("training.val_every".into(), Value::from(500u64)),
            ("optimizer.lr".into(), Value::from(1e-4)),
            ("optimizer.weight_decay".into(), Value::from(0.01)),
            ("optimizer.scheduler.name".into(), Value::from("cosine")),
            ("optimizer.scheduler.warmup_steps".into(), Value::from(100u64)),
            ("checkpoint.keep_top_k".into(), Value::from(3u64)),
            ("checkpoint.top_k_monitor".into(), Value::from("sar_edge_agreement")),
            ("checkpoint.top_k_mode".into(), Value::from("min")),
            ("checkpoint.export_best".into(), Value::from("best_model")),
            ("checkpoint.export_best_dir".into(), Value::from(".")),
            ("early_stopping.monitor".into(), Value::from("sar_edge_agreement")),
            ("early_stopping.mode".into(), Value::from("min")),
            ("early_stopping.min_delta".into(), Value::from(1e-4)),
        ]
    }

    fn aliases() -> Vec<(String, String)> {
        stage1::config::ALIASES.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    type Task<B: AutodiffBackend> = Stage1Task<B>;

    fn task<B: AutodiffBackend>(config: &Stage1Config, device: &B::Device) -> Result<Stage1Task<B>, TrainError> {
        Stage1Task::<B>::new(config, device).map_err(|e| TrainError::Data(e.to_string()))
    }

    /// Seed 000's start-up block.
    fn before_training<B: AutodiffBackend>(config: &Stage1Config, task: &Stage1Task<B>) {
        let (train, val) = task.sizes();
        let t = &config.training;
        eprintln!("{train} training tiles, {val} validation tiles");
        match (t.max_steps, t.epochs) {
            (Some(s), _) => eprintln!("Training from step 0 to {s}..."),
            (None, Some(e)) => eprintln!("Training for {e} epochs..."),
            _ => {}
        }
        let val_every = t.val_every.map_or("every epoch".to_string(), |v| format!("every {v} steps"));
        let save_every =
            config.checkpoint.every_n_steps.map_or("at validations".to_string(), |v| format!("every {v} steps"));
        eprintln!("Validation {val_every}, saving {save_every}");
        eprintln!("Initial timesteps: {}", task.timesteps());
        let es = &config.early_stopping;
        if es.enabled {
            eprintln!("Early stopping: patience={}, min_delta={}", es.patience, es.min_delta);
        }
        if config.checkpoint.keep_top_k > 0 {
            eprintln!("Top-{} checkpoint management enabled", config.checkpoint.keep_top_k);
        }
        eprintln!("{}", "=".repeat(80));
    }

    /// Writes the merged generator (`base_model.safetensors`) and seed 000's closing block.
    fn after_training<B: AutodiffBackend>(
        config: &Stage1Config,
        summary: RunSummary<Stage1Model<B>>,
    ) -> (StopReason, LoopState) {
        let base = config.output_dir.join(stage1::BASE_EXPORT);
        if let Err(e) = stage1::export_base(summary.model, &base) {
            tracing::warn!("could not write the merged generator {}: {e}", base.display());
        }
        if let StopReason::Requested { .. } = &summary.reason
            && let Some((step, best)) = summary.state.best
        {
            eprintln!("{}", "=".repeat(80));
            eprintln!("Early stopping triggered - training complete!");
            eprintln!("Best validation loss: {best:.6} at step {step}");
            eprintln!("{}", "=".repeat(80));
        }
        (summary.reason, summary.state)
    }
}

fn main() -> ExitCode {
    cli::main::<Stage1>()
}
