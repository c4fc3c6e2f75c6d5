//! Samplers: how a trial's parameters are chosen from a [`SearchSpace`].
//!
//! A [`Sampler`] gets the space, the new trial's number and a [`History`] of the study (its
//! direction and every earlier trial's parameters, state and objective value). The random and
//! grid samplers here ignore the history; a model-based sampler (TPE, CMA-ES) reads the
//! complete (and pruned) trials' parameters through [`Distribution::to_internal`] and their
//! values through [`History::direction`] (TPE's constant liar also reads the running trials'
//! parameters, and its ranking of pruned trials [`TrialSummary::last_step`]).
//!
//! # Random ([`RandomSampler`])
//!
//! A trial's parameters are a pure function of `(seed, trial number, key)`: each key draws
//! from its own counter-based stream (splitmix64 over the seed, the number and an FNV-1a hash
//! of the key), so a resumed study draws the same values for the same trial, adding or
//! removing another key does not change a key's draws, and the number of trials run before
//! does not matter. Per distribution (as Optuna's `RandomSampler`):
//!
//! * float: uniform in `[low, high)`; with `log`, uniform in `[ln low, ln high)` then `exp`;
//!   with `step`, uniform over the grid points `low, low + step, …, high`;
//! * int: uniform over `low, low + step, …, high`; with `log`, log-uniform over
//!   `[low - 0.5, high + 0.5]` rounded to the nearest integer (Optuna's transform);
//! * categorical: uniform over the choices.
//!
//! The streams are not numpy's, so the values differ from Optuna's for the same seed.
//!
//! # Grid ([`GridSampler`])
//!
//! The grid is the Cartesian product of every parameter's values: the choices of a
//! categorical, `low, low + step, …, high` of an int, and of a float, which must have a
//! `step` (Optuna's `GridSampler` needs explicit values: a float without one is
//! [`SampleError::GridNeedsStep`]). Point `p` of the product is its mixed-radix digits over the
//! keys in sorted order, the last key varying fastest. Trial `n` gets point `perm(n)`, where
//! `perm` is a seeded pseudo-random permutation of `0..len` (a 4-round Feistel network with
//! cycle walking, so no list of points is ever held): as Optuna, the grid is visited in a
//! shuffled order fixed by the seed, and here also by nothing but the trial number, so a
//! resumed study continues where it stopped. A failed trial's point is not retried. Trial
//! numbers `>= len` get [`SampleError::GridExhausted`]: the driver stops the study.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::pruners::{Direction, TrialState};
use crate::space::{Distribution, ParamValue, SearchSpace};

/// One parameter assignment: key to value.
pub type Params = BTreeMap<String, ParamValue>;

/// One earlier trial, as a sampler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialSummary {
    pub number: u64,
    pub state: TrialState,
    pub params: Params,
    /// The objective value of a complete trial (for a pruned one, its last intermediate
    /// value, which Optuna's TPE also uses); `None` otherwise.
    pub value: Option<f64>,
    /// For a pruned trial, the step of its last intermediate value (Optuna's TPE ranks pruned
    /// trials by how far they got before their value); `None` otherwise or when it reported
    /// nothing.
    pub last_step: Option<u64>,
}

/// The study so far.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    pub direction: Direction,
    /// Earlier trials in number order.
    pub trials: &'a [TrialSummary],
}

impl<'a> History<'a> {
    pub fn new(direction: Direction, trials: &'a [TrialSummary]) -> Self {
        History { direction, trials }
    }

    /// The complete trials with a finite value.
    pub fn complete(&self) -> impl Iterator<Item = &'a TrialSummary> {
        self.trials.iter().filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite))
    }
}

/// Why a sampler gave no parameters.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SampleError {
    #[error("the grid's {points} points have all been given to trials 0..{points}; the search is complete")]
    GridExhausted { points: u64 },
    #[error("{key}: a grid search needs explicit values; give the float a `step` (or make it categorical)")]
    GridNeedsStep { key: String },
    #[error("the grid has more than 2^64 points; narrow the ranges or use another sampler")]
    GridTooLarge,
}

/// Chooses a trial's parameters.
pub trait Sampler: Send {
    /// Parameters for trial `trial_number` (every key of `space`).
    fn sample(&mut self, space: &SearchSpace, trial_number: u64, history: &History) -> Result<Params, SampleError>;
}

/// splitmix64's output function.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Independent uniform draws for one (seed, trial, key).
struct Stream(u64);

impl Stream {
    fn new(seed: u64, trial: u64, key: &str) -> Self {
        Stream(splitmix64(splitmix64(seed) ^ splitmix64(trial ^ 0x5851_f42d_4c95_7f2d) ^ fnv1a(key)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n >= 1), by a 128-bit multiply (bias below 2^-64 per draw).
    fn below(&mut self, n: u128) -> u128 {
        if n <= 1 {
            return 0;
        }
        if n > u64::MAX as u128 {
            let wide = ((self.next_u64() as u128) << 64) | self.next_u64() as u128;
            return wide % n;
        }
        (self.next_u64() as u128 * n) >> 64
    }
}

/// Uniform random search, reproducible per trial (see the module docs).
#[derive(Clone, Debug)]
pub struct RandomSampler {
    pub seed: u64,
}

impl RandomSampler {
    pub fn new(seed: u64) -> Self {
        RandomSampler { seed }
    }

    /// The value of one parameter for one trial (what `sample` puts under `key`).
    pub fn draw(&self, key: &str, dist: &Distribution, trial_number: u64) -> ParamValue {
        let mut s = Stream::new(self.seed, trial_number, key);
        match dist {
            Distribution::Float { low, high, log: true, .. } => {
                let (a, b) = (low.ln(), high.ln());
                let v = (a + s.unit() * (b - a)).exp();
                ParamValue::Float(v.max(*low).min(*high))
            }
            Distribution::Float { low, high, step: None, .. } => {
                let u = s.unit();
                let v = low * (1.0 - u) + high * u;
                ParamValue::Float(v.max(*low).min(*high))
            }
            Distribution::Int { low, high, log: true, .. } => {
                let (a, b) = ((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln());
                let v = (a + s.unit() * (b - a)).exp().round();
                ParamValue::Int((v.max(*low as f64).min(*high as f64)) as i64)
            }
            _ => {
                let n = dist.grid_len().unwrap_or(1);
                let index = s.below(n);
                dist.grid_point(index).unwrap_or(ParamValue::Float(f64::NAN))
            }
        }
    }
}

impl Sampler for RandomSampler {
    fn sample(&mut self, space: &SearchSpace, trial_number: u64, _history: &History) -> Result<Params, SampleError> {
        Ok(space.params().iter().map(|(k, d)| (k.clone(), self.draw(k, d, trial_number))).collect())
    }
}

/// Exhaustive search over the grid, in a seeded shuffled order (see the module docs).
#[derive(Clone, Debug)]
pub struct GridSampler {
    pub seed: u64,
}

impl GridSampler {
    pub fn new(seed: u64) -> Self {
        GridSampler { seed }
    }

    /// The number of grid points of `space`, or why it has no grid.
    pub fn grid_len(space: &SearchSpace) -> Result<u64, SampleError> {
        let mut total: u64 = 1;
        for (key, dist) in space.params() {
            let n = dist.grid_len().ok_or_else(|| SampleError::GridNeedsStep { key: key.clone() })?;
            let n = u64::try_from(n).map_err(|_| SampleError::GridTooLarge)?;
            total = total.checked_mul(n).ok_or(SampleError::GridTooLarge)?;
        }
        Ok(total)
    }

    /// The grid point (index into the unshuffled product) trial `trial_number` gets.
    pub fn point_of_trial(&self, len: u64, trial_number: u64) -> Option<u64> {
        (trial_number < len).then(|| feistel_permute(self.seed, len, trial_number))
    }
}

impl Sampler for GridSampler {
    fn sample(&mut self, space: &SearchSpace, trial_number: u64, _history: &History) -> Result<Params, SampleError> {
        let len = Self::grid_len(space)?;
        let mut point = self.point_of_trial(len, trial_number).ok_or(SampleError::GridExhausted { points: len })?;
        let mut params = Params::new();
        // Mixed radix, last key fastest: peel digits from the last key.
        for (key, dist) in space.params().iter().rev() {
            let n = dist.grid_len().unwrap_or(1) as u64;
            let digit = point % n;
            point /= n;
            if let Some(v) = dist.grid_point(digit as u128) {
                params.insert(key.clone(), v);
            }
        }
        Ok(params)
    }
}

/// A seeded bijection of `0..len` (`x < len`): a balanced Feistel network on the smallest
/// even number of bits covering `len`, cycle-walked until the image falls below `len`.
fn feistel_permute(seed: u64, len: u64, x: u64) -> u64 {
    if len <= 1 {
        return x;
    }
    let bits = 64 - (len - 1).leading_zeros();
    let half = bits.div_ceil(2).max(1);
    let mask = if half >= 64 { u64::MAX } else { (1u64 << half) - 1 };
    let keys: [u64; 4] = std::array::from_fn(|r| splitmix64(seed ^ splitmix64(r as u64 + 1)));
    let mut y = x;
    loop {
        let (mut l, mut r) = (y >> half, y & mask);
        for k in keys {
            let f = splitmix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        y = (l << half) | r;
        if y < len {
            return y;
        }
    }
}
