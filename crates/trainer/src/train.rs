//! The training loop: data order, micro-batches, averaged accumulation, clipping, the
//! schedule, validation cadence, budgets, stop requests, checkpoints and exact resume, and
//! Ctrl-C handling.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use checkpoints::store::{metric_map, newest_valid};
use checkpoints::{
    CheckpointError, CheckpointFile, CheckpointStore, Kind, Meta, Metric, RetentionConfig, RunIdentity, SCHEMA_VERSION,
    Trigger,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use schedulers::{BuildContext, Interval, PlateauMode, SchedulerState};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::averaging::{Ema, EmaConfig, Swa, SwaConfig};
use crate::config::{DebugConfig, LoggingConfig, OnMismatch, OptimizerConfig, ResumeConfig, RunConfig, TrainingConfig};
use crate::early_stopping::{EarlyStopping, EarlyStoppingConfig};
use crate::grads;
use crate::interrupt::{Interrupts, Signal};
use crate::oom::{self, OomConfig, OomRung};
use crate::spike_guard::{SpikeGuard, SpikeGuardConfig};
use crate::task::{Metrics, Mode, Selection, Task};
use crate::telemetry::{self, StepRecord, Telemetry, TelemetryCounters};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A telemetry or run-directory file could not be written.
    #[error("writing run output: {0}")]
    Io(#[from] io::Error),
    /// A checkpoint could not be written, read or used.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// The stage's data could not be loaded (a missing file, a malformed row, ...); the message
    /// names the file and what was expected.
    #[error("loading the data: {0}")]
    Data(String),
    /// The task has no training samples.
    #[error("the training set is empty: nothing to train on (check the data section of the config)")]
    EmptyDataset,
    /// A NaN or infinity appeared in the loss, a loss component or the gradient norm. The
    /// update was not applied; the last good state was checkpointed.
    #[error(
        "non-finite value at optimizer step {step} (epoch {epoch}): {what}; the update was not applied{}. \
         Lower optimizer.lr or set training.gradient_clip_norm",
        checkpoint.as_ref().map(|p| format!(" and the last good state is in {}", p.display())).unwrap_or_default()
    )]
    Anomaly {
        /// Optimizer step being computed (1-based).
        step: u64,
        /// Epoch (0-based).
        epoch: u64,
        /// The first offending value, named.
        what: String,
        /// The checkpoint written before stopping.
        checkpoint: Option<PathBuf>,
    },
    /// Out of memory at the bottom of the degrade ladder (or with `oom.enabled: false`).
    #[error(
        "out of memory at optimizer step {step} ({reason}) with nothing left to lower: reduce training.batch_size, \
         the model size or the stage's memory knob"
    )]
    OutOfMemory {
        /// Optimizer step being computed (1-based).
        step: u64,
        /// What reported it.
        reason: String,
    },
    /// The backend reported an execution error (device lost, out of memory, ...).
    #[error("the device failed at optimizer step {step}: {message}")]
    Device {
        /// Optimizer step just completed.
        step: u64,
        /// The backend's message.
        message: String,
    },
    /// The learning-rate schedule does not fit this run (e.g. a warm-up longer than the run).
    #[error("optimizer.scheduler.{key}: {message}")]
    Schedule {
        /// Key under `optimizer.scheduler`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Validation did not return the metric that selects the best model.
    #[error(
        "validation returned no metric `{metric}` (it returned: {available}); the task selects the best model by it"
    )]
    MissingMetric {
        /// The selection metric.
        metric: String,
        /// The names that were returned.
        available: String,
    },
    /// `checkpoint.monitor` names a metric whose direction is unknown.
    #[error(
        "checkpoint.monitor is `{metric}`, which is not the stage's selection metric `{selection}`: \
         set checkpoint.mode to min or max for it"
    )]
    MonitorNeedsMode {
        /// The monitored metric.
        metric: String,
        /// The stage's own selection metric.
        selection: String,
    },
    /// The overfit-single-batch check did not reach its expected loss drop.
    #[error(
        "overfit check failed: loss went from {first:.6} to {last:.6} (factor {achieved:.2}) in {steps} steps; \
         debug.expected_loss_drop asks for {expected}"
    )]
    OverfitCheck {
        /// First step's loss.
        first: f64,
        /// Last step's loss.
        last: f64,
        /// first / last.
        achieved: f64,
        /// Required factor.
        expected: f64,
        /// Steps run.
        steps: u64,
    },
}

/// The sections of a run config the loop reads.
#[derive(Debug, Clone)]
pub struct LoopConfig<'a> {
    /// Seed for initialisation, data order and per-step backend randomness.
    pub seed: u64,
    /// Budgets, batch shape, clipping, cadence.
    pub training: &'a TrainingConfig,
    /// Optimizer and schedule.
    pub optimizer: &'a OptimizerConfig,
    /// Telemetry.
    pub logging: &'a LoggingConfig,
    /// Debug modes.
    pub debug: &'a DebugConfig,
    /// What is saved and kept.
    pub checkpoint: &'a RetentionConfig,
    /// Early stopping.
    pub early_stopping: &'a EarlyStoppingConfig,
    /// Gradient and loss spike guards.
    pub spike_guard: &'a SpikeGuardConfig,
    /// Moving average of the weights.
    pub ema: &'a EmaConfig,
    /// Stochastic weight averaging.
    pub swa: &'a SwaConfig,
    /// Out-of-memory recovery.
    pub oom: &'a OomConfig,
    /// Where to resume from.
    pub resume: &'a ResumeConfig,
    /// Where telemetry and checkpoints go.
    pub run_dir: &'a Path,
    /// Hash of the config sections a checkpoint must agree on (model and loss).
    pub config_hash: String,
}

impl<M: Serialize, D, L: Serialize + 'static> RunConfig<M, D, L> {
    /// The view of this config the training loop needs.
    pub fn loop_config(&self) -> LoopConfig<'_> {
        LoopConfig {
            seed: self.seed,
            training: &self.training,
            optimizer: &self.optimizer,
            logging: &self.logging,
            debug: &self.debug,
            checkpoint: &self.checkpoint,
            early_stopping: &self.early_stopping,
            spike_guard: &self.spike_guard,
            ema: &self.ema,
            swa: &self.swa,
            oom: &self.oom,
            resume: &self.resume,
            run_dir: &self.output_dir,
            config_hash: self.config_hash(),
        }
    }

    /// CRC-32C of the `model` and `loss` sections: what makes a checkpoint's weights mean
    /// something else. Budgets, optimizer settings and logging may change between resumes.
    pub fn config_hash(&self) -> String {
        let both =
            json!({"model": serde_json::to_value(&self.model).ok(), "loss": serde_json::to_value(&self.loss).ok()});
        format!("{:08x}", crc32c::crc32c(both.to_string().as_bytes()))
    }
}

/// Where the loop stands. Saved in every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoopState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Micro-batches of the current epoch already consumed.
    pub position: usize,
    /// Best selection-metric value so far and the step it was reached at.
    pub best: Option<(u64, f64)>,
}

/// What a stop policy sees after each validation.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    /// Optimizer steps completed.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Learning rate of the last optimizer step.
    pub lr: f64,
    /// The validation's metrics.
    pub metrics: &'a Metrics,
}

/// What a stop policy decided after a validation or a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// A reason to stop, or `None` to go on.
    pub stop: Option<String>,
    /// The stop is a failure (the run exits non-zero) and is not deferred by `min_steps`.
    pub abort: bool,
    /// Console lines to show (progress-bar aware).
    pub notes: Vec<String>,
    /// An event `(kind, fields)` for `training.jsonl`.
    pub event: Option<(String, serde_json::Value)>,
}

/// A rule that may ask the run to stop after a validation (early stopping and friends).
/// Requests before `training.min_steps` are logged and ignored. Its state goes into every
/// checkpoint, so a resumed run continues it.
pub trait StopPolicy {
    /// Short name used in telemetry and as the key of its saved state.
    fn name(&self) -> &str;
    /// Looks at a validation; says whether to stop and what to report.
    fn after_validation(&mut self, _validation: &Validation<'_>) -> Decision {
        Decision::default()
    }
    /// Looks at a completed optimizer step (before any validation at that step).
    fn after_step(&mut self, _step: &StepRecord<'_>) -> Decision {
        Decision::default()
    }
    /// The policy's state, saved in checkpoints.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restores the state saved by [`StopPolicy::state`].
    fn restore(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    /// A closing line for the end of the run (e.g. the best score).
    fn summary(&self) -> Option<String> {
        None
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// `max_steps` or `epochs` was reached.
    Budget,
    /// A stop policy asked for it.
    Requested {
        /// The policy's name.
        policy: String,
        /// Its reason.
        reason: String,
    },
    /// SIGINT / SIGTERM; a resumable checkpoint was written after the last completed step.
    Interrupted(Signal),
    /// A guard aborted the run (e.g. gradient spikes); a checkpoint was written.
    Aborted {
        /// The policy's name.
        policy: String,
        /// Its reason.
        reason: String,
    },
}

/// The end of a run.
pub struct RunSummary<M> {
    /// The trained model.
    pub model: M,
    /// Where the loop stopped.
    pub state: LoopState,
    /// Why.
    pub reason: StopReason,
    /// Loss of the first optimizer step of the whole run (resumes included).
    pub first_loss: f64,
    /// Loss of the last optimizer step.
    pub last_loss: f64,
    /// The checkpoint this run resumed from, if any.
    pub resumed_from: Option<PathBuf>,
}

/// Everything besides weights and optimizer moments that a resumed run needs (the
/// `trainer` blob of a checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedState {
    step: u64,
    epoch: u64,
    position: usize,
    best: Option<(u64, Metric)>,
    first_loss: Metric,
    last_loss: Metric,
    validated_at: Option<u64>,
    telemetry: TelemetryCounters,
    policies: BTreeMap<String, serde_json::Value>,
    /// How randomness is reproduced: data order is a function of (seed, epoch) and the
    /// backend is reseeded from (seed, step) before every optimizer step.
    rng: serde_json::Value,
    /// The schedule is a pure function of its index; recorded for inspection.
    schedule: serde_json::Value,
    /// What the scheduler keeps besides its index (ReduceLROnPlateau's counters).
    #[serde(default)]
    scheduler: Option<SchedulerState>,
    /// No loss scaling in f32 runs.
    loss_scaler: Option<serde_json::Value>,
    /// Updates folded into the EMA (its weights are the `ema.*` tensors).
    #[serde(default)]
    ema_updates: Option<u64>,
    /// Weights averaged by SWA (its average is the `swa.*` tensors).
    #[serde(default)]
    swa_updates: Option<u64>,
    /// Where the out-of-memory ladder stands.
    #[serde(default)]
    oom: Option<SavedOom>,
}

/// The OOM ladder's rung and the stage knob's setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedOom {
    rung: OomRung,
    knob: serde_json::Value,
}

/// Model initialisation seeds a process-global backend RNG; runs in one process (tests)
/// take turns so each gets exactly its seed's weights. Random ops inside training steps of
/// runs sharing a process still share that RNG: bit-exact replay of those needs one run per
/// process, which is how the binaries run.
pub(crate) static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The order in which epoch `epoch` visits `n` samples: a permutation fixed by `(seed, epoch)`,
/// so a resumed run can jump to any position without replaying the data.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Seed of the backend RNG for optimizer step `step` (SplitMix64 of seed and step), so
/// random ops inside a step (dropout, noise) replay exactly after a resume.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds the task's model with the backend seeded by `seed`: the same seed always gives the
/// same initial weights, also when several runs share a process.
pub fn init_model<B: AutodiffBackend, T: Task<B>>(task: &T, seed: u64, device: &B::Device) -> T::Model {
    /// burn initialises parameters lazily, at first use; touching each one here draws every
    /// initial value while the seeded RNG is ours.
    struct Materialise;
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    let model = task.build_model(device);
    model.visit(&mut Materialise);
    model
}

/// Weights of `model` (with their parameter ids) as a checkpoint file without blobs.
fn weights_file<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, meta: Meta) -> CheckpointFile {
    let (tensors, ids) = checkpoints::module::weights_of::<B, M>(model);
    let extra = BTreeMap::from([(PARAM_IDS.to_string(), serde_json::to_string(&ids).expect("ids serialise"))]);
    CheckpointFile { meta, tensors, blobs: BTreeMap::new(), extra }
}

const PARAM_IDS: &str = "trainyard.param_ids";
/// Prefix of the EMA's tensors inside a resume bundle.
const EMA_PREFIX: &str = "ema.";
/// Weights-only export of the EMA, refreshed at every save.
const EMA_EXPORT: &str = "model_ema.safetensors";
/// Prefix of the SWA average's tensors inside a resume bundle.
const SWA_PREFIX: &str = "swa.";
/// Weights-only export of the SWA average, refreshed at every save once averaging started.
const SWA_EXPORT: &str = "model_swa.safetensors";
const OPTIMIZER_BLOB: &str = "optimizer";
const STATE_BLOB: &str = "trainer";

fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Moves the telemetry of an earlier run (from wherever `logging` puts it) and, with
/// `checkpoints`, its checkpoints into `run_dir/archived/<label>/`. Nothing is deleted.
fn archive_previous_run(
    run_dir: &Path,
    logging: &LoggingConfig,
    checkpoints: bool,
) -> Result<Option<PathBuf>, TrainError> {
    let paths = logging.paths(run_dir);
    let telemetry =
        [(paths.jsonl, telemetry::JSONL), (paths.csv, telemetry::CSV), (paths.tensorboard, telemetry::TENSORBOARD_DIR)];
    let ckpt_dir = run_dir.join("checkpoints");
    let has_telemetry = telemetry.iter().any(|(p, _)| p.exists());
    let has_checkpoints = checkpoints && ckpt_dir.is_dir();
    if !has_telemetry && !has_checkpoints {
        return Ok(None);
    }
    let label = format!("run_{}", now_unix() as u64);
    let target = run_dir.join("archived").join(&label);
    std::fs::create_dir_all(&target).map_err(|e| CheckpointError::io(&target, e))?;
    for (from, name) in telemetry {
        if from.exists() {
            std::fs::rename(&from, target.join(name)).map_err(|e| CheckpointError::io(&from, e))?;
        }
    }
    if has_checkpoints {
        let to = target.join("checkpoints");
        std::fs::rename(&ckpt_dir, &to).map_err(|e| CheckpointError::io(&ckpt_dir, e))?;
    }
    Ok(Some(target))
}

/// The metric that selects the best model: the task's, unless `checkpoint.monitor` names
/// another (then `checkpoint.mode` must say its direction — guessing "min" for an accuracy
/// silently keeps the worst checkpoints).
fn selection(task: Selection, checkpoint: &RetentionConfig) -> Result<Selection, TrainError> {
    match (&checkpoint.monitor, checkpoint.mode) {
        (None, None) => Ok(task),
        (None, Some(mode)) => Ok(Selection { mode, ..task }),
        (Some(metric), Some(mode)) => Ok(Selection { metric: metric.clone(), mode }),
        (Some(metric), None) if *metric == task.metric => Ok(task),
        (Some(metric), None) => Err(TrainError::MonitorNeedsMode { metric: metric.clone(), selection: task.metric }),
    }
}

/// Reports a policy's decision (notes, event) and turns it into a stop reason: aborts at
/// once, ordinary stops only from `min_steps` on (earlier ones are logged as ignored).
fn report_decision(
    policy: &dyn StopPolicy,
    decision: Decision,
    step: u64,
    min_steps: u64,
    tel: &mut Telemetry,
) -> Result<Option<StopReason>, TrainError> {
    for note in &decision.notes {
        tel.message(note);
    }
    if let Some((kind, fields)) = decision.event {
        tel.event(&kind, fields)?;
    }
    let Some(reason) = decision.stop else { return Ok(None) };
    let name = policy.name().to_string();
    if decision.abort {
        return Ok(Some(StopReason::Aborted { policy: name, reason }));
    }
    if step < min_steps {
        tel.event("stop_ignored", json!({"step": step, "policy": name, "reason": reason, "min_steps": min_steps}))?;
        return Ok(None);
    }
    tel.event("stop_requested", json!({"step": step, "policy": name, "reason": reason}))?;
    Ok(Some(StopReason::Requested { policy: name, reason }))
}

/// The non-autodiff model type of task `T`.
type InnerModel<B, T> = <<T as Task<B>>::Model as AutodiffModule<B>>::InnerModule;

/// A weight average evaluated next to the model at validation.
enum Average<'m, M> {
    /// Has weights to evaluate.
    Ready(&'m M),
    /// Configured but not updated yet: its metrics are reported as NaN.
    Pending,
}

/// Runs a task under a loop configuration.
pub struct Trainer<'a> {
    config: LoopConfig<'a>,
    interrupts: Interrupts,
    policies: Vec<Box<dyn StopPolicy + 'a>>,
}

/// The configured AdamW with Adam's β1 set to `beta_1`.
pub(crate) fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    o: &OptimizerConfig,
    beta_1: f64,
) -> OptimizerAdaptor<AdamW, M, B> {
    AdamWConfig::new()
        .with_beta_1(beta_1 as f32)
        .with_beta_2(o.betas[1] as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
        .init::<B, M>()
}

impl<'a> Trainer<'a> {
    /// A trainer with no signal handling and no stop policies.
    pub fn new(config: LoopConfig<'a>) -> Self {
        Self { config, interrupts: Interrupts::none(), policies: Vec::new() }
    }

    /// The config sections the loop reads.
    pub fn config(&self) -> &LoopConfig<'a> {
        &self.config
    }

    /// Stops cleanly (after a checkpoint) when `interrupts` fires.
    pub fn interrupts(mut self, interrupts: Interrupts) -> Self {
        self.interrupts = interrupts;
        self
    }

    /// Adds a stop policy.
    pub fn policy(mut self, policy: impl StopPolicy + 'a) -> Self {
        self.policies.push(Box::new(policy));
        self
    }

    /// Finds the checkpoint to resume from, per `resume.path` / `resume.auto`, after checking
    /// that it belongs to this run.
    fn resume_source(&self, identity: &RunIdentity) -> Result<Option<(PathBuf, CheckpointFile)>, TrainError> {
        let cfg = &self.config;
        let ckpt_dir = cfg.run_dir.join("checkpoints");
        let found = if let Some(path) = &cfg.resume.path {
            Some((path.clone(), CheckpointFile::read(path)?))
        } else if cfg.resume.auto {
            let found = newest_valid(&ckpt_dir, |e| tracing::warn!("skipping checkpoint: {e}"));
            if found.is_none() {
                tracing::info!("auto-resume: no valid checkpoint in {}, starting fresh", ckpt_dir.display());
            }
            found
        } else {
            None
        };
        let Some((path, file)) = found else { return Ok(None) };
        if file.meta.kind != Kind::Resume {
            return Err(CheckpointError::Incompatible {
                path,
                reason: "a weights-only export cannot resume training (it has no optimizer or loop state)".into(),
            }
            .into());
        }
        let differences = file.meta.identity.differences(identity);
        if differences.is_empty() {
            return Ok(Some((path, file)));
        }
        match cfg.resume.on_mismatch {
            OnMismatch::Refuse => Err(CheckpointError::Mismatch { path, differences }.into()),
            OnMismatch::Fresh => {
                let archived = archive_previous_run(cfg.run_dir, cfg.logging, true)?;
                tracing::warn!(
                    "{} belongs to a different run ({}); archived the previous run to {} and starting fresh",
                    path.display(),
                    differences.join("; "),
                    archived.map(|p| p.display().to_string()).unwrap_or_default()
                );
                Ok(None)
            }
        }
    }

    /// Trains `task` on `device` until the budget, a stop request or a signal.
    pub fn run<B, T>(mut self, task: &T, device: &B::Device) -> Result<RunSummary<T::Model>, TrainError>
    where
        B: AutodiffBackend,
        T: Task<B>,
    {
        let cfg = self.config.clone();
        let t = cfg.training;
        let n = task.train_len();
        if cfg.oom.enabled {
            oom::watch_device_panics();
        }
        if n == 0 {
            return Err(TrainError::EmptyDataset);
        }
        std::fs::create_dir_all(cfg.run_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.run_dir.display())))?;

        let overfit = cfg.debug.overfit_single_batch;
        let accum = t.gradient_accumulation_steps;
        // In overfit mode an epoch is one window of the same first batch.
        let batches_per_epoch = if overfit { accum } else { n.div_ceil(t.batch_size) };
        let steps_per_epoch = batches_per_epoch.div_ceil(accum) as u64;
        let total_steps = match (t.max_steps, t.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => unreachable!("validated: one budget is set"),
        };
        let selection = selection(task.selection(), cfg.checkpoint)?;
        let spec = &cfg.optimizer.scheduler;
        let run_length = match spec.interval {
            Interval::Step => total_steps,
            Interval::Epoch => t.epochs.unwrap_or(total_steps.div_ceil(steps_per_epoch)),
        };
        let monitor = spec.monitor.clone().unwrap_or_else(|| selection.metric.clone());
        let monitor_mode = (monitor == selection.metric).then_some(match selection.mode {
            Mode::Min => PlateauMode::Min,
            Mode::Max => PlateauMode::Max,
        });
        let mut scheduler = spec
            .build(BuildContext { lr: cfg.optimizer.lr, run_length: Some(run_length), monitor_mode })
            .map_err(|mut problems| {
                let first = problems.remove(0);
                TrainError::Schedule { key: first.key, message: first.message }
            })?;
        if scheduler.plateau().is_some() && monitor != selection.metric && spec.mode.is_none() {
            return Err(TrainError::Schedule {
                key: "mode".into(),
                message: format!(
                    "plateau monitors `{monitor}`, not the selection metric `{}`: set mode to min or max",
                    selection.metric
                ),
            });
        }
        // The schedule index of 0-based optimizer step `step`: the step, or the epoch it is in
        // (every epoch has exactly `steps_per_epoch` optimizer steps).
        let index = |step: u64| match spec.interval {
            Interval::Step => step,
            Interval::Epoch => step / steps_per_epoch,
        };
        if cfg.early_stopping.enabled {
            self.policies.insert(0, Box::new(EarlyStopping::new(cfg.early_stopping.clone(), &selection)));
        }
        if cfg.spike_guard.enabled() {
            self.policies.insert(0, Box::new(SpikeGuard::new(cfg.spike_guard.clone())));
        }
        let identity = RunIdentity {
            seed: cfg.seed,
            dataset_id: task.dataset_id(),
            mode: task.mode(),
            config_hash: cfg.config_hash.clone(),
        };

        let mut source = self.resume_source(&identity)?;
        if source.is_none() {
            // A fresh start never mixes with an earlier run's telemetry: set it aside.
            if let Some(archived) = archive_previous_run(cfg.run_dir, cfg.logging, false)? {
                tracing::warn!("moved the telemetry of an earlier run without checkpoints to {}", archived.display());
            }
        }

        let mut model = init_model::<B, T>(task, cfg.seed, device);
        let o = cfg.optimizer;
        let adamw = |beta_1: f64| adamw::<B, T::Model>(o, beta_1);
        // OneCycle and cyclical schedules move Adam's β1 inversely to the LR (torch sets
        // `betas[0]`); burn fixes β1 at construction, so the optimizer is rebuilt around its
        // state whenever β1 changes.
        let mut beta_1 = o.betas[0];
        let mut optim = adamw(beta_1);
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();

        let mut st = LoopState::default();
        let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
        let mut validated_at = None;
        let mut counters = None;
        let (mut saved_ema, mut saved_swa) = (Vec::new(), Vec::new());
        let mut rung = OomRung::start();
        let (mut ema_updates, mut swa_updates) = (None, None);
        if let Some((path, file)) = &mut source {
            let bad = |reason: String| CheckpointError::Incompatible { path: path.clone(), reason };
            let ids: BTreeMap<String, String> = file
                .extra
                .get(PARAM_IDS)
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(|e| bad(format!("bad parameter ids: {e}")))?
                .ok_or_else(|| bad("no parameter ids".into()))?;
            let mut weights = Vec::new();
            for mut t in std::mem::take(&mut file.tensors) {
                if let Some(name) = t.name.strip_prefix(EMA_PREFIX) {
                    t.name = name.to_string();
                    saved_ema.push(t);
                } else if let Some(name) = t.name.strip_prefix(SWA_PREFIX) {
                    t.name = name.to_string();
                    saved_swa.push(t);
                } else {
                    weights.push(t);
                }
            }
            model = checkpoints::module::load_weights(model, weights, Some(&ids), path)?;
            let blob =
                |name: &str| file.blobs.get(name).ok_or_else(|| bad(format!("no {name} state in the checkpoint")));
            let record = recorder
                .load(blob(OPTIMIZER_BLOB)?.clone(), device)
                .map_err(|e| bad(format!("optimizer state does not load: {e}")))?;
            optim = optim.load_record(record);
            let saved: SavedState =
                serde_json::from_slice(blob(STATE_BLOB)?).map_err(|e| bad(format!("bad loop state: {e}")))?;
            for policy in &mut self.policies {
                if let Some(state) = saved.policies.get(policy.name()) {
                    policy.restore(state).map_err(|e| bad(format!("policy {} state: {e}", policy.name())))?;
                }
            }
            st = LoopState {
                step: saved.step,
                epoch: saved.epoch,
                position: saved.position,
                best: saved.best.map(|(s, v)| (s, v.0)),
            };
            scheduler
                .restore(saved.scheduler.clone().unwrap_or(SchedulerState { plateau: None }))
                .map_err(|e| bad(format!("scheduler state: {e}")))?;
            ema_updates = saved.ema_updates;
            if let Some(oom) = &saved.oom {
                rung = oom.rung;
                task.restore_degrade(&oom.knob).map_err(|e| bad(format!("stage knob state: {e}")))?;
            }
            swa_updates = saved.swa_updates;
            first_loss = saved.first_loss.0;
            last_loss = saved.last_loss.0;
            validated_at = saved.validated_at;
            counters = Some((saved.step, saved.telemetry));
        }

        let mut retention = cfg.checkpoint.clone();
        // Relative to the run directory; `.` components dropped so logged paths read cleanly.
        let in_run = |d: PathBuf| -> PathBuf {
            cfg.run_dir.join(d).components().filter(|c| *c != std::path::Component::CurDir).collect()
        };
        retention.top_k_dir = retention.top_k_dir.map(in_run);
        retention.export_best_dir = retention.export_best_dir.map(in_run);
        let mut store = CheckpointStore::open(
            &cfg.run_dir.join("checkpoints"),
            retention,
            &selection.metric,
            selection.mode,
            source.as_ref().map(|(p, _)| p.clone()),
        )?
        .with_save_delay(Duration::from_millis(cfg.debug.save_delay_ms));

        let mut ema = if cfg.ema.enabled {
            let mut e = Ema::<B, T::Model>::new(cfg.ema.clone(), &model);
            if let (Some((path, _)), Some(updates)) = (&source, ema_updates) {
                e.average =
                    checkpoints::module::load_weights(model.valid(), std::mem::take(&mut saved_ema), None, path)?;
                e.updates = updates;
            }
            Some(e)
        } else {
            None
        };
        let swa_start = cfg.swa.start_step(total_steps);
        let mut swa = if cfg.swa.enabled {
            let mut w = Swa::<B, T::Model>::new(&model);
            if let (Some((path, _)), Some(updates)) = (&source, swa_updates) {
                w.average =
                    checkpoints::module::load_weights(model.valid(), std::mem::take(&mut saved_swa), None, path)?;
                w.updates = updates;
            }
            Some(w)
        } else {
            None
        };

        let mut tel = Telemetry::create(cfg.run_dir, cfg.logging, total_steps, counters)?;
        match &source {
            None => tel.event(
                "run_start",
                json!({
                    "seed": cfg.seed, "train_samples": n, "batch_size": t.batch_size,
                    "gradient_accumulation_steps": accum, "steps_per_epoch": steps_per_epoch,
                    "total_steps": total_steps, "parameters": model.num_params(), "precision": "f32",
                    "selection": selection, "identity": identity,
                    "overfit_single_batch": overfit,
                }),
            )?,
            Some((path, file)) => {
                tracing::info!(
                    "resumed from {} at {}: model weights and ids, optimizer moments, step/epoch/position, \
                     best, telemetry counters, {} policy state(s)",
                    path.display(),
                    file.meta,
                    self.policies.len()
                );
                tel.event(
                    "resume",
                    json!({
                        "path": path, "step": st.step, "epoch": st.epoch, "position": st.position,
                        "best": st.best.map(|(s, v)| json!({"step": s, "value": v})),
                        "restored": ["model", "parameter_ids", "optimizer", "schedule_step", "scheduler_state",
                                     "data_cursor", "rng", "best", "telemetry_counters", "policies"],
                        "total_steps": total_steps,
                    }),
                )?
            }
        }
        tracing::info!(
            "training {} parameters for {total_steps} optimizer steps ({steps_per_epoch} per epoch, \
             batch {} x {accum} accumulation), precision f32",
            model.num_params(),
            t.batch_size,
        );

        // One resume bundle for `triggers`, written through the store's retention and reported
        // in telemetry. A macro rather than a function: it reads most of the loop's state.
        macro_rules! save_checkpoint {
            ($triggers:expr, $final_label:expr) => {{
                let triggers: &[Trigger] = $triggers;
                let saved = SavedState {
                    step: st.step,
                    epoch: st.epoch,
                    position: st.position,
                    best: st.best.map(|(s, v)| (s, Metric(v))),
                    first_loss: Metric(first_loss),
                    last_loss: Metric(last_loss),
                    validated_at,
                    telemetry: TelemetryCounters { last_checkpoint: st.step, ..tel.counters() },
                    policies: self.policies.iter().map(|p| (p.name().to_string(), p.state())).collect(),
                    rng: json!({"scheme": "data order from (seed, epoch); backend reseeded from (seed, step)", "seed": cfg.seed}),
                    schedule: json!({"name": spec.name, "interval": spec.interval, "index": index(st.step),
                                     "next_lr": scheduler.lr_at(index(st.step))}),
                    scheduler: Some(scheduler.state()),
                    loss_scaler: None,
                    ema_updates: ema.as_ref().map(|e| e.updates),
                    swa_updates: swa.as_ref().map(|w| w.updates),
                    oom: Some(SavedOom { rung, knob: task.degrade_state() }),
                };
                let metrics = tel.last_validation(st.step).cloned().unwrap_or_default();
                let meta = |kind| Meta {
                    schema_version: SCHEMA_VERSION,
                    kind,
                    step: st.step,
                    epoch: st.epoch,
                    metrics: metric_map(&metrics),
                    identity: identity.clone(),
                    created_unix: now_unix(),
                };
                let report = store.save(
                    st.step,
                    triggers,
                    || {
                        let mut file = weights_file::<B, T::Model>(&model, meta(Kind::Resume));
                        let record = recorder.record(optim.to_record(), ()).expect("optimizer state serialises");
                        file.blobs.insert(OPTIMIZER_BLOB.into(), record);
                        file.blobs.insert(STATE_BLOB.into(), serde_json::to_vec(&saved).expect("state serialises"));
                        let averages = [
                            (EMA_PREFIX, ema.as_ref().map(|e| &e.average)),
                            (SWA_PREFIX, swa.as_ref().map(|w| &w.average)),
                        ];
                        for (prefix, average) in averages {
                            if let Some(average) = average {
                                let (tensors, _) = checkpoints::module::weights_of::<B::InnerBackend, _>(average);
                                file.tensors.extend(tensors.into_iter().map(|mut t| {
                                    t.name = format!("{prefix}{}", t.name);
                                    t
                                }));
                            }
                        }
                        file
                    },
                    || weights_file::<B, T::Model>(&model, meta(Kind::Weights)),
                )?;
                let exports = [
                    (EMA_EXPORT, ema.as_ref().map(|e| &e.average)),
                    (SWA_EXPORT, swa.as_ref().filter(|w| w.updates > 0).map(|w| &w.average)),
                ];
                for (name, average) in exports {
                    if let Some(average) = average {
                        let (tensors, _) = checkpoints::module::weights_of::<B::InnerBackend, _>(average);
                        let export = cfg.run_dir.join("checkpoints").join(name);
                        CheckpointFile { meta: meta(Kind::Weights), tensors, blobs: BTreeMap::new(), extra: BTreeMap::new() }
                            .write(&export, || {})?;
                    }
                }
                let reasons: Vec<&str> = triggers
                    .iter()
                    .map(|t| match t {
                        Trigger::Validation { .. } => "validation",
                        Trigger::StepInterval => "step_interval",
                        Trigger::EpochEnd { .. } => "epoch_end",
                        Trigger::Final => $final_label,
                    })
                    .collect();
                tel.checkpoint(st.step, &reasons, &report.written, &report.removed)?;
                report
            }};
        }

        let mut reason = StopReason::Budget;
        let mut finished = st.step >= total_steps || t.epochs.is_some_and(|e| st.epoch >= e);
        while !finished {
            let order = if overfit { (0..n).collect() } else { epoch_order(cfg.seed, st.epoch, n) };
            task.begin_epoch(st.epoch);
            let batches: Vec<&[usize]> =
                if overfit { vec![&order[..t.batch_size.min(n)]; accum] } else { order.chunks(t.batch_size).collect() };
            while st.position < batches.len() {
                let started = Instant::now();
                let window = &batches[st.position..(st.position + accum).min(batches.len())];
                {
                    // Under the init lock: a reseed must not land inside another run's model
                    // initialisation (the backend RNG is process-global).
                    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                    B::seed(device, step_seed(cfg.seed, st.step));
                }
                let window_samples: usize = window.iter().map(|b| b.len()).sum();
                let log_memory = cfg.logging.memory_every.is_some_and(|n| (st.step + 1).is_multiple_of(n));
                if log_memory {
                    tel.memory(st.step + 1, "Before Forward")?;
                }
                // One attempt at the step's micro-batches at the current OOM rung; an
                // out-of-memory (injected, over the RSS budget, or reported by the backend)
                // comes back as Err and is retried one rung down, on the same samples.
                let attempt = |micro: &[&[usize]], inject: bool| -> Result<_, String> {
                    if inject {
                        return Err("injected out-of-memory (oom.inject_at_steps)".to_string());
                    }
                    let mut accumulator = GradientsAccumulator::<T::Model>::new();
                    let mut loss_sum = 0.0;
                    let mut metric_sums = Metrics::new();
                    // The first NaN/Inf found in this step: loss, then (with debug.detect_anomaly)
                    // each named loss component, then the gradient norm.
                    let mut offender: Option<String> = None;
                    for (i, indices) in micro.iter().enumerate() {
                        let batch = task.train_batch(indices, device);
                        let out = task.train_step(&model, &batch);
                        let weight = indices.len() as f64 / window_samples as f64;
                        let loss_value: f64 = out.loss.clone().into_scalar().elem();
                        if !loss_value.is_finite() && offender.is_none() {
                            offender = Some(format!("the loss of micro-batch {} is {loss_value}", i + 1));
                        }
                        loss_sum += loss_value * weight;
                        for (k, v) in out.metrics {
                            *metric_sums.entry(k).or_default() += v * weight;
                        }
                        // Scaling each micro-batch's mean loss by its share of the window makes
                        // the summed gradients the gradient of the mean over the whole window.
                        let grads = out.loss.mul_scalar(weight).backward();
                        accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
                        if let Some(budget) = cfg.oom.memory_budget_bytes
                            && let Some(m) = telemetry::memory_now()
                            && m.bytes > budget
                        {
                            return Err(format!(
                                "resident memory {} bytes over oom.memory_budget_bytes {budget}",
                                m.bytes
                            ));
                        }
                    }
                    if let Err(e) = B::sync(device)
                        && oom::is_oom_message(&e.to_string())
                    {
                        return Err(e.to_string());
                    }
                    Ok((accumulator.grads(), loss_sum, metric_sums, offender))
                };
                let mut inject = cfg.oom.inject_at_steps.contains(&(st.step + 1));
                let (mut gradients, loss_sum, metric_sums, mut offender) = loop {
                    let micro = rung.micro_batches(window);
                    // A GPU allocation failure may show up only as a panic in the backend's
                    // device thread (recorded by the panic watch), possibly followed by a panic
                    // here when a value is read back; both count as out-of-memory.
                    let mark = oom::device_oom_mark();
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        attempt(&micro, std::mem::take(&mut inject))
                    }));
                    let outcome = match (outcome, oom::device_oom_since(mark)) {
                        (Ok(Ok(_)) | Err(_), Some(device)) => Err(device),
                        (Ok(Err(reason)), Some(device)) => Err(format!("{reason}; {device}")),
                        (Ok(result), None) => result,
                        (Err(panic), None) => {
                            let text = oom::panic_text(panic.as_ref());
                            if oom::is_oom_message(&text) { Err(text) } else { std::panic::resume_unwind(panic) }
                        }
                    };
                    match outcome {
                        Ok(done) => break done,
                        Err(reason) => {
                            let action = if !cfg.oom.enabled {
                                None
                            } else if let Some(lowered) = task.degrade() {
                                Some(lowered)
                            } else if rung.can_split(window, cfg.oom.min_micro_batch) {
                                rung.split *= 2;
                                Some(format!(
                                    "micro-batches split in {} (accumulation x{}): same samples per step",
                                    rung.split, rung.split
                                ))
                            } else {
                                None
                            };
                            rung.events += 1;
                            B::memory_cleanup(device);
                            tel.event(
                                "oom",
                                json!({"step": st.step + 1, "reason": reason, "action": action,
                                       "split": rung.split, "knob": task.degrade_state()}),
                            )?;
                            let Some(action) = action else {
                                return Err(TrainError::OutOfMemory { step: st.step + 1, reason });
                            };
                            tel.message(&format!(
                                "⚠ Out of memory at step {}: {action}; retrying the step",
                                st.step + 1
                            ));
                        }
                    }
                };
                if log_memory {
                    tel.memory(st.step + 1, "After Backward")?;
                }
                if let Some(bound) = t.gradient_clip_value {
                    grads::clamp::<B, T::Model>(&model, &mut gradients, bound);
                }
                let grad_norm = grads::global_norm::<B, T::Model>(&model, &mut gradients);
                if let Some(max_norm) = t.gradient_clip_norm {
                    grads::clip_global_norm::<B, T::Model>(&model, &mut gradients, grad_norm, max_norm);
                }
                if offender.is_none() && cfg.debug.detect_anomaly {
                    offender = metric_sums
                        .iter()
                        .find(|(_, v)| !v.is_finite())
                        .map(|(k, v)| format!("loss component `{k}` is {v}"));
                }
                if offender.is_none() && !grad_norm.is_finite() {
                    offender = Some(format!("the global gradient norm is {grad_norm}"));
                }
                if let Some(what) = offender {
                    // The update is not applied: the checkpoint holds the last good weights.
                    tel.event("anomaly", json!({"step": st.step + 1, "epoch": st.epoch, "what": what}))?;
                    let report = save_checkpoint!(&[Trigger::Final], "anomaly");
                    tel.finish()?;
                    return Err(TrainError::Anomaly {
                        step: st.step + 1,
                        epoch: st.epoch,
                        what,
                        checkpoint: report.written.first().cloned(),
                    });
                }
                let at = index(st.step);
                let lr = swa
                    .as_ref()
                    .and_then(|_| {
                        cfg.swa.lr_at(st.step, swa_start, scheduler.lr_at(index(swa_start.saturating_sub(1))))
                    })
                    .unwrap_or_else(|| scheduler.lr_at(at));
                let momentum = scheduler.momentum_at(at).unwrap_or(o.betas[0]);
                if momentum != beta_1 {
                    beta_1 = momentum;
                    optim = adamw(beta_1).load_record(optim.to_record());
                }
                model = optim.step(lr, model, gradients);
                st.step += 1;
                st.position += window.len();
                if let Some(e) = &mut ema {
                    e.update(st.step, &model);
                }
                // A device failure (lost device, out of memory on a GPU backend) surfaces here
                // as an error, not as silently wrong numbers later.
                B::sync(device).map_err(|e| TrainError::Device { step: st.step, message: e.to_string() })?;
                if first_loss.is_nan() {
                    first_loss = loss_sum;
                }
                last_loss = loss_sum;
                let record = StepRecord {
                    step: st.step,
                    epoch: st.epoch,
                    loss: loss_sum,
                    lr,
                    beta1: beta_1,
                    grad_norm,
                    metrics: &metric_sums,
                    step_time: started.elapsed().as_secs_f64(),
                };
                tel.train_step(&record)?;

                // Everything that happens at this step boundary, in an order that makes the
                // checkpoint below include it (step policies, validation, policy state first).
                let mut triggers = Vec::new();
                let mut stop = self.after_step(&record, &mut tel)?;
                let aborted = matches!(stop, Some(StopReason::Aborted { .. }));
                let epoch_done = st.position >= batches.len();
                if let Some(w) = &mut swa
                    && st.step >= swa_start
                    && cfg.swa.update_every.map_or(epoch_done, |n| (st.step - swa_start).is_multiple_of(n))
                {
                    w.update(&model);
                }
                let validate_now = t.val_every.map_or(epoch_done, |every| st.step.is_multiple_of(every));
                let interrupted = self.interrupts.received();
                let out_of_budget =
                    st.step >= total_steps || (epoch_done && t.epochs.is_some_and(|e| st.epoch + 1 >= e));
                // The final weights are always evaluated, so the best model is never stale.
                if !aborted && (validate_now || (out_of_budget && interrupted.is_none())) {
                    let (value, is_best, s, metrics) = self.validate(
                        task,
                        &model,
                        &[
                            ema.as_ref().filter(|_| cfg.ema.validate).map(|e| ("ema_", Average::Ready(&e.average))),
                            swa.as_ref().filter(|_| cfg.swa.validate).map(|w| {
                                ("swa_", if w.updates > 0 { Average::Ready(&w.average) } else { Average::Pending })
                            }),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>(),
                        device,
                        &mut tel,
                        &mut st,
                        lr,
                        &selection,
                    )?;
                    validated_at = Some(st.step);
                    if let Some(plateau) = scheduler.plateau() {
                        let patience = plateau.config().patience;
                        let watched = *metrics.get(&monitor).ok_or_else(|| TrainError::Schedule {
                            key: "monitor".into(),
                            message: format!(
                                "validation returned no metric `{monitor}` (it returned: {})",
                                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        })?;
                        if let Some(cut) = scheduler.observe(watched) {
                            tel.event(
                                "lr_reduced",
                                json!({"step": st.step, "monitor": monitor, "value": watched,
                                       "old_lr": cut.old, "new_lr": cut.new}),
                            )?;
                            tel.message(&format!(
                                "↘ Reducing learning rate from {:.3e} to {:.3e}: {monitor} did not improve for {} \
                                 validations",
                                cut.old,
                                cut.new,
                                patience + 1
                            ));
                        }
                    }
                    // Top-K may rank by its own metric (stage 1: sar_edge_agreement; best by val_loss).
                    let ranked = match &cfg.checkpoint.top_k_monitor {
                        Some(m) => *metrics.get(m).ok_or_else(|| TrainError::MissingMetric {
                            metric: m.clone(),
                            available: metrics.keys().cloned().collect::<Vec<_>>().join(", "),
                        })?,
                        None => value,
                    };
                    triggers.push(Trigger::Validation { value: ranked, is_best });
                    stop = stop.or(s);
                }
                if epoch_done {
                    // In overfit mode every step is an "epoch" of one window: no epoch saves.
                    if !overfit {
                        triggers.push(Trigger::EpochEnd { epoch: st.epoch });
                    }
                    st.epoch += 1;
                    st.position = 0;
                }
                if store.is_step_interval(st.step) {
                    triggers.push(Trigger::StepInterval);
                }
                // A signal that arrived during validation stops here too, not one step later.
                let interrupted = interrupted.or_else(|| self.interrupts.received());
                if let Some(signal) = interrupted {
                    tracing::warn!("{} received: stopping after optimizer step {}", signal.name(), st.step);
                    tel.event("interrupted", json!({"signal": signal.name(), "step": st.step, "epoch": st.epoch}))?;
                    reason = StopReason::Interrupted(signal);
                    finished = true;
                } else if let Some(s) = stop {
                    reason = s;
                    finished = true;
                } else if out_of_budget {
                    finished = true;
                }
                if finished {
                    triggers.push(Trigger::Final);
                }
                if !triggers.is_empty() && store.wants(&triggers) {
                    let final_label = if interrupted.is_some() { "interrupted" } else { "final" };
                    save_checkpoint!(&triggers, final_label);
                }
                if finished || epoch_done {
                    // The next epoch needs its own order.
                    break;
                }
            }
        }

        for policy in &self.policies {
            if let Some(line) = policy.summary() {
                tel.message(&line);
            }
        }
        if cfg.early_stopping.restore_best_weights
            && let Some(path) = store.best_export_path().filter(|p| p.is_file())
        {
            let best = CheckpointFile::read(&path)?;
            model = checkpoints::module::load_weights(model, best.tensors, None, &path)?;
            tel.message(&format!("restored the best weights ({}) from {}", best.meta, path.display()));
            tel.event("restored_best", json!({"path": path, "step": best.meta.step}))?;
        }

        let reason_text = match &reason {
            StopReason::Budget => "budget".to_string(),
            StopReason::Requested { policy, .. } => format!("requested by {policy}"),
            StopReason::Interrupted(s) => s.name().to_string(),
            StopReason::Aborted { policy, .. } => format!("aborted by {policy}"),
        };
        tel.event(
            "run_end",
            json!({"reason": reason_text, "step": st.step, "epoch": st.epoch,
                   "first_loss": first_loss, "last_loss": last_loss,
                   "best": st.best.map(|(s, v)| json!({"step": s, "value": v}))}),
        )?;
        tel.finish()?;

        if let (true, Some(expected), StopReason::Budget) = (overfit, cfg.debug.expected_loss_drop, &reason) {
            let achieved = first_loss / last_loss;
            // NaN (a loss that went to 0/0) fails the check too.
            if achieved.is_nan() || achieved < expected {
                return Err(TrainError::OverfitCheck {
                    first: first_loss,
                    last: last_loss,
                    achieved,
                    expected,
                    steps: st.step,
                });
            }
        }
        Ok(RunSummary { model, state: st, reason, first_loss, last_loss, resumed_from: source.map(|(p, _)| p) })
    }

    /// Consults the policies after an optimizer step; returns the first stop (aborts are not
    /// deferred by `min_steps`).
    fn after_step(&mut self, step: &StepRecord<'_>, tel: &mut Telemetry) -> Result<Option<StopReason>, TrainError> {
        let mut stop = None;
        for policy in &mut self.policies {
            let decision = policy.after_step(step);
            stop = stop.or(report_decision(policy.as_ref(), decision, step.step, self.config.training.min_steps, tel)?);
        }
        Ok(stop)
    }

    /// Runs validation, reports it, updates the best, and consults the stop policies.
    /// Returns the selection metric's value, whether it is the best so far, any stop request,
    /// and all the metrics.
    #[allow(clippy::too_many_arguments)]
    fn validate<B, T>(
        &mut self,
        task: &T,
        model: &T::Model,
        averages: &[(&str, Average<'_, InnerModel<B, T>>)],
        device: &B::Device,
        tel: &mut Telemetry,
        st: &mut LoopState,
        lr: f64,
        selection: &Selection,
    ) -> Result<(f64, bool, Option<StopReason>, Metrics), TrainError>
    where
        B: AutodiffBackend,
        T: Task<B>,
    {
        let log_memory = self.config.logging.memory_every.is_some();
        if log_memory {
            tel.memory(st.step, "Before Validation")?;
        }
        task.begin_validation(st.step);
        let mut metrics = task.validate(&model.valid(), device);
        // Averages are evaluated next to the model (`ema_*`, `swa_*`); one that has no
        // update yet reports NaN, so every validation has the same columns.
        let base: Vec<String> = metrics.keys().cloned().collect();
        for (prefix, average) in averages {
            match average {
                Average::Ready(average) => {
                    let m = task.validate(average, device);
                    metrics.extend(m.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
                }
                Average::Pending => metrics.extend(base.iter().map(|k| (format!("{prefix}{k}"), f64::NAN))),
            }
        }
        if log_memory {
            tel.memory(st.step, "After Validation")?;
        }
        let value = *metrics.get(&selection.metric).ok_or_else(|| TrainError::MissingMetric {
            metric: selection.metric.clone(),
            available: metrics.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let is_best = st.best.is_none_or(|(_, best)| selection.mode.is_better(value, best));
        if is_best {
            st.best = Some((st.step, value));
        }
        tel.validation(st.step, st.epoch, lr, &metrics, is_best)?;
        let mut stop = None;
        let validation = Validation { step: st.step, epoch: st.epoch, lr, metrics: &metrics };
        for policy in &mut self.policies {
            let decision = policy.after_validation(&validation);
            stop = stop.or(report_decision(policy.as_ref(), decision, st.step, self.config.training.min_steps, tel)?);
        }
        Ok((value, is_best, stop, metrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(7, 0, 100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(7, 0, 100), "same seed and epoch, same order");
        assert_ne!(a, epoch_order(7, 1, 100), "each epoch reshuffles");
        assert_ne!(a, epoch_order(8, 0, 100), "the seed drives the order");
    }

    #[test]
    fn step_seeds_differ_per_step_and_seed() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|s| step_seed(42, s)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(step_seed(1, 5), step_seed(2, 5));
    }
}
