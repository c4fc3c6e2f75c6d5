//! Schedules as pure functions of the schedule index (the optimizer step, or the epoch
//! when the scheduler is stepped per epoch).
//!
//! Every formula follows the PyTorch class named on its variant, so that `lr(t)` equals
//! `optimizer.param_groups[0]["lr"]` after `t` calls to the torch scheduler's `step()`.
//! The test suite checks this against vectors generated with PyTorch itself
//! (`scripts/scheduler_vectors.py`). Where torch's behaviour is surprising or undefined we
//! say what we do instead on the variant.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// Interpolation between two values over a phase of OneCycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Anneal {
    /// `b + (a − b)/2 · (1 + cos(π·p))` (torch's `_annealing_cos`).
    #[default]
    Cos,
    /// `a + p·(b − a)` (torch's `_annealing_linear`).
    Linear,
}

impl Anneal {
    fn apply(self, from: f64, to: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (to - from) * pct + from,
        }
    }
}

/// How the amplitude of a cyclical schedule changes from cycle to cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CyclicalMode {
    /// Constant amplitude.
    #[default]
    Triangular,
    /// Amplitude halved every cycle: `1 / 2^(cycle − 1)`.
    Triangular2,
    /// Amplitude `γ^t` on the global index `t` (not the cycle).
    ExpRange,
}

/// One phase of OneCycle: `(end index, lr from → to, momentum from → to)`.
#[derive(Debug, Clone, PartialEq)]
struct Phase {
    end: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

/// OneCycle (torch `OneCycleLR`), two- or three-phase.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycle {
    /// Number of schedule indices of the whole cycle (`total_steps`).
    pub total: u64,
    /// Peak learning rate (`max_lr`).
    pub max_lr: f64,
    /// Fraction of the cycle spent increasing the LR.
    pub pct_start: f64,
    /// `initial_lr = max_lr / div_factor`.
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor`.
    pub final_div_factor: f64,
    /// fast.ai-style third phase: back to `initial_lr`, then down to `min_lr`.
    pub three_phase: bool,
    /// Cosine or linear interpolation inside each phase.
    pub anneal: Anneal,
    /// `Some((base_momentum, max_momentum))` when momentum (Adam β1) cycles inversely to the LR.
    pub momentum: Option<(f64, f64)>,
}

impl OneCycle {
    fn phases(&self) -> Vec<Phase> {
        let t = self.total as f64;
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let (base_m, max_m) = self.momentum.unwrap_or((0.0, 0.0));
        if self.three_phase {
            vec![
                Phase { end: self.pct_start * t - 1.0, lr: (initial, self.max_lr), momentum: (max_m, base_m) },
                Phase { end: 2.0 * self.pct_start * t - 2.0, lr: (self.max_lr, initial), momentum: (base_m, max_m) },
                Phase { end: t - 1.0, lr: (initial, min), momentum: (max_m, max_m) },
            ]
        } else {
            vec![
                Phase { end: self.pct_start * t - 1.0, lr: (initial, self.max_lr), momentum: (max_m, base_m) },
                Phase { end: t - 1.0, lr: (self.max_lr, min), momentum: (base_m, max_m) },
            ]
        }
    }

    /// `(lr, momentum)` at index `t`; past the end the last value holds (torch raises).
    fn at(&self, t: u64) -> (f64, f64) {
        let step = t.min(self.total.saturating_sub(1)) as f64;
        let phases = self.phases();
        let mut start = 0.0;
        for (i, phase) in phases.iter().enumerate() {
            if step <= phase.end || i == phases.len() - 1 {
                let pct = (step - start) / (phase.end - start);
                let lr = self.anneal.apply(phase.lr.0, phase.lr.1, pct);
                let m = self.anneal.apply(phase.momentum.0, phase.momentum.1, pct);
                return (lr, m);
            }
            start = phase.end;
        }
        unreachable!("the last phase always matches")
    }
}

/// Cyclical learning rate (torch `CyclicLR`, Smith 2015) between `base_lr` and the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Cyclical {
    /// Lower bound of the cycle.
    pub base_lr: f64,
    /// Upper bound of the cycle.
    pub max_lr: f64,
    /// Indices from the bottom to the top of a cycle.
    pub step_size_up: u64,
    /// Indices from the top back to the bottom.
    pub step_size_down: u64,
    /// Amplitude policy.
    pub mode: CyclicalMode,
    /// `γ` of `exp_range`.
    pub gamma: f64,
    /// `Some((base_momentum, max_momentum))` when momentum cycles inversely to the LR.
    pub momentum: Option<(f64, f64)>,
}

impl Cyclical {
    fn at(&self, t: u64) -> (f64, f64) {
        let total = (self.step_size_up + self.step_size_down) as f64;
        let ratio = self.step_size_up as f64 / total;
        let e = t as f64;
        let cycle = (1.0 + e / total).floor();
        let x = 1.0 + e / total - cycle;
        let scale = if x <= ratio { x / ratio } else { (x - 1.0) / (ratio - 1.0) };
        let f = match self.mode {
            CyclicalMode::Triangular => 1.0,
            CyclicalMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicalMode::ExpRange => self.gamma.powf(e),
        };
        let lr = self.base_lr + (self.max_lr - self.base_lr) * scale * f;
        let (base_m, max_m) = self.momentum.unwrap_or((0.0, 0.0));
        let m = max_m - (max_m - base_m) * scale * f;
        (lr, m)
    }
}

/// Cosine annealing with warm restarts (torch `CosineAnnealingWarmRestarts`), with timm's
/// per-cycle peak decay and cycle limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Sgdr {
    /// Length of the first cycle (`T_0`).
    pub t_0: u64,
    /// Each cycle is `t_mult` times longer than the one before (`T_mult`, an integer ≥ 1).
    pub t_mult: u64,
    /// Floor of every cycle (`eta_min`).
    pub min_lr: f64,
    /// Peak of cycle `i` is `lr · cycle_decay^i` (timm `cycle_decay`; 1 = torch).
    pub cycle_decay: f64,
    /// After this many cycles the LR stays at `min_lr` (timm `cycle_limit`; `None` = never).
    pub cycle_limit: Option<u64>,
}

impl Sgdr {
    /// `(cycle, position in the cycle, cycle length)` of index `t`, in exact integers.
    fn locate(&self, t: u64) -> (u64, u64, u64) {
        if self.t_mult == 1 {
            return (t / self.t_0, t % self.t_0, self.t_0);
        }
        let (mut cycle, mut cur, mut len) = (0, t, self.t_0);
        while cur >= len {
            cur -= len;
            len = len.saturating_mul(self.t_mult);
            cycle += 1;
        }
        (cycle, cur, len)
    }

    fn at(&self, t: u64, base: f64) -> f64 {
        let (cycle, cur, len) = self.locate(t);
        if self.cycle_limit.is_some_and(|limit| cycle >= limit) {
            return self.min_lr;
        }
        let peak = base * self.cycle_decay.powi(cycle.min(i32::MAX as u64) as i32);
        self.min_lr + (peak - self.min_lr) * (1.0 + (PI * cur as f64 / len as f64).cos()) / 2.0
    }
}

/// A learning-rate schedule; `lr(t)` is the rate for schedule index `t` (0-based).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The base rate at every index.
    Constant,
    /// torch `StepLR`: `base · γ^⌊t / step_size⌋`.
    Step {
        /// Indices between decays.
        step_size: u64,
        /// Multiplicative decay.
        gamma: f64,
    },
    /// torch `MultiStepLR`: `base · γ^(number of milestones ≤ t)`.
    MultiStep {
        /// Sorted indices at which the rate decays.
        milestones: Vec<u64>,
        /// Multiplicative decay.
        gamma: f64,
    },
    /// torch `ExponentialLR`: `base · γ^t`.
    Exponential {
        /// Per-index decay.
        gamma: f64,
    },
    /// torch `PolynomialLR` (`min_lr = 0`) / HF polynomial decay:
    /// `min_lr + (base − min_lr)·(1 − min(t, T)/T)^power`.
    Polynomial {
        /// `T`, indices until the floor is reached.
        total: u64,
        /// Exponent.
        power: f64,
        /// Floor (`lr_end`).
        min_lr: f64,
    },
    /// torch `CosineAnnealingLR` over one half period:
    /// `min_lr + (base − min_lr)·(1 + cos(π·min(t, T)/T))/2`. Past `T` the rate stays at
    /// `min_lr` (torch's recursive form would climb back up a second half period).
    Cosine {
        /// `T_max`.
        total: u64,
        /// `eta_min`.
        min_lr: f64,
    },
    /// torch `OneCycleLR`.
    OneCycle(OneCycle),
    /// torch `CyclicLR`.
    Cyclical(Cyclical),
    /// torch `CosineAnnealingWarmRestarts` + timm cycle decay / limit.
    Sgdr(Sgdr),
    /// ReduceLROnPlateau: the rate is whatever the plateau state holds.
    Plateau,
    /// Linear warm-up (torch `LinearLR` from `start_factor` to 1) for `steps` indices, then
    /// `inner` restarted at index 0 (torch `SequentialLR([LinearLR, inner], [steps])`).
    Warmup {
        /// Warm-up length.
        steps: u64,
        /// Multiplier of the base rate at index 0.
        start_factor: f64,
        /// The schedule after the warm-up.
        inner: Box<Schedule>,
    },
    /// torch `SequentialLR`: part `i` runs from `milestones[i−1]` (0 for the first), with its
    /// own index restarting at 0.
    Sequential {
        /// The schedules in order; one more than milestones.
        parts: Vec<Schedule>,
        /// Sorted indices at which the next part takes over.
        milestones: Vec<u64>,
    },
}

impl Schedule {
    /// The learning rate at index `t` for base rate `base`. `plateau_lr` is the current rate
    /// of a ReduceLROnPlateau state (used by [`Schedule::Plateau`] only).
    pub fn lr(&self, t: u64, base: f64, plateau_lr: Option<f64>) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => base * gamma.powf((t / step_size) as f64),
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powf(milestones.iter().filter(|&&m| m <= t).count() as f64)
            }
            Schedule::Exponential { gamma } => base * gamma.powf(t as f64),
            Schedule::Polynomial { total, power, min_lr } => {
                let frac = 1.0 - t.min(*total) as f64 / *total as f64;
                min_lr + (base - min_lr) * frac.powf(*power)
            }
            Schedule::Cosine { total, min_lr } => {
                let p = t.min(*total) as f64 / *total as f64;
                min_lr + (base - min_lr) * (1.0 + (PI * p).cos()) / 2.0
            }
            Schedule::OneCycle(c) => c.at(t).0,
            Schedule::Cyclical(c) => c.at(t).0,
            Schedule::Sgdr(s) => s.at(t, base),
            Schedule::Plateau => plateau_lr.unwrap_or(base),
            Schedule::Warmup { steps, start_factor, inner } => {
                if t < *steps {
                    base * (start_factor + (1.0 - start_factor) * t as f64 / *steps as f64)
                } else {
                    inner.lr(t - steps, base, plateau_lr)
                }
            }
            Schedule::Sequential { parts, milestones } => {
                let (part, local) = Self::locate(milestones, t);
                parts[part].lr(local, base, plateau_lr)
            }
        }
    }

    /// The momentum (Adam β1) at index `t` where the schedule cycles it, else `None`
    /// (the optimizer's configured value applies).
    pub fn momentum(&self, t: u64) -> Option<f64> {
        match self {
            Schedule::OneCycle(c) => c.momentum.map(|_| c.at(t).1),
            Schedule::Cyclical(c) => c.momentum.map(|_| c.at(t).1),
            Schedule::Warmup { steps, inner, .. } => t.checked_sub(*steps).and_then(|local| inner.momentum(local)),
            Schedule::Sequential { parts, milestones } => {
                let (part, local) = Self::locate(milestones, t);
                parts[part].momentum(local)
            }
            _ => None,
        }
    }

    /// Whether the schedule reads a ReduceLROnPlateau state.
    pub fn uses_plateau(&self) -> bool {
        match self {
            Schedule::Plateau => true,
            Schedule::Warmup { inner, .. } => inner.uses_plateau(),
            Schedule::Sequential { parts, .. } => parts.iter().any(Schedule::uses_plateau),
            _ => false,
        }
    }

    fn locate(milestones: &[u64], t: u64) -> (usize, u64) {
        let part = milestones.iter().filter(|&&m| m <= t).count();
        let start = if part == 0 { 0 } else { milestones[part - 1] };
        (part, t - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn onecycle_two_phase_hits_its_corners() {
        let c = OneCycle {
            total: 100,
            max_lr: 1.0,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            anneal: Anneal::Cos,
            momentum: Some((0.85, 0.95)),
        };
        assert!(close(c.at(0).0, 1.0 / 25.0));
        assert!(close(c.at(0).1, 0.95));
        assert!(close(c.at(29).0, 1.0), "peak at pct·T − 1");
        assert!(close(c.at(29).1, 0.85));
        assert!(close(c.at(99).0, 1.0 / 25.0 / 1e4));
        assert!(close(c.at(99).1, 0.95));
        assert_eq!(c.at(500), c.at(99), "holds the last value past the end");
    }

    #[test]
    fn sgdr_locates_cycles_of_growing_length() {
        let s = Sgdr { t_0: 10, t_mult: 2, min_lr: 0.0, cycle_decay: 1.0, cycle_limit: None };
        assert_eq!(s.locate(0), (0, 0, 10));
        assert_eq!(s.locate(9), (0, 9, 10));
        assert_eq!(s.locate(10), (1, 0, 20));
        assert_eq!(s.locate(29), (1, 19, 20));
        assert_eq!(s.locate(30), (2, 0, 40));
        assert!(close(s.at(10, 2.0), 2.0), "a restart returns to the peak");
        let decayed = Sgdr { cycle_decay: 0.5, cycle_limit: Some(2), min_lr: 0.1, ..s };
        assert!(close(decayed.at(10, 2.0), 1.0), "second cycle peaks at base·decay");
        assert_eq!(decayed.at(30, 2.0), 0.1, "past the cycle limit the floor holds");
    }

    #[test]
    fn cyclical_triangular2_halves_the_amplitude() {
        let c = Cyclical {
            base_lr: 0.0,
            max_lr: 1.0,
            step_size_up: 5,
            step_size_down: 5,
            mode: CyclicalMode::Triangular2,
            gamma: 1.0,
            momentum: None,
        };
        assert!(close(c.at(5).0, 1.0));
        assert!(close(c.at(10).0, 0.0));
        assert!(close(c.at(15).0, 0.5));
        assert!(close(c.at(25).0, 0.25));
    }

    #[test]
    fn warmup_restarts_the_inner_schedule() {
        let s = Schedule::Warmup { steps: 4, start_factor: 0.0, inner: Box::new(Schedule::Exponential { gamma: 0.5 }) };
        assert_eq!(s.lr(0, 2.0, None), 0.0);
        assert_eq!(s.lr(2, 2.0, None), 1.0);
        assert_eq!(s.lr(4, 2.0, None), 2.0);
        assert_eq!(s.lr(6, 2.0, None), 0.5);
    }

    #[test]
    fn sequential_hands_over_at_milestones() {
        let s = Schedule::Sequential {
            parts: vec![Schedule::Constant, Schedule::Step { step_size: 2, gamma: 0.1 }],
            milestones: vec![3],
        };
        let lrs: Vec<f64> = (0..7).map(|t| s.lr(t, 1.0, None)).collect();
        let expect = [1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1];
        assert!(lrs.iter().zip(expect).all(|(a, b)| close(*a, b)), "{lrs:?}");
    }
}
