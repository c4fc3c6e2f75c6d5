//! The command line every stage binary shares: config loading with precedence,
//! `--print-config`, `--validate-config`, device selection, and exit codes.
//!
//! Exit codes: 0 success, 1 the run failed, 2 bad configuration or usage,
//! 130 / 143 interrupted by SIGINT / SIGTERM after saving.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use figment::value::Value;
use schedulers::finder::{FinderConfig, SweepMode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{BackendError, BackendRun, DeviceSpec, compiled_backends, run_on};
use crate::config::{self, ConfigErrors, ConfigProblem, ConfigSources, RunConfig, Validate};
use crate::interrupt::Interrupts;
use crate::lr_find::{LrFindOptions, LrFindOutcome};
use crate::policy::StopPolicy;
use crate::task::Task;
use crate::train::{LoopState, RunSummary, StopReason, TrainError, Trainer};
use crate::tune_cli::{TrialArgs, TuneArgs};

/// The full config type of stage `S`.
pub type StageConfig<S> = RunConfig<<S as Stage>::Model, <S as Stage>::Data, <S as Stage>::Loss>;

/// A config section type: serialisable, defaulted, validated.
pub trait Section: Serialize + DeserializeOwned + Default + Validate + Clone + std::fmt::Debug + 'static {}
impl<T: Serialize + DeserializeOwned + Default + Validate + Clone + std::fmt::Debug + 'static> Section for T {}

/// What a stage binary plugs into the shared command line.
pub trait Stage {
    /// Stage name (used for the default output directory).
    const NAME: &'static str;
    /// `model:` section.
    type Model: Section;
    /// `data:` section.
    type Data: Section;
    /// `loss:` section.
    type Loss: Section;
    /// Stage-specific flags.
    type Args: Args + Clone;

    /// Dotted-key overrides from the stage's own flags.
    fn overrides(args: &Self::Args) -> Vec<(String, Value)>;

    /// The stage's defaults (dotted keys), layered over the built-in defaults and below the
    /// config file, e.g. the reference optimiser settings of a model.
    fn defaults() -> Vec<(String, Value)> {
        Vec::new()
    }

    /// Aliases of config-file keys, `(written, native)` dotted prefixes (see
    /// [`ConfigSources::aliases`]): lets a stage's file keep the section layout of the script
    /// it replaces (`training.steps`, `system.seed`, ...).
    fn aliases() -> Vec<(String, String)> {
        Vec::new()
    }

    /// The config file to read when no `--config` is given (e.g. `configs/hoser/<dataset>.yaml`
    /// for `--dataset NAME`, as upstream scripts pick `config/<dataset>.yaml`). `None` reads none.
    fn config_file(_args: &Self::Args) -> Option<PathBuf> {
        None
    }

    /// Values for `{name}` placeholders in `output_dir` (and `logging.log_dir`,
    /// `logging.tensorboard_dir`) besides `{seed}` and `{stage}`
    /// (e.g. `{dataset}`), read from the loaded config.
    fn output_dir_vars(_config: &RunConfig<Self::Model, Self::Data, Self::Loss>) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The stage's task on backend `B`.
    type Task<B: AutodiffBackend>: Task<B>;

    /// Builds the task on backend `B` (reads and checks the data): the one place a stage
    /// turns its config into a task, for training and `lr-find` alike.
    fn task<B: AutodiffBackend>(
        config: &RunConfig<Self::Model, Self::Data, Self::Loss>,
        device: &B::Device,
    ) -> Result<Self::Task<B>, TrainError>;

    /// Runs once the task is built, before the loop starts (e.g. the stage's start-up lines).
    fn before_training<B: AutodiffBackend>(
        _config: &RunConfig<Self::Model, Self::Data, Self::Loss>,
        _task: &Self::Task<B>,
    ) {
    }

    /// What the stage does with a finished run (e.g. exporting a merged model); returns why
    /// and where the run ended.
    fn after_training<B: AutodiffBackend>(
        _config: &RunConfig<Self::Model, Self::Data, Self::Loss>,
        summary: RunSummary<<Self::Task<B> as Task<B>>::Model>,
    ) -> (StopReason, LoopState) {
        (summary.reason, summary.state)
    }
}

/// Builds stage `S`'s task and trains it on backend `B`.
pub fn train<S: Stage, B: AutodiffBackend>(
    config: &StageConfig<S>,
    device: &B::Device,
    interrupts: Interrupts,
) -> Result<(StopReason, LoopState), TrainError> {
    train_with::<S, B>(config, device, interrupts, None::<crate::early_stopping::EarlyStopping>)
}

/// [`train`] with one more stop policy (e.g. the study reporter of a `tune` trial).
pub fn train_with<S: Stage, B: AutodiffBackend>(
    config: &StageConfig<S>,
    device: &B::Device,
    interrupts: Interrupts,
    policy: Option<impl StopPolicy>,
) -> Result<(StopReason, LoopState), TrainError> {
    let task = S::task::<B>(config, device)?;
    S::before_training::<B>(config, &task);
    let mut trainer = Trainer::new(config.loop_config()).interrupts(interrupts);
    if let Some(policy) = policy {
        trainer = trainer.policy(policy);
    }
    let summary = trainer.run::<B, _>(&task, device)?;
    Ok(S::after_training::<B>(config, summary))
}

/// Builds stage `S`'s task and runs the LR range test on backend `B`.
pub fn lr_find<S: Stage, B: AutodiffBackend>(
    config: &StageConfig<S>,
    device: &B::Device,
    options: &LrFindOptions,
) -> Result<LrFindOutcome, TrainError> {
    let task = S::task::<B>(config, device)?;
    Trainer::new(config.loop_config()).lr_find::<B, _>(&task, device, options)
}

/// Pushes the override `key = value` when a stage flag was given (for [`Stage::overrides`]).
pub fn set_if<T: Into<Value>>(overrides: &mut Vec<(String, Value)>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        overrides.push((key.to_string(), v.into()));
    }
}

/// Flags every stage binary accepts. Each sets the config key named in its help.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// YAML config file (overrides built-in defaults; environment and flags override it).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `device`: cpu, wgpu[:N] or cuda[:N].
    #[arg(long)]
    pub device: Option<String>,
    /// `output_dir`: where the run writes telemetry, its resolved config and checkpoints.
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// `training.max_steps` (also clears `training.epochs`; not with `--epochs`).
    #[arg(long, visible_alias = "steps", value_name = "N", conflicts_with = "epochs")]
    pub max_steps: Option<u64>,
    /// `training.epochs` (also clears `training.max_steps`).
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// `training.min_steps`.
    #[arg(long, value_name = "N")]
    pub min_steps: Option<u64>,
    /// `training.batch_size`.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// `training.gradient_accumulation_steps`.
    #[arg(long, visible_alias = "grad-accum", value_name = "N")]
    pub gradient_accumulation_steps: Option<usize>,
    /// `training.gradient_clip_norm`.
    #[arg(long, value_name = "NORM")]
    pub gradient_clip_norm: Option<f64>,
    /// `training.val_every`.
    #[arg(long, value_name = "N")]
    pub val_every: Option<u64>,
    /// `optimizer.lr`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// `optimizer.scheduler.name`: constant, step, multistep, exponential, polynomial, cosine,
    /// onecycle, cyclical, sgdr, plateau or sequential.
    #[arg(long, visible_alias = "scheduler", value_name = "NAME")]
    pub lr_schedule: Option<String>,
    /// `optimizer.scheduler.warmup_steps`: linear warm-up before the schedule.
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// `optimizer.scheduler.pct_start` of onecycle (default 0.3).
    #[arg(long, value_name = "FRACTION")]
    pub onecycle_pct_start: Option<f64>,
    /// `optimizer.scheduler.div_factor` of onecycle: initial LR = lr / div_factor (default 25).
    #[arg(long, value_name = "FACTOR")]
    pub onecycle_div_factor: Option<f64>,
    /// `optimizer.scheduler.cyclical_mode`: triangular, triangular2 or exp_range.
    #[arg(long, value_name = "MODE")]
    pub cyclical_mode: Option<String>,
    /// `optimizer.scheduler.t_0` of sgdr: length of the first cycle, in schedule indices.
    #[arg(long, value_name = "N")]
    pub sgdr_cycle_length: Option<u64>,
    /// `resume.path`: resume from this checkpoint file.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// `resume.auto: true`: resume from the newest valid checkpoint in the output directory, if any.
    #[arg(long)]
    pub auto_resume: bool,
    /// `resume.on_mismatch`: `refuse` (default) or `fresh` (archive the old run and start over).
    #[arg(long, value_name = "refuse|fresh")]
    pub on_mismatch: Option<String>,
    /// `checkpoint.keep_top_k`: keep the K best checkpoints (0 disables).
    #[arg(long, value_name = "K")]
    pub keep_top_k: Option<u64>,
    /// `early_stopping.enabled: true`.
    #[arg(long)]
    pub early_stopping: bool,
    /// `early_stopping.patience` (validations without improvement); enables early stopping.
    #[arg(long, visible_alias = "patience", value_name = "N")]
    pub early_stopping_patience: Option<u64>,
    /// `early_stopping.min_delta` (absolute); enables early stopping.
    #[arg(long, visible_alias = "early-stop-min-delta", value_name = "DELTA")]
    pub early_stopping_min_delta: Option<f64>,
    /// `early_stopping.min_delta_percent`; enables early stopping.
    #[arg(long, value_name = "PERCENT")]
    pub early_stop_min_delta_percent: Option<f64>,
    /// `early_stopping.warmup` (validations before a patience stop); enables early stopping.
    #[arg(long, value_name = "N")]
    pub early_stop_warmup: Option<u64>,
    /// `early_stopping.lr_threshold`; enables early stopping.
    #[arg(long, value_name = "LR")]
    pub early_stop_lr_threshold: Option<f64>,
    /// `early_stopping.divergence_factor` (stop when k× worse than the best); enables early stopping.
    #[arg(long, value_name = "K")]
    pub early_stop_divergence_threshold: Option<f64>,
    /// `early_stopping.restore_best_weights: true`.
    #[arg(long)]
    pub restore_best_weights: bool,
    /// `spike_guard.grad_norm_threshold` (seed 004 `grad_spike_threshold`).
    #[arg(long, value_name = "NORM")]
    pub grad_spike_threshold: Option<f64>,
    /// `spike_guard.grad_norm_patience` (seed 004 `grad_spike_patience`).
    #[arg(long, value_name = "STEPS")]
    pub grad_spike_patience: Option<u64>,
    /// `ema.enabled: true`: keep an exponential moving average of the weights.
    #[arg(long)]
    pub model_ema: bool,
    /// `ema.decay` (also enables the EMA).
    #[arg(long, visible_alias = "model-ema-decay", value_name = "DECAY")]
    pub ema_decay: Option<f64>,
    /// `ema.warmup: true`: timm's decay warm-up (also enables the EMA).
    #[arg(long)]
    pub model_ema_warmup: bool,
    /// `swa.enabled: true`: stochastic weight averaging.
    #[arg(long)]
    pub swa: bool,
    /// `swa.swa_lr` (also enables SWA).
    #[arg(long, value_name = "LR")]
    pub swa_lr: Option<f64>,
    /// `swa.start`: fraction of the run (0.8) or a step number (also enables SWA).
    #[arg(long, value_name = "FRACTION|STEP")]
    pub swa_start: Option<f64>,
    /// `debug.detect_anomaly: true`: check every loss component for NaN/Inf at every step.
    #[arg(long)]
    pub detect_anomaly: bool,
    /// `debug.overfit_single_batch: true`.
    #[arg(long)]
    pub overfit_single_batch: bool,
    /// Set any key: `--set optimizer.scheduler.name=cosine` (value read as YAML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = config::parse_set_flag)]
    pub set: Vec<(String, Value)>,
    /// Print the merged configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration, report every problem, and exit (non-zero if any).
    #[arg(long)]
    pub validate_config: bool,
}

impl CommonArgs {
    /// The dotted-key overrides these flags stand for, in a fixed order.
    pub fn overrides(&self) -> Vec<(String, Value)> {
        let mut o: Vec<(String, Value)> = Vec::new();
        let mut put = |k: &str, v: Value| o.push((k.to_string(), v));
        if let Some(d) = &self.device {
            put("device", Value::from(d.clone()));
        }
        if let Some(d) = &self.output_dir {
            put("output_dir", Value::from(d.display().to_string()));
        }
        if let Some(s) = self.seed {
            put("seed", Value::from(s));
        }
        if let Some(s) = self.max_steps {
            put("training.max_steps", Value::from(s));
            put("training.epochs", config::null());
        }
        if let Some(e) = self.epochs {
            put("training.epochs", Value::from(e));
            put("training.max_steps", config::null());
        }
        if let Some(s) = self.min_steps {
            put("training.min_steps", Value::from(s));
        }
        if let Some(b) = self.batch_size {
            put("training.batch_size", Value::from(b as u64));
        }
        if let Some(a) = self.gradient_accumulation_steps {
            put("training.gradient_accumulation_steps", Value::from(a as u64));
        }
        if let Some(c) = self.gradient_clip_norm {
            put("training.gradient_clip_norm", Value::from(c));
        }
        if let Some(v) = self.val_every {
            put("training.val_every", Value::from(v));
        }
        if let Some(lr) = self.lr {
            put("optimizer.lr", Value::from(lr));
        }
        for (key, v) in [
            ("name", self.lr_schedule.clone().map(Value::from)),
            ("warmup_steps", self.warmup_steps.map(Value::from)),
            ("pct_start", self.onecycle_pct_start.map(Value::from)),
            ("div_factor", self.onecycle_div_factor.map(Value::from)),
            ("cyclical_mode", self.cyclical_mode.clone().map(Value::from)),
            ("t_0", self.sgdr_cycle_length.map(Value::from)),
        ] {
            if let Some(v) = v {
                put(&format!("optimizer.scheduler.{key}"), v);
            }
        }
        if let Some(p) = &self.resume {
            put("resume.path", Value::from(p.display().to_string()));
        }
        if self.auto_resume {
            put("resume.auto", Value::from(true));
        }
        if let Some(m) = &self.on_mismatch {
            put("resume.on_mismatch", Value::from(m.clone()));
        }
        if let Some(k) = self.keep_top_k {
            put("checkpoint.keep_top_k", Value::from(k));
        }
        let mut early = self.early_stopping;
        for (key, v) in [
            ("patience", self.early_stopping_patience.map(Value::from)),
            ("min_delta", self.early_stopping_min_delta.map(Value::from)),
            ("min_delta_percent", self.early_stop_min_delta_percent.map(Value::from)),
            ("warmup", self.early_stop_warmup.map(Value::from)),
            ("lr_threshold", self.early_stop_lr_threshold.map(Value::from)),
            ("divergence_factor", self.early_stop_divergence_threshold.map(Value::from)),
        ] {
            if let Some(v) = v {
                put(&format!("early_stopping.{key}"), v);
                early = true;
            }
        }
        if early {
            put("early_stopping.enabled", Value::from(true));
        }
        if self.restore_best_weights {
            put("early_stopping.restore_best_weights", Value::from(true));
        }
        if let Some(t) = self.grad_spike_threshold {
            put("spike_guard.grad_norm_threshold", Value::from(t));
        }
        if let Some(n) = self.grad_spike_patience {
            put("spike_guard.grad_norm_patience", Value::from(n));
        }
        if let Some(d) = self.ema_decay {
            put("ema.decay", Value::from(d));
        }
        if self.model_ema_warmup {
            put("ema.warmup", Value::from(true));
        }
        if self.model_ema || self.ema_decay.is_some() || self.model_ema_warmup {
            put("ema.enabled", Value::from(true));
        }
        if let Some(lr) = self.swa_lr {
            put("swa.swa_lr", Value::from(lr));
        }
        if let Some(start) = self.swa_start {
            put("swa.start", Value::from(start));
        }
        if self.swa || self.swa_lr.is_some() || self.swa_start.is_some() {
            put("swa.enabled", Value::from(true));
        }
        if self.detect_anomaly {
            put("debug.detect_anomaly", Value::from(true));
        }
        if self.overfit_single_batch {
            put("debug.overfit_single_batch", Value::from(true));
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

#[derive(Debug, Parser)]
#[command(version, about = None, args_conflicts_with_subcommands = true)]
struct Cli<A: Args, X: Subcommand> {
    #[command(subcommand)]
    command: Option<Command<A, X>>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stage: A,
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command<A: Args, X: Subcommand> {
    /// LR range test: sweep the learning rate over a short run on a copy of the model, write
    /// lr_find.csv and lr_find.png to the output directory, and suggest a learning rate.
    LrFind(LrFindCli<A>),
    /// Hyper-parameter search: trials are this stage's normal runs with sampled values, pruned
    /// by their validations, in a crash-safe study directory that a re-run resumes.
    Tune(TuneCli<A>),
    /// One trial of a study (started by `tune`).
    #[command(hide = true)]
    TuneTrial(TrialArgs),
    /// The stage's own subcommands (listed next to `lr-find`).
    #[command(flatten)]
    Extra(X),
}

/// The stage-specific subcommands of a stage that has none (what [`main`] passes to
/// [`main_with`]): it adds nothing to the command line and never parses.
#[derive(Debug, Clone, Copy)]
pub enum NoSubcommand {}

impl clap::FromArgMatches for NoSubcommand {
    fn from_arg_matches(_: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))
    }

    fn update_from_arg_matches(&mut self, _: &clap::ArgMatches) -> Result<(), clap::Error> {
        match *self {}
    }
}

impl Subcommand for NoSubcommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        cmd
    }

    fn has_subcommand(_: &str) -> bool {
        false
    }
}

#[derive(Debug, Args)]
struct LrFindCli<A: Args> {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stage: A,
    #[command(flatten)]
    finder: LrFindArgs,
}

#[derive(Debug, Args)]
struct TuneCli<A: Args> {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stage: A,
    #[command(flatten)]
    tune: TuneArgs,
}

/// Flags of `lr-find` (seed `lr_finder_tool.py` names).
#[derive(Debug, Clone, Args)]
pub struct LrFindArgs {
    /// First learning rate of the sweep.
    #[arg(long, default_value_t = 1e-7, value_name = "LR")]
    pub min_lr: f64,
    /// Last learning rate of the sweep.
    #[arg(long, default_value_t = 10.0, value_name = "LR")]
    pub max_lr: f64,
    /// Optimizer steps of the sweep.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub num_steps: usize,
    /// Draw batches from this many training samples (a seeded subset; default: all).
    #[arg(long, value_name = "N")]
    pub num_samples: Option<usize>,
    /// Spacing of the learning rates: exponential or linear.
    #[arg(long, default_value = "exponential", value_name = "MODE")]
    pub sweep: String,
    /// Stop when the smoothed loss exceeds this multiple of its best.
    #[arg(long, default_value_t = 4.0, value_name = "K")]
    pub divergence_factor: f64,
}

impl LrFindArgs {
    /// The finder settings, or the problems with them as `(flag, message)`.
    pub fn options(&self) -> Result<FinderConfig, Vec<(String, String)>> {
        let mode = match self.sweep.as_str() {
            "exponential" => SweepMode::Exponential,
            "linear" => SweepMode::Linear,
            other => {
                return Err(vec![("--sweep".into(), format!("expected exponential or linear, got `{other}`"))]);
            }
        };
        let finder = FinderConfig {
            min_lr: self.min_lr,
            max_lr: self.max_lr,
            num_steps: self.num_steps,
            mode,
            divergence_factor: self.divergence_factor,
            ..FinderConfig::default()
        };
        let problems = finder.validate();
        if let Some(0) = self.num_samples {
            return Err(vec![("--num-samples".into(), "expected at least 1 sample".into())]);
        }
        if problems.is_empty() {
            Ok(finder)
        } else {
            Err(problems.into_iter().map(|(k, m)| (format!("--{}", k.replace('_', "-")), m)).collect())
        }
    }
}

/// Sets up `tracing` output on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

struct StageWork<'a, S: Stage> {
    config: &'a StageConfig<S>,
    interrupts: Interrupts,
}

impl<S: Stage> BackendRun for StageWork<'_, S> {
    type Output = Result<(StopReason, LoopState), TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output {
        tracing::info!("backend: {name}");
        // The run directory is made only once the backend is known to work. The resolved
        // config is written by the loop, once a resume has been accepted.
        let dir = &self.config.output_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))))?;
        train::<S, B>(self.config, &device, self.interrupts)
    }
}

/// Replaces every `{name}` in `path` by its value.
fn fill_placeholders(path: &Path, vars: &[(&str, String)]) -> PathBuf {
    let mut dir = path.display().to_string();
    for (name, value) in vars {
        dir = dir.replace(&format!("{{{name}}}"), value);
    }
    PathBuf::from(dir)
}

/// Loads the stage's config from `common` and `stage_args`, reporting every problem.
pub fn load_config<S: Stage>(common: &CommonArgs, stage_args: &S::Args) -> Result<StageConfig<S>, ConfigErrors> {
    let mut overrides = common.overrides();
    overrides.extend(S::overrides(stage_args));
    let file = common.config.clone().or_else(|| {
        let f = S::config_file(stage_args)?;
        tracing::info!("no --config given: reading {}", f.display());
        Some(f)
    });
    let sources = ConfigSources {
        file,
        env: true,
        defaults: std::iter::once(("output_dir".into(), Value::from(format!("runs/{}", S::NAME))))
            .chain(S::defaults())
            .collect(),
        overrides,
        aliases: S::aliases(),
    };
    let mut config: StageConfig<S> = sources.load()?;
    let vars: Vec<(&str, String)> = [("seed", config.seed.to_string()), ("stage", S::NAME.to_string())]
        .into_iter()
        .chain(S::output_dir_vars(&config))
        .collect();
    config.output_dir = fill_placeholders(&config.output_dir, &vars);
    config.logging.log_dir = config.logging.log_dir.as_ref().map(|p| fill_placeholders(p, &vars));
    config.logging.tensorboard_dir = config.logging.tensorboard_dir.as_ref().map(|p| fill_placeholders(p, &vars));
    let device: DeviceSpec = config.device.parse().expect("validated");
    let compiled = compiled_backends();
    let feature = match device {
        DeviceSpec::Cpu => "cpu",
        DeviceSpec::Wgpu(_) => "wgpu",
        DeviceSpec::Cuda(_) => "cuda",
    };
    if !compiled.contains(&feature) {
        return Err(ConfigErrors(vec![ConfigProblem {
            key: "device".into(),
            message: BackendError::NotCompiled { device, feature }.to_string(),
            origin: None,
        }]));
    }
    Ok(config)
}

/// The whole life of a stage binary: parse flags, load config, run, map the outcome to an exit code.
pub fn main<S: Stage>() -> ExitCode {
    main_with::<S, NoSubcommand>(|never| match never {})
}

/// [`main`] for a stage with subcommands of its own (e.g. `stage1 predict`): `X`'s subcommands
/// are listed next to `lr-find` in `--help`, and a parsed one is handed to `extra`, whose exit
/// code the binary returns (by the same convention: 0 success, 1 failure, 2 bad usage or input).
pub fn main_with<S: Stage, X: Subcommand>(extra: impl FnOnce(X) -> ExitCode) -> ExitCode {
    init_logging();
    let cli = Cli::<S::Args, X>::parse();
    match cli.command {
        Some(Command::LrFind(c)) => lr_find_main::<S>(&c),
        Some(Command::Tune(c)) => crate::tune_cli::tune_main::<S>(&c.common, &c.stage, &c.tune),
        Some(Command::TuneTrial(t)) => crate::tune_cli::trial_main::<S>(&t),
        Some(Command::Extra(x)) => extra(x),
        None => run_stage::<S>(&cli.common, &cli.stage),
    }
}

/// Loads stage `S`'s config from parsed flags and trains it (or prints / validates the config):
/// what [`main`] does once the command line is parsed, for a binary that parses its own (e.g. a
/// stage run as a subcommand of another binary). Returns the exit code by the same convention.
pub fn run_stage<S: Stage>(common: &CommonArgs, stage: &S::Args) -> ExitCode {
    let config = match load_config::<S>(common, stage) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    if common.print_config {
        print!("{}", config::to_yaml(&config));
        return ExitCode::SUCCESS;
    }
    if common.validate_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    match run::<S>(&config) {
        Ok((StopReason::Aborted { policy, reason }, state)) => {
            eprintln!(
                "{}: training aborted by {policy} after optimizer step {}: {reason} (checkpoint_latest was written)",
                S::NAME,
                state.step
            );
            ExitCode::from(1)
        }
        Ok((StopReason::Interrupted(signal), state)) => {
            eprintln!("{}: interrupted by {} after optimizer step {}", S::NAME, signal.name(), state.step);
            ExitCode::from(signal.exit_code())
        }
        Ok((reason, state)) => {
            tracing::info!("finished after {} optimizer steps ({reason:?})", state.step);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{}: error: {message}", S::NAME);
            ExitCode::from(1)
        }
    }
}

fn run<S: Stage>(config: &StageConfig<S>) -> Result<(StopReason, LoopState), String> {
    let dir = &config.output_dir;
    let jsonl = config.logging.paths(dir).jsonl;
    if jsonl.exists() && config.resume.path.is_none() && !config.resume.auto {
        return Err(format!(
            "{} already holds a run ({} exists); pass --auto-resume to continue it, or choose a new --output-dir",
            dir.display(),
            jsonl.display()
        ));
    }
    let interrupts = Interrupts::install().map_err(|e| format!("installing signal handlers: {e}"))?;
    let device: DeviceSpec = config.device.parse().map_err(|e| format!("{e}"))?;
    run_on(device, StageWork::<S> { config, interrupts }).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

struct LrFindWork<'a, S: Stage> {
    config: &'a StageConfig<S>,
    options: &'a LrFindOptions,
}

impl<S: Stage> BackendRun for LrFindWork<'_, S> {
    type Output = Result<LrFindOutcome, TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output {
        tracing::info!("backend: {name}");
        lr_find::<S, B>(self.config, &device, self.options)
    }
}

/// `<stage> lr-find`: the LR range test with the stage's config; exit 0 with a suggestion
/// (or a line saying why there is none), 2 on bad flags or config, 1 if the sweep failed.
fn lr_find_main<S: Stage>(c: &LrFindCli<S::Args>) -> ExitCode {
    let config = match load_config::<S>(&c.common, &c.stage) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    let finder = match c.finder.options() {
        Ok(f) => f,
        Err(problems) => {
            for (flag, message) in problems {
                eprintln!("lr-find {flag}: {message}");
            }
            return ExitCode::from(2);
        }
    };
    let options = LrFindOptions { finder, num_samples: c.finder.num_samples, out_dir: config.output_dir.clone() };
    let device: DeviceSpec = config.device.parse().expect("validated");
    match run_on(device, LrFindWork::<S> { config: &config, options: &options }) {
        Ok(Ok(outcome)) => {
            println!("{}", outcome.finder.report());
            println!("Wrote {} and {}", outcome.csv.display(), outcome.png.display());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{}: lr-find: {e}", S::NAME);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{}: lr-find: {e}", S::NAME);
            ExitCode::from(1)
        }
    }
}
