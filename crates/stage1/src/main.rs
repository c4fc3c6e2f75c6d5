//! `stage1`: the SAR→optical generator (seed 000's `train_stage1.py`) on the shared trainer.
//!
//! `stage1 --config configs/train/stage1.lowvr.yaml --data-dir tiles/` trains, validates every
//! `validation.val_every` steps, keeps the top-K checkpoints by SAR-edge agreement, exports the
//! best model by validation loss and stops early when asked.
//!
//! `stage1 predict --weights RUN/best_model.safetensors --data-dir tiles --out DIR` writes the
//! run's prediction for every tile as its stage-2 estimate (`DIR/<tile>.npz`, array `opt_v2`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use figment::value::Value;
use stage1::predict::{PredictError, PredictOptions, SplitFilter};
use stage1::{DataSection, LossSection, ModelSection, Stage1Config, Stage1Model, Stage1Task};
use trainer::backend::{BackendRun, DeviceSpec, run_on};
use trainer::cli::{self, CommonArgs, Stage, set_if};
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

/// Subcommands of stage 1 besides training and `lr-find`.
#[derive(Debug, Subcommand)]
enum Stage1Command {
    /// Write stage 1's prediction for every tile as its stage-2 estimate: DIR/<tile>.npz with
    /// one array opt_v2 (4, H, W) in reflectance, plus DIR/predict.json (where they came from).
    Predict(PredictArgs),
}

/// Flags of `stage1 predict`.
#[derive(Debug, Clone, Args)]
struct PredictArgs {
    /// The run's weights export (e.g. RUN/best_model.safetensors).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Directory of NPZ tiles (manifest order when it has a manifest.json).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Where the estimates go (not the tile directory).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The stage-1 config the weights were trained with (default: config.yaml next to --weights).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tiles per forward pass.
    #[arg(long, default_value_t = 8, value_name = "N")]
    batch_size: usize,
    /// DDIM steps of the refiner (default: the config's model.timesteps).
    #[arg(long, value_name = "K")]
    timesteps: Option<u64>,
    /// Predict the tiles of one split only (manifest or sidecar split).
    #[arg(long, value_enum, default_value_t = SplitFilter::All)]
    split: SplitFilter,
    /// Replace estimates (and predict.json) that exist.
    #[arg(long)]
    overwrite: bool,
    /// cpu, wgpu[:N] or cuda[:N] (default: the config's device).
    #[arg(long)]
    device: Option<String>,
}

/// The training command line, parsed from the flags `predict` implies, so the model config
/// is loaded exactly as training loads it (file, aliases, stage defaults, environment).
#[derive(Debug, Parser)]
struct ConfigFlags {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stage: Stage1Args,
}

/// The config `predict` builds the model from: `--config`, else `config.yaml` next to the weights.
fn predict_config(a: &PredictArgs) -> Result<(Stage1Config, PathBuf), String> {
    let default = a.weights.parent().unwrap_or(Path::new(".")).join(trainer::train::RESOLVED_CONFIG);
    let path = match &a.config {
        Some(c) if c.is_file() => c.clone(),
        Some(c) => return Err(format!("--config {}: no such file (expected a stage-1 config)", c.display())),
        None if default.is_file() => default,
        None => {
            return Err(format!(
                "no stage-1 config for {}: {} does not exist (every run writes one next to its weights); \
                 pass --config FILE",
                a.weights.display(),
                default.display()
            ));
        }
    };
    let mut flags: Vec<std::ffi::OsString> = vec!["stage1".into(), "--config".into(), path.clone().into()];
    flags.extend(["--data-dir".into(), a.data_dir.clone().into_os_string()]);
    // Keys a finished run's config may name that prediction does not read, and whose files
    // need not exist any more: the base (the weights hold it), resume sources, the validation
    // directory and LPIPS weights.
    for set in ["model.pretrained=null", "resume.path=null", "resume.auto=false", "data.val_dir=null"] {
        flags.extend(["--set".into(), set.into()]);
    }
    flags.extend(["--set".into(), "loss.lpips_weight=0".into()]);
    if let Some(k) = a.timesteps {
        flags.extend(["--timesteps".into(), k.to_string().into()]);
        // The floor of out-of-memory recovery during training does not apply to prediction.
        if k >= 1 {
            flags.extend(["--set".into(), format!("model.min_timesteps={k}").into()]);
        }
    }
    if let Some(d) = &a.device {
        flags.extend(["--device".into(), d.into()]);
    }
    let parsed = ConfigFlags::try_parse_from(flags).map_err(|e| e.to_string())?;
    let config = cli::load_config::<Stage1>(&parsed.common, &parsed.stage)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    Ok((config, path))
}

struct PredictWork<'a> {
    config: &'a Stage1Config,
    options: &'a PredictOptions,
}

impl BackendRun for PredictWork<'_> {
    type Output = Result<stage1::predict::PredictRecord, PredictError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output {
        tracing::info!("backend: {name}");
        let progress = Progress::new();
        stage1::predict::run::<B::InnerBackend>(self.config, self.options, &device, |done, total| {
            progress.update(done, total)
        })
    }
}

/// Tiles/s on stderr: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} tiles {per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self { bar, start: Instant::now() }
    }

    fn update(&self, done: usize, total: usize) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                if done == total {
                    bar.finish_and_clear();
                }
            }
            None => {
                let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                eprintln!("predicted {done}/{total} tiles ({rate:.2} tiles/s)");
            }
        }
    }
}

/// `stage1 predict`: exit 0 when every estimate is written, 2 on bad flags, config, weights
/// or tiles, 1 when predicting or writing fails.
fn predict_main(a: PredictArgs) -> ExitCode {
    let (config, config_path) = match predict_config(&a) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("stage1 predict: {message}");
            return ExitCode::from(2);
        }
    };
    let options = PredictOptions {
        weights: a.weights.clone(),
        config_path,
        data_dir: a.data_dir.clone(),
        out: a.out.clone(),
        batch_size: a.batch_size,
        split: a.split,
        overwrite: a.overwrite,
    };
    let device: DeviceSpec = match config.device.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("stage1 predict: device: {e}");
            return ExitCode::from(2);
        }
    };
    match run_on(device, PredictWork { config: &config, options: &options }) {
        Ok(Ok(record)) => {
            eprintln!(
                "wrote {} estimates (opt_v2, timesteps {}) to {}",
                record.tiles,
                record.timesteps,
                options.out.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("stage1 predict: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("stage1 predict: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    cli::main_with::<Stage1, Stage1Command>(|command| match command {
        Stage1Command::Predict(a) => predict_main(a),
    })
}
