//! Learning-rate schedules as pure functions of the optimizer step, ReduceLROnPlateau, and
//! the LR range finder.
//!
//! - [`SchedulerSpec`] is the `optimizer.scheduler:` config section; [`SchedulerSpec::build`]
//!   turns it into a [`Scheduler`] for a run of known length.
//! - [`Scheduler::lr_at`] / [`Scheduler::momentum_at`] give the rate (and Adam β1 where it
//!   cycles) for a schedule index; only ReduceLROnPlateau has state, fed by
//!   [`Scheduler::observe`] and saved with [`Scheduler::state`].
//! - [`finder`] is the LR range test's sweep, smoothing, suggestion, CSV and plot.
//! - [`plotting`] is the embedded font and the PNG writing every plot of the workspace shares.
//!
//! Values match PyTorch's `torch.optim.lr_scheduler` classes; the tests compare against
//! vectors generated with PyTorch (`scripts/scheduler_vectors.py`).

use serde::{Deserialize, Serialize};

pub mod finder;
pub mod plateau;
pub mod plotting;
pub mod schedule;
pub mod spec;

pub use plateau::{Plateau, PlateauConfig, PlateauMode, PlateauState, Reduction, ThresholdMode};
pub use schedule::{Anneal, CyclicalMode, Schedule};
pub use spec::{BuildContext, Problem, ScheduleName, SchedulerSpec};

/// What the schedule index counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Optimizer steps (the index is the 0-based step about to be taken).
    #[default]
    Step,
    /// Completed epochs (PyTorch's per-epoch `scheduler.step()`).
    Epoch,
}

/// A built schedule plus its ReduceLROnPlateau state, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    base_lr: f64,
    interval: Interval,
    schedule: Schedule,
    plateau: Option<Plateau>,
}

/// What a checkpoint keeps of a scheduler: everything else is a function of the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerState {
    /// ReduceLROnPlateau's counters and current rate.
    pub plateau: Option<PlateauState>,
}

impl Scheduler {
    /// A scheduler over an already-built schedule (no plateau state).
    pub fn new(base_lr: f64, interval: Interval, schedule: Schedule) -> Self {
        Self { base_lr, interval, schedule, plateau: None }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// What the index counts.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The learning rate at schedule index `t`.
    pub fn lr_at(&self, t: u64) -> f64 {
        self.schedule.lr(t, self.base_lr, self.plateau.as_ref().map(Plateau::lr))
    }

    /// Adam β1 at index `t` where the schedule cycles momentum; `None` otherwise.
    pub fn momentum_at(&self, t: u64) -> Option<f64> {
        self.schedule.momentum(t)
    }

    /// The ReduceLROnPlateau part, if the schedule is `plateau`.
    pub fn plateau(&self) -> Option<&Plateau> {
        self.plateau.as_ref()
    }

    /// Feeds a validation metric to ReduceLROnPlateau; returns the cut if the rate dropped.
    /// A no-op for schedules without a plateau.
    pub fn observe(&mut self, metric: f64) -> Option<Reduction> {
        self.plateau.as_mut().and_then(|p| p.observe(metric))
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> SchedulerState {
        SchedulerState { plateau: self.plateau.as_ref().map(|p| p.state().clone()) }
    }

    /// Restores a saved state; an error if it does not fit this scheduler.
    pub fn restore(&mut self, state: SchedulerState) -> Result<(), String> {
        match (&mut self.plateau, state.plateau) {
            (Some(p), Some(s)) => {
                p.restore(s);
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(_), None) => Err("the checkpoint has no ReduceLROnPlateau state for this `plateau` schedule".into()),
            (None, Some(_)) => {
                Err("the checkpoint has ReduceLROnPlateau state but the schedule is not `plateau`".into())
            }
        }
    }
}
