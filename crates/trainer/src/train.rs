//! The training loop: data order, micro-batches, averaged accumulation, clipping, the
//! schedule, validation cadence, budgets, stop requests, and Ctrl-C handling.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::config::{DebugConfig, LoggingConfig, NoSection, OptimizerConfig, RunConfig, TrainingConfig};
use crate::grads;
use crate::interrupt::{Interrupts, Signal};
use crate::schedule::LrSchedule;
use crate::task::{Metrics, Task};
use crate::telemetry::{StepRecord, Telemetry};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A telemetry or run-directory file could not be written.
    #[error("writing run output: {0}")]
    Io(#[from] io::Error),
    /// The task has no training samples.
    #[error("the training set is empty: nothing to train on (check the data section of the config)")]
    EmptyDataset,
    /// The loss became NaN or infinite.
    #[error(
        "non-finite loss ({value}) at optimizer step {step}, epoch {epoch}; lower optimizer.lr or set training.gradient_clip_norm"
    )]
    NonFiniteLoss {
        /// Optimizer step being computed (1-based).
        step: u64,
        /// Epoch (0-based).
        epoch: u64,
        /// The loss value.
        value: f64,
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
    /// The save hook failed.
    #[error("saving at step {step} failed: {message}")]
    Save {
        /// Step at which the save was attempted.
        step: u64,
        /// What went wrong.
        message: String,
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
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig<'a> {
    /// Seed for initialisation and data order.
    pub seed: u64,
    /// Budgets, batch shape, clipping, cadence.
    pub training: &'a TrainingConfig,
    /// Optimizer and schedule.
    pub optimizer: &'a OptimizerConfig,
    /// Telemetry.
    pub logging: &'a LoggingConfig,
    /// Debug modes.
    pub debug: &'a DebugConfig,
    /// Where telemetry and saves go.
    pub run_dir: &'a Path,
}

impl<M, D, L> RunConfig<M, D, L> {
    /// The view of this config the training loop needs.
    pub fn loop_config(&self) -> LoopConfig<'_> {
        LoopConfig {
            seed: self.seed,
            training: &self.training,
            optimizer: &self.optimizer,
            logging: &self.logging,
            debug: &self.debug,
            run_dir: &self.output_dir,
        }
    }
}

/// Where the loop stands; handed to save hooks.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// Called after a completed optimizer step when the run must stop and keep its work.
pub trait SaveHook<M> {
    /// Saves what is needed to keep the work; returns the path written.
    fn save(&mut self, model: &M, state: &LoopState, reason: &str) -> Result<PathBuf, String>;
}

/// Saves the model weights (burn named MessagePack) to `<run_dir>/checkpoints/<reason>_step_<N>.mpk`.
pub struct SaveWeights<B> {
    dir: PathBuf,
    _backend: std::marker::PhantomData<B>,
}

impl<B> SaveWeights<B> {
    /// Saves under `run_dir/checkpoints`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("checkpoints"), _backend: std::marker::PhantomData }
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> SaveHook<M> for SaveWeights<B> {
    fn save(&mut self, model: &M, state: &LoopState, reason: &str) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let stem = self.dir.join(format!("{reason}_step_{}", state.step));
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        model.clone().save_file(&stem, &recorder).map_err(|e| format!("{}: {e}", stem.display()))?;
        Ok(stem.with_extension("mpk"))
    }
}

/// A rule that may ask the run to stop after a validation (early stopping and friends).
/// Requests before `training.min_steps` are logged and ignored.
pub trait StopPolicy {
    /// Short name used in telemetry.
    fn name(&self) -> &str;
    /// Looks at a validation's metrics; returns a reason to stop, or `None` to go on.
    fn after_validation(&mut self, step: u64, metrics: &Metrics) -> Option<String>;
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
    /// SIGINT / SIGTERM; the save hook ran after the last completed optimizer step.
    Interrupted(Signal),
}

/// The end of a run.
pub struct RunSummary<M> {
    /// The trained model.
    pub model: M,
    /// Where the loop stopped.
    pub state: LoopState,
    /// Why.
    pub reason: StopReason,
    /// Loss of the first optimizer step.
    pub first_loss: f64,
    /// Loss of the last optimizer step.
    pub last_loss: f64,
}

/// Model initialisation seeds a process-global backend RNG; runs in one process (tests)
/// take turns so each gets exactly its seed's weights.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The order in which epoch `epoch` visits `n` samples: a permutation fixed by `(seed, epoch)`,
/// so a resumed run can jump to any position without replaying the data.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Builds the task's model with the backend seeded by `seed`: the same seed always gives the
/// same initial weights, also when several runs share a process.
pub fn init_model<B: AutodiffBackend, T: Task<B>>(task: &T, seed: u64, device: &B::Device) -> T::Model {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    task.build_model(device)
}

/// Runs a task under a loop configuration.
pub struct Trainer<'a, M> {
    config: LoopConfig<'a>,
    interrupts: Interrupts,
    policies: Vec<Box<dyn StopPolicy + 'a>>,
    save: Option<Box<dyn SaveHook<M> + 'a>>,
}

impl<'a, M> Trainer<'a, M> {
    /// A trainer with no signal handling, no stop policies and no save hook.
    pub fn new(config: LoopConfig<'a>) -> Self {
        Self { config, interrupts: Interrupts::none(), policies: Vec::new(), save: None }
    }

    /// Stops cleanly when `interrupts` fires.
    pub fn interrupts(mut self, interrupts: Interrupts) -> Self {
        self.interrupts = interrupts;
        self
    }

    /// Adds a stop policy.
    pub fn policy(mut self, policy: impl StopPolicy + 'a) -> Self {
        self.policies.push(Box::new(policy));
        self
    }

    /// Sets the hook that keeps the work when the run is interrupted.
    pub fn save_hook(mut self, hook: impl SaveHook<M> + 'a) -> Self {
        self.save = Some(Box::new(hook));
        self
    }

    /// Trains `task` on `device` until the budget, a stop request or a signal.
    pub fn run<B, T>(mut self, task: &T, device: &B::Device) -> Result<RunSummary<M>, TrainError>
    where
        B: AutodiffBackend,
        T: Task<B, Model = M>,
        M: AutodiffModule<B>,
    {
        let cfg = self.config;
        let t = cfg.training;
        let n = task.train_len();
        if n == 0 {
            return Err(TrainError::EmptyDataset);
        }
        std::fs::create_dir_all(cfg.run_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cfg.run_dir.display())))?;

        let overfit = cfg.debug.overfit_single_batch;
        let batches_per_epoch = if overfit { 1 } else { n.div_ceil(t.batch_size) };
        let steps_per_epoch = batches_per_epoch.div_ceil(t.gradient_accumulation_steps) as u64;
        let total_steps = match (t.max_steps, t.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => unreachable!("validated: one budget is set"),
        };
        let schedule = LrSchedule::new(cfg.optimizer.lr, cfg.optimizer.scheduler.clone(), total_steps);

        let mut model = init_model::<B, T>(task, cfg.seed, device);
        let o = cfg.optimizer;
        let mut optim = AdamWConfig::new()
            .with_beta_1(o.betas[0] as f32)
            .with_beta_2(o.betas[1] as f32)
            .with_epsilon(o.eps as f32)
            .with_weight_decay(o.weight_decay as f32)
            .init::<B, M>();

        let mut tel = Telemetry::create(cfg.run_dir, cfg.logging, total_steps)?;
        let selection = task.selection();
        tel.event(
            "run_start",
            json!({
                "seed": cfg.seed, "train_samples": n, "batch_size": t.batch_size,
                "gradient_accumulation_steps": t.gradient_accumulation_steps,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                "parameters": model.num_params(), "precision": "f32",
                "selection": selection, "overfit_single_batch": overfit,
            }),
        )?;
        tracing::info!(
            "training {} parameters for {total_steps} optimizer steps ({steps_per_epoch} per epoch, \
             batch {} x {} accumulation), precision f32",
            model.num_params(),
            t.batch_size,
            t.gradient_accumulation_steps
        );

        let mut state = LoopState { step: 0, epoch: 0, position: 0, best: None };
        let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
        let mut validated_at = None;
        let mut reason = StopReason::Budget;

        'epochs: loop {
            let order = if overfit { (0..n).collect() } else { epoch_order(cfg.seed, state.epoch, n) };
            let batches: Vec<&[usize]> =
                if overfit { vec![&order[..t.batch_size.min(n)]] } else { order.chunks(t.batch_size).collect() };
            for window in batches.chunks(t.gradient_accumulation_steps) {
                let started = Instant::now();
                let window: Vec<&[usize]> =
                    if overfit { vec![batches[0]; t.gradient_accumulation_steps] } else { window.to_vec() };
                let window_samples: usize = window.iter().map(|b| b.len()).sum();
                let mut accumulator = GradientsAccumulator::<M>::new();
                let mut loss_sum = 0.0;
                let mut metric_sums = Metrics::new();
                for indices in &window {
                    let batch = task.train_batch(indices, device);
                    let out = task.train_step(&model, &batch);
                    let weight = indices.len() as f64 / window_samples as f64;
                    let loss_value: f64 = out.loss.clone().into_scalar().elem();
                    if !loss_value.is_finite() {
                        return Err(TrainError::NonFiniteLoss {
                            step: state.step + 1,
                            epoch: state.epoch,
                            value: loss_value,
                        });
                    }
                    loss_sum += loss_value * weight;
                    for (k, v) in out.metrics {
                        *metric_sums.entry(k).or_default() += v * weight;
                    }
                    // Scaling each micro-batch's mean loss by its share of the window makes the
                    // summed gradients the gradient of the mean over the whole window.
                    let grads = out.loss.mul_scalar(weight).backward();
                    accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
                    state.position += 1;
                }
                let mut gradients = accumulator.grads();
                if let Some(bound) = t.gradient_clip_value {
                    grads::clamp::<B, M>(&model, &mut gradients, bound);
                }
                let grad_norm = grads::global_norm::<B, M>(&model, &mut gradients);
                if let Some(max_norm) = t.gradient_clip_norm {
                    grads::clip_global_norm::<B, M>(&model, &mut gradients, grad_norm, max_norm);
                }
                let lr = schedule.lr_at(state.step);
                model = optim.step(lr, model, gradients);
                state.step += 1;
                B::sync(device).ok();

                if state.step == 1 {
                    first_loss = loss_sum;
                }
                last_loss = loss_sum;
                tel.train_step(&StepRecord {
                    step: state.step,
                    epoch: state.epoch,
                    loss: loss_sum,
                    lr,
                    grad_norm,
                    metrics: &metric_sums,
                    step_time: started.elapsed().as_secs_f64(),
                })?;

                if t.val_every.is_some_and(|every| state.step.is_multiple_of(every)) {
                    if let Some(stop) = self.validate(task, &model, device, &mut tel, &mut state, lr, &selection)? {
                        reason = stop;
                        validated_at = Some(state.step);
                        break 'epochs;
                    }
                    validated_at = Some(state.step);
                }
                if let Some(signal) = self.interrupts.received() {
                    reason = StopReason::Interrupted(signal);
                    break 'epochs;
                }
                if state.step >= total_steps {
                    break 'epochs;
                }
            }
            if t.val_every.is_none() {
                let lr = schedule.lr_at(state.step.saturating_sub(1));
                let stop = self.validate(task, &model, device, &mut tel, &mut state, lr, &selection)?;
                validated_at = Some(state.step);
                if let Some(stop) = stop {
                    reason = stop;
                    break 'epochs;
                }
            }
            state.epoch += 1;
            state.position = 0;
            if t.epochs.is_some_and(|e| state.epoch >= e) {
                break;
            }
        }

        match reason {
            StopReason::Interrupted(signal) => {
                tracing::warn!("{} received: stopping after optimizer step {}", signal.name(), state.step);
                tel.event("interrupted", json!({"signal": signal.name(), "step": state.step, "epoch": state.epoch}))?;
                if let Some(hook) = self.save.as_mut() {
                    let path = hook
                        .save(&model, &state, "interrupted")
                        .map_err(|message| TrainError::Save { step: state.step, message })?;
                    tel.checkpoint(state.step, &path, "interrupted")?;
                    tracing::info!("saved {}", path.display());
                }
            }
            _ if validated_at != Some(state.step) => {
                // The final weights are always evaluated, so the best model is never stale.
                let lr = schedule.lr_at(state.step.saturating_sub(1));
                self.validate(task, &model, device, &mut tel, &mut state, lr, &selection)?;
            }
            _ => {}
        }
        let reason_text = match &reason {
            StopReason::Budget => "budget".to_string(),
            StopReason::Requested { policy, .. } => format!("requested by {policy}"),
            StopReason::Interrupted(s) => s.name().to_string(),
        };
        tel.event(
            "run_end",
            json!({"reason": reason_text, "step": state.step, "epoch": state.epoch,
                   "first_loss": first_loss, "last_loss": last_loss,
                   "best": state.best.map(|(s, v)| json!({"step": s, "value": v}))}),
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
                    steps: state.step,
                });
            }
        }
        Ok(RunSummary { model, state, reason, first_loss, last_loss })
    }

    /// Runs validation, reports it, updates the best, and consults the stop policies.
    #[allow(clippy::too_many_arguments)]
    fn validate<B, T>(
        &mut self,
        task: &T,
        model: &M,
        device: &B::Device,
        tel: &mut Telemetry,
        state: &mut LoopState,
        lr: f64,
        selection: &crate::task::Selection,
    ) -> Result<Option<StopReason>, TrainError>
    where
        B: AutodiffBackend,
        T: Task<B, Model = M>,
        M: AutodiffModule<B>,
    {
        let metrics = task.validate(&model.valid(), device);
        let value = *metrics.get(&selection.metric).ok_or_else(|| TrainError::MissingMetric {
            metric: selection.metric.clone(),
            available: metrics.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let is_best = state.best.is_none_or(|(_, best)| selection.mode.is_better(value, best));
        if is_best {
            state.best = Some((state.step, value));
        }
        tel.validation(state.step, state.epoch, lr, &metrics, is_best)?;
        for policy in &mut self.policies {
            if let Some(why) = policy.after_validation(state.step, &metrics) {
                if state.step < self.config.training.min_steps {
                    tel.event(
                        "stop_ignored",
                        json!({"step": state.step, "policy": policy.name(), "reason": why,
                               "min_steps": self.config.training.min_steps}),
                    )?;
                    continue;
                }
                tel.event("stop_requested", json!({"step": state.step, "policy": policy.name(), "reason": why}))?;
                return Ok(Some(StopReason::Requested { policy: policy.name().to_string(), reason: why }));
            }
        }
        Ok(None)
    }
}

/// A config with no stage sections, for tests and embedders that drive the loop directly.
pub type BareConfig = RunConfig<NoSection, NoSection, NoSection>;

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
}
