//! The training loop. [`Trainer::run`] is where a run starts; each optimizer step happens in
//! [`step`](self) (`Run::step`), and everything between two steps in `boundary.rs`.
//!
//! - `determinism.rs`: data order from `(seed, epoch)`, the backend reseeded from
//!   `(seed, step)`, seeded initialisation.
//! - `resume.rs`: the checkpoint to resume from and whether it belongs to this run, restoring
//!   the loop from it, archiving an earlier run when starting fresh.
//! - `checkpointing.rs`: the resume bundle and weight exports, written through the store.
//! - `step.rs`: one optimizer step: micro-batches, the out-of-memory ladder, averaged
//!   accumulation, clipping, non-finite checks, the update.
//! - `boundary.rs`: after a step: stop policies, validation (plateau, top-K ranking, best),
//!   epoch ends, signals, and which checkpoints the boundary triggers.
//!
//! Errors: a task error (unreadable data) or a non-finite step checkpoints the last good
//! state before the run returns its [`TrainError`]; an out-of-memory is retried down the
//! ladder; a panic that is not an out-of-memory propagates.

mod boundary;
mod checkpointing;
mod determinism;
mod resume;
mod step;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use checkpoints::{CheckpointError, CheckpointFile, CheckpointStore, RetentionConfig, RunIdentity, Trigger};
use schedulers::{BuildContext, Interval, PlateauMode, Scheduler};
use serde::Serialize;
use serde_json::json;

pub(crate) use determinism::{INIT_LOCK, reseed_for_step};
pub use determinism::{epoch_order, init_model, step_seed};

use crate::averaging::{Ema, Swa};
use crate::averaging::{EmaConfig, SwaConfig};
use crate::config::{DebugConfig, LoggingConfig, OptimizerConfig, ResumeConfig, RunConfig, TrainingConfig};
use crate::early_stopping::{EarlyStopping, EarlyStoppingConfig};
use crate::interrupt::{Interrupts, Signal};
use crate::oom::{self, OomConfig, OomRung};
pub use crate::policy::{Decision, StopPolicy, Validation};
use crate::spike_guard::{SpikeGuard, SpikeGuardConfig};
use crate::task::{Mode, ResumeEvent, Selection, Task, TaskError};
use crate::telemetry::{Telemetry, TelemetryCounters};

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
    /// The task failed to read its data (or to run a step) in the middle of the run. The last
    /// good state was checkpointed first.
    #[error(
        "{what} at optimizer step {step} (epoch {}): {message}{}",
        epoch + 1,
        checkpoint.as_ref().map(|p| format!("; the last good state is in {}", p.display())).unwrap_or_default()
    )]
    Task {
        /// What the loop was doing (`assembling a training batch`, `validating`, ...).
        what: String,
        /// Optimizer step being computed (1-based), or the one just completed for validation.
        step: u64,
        /// Epoch index (0-based; messages show it 1-based, as the epoch_N files are named).
        epoch: u64,
        /// The task's message, naming the file.
        message: String,
        /// The checkpoint written before stopping.
        checkpoint: Option<PathBuf>,
    },
    /// The task has no training samples.
    #[error("the training set is empty: nothing to train on (check the data section of the config)")]
    EmptyDataset,
    /// A NaN or infinity appeared in the loss, a loss component or the gradient norm. The
    /// update was not applied; the last good state was checkpointed.
    #[error(
        "non-finite value at optimizer step {step} (epoch {}): {what}; the update was not applied{}. \
         Lower optimizer.lr or set training.gradient_clip_norm",
        epoch + 1,
        checkpoint.as_ref().map(|p| format!(" and the last good state is in {}", p.display())).unwrap_or_default()
    )]
    Anomaly {
        /// Optimizer step being computed (1-based).
        step: u64,
        /// Epoch index (0-based; messages show it 1-based, as the epoch_N files are named).
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
    /// The resolved config as YAML, written to `config.yaml` in the run directory once the run
    /// has started or resumed (never before a resume is accepted, so a refused resume leaves the
    /// earlier run's file as it was). `None` writes none.
    pub resolved_config: Option<String>,
}

impl LoopConfig<'_> {
    /// The directory checkpoints are written to and resumed from (`checkpoint.dir`, relative to
    /// the run directory).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoint.checkpoint_dir(self.run_dir)
    }
}

impl<M: Serialize, D: Serialize, L: Serialize + 'static> RunConfig<M, D, L> {
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
            resolved_config: Some(crate::config::to_yaml(self)),
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

/// The resolved config in the run directory.
pub const RESOLVED_CONFIG: &str = "config.yaml";

pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The metric that selects the best model: the task's, unless `checkpoint.monitor` names
/// another (then `checkpoint.mode` must say its direction — guessing "min" for an accuracy
/// silently keeps the worst checkpoints).
pub fn run_selection(task: Selection, checkpoint: &RetentionConfig) -> Result<Selection, TrainError> {
    match (&checkpoint.monitor, checkpoint.mode) {
        (None, None) => Ok(task),
        (None, Some(mode)) => Ok(Selection { mode, ..task }),
        (Some(metric), Some(mode)) => Ok(Selection { metric: metric.clone(), mode }),
        (Some(metric), None) if *metric == task.metric => Ok(task),
        (Some(metric), None) => Err(TrainError::MonitorNeedsMode { metric: metric.clone(), selection: task.metric }),
    }
}

/// The non-autodiff model type of task `T`.
type InnerModel<B, T> = <<T as Task<B>>::Model as AutodiffModule<B>>::InnerModule;

/// Runs a task under a loop configuration.
pub struct Trainer<'a> {
    config: LoopConfig<'a>,
    interrupts: Interrupts,
    policies: Vec<Box<dyn StopPolicy + 'a>>,
}

pub(crate) use crate::optim::adamw;

/// The shape of a run, fixed before the first step: budgets, batches per epoch, the metric
/// that selects the best model and the one the plateau schedule watches.
struct Plan {
    /// Training samples.
    n: usize,
    /// `debug.overfit_single_batch`: every epoch is one window of the same first batch.
    overfit: bool,
    /// Micro-batches per optimizer step.
    accum: usize,
    steps_per_epoch: u64,
    total_steps: u64,
    selection: Selection,
    /// The metric ReduceLROnPlateau watches.
    monitor: String,
    interval: Interval,
    /// The optimizer step SWA starts averaging at.
    swa_start: u64,
}

impl Plan {
    /// The plan for `task` under `cfg`, and the learning-rate scheduler it implies.
    fn new<B: AutodiffBackend, T: Task<B>>(cfg: &LoopConfig<'_>, task: &T) -> Result<(Self, Scheduler), TrainError> {
        let t = cfg.training;
        let n = task.train_len();
        let overfit = cfg.debug.overfit_single_batch;
        let accum = t.gradient_accumulation_steps;
        let batches_per_epoch = t.batches_per_epoch(n, overfit);
        let steps_per_epoch = t.steps_per_epoch(n, overfit);
        if accum > batches_per_epoch {
            // A window never spans two epochs (each has its own order), so the step is cut.
            tracing::warn!(
                "training.gradient_accumulation_steps is {accum} but an epoch has only {batches_per_epoch} \
                 micro-batches of {}: each optimizer step accumulates {batches_per_epoch}",
                t.batch_size
            );
        }
        let total_steps = match (t.max_steps, t.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => unreachable!("validated: one budget is set"),
        };
        let selection = run_selection(task.selection(), cfg.checkpoint)?;
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
        let scheduler = spec
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
        let swa_start = cfg.swa.start_step(total_steps);
        let plan = Plan {
            n,
            overfit,
            accum,
            steps_per_epoch,
            total_steps,
            selection,
            monitor,
            interval: spec.interval,
            swa_start,
        };
        Ok((plan, scheduler))
    }

    /// The schedule index of 0-based optimizer step `step`: the step, or the epoch it is in
    /// (every epoch has exactly `steps_per_epoch` optimizer steps).
    fn index(&self, step: u64) -> u64 {
        match self.interval {
            Interval::Step => step,
            Interval::Epoch => step / self.steps_per_epoch,
        }
    }
}

/// A run in progress: the loop's state besides the model itself (which the optimizer consumes
/// and returns at every step, so it travels by value through [`Run::step`]).
struct Run<'r, B: AutodiffBackend, T: Task<B>> {
    cfg: LoopConfig<'r>,
    interrupts: Interrupts,
    policies: Vec<Box<dyn StopPolicy + 'r>>,
    task: &'r T,
    device: &'r B::Device,
    plan: Plan,
    scheduler: Scheduler,
    optim: crate::optim::LoopOptimizer<B, T::Model>,
    /// Adam's β1 the optimizer was built with (cycled by OneCycle / cyclical schedules).
    beta_1: f64,
    st: LoopState,
    first_loss: f64,
    last_loss: f64,
    /// The step of the last validation.
    validated_at: Option<u64>,
    rung: OomRung,
    ema: Option<Ema<B, T::Model>>,
    swa: Option<Swa<B, T::Model>>,
    tel: Telemetry,
    store: CheckpointStore,
    identity: RunIdentity,
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

    /// Trains `task` on `device` until the budget, a stop request or a signal.
    pub fn run<B, T>(self, task: &T, device: &B::Device) -> Result<RunSummary<T::Model>, TrainError>
    where
        B: AutodiffBackend,
        T: Task<B>,
    {
        let Trainer { config: cfg, interrupts, mut policies } = self;
        if cfg.oom.enabled {
            oom::watch_device_panics();
        }
        if task.train_len() == 0 {
            return Err(TrainError::EmptyDataset);
        }
        std::fs::create_dir_all(cfg.run_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.run_dir.display())))?;
        let (plan, mut scheduler) = Plan::new(&cfg, task)?;
        if cfg.early_stopping.enabled {
            policies.insert(0, Box::new(EarlyStopping::new(cfg.early_stopping.clone(), &plan.selection)));
        }
        if cfg.spike_guard.enabled() {
            policies.insert(0, Box::new(SpikeGuard::new(cfg.spike_guard.clone())));
        }
        let identity = RunIdentity {
            seed: cfg.seed,
            dataset_id: task.dataset_id(),
            mode: task.mode(),
            config_hash: cfg.config_hash.clone(),
        };

        let mut source = resume::find_source(&cfg, &identity)?;
        if let Some((path, file)) = &source {
            task.on_resume(ResumeEvent::Found { path, step: file.meta.step, epoch: file.meta.epoch });
        }
        if source.is_none() {
            // A fresh start never mixes with an earlier run's files: set them aside.
            if let Some(archived) = resume::archive_previous_run(&cfg)? {
                tracing::warn!(
                    "moved the files of an earlier run without a usable checkpoint to {}",
                    archived.display()
                );
            }
        }

        let mut model = init_model::<B, T>(task, cfg.seed, device);
        let mut optim = adamw::<B, T::Model>(cfg.optimizer, cfg.optimizer.betas[0]);
        if cfg.optimizer.weight_decay > 0.0 {
            let [dt, dp, nt, np] = crate::optim::decay_groups::<B, _>(&model, cfg.optimizer.weight_decay_params);
            tracing::info!(
                "weight decay {} ({}): on {dt} parameter tensors ({dp} parameters), not on {nt} ({np} parameters)",
                cfg.optimizer.weight_decay,
                cfg.optimizer.weight_decay_params.name()
            );
        }
        let restored = match &mut source {
            Some((path, file)) => {
                let loaded =
                    resume::restore::<B, T>(path, file, model, optim, &mut policies, &mut scheduler, task, device)?;
                model = loaded.model;
                optim = loaded.optim;
                Some(loaded.restored)
            }
            None => None,
        };
        // Only now, with the resume accepted (or a fresh start whose predecessor was archived),
        // does this run's config replace the run directory's.
        if let Some(yaml) = &cfg.resolved_config {
            let path = cfg.run_dir.join(RESOLVED_CONFIG);
            checkpoints::atomic::write_atomic(&path, |f| io::Write::write_all(f, yaml.as_bytes()), || {})
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }

        let mut retention = cfg.checkpoint.clone();
        // Relative to the run directory; `.` components dropped so logged paths read cleanly.
        let in_run = |d: PathBuf| -> PathBuf {
            cfg.run_dir.join(d).components().filter(|c| *c != std::path::Component::CurDir).collect()
        };
        retention.top_k_dir = retention.top_k_dir.map(in_run);
        retention.export_best_dir = retention.export_best_dir.map(in_run);
        let store = CheckpointStore::open(
            &cfg.checkpoint_dir(),
            retention,
            &plan.selection.metric,
            plan.selection.mode,
            source.as_ref().map(|(p, _)| p.clone()),
        )?
        .with_save_delay(Duration::from_millis(cfg.debug.save_delay_ms));

        let ema = if cfg.ema.enabled {
            let mut e = Ema::<B, T::Model>::new(cfg.ema.clone(), &model);
            if let (Some((path, _)), Some(r)) = (&source, &restored)
                && let Some(updates) = r.saved.ema_updates
            {
                e.average = checkpoints::module::load_weights(model.valid(), r.ema.clone(), None, path)?;
                e.updates = updates;
            }
            Some(e)
        } else {
            None
        };
        let swa = if cfg.swa.enabled {
            let mut w = Swa::<B, T::Model>::new(&model);
            if let (Some((path, _)), Some(r)) = (&source, &restored)
                && let Some(updates) = r.saved.swa_updates
            {
                w.average = checkpoints::module::load_weights(model.valid(), r.swa.clone(), None, path)?;
                w.updates = updates;
            }
            Some(w)
        } else {
            None
        };

        let counters: Option<(u64, TelemetryCounters)> = restored.as_ref().map(|r| (r.saved.step, r.saved.telemetry));
        let tel = Telemetry::create(cfg.run_dir, cfg.logging, plan.total_steps, counters)?;
        let mut run = Run {
            beta_1: cfg.optimizer.betas[0],
            st: restored.as_ref().map(|r| r.loop_state()).unwrap_or_default(),
            first_loss: restored.as_ref().map_or(f64::NAN, |r| r.saved.first_loss.0),
            last_loss: restored.as_ref().map_or(f64::NAN, |r| r.saved.last_loss.0),
            validated_at: restored.as_ref().and_then(|r| r.saved.validated_at),
            rung: restored.as_ref().and_then(|r| r.saved.oom.as_ref()).map_or_else(OomRung::start, |o| o.rung),
            cfg,
            interrupts,
            policies,
            task,
            device,
            plan,
            scheduler,
            optim,
            ema,
            swa,
            tel,
            store,
            identity,
        };
        drop(restored);
        let resumed_from = source.map(|(p, _)| p);
        run.announce(&model, resumed_from.as_deref())?;
        if let Some(path) = &resumed_from {
            task.on_resume(ResumeEvent::Restored { path, state: run.st });
        }
        let (model, reason) = run.train(model)?;
        run.finish(model, reason, resumed_from)
    }
}

impl<'r, B: AutodiffBackend, T: Task<B>> Run<'r, B, T> {
    /// The `run_start` or `resume` event and the start-up line.
    fn announce(&mut self, model: &T::Model, resumed_from: Option<&Path>) -> Result<(), TrainError> {
        let (cfg, plan, st) = (&self.cfg, &self.plan, &self.st);
        let t = cfg.training;
        match resumed_from {
            None => self.tel.event(
                "run_start",
                json!({
                    "seed": cfg.seed, "train_samples": plan.n, "batch_size": t.batch_size,
                    "gradient_accumulation_steps": plan.accum, "steps_per_epoch": plan.steps_per_epoch,
                    "total_steps": plan.total_steps, "parameters": model.num_params(), "precision": t.effective_precision().name(),
                    "selection": plan.selection, "identity": self.identity,
                    "overfit_single_batch": plan.overfit,
                }),
            )?,
            Some(path) => {
                tracing::info!(
                    "resumed from {} at step {} (epoch {}): model weights and ids, optimizer moments, \
                     step/epoch/position, best, telemetry counters, {} policy state(s)",
                    path.display(),
                    st.step,
                    st.epoch + 1,
                    self.policies.len()
                );
                self.tel.event(
                    "resume",
                    json!({
                        "path": path, "step": st.step, "epoch": st.epoch, "position": st.position,
                        "best": st.best.map(|(s, v)| json!({"step": s, "value": v})),
                        "restored": ["model", "parameter_ids", "optimizer", "schedule_step", "scheduler_state",
                                     "data_cursor", "rng", "best", "telemetry_counters", "policies"],
                        "total_steps": plan.total_steps,
                    }),
                )?
            }
        }
        tracing::info!(
            "training {} parameters for {} optimizer steps ({} per epoch, batch {} x {} accumulation), precision {}",
            model.num_params(),
            plan.total_steps,
            plan.steps_per_epoch,
            t.batch_size,
            plan.accum,
            t.effective_precision().name(),
        );
        Ok(())
    }

    /// Epochs of steps until the budget, a stop request or a signal; returns the model and why
    /// the loop ended.
    fn train(&mut self, mut model: T::Model) -> Result<(T::Model, StopReason), TrainError> {
        let t = self.cfg.training;
        let finished = self.st.step >= self.plan.total_steps || t.epochs.is_some_and(|e| self.st.epoch >= e);
        if finished {
            return Ok((model, StopReason::Budget));
        }
        if self.cfg.debug.validate_before_training && self.st.step == 0 && self.st.position == 0 {
            let lr = self.scheduler.lr_at(self.plan.index(0));
            self.validate_baseline(&model, lr)?;
        }
        loop {
            let n = self.plan.n;
            let order = if self.plan.overfit { (0..n).collect() } else { epoch_order(self.cfg.seed, self.st.epoch, n) };
            if let Err(e) = self.task.begin_epoch(self.st.epoch) {
                return Err(self.fail_task(&model, "starting the epoch", self.st.step + 1, e));
            }
            let accum = self.plan.accum;
            let batches: Vec<&[usize]> = if self.plan.overfit {
                vec![&order[..t.batch_size.min(n)]; accum]
            } else {
                order.chunks(t.batch_size).collect()
            };
            while self.st.position < batches.len() {
                let window = &batches[self.st.position..(self.st.position + accum).min(batches.len())];
                let (next, done) = self.step(model, window)?;
                model = next;
                let epoch_done = self.st.position >= batches.len();
                if let Some(reason) = self.boundary(&model, done, epoch_done)? {
                    return Ok((model, reason));
                }
                if epoch_done {
                    // The next epoch needs its own order.
                    break;
                }
            }
        }
    }

    /// The end of the run: policy summaries, best weights restored if asked, `run_end`, the
    /// overfit check.
    fn finish(
        mut self,
        mut model: T::Model,
        reason: StopReason,
        resumed_from: Option<PathBuf>,
    ) -> Result<RunSummary<T::Model>, TrainError> {
        for policy in &self.policies {
            if let Some(line) = policy.summary() {
                self.tel.message(&line);
            }
        }
        if self.cfg.early_stopping.restore_best_weights
            && let Some(path) = self.store.best_export_path().filter(|p| p.is_file())
        {
            let best = CheckpointFile::read(&path)?;
            model = checkpoints::module::load_weights(model, best.tensors, None, &path)?;
            self.tel.message(&format!("restored the best weights ({}) from {}", best.meta, path.display()));
            self.tel.event("restored_best", json!({"path": path, "step": best.meta.step}))?;
        }

        let st = self.st;
        let reason_text = match &reason {
            StopReason::Budget => "budget".to_string(),
            StopReason::Requested { policy, .. } => format!("requested by {policy}"),
            StopReason::Interrupted(s) => s.name().to_string(),
            StopReason::Aborted { policy, .. } => format!("aborted by {policy}"),
        };
        self.tel.event(
            "run_end",
            json!({"reason": reason_text, "step": st.step, "epoch": st.epoch,
                   "first_loss": self.first_loss, "last_loss": self.last_loss,
                   "best": st.best.map(|(s, v)| json!({"step": s, "value": v}))}),
        )?;
        self.tel.finish()?;

        let (first_loss, last_loss) = (self.first_loss, self.last_loss);
        if let (true, Some(expected), StopReason::Budget) =
            (self.plan.overfit, self.cfg.debug.expected_loss_drop, &reason)
        {
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
        Ok(RunSummary { model, state: st, reason, first_loss, last_loss, resumed_from })
    }

    /// A task error (unreadable data) stops the run after checkpointing the last good state:
    /// the weights and loop state of `st.step`, before the failed attempt touched anything.
    /// Returns the error to stop with (a failure to checkpoint or log replaces it).
    fn fail_task(&mut self, model: &T::Model, what: &str, step: u64, error: TaskError) -> TrainError {
        let message = error.to_string();
        let checkpoint = (|| {
            self.tel
                .event("data_error", json!({"step": step, "epoch": self.st.epoch, "what": what, "message": message}))?;
            let report = self.save(model, &[Trigger::Final], "data_error")?;
            self.tel.finish()?;
            Ok::<_, TrainError>(report.written.first().cloned())
        })();
        let checkpoint = checkpoint.unwrap_or_else(|e| {
            // The data error is what the user must see; the failed save is reported beside it.
            tracing::error!("could not checkpoint the last good state after the data error: {e}");
            None
        });
        TrainError::Task { what: what.to_string(), step, epoch: self.st.epoch, message, checkpoint }
    }
}
