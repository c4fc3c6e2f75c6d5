//! What happens at the boundary after an optimizer step, in an order that makes the
//! checkpoint written at the end of it include everything: the step's telemetry, step
//! policies (spike guard), SWA, validation (best, plateau, top-K ranking, stop policies), the
//! epoch end, signals and budgets, then the checkpoints these trigger.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use checkpoints::Trigger;
use serde_json::json;

use super::step::StepDone;
use super::{InnerModel, Run, StopReason, TrainError};
use crate::policy::{Decision, StepRecord, StopPolicy, Validation};
use crate::task::{Metrics, Task, TaskError};
use crate::telemetry::Telemetry;

/// A weight average evaluated next to the model at validation.
enum Average<'m, M> {
    /// Has weights to evaluate.
    Ready(&'m M),
    /// Configured but not updated yet: its metrics are reported as NaN.
    Pending,
}

/// A validation's outcome: the selection metric's value, whether it is the best so far, any
/// stop request, and all the metrics.
struct Validated {
    value: f64,
    is_best: bool,
    stop: Option<StopReason>,
    metrics: Metrics,
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

impl<B: AutodiffBackend, T: Task<B>> Run<'_, B, T> {
    /// Everything after optimizer step `done`; `epoch_done` when it consumed the epoch's last
    /// micro-batch. Returns why the run ends, or `None` to go on.
    pub(super) fn boundary(
        &mut self,
        model: &T::Model,
        done: StepDone,
        epoch_done: bool,
    ) -> Result<Option<StopReason>, TrainError> {
        let t = self.cfg.training;
        let record = StepRecord {
            step: self.st.step,
            epoch: self.st.epoch,
            loss: done.loss,
            lr: done.lr,
            beta1: self.beta_1,
            grad_norm: done.grad_norm,
            metrics: &done.metrics,
            step_time: done.seconds,
        };
        self.tel.train_step(&record)?;

        let mut triggers = Vec::new();
        let mut stop = self.after_step(&record)?;
        let aborted = matches!(stop, Some(StopReason::Aborted { .. }));
        let (step, swa_start) = (self.st.step, self.plan.swa_start);
        if let Some(w) = &mut self.swa
            && step >= swa_start
            && self.cfg.swa.update_every.map_or(epoch_done, |n| (step - swa_start).is_multiple_of(n))
        {
            w.update(model);
        }
        let validate_now = t.val_every.map_or(epoch_done, |every| step.is_multiple_of(every));
        let interrupted = self.interrupts.received();
        let out_of_budget =
            step >= self.plan.total_steps || (epoch_done && t.epochs.is_some_and(|e| self.st.epoch + 1 >= e));
        // The final weights are always evaluated, so the best model is never stale.
        if !aborted && (validate_now || (out_of_budget && interrupted.is_none())) {
            let validated = match self.validate(model, done.lr, false)? {
                Ok(v) => v,
                Err(e) => return Err(self.fail_task(model, "validating", step, e)),
            };
            self.validated_at = Some(step);
            self.feed_plateau(&validated.metrics)?;
            // Top-K may rank by its own metric (stage 1: sar_edge_agreement; best by val_loss).
            let ranked = match &self.cfg.checkpoint.top_k_monitor {
                Some(m) => *validated.metrics.get(m).ok_or_else(|| TrainError::MissingMetric {
                    metric: m.clone(),
                    available: validated.metrics.keys().cloned().collect::<Vec<_>>().join(", "),
                })?,
                None => validated.value,
            };
            triggers.push(Trigger::Validation { value: ranked, is_best: validated.is_best });
            stop = stop.or(validated.stop);
        }
        if epoch_done {
            // In overfit mode every step is an "epoch" of one window: no epoch saves.
            if !self.plan.overfit {
                // Named by the epochs completed (1-based: `epoch_1` after the first).
                triggers.push(Trigger::EpochEnd { epoch: self.st.epoch + 1 });
            }
            self.st.epoch += 1;
            self.st.position = 0;
        }
        if self.store.is_step_interval(step) {
            triggers.push(Trigger::StepInterval);
        }
        // A signal that arrived during validation stops here too, not one step later.
        let interrupted = interrupted.or_else(|| self.interrupts.received());
        let reason = if let Some(signal) = interrupted {
            tracing::warn!("{} received: stopping after optimizer step {step}", signal.name());
            self.tel.event("interrupted", json!({"signal": signal.name(), "step": step, "epoch": self.st.epoch}))?;
            Some(StopReason::Interrupted(signal))
        } else if let Some(s) = stop {
            Some(s)
        } else if out_of_budget {
            Some(StopReason::Budget)
        } else {
            None
        };
        if reason.is_some() {
            triggers.push(Trigger::Final);
        }
        if !triggers.is_empty() && self.store.wants(&triggers) {
            let final_label = if interrupted.is_some() { "interrupted" } else { "final" };
            self.save(model, &triggers, final_label)?;
        }
        Ok(reason)
    }

    /// Consults the policies after an optimizer step; returns the first stop (aborts are not
    /// deferred by `min_steps`).
    fn after_step(&mut self, step: &StepRecord<'_>) -> Result<Option<StopReason>, TrainError> {
        let mut stop = None;
        for policy in &mut self.policies {
            let decision = policy.after_step(step);
            let min_steps = self.cfg.training.min_steps;
            stop = stop.or(report_decision(policy.as_ref(), decision, step.step, min_steps, &mut self.tel)?);
        }
        Ok(stop)
    }

    /// ReduceLROnPlateau sees the monitored metric of each validation.
    fn feed_plateau(&mut self, metrics: &Metrics) -> Result<(), TrainError> {
        let Some(plateau) = self.scheduler.plateau() else { return Ok(()) };
        let patience = plateau.config().patience;
        let monitor = &self.plan.monitor;
        let watched = *metrics.get(monitor).ok_or_else(|| TrainError::Schedule {
            key: "monitor".into(),
            message: format!(
                "validation returned no metric `{monitor}` (it returned: {})",
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        if let Some(cut) = self.scheduler.observe(watched) {
            self.tel.event(
                "lr_reduced",
                json!({"step": self.st.step, "monitor": monitor, "value": watched,
                       "old_lr": cut.old, "new_lr": cut.new}),
            )?;
            self.tel.message(&format!(
                "↘ Reducing learning rate from {:.3e} to {:.3e}: {monitor} did not improve for {} validations",
                cut.old,
                cut.new,
                patience + 1
            ));
        }
        Ok(())
    }

    /// `debug.validate_before_training`: validates the untrained model at step 0 and logs it
    /// as a baseline (no best, no stop policies, no checkpoint).
    pub(super) fn validate_baseline(&mut self, model: &T::Model, lr: f64) -> Result<(), TrainError> {
        match self.validate(model, lr, true)? {
            Ok(v) => {
                self.tel.message(&format!(
                    "validation before training (baseline, step 0): {} = {:.6}",
                    self.plan.selection.metric, v.value
                ));
                Ok(())
            }
            Err(e) => Err(self.fail_task(model, "validating before training", 0, e)),
        }
    }

    /// Runs validation of the model (and of the EMA / SWA averages, as `ema_*` / `swa_*`),
    /// reports it, updates the best, and consults the stop policies (unless `baseline`: a
    /// validation before training is only reported). A task error comes back as the inner
    /// `Err`, for the caller to checkpoint and stop on.
    fn validate(
        &mut self,
        model: &T::Model,
        lr: f64,
        baseline: bool,
    ) -> Result<Result<Validated, TaskError>, TrainError> {
        let (task, device) = (self.task, self.device);
        let log_memory = self.cfg.logging.memory_every.is_some();
        let step = self.st.step;
        if log_memory {
            self.tel.memory(step, "Before Validation")?;
        }
        if let Err(e) = task.begin_validation(step) {
            return Ok(Err(e));
        }
        let mut metrics = match task.validate(&model.valid(), device) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let averages: Vec<(&str, Average<'_, InnerModel<B, T>>)> = [
            self.ema.as_ref().filter(|_| self.cfg.ema.validate).map(|e| ("ema_", Average::Ready(&e.average))),
            self.swa
                .as_ref()
                .filter(|_| self.cfg.swa.validate)
                .map(|w| ("swa_", if w.updates > 0 { Average::Ready(&w.average) } else { Average::Pending })),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Averages are evaluated next to the model (`ema_*`, `swa_*`); one that has no
        // update yet reports NaN, so every validation has the same columns.
        let base: Vec<String> = metrics.keys().cloned().collect();
        for (prefix, average) in averages {
            match average {
                Average::Ready(average) => {
                    let m = match task.validate(average, device) {
                        Ok(m) => m,
                        Err(e) => return Ok(Err(e)),
                    };
                    metrics.extend(m.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
                }
                Average::Pending => metrics.extend(base.iter().map(|k| (format!("{prefix}{k}"), f64::NAN))),
            }
        }
        if log_memory {
            self.tel.memory(step, "After Validation")?;
        }
        let selection = &self.plan.selection;
        let value = *metrics.get(&selection.metric).ok_or_else(|| TrainError::MissingMetric {
            metric: selection.metric.clone(),
            available: metrics.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let is_best = !baseline && self.st.best.is_none_or(|(_, best)| selection.mode.is_better(value, best));
        if is_best {
            self.st.best = Some((step, value));
        }
        self.tel.validation(step, self.st.epoch, lr, &metrics, is_best)?;
        if baseline {
            return Ok(Ok(Validated { value, is_best, stop: None, metrics }));
        }
        let mut stop = None;
        let validation = Validation { step, epoch: self.st.epoch, lr, metrics: &metrics };
        let min_steps = self.cfg.training.min_steps;
        for policy in &mut self.policies {
            let decision = policy.after_validation(&validation);
            stop = stop.or(report_decision(policy.as_ref(), decision, step, min_steps, &mut self.tel)?);
        }
        Ok(Ok(Validated { value, is_best, stop, metrics }))
    }
}
