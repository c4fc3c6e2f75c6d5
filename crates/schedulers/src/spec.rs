//! `optimizer.scheduler:` — the serialisable description of a schedule, its validation,
//! and how it becomes a [`Scheduler`].
//!
//! One flat map keyed by `name`; keys that only one schedule reads are optional, take
//! PyTorch's default when absent, and are an error when set for a schedule that ignores
//! them (so a typo in `name` cannot silently drop a parameter).

use serde::{Deserialize, Serialize};

use crate::plateau::{Plateau, PlateauConfig, PlateauMode, ThresholdMode};
use crate::schedule::{Anneal, Cyclical, CyclicalMode, OneCycle, Schedule, Sgdr};
use crate::{Interval, Scheduler};

/// Schedule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleName {
    /// `lr` throughout (after the optional warm-up).
    #[default]
    Constant,
    /// `lr · gamma^⌊t / step_size⌋` (torch `StepLR`).
    Step,
    /// `lr · gamma^(milestones passed)` (torch `MultiStepLR`).
    Multistep,
    /// `lr · gamma^t` (torch `ExponentialLR`).
    Exponential,
    /// `min_lr + (lr − min_lr)(1 − t/T)^power` (torch `PolynomialLR`).
    Polynomial,
    /// Half a cosine from `lr` to `min_lr` over the run (torch `CosineAnnealingLR`).
    Cosine,
    /// torch `OneCycleLR`.
    Onecycle,
    /// torch `CyclicLR`.
    Cyclical,
    /// torch `CosineAnnealingWarmRestarts` (+ timm cycle decay / limit).
    Sgdr,
    /// torch `ReduceLROnPlateau` on a validation metric.
    Plateau,
    /// torch `SequentialLR` over `schedules`, switching at `milestones`.
    Sequential,
}

impl ScheduleName {
    fn as_str(self) -> &'static str {
        match self {
            ScheduleName::Constant => "constant",
            ScheduleName::Step => "step",
            ScheduleName::Multistep => "multistep",
            ScheduleName::Exponential => "exponential",
            ScheduleName::Polynomial => "polynomial",
            ScheduleName::Cosine => "cosine",
            ScheduleName::Onecycle => "onecycle",
            ScheduleName::Cyclical => "cyclical",
            ScheduleName::Sgdr => "sgdr",
            ScheduleName::Plateau => "plateau",
            ScheduleName::Sequential => "sequential",
        }
    }
}

impl std::fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `optimizer.scheduler:`. See each key for the schedules that read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSpec {
    /// Which schedule.
    pub name: ScheduleName,
    /// What the schedule index counts: optimizer steps (default) or completed epochs
    /// (PyTorch's per-epoch `scheduler.step()`).
    pub interval: Interval,
    /// Linear warm-up over this many indices before the schedule (which then starts at 0).
    pub warmup_steps: u64,
    /// Fraction of `lr` at index 0 of the warm-up (0 = HF's warm-up from zero).
    pub warmup_start_factor: f64,
    /// Warm-up as a fraction of the run (HF `warmup_ratio`, HOSER's `warmup_ratio`):
    /// `ceil(ratio · run length)` indices, at most `run length − 1` so that it fits any run (a
    /// one-step run has none). As in HF, a non-zero `warmup_steps` overrides it.
    pub warmup_ratio: Option<f64>,
    /// Floor: `eta_min` of cosine and sgdr, the end of polynomial, plateau's `min_lr`.
    pub min_lr: f64,
    /// Length of cosine / polynomial / onecycle in indices; default: the run's length minus
    /// the warm-up.
    pub total_steps: Option<u64>,
    /// step: indices between decays.
    pub step_size: Option<u64>,
    /// multistep, sequential: sorted indices.
    pub milestones: Option<Vec<u64>>,
    /// step, multistep (default 0.1), exponential (required), cyclical exp_range (default 1).
    pub gamma: Option<f64>,
    /// polynomial exponent (default 1).
    pub power: Option<f64>,
    /// onecycle: fraction of the cycle spent rising (default 0.3).
    pub pct_start: Option<f64>,
    /// onecycle: initial LR = lr / div_factor (default 25).
    pub div_factor: Option<f64>,
    /// onecycle: final LR = initial / final_div_factor (default 1e4).
    pub final_div_factor: Option<f64>,
    /// onecycle: three phases (default false).
    pub three_phase: Option<bool>,
    /// onecycle: `cos` (default) or `linear`.
    pub anneal_strategy: Option<Anneal>,
    /// onecycle, cyclical: cycle Adam's β1 inversely to the LR (default true).
    pub cycle_momentum: Option<bool>,
    /// onecycle (default 0.85), cyclical (default 0.8): lowest momentum.
    pub base_momentum: Option<f64>,
    /// onecycle (default 0.95), cyclical (default 0.9): highest momentum.
    pub max_momentum: Option<f64>,
    /// cyclical: lower bound of the cycle (default lr / 10); `lr` is the upper bound.
    pub base_lr: Option<f64>,
    /// cyclical: `triangular` (default), `triangular2` or `exp_range`.
    pub cyclical_mode: Option<CyclicalMode>,
    /// cyclical: indices from bottom to top (default 2000).
    pub step_size_up: Option<u64>,
    /// cyclical: indices from top to bottom (default = step_size_up).
    pub step_size_down: Option<u64>,
    /// sgdr: length of the first cycle (required).
    pub t_0: Option<u64>,
    /// sgdr: cycle length multiplier, an integer ≥ 1 (default 1).
    pub t_mult: Option<u64>,
    /// sgdr: peak of cycle i is lr · cycle_decay^i (default 1).
    pub cycle_decay: Option<f64>,
    /// sgdr: cycles before the LR stays at min_lr (default: unlimited).
    pub cycle_limit: Option<u64>,
    /// plateau: `min` or `max` (default: the direction of the monitored metric).
    pub mode: Option<PlateauMode>,
    /// plateau: validation metric to watch (default: the run's selection metric).
    pub monitor: Option<String>,
    /// plateau: multiplier on a cut (default 0.1).
    pub factor: Option<f64>,
    /// plateau: bad validations tolerated before a cut (default 10).
    pub patience: Option<u64>,
    /// plateau: minimum improvement (default 1e-4).
    pub threshold: Option<f64>,
    /// plateau: `rel` (default) or `abs`.
    pub threshold_mode: Option<ThresholdMode>,
    /// plateau: validations ignored after a cut (default 0).
    pub cooldown: Option<u64>,
    /// plateau: cuts smaller than this are skipped (default 1e-8).
    pub eps: Option<f64>,
    /// sequential: the parts, in order.
    pub schedules: Option<Vec<SchedulerSpec>>,
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        Self {
            name: ScheduleName::Constant,
            interval: Interval::Step,
            warmup_steps: 0,
            warmup_start_factor: 0.0,
            warmup_ratio: None,
            min_lr: 0.0,
            total_steps: None,
            step_size: None,
            milestones: None,
            gamma: None,
            power: None,
            pct_start: None,
            div_factor: None,
            final_div_factor: None,
            three_phase: None,
            anneal_strategy: None,
            cycle_momentum: None,
            base_momentum: None,
            max_momentum: None,
            base_lr: None,
            cyclical_mode: None,
            step_size_up: None,
            step_size_down: None,
            t_0: None,
            t_mult: None,
            cycle_decay: None,
            cycle_limit: None,
            mode: None,
            monitor: None,
            factor: None,
            patience: None,
            threshold: None,
            threshold_mode: None,
            cooldown: None,
            eps: None,
            schedules: None,
        }
    }
}

/// A problem with a spec: the key (relative to the scheduler section, e.g. `pct_start` or
/// `schedules[1].gamma`) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key relative to `optimizer.scheduler`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Context a spec is built in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildContext {
    /// The optimizer's peak / base learning rate.
    pub lr: f64,
    /// Length of the run in schedule indices (steps, or epochs with `interval: epoch`), if known.
    pub run_length: Option<u64>,
    /// Direction of the plateau's monitored metric when `mode` is not set.
    pub monitor_mode: Option<PlateauMode>,
}

type Problems = Vec<Problem>;

fn problem(prefix: &str, key: &str, message: impl Into<String>) -> Problem {
    Problem { key: format!("{prefix}{key}"), message: message.into() }
}

impl SchedulerSpec {
    /// Keys that are set, with the schedules that read them.
    fn set_keys(&self) -> Vec<(&'static str, &'static [ScheduleName])> {
        use ScheduleName::*;
        let mut keys: Vec<(&'static str, &'static [ScheduleName])> = Vec::new();
        let mut add = |set: bool, key: &'static str, users: &'static [ScheduleName]| {
            if set {
                keys.push((key, users));
            }
        };
        add(self.total_steps.is_some(), "total_steps", &[Cosine, Polynomial, Onecycle]);
        add(self.step_size.is_some(), "step_size", &[Step]);
        add(self.milestones.is_some(), "milestones", &[Multistep, Sequential]);
        add(self.gamma.is_some(), "gamma", &[Step, Multistep, Exponential, Cyclical]);
        add(self.power.is_some(), "power", &[Polynomial]);
        add(self.pct_start.is_some(), "pct_start", &[Onecycle]);
        add(self.div_factor.is_some(), "div_factor", &[Onecycle]);
        add(self.final_div_factor.is_some(), "final_div_factor", &[Onecycle]);
        add(self.three_phase.is_some(), "three_phase", &[Onecycle]);
        add(self.anneal_strategy.is_some(), "anneal_strategy", &[Onecycle]);
        add(self.cycle_momentum.is_some(), "cycle_momentum", &[Onecycle, Cyclical]);
        add(self.base_momentum.is_some(), "base_momentum", &[Onecycle, Cyclical]);
        add(self.max_momentum.is_some(), "max_momentum", &[Onecycle, Cyclical]);
        add(self.base_lr.is_some(), "base_lr", &[Cyclical]);
        add(self.cyclical_mode.is_some(), "cyclical_mode", &[Cyclical]);
        add(self.step_size_up.is_some(), "step_size_up", &[Cyclical]);
        add(self.step_size_down.is_some(), "step_size_down", &[Cyclical]);
        add(self.t_0.is_some(), "t_0", &[Sgdr]);
        add(self.t_mult.is_some(), "t_mult", &[Sgdr]);
        add(self.cycle_decay.is_some(), "cycle_decay", &[Sgdr]);
        add(self.cycle_limit.is_some(), "cycle_limit", &[Sgdr]);
        add(self.mode.is_some(), "mode", &[Plateau]);
        add(self.monitor.is_some(), "monitor", &[Plateau]);
        add(self.factor.is_some(), "factor", &[Plateau]);
        add(self.patience.is_some(), "patience", &[Plateau]);
        add(self.threshold.is_some(), "threshold", &[Plateau]);
        add(self.threshold_mode.is_some(), "threshold_mode", &[Plateau]);
        add(self.cooldown.is_some(), "cooldown", &[Plateau]);
        add(self.eps.is_some(), "eps", &[Plateau]);
        add(self.schedules.is_some(), "schedules", &[Sequential]);
        keys
    }

    /// Checks what can be checked without the run's length. `lr` is the optimizer's rate.
    pub fn check(&self, lr: f64) -> Problems {
        let mut p = Vec::new();
        self.check_into("", lr, true, &mut p);
        p
    }

    fn check_into(&self, prefix: &str, lr: f64, top: bool, p: &mut Problems) {
        use ScheduleName as N;
        for (key, users) in self.set_keys() {
            if !users.contains(&self.name) {
                let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
                p.push(problem(
                    prefix,
                    key,
                    format!("does not apply to `{}`; it is read by {}", self.name, names.join(", ")),
                ));
            }
        }
        let positive = |key: &str, v: Option<f64>, p: &mut Problems| {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                p.push(problem(prefix, key, format!("expected a positive number, got {v}")));
            }
        };
        let fraction = |key: &str, v: Option<f64>, p: &mut Problems| {
            if let Some(v) = v
                && !(v > 0.0 && v < 1.0)
            {
                p.push(problem(prefix, key, format!("expected a value in (0, 1), got {v}")));
            }
        };
        if !top && self.interval != Interval::Step {
            p.push(problem(prefix, "interval", "is set once, on the top-level scheduler"));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= lr) {
            p.push(problem(prefix, "min_lr", format!("expected 0 <= min_lr <= lr ({lr}), got {}", self.min_lr)));
        }
        if !(0.0..=1.0).contains(&self.warmup_start_factor) {
            p.push(problem(
                prefix,
                "warmup_start_factor",
                format!("expected a fraction of lr in [0, 1], got {}", self.warmup_start_factor),
            ));
        }
        if let Some(r) = self.warmup_ratio
            && !(0.0..1.0).contains(&r)
        {
            p.push(problem(prefix, "warmup_ratio", format!("expected a fraction of the run in [0, 1), got {r}")));
        }
        if (self.warmup_steps > 0 || self.warmup_ratio.is_some_and(|r| r > 0.0))
            && matches!(self.name, N::Onecycle | N::Cyclical)
        {
            p.push(problem(
                prefix,
                "warmup_steps",
                format!("`{}` has its own warm-up (pct_start / step_size_up); set warmup_steps to 0", self.name),
            ));
        }
        if self.total_steps == Some(0) {
            p.push(problem(prefix, "total_steps", "expected at least 1"));
        }
        positive("gamma", self.gamma, p);
        positive("power", self.power, p);
        match self.name {
            N::Constant | N::Cosine | N::Polynomial => {}
            N::Step => match self.step_size {
                None => p.push(problem(prefix, "step_size", "`step` needs step_size (indices between decays)")),
                Some(0) => p.push(problem(prefix, "step_size", "expected at least 1")),
                Some(_) => {}
            },
            N::Multistep => match &self.milestones {
                None => p.push(problem(prefix, "milestones", "`multistep` needs milestones, e.g. [30, 80]")),
                Some(m) if !m.windows(2).all(|w| w[0] < w[1]) => {
                    p.push(problem(prefix, "milestones", format!("expected strictly increasing indices, got {m:?}")))
                }
                Some(_) => {}
            },
            N::Exponential => {
                if self.gamma.is_none() {
                    p.push(problem(prefix, "gamma", "`exponential` needs gamma (the per-index decay, e.g. 0.99)"));
                }
            }
            N::Onecycle => {
                fraction("pct_start", self.pct_start, p);
                for (key, v) in [("div_factor", self.div_factor), ("final_div_factor", self.final_div_factor)] {
                    positive(key, v, p);
                }
                self.check_momentum(prefix, 0.85, 0.95, p);
            }
            N::Cyclical => {
                if let Some(b) = self.base_lr
                    && !(b.is_finite() && b >= 0.0 && b < lr)
                {
                    p.push(problem(prefix, "base_lr", format!("expected 0 <= base_lr < lr ({lr}), got {b}")));
                }
                if self.step_size_up == Some(0) {
                    p.push(problem(prefix, "step_size_up", "expected at least 1"));
                }
                if self.step_size_down == Some(0) {
                    p.push(problem(prefix, "step_size_down", "expected at least 1"));
                }
                if self.gamma.is_some() && self.cyclical_mode != Some(CyclicalMode::ExpRange) {
                    p.push(problem(prefix, "gamma", "is read by cyclical_mode: exp_range only"));
                }
                self.check_momentum(prefix, 0.8, 0.9, p);
            }
            N::Sgdr => {
                match self.t_0 {
                    None => p.push(problem(
                        prefix,
                        "t_0",
                        "`sgdr` needs t_0, the length of the first cycle (--sgdr-cycle-length)",
                    )),
                    Some(0) => p.push(problem(prefix, "t_0", "expected at least 1")),
                    Some(_) => {}
                }
                if self.t_mult == Some(0) {
                    p.push(problem(prefix, "t_mult", "expected an integer >= 1"));
                }
                if let Some(d) = self.cycle_decay
                    && !(d.is_finite() && d > 0.0 && d <= 1.0)
                {
                    p.push(problem(prefix, "cycle_decay", format!("expected a value in (0, 1], got {d}")));
                }
                if self.cycle_limit == Some(0) {
                    p.push(problem(prefix, "cycle_limit", "expected at least 1 cycle (or null for unlimited)"));
                }
            }
            N::Plateau => {
                if !top {
                    p.push(problem(prefix, "name", "plateau reacts to validations and cannot be a sequential part"));
                }
                fraction("factor", self.factor, p);
                if let Some(t) = self.threshold
                    && !(t.is_finite() && t >= 0.0)
                {
                    p.push(problem(prefix, "threshold", format!("expected a non-negative number, got {t}")));
                }
                if let Some(e) = self.eps
                    && !(e.is_finite() && e >= 0.0)
                {
                    p.push(problem(prefix, "eps", format!("expected a non-negative number, got {e}")));
                }
            }
            N::Sequential => {
                let parts = self.schedules.as_deref().unwrap_or_default();
                let milestones = self.milestones.as_deref().unwrap_or_default();
                if parts.len() < 2 {
                    p.push(problem(prefix, "schedules", "`sequential` needs at least two schedules"));
                } else if milestones.len() + 1 != parts.len() {
                    p.push(problem(
                        prefix,
                        "milestones",
                        format!(
                            "expected {} milestones for {} schedules, got {}",
                            parts.len() - 1,
                            parts.len(),
                            milestones.len()
                        ),
                    ));
                }
                if !milestones.windows(2).all(|w| w[0] < w[1]) || milestones.first() == Some(&0) {
                    p.push(problem(
                        prefix,
                        "milestones",
                        format!("expected strictly increasing positive indices, got {milestones:?}"),
                    ));
                }
                for (i, part) in parts.iter().enumerate() {
                    part.check_into(&format!("{prefix}schedules[{i}]."), lr, false, p);
                }
            }
        }
    }

    fn check_momentum(&self, prefix: &str, base: f64, max: f64, p: &mut Problems) {
        let (b, m) = (self.base_momentum.unwrap_or(base), self.max_momentum.unwrap_or(max));
        if !(0.0 <= b && b <= m && m < 1.0) {
            p.push(problem(
                prefix,
                "base_momentum",
                format!("expected 0 <= base_momentum ({b}) <= max_momentum ({m}) < 1"),
            ));
        }
    }

    /// Builds the scheduler. Checks everything [`SchedulerSpec::check`] does, plus what
    /// needs the run's length.
    pub fn build(&self, ctx: BuildContext) -> Result<Scheduler, Problems> {
        let mut p = self.check(ctx.lr);
        if !p.is_empty() {
            return Err(p);
        }
        let schedule = self.schedule("", ctx.lr, ctx.run_length, &mut p);
        let plateau = (self.name == ScheduleName::Plateau).then(|| {
            let mode = self.mode.or(ctx.monitor_mode).unwrap_or(PlateauMode::Min);
            let config = PlateauConfig {
                mode,
                factor: self.factor.unwrap_or(0.1),
                patience: self.patience.unwrap_or(10),
                threshold: self.threshold.unwrap_or(1e-4),
                threshold_mode: self.threshold_mode.unwrap_or_default(),
                cooldown: self.cooldown.unwrap_or(0),
                min_lr: self.min_lr,
                eps: self.eps.unwrap_or(1e-8),
            };
            Plateau::new(config, ctx.lr)
        });
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Scheduler { base_lr: ctx.lr, interval: self.interval, schedule, plateau })
    }

    /// The schedule of this spec over `length` indices (its own, after the warm-up).
    fn schedule(&self, prefix: &str, lr: f64, length: Option<u64>, p: &mut Problems) -> Schedule {
        use ScheduleName as N;
        let warmup = match (self.warmup_ratio.filter(|_| self.warmup_steps == 0), length) {
            // A ratio is relative to the run, so it must fit whatever the run's length: a tiny run
            // (`--steps 1`) gets a shorter warm-up (none at all for one index) instead of an error
            // about a key the user may never have set. Only an explicit `warmup_steps` can be too long.
            (Some(r), Some(len)) => ((r * len as f64).ceil() as u64).min(len.saturating_sub(1)),
            (Some(_), None) => {
                p.push(problem(prefix, "warmup_ratio", "needs the run length: give the run a budget"));
                0
            }
            (None, _) => self.warmup_steps,
        };
        if let Some(len) = length
            && warmup > 0
            && warmup >= len
        {
            p.push(problem(
                prefix,
                "warmup_steps",
                format!("warm-up of {warmup} is not shorter than the {len} indices"),
            ));
        }
        let after_warmup = length.map(|l| l.saturating_sub(warmup));
        let total = |needs: &str, p: &mut Problems| -> u64 {
            match self.total_steps.or(after_warmup) {
                Some(t) if t > 0 => t,
                Some(_) => {
                    p.push(problem(prefix, "total_steps", format!("`{needs}` has no indices left after the warm-up")));
                    1
                }
                None => {
                    p.push(problem(
                        prefix,
                        "total_steps",
                        format!(
                            "`{needs}` needs the total number of steps: set total_steps, or give the run a \
                             budget (training.max_steps or training.epochs)"
                        ),
                    ));
                    1
                }
            }
        };
        let inner = match self.name {
            N::Constant => Schedule::Constant,
            N::Step => Schedule::Step { step_size: self.step_size.unwrap_or(1), gamma: self.gamma.unwrap_or(0.1) },
            N::Multistep => Schedule::MultiStep {
                milestones: self.milestones.clone().unwrap_or_default(),
                gamma: self.gamma.unwrap_or(0.1),
            },
            N::Exponential => Schedule::Exponential { gamma: self.gamma.unwrap_or(1.0) },
            N::Polynomial => Schedule::Polynomial {
                total: total("polynomial", p),
                power: self.power.unwrap_or(1.0),
                min_lr: self.min_lr,
            },
            N::Cosine => Schedule::Cosine { total: total("cosine", p), min_lr: self.min_lr },
            N::Onecycle => {
                let known = p.len();
                let total = total("onecycle", p);
                let pct_start = self.pct_start.unwrap_or(0.3);
                let three_phase = self.three_phase.unwrap_or(false);
                // torch's phase ends are pct·T − 1 (and 2·pct·T − 2): a phase of zero length
                // divides by zero there; refuse it instead.
                let rise = pct_start * total as f64 - 1.0;
                let fall_end = if three_phase { 2.0 * pct_start * total as f64 - 2.0 } else { total as f64 - 1.0 };
                let degenerate = rise <= 0.0 || fall_end <= rise || (three_phase && total as f64 - 1.0 <= fall_end);
                if p.len() == known && degenerate {
                    p.push(problem(
                        prefix,
                        "pct_start",
                        format!("pct_start {pct_start} over {total} steps leaves a phase with no steps"),
                    ));
                }
                Schedule::OneCycle(OneCycle {
                    total,
                    max_lr: lr,
                    pct_start,
                    div_factor: self.div_factor.unwrap_or(25.0),
                    final_div_factor: self.final_div_factor.unwrap_or(1e4),
                    three_phase,
                    anneal: self.anneal_strategy.unwrap_or_default(),
                    momentum: self
                        .cycle_momentum
                        .unwrap_or(true)
                        .then(|| (self.base_momentum.unwrap_or(0.85), self.max_momentum.unwrap_or(0.95))),
                })
            }
            N::Cyclical => {
                let up = self.step_size_up.unwrap_or(2000);
                Schedule::Cyclical(Cyclical {
                    base_lr: self.base_lr.unwrap_or(lr / 10.0),
                    max_lr: lr,
                    step_size_up: up,
                    step_size_down: self.step_size_down.unwrap_or(up),
                    mode: self.cyclical_mode.unwrap_or_default(),
                    gamma: self.gamma.unwrap_or(1.0),
                    momentum: self
                        .cycle_momentum
                        .unwrap_or(true)
                        .then(|| (self.base_momentum.unwrap_or(0.8), self.max_momentum.unwrap_or(0.9))),
                })
            }
            N::Sgdr => Schedule::Sgdr(Sgdr {
                t_0: self.t_0.unwrap_or(1),
                t_mult: self.t_mult.unwrap_or(1),
                min_lr: self.min_lr,
                cycle_decay: self.cycle_decay.unwrap_or(1.0),
                cycle_limit: self.cycle_limit,
            }),
            N::Plateau => Schedule::Plateau,
            N::Sequential => {
                let milestones = self.milestones.clone().unwrap_or_default();
                let parts = self.schedules.as_deref().unwrap_or_default();
                if let (Some(len), Some(&last)) = (after_warmup, milestones.last())
                    && last >= len
                {
                    p.push(problem(
                        prefix,
                        "milestones",
                        format!("milestone {last} is past the end of the schedule ({len} indices)"),
                    ));
                }
                let parts = parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| {
                        let start = if i == 0 { 0 } else { milestones[i - 1] };
                        let end = milestones.get(i).copied().map(Some).unwrap_or(after_warmup);
                        let len = end.map(|e| e.saturating_sub(start));
                        part.schedule(&format!("{prefix}schedules[{i}]."), lr, len, p)
                    })
                    .collect();
                Schedule::Sequential { parts, milestones }
            }
        };
        if warmup == 0 {
            inner
        } else {
            Schedule::Warmup { steps: warmup, start_factor: self.warmup_start_factor, inner: Box::new(inner) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> SchedulerSpec {
        serde_json::from_str(yaml).unwrap()
    }

    fn keys(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_schedule_over_the_run_needs_the_run_length() {
        let ctx = BuildContext { lr: 0.1, run_length: None, monitor_mode: None };
        for name in ["cosine", "polynomial", "onecycle"] {
            let p = spec(&format!(r#"{{"name": "{name}"}}"#)).build(ctx).unwrap_err();
            assert_eq!(keys(&p), ["total_steps"], "{name}");
            assert!(p[0].message.contains("needs the total number of steps"), "{}", p[0].message);
        }
        let given = spec(r#"{"name": "cosine", "total_steps": 50}"#).build(ctx).unwrap();
        assert_eq!(given.lr_at(50), 0.0);
        assert!(spec(r#"{"name": "exponential", "gamma": 0.9}"#).build(ctx).is_ok(), "needs no length");
    }

    #[test]
    fn keys_of_other_schedules_and_bad_values_are_named() {
        let p = spec(r#"{"name": "cosine", "pct_start": 0.3, "gamma": 0.5}"#).check(0.1);
        assert_eq!(keys(&p), ["gamma", "pct_start"]);
        assert!(p[1].message.contains("does not apply to `cosine`; it is read by onecycle"), "{}", p[1].message);
        let p = spec(
            r#"{"name": "sequential", "milestones": [10], "schedules": [{"name": "constant"},
            {"name": "step"}]}"#,
        )
        .check(0.1);
        assert_eq!(keys(&p), ["schedules[1].step_size"]);
        let p = spec(r#"{"name": "onecycle", "pct_start": 1.5, "base_momentum": 0.99}"#).check(0.1);
        assert_eq!(keys(&p), ["pct_start", "base_momentum"]);
        let ctx = BuildContext { lr: 0.1, run_length: Some(3), monitor_mode: None };
        let p = spec(r#"{"name": "onecycle"}"#).build(ctx).unwrap_err();
        assert!(p[0].message.contains("leaves a phase with no steps"), "{p:?}");
    }

    #[test]
    fn a_warmup_ratio_becomes_steps_of_the_run() {
        let ctx = BuildContext { lr: 1.0, run_length: Some(125), monitor_mode: None };
        let s = spec(r#"{"name": "cosine", "warmup_ratio": 0.1}"#).build(ctx).unwrap();
        // ceil(0.1 · 125) = 13 warm-up steps, then the cosine over the remaining 112.
        assert!((s.lr_at(12) - 12.0 / 13.0).abs() < 1e-12);
        assert_eq!(s.lr_at(13), 1.0);
        assert!(s.lr_at(125) < 1e-12);
        let s = spec(r#"{"name": "cosine", "warmup_ratio": 0.1, "warmup_steps": 5}"#).build(ctx).unwrap();
        assert_eq!(s.lr_at(5), 1.0, "warmup_steps overrides warmup_ratio, as in HF");
        let p = spec(r#"{"name": "onecycle", "warmup_ratio": 0.1}"#).check(1.0);
        assert_eq!(keys(&p), ["warmup_steps"]);
    }

    #[test]
    fn a_warmup_ratio_is_clamped_to_fit_a_tiny_run_but_explicit_steps_are_not() {
        let one = BuildContext { lr: 1.0, run_length: Some(1), monitor_mode: None };
        let s = spec(r#"{"name": "cosine", "warmup_ratio": 0.1}"#).build(one).expect("ratio warm-up fits one step");
        assert_eq!(s.lr_at(0), 1.0, "no warm-up left in a one-step run");
        let two = BuildContext { lr: 1.0, run_length: Some(2), monitor_mode: None };
        let s = spec(r#"{"name": "constant", "warmup_ratio": 0.9}"#).build(two).expect("ceil(1.8) = 2 is clamped to 1");
        assert_eq!(s.lr_at(1), 1.0, "one warm-up index, then the schedule");
        let p = spec(r#"{"name": "cosine", "warmup_steps": 1}"#).build(one).unwrap_err();
        assert_eq!(keys(&p)[0], "warmup_steps", "an explicit warm-up as long as the run is still an error: {p:?}");
    }

    #[test]
    fn plateau_takes_the_direction_of_its_monitor() {
        let ctx = BuildContext { lr: 1.0, run_length: Some(10), monitor_mode: Some(PlateauMode::Max) };
        let s = spec(r#"{"name": "plateau"}"#).build(ctx).unwrap();
        assert_eq!(s.plateau().unwrap().config().mode, PlateauMode::Max);
        let s = spec(r#"{"name": "plateau", "mode": "min"}"#).build(ctx).unwrap();
        assert_eq!(s.plateau().unwrap().config().mode, PlateauMode::Min, "an explicit mode wins");
    }
}
