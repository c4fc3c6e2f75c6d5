//! Aborting a run that has blown up, before it wastes the night: N consecutive optimizer
//! steps with a global gradient norm above a threshold (seed 004: 1000 and 3), or a loss
//! spike against the running mean of a window of finite losses (PyTorch Lightning's
//! `SpikeDetection`: not an improvement on the last loss, `|loss − mean| ≥ atol` when set and
//! `≥ rtol · mean`). The run ends with a checkpoint and a non-zero exit.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::policy::{Decision, StepRecord, StopPolicy};
use crate::problems::ConfigProblem;

/// `spike_guard:` — when a diverging run is aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeGuardConfig {
    /// Gradient-norm guard: a step is a spike when the global norm (before clipping) exceeds
    /// this; `null` disables.
    pub grad_norm_threshold: Option<f64>,
    /// Consecutive gradient spikes that abort the run.
    pub grad_norm_patience: u64,
    /// Loss-spike guard: number of recent finite losses averaged; `null` disables.
    pub loss_window: Option<usize>,
    /// A loss spike deviates from the window mean by at least `loss_rtol · mean`.
    pub loss_rtol: f64,
    /// ... and by at least this absolute amount, when set.
    pub loss_atol: Option<f64>,
    /// Optimizer steps at the start during which neither guard fires.
    pub warmup_steps: u64,
}

impl Default for SpikeGuardConfig {
    fn default() -> Self {
        Self {
            grad_norm_threshold: Some(1000.0),
            grad_norm_patience: 3,
            loss_window: None,
            loss_rtol: 2.0,
            loss_atol: None,
            warmup_steps: 0,
        }
    }
}

impl SpikeGuardConfig {
    /// Range checks.
    pub fn validate(&self, p: &mut Vec<ConfigProblem>) {
        let mut bad = |key: &str, message: &str| {
            p.push(ConfigProblem { key: format!("spike_guard.{key}"), message: message.into(), origin: None })
        };
        if self.grad_norm_threshold.is_some_and(|t| t.is_nan() || t <= 0.0) {
            bad("grad_norm_threshold", "expected a positive norm or null");
        }
        if self.grad_norm_patience == 0 {
            bad("grad_norm_patience", "expected at least 1 step");
        }
        if self.loss_window == Some(0) {
            bad("loss_window", "expected a positive window or null");
        }
        if self.loss_rtol.is_nan() || self.loss_rtol < 0.0 {
            bad("loss_rtol", "expected a non-negative tolerance");
        }
    }

    /// Whether any guard is on.
    pub fn enabled(&self) -> bool {
        self.grad_norm_threshold.is_some() || self.loss_window.is_some()
    }
}

/// The spike guard. Its state (consecutive spikes, loss window, last loss) goes into checkpoints.
#[derive(Debug, Clone)]
pub struct SpikeGuard {
    config: SpikeGuardConfig,
    consecutive: u64,
    losses: VecDeque<f64>,
    last_loss: Option<f64>,
}

impl SpikeGuard {
    /// A guard with empty history.
    pub fn new(config: SpikeGuardConfig) -> Self {
        Self { config, consecutive: 0, losses: VecDeque::new(), last_loss: None }
    }

    fn abort(step: u64, kind: &str, reason: String) -> Decision {
        Decision {
            stop: Some(reason.clone()),
            abort: true,
            notes: vec![format!("🛑 Training aborted at step {step}: {reason}")],
            event: Some(("spike_abort".into(), json!({"step": step, "guard": kind, "reason": reason}))),
        }
    }
}

impl StopPolicy for SpikeGuard {
    fn name(&self) -> &str {
        "spike_guard"
    }

    fn after_step(&mut self, s: &StepRecord<'_>) -> Decision {
        let c = &self.config;
        let warm = s.step > c.warmup_steps;
        if let Some(limit) = c.grad_norm_threshold {
            if s.grad_norm > limit {
                self.consecutive += 1;
            } else {
                self.consecutive = 0;
            }
            if warm && self.consecutive >= c.grad_norm_patience {
                return Self::abort(
                    s.step,
                    "grad_norm",
                    format!(
                        "gradient norm above {limit} for {} consecutive steps (last {:.3e})",
                        self.consecutive, s.grad_norm
                    ),
                );
            }
        }
        if let Some(window) = c.loss_window {
            let full = self.losses.len() >= window;
            let mean = self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64;
            let improved = self.last_loss.is_some_and(|last| s.loss < last);
            let dev = (s.loss - mean).abs();
            let spike = warm
                && full
                && s.loss.is_finite()
                && !improved
                && c.loss_atol.is_none_or(|a| dev >= a)
                && dev >= c.loss_rtol * mean.abs();
            if spike {
                return Self::abort(
                    s.step,
                    "loss",
                    format!("loss {:.6} spiked against the mean {mean:.6} of the last {window} losses", s.loss),
                );
            }
            if s.loss.is_finite() {
                if self.losses.len() == window {
                    self.losses.pop_front();
                }
                self.losses.push_back(s.loss);
            }
            self.last_loss = Some(s.loss);
        }
        Decision::default()
    }

    fn state(&self) -> Value {
        json!({"consecutive": self.consecutive, "losses": self.losses, "last_loss": self.last_loss})
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.consecutive = state["consecutive"].as_u64().ok_or("no spike count")?;
        self.losses = serde_json::from_value(state["losses"].clone()).map_err(|e| e.to_string())?;
        self.last_loss = state["last_loss"].as_f64();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Metrics;

    fn feed(guard: &mut SpikeGuard, series: &[(f64, f64)]) -> Option<u64> {
        let metrics = Metrics::new();
        for (i, &(loss, grad_norm)) in series.iter().enumerate() {
            let step = i as u64 + 1;
            let d = guard.after_step(&StepRecord {
                step,
                epoch: 0,
                loss,
                lr: 0.1,
                beta1: 0.9,
                grad_norm,
                metrics: &metrics,
                step_time: 0.0,
            });
            if d.stop.is_some() {
                assert!(d.abort);
                return Some(step);
            }
        }
        None
    }

    #[test]
    fn three_consecutive_gradient_spikes_abort_and_a_calm_step_resets_the_count() {
        let mut g = SpikeGuard::new(SpikeGuardConfig::default());
        let series = [(1.0, 5.0), (1.0, 2000.0), (1.0, 3000.0), (1.0, 10.0), (1.0, 1e4), (1.0, 1e4), (1.0, 1e4)];
        assert_eq!(feed(&mut g, &series), Some(7));
        let mut g = SpikeGuard::new(SpikeGuardConfig { warmup_steps: 8, ..SpikeGuardConfig::default() });
        assert_eq!(feed(&mut g, &[(1.0, 1e4); 9]), Some(9), "not before the warm-up ends");
    }

    #[test]
    fn a_loss_spike_against_the_window_mean_aborts() {
        let config =
            SpikeGuardConfig { grad_norm_threshold: None, loss_window: Some(3), ..SpikeGuardConfig::default() };
        let mut g = SpikeGuard::new(config.clone());
        // Mean of 1.0, 1.1, 0.9 is 1.0: 2.9 deviates by 1.9 < 2.0 · 1.0 (no spike). The NaN is
        // skipped. 8.0 deviates by 6.4 from the mean 1.63 of 1.1, 0.9, 2.9: a spike.
        let series = [(1.0, 1.0), (1.1, 1.0), (0.9, 1.0), (2.9, 1.0), (f64::NAN, 1.0), (8.0, 1.0)];
        assert_eq!(feed(&mut g, &series), Some(6));
        let mut g = SpikeGuard::new(config);
        assert_eq!(feed(&mut g, &[(1.0, 1.0), (1.1, 1.0), (0.9, 1.0), (0.5, 1.0), (0.4, 1.0)]), None);
    }

    #[test]
    fn state_round_trips() {
        let config = SpikeGuardConfig { loss_window: Some(2), ..SpikeGuardConfig::default() };
        let mut g = SpikeGuard::new(config.clone());
        feed(&mut g, &[(1.0, 2000.0), (2.0, 2000.0)]);
        let mut fresh = SpikeGuard::new(config);
        fresh.restore(&g.state()).unwrap();
        assert_eq!(
            (fresh.consecutive, fresh.losses.clone(), fresh.last_loss),
            (2, VecDeque::from([1.0, 2.0]), Some(2.0))
        );
        assert!(feed(&mut fresh, &[(1.5, 2000.0)]).is_some(), "the third consecutive spike after the resume aborts");
    }
}
