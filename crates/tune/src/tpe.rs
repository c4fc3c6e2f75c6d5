//! The Tree-structured Parzen Estimator sampler ([`TpeSampler`]): Optuna 5's `TPESampler` for
//! a single-objective study with its default settings, i.e. the multivariate TPE with the
//! constant liar; the independent (univariate) TPE is kept behind `multivariate: false`.
//!
//! # Optuna 5.0.0's defaults
//!
//! `TPESampler()` takes `multivariate=None`, which `_is_multivariate` resolves to `True` for a
//! single-objective study (every study here; `False` only for a multi-objective one), and
//! `constant_liar=True`. [`TpeSampler::new`] sets both. The other defaults: 10 startup
//! trials, 24 candidates, `prior_weight = 1.0`, `consider_magic_clip = true`,
//! `consider_endpoints = false`, `default_gamma`, `default_weights`.
//!
//! # What it does (as Optuna)
//!
//! * Until `n_startup_trials` (10) trials are complete or pruned, every parameter is drawn by
//!   [`RandomSampler::draw`] with the same seed, so the startup trials are exactly the random
//!   sampler's (and a resumed study draws them again). Running trials never count here.
//! * The model reads the complete and pruned trials and, with `constant_liar`, the running
//!   ones, but never the trial being sampled (a trial of the history with its number is left
//!   out, as Optuna drops the current trial). Without `constant_liar` running trials are ignored.
//! * The split: of the `n` complete and pruned trials (running ones are not counted), the best
//!   `gamma(n) = min(ceil(0.1 n), 25)` form the "below" set, everything else the "above" set.
//!   Complete trials are ranked by value in the study's direction first; pruned trials fill
//!   the remaining places, ranked as Optuna's `_get_pruned_trial_score`: first by how far they
//!   got (the step of the last intermediate value, [`TrialSummary::last_step`], the furthest
//!   first), then by that value ([`TrialSummary::value`], in the study's direction; a NaN ranks
//!   last among those of its step); a pruned trial that reported nothing comes after all that
//!   did. A pruned trial with a value but no `last_step` is taken as having reached step 0.
//! * The constant liar: every running trial goes to the "above" set. Optuna gives it no value
//!   (nothing is "lied" beyond that): its parameters simply count among the bad ones, so the
//!   next suggestions keep away from the configurations being evaluated right now.
//! * A Parzen estimator is built over each set from the trials that have the parameters
//!   (values through [`Distribution::to_internal`]; a value outside the space counts as
//!   missing). Per parameter there is one truncated-normal kernel per observation plus a prior
//!   kernel (centred, as wide as the range), weighted by Optuna's `default_weights` (ones below
//!   25 observations, a linear ramp from `1/n` on the oldest beyond) with the prior's weight
//!   `prior_weight = 1.0`. Bandwidths are the larger gap to a sorted neighbour
//!   (`consider_endpoints = false`: the outermost use their inner gap) clipped to
//!   `[(high - low) / min(100, n + 2), high - low]` (`consider_magic_clip = true`). A log
//!   parameter works in log space; a parameter with a step (every int) widens its bounds by half
//!   a step, its kernels give each grid point the mass of its cell, and draws are rounded to the
//!   grid (half to even, as numpy). A categorical's kernels are the observed choice plus
//!   `prior_weight / (n + 1)` on every choice, normalised (the prior kernel is uniform).
//! * Multivariate (`multivariate = true`, the default): the joint parameters are those of the
//!   space with more than one value that every complete and pruned trial has (Optuna's
//!   `IntersectionSearchSpace(include_pruned=True)`). Each set gets one estimator over all of
//!   them (Optuna's `_ParzenEstimator` with several parameters), built from the trials that
//!   have every joint parameter: a mixture of product kernels, kernel `i` the product over the
//!   parameters of the kernels of observation `i` above, the prior kernel the product of the
//!   priors, with the weights above. Optuna 5 has no separate multivariate bandwidth: each
//!   dimension keeps the neighbour-gap rule (the `multivariate` field of
//!   `_ParzenEstimatorParameters` is unused, "for historical reasons"; 5.0.0 has no
//!   Scott-like `0.2 n^(-1/(d+4)) (high - low)` rule). A candidate picks one kernel by weight and
//!   draws every parameter from it; the score is `log l(x) - log g(x)` of the joint densities.
//!   A parameter outside the joint set (one a finished trial lacks) is suggested by the
//!   univariate TPE, as Optuna's `sample_independent` does.
//! * Univariate (`multivariate = false`): each parameter gets its own pair of estimators and
//!   its own candidates.
//! * `n_ei_candidates` (24) candidates are drawn from the below mixture and the one with the
//!   largest `log l(x) - log g(x)` is suggested (the first on ties).
//!
//! A parameter whose range holds one value gets it without sampling (Optuna does not call the
//! sampler for such a distribution, nor puts it in the joint space).
//!
//! # Reproducibility
//!
//! Candidates come from a counter-based stream per `(seed, trial number, key)` (per `(seed,
//! trial number)` for the joint draw), built as the random sampler's (splitmix64 over the
//! seed, the number and an FNV-1a hash of the key) with its own domain constant. A suggestion
//! is therefore a pure function of the seed, the trial number, the space and the history, so a
//! resumed study suggests what an uninterrupted one would, given the same history (with the
//! constant liar that includes which trials were running). The streams are not numpy's: the
//! values differ from Optuna's for the same seed.
//!
//! # Not reproduced
//!
//! * `group` (the group-decomposed search space), multi-objective and constrained TPE.
//! * Which of several equal observations of a parameter gets which neighbour gap as its
//!   bandwidth: Optuna sorts with numpy's `argsort`, which does not keep equal values in order
//!   (its SIMD sorts make the order depend on the CPU); here they stay in trial-number order.
//!   In the univariate TPE this matters only where the weights ramp; in the joint estimator
//!   it decides which kernel pairs the bandwidths with the other parameters' values. The
//!   reference test compares bandwidths up to that order, then densities with Optuna's.
//! * Optuna draws all candidates as one numpy batch (kernel indices first, then each
//!   dimension); here each candidate draws its kernel, then its parameters in key order.
//! * The relative parameters Optuna shares through a running trial's system attributes (so
//!   other workers see them under the constant liar): here a running trial's parameters are in
//!   its [`TrialSummary`] already.
//! * A complete trial whose value is `None` or NaN is ignored, as if failed (Optuna marks a
//!   NaN objective as failed); infinite values are ranked as Optuna ranks them.

use std::cmp::Ordering;

use crate::pruners::{Direction, TrialState};
use crate::samplers::{History, Params, RandomSampler, SampleError, Sampler, TrialSummary, splitmix64};
use crate::space::{Distribution, ParamValue, SearchSpace};

/// Optuna's TPE (see the module docs). The fields are Optuna's arguments of the same names;
/// [`TpeSampler::new`] gives Optuna 5.0.0's defaults.
#[derive(Clone, Debug)]
pub struct TpeSampler {
    pub seed: u64,
    pub n_startup_trials: usize,
    pub n_ei_candidates: usize,
    pub prior_weight: f64,
    pub consider_magic_clip: bool,
    pub consider_endpoints: bool,
    /// One joint estimator over all parameters (`true`) or one per parameter (`false`).
    pub multivariate: bool,
    /// Count running trials in the "above" set.
    pub constant_liar: bool,
}

/// Parameters to sample: key and distribution.
type Keyed<'s> = Vec<(&'s str, &'s Distribution)>;

/// A model-readable trial: complete with a value that is not NaN, or pruned.
fn finished(t: &TrialSummary) -> bool {
    match t.state {
        TrialState::Complete => t.value.is_some_and(|v| !v.is_nan()),
        TrialState::Pruned => true,
        _ => false,
    }
}

/// A distribution with one value: not sampled.
fn single(dist: &Distribution) -> bool {
    match dist {
        Distribution::Float { low, high, step: None, .. } => low == high,
        _ => dist.grid_len() == Some(1),
    }
}

impl TpeSampler {
    /// Optuna 5.0.0's `TPESampler(seed=seed)` for a single-objective study: 10 startup trials,
    /// 24 candidates, prior weight 1, magic clip on, endpoints off, multivariate (`None`
    /// resolves to `True` with one objective), constant liar on.
    pub fn new(seed: u64) -> Self {
        TpeSampler {
            seed,
            n_startup_trials: 10,
            n_ei_candidates: 24,
            prior_weight: 1.0,
            consider_magic_clip: true,
            consider_endpoints: false,
            multivariate: true,
            constant_liar: true,
        }
    }

    /// Optuna's `default_gamma`: how many of `n` finished trials form the "below" set.
    pub fn gamma(n: usize) -> usize {
        ((0.1 * n as f64).ceil() as usize).min(25)
    }

    /// Optuna's `default_weights`: the kernels' weights for `n` observations, oldest first.
    pub fn default_weights(n: usize) -> Vec<f64> {
        if n < 25 {
            return vec![1.0; n];
        }
        let ramp = n - 25;
        let start = 1.0 / n as f64;
        let mut w: Vec<f64> = match ramp {
            0 => Vec::new(),
            1 => vec![start],
            _ => {
                let step = (1.0 - start) / (ramp - 1) as f64;
                let mut v: Vec<f64> = (0..ramp).map(|i| start + i as f64 * step).collect();
                v[ramp - 1] = 1.0;
                v
            }
        };
        w.extend(std::iter::repeat_n(1.0, 25));
        w
    }

    /// The trials the model reads for trial `trial_number`: finished ones and, with the
    /// constant liar, running ones; never the trial itself.
    fn model_trials<'a>(&self, history: &History<'a>, trial_number: u64) -> Vec<&'a TrialSummary> {
        history
            .trials
            .iter()
            .filter(|t| {
                if self.constant_liar {
                    t.number != trial_number && (finished(t) || t.state == TrialState::Running)
                } else {
                    finished(t)
                }
            })
            .collect()
    }

    /// Optuna's `_split_trials` (single objective, no constraints): (below, above), each in
    /// number order. Running trials (present only with the constant liar) go above.
    fn split<'a>(
        &self,
        trials: &[&'a TrialSummary],
        direction: Direction,
    ) -> (Vec<&'a TrialSummary>, Vec<&'a TrialSummary>) {
        let sign = match direction {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        };
        let mut complete: Vec<&TrialSummary> = Vec::new();
        let mut pruned: Vec<&TrialSummary> = Vec::new();
        let mut running: Vec<&TrialSummary> = Vec::new();
        for &t in trials {
            match t.state {
                TrialState::Running => running.push(t),
                TrialState::Complete if finished(t) => complete.push(t),
                TrialState::Pruned => pruned.push(t),
                _ => {}
            }
        }
        let n_below = Self::gamma(complete.len() + pruned.len());
        let key = |t: &TrialSummary| sign * t.value.unwrap_or(0.0);
        complete.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(Ordering::Equal));
        // `_get_pruned_trial_score`: (-step, value in the direction, NaN as +inf), or (1, 0)
        // for a trial without intermediate values.
        let pruned_key = |t: &TrialSummary| match t.value {
            None => (1i128, 0.0),
            Some(v) => {
                let step = -(t.last_step.unwrap_or(0) as i128);
                (step, if v.is_nan() { f64::INFINITY } else { sign * v })
            }
        };
        pruned.sort_by(|a, b| {
            let (ka, kb) = (pruned_key(a), pruned_key(b));
            ka.0.cmp(&kb.0).then(ka.1.partial_cmp(&kb.1).unwrap_or(Ordering::Equal))
        });
        let from_complete = n_below.min(complete.len());
        let from_pruned = (n_below - from_complete).min(pruned.len());
        let mut below: Vec<&TrialSummary> = complete[..from_complete].to_vec();
        below.extend_from_slice(&pruned[..from_pruned]);
        let mut above: Vec<&TrialSummary> = complete[from_complete..].to_vec();
        above.extend_from_slice(&pruned[from_pruned..]);
        above.extend(running);
        below.sort_by_key(|t| t.number);
        above.sort_by_key(|t| t.number);
        (below, above)
    }

    /// The kernel weights of a mixture over `n` observations plus the prior, normalised.
    fn mixture_weights(&self, n: usize) -> Vec<f64> {
        let mut w = if n == 0 {
            vec![1.0]
        } else {
            let mut w = Self::default_weights(n);
            w.push(self.prior_weight);
            w
        };
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
        w
    }

    /// Optuna's `_ParzenEstimator` over `dists` from `rows` (one observation per row, one
    /// internal value per distribution).
    fn mixture(&self, dists: &[&Distribution], rows: &[Vec<f64>]) -> Mixture {
        let weights = self.mixture_weights(rows.len());
        let dims = dists
            .iter()
            .enumerate()
            .map(|(i, dist)| {
                let column: Vec<f64> = rows.iter().map(|r| r[i]).collect();
                self.kernels(dist, &column)
            })
            .collect();
        Mixture { weights, dims }
    }

    /// One parameter's estimator (the univariate case).
    #[cfg(test)]
    fn estimator(&self, dist: &Distribution, observations: &[f64]) -> Mixture {
        let rows: Vec<Vec<f64>> = observations.iter().map(|&x| vec![x]).collect();
        self.mixture(&[dist], &rows)
    }

    /// One parameter's kernels (`_calculate_distributions`), the prior last.
    fn kernels(&self, dist: &Distribution, observations: &[f64]) -> Kernels {
        match dist {
            Distribution::Categorical { choices } => {
                let k = choices.len().max(1);
                let rows = if observations.is_empty() {
                    vec![vec![1.0 / k as f64; k]]
                } else {
                    let n_kernels = observations.len() + 1;
                    let mut rows = vec![vec![self.prior_weight / n_kernels as f64; k]; n_kernels];
                    for (row, &x) in rows.iter_mut().zip(observations) {
                        row[(x as usize).min(k - 1)] += 1.0;
                    }
                    for row in &mut rows {
                        let s: f64 = row.iter().sum();
                        let s = if s == 0.0 { 1.0 } else { s };
                        row.iter_mut().for_each(|x| *x /= s);
                    }
                    rows
                };
                Kernels::Categorical { rows }
            }
            _ => {
                let (ext_low, ext_high, log, step) = match dist {
                    Distribution::Float { low, high, log, step } => (*low, *high, *log, *step),
                    Distribution::Int { low, high, step, log } => (*low as f64, *high as f64, *log, Some(*step as f64)),
                    Distribution::Categorical { .. } => unreachable!(),
                };
                let (mut low, mut high) = (ext_low, ext_high);
                if let Some(s) = step {
                    low -= s / 2.0;
                    high += s / 2.0;
                }
                let mut mus: Vec<f64> = observations.to_vec();
                if log {
                    mus.iter_mut().for_each(|x| *x = x.ln());
                    low = low.ln();
                    high = high.ln();
                }
                let mut sigmas = self.sigmas(&mus, low, high);
                mus.push(0.5 * (low + high));
                sigmas.push(high - low);
                let log_mass =
                    mus.iter().zip(&sigmas).map(|(mu, s)| log_gauss_mass((low - mu) / s, (high - mu) / s)).collect();
                Kernels::Numeric { mus, sigmas, log_mass, low, high, ext_low, ext_high, log, step }
            }
        }
    }

    /// Optuna's bandwidths (`compute_sigmas`) for kernels at `mus` in `[low, high]`.
    fn sigmas(&self, mus: &[f64], low: f64, high: f64) -> Vec<f64> {
        let n = mus.len();
        if n == 0 {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].partial_cmp(&mus[b]).unwrap_or(Ordering::Equal));
        let mut e = Vec::with_capacity(n + 2);
        e.push(low);
        e.extend(order.iter().map(|&i| mus[i]));
        e.push(high);
        let mut sorted: Vec<f64> = (0..n).map(|i| (e[i + 1] - e[i]).max(e[i + 2] - e[i + 1])).collect();
        if !self.consider_endpoints && n >= 2 {
            sorted[0] = e[2] - e[1];
            sorted[n - 1] = e[n] - e[n - 1];
        }
        let max_sigma = high - low;
        let min_sigma = if self.consider_magic_clip { (high - low) / 100f64.min(1.0 + (n + 1) as f64) } else { 1e-12 };
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            sigmas[i] = sorted[rank].max(min_sigma).min(max_sigma);
        }
        sigmas
    }

    /// The below and above estimators over `params`, each from the trials of its set that
    /// have every one of them (Optuna's `_get_internal_repr`).
    fn estimators(
        &self,
        params: &[(&str, &Distribution)],
        below: &[&TrialSummary],
        above: &[&TrialSummary],
    ) -> (Mixture, Mixture) {
        let dists: Vec<&Distribution> = params.iter().map(|(_, d)| *d).collect();
        let observe = |trials: &[&TrialSummary]| -> Vec<Vec<f64>> {
            trials
                .iter()
                .filter_map(|t| params.iter().map(|(k, d)| t.params.get(*k).and_then(|v| d.to_internal(v))).collect())
                .collect()
        };
        (self.mixture(&dists, &observe(below)), self.mixture(&dists, &observe(above)))
    }

    /// Splits the parameters to sample into the joint set (multivariate: those every finished
    /// trial has, Optuna's intersection search space) and the independently sampled rest.
    fn partition<'s>(&self, sampled: Keyed<'s>, trials: &[&TrialSummary]) -> (Keyed<'s>, Keyed<'s>) {
        sampled.into_iter().partition(|(k, d)| {
            self.multivariate
                && trials
                    .iter()
                    .filter(|t| finished(t))
                    .all(|t| t.params.get(*k).and_then(|v| d.to_internal(v)).is_some())
        })
    }

    /// The suggestion for `params` (one for the univariate TPE, the joint set for the
    /// multivariate one) past the startup trials: the best of the candidates drawn from the
    /// below estimator, by `log l - log g`.
    fn suggest(
        &self,
        params: &[(&str, &Distribution)],
        mut stream: Stream,
        trial_number: u64,
        below: &[&TrialSummary],
        above: &[&TrialSummary],
    ) -> Vec<ParamValue> {
        let dists: Vec<&Distribution> = params.iter().map(|(_, d)| *d).collect();
        let (l, g) = self.estimators(params, below, above);
        let candidates: Vec<(Vec<ParamValue>, Vec<f64>)> =
            (0..self.n_ei_candidates).filter_map(|_| l.sample(&dists, &mut stream)).collect();
        let xs: Vec<&[f64]> = candidates.iter().map(|(_, x)| x.as_slice()).collect();
        let (log_l, log_g) = (l.log_pdfs(&xs), g.log_pdfs(&xs));
        let mut best: Option<(f64, Vec<ParamValue>)> = None;
        for ((values, _), (ll, lg)) in candidates.into_iter().zip(log_l.into_iter().zip(log_g)) {
            let acq = ll - lg;
            let better = match &best {
                None => true,
                Some((b, _)) => acq > *b || (b.is_nan() && !acq.is_nan()),
            };
            if better {
                best = Some((acq, values));
            }
        }
        match best {
            Some((_, v)) => v,
            None => {
                let random = RandomSampler::new(self.seed);
                params.iter().map(|(k, d)| random.draw(k, d, trial_number)).collect()
            }
        }
    }
}

impl Sampler for TpeSampler {
    fn sample(&mut self, space: &SearchSpace, trial_number: u64, history: &History) -> Result<Params, SampleError> {
        let random = RandomSampler::new(self.seed);
        let trials = self.model_trials(history, trial_number);
        if trials.iter().filter(|t| finished(t)).count() < self.n_startup_trials {
            return Ok(space.params().iter().map(|(k, d)| (k.clone(), random.draw(k, d, trial_number))).collect());
        }
        let (below, above) = self.split(&trials, history.direction);
        let mut params = Params::new();
        let mut sampled: Vec<(&str, &Distribution)> = Vec::new();
        for (key, dist) in space.params() {
            if !single(dist) {
                sampled.push((key, dist));
            } else if let Distribution::Float { low, .. } = dist
                && dist.grid_len().is_none()
            {
                params.insert(key.clone(), ParamValue::Float(*low));
            } else {
                let value = dist.grid_point(0).unwrap_or_else(|| random.draw(key, dist, trial_number));
                params.insert(key.clone(), value);
            }
        }
        let (joint, independent) = self.partition(sampled, &trials);
        if !joint.is_empty() {
            let stream = Stream::joint(self.seed, trial_number);
            let values = self.suggest(&joint, stream, trial_number, &below, &above);
            params.extend(joint.iter().map(|(k, _)| k.to_string()).zip(values));
        }
        for (key, dist) in independent {
            let stream = Stream::new(self.seed, trial_number, key);
            let value = self.suggest(&[(key, dist)], stream, trial_number, &below, &above);
            params.extend(value.into_iter().map(|v| (key.to_string(), v)));
        }
        Ok(params)
    }
}

/// A Parzen estimator: a mixture whose kernel `k` is the product over the dimensions of each
/// dimension's kernel `k` (the last kernel is the prior).
struct Mixture {
    weights: Vec<f64>,
    dims: Vec<Kernels>,
}

/// One dimension's kernels.
enum Kernels {
    /// Truncated normals on `[low, high]` (the internal, possibly log and widened, bounds);
    /// `log_mass` is each kernel's log mass in `[low, high]` before truncation.
    Numeric {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        log_mass: Vec<f64>,
        low: f64,
        high: f64,
        ext_low: f64,
        ext_high: f64,
        log: bool,
        step: Option<f64>,
    },
    /// One row of choice probabilities per kernel.
    Categorical { rows: Vec<Vec<f64>> },
}

/// numpy's `rng.choice(len(p), p=p)`: the first index whose cumulative weight exceeds `u`.
fn choose(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if acc / total > u {
            return i;
        }
    }
    weights.len().saturating_sub(1)
}

fn log_sum_exp(terms: impl Iterator<Item = f64> + Clone) -> f64 {
    let mut max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        max = 0.0;
    }
    terms.map(|t| (t - max).exp()).sum::<f64>().ln() + max
}

impl Mixture {
    /// A draw: the parameters' values and their internal representations (`None` if a
    /// dimension's draw is not a valid value).
    fn sample(&self, dists: &[&Distribution], s: &mut Stream) -> Option<(Vec<ParamValue>, Vec<f64>)> {
        let k = choose(&self.weights, s.unit());
        // Every dimension draws, so a failed one does not shift the others' streams.
        let drawn: Vec<Option<ParamValue>> = self.dims.iter().zip(dists).map(|(d, dist)| d.draw(k, dist, s)).collect();
        let values: Vec<ParamValue> = drawn.into_iter().collect::<Option<_>>()?;
        let x: Vec<f64> = values.iter().zip(dists).map(|(v, dist)| dist.to_internal(v)).collect::<Option<_>>()?;
        Some((values, x))
    }

    /// The joint log density (log mass in the discrete dimensions) at internal values `x`.
    #[cfg(test)]
    fn log_pdf(&self, x: &[f64]) -> f64 {
        self.log_pdfs(&[x])[0]
    }

    /// The joint log densities at several points (the candidates): per dimension, the kernels'
    /// terms are computed once per distinct value (discrete dimensions repeat values often).
    fn log_pdfs(&self, xs: &[&[f64]]) -> Vec<f64> {
        let n_kernels = self.weights.len();
        let mut sums = vec![vec![0.0; n_kernels]; xs.len()];
        for (d, dim) in self.dims.iter().enumerate() {
            let mut seen: Vec<(u64, Vec<f64>)> = Vec::new();
            for (x, sum) in xs.iter().zip(sums.iter_mut()) {
                let bits = x[d].to_bits();
                let i = match seen.iter().position(|(b, _)| *b == bits) {
                    Some(i) => i,
                    None => {
                        seen.push((bits, (0..n_kernels).map(|k| dim.log_kernel(k, x[d])).collect()));
                        seen.len() - 1
                    }
                };
                sum.iter_mut().zip(&seen[i].1).for_each(|(s, t)| *s += t);
            }
        }
        sums.iter().map(|sum| log_sum_exp(sum.iter().zip(&self.weights).map(|(s, w)| s + w.ln()))).collect()
    }
}

impl Kernels {
    /// A draw from kernel `k`.
    fn draw(&self, k: usize, dist: &Distribution, s: &mut Stream) -> Option<ParamValue> {
        match self {
            Kernels::Categorical { rows } => {
                let row = &rows[k.min(rows.len() - 1)];
                let u = s.unit();
                let mut acc = 0.0;
                let mut index = 0;
                for (i, p) in row.iter().enumerate() {
                    acc += p;
                    if i + 1 == row.len() {
                        acc = 1.0;
                    }
                    if acc < u {
                        index = i + 1;
                    }
                }
                dist.from_internal(index as f64)
            }
            Kernels::Numeric { mus, sigmas, low, high, ext_low, ext_high, log, step, .. } => {
                let (mu, sigma) = (mus[k], sigmas[k]);
                let mut x = ppf(s.unit(), (low - mu) / sigma, (high - mu) / sigma) * sigma + mu;
                if *log {
                    x = x.exp();
                }
                if let Some(st) = step {
                    x = (ext_low + ((x - ext_low) / st).round_ties_even() * st).max(*ext_low).min(*ext_high);
                }
                dist.from_internal(x)
            }
        }
    }

    /// Kernel `k`'s log density (log mass, for a discrete dimension) at internal value `x`.
    fn log_kernel(&self, k: usize, x: f64) -> f64 {
        match self {
            Kernels::Categorical { rows } => rows[k].get(x as usize).copied().unwrap_or(0.0).ln(),
            Kernels::Numeric { mus, sigmas, log_mass, low, high, log, step, .. } => {
                let (mu, sigma) = (mus[k], sigmas[k]);
                match step {
                    Some(st) => {
                        let (mut left, mut right) = (x - st / 2.0, x + st / 2.0);
                        if *log {
                            left = left.ln();
                            right = right.ln();
                        }
                        log_gauss_mass((left - mu) / sigma, (right - mu) / sigma) - log_mass[k]
                    }
                    None => {
                        let xx = if *log { x.ln() } else { x };
                        let z = (xx - mu) / sigma;
                        let (a, b) = ((low - mu) / sigma, (high - mu) / sigma);
                        if z < a || z > b { f64::NEG_INFINITY } else { norm_logpdf(z) - log_mass[k] - sigma.ln() }
                    }
                }
            }
        }
    }
}

fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Independent uniform draws for one (seed, trial, key), a domain apart from the random
/// sampler's; the joint draw has a domain of its own.
struct Stream(u64);

impl Stream {
    fn new(seed: u64, trial: u64, key: &str) -> Self {
        const TPE: u64 = 0x7470_655f_6361_6e64; // "tpe_cand"
        Stream(splitmix64(splitmix64(seed ^ TPE) ^ splitmix64(trial ^ 0x5851_f42d_4c95_7f2d) ^ fnv1a(key)))
    }

    /// The multivariate candidates' stream for one (seed, trial).
    fn joint(seed: u64, trial: u64) -> Self {
        const JOINT: u64 = 0x7470_655f_6a6f_696e; // "tpe_join"
        Stream(splitmix64(splitmix64(seed ^ JOINT) ^ splitmix64(trial ^ 0x5851_f42d_4c95_7f2d)))
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (splitmix64(self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---- Optuna's `_truncnorm` (after SciPy), scalar forms ----

const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_7;

fn norm_logpdf(z: f64) -> f64 {
    -(z * z) / 2.0 - LOG_SQRT_2PI
}

fn ndtr(a: f64) -> f64 {
    let x = a / std::f64::consts::SQRT_2;
    if x < -std::f64::consts::FRAC_1_SQRT_2 {
        0.5 * erfc(-x)
    } else if x < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * erf(x)
    } else {
        1.0 - 0.5 * erfc(x)
    }
}

fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return -ndtr(-a);
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    let (mut last, mut rhs, mut numerator, mut denom) = (0.0f64, 1.0f64, 1.0f64, 1.0f64);
    let denom_cons = 1.0 / (a * a);
    let mut sign = 1.0;
    let mut i = 0.0;
    while (last - rhs).abs() > f64::EPSILON {
        i += 1.0;
        last = rhs;
        sign = -sign;
        denom *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom;
    }
    log_lhs + rhs.ln()
}

fn log_diff(log_p: f64, log_q: f64) -> f64 {
    log_p + (-(log_q - log_p).exp()).ln_1p()
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == b {
        return a + std::f64::consts::LN_2;
    }
    let m = a.max(b);
    m + (-(a - b).abs()).exp().ln_1p()
}

/// The log of the standard normal's mass in `[a, b]`.
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a > 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        let nd = |x: f64| 0.5 + 0.5 * erf(x / std::f64::consts::SQRT_2);
        (-nd(a) - nd(-b)).ln_1p()
    }
}

/// `x` with `log_ndtr(x) = y` (Newton's method from Optuna's initial guess).
fn ndtri_exp(y: f64) -> f64 {
    let flipped = y > -1e-2;
    let z = if flipped { (-y.exp_m1()).ln() } else { y };
    let mut x = if z < -5.0 {
        -(-2.0 * (z + LOG_SQRT_2PI)).sqrt()
    } else {
        -(3f64.sqrt() / std::f64::consts::PI) * (-z).exp_m1().ln()
    };
    for _ in 0..100 {
        let l = log_ndtr(x);
        let dx = (l - z) * (l - (-0.5 * x * x - LOG_SQRT_2PI)).exp();
        x -= dx;
        if dx.abs() < 1e-8 * x.abs() {
            break;
        }
    }
    if flipped { -x } else { x }
}

/// The standard normal truncated to `[a, b]`: the point below which mass `q` lies.
fn ppf(q: f64, a: f64, b: f64) -> f64 {
    if a == b {
        return f64::NAN;
    }
    if q == 0.0 {
        return a;
    }
    if q == 1.0 {
        return b;
    }
    let log_mass = log_gauss_mass(a, b);
    if a < 0.0 {
        ndtri_exp(log_add_exp(log_ndtr(a), q.ln() + log_mass))
    } else {
        -ndtri_exp(log_add_exp(log_ndtr(-b), (-q).ln_1p() + log_mass))
    }
}

// ---- erf and erfc: FreeBSD's s_erf.c (Sun Microsystems, 1993; freely permitted with this
// notice preserved), as Python's `math.erf`/`math.erfc` compute them ----

#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const ERX: f64 = 8.450_629_115_104_675_292_97e-01;
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const EFX: f64 = 1.283_791_670_955_125_863_16e-01;
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const PP: [f64; 5] = [
    1.283_791_670_955_125_585_61e-01,
    -3.250_421_072_470_014_993_70e-01,
    -2.848_174_957_559_851_047_66e-02,
    -5.770_270_296_489_441_591_57e-03,
    -2.376_301_665_665_016_260_84e-05,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const QQ: [f64; 5] = [
    3.979_172_239_591_553_528_19e-01,
    6.502_224_998_876_729_444_85e-02,
    5.081_306_281_875_765_627_76e-03,
    1.324_947_380_043_216_445_26e-04,
    -3.960_228_278_775_368_123_20e-06,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const PA: [f64; 7] = [
    -2.362_118_560_752_659_440_77e-03,
    4.148_561_186_837_483_316_66e-01,
    -3.722_078_760_357_013_238_47e-01,
    3.183_466_199_011_617_536_74e-01,
    -1.108_946_942_823_966_774_76e-01,
    3.547_830_432_561_823_593_71e-02,
    -2.166_375_594_868_790_843_00e-03,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const QA: [f64; 6] = [
    1.064_208_804_008_442_282_86e-01,
    5.403_979_177_021_710_489_37e-01,
    7.182_865_441_419_626_628_68e-02,
    1.261_712_198_087_616_421_12e-01,
    1.363_708_391_202_905_073_62e-02,
    1.198_449_984_679_910_741_70e-02,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const RA: [f64; 8] = [
    -9.864_944_034_847_148_227_05e-03,
    -6.938_585_727_071_817_643_72e-01,
    -1.055_862_622_532_329_098_14e01,
    -6.237_533_245_032_600_603_96e01,
    -1.623_966_694_625_734_703_55e02,
    -1.846_050_929_067_110_359_94e02,
    -8.128_743_550_630_659_342_46e01,
    -9.814_329_344_169_145_485_92e00,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const SA: [f64; 8] = [
    1.965_127_166_743_925_712_92e01,
    1.376_577_541_435_190_426_00e02,
    4.345_658_774_752_292_288_21e02,
    6.453_872_717_332_678_803_36e02,
    4.290_081_400_275_678_333_86e02,
    1.086_350_055_417_794_351_34e02,
    6.570_249_770_319_281_701_35e00,
    -6.042_441_521_485_809_874_38e-02,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const RB: [f64; 7] = [
    -9.864_942_924_700_099_285_97e-03,
    -7.992_832_376_805_230_065_74e-01,
    -1.775_795_491_775_475_198_89e01,
    -1.606_363_848_558_219_160_62e02,
    -6.375_664_433_683_896_277_22e02,
    -1.025_095_131_611_077_249_54e03,
    -4.835_191_916_086_514_190_19e02,
];
#[allow(clippy::excessive_precision)] // the digits of s_erf.c
const SB: [f64; 7] = [
    3.033_806_074_348_245_829_24e01,
    3.257_925_129_965_739_188_26e02,
    1.536_729_586_084_436_959_94e03,
    3.199_858_219_508_595_539_08e03,
    2.553_050_406_433_164_425_83e03,
    4.745_285_412_069_553_672_15e02,
    -2.244_095_244_658_581_833_62e01,
];

/// `c[0] + c[1] z + …` (Horner).
fn poly(c: &[f64], z: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * z + k)
}

/// `1 + c[0] z + c[1] z² + …`.
fn poly1(c: &[f64], z: f64) -> f64 {
    1.0 + z * poly(c, z)
}

/// `exp(-x² - 0.5625 + R/S) / x` for `1.25 <= x < 28`, split as s_erf.c does for accuracy.
fn erfc_tail(x: f64) -> f64 {
    let s = 1.0 / (x * x);
    let (r, ss) = if x < 1.0 / 0.35 { (poly(&RA, s), poly1(&SA, s)) } else { (poly(&RB, s), poly1(&SB, s)) };
    let z = f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000);
    (-z * z - 0.5625).exp() * ((z - x) * (z + x) + r / ss).exp() / x
}

fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    if a < 0.84375 {
        if a < 2f64.powi(-28) {
            return x + EFX * x;
        }
        let z = x * x;
        return x + x * (poly(&PP, z) / poly1(&QQ, z));
    }
    if a < 1.25 {
        let s = a - 1.0;
        return sign * (ERX + poly(&PA, s) / poly1(&QA, s));
    }
    if a >= 6.0 {
        return sign;
    }
    sign * (1.0 - erfc_tail(a))
}

fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    if a < 0.84375 {
        if a < 2f64.powi(-56) {
            return 1.0 - x;
        }
        let z = x * x;
        let y = poly(&PP, z) / poly1(&QQ, z);
        return if x < 0.25 { 1.0 - (x + x * y) } else { 0.5 - (x * y + (x - 0.5)) };
    }
    if a < 1.25 {
        let s = a - 1.0;
        let pq = poly(&PA, s) / poly1(&QA, s);
        return if x >= 0.0 { 1.0 - ERX - pq } else { 1.0 + ERX + pq };
    }
    if a < 28.0 {
        if x < -6.0 {
            return 2.0;
        }
        let r = erfc_tail(a);
        return if x > 0.0 { r } else { 2.0 - r };
    }
    if x > 0.0 { 0.0 } else { 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Reference values from Python's math.erf / math.erfc.
        for (x, e, c) in [
            (0.1, 0.1124629160182849, 0.8875370839817152),
            (0.5, 0.5204998778130465, 0.4795001221869535),
            (1.0, 0.8427007929497149, 0.15729920705028513),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (4.0, 0.9999999845827421, 1.541725790028002e-08),
            (-1.5, -0.9661051464753108, 1.9661051464753108),
            (10.0, 1.0, 2.088487583762545e-45),
        ] {
            assert!((erf(x) - e).abs() <= 1e-15, "erf({x}) = {}", erf(x));
            assert!((erfc(x) - c).abs() <= 1e-14 * c, "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn ppf_inverts_the_truncated_cdf() {
        for (a, b) in [(-1.0, 1.0), (-30.0, -2.0), (2.0, 40.0), (-0.5, 3.0)] {
            let mass = log_gauss_mass(a, b).exp();
            for q in [0.01, 0.3, 0.5, 0.9, 0.999] {
                let x = ppf(q, a, b);
                assert!((a..=b).contains(&x), "ppf({q}, {a}, {b}) = {x}");
                let got = log_gauss_mass(a, x).exp() / mass;
                assert!((got - q).abs() < 1e-6, "cdf(ppf({q})) = {got} on [{a}, {b}]");
            }
        }
    }

    #[test]
    fn gamma_and_weights_are_optunas() {
        assert_eq!([0, 1, 9, 10, 11, 30, 250, 251, 1000].map(TpeSampler::gamma), [0, 1, 1, 1, 2, 3, 25, 25, 25]);
        assert_eq!(TpeSampler::default_weights(3), vec![1.0; 3]);
        let w = TpeSampler::default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15 && w[4] == 1.0 && w[5..].iter().all(|&x| x == 1.0));
        assert!((w[1] - (1.0 / 30.0 + (1.0 - 1.0 / 30.0) / 4.0)).abs() < 1e-15);
        assert_eq!(TpeSampler::default_weights(26), [vec![1.0 / 26.0], vec![1.0; 25]].concat());
    }

    #[test]
    fn parzen_log_densities_match_optuna() {
        // Optuna 5.0.0's `_ParzenEstimator(...).log_pdf` with the default parameters, for one
        // parameter: (distribution, observations in internal form, [(x, log pdf)]).
        type Case = (Distribution, Vec<f64>, Vec<(f64, f64)>);
        let cases: Vec<Case> = vec![
            (
                Distribution::Float { low: -5.0, high: 5.0, log: false, step: None },
                vec![
                    0.48813503927324753,
                    2.151893663724195,
                    1.027633760716439,
                    0.4488318299689684,
                    -0.7634520066109527,
                    1.4589411306665614,
                    -0.6241278873730751,
                    3.917730007820797,
                    4.636627605010293,
                    -1.1655848117422227,
                    2.917250380826646,
                    0.28894919752904435,
                    0.6804456109393229,
                    4.25596638292661,
                    -4.289639418021131,
                    -4.1287070029845925,
                    -4.797816025596743,
                    3.32619845547938,
                    2.7815675094985046,
                    3.700121482468191,
                    4.786183422327641,
                    2.9915856421672355,
                    -0.38520637747068154,
                    2.805291762864554,
                    -3.817255741310668,
                    1.3992102132752384,
                    -3.566467125909536,
                    4.446689170495839,
                    0.21848321750071698,
                    -0.8533806000947646,
                ],
                vec![
                    (-5.0, -2.7706045865357902),
                    (-1.3, -2.9212110051565183),
                    (0.0, -2.189627683142662),
                    (2.2, -2.9073441609371864),
                    (5.0, -2.4071852996718763),
                ],
            ),
            (
                Distribution::Float { low: 1e-05, high: 0.1, log: true, step: None },
                vec![
                    0.00011434638743472202,
                    0.01250071223083625,
                    0.0006677306766018312,
                    0.001878173875716191,
                    1.1889379831773006e-05,
                    0.002954894558726684,
                    0.002807908107885727,
                ],
                vec![(1e-05, -2.6596517106260045), (0.0003, -2.2635714923954975), (0.05, -3.101590743858242)],
            ),
            (
                Distribution::Int { low: -3, high: 17, step: 4, log: false },
                vec![13.0, 1.0, 13.0, 1.0, 5.0, 5.0, -3.0, 1.0, 1.0, 1.0, 1.0, 9.0],
                vec![(-3.0, -1.9524553419544466), (5.0, -1.7132174469573684), (17.0, -3.0542222269611745)],
            ),
            (
                Distribution::Int { low: 1, high: 1000, step: 1, log: true },
                vec![
                    72.0, 2.0, 8.0, 150.0, 51.0, 6.0, 1.0, 62.0, 732.0, 71.0, 62.0, 965.0, 42.0, 12.0, 18.0, 57.0, 7.0,
                    84.0, 6.0, 186.0, 682.0, 77.0, 1.0, 57.0, 84.0, 808.0, 396.0, 24.0, 1.0, 15.0, 1.0, 14.0, 857.0,
                    8.0, 19.0, 94.0, 403.0, 537.0, 3.0, 37.0,
                ],
                vec![(1.0, -2.290059133032088), (10.0, -4.587020538223101), (999.0, -8.406152613554072)],
            ),
            (
                Distribution::Float { low: -1.0, high: 2.0, log: false, step: Some(0.25) },
                vec![0.0, -0.75, -0.5],
                vec![(-1.0, -2.1719853102196245), (0.5, -2.6236490293047066), (2.0, -3.994501921453921)],
            ),
            (
                Distribution::Categorical { choices: vec!["a".into(), "b".into(), "c".into()] },
                vec![2.0, 1.0, 2.0, 1.0, 0.0],
                vec![(0.0, -1.349926716949016), (1.0, -0.9932517730102834), (2.0, -0.9932517730102834)],
            ),
            (
                Distribution::Categorical { choices: vec!["a".into(), "b".into(), "c".into()] },
                vec![],
                vec![(0.0, -1.0986122886681098), (2.0, -1.0986122886681098)],
            ),
            (
                Distribution::Float { low: -5.0, high: 5.0, log: false, step: None },
                vec![],
                vec![(0.0, -2.261607292503096), (4.0, -2.341607292503096)],
            ),
            (
                Distribution::Float { low: -5.0, high: 5.0, log: false, step: None },
                vec![1.0],
                vec![(0.0, -2.227752718839638), (1.0, -2.2229493491329815)],
            ),
        ];
        for (dist, obs, points) in cases {
            let est = TpeSampler::new(0).estimator(&dist, &obs);
            for (x, want) in points {
                let got = est.log_pdf(&[x]);
                assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{dist:?} at {x}: {got} vs {want}");
            }
        }
    }

    // ---- `scripts/optuna_tpe_multivariate_vectors.py` (Optuna 5.0.0) ----

    use serde_json::Value as Json;

    fn fixture() -> Json {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optuna_tpe/multivariate.json");
        let text = std::fs::read_to_string(path).expect("read the Optuna TPE vectors");
        serde_json::from_str(&text).expect("parse the Optuna TPE vectors")
    }

    /// A number of the fixture (non-finite ones are written as strings).
    fn number(v: &Json) -> f64 {
        match v {
            Json::String(s) => match s.as_str() {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => panic!("not a number: {other}"),
            },
            v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
        }
    }

    fn numbers(v: &Json) -> Vec<f64> {
        v.as_array().unwrap().iter().map(number).collect()
    }

    fn distribution(p: &Json) -> Distribution {
        let f = |k: &str| p[k].as_f64().unwrap();
        match p["kind"].as_str().unwrap() {
            "float" => {
                Distribution::Float { low: f("low"), high: f("high"), log: p["log"] == true, step: p["step"].as_f64() }
            }
            "int" => Distribution::Int {
                low: p["low"].as_i64().unwrap(),
                high: p["high"].as_i64().unwrap(),
                step: p["step"].as_i64().unwrap(),
                log: p["log"] == true,
            },
            _ => Distribution::Categorical {
                choices: p["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| serde_yaml::Value::String(c.as_str().unwrap().into()))
                    .collect(),
            },
        }
    }

    fn close(got: f64, want: f64) -> bool {
        got == want || (got - want).abs() <= 1e-9 * want.abs().max(1.0)
    }

    /// Checks each numeric dimension's kernels against Optuna's (`kernels`: name to centres and
    /// bandwidths): the centres equal, and the bandwidths equal up to the order among equal
    /// centres, which numpy's unstable `argsort` leaves to the CPU; then takes Optuna's order,
    /// so that the densities can be compared. Returns how many dimensions needed that.
    fn adopt_optunas_tie_order(est: &mut Mixture, names: &[&str], kernels: &Json, what: &str) -> usize {
        let mut reordered = 0;
        for (dim, name) in est.dims.iter_mut().zip(names) {
            let Kernels::Numeric { mus, sigmas, log_mass, low, high, .. } = dim else { continue };
            let want_mus = numbers(&kernels[name]["mus"]);
            let want_sigmas = numbers(&kernels[name]["sigmas"]);
            assert_eq!(mus.len(), want_mus.len(), "{what} {name}: kernels");
            for (i, (m, w)) in mus.iter().zip(&want_mus).enumerate() {
                assert!(close(*m, *w), "{what} {name}: centre {i}: {m} vs Optuna {w}");
            }
            for i in 0..mus.len() {
                let group = |s: &[f64]| {
                    let mut g: Vec<f64> = (0..mus.len()).filter(|&j| mus[j] == mus[i]).map(|j| s[j]).collect();
                    g.sort_by(f64::total_cmp);
                    g
                };
                let (ours, theirs) = (group(sigmas), group(&want_sigmas));
                assert!(
                    ours.iter().zip(&theirs).all(|(a, b)| close(*a, *b)),
                    "{what} {name}: bandwidths at centre {}: {ours:?} vs Optuna {theirs:?}",
                    mus[i]
                );
            }
            if sigmas.iter().zip(&want_sigmas).any(|(a, b)| !close(*a, *b)) {
                reordered += 1;
                *sigmas = want_sigmas;
                *log_mass = mus
                    .iter()
                    .zip(sigmas.iter())
                    .map(|(mu, s)| log_gauss_mass((*low - mu) / s, (*high - mu) / s))
                    .collect();
            }
        }
        reordered
    }

    #[test]
    fn joint_parzen_log_densities_match_optuna() {
        let doc = fixture();
        assert!(doc["optuna_version"].as_str().unwrap().starts_with("5.0"));
        let cases = doc["estimators"].as_array().unwrap();
        assert!(cases.len() >= 7);
        let (mut compared, mut reordered, mut dims) = (0, 0, 0);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let dists: Vec<Distribution> = case["params"].as_array().unwrap().iter().map(distribution).collect();
            let refs: Vec<&Distribution> = dists.iter().collect();
            let rows: Vec<Vec<f64>> = case["observations"].as_array().unwrap().iter().map(numbers).collect();
            let mut est = TpeSampler::new(0).mixture(&refs, &rows);
            let names: Vec<&str> =
                case["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            reordered += adopt_optunas_tie_order(&mut est, &names, &case["kernels"], name);
            dims += names.len();
            for (probe, want) in case["probes"].as_array().unwrap().iter().zip(numbers(&case["log_pdf"])) {
                let x = numbers(probe);
                let got = est.log_pdf(&x);
                assert!(close(got, want), "{name} at {x:?}: {got} vs Optuna {want}");
                compared += 1;
            }
        }
        assert!(compared >= 70, "{compared} densities compared");
        assert!(reordered < dims / 2, "{reordered} of {dims} dimensions took Optuna's tie order");
    }

    #[test]
    fn split_running_and_pruned_trials_and_their_estimators_match_optuna() {
        let doc = fixture();
        let all: std::collections::BTreeMap<&str, Distribution> = [
            ("k", Distribution::Int { low: 0, high: 3, step: 1, log: false }),
            ("lr", Distribution::Float { low: 1e-5, high: 1e-1, log: true, step: None }),
            ("m", Distribution::Int { low: 1, high: 1000, step: 1, log: true }),
            ("n", Distribution::Int { low: -3, high: 17, step: 4, log: false }),
            ("opt", Distribution::Categorical { choices: ["sgd", "adam", "rmsprop"].map(|c| c.into()).to_vec() }),
            ("s", Distribution::Float { low: -1.0, high: 2.0, log: false, step: Some(0.25) }),
            ("x", Distribution::Float { low: -5.0, high: 5.0, log: false, step: None }),
        ]
        .into_iter()
        .collect();
        // The estimator cases' distributions are these.
        for case in doc["estimators"].as_array().unwrap() {
            for p in case["params"].as_array().unwrap() {
                assert_eq!(distribution(p), all[p["name"].as_str().unwrap()]);
            }
        }
        let studies = doc["studies"].as_array().unwrap();
        assert!(studies.len() >= 8);
        for case in studies {
            let name = case["name"].as_str().unwrap();
            let direction = match case["direction"].as_str().unwrap() {
                "minimize" => Direction::Minimize,
                _ => Direction::Maximize,
            };
            let trials: Vec<TrialSummary> = case["trials"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let params: Params = t["params"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let (dist, x) = (&all[k.as_str()], number(v));
                            let value = dist.from_internal(x).unwrap();
                            assert_eq!(dist.to_internal(&value), Some(x), "{name}: {k} = {x}");
                            (k.clone(), value)
                        })
                        .collect();
                    // As the trainer's history: a pruned trial's last intermediate value and step.
                    let last = t["intermediate"]
                        .as_array()
                        .unwrap()
                        .last()
                        .map(|sv| (sv[0].as_u64().unwrap(), number(&sv[1])));
                    let state = match t["state"].as_str().unwrap() {
                        "complete" => TrialState::Complete,
                        "pruned" => TrialState::Pruned,
                        "running" => TrialState::Running,
                        _ => TrialState::Failed,
                    };
                    let (value, last_step) = match state {
                        TrialState::Complete => (Some(number(&t["value"])), None),
                        TrialState::Pruned => (last.map(|l| l.1), last.map(|l| l.0)),
                        _ => (None, None),
                    };
                    TrialSummary { number: t["number"].as_u64().unwrap(), state, params, value, last_step }
                })
                .collect();
            let sampler = TpeSampler { constant_liar: case["constant_liar"] == true, ..TpeSampler::new(0) };
            let current = case["current"].as_u64().unwrap();
            let history = History::new(direction, &trials);
            let model = sampler.model_trials(&history, current);
            let (below, above) = sampler.split(&model, direction);
            let numbers_of = |ts: &[&TrialSummary]| ts.iter().map(|t| t.number).collect::<Vec<u64>>();
            let want = |k: &str| case[k].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect::<Vec<u64>>();
            assert_eq!(numbers_of(&below), want("below"), "{name}: below");
            assert_eq!(numbers_of(&above), want("above"), "{name}: above");
            // The joint space: Optuna's `infer_relative_search_space`.
            let keys: Vec<(&str, &Distribution)> = ["lr", "n", "opt", "x"].map(|k| (k, &all[k])).to_vec();
            let (joint, _) = sampler.partition(keys, &model);
            let joint: Vec<&str> = joint.iter().map(|(k, _)| *k).collect();
            let relative: Vec<&str> =
                case["relative_space"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
            assert_eq!(joint, relative, "{name}: joint space");
            // The estimators over the sampled space, from those sets.
            let sampled: Vec<(&str, &Distribution)> = case["sample_space"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let (key, dist) = all.get_key_value(k.as_str().unwrap()).unwrap();
                    (*key, dist)
                })
                .collect();
            let (mut l, mut g) = sampler.estimators(&sampled, &below, &above);
            let names: Vec<&str> = sampled.iter().map(|(k, _)| *k).collect();
            adopt_optunas_tie_order(&mut l, &names, &case["kernels_below"], name);
            adopt_optunas_tie_order(&mut g, &names, &case["kernels_above"], name);
            let probes = case["probes"].as_array().unwrap();
            for (which, est) in [("log_pdf_below", &l), ("log_pdf_above", &g)] {
                for (probe, want) in probes.iter().zip(numbers(&case[which])) {
                    let x = numbers(probe);
                    let got = est.log_pdf(&x);
                    assert!(close(got, want), "{name} {which} at {x:?}: {got} vs Optuna {want}");
                }
            }
        }
    }
}
