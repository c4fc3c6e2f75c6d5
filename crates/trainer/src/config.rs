//! Run configuration: the sections every stage shares, how they are merged from defaults,
//! YAML, environment and CLI flags, and how every problem in them is reported at once.
//!
//! Precedence, lowest to highest: built-in defaults ← YAML file (`--config`) ← environment
//! (`TRAINYARD_SECTION__KEY=value`, `__` separates levels) ← CLI flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use checkpoints::RetentionConfig;
use schedulers::SchedulerSpec;

pub use crate::problems::{ConfigErrors, ConfigProblem, Validate};

use crate::averaging::{EmaConfig, SwaConfig};
use crate::backend::DeviceSpec;
use crate::early_stopping::EarlyStoppingConfig;
use crate::oom::OomConfig;
use crate::spike_guard::SpikeGuardConfig;

/// Prefix of environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "TRAINYARD_";

/// A complete run configuration: the shared sections plus a stage's `model`, `data` and `loss`.
///
/// Every struct denies unknown fields, so a misspelt key is an error that names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[serde(bound(
    serialize = "M: Serialize, D: Serialize, L: Serialize + 'static",
    deserialize = "M: Deserialize<'de> + Default, D: Deserialize<'de> + Default, L: Deserialize<'de> + Default"
))]
pub struct RunConfig<M, D, L = NoSection> {
    /// Seed for initialisation, data order and augmentation.
    pub seed: u64,
    /// `cpu`, `wgpu[:N]` or `cuda[:N]`.
    pub device: String,
    /// Directory the run writes into (telemetry, resolved config, checkpoints).
    pub output_dir: PathBuf,
    /// Budgets, batch shape, clipping, validation cadence.
    pub training: TrainingConfig,
    /// Optimizer and learning-rate schedule.
    pub optimizer: OptimizerConfig,
    /// Telemetry outputs and progress display.
    pub logging: LoggingConfig,
    /// Debug modes (overfit a single batch).
    pub debug: DebugConfig,
    /// What is saved and kept.
    pub checkpoint: RetentionConfig,
    /// When to stop early.
    pub early_stopping: EarlyStoppingConfig,
    /// When a diverging run is aborted.
    pub spike_guard: SpikeGuardConfig,
    /// Moving average of the weights.
    pub ema: EmaConfig,
    /// Stochastic weight averaging.
    pub swa: SwaConfig,
    /// Out-of-memory recovery.
    pub oom: OomConfig,
    /// Where to resume from.
    pub resume: ResumeConfig,
    /// The stage's model section.
    pub model: M,
    /// The stage's data section.
    pub data: D,
    /// The stage's loss section.
    #[serde(skip_serializing_if = "NoSection::is_unused_marker")]
    pub loss: L,
}

impl<M, D, L> RunConfig<M, D, L> {
    /// The same shared sections (seed, training, optimizer, checkpoints, ...) with other
    /// `model`, `data` and `loss` sections: how a stage that extends another (hoser-distill
    /// over hoser-vanilla) hands the inner stage its config.
    pub fn with_sections<M2, D2, L2>(&self, model: M2, data: D2, loss: L2) -> RunConfig<M2, D2, L2> {
        RunConfig {
            seed: self.seed,
            device: self.device.clone(),
            output_dir: self.output_dir.clone(),
            training: self.training.clone(),
            optimizer: self.optimizer.clone(),
            logging: self.logging.clone(),
            debug: self.debug.clone(),
            checkpoint: self.checkpoint.clone(),
            early_stopping: self.early_stopping.clone(),
            spike_guard: self.spike_guard.clone(),
            ema: self.ema.clone(),
            swa: self.swa.clone(),
            oom: self.oom.clone(),
            resume: self.resume.clone(),
            model,
            data,
            loss,
        }
    }
}

impl<M: Default, D: Default, L: Default> Default for RunConfig<M, D, L> {
    fn default() -> Self {
        Self {
            seed: 42,
            device: "cpu".into(),
            output_dir: PathBuf::from("runs/default"),
            training: TrainingConfig::default(),
            optimizer: OptimizerConfig::default(),
            logging: LoggingConfig::default(),
            debug: DebugConfig::default(),
            checkpoint: RetentionConfig::default(),
            early_stopping: EarlyStoppingConfig::default(),
            spike_guard: SpikeGuardConfig::default(),
            ema: EmaConfig::default(),
            swa: SwaConfig::default(),
            oom: OomConfig::default(),
            resume: ResumeConfig::default(),
            model: M::default(),
            data: D::default(),
            loss: L::default(),
        }
    }
}

/// A section a stage does not have. It serialises to nothing, so its key stays unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSection {}

impl NoSection {
    /// Whether `value` is the marker type (used to leave the section out of printed configs).
    fn is_unused_marker<T: 'static>(_value: &T) -> bool {
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<NoSection>()
    }
}

/// `training:` — what one run does and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step; their gradients are averaged (sample-weighted).
    pub gradient_accumulation_steps: usize,
    /// Budget in optimizer steps. Exactly one of `max_steps` and `epochs` is set.
    pub max_steps: Option<u64>,
    /// Budget in passes over the training set.
    pub epochs: Option<u64>,
    /// No stop request (early stopping, policies) is honoured before this many optimizer steps.
    pub min_steps: u64,
    /// Global L2 norm the gradients are clipped to; `null` disables.
    pub gradient_clip_norm: Option<f64>,
    /// Element-wise bound the gradients are clamped to; `null` disables.
    pub gradient_clip_value: Option<f64>,
    /// Validate every N optimizer steps; `null` validates at the end of every epoch.
    pub val_every: Option<u64>,
    /// Numeric precision of the run (see [`TrainingConfig::effective_precision`]).
    pub precision: Precision,
    /// Mixed precision (seed 001's `training.mixed_precision`): when true the run computes in
    /// `amp_dtype` with loss scaling; when false, in `precision`.
    pub mixed_precision: bool,
    /// The half-precision type of mixed precision (seed 001's `training.amp_dtype`).
    pub amp_dtype: AmpDtype,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            gradient_accumulation_steps: 1,
            max_steps: None,
            epochs: None,
            min_steps: 0,
            gradient_clip_norm: None,
            gradient_clip_value: None,
            val_every: None,
            precision: Precision::F32,
            mixed_precision: false,
            amp_dtype: AmpDtype::Float16,
        }
    }
}

impl TrainingConfig {
    /// Micro-batches in one epoch of `train_len` samples (in overfit mode an epoch is one window
    /// of the same first batch).
    pub fn batches_per_epoch(&self, train_len: usize, overfit: bool) -> usize {
        if overfit { self.gradient_accumulation_steps } else { train_len.div_ceil(self.batch_size) }
    }

    /// Optimizer steps in one epoch of `train_len` samples: windows of
    /// `gradient_accumulation_steps` micro-batches, a window never spanning two epochs (what the
    /// loop runs; also what a task or `tune` uses to turn steps into epochs).
    pub fn steps_per_epoch(&self, train_len: usize, overfit: bool) -> u64 {
        self.batches_per_epoch(train_len, overfit).div_ceil(self.gradient_accumulation_steps) as u64
    }

    /// The precision the run computes in: `amp_dtype` when `mixed_precision` is on, else `precision`.
    pub fn effective_precision(&self) -> Precision {
        if self.mixed_precision {
            match self.amp_dtype {
                AmpDtype::Float16 => Precision::F16,
                AmpDtype::Bfloat16 => Precision::Bf16,
            }
        } else {
            self.precision
        }
    }
}

impl Precision {
    /// The name written in configs and logs (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

/// The half-precision type of `training.amp_dtype` (PyTorch's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmpDtype {
    /// IEEE half precision (`torch.float16`).
    Float16,
    /// bfloat16 (`torch.bfloat16`).
    Bfloat16,
}

/// Numeric precision of parameters and computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    F32,
    /// Half precision (needs the mixed-precision work of a later change).
    F16,
    /// bfloat16 (needs the mixed-precision work of a later change).
    Bf16,
}

/// `optimizer:` — AdamW and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Optimizer name; `adamw` is the one implemented.
    pub name: OptimizerName,
    /// Peak learning rate.
    pub lr: f64,
    /// Adam betas (β1, β2).
    pub betas: [f64; 2],
    /// Adam epsilon.
    pub eps: f64,
    /// Decoupled weight decay (PyTorch AdamW semantics: `p ← p·(1 − lr·wd)`).
    pub weight_decay: f64,
    /// Which parameters `weight_decay` applies to: `all` (default), or `matrices`, only those of
    /// rank ≥ 2 (no decay on biases and norm scales: nanoGPT's and LM-TAD's parameter groups).
    pub weight_decay_params: crate::optim::DecayParams,
    /// Learning-rate schedule (see the `schedulers` crate for every key).
    pub scheduler: SchedulerSpec,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            name: OptimizerName::Adamw,
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
            weight_decay_params: crate::optim::DecayParams::All,
            scheduler: SchedulerSpec::default(),
        }
    }
}

/// Optimizers the loop can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    /// Adam with decoupled weight decay.
    Adamw,
}

/// `logging:` — telemetry outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Write TensorBoard event files (under `tensorboard_dir`).
    pub tensorboard: bool,
    /// Directory of `training.jsonl` and `metrics.csv`; `null` is `output_dir`. Takes the same
    /// `{seed}` / `{stage}` / stage placeholders as `output_dir` (e.g. `log/{dataset}/seed{seed}`).
    pub log_dir: Option<PathBuf>,
    /// Directory of the TensorBoard event files; `null` is `<output_dir>/tensorboard`. Takes the
    /// same placeholders as `output_dir`.
    pub tensorboard_dir: Option<PathBuf>,
    /// `auto` (bar on a terminal, plain lines otherwise), `bar`, `plain` or `off`.
    pub progress: ProgressMode,
    /// Optimizer steps between plain progress lines.
    pub log_every: u64,
    /// Log memory before the forward pass and after the backward pass every N optimizer
    /// steps, and around each validation; `null` disables.
    pub memory_every: Option<u64>,
    /// Redraw `curves.png` (next to `training.jsonl`) at each validation and at the end of the
    /// run: loss, learning rate and validation metrics against the optimizer step.
    pub curves: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            tensorboard: true,
            log_dir: None,
            tensorboard_dir: None,
            progress: ProgressMode::Auto,
            log_every: 50,
            memory_every: Some(100),
            curves: true,
        }
    }
}

impl LoggingConfig {
    /// Where a run in `run_dir` writes its telemetry.
    pub fn paths(&self, run_dir: &Path) -> TelemetryPaths {
        let log_dir = self.log_dir.clone().unwrap_or_else(|| run_dir.to_path_buf());
        TelemetryPaths {
            jsonl: log_dir.join(crate::telemetry::JSONL),
            csv: log_dir.join(crate::telemetry::CSV),
            curves: log_dir.join(crate::curves::CURVES_FILE),
            tensorboard: self
                .tensorboard_dir
                .clone()
                .unwrap_or_else(|| run_dir.join(crate::telemetry::TENSORBOARD_DIR)),
        }
    }
}

/// The files and directories a run's telemetry goes to (see [`LoggingConfig::paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryPaths {
    /// The event log.
    pub jsonl: PathBuf,
    /// The per-validation table.
    pub csv: PathBuf,
    /// The training curves image.
    pub curves: PathBuf,
    /// The TensorBoard event directory.
    pub tensorboard: PathBuf,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// A bar on a terminal, plain log lines otherwise.
    Auto,
    /// Always the bar.
    Bar,
    /// Always plain log lines.
    Plain,
    /// Nothing.
    Off,
}

/// `resume:` — continuing an earlier run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// Resume from this checkpoint file (`--resume PATH`).
    pub path: Option<PathBuf>,
    /// Resume from the newest valid checkpoint in the run directory, if any (`--auto-resume`).
    pub auto: bool,
    /// What to do when the checkpoint's seed, dataset, mode or config differ from this run's.
    pub on_mismatch: OnMismatch,
}

/// Handling of a checkpoint that belongs to a different run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Stop with a message listing each difference.
    #[default]
    Refuse,
    /// Move the old checkpoints and telemetry into `archived/` and start fresh.
    Fresh,
}

/// `debug:` — modes for checking that a model can learn at all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Train on the first batch only, without shuffling.
    pub overfit_single_batch: bool,
    /// With `overfit_single_batch`: the run fails unless first loss / last loss reaches this factor.
    pub expected_loss_drop: Option<f64>,
    /// Also check every named loss component (not only the loss and the gradient norm) for
    /// NaN/Inf at every step.
    pub detect_anomaly: bool,
    /// Pause inside every checkpoint save, after the data is durable and before it becomes
    /// visible (widens the window for crash tests; 0 in real runs).
    pub save_delay_ms: u64,
    /// Validate the untrained model at step 0 of a fresh run (seed 001's
    /// `debug.validate_before_training`; HF's `eval_on_start`). It is logged like any
    /// validation but is a baseline: it neither sets the best nor feeds early stopping.
    pub validate_before_training: bool,
}

impl Validate for NoSection {
    fn validate(&self, _: &mut Vec<ConfigProblem>) {}
}

/// The largest batch size and accumulation count a config accepts (`u32::MAX`).
pub const MAX_COUNT: u64 = u32::MAX as u64;

impl<M: Validate, D: Validate, L: Validate> Validate for RunConfig<M, D, L> {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if let Err(e) = self.device.parse::<DeviceSpec>() {
            p.push(ConfigProblem::new("device", e.to_string()));
        }
        let t = &self.training;
        match (t.max_steps, t.epochs) {
            (Some(_), Some(_)) => p.push(ConfigProblem::new(
                "training.max_steps",
                "max_steps and training.epochs are exclusive: set one and make the other null",
            )),
            (None, None) => {
                p.push(ConfigProblem::new("training.max_steps", "no budget: set training.max_steps or training.epochs"))
            }
            _ => {}
        }
        if t.max_steps == Some(0) {
            p.push(ConfigProblem::new("training.max_steps", "expected at least 1 step"));
        }
        if t.epochs == Some(0) {
            p.push(ConfigProblem::new("training.epochs", "expected at least 1 epoch"));
        }
        if let Some(max) = t.max_steps
            && t.min_steps > max
        {
            p.push(ConfigProblem::new(
                "training.min_steps",
                format!("min_steps {} exceeds max_steps {max}", t.min_steps),
            ));
        }
        if t.batch_size == 0 {
            p.push(ConfigProblem::new("training.batch_size", "expected a positive batch size"));
        }
        if t.gradient_accumulation_steps == 0 {
            p.push(ConfigProblem::new("training.gradient_accumulation_steps", "expected at least 1"));
        }
        // Counts of samples and micro-batches beyond u32 cannot be a real run; refusing them
        // here keeps a typo (`4294967297`) from being quietly cut to the size of the data set.
        for (key, v) in [
            ("training.batch_size", t.batch_size),
            ("training.gradient_accumulation_steps", t.gradient_accumulation_steps),
        ] {
            if v as u64 > MAX_COUNT {
                p.push(ConfigProblem::new(key, format!("{v} is out of range: expected 1..={MAX_COUNT}")));
            }
        }
        for (key, v) in [
            ("training.gradient_clip_norm", t.gradient_clip_norm),
            ("training.gradient_clip_value", t.gradient_clip_value),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                p.push(ConfigProblem::new(key, format!("expected a positive number or null, got {v}")));
            }
        }
        if t.val_every == Some(0) {
            p.push(ConfigProblem::new("training.val_every", "expected a positive step count or null"));
        }
        if t.mixed_precision && t.precision != Precision::F32 {
            p.push(ConfigProblem::new(
                "training.precision",
                format!(
                    "is {} while training.mixed_precision is on (which computes in training.amp_dtype); \
                     set one of them",
                    t.precision.name()
                ),
            ));
        } else if t.effective_precision() != Precision::F32 {
            let (key, asked) = if t.mixed_precision {
                ("training.mixed_precision", format!("true asks for {} autocast", t.effective_precision().name()))
            } else {
                ("training.precision", format!("{} was asked for", t.precision.name()))
            };
            p.push(ConfigProblem::new(
                key,
                format!(
                    "{asked}, but only f32 is implemented so far: f16/bf16 need the mixed-precision support \
                     (loss scaling) that is not built yet; set training.mixed_precision: false to train in f32"
                ),
            ));
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            p.push(ConfigProblem::new("optimizer.lr", format!("expected a positive learning rate, got {}", o.lr)));
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            p.push(ConfigProblem::new("optimizer.betas", format!("expected two values in [0, 1), got {:?}", o.betas)));
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            p.push(ConfigProblem::new("optimizer.eps", format!("expected a positive epsilon, got {}", o.eps)));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            p.push(ConfigProblem::new(
                "optimizer.weight_decay",
                format!("expected a non-negative weight decay, got {}", o.weight_decay),
            ));
        }
        if o.lr.is_finite() && o.lr > 0.0 {
            let run_length = match (o.scheduler.interval, t.max_steps) {
                (schedulers::Interval::Step, Some(max)) => Some(max),
                (schedulers::Interval::Epoch, None) => t.epochs,
                // Known only once the data set is loaded; checked again when the run starts.
                _ => None,
            };
            let found = match run_length {
                Some(len) => o
                    .scheduler
                    .build(schedulers::BuildContext { lr: o.lr, run_length: Some(len), monitor_mode: None })
                    .err()
                    .unwrap_or_default(),
                None => o.scheduler.check(o.lr),
            };
            p.extend(
                found.into_iter().map(|f| ConfigProblem::new(&format!("optimizer.scheduler.{}", f.key), f.message)),
            );
        }
        if self.logging.memory_every == Some(0) {
            p.push(ConfigProblem::new("logging.memory_every", "expected a positive step count or null"));
        }
        if self.logging.log_every == 0 {
            p.push(ConfigProblem::new("logging.log_every", "expected a positive step count"));
        }
        if let Some(f) = self.debug.expected_loss_drop {
            if !(f.is_finite() && f >= 1.0) {
                p.push(ConfigProblem::new("debug.expected_loss_drop", format!("expected a factor >= 1, got {f}")));
            }
            if !self.debug.overfit_single_batch {
                p.push(ConfigProblem::new(
                    "debug.expected_loss_drop",
                    "only meaningful with debug.overfit_single_batch: true",
                ));
            }
        }
        if self.resume.path.is_some() && self.resume.auto {
            p.push(ConfigProblem::new(
                "resume.auto",
                "resume.path (--resume) and resume.auto (--auto-resume) are exclusive",
            ));
        }
        if let Some(path) = &self.resume.path
            && !path.is_file()
        {
            p.push(ConfigProblem::new("resume.path", format!("checkpoint {} does not exist", path.display())));
        }
        // The retention settings check themselves (directories, counts, names).
        for f in self.checkpoint.problems() {
            p.push(ConfigProblem::new(&format!("checkpoint.{}", f.key), f.message));
        }
        self.early_stopping.validate(p);
        self.spike_guard.validate(p);
        self.ema.validate(p);
        self.swa.validate(p);
        self.oom.validate(p);
        if self.early_stopping.restore_best_weights && self.checkpoint.export_best.is_none() {
            p.push(ConfigProblem::new(
                "early_stopping.restore_best_weights",
                "restores from the best-model export: set checkpoint.export_best (e.g. `best`)",
            ));
        }
        self.model.validate(p);
        self.data.validate(p);
        self.loss.validate(p);
    }
}

/// Where a configuration comes from, in rising precedence.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The YAML file given with `--config`.
    pub file: Option<PathBuf>,
    /// Stage defaults (dotted keys) layered over the built-in defaults, below the file.
    pub defaults: Vec<(String, Value)>,
    /// Read `TRAINYARD_…` environment variables.
    pub env: bool,
    /// Dotted keys set by CLI flags, highest precedence.
    pub overrides: Vec<(String, Value)>,
    /// Key aliases of the config file: `(written, native)` dotted prefixes, e.g.
    /// `("training.steps", "training.max_steps")` or `("training.optimizer", "optimizer")`, so a
    /// stage reads the section layout its users know. The longest matching prefix wins; problems
    /// with an aliased key name the key as written.
    pub aliases: Vec<(String, String)>,
}

/// Turns a `KEY=VALUE` flag into an override; the value is read as YAML (`3`, `1e-4`, `null`, `[1, 2]`).
pub fn parse_set_flag(flag: &str) -> Result<(String, Value), String> {
    let (key, raw) = flag
        .split_once('=')
        .ok_or_else(|| format!("--set {flag:?}: expected KEY=VALUE, e.g. training.max_steps=100"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("--set {flag:?}: {key:?} is not a dotted key path"));
    }
    if raw.trim().parse::<i128>().is_ok_and(|n| i64::try_from(n).is_err() && u64::try_from(n).is_err()) {
        return Err(format!(
            "--set {flag:?}: {} is out of range for key {key}: integers must lie in {}..={}",
            raw.trim(),
            i64::MIN,
            u64::MAX
        ));
    }
    let value: Value = serde_yaml::from_str::<serde_yaml::Value>(raw)
        .map_err(|e| format!("--set {flag:?}: value is not valid YAML: {e}"))
        .and_then(|v| Value::serialize(v).map_err(|e| format!("--set {flag:?}: {e}")))?;
    Ok((key.to_string(), value))
}

/// A YAML `null` for overrides that clear a key.
pub fn null() -> Value {
    Value::Empty(figment::value::Tag::Default, figment::value::Empty::None)
}

/// The merged configuration, before it is checked.
pub struct Merged {
    figment: Figment,
    tree: Dict,
    renamed: BTreeMap<String, String>,
    file: Option<String>,
}

impl ConfigSources {
    /// The layered sources, and the file's aliased leaves (native key → key as written).
    fn figment<C: Serialize + Default>(&self) -> Result<(Figment, BTreeMap<String, String>), ConfigErrors> {
        let defaults = Value::serialize(C::default()).expect("config types serialise");
        let mut f = Figment::from(Named::new("built-in default", Serialized::defaults(defaults)));
        let mut renamed = BTreeMap::new();
        for (key, value) in &self.defaults {
            f = f.merge(Named::new("stage default", Serialized::default(key, value.clone())));
        }
        if let Some(path) = &self.file {
            if !path.is_file() {
                return Err(ConfigErrors(vec![ConfigProblem {
                    key: String::new(),
                    message: format!(
                        "config file {} does not exist or is not a file (expected a YAML file)",
                        path.display()
                    ),
                    origin: None,
                }]));
            }
            reject_duplicate_keys(path)?;
            if self.aliases.is_empty() {
                f = f.merge(Yaml::file_exact(path));
            } else {
                let aliased =
                    Aliased { path: path.clone(), aliases: self.aliases.clone(), renamed: Default::default() };
                // Figment reads a provider when it is merged, so `renamed` is filled after this line.
                f = f.merge(&aliased);
                renamed = aliased.renamed.into_inner().unwrap_or_else(|p| p.into_inner());
            }
        }
        if self.env {
            f = f.merge(Env::prefixed(ENV_PREFIX).split("__"));
        }
        for (key, value) in &self.overrides {
            // `--set` accepts the file's aliased spellings too (`--set training.steps=100`).
            let key = unalias(&self.aliases, key).unwrap_or_else(|| key.clone());
            f = f.merge(Named::new("command-line flag", Serialized::default(&key, value.clone())));
        }
        Ok((f, renamed))
    }

    /// Merges the sources into one tree. Fails only when a source cannot be read or parsed.
    pub fn merge<C: Serialize + Default>(&self) -> Result<Merged, ConfigErrors> {
        let (figment, renamed) = self.figment::<C>()?;
        let tree = match figment.extract::<Value>() {
            Ok(Value::Dict(_, d)) => d,
            Ok(other) => {
                return Err(ConfigErrors(vec![ConfigProblem::new(
                    "",
                    format!("expected a mapping at the top level, found {}", other.to_actual()),
                )]));
            }
            Err(e) => {
                return Err(ConfigErrors(e.into_iter().map(|e| figment_problem(&e, None)).collect()));
            }
        };
        let file = self.file.as_ref().map(|p| p.display().to_string());
        Ok(Merged { figment, tree, renamed, file })
    }

    /// Merges, checks types and unknown keys, and validates; returns the config or every problem.
    pub fn load<C>(&self) -> Result<C, ConfigErrors>
    where
        C: Serialize + DeserializeOwned + Default + Validate,
    {
        self.merge::<C>()?.resolve()
    }
}

/// Fails on a key given twice in one mapping of the YAML file, which figment would resolve
/// silently (the last one wins). Other read and parse errors are left to figment's report.
fn reject_duplicate_keys(path: &Path) -> Result<(), ConfigErrors> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Err(e) if e.to_string().contains("duplicate entry") => Err(ConfigErrors(vec![ConfigProblem {
            key: String::new(),
            message: format!("{e} (the line of the mapping that holds it; each key may appear once per mapping)"),
            origin: Some(path.display().to_string()),
        }])),
        _ => Ok(()),
    }
}

fn figment_problem(e: &figment::Error, key_override: Option<&str>) -> ConfigProblem {
    let key = key_override.map(str::to_string).unwrap_or_else(|| e.path.join("."));
    let origin = e.metadata.as_ref().map(|m| describe_origin(m, &key));
    ConfigProblem { key, message: e.kind.to_string(), origin }
}

fn describe_origin(meta: &figment::Metadata, key: &str) -> String {
    match &meta.source {
        Some(figment::Source::File(p)) => p.display().to_string(),
        _ if meta.name.contains("environment") => {
            format!("environment variable {ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
        }
        _ => meta.name.to_string(),
    }
}

/// The YAML file with aliased keys renamed to their native paths.
struct Aliased {
    path: PathBuf,
    aliases: Vec<(String, String)>,
    /// Filled when the file is read: native key → key as written, for every aliased leaf.
    renamed: std::sync::Mutex<BTreeMap<String, String>>,
}

/// The native path of a written dotted key under `aliases` (longest matching prefix), if aliased.
pub fn unalias(aliases: &[(String, String)], key: &str) -> Option<String> {
    aliases
        .iter()
        .filter(|(from, _)| key == from || key.starts_with(&format!("{from}.")))
        .max_by_key(|(from, _)| from.len())
        .map(|(from, to)| format!("{to}{}", &key[from.len()..]))
}

fn flatten(prefix: &str, dict: &Dict, out: &mut Vec<(String, Value)>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Dict(_, sub) if !sub.is_empty() => flatten(&path, sub, out),
            _ => out.push((path, v.clone())),
        }
    }
}

impl figment::Provider for Aliased {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("YAML file", figment::Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        let mut data = Yaml::file_exact(&self.path).data()?;
        for dict in data.values_mut() {
            let mut leaves = Vec::new();
            flatten("", dict, &mut leaves);
            let mut renamed = Dict::new();
            for (key, value) in leaves {
                let written = key.clone();
                let native = match unalias(&self.aliases, &key) {
                    Some(native) => {
                        self.renamed.lock().unwrap_or_else(|p| p.into_inner()).insert(native.clone(), key);
                        native
                    }
                    None => key,
                };
                let path: Vec<String> = native.split('.').map(str::to_string).collect();
                if has_path(&renamed, &path) {
                    // Two spellings of one key (an alias and its native name): the last would win.
                    return Err(figment::Error::from(format!(
                        "{}: {written} sets {native}, which the file already sets (each key may appear once)",
                        self.path.display()
                    )));
                }
                set_path(&mut renamed, &path, value);
            }
            *dict = renamed;
        }
        Ok(data)
    }
}

/// A provider under a name that error messages can show ("command-line flag", ...).
struct Named {
    name: &'static str,
    inner: Serialized<Value>,
}

impl Named {
    fn new(name: &'static str, inner: Serialized<Value>) -> Self {
        Self { name, inner }
    }
}

impl figment::Provider for Named {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name)
    }

    fn data(&self) -> Result<figment::value::Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

impl Merged {
    /// Where the value at a dotted key came from, e.g. the YAML file's path.
    pub fn origin(&self, key: &str) -> Option<String> {
        self.figment.find_metadata(key).map(|m| describe_origin(m, key))
    }

    /// Checks the merged tree against `C` and reports every problem at once.
    ///
    /// Unknown keys are found by comparing with the serialised defaults; type errors by
    /// deserialising each leaf on its own, so one bad value does not hide another.
    pub fn resolve<C>(&self) -> Result<C, ConfigErrors>
    where
        C: Serialize + DeserializeOwned + Default + Validate,
    {
        let defaults = match Value::serialize(C::default()) {
            Ok(Value::Dict(_, d)) => d,
            _ => unreachable!("a config struct serialises to a mapping"),
        };
        let mut problems = Vec::new();
        let mut known = Dict::new();
        let mut leaves = Vec::new();
        self.split_known(&self.tree, &defaults, "", &mut known, &mut leaves, &mut problems);

        let mut typed_tree = defaults.clone();
        let whole = Value::from(known.clone());
        let config: C = match whole.deserialize::<C>() {
            Ok(c) => c,
            Err(_) => {
                // Find each bad leaf on its own against the defaults.
                for (path, value) in &leaves {
                    let mut single = defaults.clone();
                    set_path(&mut single, path, value.clone());
                    match Value::from(single).deserialize::<C>() {
                        Ok(_) => set_path(&mut typed_tree, path, value.clone()),
                        Err(e) => {
                            let key = path.join(".");
                            let mut p = figment_problem(&e, Some(&key));
                            p.origin = self.origin(&key);
                            problems.push(p);
                        }
                    }
                }
                Value::from(typed_tree).deserialize::<C>().unwrap_or_else(|_| C::default())
            }
        };
        let mut semantic = Vec::new();
        config.validate(&mut semantic);
        for mut p in semantic {
            if p.origin.is_none() && !p.key.is_empty() {
                p.origin = self.origin(&p.key).filter(|o| !o.contains("default"));
            }
            problems.push(p);
        }
        // Name an aliased key the way the file wrote it.
        for p in &mut problems {
            let from_file = p.origin.is_some() && p.origin == self.file;
            if from_file && let Some(written) = self.renamed.get(&p.key) {
                p.key = written.clone();
            }
        }
        if problems.is_empty() { Ok(config) } else { Err(ConfigErrors(problems)) }
    }

    fn split_known(
        &self,
        given: &Dict,
        defaults: &Dict,
        prefix: &str,
        known: &mut Dict,
        leaves: &mut Vec<(Vec<String>, Value)>,
        problems: &mut Vec<ConfigProblem>,
    ) {
        for (k, v) in given {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match defaults.get(k) {
                None => {
                    let expected: Vec<&str> = defaults.keys().map(String::as_str).collect();
                    problems.push(ConfigProblem {
                        key: path.clone(),
                        message: format!(
                            "unknown key `{k}`{}; expected one of: {}",
                            if prefix.is_empty() { String::new() } else { format!(" in `{prefix}`") },
                            expected.join(", ")
                        ),
                        origin: self.origin(&path),
                    });
                }
                Some(Value::Dict(_, dsub)) => match v {
                    Value::Dict(_, gsub) => {
                        let mut sub = Dict::new();
                        self.split_known(gsub, dsub, &path, &mut sub, leaves, problems);
                        known.insert(k.clone(), Value::from(sub));
                    }
                    _ => {
                        known.insert(k.clone(), v.clone());
                        leaves.push((path.split('.').map(str::to_string).collect(), v.clone()));
                    }
                },
                Some(_) => {
                    known.insert(k.clone(), v.clone());
                    leaves.push((path.split('.').map(str::to_string).collect(), v.clone()));
                }
            }
        }
    }
}

fn has_path(tree: &Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => tree.contains_key(last),
        [first, rest @ ..] => match tree.get(first) {
            Some(Value::Dict(_, d)) => has_path(d, rest),
            Some(_) => true,
            None => false,
        },
    }
}

fn set_path(tree: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            tree.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = tree.entry(first.clone()).or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, d) = entry {
                set_path(d, rest, value);
            } else {
                let mut d = Dict::new();
                set_path(&mut d, rest, value);
                *entry = Value::from(d);
            }
        }
    }
}

/// Renders a config as the YAML `--print-config` shows and the run directory keeps.
pub fn to_yaml<C: Serialize>(config: &C) -> String {
    serde_yaml::to_string(config).expect("config types serialise to YAML")
}

/// Writes the resolved config into the run directory as `config.yaml`.
pub fn write_resolved<C: Serialize>(config: &C, run_dir: &Path) -> std::io::Result<PathBuf> {
    let path = run_dir.join("config.yaml");
    std::fs::write(&path, to_yaml(config))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::ToyConfig as Toy;

    fn aliases() -> Vec<(String, String)> {
        [("training.steps", "training.max_steps"), ("training.optimizer", "optimizer"), ("system.seed", "seed")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn load(yaml: &str) -> Result<Toy, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        ConfigSources { file: Some(path), aliases: aliases(), ..Default::default() }.load::<Toy>()
    }

    #[test]
    fn aliased_keys_land_on_their_native_keys() {
        let c = load("training:\n  steps: 7\n  optimizer:\n    lr: 0.5\nsystem:\n  seed: 9\n").unwrap();
        assert_eq!(c.training.max_steps, Some(7));
        assert_eq!(c.optimizer.lr, 0.5);
        assert_eq!(c.seed, 9);
        assert_eq!(
            unalias(&aliases(), "training.optimizer.scheduler.name").as_deref(),
            Some("optimizer.scheduler.name")
        );
        assert_eq!(unalias(&aliases(), "training.stepsize"), None, "prefixes match whole segments");
    }

    #[test]
    fn mixed_precision_is_refused_by_name_until_it_exists() {
        let c = load("training:\n  max_steps: 3\n  mixed_precision: false\n  amp_dtype: float16\n").unwrap();
        assert_eq!(c.training.effective_precision(), Precision::F32);
        let e = load("training:\n  max_steps: 3\n  mixed_precision: true\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "training.mixed_precision", "{e}");
        assert!(e.0[0].message.contains("f16") && e.0[0].message.contains("only f32"), "{e}");
        let e = load("training:\n  max_steps: 3\n  mixed_precision: true\n  amp_dtype: bfloat16\n").unwrap_err();
        assert!(e.0[0].message.contains("bf16"), "{e}");
        let e = load("training:\n  max_steps: 3\n  precision: bf16\n").unwrap_err();
        assert_eq!(e.0[0].key, "training.precision", "{e}");
        let e = load("training:\n  max_steps: 3\n  amp_dtype: float8\n").unwrap_err();
        assert_eq!(e.0[0].key, "training.amp_dtype", "{e}");
    }

    #[test]
    fn set_flags_take_aliased_keys_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "training:\n  steps: 7\n").unwrap();
        let sources = |overrides: Vec<(String, Value)>| ConfigSources {
            file: Some(path.clone()),
            aliases: aliases(),
            overrides,
            ..Default::default()
        };
        let c = sources(vec![("training.steps".into(), Value::from(9u64))]).load::<Toy>().unwrap();
        assert_eq!(c.training.max_steps, Some(9), "the aliased flag overrides the aliased file key");
        let c = sources(vec![("system.seed".into(), Value::from(3u64))]).load::<Toy>().unwrap();
        assert_eq!(c.seed, 3);
        let c = sources(vec![("training.max_steps".into(), Value::from(4u64))]).load::<Toy>().unwrap();
        assert_eq!(c.training.max_steps, Some(4), "native keys still work");
    }

    #[test]
    fn problems_name_an_aliased_key_as_written() {
        let e = load("training:\n  steps: 7\n  optimizer:\n    lr: fast\n    bogus: 1\n").unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"training.optimizer.lr"), "{e}");
        assert!(keys.contains(&"training.optimizer.bogus"), "{e}");
        // A native key keeps its name.
        let e = load("training:\n  max_steps: 0\n").unwrap_err();
        assert_eq!(e.0[0].key, "training.max_steps", "{e}");
    }

    #[test]
    fn a_key_given_twice_names_the_key_the_file_and_the_line() {
        let e = load("seed: 1\ntraining:\n  max_steps: 5\n  max_steps: 7\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("max_steps") && text.contains("c.yaml") && text.contains("line 3"), "{text}");
        // An alias and its native spelling in one file are the same key twice.
        let e = load("training:\n  steps: 5\n  max_steps: 7\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("training.max_steps") && text.contains("c.yaml"), "{text}");
    }

    #[test]
    fn counts_beyond_u32_are_refused_with_the_range() {
        let e = load("training:\n  max_steps: 5\n  gradient_accumulation_steps: 4294967297\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "training.gradient_accumulation_steps", "{e}");
        assert!(e.0[0].message.contains("1..=4294967295"), "{e}");
        let e = load("training:\n  max_steps: 5\n  batch_size: 4294967296\n").unwrap_err();
        assert_eq!(e.0[0].key, "training.batch_size", "{e}");
        assert!(load("training:\n  max_steps: 5\n  gradient_accumulation_steps: 4294967295\n").is_ok());
    }

    #[test]
    fn checkpoint_directories_outside_the_run_and_zero_keep_counts_are_refused() {
        let e =
            load("training:\n  max_steps: 5\ncheckpoint:\n  dir: ../elsewhere\n  keep_last_n_steps: 0\n").unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["checkpoint.dir", "checkpoint.keep_last_n_steps"], "{e}");
        assert!(e.0[0].message.contains("../elsewhere") && e.0[0].message.contains(".."), "{e}");
        assert!(load("training:\n  max_steps: 5\ncheckpoint:\n  dir: .\n").is_ok());
    }

    #[test]
    fn set_flags_name_the_key_for_each_bad_form() {
        let e = parse_set_flag("training.max_steps").unwrap_err();
        assert!(e.contains("training.max_steps") && e.contains("KEY=VALUE"), "{e}");
        let e = parse_set_flag("training.max_steps=18446744073709551617").unwrap_err();
        assert!(e.contains("out of range for key training.max_steps"), "{e}");
        assert!(parse_set_flag("training.max_steps=18446744073709551615").is_ok());
        assert!(parse_set_flag("optimizer.lr=-3").is_ok());
        let e = parse_set_flag("=3").unwrap_err();
        assert!(e.contains("not a dotted key path"), "{e}");
    }
}
