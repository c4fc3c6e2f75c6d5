//! Optuna 5's pruners, rule for rule, over a plain study record.
//!
//! A driver keeps a [`StudyView`]: the study's name (Hyperband hashes it), its [`Direction`] and
//! its trials in creation order, a trial's `number` being its position, as in Optuna. After each
//! report (`StudyView::report`) it calls [`Pruner::prune`] with the trial's index; when the
//! trial ends it sets the trial's [`TrialState`] (`StudyView::finish`). The decisions equal
//! Optuna's for the same sequence of asks, reports and tells (`tests/optuna_parity.rs`).
//!
//! # State, and rebuilding a study from a journal
//!
//! Successive Halving (and so Hyperband) remembers, per trial, the value with which the trial
//! completed each rung: Optuna stores it as the trial's system attribute `completed_rung_{k}`.
//! Here it is [`TrialRecord::completed_rungs`] (entry `k` is `completed_rung_{k}`), written by
//! `prune` itself, which is why `prune` takes the study mutably. A journal that records every
//! report and every decision (or the rung values themselves) rebuilds the study exactly.
//!
//! The only state a pruner object caches is what Optuna caches on first use: Successive
//! Halving's `min_resource = "auto"` (`max(last_step // 100, 1)` over the complete trials at the
//! first check that finds one) and Hyperband's `max_resource = "auto"` (largest last step of a
//! complete trial, plus one, at the first check that finds one) with the brackets derived from
//! it. Once fixed they never change, even when later trials run longer. A driver that restarts
//! mid-study gets the same value back by replaying the journal's checks in order through a fresh
//! pruner (or by pinning the resource in the configuration).
//!
//! # Rules (Optuna 5.0.0 source)
//!
//! * Percentile (`optuna/pruners/_percentile.py`), Median = Percentile(50): no pruning until
//!   `n_startup_trials` trials are complete (and never with none), before `n_warmup_steps`, or
//!   off the interval grid (the check runs at the first report at or after each
//!   `n_warmup_steps + k * interval_steps`). The trial's best value so far (NaN-ignoring min or
//!   max over all its reports; all NaN prunes) is compared strictly with numpy's
//!   `nanpercentile` (linear) of the complete trials' values at exactly the current step
//!   (`100 - p` when maximising); fewer than `n_min_trials` such values (NaN counted) or an
//!   all-NaN set never prunes.
//! * Successive Halving (`_successive_halving.py`): rung `k` is reached at step
//!   `min_resource * reduction_factor^(min_early_stopping_rate + k)`; the *latest* value is
//!   judged (NaN prunes), stored as `completed_rung_k`, and compared with every trial's
//!   `completed_rung_k` (any state, the current one included): with `n` competing values the
//!   trial goes on if it is within the best `max(n / reduction_factor, 1)`, ties kept; with at
//!   most `bootstrap_count` values it is pruned. One report past several rungs is judged on each
//!   in turn.
//! * Hyperband (`_hyperband.py`): `n_brackets = floor(log(R / r) / log(eta)) + 1` in floating
//!   point, without an epsilon (so `R = 243, eta = 3` gives 5 brackets, as in Optuna, not 6);
//!   bracket `b` gets `ceil(n_brackets * eta^s / (s + 1))` slots, `s = n_brackets - 1 - b`; trial
//!   `number` goes to the bracket holding slot `crc32("{study_name}_{number}") % total`; bracket
//!   `b` is a Successive Halving with `min_early_stopping_rate = b` that sees only its bracket's
//!   trials.
//! * Nop never prunes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Whether the study minimises or maximises the objective (and the intermediate values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Minimize,
    Maximize,
}

/// A trial's state, as Optuna's `TrialState` (`WAITING` is not modelled: trials start running).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Running,
    Complete,
    Pruned,
    Failed,
}

/// One trial of the study: what the pruners read and write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Optuna's `trial.number`: the trial's position in the study, from 0.
    pub number: u64,
    pub state: TrialState,
    /// The reported intermediate values by step (Optuna's `intermediate_values`).
    pub intermediate: BTreeMap<u64, f64>,
    /// Successive Halving's rung values: entry `k` is Optuna's system attribute
    /// `completed_rung_{k}`, written by the pruner when the trial reaches rung `k`.
    pub completed_rungs: Vec<f64>,
}

impl TrialRecord {
    /// A running trial with nothing reported.
    pub fn new(number: u64) -> Self {
        Self { number, state: TrialState::Running, intermediate: BTreeMap::new(), completed_rungs: Vec::new() }
    }

    /// Optuna's `trial.last_step`: the largest step reported.
    pub fn last_step(&self) -> Option<u64> {
        self.intermediate.keys().next_back().copied()
    }
}

/// The study as the pruners see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyView {
    /// Optuna's `study_name` (Hyperband's bracket hash reads it).
    pub name: String,
    pub direction: Direction,
    /// All trials, in creation order (`trials[i].number == i`).
    pub trials: Vec<TrialRecord>,
}

impl StudyView {
    pub fn new(name: impl Into<String>, direction: Direction) -> Self {
        Self { name: name.into(), direction, trials: Vec::new() }
    }

    /// Optuna's `study.ask()`: a new running trial; returns its index (= its number).
    pub fn ask(&mut self) -> usize {
        let index = self.trials.len();
        self.trials.push(TrialRecord::new(index as u64));
        index
    }

    /// Optuna's `trial.report(value, step)`: a step already reported is ignored (Optuna warns
    /// and keeps the first value). Returns whether the value was recorded.
    pub fn report(&mut self, trial: usize, step: u64, value: f64) -> Result<bool, PruneError> {
        let record = self.trial_mut(trial)?;
        if record.intermediate.contains_key(&step) {
            return Ok(false);
        }
        record.intermediate.insert(step, value);
        Ok(true)
    }

    /// Ends a trial. Optuna's `study.tell(trial, value)` marks a NaN value `Failed`; that choice
    /// is the caller's here.
    pub fn finish(&mut self, trial: usize, state: TrialState) -> Result<(), PruneError> {
        self.trial_mut(trial)?.state = state;
        Ok(())
    }

    fn trial_mut(&mut self, trial: usize) -> Result<&mut TrialRecord, PruneError> {
        let len = self.trials.len();
        self.trials.get_mut(trial).ok_or(PruneError::UnknownTrial { index: trial, len })
    }

    fn check(&self, trial: usize) -> Result<(), PruneError> {
        if trial < self.trials.len() {
            Ok(())
        } else {
            Err(PruneError::UnknownTrial { index: trial, len: self.trials.len() })
        }
    }
}

/// A pruner parameter outside its range (the constructors' only error).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("pruner parameter `{name}` is {value}, but must be {requirement}")]
pub struct ParameterError {
    /// The parameter's name, as in Optuna's constructors.
    pub name: &'static str,
    pub value: String,
    pub requirement: &'static str,
}

fn bad(name: &'static str, value: impl ToString, requirement: &'static str) -> ParameterError {
    ParameterError { name, value: value.to_string(), requirement }
}

/// A pruning check that could not be made.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PruneError {
    #[error("trial index {index} is not in the study ({len} trials)")]
    UnknownTrial { index: usize, len: usize },
}

/// Decides, after a report, whether a trial should stop (Optuna's `BasePruner.prune`).
pub trait Pruner: Send {
    /// Whether trial `trial` (an index into `study.trials`) should be pruned now. May record
    /// per-trial state in the trial (Successive Halving's [`TrialRecord::completed_rungs`]).
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError>;
}

/// A resource given as a step count or left to be found from the complete trials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ResourceRepr", into = "ResourceRepr")]
pub enum Resource {
    Auto,
    Steps(i64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ResourceRepr {
    Steps(i64),
    Word(String),
}

impl TryFrom<ResourceRepr> for Resource {
    type Error = String;
    fn try_from(repr: ResourceRepr) -> Result<Self, String> {
        match repr {
            ResourceRepr::Steps(n) => Ok(Resource::Steps(n)),
            ResourceRepr::Word(w) if w == "auto" => Ok(Resource::Auto),
            ResourceRepr::Word(w) => Err(format!("expected a step count or \"auto\", got {w:?}")),
        }
    }
}

impl From<Resource> for ResourceRepr {
    fn from(r: Resource) -> Self {
        match r {
            Resource::Auto => ResourceRepr::Word("auto".into()),
            Resource::Steps(n) => ResourceRepr::Steps(n),
        }
    }
}

/// Successive Halving's `min_resource`.
pub type MinResource = Resource;
/// Hyperband's `max_resource`.
pub type MaxResource = Resource;

/// A pruner as configured (the shape of Optuna's constructor arguments, with Optuna's
/// defaults); [`PrunerSpec::build`] checks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrunerSpec {
    Median {
        #[serde(default = "default_startup")]
        n_startup_trials: i64,
        #[serde(default)]
        n_warmup_steps: i64,
        #[serde(default = "one")]
        interval_steps: i64,
        #[serde(default = "one")]
        n_min_trials: i64,
    },
    Percentile {
        percentile: f64,
        #[serde(default = "default_startup")]
        n_startup_trials: i64,
        #[serde(default)]
        n_warmup_steps: i64,
        #[serde(default = "one")]
        interval_steps: i64,
        #[serde(default = "one")]
        n_min_trials: i64,
    },
    SuccessiveHalving {
        #[serde(default = "auto")]
        min_resource: Resource,
        #[serde(default = "four")]
        reduction_factor: i64,
        #[serde(default)]
        min_early_stopping_rate: i64,
        #[serde(default)]
        bootstrap_count: i64,
    },
    Hyperband {
        #[serde(default = "one")]
        min_resource: i64,
        #[serde(default = "auto")]
        max_resource: Resource,
        #[serde(default = "three")]
        reduction_factor: i64,
        #[serde(default)]
        bootstrap_count: i64,
    },
    Nop,
}

fn default_startup() -> i64 {
    5
}
fn one() -> i64 {
    1
}
fn three() -> i64 {
    3
}
fn four() -> i64 {
    4
}
fn auto() -> Resource {
    Resource::Auto
}

impl PrunerSpec {
    /// The pruner, or the first parameter out of range.
    pub fn build(&self) -> Result<Box<dyn Pruner>, ParameterError> {
        Ok(match *self {
            PrunerSpec::Median { n_startup_trials, n_warmup_steps, interval_steps, n_min_trials } => {
                Box::new(MedianPruner::new(n_startup_trials, n_warmup_steps, interval_steps, n_min_trials)?)
            }
            PrunerSpec::Percentile { percentile, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials } => {
                Box::new(PercentilePruner::new(
                    percentile,
                    n_startup_trials,
                    n_warmup_steps,
                    interval_steps,
                    n_min_trials,
                )?)
            }
            PrunerSpec::SuccessiveHalving {
                min_resource,
                reduction_factor,
                min_early_stopping_rate,
                bootstrap_count,
            } => Box::new(SuccessiveHalvingPruner::new(
                min_resource,
                reduction_factor,
                min_early_stopping_rate,
                bootstrap_count,
            )?),
            PrunerSpec::Hyperband { min_resource, max_resource, reduction_factor, bootstrap_count } => {
                Box::new(HyperbandPruner::new(min_resource, max_resource, reduction_factor, bootstrap_count)?)
            }
            PrunerSpec::Nop => Box::new(NopPruner),
        })
    }
}

/// Optuna's `NopPruner`: never prunes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError> {
        study.check(trial)?;
        Ok(false)
    }
}

/// Optuna's `PercentilePruner`.
#[derive(Clone, Debug, PartialEq)]
pub struct PercentilePruner {
    percentile: f64,
    n_startup_trials: usize,
    n_warmup_steps: u64,
    interval_steps: u64,
    n_min_trials: usize,
}

fn non_negative(name: &'static str, value: i64) -> Result<u64, ParameterError> {
    u64::try_from(value).map_err(|_| bad(name, value, "non-negative"))
}

fn at_least(name: &'static str, value: i64, min: i64, req: &'static str) -> Result<u64, ParameterError> {
    if value < min {
        return Err(bad(name, value, req));
    }
    Ok(value as u64)
}

impl PercentilePruner {
    /// Optuna's `PercentilePruner(percentile, n_startup_trials, n_warmup_steps, interval_steps,
    /// n_min_trials=...)`; Optuna's defaults are 5, 0, 1, 1.
    pub fn new(
        percentile: f64,
        n_startup_trials: i64,
        n_warmup_steps: i64,
        interval_steps: i64,
        n_min_trials: i64,
    ) -> Result<Self, ParameterError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(bad("percentile", percentile, "between 0 and 100 inclusive"));
        }
        let n_startup_trials = non_negative("n_startup_trials", n_startup_trials)?;
        let n_warmup_steps = non_negative("n_warmup_steps", n_warmup_steps)?;
        let interval_steps = at_least("interval_steps", interval_steps, 1, "at least 1")?;
        let n_min_trials = at_least("n_min_trials", n_min_trials, 1, "at least 1")?;
        Ok(Self {
            percentile,
            n_startup_trials: usize::try_from(n_startup_trials).unwrap_or(usize::MAX),
            n_warmup_steps,
            interval_steps,
            n_min_trials: usize::try_from(n_min_trials).unwrap_or(usize::MAX),
        })
    }
}

/// Optuna's `MedianPruner`: a [`PercentilePruner`] at 50.
#[derive(Clone, Debug, PartialEq)]
pub struct MedianPruner(PercentilePruner);

impl MedianPruner {
    /// Optuna's `MedianPruner(n_startup_trials, n_warmup_steps, interval_steps,
    /// n_min_trials=...)`; Optuna's defaults are 5, 0, 1, 1.
    pub fn new(
        n_startup_trials: i64,
        n_warmup_steps: i64,
        interval_steps: i64,
        n_min_trials: i64,
    ) -> Result<Self, ParameterError> {
        PercentilePruner::new(50.0, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials).map(Self)
    }
}

impl Pruner for MedianPruner {
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError> {
        self.0.prune(study, trial)
    }
}

/// numpy's `nanmin` / `nanmax` over the trial's values: NaN when all are NaN (or none).
fn best_intermediate(values: impl Iterator<Item = f64>, direction: Direction) -> f64 {
    values.filter(|v| !v.is_nan()).fold(f64::NAN, |best, v| {
        if best.is_nan() {
            v
        } else {
            match direction {
                Direction::Minimize => best.min(v),
                Direction::Maximize => best.max(v),
            }
        }
    })
}

/// numpy's `nanpercentile(values, q)` with the default `linear` method, float op for float op
/// (`numpy/lib/_function_base_impl.py`: `_quantile`, `_get_indexes`, `_lerp`).
fn nanpercentile(values: &[f64], percentile: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let q = percentile / 100.0;
    let virtual_index = (n - 1) as f64 * q;
    let (a, b, gamma) = if virtual_index >= (n - 1) as f64 {
        // numpy takes the last value twice, with the previous index set to -1.
        (sorted[n - 1], sorted[n - 1], virtual_index + 1.0)
    } else {
        let previous = virtual_index.floor();
        let i = previous as usize;
        (sorted[i], sorted[i + 1], virtual_index - previous)
    };
    let diff = b - a;
    if gamma >= 0.5 { b - diff * (1.0 - gamma) } else { a + diff * gamma }
}

impl Pruner for PercentilePruner {
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError> {
        study.check(trial)?;
        let study = &*study;
        let completed: Vec<&TrialRecord> = study.trials.iter().filter(|t| t.state == TrialState::Complete).collect();
        if completed.is_empty() || completed.len() < self.n_startup_trials {
            return Ok(false);
        }
        let record = &study.trials[trial];
        let Some(step) = record.last_step() else {
            return Ok(false);
        };
        if step < self.n_warmup_steps {
            return Ok(false);
        }
        // `_is_first_in_interval_step`: the previous report must lie before the grid point at
        // or below this step.
        let nearest_lower_pruning_step =
            (step - self.n_warmup_steps) / self.interval_steps * self.interval_steps + self.n_warmup_steps;
        let second_last_step = record.intermediate.keys().rev().find(|&&s| s != step);
        if second_last_step.is_some_and(|&s| s >= nearest_lower_pruning_step) {
            return Ok(false);
        }
        let direction = study.direction;
        let best = best_intermediate(record.intermediate.values().copied(), direction);
        if best.is_nan() {
            return Ok(true);
        }
        let at_step: Vec<f64> = completed.iter().filter_map(|t| t.intermediate.get(&step).copied()).collect();
        if at_step.len() < self.n_min_trials {
            return Ok(false);
        }
        let percentile = match direction {
            Direction::Maximize => 100.0 - self.percentile,
            Direction::Minimize => self.percentile,
        };
        let p = nanpercentile(&at_step, percentile);
        if p.is_nan() {
            return Ok(false);
        }
        Ok(match direction {
            Direction::Maximize => best < p,
            Direction::Minimize => best > p,
        })
    }
}

/// Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving).
#[derive(Clone, Debug, PartialEq)]
pub struct SuccessiveHalvingPruner {
    /// `None` while "auto" has not been resolved.
    min_resource: Option<u64>,
    reduction_factor: u64,
    min_early_stopping_rate: u64,
    bootstrap_count: usize,
}

impl SuccessiveHalvingPruner {
    /// Optuna's `SuccessiveHalvingPruner(min_resource, reduction_factor,
    /// min_early_stopping_rate, bootstrap_count)`; Optuna's defaults are "auto", 4, 0, 0.
    pub fn new(
        min_resource: Resource,
        reduction_factor: i64,
        min_early_stopping_rate: i64,
        bootstrap_count: i64,
    ) -> Result<Self, ParameterError> {
        let min_resource = match min_resource {
            Resource::Auto => None,
            Resource::Steps(n) => Some(at_least("min_resource", n, 1, "at least 1 or \"auto\"")?),
        };
        let reduction_factor = at_least("reduction_factor", reduction_factor, 2, "at least 2")?;
        let min_early_stopping_rate = non_negative("min_early_stopping_rate", min_early_stopping_rate)?;
        let bootstrap = non_negative("bootstrap_count", bootstrap_count)?;
        if bootstrap > 0 && min_resource.is_none() {
            return Err(bad("bootstrap_count", bootstrap, "0 when min_resource is \"auto\""));
        }
        Ok(Self {
            min_resource,
            reduction_factor,
            min_early_stopping_rate,
            bootstrap_count: usize::try_from(bootstrap).unwrap_or(usize::MAX),
        })
    }

    /// The resolved `min_resource` (`None` while "auto" waits for a complete trial).
    pub fn min_resource(&self) -> Option<u64> {
        self.min_resource
    }

    /// The check over the trials `in_scope` selects (all of them, or one Hyperband bracket).
    fn prune_in(
        &mut self,
        study: &mut StudyView,
        trial: usize,
        in_scope: impl Fn(&TrialRecord) -> bool,
    ) -> Result<bool, PruneError> {
        study.check(trial)?;
        let Some((&step, &value)) = study.trials[trial].intermediate.last_key_value() else {
            return Ok(false);
        };
        let mut rung = study.trials[trial].completed_rungs.len();
        loop {
            let min_resource = match self.min_resource {
                Some(r) => r,
                None => {
                    // `_estimate_min_resource`: max(last_step // 100, 1) over complete trials.
                    let last = study
                        .trials
                        .iter()
                        .filter(|t| in_scope(t) && t.state == TrialState::Complete)
                        .filter_map(TrialRecord::last_step)
                        .max();
                    let Some(last) = last else {
                        return Ok(false);
                    };
                    let r = (last / 100).max(1);
                    self.min_resource = Some(r);
                    r
                }
            };
            let exponent = self.min_early_stopping_rate.saturating_add(rung as u64);
            let rung_promotion_step = u128::from(min_resource).saturating_mul(
                u128::from(self.reduction_factor).saturating_pow(u32::try_from(exponent).unwrap_or(u32::MAX)),
            );
            if u128::from(step) < rung_promotion_step {
                return Ok(false);
            }
            if value.is_nan() {
                return Ok(true);
            }
            debug_assert_eq!(study.trials[trial].completed_rungs.len(), rung);
            study.trials[trial].completed_rungs.push(value);
            // Every in-scope trial's value at this rung; the current trial's is `value`.
            let mut competing: Vec<f64> = study
                .trials
                .iter()
                .enumerate()
                .filter(|&(i, t)| i != trial && in_scope(t))
                .filter_map(|(_, t)| t.completed_rungs.get(rung).copied())
                .collect();
            competing.push(value);
            if competing.len() <= self.bootstrap_count {
                return Ok(true);
            }
            if !promotable(value, competing, self.reduction_factor, study.direction) {
                return Ok(true);
            }
            rung += 1;
        }
    }
}

/// `_is_trial_promotable_to_next_rung`.
fn promotable(value: f64, mut competing: Vec<f64>, reduction_factor: u64, direction: Direction) -> bool {
    let len = competing.len() as u64;
    // (len // eta) - 1, with -1 read as 0: the first eta - 1 trials must be the best so far.
    let idx = (len / reduction_factor).saturating_sub(1) as usize;
    competing.sort_by(f64::total_cmp);
    match direction {
        Direction::Maximize => value >= competing[competing.len() - 1 - idx],
        Direction::Minimize => value <= competing[idx],
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError> {
        self.prune_in(study, trial, |_| true)
    }
}

/// Optuna's `HyperbandPruner`.
#[derive(Clone, Debug, PartialEq)]
pub struct HyperbandPruner {
    min_resource: u64,
    max_resource: Resource,
    reduction_factor: u64,
    bootstrap_count: u64,
    brackets: Option<Brackets>,
}

#[derive(Clone, Debug, PartialEq)]
struct Brackets {
    /// Slots per bracket (`_trial_allocation_budgets`).
    budgets: Vec<u64>,
    total: u64,
    pruners: Vec<SuccessiveHalvingPruner>,
}

/// `floor(math.log(max_resource / min_resource, reduction_factor)) + 1`, in f64 as Optuna.
pub(crate) fn n_brackets(min_resource: u64, max_resource: u64, reduction_factor: u64) -> i64 {
    let ratio = max_resource as f64 / min_resource as f64;
    (ratio.ln() / (reduction_factor as f64).ln()).floor() as i64 + 1
}

impl HyperbandPruner {
    /// Optuna's `HyperbandPruner(min_resource, max_resource, reduction_factor,
    /// bootstrap_count)`; Optuna's defaults are 1, "auto", 3, 0. Stricter than Optuna where
    /// Optuna would fail or never prune: `min_resource` and `reduction_factor` are checked here
    /// (Optuna checks them in the first bracket's constructor, at the first check), and a fixed
    /// `max_resource` below `min_resource` is refused (Optuna gets no bracket and never
    /// prunes). An "auto" resource that ends up below `min_resource` never prunes, as in Optuna.
    pub fn new(
        min_resource: i64,
        max_resource: Resource,
        reduction_factor: i64,
        bootstrap_count: i64,
    ) -> Result<Self, ParameterError> {
        let min_resource = at_least("min_resource", min_resource, 1, "at least 1")?;
        if let Resource::Steps(max) = max_resource
            && (max < 1 || (max as u64) < min_resource)
        {
            return Err(bad("max_resource", max, "at least min_resource, or \"auto\""));
        }
        let reduction_factor = at_least("reduction_factor", reduction_factor, 2, "at least 2")?;
        let bootstrap_count = non_negative("bootstrap_count", bootstrap_count)?;
        if bootstrap_count > 0 && max_resource == Resource::Auto {
            return Err(bad("bootstrap_count", bootstrap_count, "0 when max_resource is \"auto\""));
        }
        Ok(Self { min_resource, max_resource, reduction_factor, bootstrap_count, brackets: None })
    }

    /// The number of brackets, once known (`None` while "auto" waits for a complete trial).
    pub fn n_brackets(&self) -> Option<usize> {
        self.brackets.as_ref().map(|b| b.pruners.len())
    }

    /// `_try_initialization`: fixes "auto" and builds the brackets, once.
    fn initialise(&mut self, study: &StudyView) {
        if self.brackets.is_some() {
            return;
        }
        let max_resource = match self.max_resource {
            Resource::Steps(n) => n as u64,
            Resource::Auto => {
                let last = study
                    .trials
                    .iter()
                    .filter(|t| t.state == TrialState::Complete)
                    .filter_map(TrialRecord::last_step)
                    .max();
                let Some(last) = last else { return };
                let r = last + 1;
                self.max_resource = Resource::Steps(r as i64);
                r
            }
        };
        let n = n_brackets(self.min_resource, max_resource, self.reduction_factor).max(0) as u64;
        let mut budgets = Vec::new();
        let mut pruners = Vec::new();
        for bracket in 0..n {
            let s = n - 1 - bracket;
            // ceil(n * eta^s / (s + 1)), in integers.
            let numerator = u128::from(n)
                .saturating_mul(u128::from(self.reduction_factor).saturating_pow(u32::try_from(s).unwrap_or(u32::MAX)));
            let budget = numerator.div_ceil(u128::from(s + 1));
            budgets.push(u64::try_from(budget).unwrap_or(u64::MAX));
            pruners.push(SuccessiveHalvingPruner {
                min_resource: Some(self.min_resource),
                reduction_factor: self.reduction_factor,
                min_early_stopping_rate: bracket,
                bootstrap_count: usize::try_from(self.bootstrap_count).unwrap_or(usize::MAX),
            });
        }
        let total = budgets.iter().fold(0u64, |a, &b| a.saturating_add(b));
        self.brackets = Some(Brackets { budgets, total, pruners });
    }
}

/// `_get_bracket_id`: the bracket holding slot `crc32("{study_name}_{number}") % total`.
fn bracket_of(budgets: &[u64], total: u64, study_name: &str, number: u64) -> usize {
    let hash = crc32fast::hash(format!("{study_name}_{number}").as_bytes());
    let mut n = u64::from(hash) % total;
    for (bracket, &budget) in budgets.iter().enumerate() {
        if n < budget {
            return bracket;
        }
        n -= budget;
    }
    unreachable!("the slot is below the sum of the budgets")
}

impl Pruner for HyperbandPruner {
    fn prune(&mut self, study: &mut StudyView, trial: usize) -> Result<bool, PruneError> {
        study.check(trial)?;
        self.initialise(study);
        let Some(brackets) = self.brackets.as_mut() else {
            return Ok(false);
        };
        if brackets.pruners.is_empty() {
            return Ok(false);
        }
        let Brackets { budgets, total, pruners } = brackets;
        let name = study.name.clone();
        let bracket = bracket_of(budgets, *total, &name, study.trials[trial].number);
        pruners[bracket].prune_in(study, trial, |t| bracket_of(budgets, *total, &name, t.number) == bracket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanpercentile_matches_numpy_linear() {
        // numpy 2.4.6: np.nanpercentile([3, 1, nan, 2, 10], q)
        let v = [3.0, 1.0, f64::NAN, 2.0, 10.0];
        assert_eq!(nanpercentile(&v, 50.0), 2.5);
        assert_eq!(nanpercentile(&v, 25.0), 1.75);
        assert_eq!(nanpercentile(&v, 75.0), 4.75);
        assert_eq!(nanpercentile(&v, 100.0), 10.0);
        assert_eq!(nanpercentile(&v, 0.0), 1.0);
        assert_eq!(nanpercentile(&[7.0], 30.0), 7.0);
        assert!(nanpercentile(&[f64::NAN, f64::NAN], 50.0).is_nan());
    }

    #[test]
    fn bracket_count_uses_floating_point_log_like_optuna() {
        // Python: math.log(243 / 1, 3) == 4.999999999999999, math.log(1000, 10) == 2.9999999999999996
        assert_eq!(n_brackets(1, 243, 3), 5);
        assert_eq!(n_brackets(1, 1000, 10), 3);
        assert_eq!(n_brackets(1, 27, 3), 4);
        assert_eq!(n_brackets(1, 81, 3), 5);
        assert_eq!(n_brackets(5, 8, 3), 1);
        assert_eq!(n_brackets(1, 9, 3), 3);
    }

    #[test]
    fn crc32_is_zlibs() {
        // binascii.crc32(b"123456789") == 0xCBF43926 (the IEEE / zlib check value).
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b""), 0);
    }

    fn study_with_complete(direction: Direction, values_at_step0: &[f64]) -> StudyView {
        let mut study = StudyView::new("ties", direction);
        for &v in values_at_step0 {
            let t = study.ask();
            study.report(t, 0, v).unwrap();
            study.finish(t, TrialState::Complete).unwrap();
        }
        study
    }

    #[test]
    fn percentile_comparison_is_strict_both_ways() {
        for (direction, worse) in [(Direction::Minimize, 2.5), (Direction::Maximize, 1.5)] {
            let mut study = study_with_complete(direction, &[1.0, 2.0, 3.0]);
            let mut median = MedianPruner::new(0, 0, 1, 1).unwrap();
            let t = study.ask();
            study.report(t, 0, 2.0).unwrap();
            assert!(!median.prune(&mut study, t).unwrap(), "{direction:?}: equal to the median is kept");
            let u = study.ask();
            study.report(u, 0, worse).unwrap();
            assert!(median.prune(&mut study, u).unwrap(), "{direction:?}: worse than the median");
        }
    }

    #[test]
    fn successive_halving_keeps_ties() {
        for direction in [Direction::Minimize, Direction::Maximize] {
            let mut study = StudyView::new("ties", direction);
            let mut sha = SuccessiveHalvingPruner::new(Resource::Steps(1), 2, 0, 0).unwrap();
            // Two trials with the same value at rung 0: with 2 competing values the best one
            // (index 0) goes on, and the tie counts as the best.
            for _ in 0..2 {
                let t = study.ask();
                study.report(t, 1, 5.0).unwrap();
                assert!(!sha.prune(&mut study, t).unwrap());
                assert_eq!(study.trials[t].completed_rungs, vec![5.0]);
                study.finish(t, TrialState::Complete).unwrap();
            }
        }
    }

    #[test]
    fn n_min_trials_counts_nan_values_like_optuna() {
        // Optuna 5.0.0: complete trials reported NaN and 1.0 at step 0, n_min_trials = 2; a
        // trial reporting 2.0 is pruned (the count is taken before nanpercentile drops NaN).
        let mut study = StudyView::new("nan", Direction::Minimize);
        for v in [f64::NAN, 1.0] {
            let t = study.ask();
            study.report(t, 0, v).unwrap();
            study.finish(t, TrialState::Complete).unwrap();
        }
        let mut pruner = PercentilePruner::new(50.0, 0, 0, 1, 2).unwrap();
        let t = study.ask();
        study.report(t, 0, 2.0).unwrap();
        assert!(pruner.prune(&mut study, t).unwrap());
    }

    #[test]
    fn hyperband_auto_below_min_resource_never_prunes_like_optuna() {
        // Optuna 5.0.0: min_resource 5, the first complete trial has 3 steps, so R = 3,
        // floor(log_3(3 / 5)) + 1 = 0 brackets and no trial is ever pruned.
        let mut study = StudyView::new("short", Direction::Minimize);
        let mut pruner = HyperbandPruner::new(5, Resource::Auto, 3, 0).unwrap();
        let t = study.ask();
        for step in 0..3 {
            study.report(t, step, 1.0).unwrap();
            assert!(!pruner.prune(&mut study, t).unwrap());
        }
        study.finish(t, TrialState::Complete).unwrap();
        for i in 0..4 {
            let t = study.ask();
            for step in 0..10 {
                study.report(t, step, 10.0 + f64::from(i)).unwrap();
                assert!(!pruner.prune(&mut study, t).unwrap());
            }
            study.finish(t, TrialState::Complete).unwrap();
        }
        assert_eq!(pruner.n_brackets(), Some(0));
    }
}
