//! ReduceLROnPlateau, driven by validation metrics.
//!
//! PyTorch's rule (`torch.optim.lr_scheduler.ReduceLROnPlateau`, also timm's `plateau`):
//! a validation that does not improve on the best by `threshold` is *bad*; the rate is cut
//! to `max(lr · factor, min_lr)` when the number of consecutive bad validations becomes
//! **greater than** `patience`, and only if the cut exceeds `eps`. After a cut, `cooldown`
//! validations are ignored (the bad count stays 0).
//!
//! Keras' `ReduceLROnPlateau` differs by one: it cuts when the count **reaches** `patience`
//! (`wait >= patience`) and its `min_delta` is absolute. Our `patience: 3` therefore cuts
//! on the 4th bad validation, as torch does; a Keras user wanting the same behaviour sets
//! `patience` one lower and `threshold_mode: abs`.
//!
//! One deliberate difference from torch: a non-finite metric is always *bad* and never
//! becomes the best (torch would take `+inf` as the best in `max` mode).

use serde::{Deserialize, Serialize};

/// Whether lower or higher metric values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    /// `min`: `cur < best·(1 − threshold)`; `max`: `cur > best·(1 + threshold)`.
    #[default]
    Rel,
    /// `min`: `cur < best − threshold`; `max`: `cur > best + threshold`.
    Abs,
}

/// Parameters of ReduceLROnPlateau (torch defaults: factor 0.1, patience 10, threshold 1e-4
/// relative, cooldown 0, min_lr 0, eps 1e-8).
#[derive(Debug, Clone, PartialEq)]
pub struct PlateauConfig {
    /// Direction of improvement.
    pub mode: PlateauMode,
    /// Multiplier of the rate on a cut, in (0, 1).
    pub factor: f64,
    /// Bad validations tolerated; the cut comes on the one after.
    pub patience: u64,
    /// Minimum improvement.
    pub threshold: f64,
    /// Relative or absolute threshold.
    pub threshold_mode: ThresholdMode,
    /// Validations ignored after a cut.
    pub cooldown: u64,
    /// Floor of the rate.
    pub min_lr: f64,
    /// Cuts smaller than this are skipped.
    pub eps: f64,
}

/// The mutable state, saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// Current learning rate.
    pub lr: f64,
    /// Best metric so far (`None` before the first finite one).
    pub best: Option<f64>,
    /// Consecutive bad validations.
    pub num_bad: u64,
    /// Validations left in the cool-down.
    pub cooldown_counter: u64,
    /// Validations seen.
    pub validations: u64,
}

/// A cut of the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduction {
    /// Rate before.
    pub old: f64,
    /// Rate after.
    pub new: f64,
}

/// ReduceLROnPlateau.
#[derive(Debug, Clone, PartialEq)]
pub struct Plateau {
    config: PlateauConfig,
    state: PlateauState,
}

impl Plateau {
    /// A fresh plateau scheduler starting at `lr`.
    pub fn new(config: PlateauConfig, lr: f64) -> Self {
        Self { config, state: PlateauState { lr, best: None, num_bad: 0, cooldown_counter: 0, validations: 0 } }
    }

    /// The parameters.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.state.lr
    }

    /// The state to save.
    pub fn state(&self) -> &PlateauState {
        &self.state
    }

    /// Restores a saved state.
    pub fn restore(&mut self, state: PlateauState) {
        self.state = state;
    }

    fn is_better(&self, cur: f64) -> bool {
        let Some(best) = self.state.best else { return cur.is_finite() };
        let t = self.config.threshold;
        cur.is_finite()
            && match (self.config.mode, self.config.threshold_mode) {
                (PlateauMode::Min, ThresholdMode::Rel) => cur < best * (1.0 - t),
                (PlateauMode::Min, ThresholdMode::Abs) => cur < best - t,
                (PlateauMode::Max, ThresholdMode::Rel) => cur > best * (t + 1.0),
                (PlateauMode::Max, ThresholdMode::Abs) => cur > best + t,
            }
    }

    /// Feeds one validation metric; returns the cut if the rate was reduced.
    pub fn observe(&mut self, metric: f64) -> Option<Reduction> {
        self.state.validations += 1;
        if self.is_better(metric) {
            self.state.best = Some(metric);
            self.state.num_bad = 0;
        } else {
            self.state.num_bad += 1;
        }
        if self.state.cooldown_counter > 0 {
            self.state.cooldown_counter -= 1;
            self.state.num_bad = 0;
        }
        if self.state.num_bad > self.config.patience {
            self.state.cooldown_counter = self.config.cooldown;
            self.state.num_bad = 0;
            let old = self.state.lr;
            let new = (old * self.config.factor).max(self.config.min_lr);
            if old - new > self.config.eps {
                self.state.lr = new;
                return Some(Reduction { old, new });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plateau(patience: u64, cooldown: u64) -> Plateau {
        Plateau::new(
            PlateauConfig {
                mode: PlateauMode::Min,
                factor: 0.5,
                patience,
                threshold: 0.0,
                threshold_mode: ThresholdMode::Abs,
                cooldown,
                min_lr: 0.2,
                eps: 1e-8,
            },
            1.0,
        )
    }

    #[test]
    fn cuts_on_the_validation_after_patience_runs_out() {
        let mut p = plateau(2, 0);
        assert_eq!(p.observe(1.0), None);
        assert_eq!(p.observe(1.0), None, "bad 1");
        assert_eq!(p.observe(1.0), None, "bad 2 = patience: torch does not cut yet");
        assert_eq!(p.observe(1.0), Some(Reduction { old: 1.0, new: 0.5 }), "bad 3 > patience");
        for _ in 0..2 {
            assert_eq!(p.observe(1.0), None);
        }
        assert_eq!(p.observe(1.0), Some(Reduction { old: 0.5, new: 0.25 }));
        for _ in 0..2 {
            p.observe(1.0);
        }
        assert_eq!(p.observe(1.0), Some(Reduction { old: 0.25, new: 0.2 }), "floored at min_lr");
        for _ in 0..2 {
            p.observe(1.0);
        }
        assert_eq!(p.observe(1.0), None, "at the floor nothing more is cut");
        assert_eq!(p.lr(), 0.2);
    }

    #[test]
    fn cooldown_ignores_bad_validations() {
        let mut p = plateau(0, 2);
        p.observe(1.0);
        assert!(p.observe(1.0).is_some(), "patience 0: the first bad validation cuts");
        assert_eq!(p.observe(1.0), None, "cool-down 1");
        assert_eq!(p.observe(1.0), None, "cool-down 2");
        assert!(p.observe(1.0).is_some());
    }

    #[test]
    fn non_finite_metrics_are_bad_and_never_best() {
        let mut p = plateau(5, 0);
        p.observe(f64::NAN);
        assert_eq!(p.state().best, None);
        assert_eq!(p.state().num_bad, 1);
        p.observe(3.0);
        assert_eq!(p.state().best, Some(3.0));
    }
}
