//! One optimizer step: the window's micro-batches at the current out-of-memory rung (retried
//! one rung down on an out-of-memory), gradients averaged over the window, value and norm
//! clipping, non-finite checks (the update is then not applied and the last good state is
//! checkpointed), the learning rate and β1 of the schedule, the update, and the EMA.

use std::time::Instant;

use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use checkpoints::Trigger;
use serde_json::json;

use super::{Run, TrainError, adamw, reseed_for_step};
use crate::grads;
use crate::oom;
use crate::task::{Metrics, Task, TaskError};
use crate::telemetry;

/// Why one attempt at a step's micro-batches failed.
enum Attempt {
    /// Out of memory: retried one rung down the ladder.
    Oom(String),
    /// The task failed (`what` it was doing): the run stops.
    Task(&'static str, TaskError),
}

/// A completed optimizer step, as the boundary reports it.
pub(super) struct StepDone {
    /// Mean loss over the window (sample-weighted).
    pub(super) loss: f64,
    /// Learning rate used.
    pub(super) lr: f64,
    /// Global gradient norm before clipping.
    pub(super) grad_norm: f64,
    /// Named metrics (sample-weighted means).
    pub(super) metrics: Metrics,
    /// Seconds the step took.
    pub(super) seconds: f64,
}

/// What an attempt produced: gradients, the window's mean loss and metrics, and the first
/// non-finite value found.
type Attempted = (GradientsParams, f64, Metrics, Option<String>);

impl<B: AutodiffBackend, T: Task<B>> Run<'_, B, T> {
    /// Runs the micro-batches `micro` (sample index lists of one window with
    /// `window_samples` samples) and accumulates their averaged gradients.
    fn attempt(
        &self,
        model: &T::Model,
        micro: &[&[usize]],
        window_samples: usize,
        inject: bool,
    ) -> Result<Attempted, Attempt> {
        if inject {
            return Err(Attempt::Oom("injected out-of-memory (oom.inject_at_steps)".to_string()));
        }
        let (task, device) = (self.task, self.device);
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut loss_sum = 0.0;
        let mut metric_sums = Metrics::new();
        // The first NaN/Inf found in this step: loss, then (with debug.detect_anomaly)
        // each named loss component, then the gradient norm.
        let mut offender: Option<String> = None;
        for (i, indices) in micro.iter().enumerate() {
            let batch =
                task.train_batch(indices, device).map_err(|e| Attempt::Task("assembling a training batch", e))?;
            let out = task.train_step(model, &batch).map_err(|e| Attempt::Task("running a training step", e))?;
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
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
            if let Some(budget) = self.cfg.oom.memory_budget_bytes
                && let Some(m) = telemetry::memory_now()
                && m.bytes > budget
            {
                return Err(Attempt::Oom(format!(
                    "resident memory {} bytes over oom.memory_budget_bytes {budget}",
                    m.bytes
                )));
            }
        }
        if let Err(e) = B::sync(device)
            && oom::is_oom_message(&e.to_string())
        {
            return Err(Attempt::Oom(e.to_string()));
        }
        Ok((accumulator.grads(), loss_sum, metric_sums, offender))
    }

    /// The window's gradients, retrying one rung down the out-of-memory ladder (stage knob,
    /// then micro-batch splits) until an attempt fits. A task error stops the run after
    /// checkpointing the last good state.
    fn gradients(&mut self, model: &T::Model, window: &[&[usize]]) -> Result<Attempted, TrainError> {
        let window_samples: usize = window.iter().map(|b| b.len()).sum();
        let step = self.st.step + 1;
        let mut inject = self.cfg.oom.inject_at_steps.contains(&step);
        loop {
            let micro = self.rung.micro_batches(window);
            // A GPU allocation failure may show up only as a panic in the backend's device
            // thread (recorded by the panic watch), possibly followed by a panic here when a
            // value is read back; both count as out-of-memory.
            let mark = oom::device_oom_mark();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.attempt(model, &micro, window_samples, std::mem::take(&mut inject))
            }));
            let reason = match (outcome, oom::device_oom_since(mark)) {
                (Ok(Err(Attempt::Task(what, e))), _) => return Err(self.fail_task(model, what, step, e)),
                (Ok(Ok(_)) | Err(_), Some(device)) => device,
                (Ok(Err(Attempt::Oom(reason))), Some(device)) => format!("{reason}; {device}"),
                (Ok(Ok(done)), None) => return Ok(done),
                (Ok(Err(Attempt::Oom(reason))), None) => reason,
                (Err(panic), None) => {
                    let text = oom::panic_text(panic.as_ref());
                    if oom::is_oom_message(&text) { text } else { std::panic::resume_unwind(panic) }
                }
            };
            self.degrade(window, step, reason)?;
        }
    }

    /// Goes one rung down the out-of-memory ladder after `reason`, or fails when nothing is
    /// left to lower.
    fn degrade(&mut self, window: &[&[usize]], step: u64, reason: String) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let action = if !cfg.oom.enabled {
            None
        } else if let Some(lowered) = self.task.degrade() {
            Some(lowered)
        } else if self.rung.can_split(window, cfg.oom.min_micro_batch) {
            self.rung.split *= 2;
            Some(format!(
                "micro-batches split in {} (accumulation x{}): same samples per step",
                self.rung.split, self.rung.split
            ))
        } else {
            None
        };
        self.rung.events += 1;
        B::memory_cleanup(self.device);
        self.tel.event(
            "oom",
            json!({"step": step, "reason": reason, "action": action,
                   "split": self.rung.split, "knob": self.task.degrade_state()}),
        )?;
        let Some(action) = action else {
            return Err(TrainError::OutOfMemory { step, reason });
        };
        self.tel.message(&format!("⚠ Out of memory at step {step}: {action}; retrying the step"));
        Ok(())
    }

    /// One optimizer step on `window` (the micro-batches' sample indices). Returns the updated
    /// model and what the step measured.
    pub(super) fn step(&mut self, model: T::Model, window: &[&[usize]]) -> Result<(T::Model, StepDone), TrainError> {
        let started = Instant::now();
        // The config sections are shared references: copied out, they outlive the `&mut self`
        // calls below without cloning the whole config (its resolved YAML) every step.
        let (t, debug, swa, optimizer) = (self.cfg.training, self.cfg.debug, self.cfg.swa, self.cfg.optimizer);
        reseed_for_step::<B>(self.device, self.cfg.seed, self.st.step);
        let step = self.st.step + 1;
        let log_memory = self.cfg.logging.memory_every.is_some_and(|n| step.is_multiple_of(n));
        if log_memory {
            self.tel.memory(step, "Before Forward")?;
        }
        let (mut gradients, loss, metrics, mut offender) = self.gradients(&model, window)?;
        if log_memory {
            self.tel.memory(step, "After Backward")?;
        }
        if let Some(bound) = t.gradient_clip_value {
            grads::clamp::<B, T::Model>(&model, &mut gradients, bound);
        }
        let grad_norm = grads::global_norm::<B, T::Model>(&model, &mut gradients);
        if let Some(max_norm) = t.gradient_clip_norm {
            grads::clip_global_norm::<B, T::Model>(&model, &mut gradients, grad_norm, max_norm);
        }
        if offender.is_none() && debug.detect_anomaly {
            offender =
                metrics.iter().find(|(_, v)| !v.is_finite()).map(|(k, v)| format!("loss component `{k}` is {v}"));
        }
        if offender.is_none() && !grad_norm.is_finite() {
            offender = Some(format!("the global gradient norm is {grad_norm}"));
        }
        if let Some(what) = offender {
            // The update is not applied: the checkpoint holds the last good weights.
            self.tel.event("anomaly", json!({"step": step, "epoch": self.st.epoch, "what": what}))?;
            let report = self.save(&model, &[Trigger::Final], "anomaly")?;
            self.tel.finish()?;
            return Err(TrainError::Anomaly {
                step,
                epoch: self.st.epoch,
                what,
                checkpoint: report.written.first().cloned(),
            });
        }
        let plan = &self.plan;
        let at = plan.index(self.st.step);
        let lr = self
            .swa
            .as_ref()
            .and_then(|_| {
                swa.lr_at(
                    self.st.step,
                    plan.swa_start,
                    self.scheduler.lr_at(plan.index(plan.swa_start.saturating_sub(1))),
                )
            })
            .unwrap_or_else(|| self.scheduler.lr_at(at));
        let momentum = self.scheduler.momentum_at(at).unwrap_or(optimizer.betas[0]);
        if momentum != self.beta_1 {
            // OneCycle and cyclical schedules move Adam's β1 inversely to the LR (torch sets
            // `betas[0]`); burn fixes β1 at construction, so the optimizer is rebuilt around its
            // state whenever β1 changes.
            self.beta_1 = momentum;
            self.optim = adamw::<B, T::Model>(optimizer, momentum).load_record(self.optim.to_record());
        }
        let model = self.optim.step(lr, model, gradients);
        self.st.step += 1;
        self.st.position += window.len();
        if let Some(e) = &mut self.ema {
            e.update(self.st.step, &model);
        }
        // A device failure (lost device, out of memory on a GPU backend) surfaces here
        // as an error, not as silently wrong numbers later.
        B::sync(self.device).map_err(|e| TrainError::Device { step: self.st.step, message: e.to_string() })?;
        if self.first_loss.is_nan() {
            self.first_loss = loss;
        }
        self.last_loss = loss;
        let done = StepDone { loss, lr, grad_norm, metrics, seconds: started.elapsed().as_secs_f64() };
        Ok((model, done))
    }
}
