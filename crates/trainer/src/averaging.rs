//! Averages of the model weights: an exponential moving average (EMA) and stochastic weight
//! averaging (SWA).
//!
//! EMA (timm `ModelEmaV3` / PyTorch Lightning `EMAWeightAveraging`): `e ← d·e + (1 − d)·p` after every `update_every`-th optimizer step
//! from `update_after_step` on, with timm's optional decay warm-up
//! `d = clamp(1 − (1 + k/γ)^(−power), min_decay, decay)`, `k = step − update_after_step − 1`,
//! and a plain copy when `k ≤ 0`. The average lives on the device, is evaluated at every
//! validation (metrics prefixed `ema_`), saved in checkpoints and exported as
//! `checkpoints/model_ema.safetensors`.
//!
//! SWA (torch `swa_utils` + Lightning `StochasticWeightAveraging`): from the start step on,
//! `avg ← avg + (p − avg)/(n + 1)` at every update (the first copies), with the learning rate
//! annealed to `swa_lr` by SWALR, `lr = swa_lr·α + lr_start·(1 − α)`, `α = (1 − cos πt)/2`
//! (cos) or `t` (linear), `t = min(1, k/anneal_steps)`. Evaluated at validation (`swa_*`
//! metrics) and exported as `checkpoints/model_swa.safetensors`. Batch-norm statistics are
//! not recomputed (no model here has batch norm).

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::container::TensorContainer;
use serde::{Deserialize, Serialize};

use crate::problems::ConfigProblem;

/// `ema:` — the moving average of the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    /// Keep an EMA of the weights (`--model-ema`).
    pub enabled: bool,
    /// Decay `d` (`--ema-decay`), the upper bound when warming up.
    pub decay: f64,
    /// Lower bound of the warmed-up decay.
    pub min_decay: f64,
    /// timm's decay warm-up (`--model-ema-warmup`).
    pub warmup: bool,
    /// γ of the warm-up.
    pub warmup_gamma: f64,
    /// Power of the warm-up (2/3 reaches 0.999 at ~31.6k steps, 3/4 at ~10k).
    pub warmup_power: f64,
    /// No update before this optimizer step; the first update copies the weights.
    pub update_after_step: u64,
    /// Update every N optimizer steps.
    pub update_every: u64,
    /// Evaluate the EMA weights at every validation (metrics prefixed `ema_`).
    pub validate: bool,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decay: 0.999,
            min_decay: 0.0,
            warmup: false,
            warmup_gamma: 1.0,
            warmup_power: 2.0 / 3.0,
            update_after_step: 0,
            update_every: 1,
            validate: true,
        }
    }
}

impl EmaConfig {
    /// Range checks.
    pub fn validate(&self, p: &mut Vec<ConfigProblem>) {
        let mut bad =
            |key: &str, message: String| p.push(ConfigProblem { key: format!("ema.{key}"), message, origin: None });
        if !(0.0..1.0).contains(&self.decay) {
            bad("decay", format!("expected a decay in [0, 1), got {}", self.decay));
        }
        if !(0.0..=self.decay).contains(&self.min_decay) {
            bad("min_decay", format!("expected 0 <= min_decay <= decay, got {}", self.min_decay));
        }
        if self.update_every == 0 {
            bad("update_every", "expected at least 1".into());
        }
        if self.warmup_gamma.is_nan() || self.warmup_gamma <= 0.0 {
            bad("warmup_gamma", "expected a positive number".into());
        }
    }

    /// The decay used at optimizer step `step` (1-based), or `None` when no update is due.
    pub fn decay_at(&self, step: u64) -> Option<f64> {
        if step < self.update_after_step || !step.is_multiple_of(self.update_every) {
            return None;
        }
        let k = step.saturating_sub(self.update_after_step + 1);
        if k == 0 {
            return Some(0.0);
        }
        if self.warmup {
            let d = 1.0 - (1.0 + k as f64 / self.warmup_gamma).powf(-self.warmup_power);
            Some(d.clamp(self.min_decay, self.decay))
        } else {
            Some(self.decay)
        }
    }
}

struct Collect<'a> {
    into: &'a mut TensorContainer<ParamId>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.into.register::<B>(param.id, param.val().into_primitive());
    }
}

struct Lerp<'a> {
    current: &'a mut TensorContainer<ParamId>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Lerp<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, average, mapper) = param.consume();
        let updated = match self.current.remove::<B>(&id) {
            Some(p) => {
                let p = Tensor::<B, D>::from_primitive(p);
                if self.decay == 0.0 { p } else { average.mul_scalar(self.decay) + p.mul_scalar(1.0 - self.decay) }
            }
            None => average,
        };
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// `swa:` — stochastic weight averaging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwaConfig {
    /// Average the weights (`--swa`).
    pub enabled: bool,
    /// First optimizer step that is averaged, as a fraction of the run (`0.8`, Lightning's
    /// default) or, when `>= 1`, a step number.
    pub start: f64,
    /// Anneal the learning rate to this value from the start on (`--swa-lr`); `null` keeps the
    /// schedule.
    pub swa_lr: Option<f64>,
    /// Optimizer steps of the annealing.
    pub anneal_steps: u64,
    /// `cos` or `linear` annealing.
    pub anneal_strategy: AnnealStrategy,
    /// Average every N optimizer steps; `null` averages once per epoch (at its end), as Lightning does.
    pub update_every: Option<u64>,
    /// Evaluate the average at every validation after the start (metrics prefixed `swa_`).
    pub validate: bool,
}

/// Shape of the SWALR annealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnealStrategy {
    /// `α = (1 − cos πt)/2`.
    Cos,
    /// `α = t`.
    Linear,
}

impl Default for SwaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            start: 0.8,
            swa_lr: None,
            anneal_steps: 10,
            anneal_strategy: AnnealStrategy::Cos,
            update_every: None,
            validate: true,
        }
    }
}

impl SwaConfig {
    /// Range checks.
    pub fn validate(&self, p: &mut Vec<ConfigProblem>) {
        let mut bad =
            |key: &str, message: String| p.push(ConfigProblem { key: format!("swa.{key}"), message, origin: None });
        if !(self.start > 0.0 && (self.start < 1.0 || self.start.fract() == 0.0)) {
            bad("start", format!("expected a fraction in (0, 1) or a whole step number, got {}", self.start));
        }
        if self.swa_lr.is_some_and(|lr| lr.is_nan() || lr <= 0.0) {
            bad("swa_lr", "expected a positive learning rate".into());
        }
        if self.update_every == Some(0) {
            bad("update_every", "expected a positive step count or null".into());
        }
    }

    /// The first averaged optimizer step (1-based) in a run of `total_steps`.
    pub fn start_step(&self, total_steps: u64) -> u64 {
        if self.start < 1.0 { ((self.start * total_steps as f64) as u64).max(1) } else { self.start as u64 }
    }

    /// SWALR: the learning rate of optimizer step index `step` (0-based) when SWA starts at
    /// `start` (1-based step) and the schedule's rate there is `lr_start`.
    pub fn lr_at(&self, step: u64, start: u64, lr_start: f64) -> Option<f64> {
        let swa_lr = self.swa_lr?;
        let first = start.checked_sub(1)?;
        if step < first {
            return None;
        }
        let t = ((step - first) as f64 / self.anneal_steps.max(1) as f64).min(1.0);
        let alpha = match self.anneal_strategy {
            AnnealStrategy::Cos => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
            AnnealStrategy::Linear => t,
        };
        Some(swa_lr * alpha + lr_start * (1.0 - alpha))
    }
}

fn fold<B: AutodiffBackend, M: AutodiffModule<B>>(average: &mut M::InnerModule, model: &M, decay: f64) {
    let mut current = TensorContainer::new();
    model.valid().visit(&mut Collect { into: &mut current });
    let old = std::mem::replace(average, model.valid());
    *average = old.map(&mut Lerp { current: &mut current, decay });
}

/// The SWA average, on the inner (non-autodiff) backend.
pub struct Swa<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The averaged weights (a copy of the model until the first update).
    pub average: M::InnerModule,
    /// Weights averaged so far.
    pub updates: u64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Swa<B, M> {
    /// An empty average.
    pub fn new(model: &M) -> Self {
        Self { average: model.valid(), updates: 0, _backend: std::marker::PhantomData }
    }

    /// Folds the current weights in: `avg + (p − avg)/(n + 1)`.
    pub fn update(&mut self, model: &M) {
        let n = self.updates as f64;
        fold::<B, M>(&mut self.average, model, n / (n + 1.0));
        self.updates += 1;
    }
}

/// The running average of a model's weights, on the inner (non-autodiff) backend.
pub struct Ema<B: AutodiffBackend, M: AutodiffModule<B>> {
    config: EmaConfig,
    /// The averaged weights.
    pub average: M::InnerModule,
    /// Updates applied so far.
    pub updates: u64,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Ema<B, M> {
    /// Starts the average at the model's current weights.
    pub fn new(config: EmaConfig, model: &M) -> Self {
        Self { config, average: model.valid(), updates: 0 }
    }

    /// Folds in the weights after optimizer step `step`, if an update is due.
    pub fn update(&mut self, step: u64, model: &M) {
        let Some(decay) = self.config.decay_at(step) else { return };
        fold::<B, M>(&mut self.average, model, decay);
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_schedule_follows_timm() {
        let plain = EmaConfig { decay: 0.9, update_after_step: 2, update_every: 2, ..EmaConfig::default() };
        let got: Vec<Option<f64>> = (1..=8).map(|s| plain.decay_at(s)).collect();
        // Steps 1 and 3 are off the grid; step 2 is the first update (copy).
        assert_eq!(got, [None, Some(0.0), None, Some(0.9), None, Some(0.9), None, Some(0.9)]);

        let warm = EmaConfig { decay: 0.9999, warmup: true, ..EmaConfig::default() };
        assert_eq!(warm.decay_at(1), Some(0.0), "k = 0 copies");
        // d = 1 − (1 + k)^(−2/3): k = 7 → 1 − 8^(−2/3) = 0.75.
        assert!((warm.decay_at(8).unwrap() - 0.75).abs() < 1e-12);
        // timm's reference point: power 2/3 reaches ≈0.999 around 31.6k steps.
        assert!((warm.decay_at(31_624).unwrap() - 0.999).abs() < 1e-5);
        assert_eq!(warm.decay_at(10_000_000_000), Some(0.9999), "capped at decay");
    }

    #[test]
    fn swalr_anneals_from_the_scheduled_rate_to_swa_lr() {
        let c = SwaConfig { swa_lr: Some(0.01), anneal_steps: 4, ..SwaConfig::default() };
        assert_eq!(c.start_step(100), 80);
        assert_eq!(c.lr_at(78, 80, 0.1), None, "before the start the schedule rules");
        assert_eq!(c.lr_at(79, 80, 0.1), Some(0.1), "t = 0 at the first averaged step");
        // t = 2/4: α = (1 − cos(π/2))/2 = 0.5.
        assert!((c.lr_at(81, 80, 0.1).unwrap() - 0.055).abs() < 1e-12);
        assert!((c.lr_at(200, 80, 0.1).unwrap() - 0.01).abs() < 1e-12);
        let lin = SwaConfig { anneal_strategy: AnnealStrategy::Linear, ..c };
        assert!((lin.lr_at(80, 80, 0.1).unwrap() - (0.01 * 0.25 + 0.1 * 0.75)).abs() < 1e-12);
        assert_eq!(SwaConfig { start: 30.0, ..SwaConfig::default() }.start_step(100), 30);
    }
}
