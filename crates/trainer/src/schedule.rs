//! The learning rate as a pure function of the optimizer-step index.
//!
//! Formulas follow HF `get_cosine_with_min_lr_schedule_with_warmup`: during warm-up
//! `lr · s / warmup`, then `min_lr + (lr − min_lr) · ½(1 + cos(π · progress))`.

use crate::config::{SchedulerConfig, SchedulerName};

/// A learning-rate schedule over optimizer steps `0..total_steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    lr: f64,
    config: SchedulerConfig,
    total_steps: u64,
}

impl LrSchedule {
    /// A schedule peaking at `lr` over a run of `total_steps` optimizer steps.
    pub fn new(lr: f64, config: SchedulerConfig, total_steps: u64) -> Self {
        Self { lr, config, total_steps }
    }

    /// Learning rate for the optimizer step with 0-based index `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.config.warmup_steps;
        if step < warmup {
            return self.lr * step as f64 / warmup.max(1) as f64;
        }
        match self.config.name {
            SchedulerName::Constant => self.lr,
            SchedulerName::Cosine => {
                let span = self.total_steps.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                let min = self.config.min_lr;
                min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(warmup: u64, min_lr: f64) -> LrSchedule {
        LrSchedule::new(1.0, SchedulerConfig { name: SchedulerName::Cosine, warmup_steps: warmup, min_lr }, 110)
    }

    #[test]
    fn warmup_then_cosine_matches_the_reference_formula() {
        let s = cosine(10, 0.1);
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(5) - 0.5).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        // halfway through the decay: min + (1 - min) * 0.5
        assert!((s.lr_at(60) - (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12, "stays at min_lr past the end");
    }

    #[test]
    fn constant_is_constant_after_warmup() {
        let s =
            LrSchedule::new(0.3, SchedulerConfig { name: SchedulerName::Constant, warmup_steps: 3, min_lr: 0.0 }, 10);
        assert!((s.lr_at(1) - 0.1).abs() < 1e-12);
        assert_eq!(s.lr_at(3), 0.3);
        assert_eq!(s.lr_at(9), 0.3);
    }
}
