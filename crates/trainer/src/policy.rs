//! What stop policies see and decide: the leaf the policies (early stopping, spike guard) and
//! the loop both import, so neither imports the other.

use crate::task::Metrics;

/// One completed optimizer step, as reported to every telemetry sink and to stop policies.
#[derive(Debug, Clone)]
pub struct StepRecord<'a> {
    /// Optimizer steps completed (1-based).
    pub step: u64,
    /// 0-based epoch.
    pub epoch: u64,
    /// Mean loss over the step's micro-batches (sample-weighted).
    pub loss: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Adam β1 used for this step (cycled by OneCycle / cyclical schedules).
    pub beta1: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Named metrics of the step (sample-weighted means).
    pub metrics: &'a Metrics,
    /// Seconds the step took.
    pub step_time: f64,
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
