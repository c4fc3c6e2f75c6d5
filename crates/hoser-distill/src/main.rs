//! `hoser-distill`: HOSER distilled from an LM-TAD teacher.
//!
//! - `hoser-distill --dataset NAME --seed S [--teacher DIR] [--config FILE]` trains HOSER with the
//!   distillation term (outputs in `save/{dataset}/seed{seed}_distill/`); re-running the same
//!   command resumes from `checkpoint_latest`.
//! - `hoser-distill teacher --dataset NAME [--config FILE]` trains LM-TAD on the dataset's
//!   trajectories (outputs in `save/{dataset}/lmtad/`).
//! - `hoser-distill teacher-score --teacher DIR --trajectories FILE --out FILE` writes each
//!   trajectory's log-perplexity (and, with `--steps-out`, per-step surprisal).
//! - `hoser-distill teacher-map --teacher DIR --dataset NAME` writes the token map an imported
//!   upstream teacher needs.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Subcommand};
use figment::value::Value;
use hoser::data::{DatasetFiles, RoadNetwork};
use hoser::lmtad::teacher::{MODEL_CONFIG_FILE, TOKEN_MAP_FILE};
use hoser::lmtad::tokens::{DEFAULT_CELL_DEG, TokenMap};
use hoser::lmtad::weights::UpstreamModelConfig;
use hoser_distill::distill::{self, DistillConfig, DistillData, DistillLoss, DistillTask};
use hoser_distill::score::{ScoreOptions, score};
use hoser_distill::teacher::{self, TeacherConfig, TeacherData, TeacherModel, TeacherTask};
use hoser_vanilla::ModelSection;
use trainer::TrainError;
use trainer::backend::{BackendRun, DeviceSpec, run_on};
use trainer::cli::{self, CommonArgs, Stage, set_if};
use trainer::config::NoSection;
use trainer::train::{LoopState, RunSummary, StopReason};

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Extra {
    /// Train the LM-TAD teacher on a dataset's train split (validated on val) through the shared
    /// trainer; every flag of a stage binary applies. Outputs in save/{dataset}/lmtad/.
    Teacher(TeacherCli),
    /// Score trajectories with a teacher: per-trajectory log-perplexity (LM-TAD's anomaly score)
    /// and, with --steps-out, per-step surprisal, as CSV.
    TeacherScore(ScoreArgs),
    /// Write the token map of a dataset into a teacher directory (for a teacher imported from
    /// upstream with scripts/pth_to_safetensors.py, which has weights and model_config.json only).
    TeacherMap(MapArgs),
}

#[derive(Debug, Args)]
struct TeacherCli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stage: TeacherArgs,
}

/// Flags of the teacher stage.
#[derive(Debug, Clone, Args)]
struct TeacherArgs {
    /// `data.dataset`: dataset name (default data directory `data/<NAME>`).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// `data.data_dir`: directory of the LibCity files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScoreArgs {
    /// Teacher directory (teacher.safetensors, model_config.json, token_map.json).
    #[arg(long, value_name = "DIR")]
    teacher: PathBuf,
    /// LibCity trajectory CSV (column rid_list).
    #[arg(long, value_name = "FILE")]
    trajectories: PathBuf,
    /// Per-trajectory CSV to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Per-step CSV to write.
    #[arg(long, value_name = "FILE")]
    steps_out: Option<PathBuf>,
    /// Dataset the trajectories belong to (checked against the teacher's token map).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64, value_name = "N")]
    batch_size: usize,
    /// cpu, wgpu[:N] or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Args)]
struct MapArgs {
    /// Teacher directory to write token_map.json into.
    #[arg(long, value_name = "DIR")]
    teacher: PathBuf,
    /// Dataset name, recorded in the map.
    #[arg(long, value_name = "NAME")]
    dataset: String,
    /// Directory of roadmap.geo and roadmap.rel (default data/<NAME>).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Grid cell size in degrees.
    #[arg(long, default_value_t = DEFAULT_CELL_DEG, value_name = "DEG")]
    cell_deg: f64,
    /// Replace an existing token_map.json.
    #[arg(long)]
    overwrite: bool,
}

struct TeacherStage;

impl Stage for TeacherStage {
    const NAME: &'static str = teacher::NAME;
    type Model = TeacherModel;
    type Data = TeacherData;
    type Loss = NoSection;
    type Args = TeacherArgs;

    fn overrides(args: &TeacherArgs) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        set_if(&mut o, "data.dataset", args.dataset.clone());
        set_if(&mut o, "data.data_dir", args.data_dir.as_ref().map(|d| d.display().to_string()));
        o
    }

    /// LM-TAD's training script (§3.3 of the reference): batch 32, AdamW lr 3e-4, betas (0.9, 0.95)
    /// (the script's (0.9, 0.9) comes from a typo passing beta1 as beta2; set
    /// `optimizer.betas: [0.9, 0.9]` to reproduce it), weight decay 0.1 on matrices only, linear
    /// warm-up then cosine to min_lr 3e-5, gradient-norm clip 1.0. Outputs in
    /// `save/{dataset}/lmtad/`, rolling `checkpoint_latest`, the best by validation perplexity
    /// exported as `best.safetensors` beside the teacher files.
    fn defaults() -> Vec<(String, Value)> {
        vec![
            ("output_dir".into(), Value::from("save/{dataset}/lmtad")),
            ("training.batch_size".into(), Value::from(32u64)),
            ("training.gradient_clip_norm".into(), Value::from(1.0)),
            ("optimizer.lr".into(), Value::from(3e-4)),
            ("optimizer.betas".into(), Value::from(vec![0.9, 0.95])),
            ("optimizer.weight_decay".into(), Value::from(0.1)),
            ("optimizer.weight_decay_params".into(), Value::from("matrices")),
            ("optimizer.scheduler.name".into(), Value::from("cosine")),
            ("optimizer.scheduler.warmup_ratio".into(), Value::from(0.083)),
            ("optimizer.scheduler.min_lr".into(), Value::from(3e-5)),
            ("checkpoint.export_best".into(), Value::from("best")),
            ("checkpoint.export_best_dir".into(), Value::from(".")),
        ]
    }

    /// `--dataset NAME` without `--config` reads `configs/lmtad/NAME.yaml` when it exists.
    fn config_file(args: &TeacherArgs) -> Option<PathBuf> {
        let path = PathBuf::from("configs/lmtad").join(format!("{}.yaml", args.dataset.as_deref()?));
        path.is_file().then_some(path)
    }

    fn output_dir_vars(config: &TeacherConfig) -> Vec<(&'static str, String)> {
        vec![("dataset", config.data.dataset.clone())]
    }

    type Task<B: AutodiffBackend> = TeacherTask;

    fn task<B: AutodiffBackend>(config: &TeacherConfig, _device: &B::Device) -> Result<TeacherTask, TrainError> {
        teacher::check_no_foreign_teacher(config).map_err(|e| TrainError::Data(e.to_string()))?;
        TeacherTask::new(config).map_err(|e| TrainError::Data(e.to_string()))
    }

    fn after_training<B: AutodiffBackend>(
        config: &TeacherConfig,
        summary: RunSummary<hoser::lmtad::model::LmTad<B>>,
    ) -> (StopReason, LoopState) {
        // Only the roadmap is read again (the map is a function of it and the grid).
        match teacher::token_map(config) {
            Ok((_, map)) => match teacher::export_teacher(config, &map, summary.model) {
                Ok(path) => {
                    eprintln!("teacher written to {} (+ {MODEL_CONFIG_FILE}, {TOKEN_MAP_FILE})", path.display())
                }
                Err(e) => eprintln!("{}: could not write the teacher files: {e}", teacher::NAME),
            },
            Err(e) => eprintln!("{}: could not write the teacher files: {e}", teacher::NAME),
        }
        if let Some((tokens, secs)) = teacher::throughput(&config.logging.paths(&config.output_dir).jsonl) {
            eprintln!(
                "training throughput: {:.0} target tokens/s ({tokens:.0} tokens in {secs:.1} s of optimizer steps)",
                tokens / secs
            );
        }
        (summary.reason, summary.state)
    }
}

struct ScoreWork<'a>(&'a ScoreOptions);

impl BackendRun for ScoreWork<'_> {
    type Output = Result<usize, hoser_distill::score::ScoreError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output {
        tracing::info!("backend: {name}");
        Ok(score::<B::InnerBackend>(self.0, &device)?.len())
    }
}

fn teacher_score(a: ScoreArgs) -> ExitCode {
    let device: DeviceSpec = match a.device.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("teacher-score --device: {e}");
            return ExitCode::from(2);
        }
    };
    if a.batch_size == 0 {
        eprintln!("teacher-score --batch-size: expected at least 1");
        return ExitCode::from(2);
    }
    let opts = ScoreOptions {
        teacher: a.teacher,
        trajectories: a.trajectories,
        out: a.out,
        steps_out: a.steps_out,
        batch_size: a.batch_size,
        overwrite: a.overwrite,
        dataset: a.dataset,
    };
    match run_on(device, ScoreWork(&opts)) {
        Ok(Ok(n)) => {
            println!("scored {n} trajectories: {}", opts.out.display());
            if let Some(steps) = &opts.steps_out {
                println!("per-step surprisal: {}", steps.display());
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("teacher-score: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("teacher-score: {e}");
            ExitCode::from(2)
        }
    }
}

fn teacher_map(a: MapArgs) -> ExitCode {
    let run = || -> anyhow::Result<String> {
        use anyhow::Context as _;
        let path = a.teacher.join(TOKEN_MAP_FILE);
        if path.exists() && !a.overwrite {
            anyhow::bail!("{}: already exists; pass --overwrite to replace it", path.display());
        }
        let dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from("data").join(&a.dataset));
        let files = DatasetFiles::in_dir(&dir);
        let network =
            RoadNetwork::read(&files.geo, &files.rel).with_context(|| format!("reading {}", dir.display()))?;
        let map = TokenMap::build(&a.dataset, &files.geo, &network, a.cell_deg)?;
        let config_path = a.teacher.join(MODEL_CONFIG_FILE);
        if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).with_context(|| config_path.display().to_string())?;
            let upstream: UpstreamModelConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: not an LM-TAD model_config", config_path.display()))?;
            if upstream.vocab_size != map.vocab_size() {
                anyhow::bail!(
                    "{}: vocab_size {} but {} on a {}° grid gives {} tokens ({}x{} cells + PAD, EOT, SOT): the teacher \
                     was not trained on this dataset with this grid",
                    config_path.display(),
                    upstream.vocab_size,
                    a.dataset,
                    a.cell_deg,
                    map.vocab_size(),
                    map.grid().rows,
                    map.grid().cols
                );
            }
        }
        std::fs::create_dir_all(&a.teacher).with_context(|| a.teacher.display().to_string())?;
        map.save(&path)?;
        Ok(format!("{}: {} roads, vocabulary {}", path.display(), map.num_roads(), map.vocab_size()))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("teacher-map: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Flags of the distilled run.
#[derive(Debug, Clone, Args)]
struct DistillArgs {
    /// `data.dataset`: dataset name (default data directory `data/<NAME>`, teacher
    /// `save/<NAME>/lmtad`).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// `data.data_dir`: directory of the LibCity files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// `distill.teacher`: the teacher directory (teacher.safetensors, model_config.json, token_map.json).
    #[arg(long, value_name = "DIR")]
    teacher: Option<PathBuf>,
}

struct DistillStage;

impl Stage for DistillStage {
    const NAME: &'static str = distill::NAME;
    type Model = ModelSection;
    type Data = DistillData;
    type Loss = DistillLoss;
    type Args = DistillArgs;

    fn overrides(args: &DistillArgs) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        set_if(&mut o, "data.dataset", args.dataset.clone());
        set_if(&mut o, "data.data_dir", args.data_dir.as_ref().map(|d| d.display().to_string()));
        set_if(&mut o, "data.teacher", args.teacher.as_ref().map(|d| d.display().to_string()));
        o
    }

    /// hoser-vanilla's settings (upstream `train.py`: AdamW lr 1e-3, weight decay 0.1, warm-up
    /// 10 % then cosine, clip 1.0, batch 256) and seed 002's layout for distillation:
    /// `save/{dataset}/seed{seed}_distill/` with a rolling `checkpoint_latest`, the last epoch's
    /// `epoch_N` (the fallback when `checkpoint_latest` is unreadable) and `best` (weights of the best
    /// epoch by validation next-step accuracy); `log/…_distill`, `tensorboard_log/…_distill`;
    /// re-running the same command resumes (`resume.auto: true`).
    fn defaults() -> Vec<(String, Value)> {
        vec![
            ("output_dir".into(), Value::from("save/{dataset}/seed{seed}_distill")),
            ("logging.log_dir".into(), Value::from("log/{dataset}/seed{seed}_distill")),
            ("logging.tensorboard_dir".into(), Value::from("tensorboard_log/{dataset}/seed{seed}_distill")),
            ("checkpoint.dir".into(), Value::from(".")),
            ("checkpoint.latest".into(), Value::from(true)),
            ("checkpoint.per_epoch".into(), Value::from(true)),
            ("checkpoint.keep_last_n_epochs".into(), Value::from(1u64)),
            ("checkpoint.export_best".into(), Value::from("best")),
            ("resume.auto".into(), Value::from(true)),
        ]
        .into_iter()
        .chain(hoser_vanilla::upstream_training_defaults())
        .collect()
    }

    fn aliases() -> Vec<(String, String)> {
        distill::aliases()
    }

    /// `--dataset NAME` without `--config` reads hoser-vanilla's `configs/hoser/NAME.yaml` when it
    /// exists, so a distilled run has the same budget as the vanilla one.
    fn config_file(args: &DistillArgs) -> Option<PathBuf> {
        hoser_vanilla::dataset_config_file(args.dataset.as_deref())
    }

    fn output_dir_vars(config: &DistillConfig) -> Vec<(&'static str, String)> {
        vec![("dataset", config.data.dataset.clone())]
    }

    type Task<B: AutodiffBackend> = DistillTask<B>;

    fn task<B: AutodiffBackend>(config: &DistillConfig, device: &B::Device) -> Result<DistillTask<B>, TrainError> {
        DistillTask::new(config, device).map_err(|e| TrainError::Data(e.to_string()))
    }
}

fn main() -> ExitCode {
    cli::main_with::<DistillStage, Extra>(|x| match x {
        Extra::Teacher(c) => cli::run_stage::<TeacherStage>(&c.common, &c.stage),
        Extra::TeacherScore(a) => teacher_score(a),
        Extra::TeacherMap(a) => teacher_map(a),
    })
}
