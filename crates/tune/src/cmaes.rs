//! The CMA-ES sampler ([`CmaEsSampler`]): Optuna 5's `CmaEsSampler` with its defaults, for a
//! single-objective study run one trial at a time.
//!
//! # What it does (as Optuna)
//!
//! * Until `n_startup_trials` (1) trials are complete, every parameter is drawn by
//!   [`RandomSampler::draw`] with the same seed (Optuna's `independent_sampler` default is a
//!   `RandomSampler`).
//! * The float and int parameters with more than one value form the search space of the
//!   evolution strategy, in key order. Each maps to `[0, 1]` as Optuna's
//!   `_SearchSpaceTransform(transform_step=True, transform_0_1=True)` maps it: a log parameter
//!   in log space, a parameter with a step (every int) widened by half a step on each side
//!   (an int with `log` to `[ln(low - 0.5), ln(high + 0.5)]`). A sample is mapped back and
//!   snapped to the range and step by [`Distribution::from_internal`].
//! * The distribution starts at the centre of the space, `mean = 0.5`, with
//!   `sigma0 = min(range) / 6 = 1/6` and `C = I`. The update is the `cmaes` package's `CMA`
//!   (Hansen's (μ/μ_w, λ)-CMA-ES with negative recombination weights, "The CMA Evolution
//!   Strategy: A Tutorial", 2016): population `λ = 4 + ⌊3 ln n⌋`, `μ = ⌊λ/2⌋`, weights
//!   `ln((λ+1)/2) - ln i` (the positive ones normalised to sum 1, the negative ones scaled by
//!   `min(α_μ⁻, α_μeff⁻, α_posdef⁻)`), `c_m = 1`, `c_σ = (μ_eff+2)/(n+μ_eff+5)`,
//!   `d_σ = 1 + 2 max(0, √((μ_eff-1)/(n+1)) - 1) + c_σ`, `c_c = (4+μ_eff/n)/(n+4+2μ_eff/n)`,
//!   `c_1 = 2/((n+1.3)²+μ_eff)`, `c_μ = min(1-c_1-1e-8, 2(μ_eff-2+1/μ_eff)/((n+2)²+μ_eff))`,
//!   the `h_σ` stall of the rank-one path, and `σ ≤ 1e32`. `C` is symmetrised and
//!   eigendecomposed (cyclic Jacobi rotations) before each sample and update; eigenvalues
//!   below zero become `1e-8`. Four updates are checked against `cmaes` 0.13.1 to 1e-12, the
//!   map to `[0, 1]` against Optuna's transform (unit tests below).
//! * A sample outside `[0, 1]ⁿ` is redrawn up to `10 n` times (Optuna's `n_max_resampling`);
//!   if every draw is outside, one more is drawn and clamped into the box.
//! * A maximised study tells the negated values.
//! * Categorical parameters are not part of the strategy: they get the random sampler's draw
//!   for the trial (Optuna's fallback to `independent_sampler`, which it reports with a
//!   warning; here [`CmaEsSampler::fallback_warning`] gives its text for the caller to show).
//!   A parameter whose range holds one value gets it without sampling.
//!
//! # A pure function of the history
//!
//! Optuna keeps the strategy's state in the storage (the pickled optimizer and each trial's
//! generation). Here nothing is kept: every call replays the history. The complete trials with
//! a finite value (pruned and failed trials are ignored, Optuna's `consider_pruned_trials =
//! False`) are taken in number order; the first `n_startup_trials` of them are the startup
//! trials; the others, skipping any that lack one of the strategy's keys or hold a value
//! outside its distribution, are grouped into generations of `λ` in order, and each full
//! generation is told (its trials' parameters, mapped as above, are the samples; ties keep
//! number order). The trial is then sampled from the current distribution with a stream of
//! normal deviates that depends only on `(seed, trial number)`. A resumed study, or a fresh
//! sampler given the same history, therefore suggests the same values. For a sequential study
//! this is the grouping Optuna makes: its generation `g` is the `λ` trials asked while the
//! optimizer was at generation `g`.
//!
//! # Not reproduced
//!
//! * The random streams are not numpy's, so values differ from Optuna's for the same seed;
//!   Optuna's `RandomSampler` also draws the startup and categorical values from one study-wide
//!   stream, here they are [`RandomSampler::draw`]'s per-(seed, trial, key) streams.
//! * Parallel studies: Optuna assigns a trial to the generation its optimizer was at when the
//!   trial was asked, so trials running concurrently can land in a generation differently.
//! * `x0`, `sigma0`, `popsize`, `restart_strategy`, `source_trials` (warm starting),
//!   `with_margin`, `lr_adapt`, `use_separable_cma`, `consider_pruned_trials`, a changing
//!   search space (Optuna then falls back to the independent sampler for every parameter),
//!   multi-objective studies.
//! * Infinite objective values: Optuna tells them; here they are ignored with the NaNs.

use crate::pruners::Direction;
use crate::samplers::{History, Params, RandomSampler, SampleError, Sampler, TrialSummary, splitmix64};
use crate::space::{Distribution, ParamValue, SearchSpace};

/// Optuna's `CmaEsSampler` for a sequential study (see the module docs). [`CmaEsSampler::new`]
/// gives Optuna's defaults.
#[derive(Clone, Debug)]
pub struct CmaEsSampler {
    pub seed: u64,
    /// Complete trials drawn at random before the strategy starts (Optuna's default 1).
    pub n_startup_trials: usize,
}

/// The `cmaes` package's `_EPS` (smallest eigenvalue kept) and `_SIGMA_MAX`.
const EPS: f64 = 1e-8;
const SIGMA_MAX: f64 = 1e32;

impl CmaEsSampler {
    /// Optuna's defaults: one startup trial.
    pub fn new(seed: u64) -> Self {
        CmaEsSampler { seed, n_startup_trials: 1 }
    }

    /// The default population size for `n` dimensions: `4 + ⌊3 ln n⌋`.
    pub fn population_size(n: usize) -> usize {
        4 + (3.0 * (n.max(1) as f64).ln()).floor() as usize
    }

    /// Optuna's warning for the parameters of `space` the strategy does not sample (the
    /// categorical ones), or `None` when there are none.
    pub fn fallback_warning(&self, space: &SearchSpace) -> Option<String> {
        let keys: Vec<&str> = space
            .params()
            .iter()
            .filter(|(_, d)| matches!(d, Distribution::Categorical { .. }))
            .map(|(k, _)| k.as_str())
            .collect();
        (!keys.is_empty()).then(|| {
            format!(
                "The parameter(s) {} will be sampled by RandomSampler, not CmaEsSampler: dynamic search space and \
                 categorical parameters are not supported by CmaEsSampler",
                keys.join(", ")
            )
        })
    }

    /// The current distribution after replaying `history` over the numeric `dims`.
    fn replay(&self, dims: &[Dim], history: &History) -> Cma {
        let mut cma = Cma::new(dims.len());
        let sign = match history.direction {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        };
        let mut complete: Vec<&TrialSummary> = history.complete().collect();
        complete.sort_by_key(|t| t.number);
        let mut generation: Vec<(Vec<f64>, f64)> = Vec::with_capacity(cma.lambda);
        for t in complete.into_iter().skip(self.n_startup_trials) {
            let x: Option<Vec<f64>> = dims.iter().map(|d| t.params.get(&d.key).and_then(|v| d.encode(v))).collect();
            let (Some(x), Some(v)) = (x, t.value) else { continue };
            generation.push((x, sign * v));
            if generation.len() == cma.lambda {
                cma.tell(&mut generation);
                generation.clear();
            }
        }
        cma
    }
}

impl Sampler for CmaEsSampler {
    fn sample(&mut self, space: &SearchSpace, trial_number: u64, history: &History) -> Result<Params, SampleError> {
        let random = RandomSampler::new(self.seed);
        let mut params = Params::new();
        let mut dims = Vec::new();
        for (key, dist) in space.params() {
            if let Some(v) = single_value(dist) {
                params.insert(key.clone(), v);
            } else if let Some(dim) = Dim::new(key, dist) {
                dims.push(dim);
            } else {
                params.insert(key.clone(), random.draw(key, dist, trial_number));
            }
        }
        if history.complete().count() < self.n_startup_trials || dims.is_empty() {
            for d in &dims {
                params.insert(d.key.clone(), random.draw(&d.key, &d.dist, trial_number));
            }
            return Ok(params);
        }
        let mut cma = self.replay(&dims, history);
        let x = cma.ask(&mut Stream::new(self.seed, trial_number));
        for (d, &u) in dims.iter().zip(&x) {
            let value = d.decode(u).unwrap_or_else(|| random.draw(&d.key, &d.dist, trial_number));
            params.insert(d.key.clone(), value);
        }
        Ok(params)
    }
}

/// The value of a distribution that holds one value (Optuna does not sample those).
fn single_value(dist: &Distribution) -> Option<ParamValue> {
    match dist {
        Distribution::Float { low, high, step: None, .. } => (low == high).then_some(ParamValue::Float(*low)),
        Distribution::Categorical { .. } => None,
        _ => (dist.grid_len() == Some(1)).then(|| dist.grid_point(0)).flatten(),
    }
}

/// One numeric parameter of the strategy and its map to `[0, 1]`.
struct Dim {
    key: String,
    dist: Distribution,
    log: bool,
    /// The (log, widened) bounds of the internal value.
    low: f64,
    high: f64,
}

impl Dim {
    fn new(key: &str, dist: &Distribution) -> Option<Dim> {
        let (low, high, log, step) = match dist {
            Distribution::Float { low, high, log, step } => (*low, *high, *log, *step),
            Distribution::Int { low, high, step, log } => (*low as f64, *high as f64, *log, Some(*step as f64)),
            Distribution::Categorical { .. } => return None,
        };
        let (mut low, mut high) = (low, high);
        match (log, step) {
            (true, Some(_)) => {
                // Optuna: an int with `log` has step 1, its bounds are widened by 0.5.
                low = (low - 0.5).ln();
                high = (high + 0.5).ln();
            }
            (true, None) => {
                low = low.ln();
                high = high.ln();
            }
            (false, Some(s)) => {
                low -= s / 2.0;
                high += s / 2.0;
            }
            (false, None) => {}
        }
        (low.is_finite() && high.is_finite() && high > low).then(|| Dim {
            key: key.to_string(),
            dist: dist.clone(),
            log,
            low,
            high,
        })
    }

    /// A value's position in `[0, 1]`; `None` if the distribution cannot produce it.
    fn encode(&self, value: &ParamValue) -> Option<f64> {
        let x = self.dist.to_internal(value)?;
        let x = if self.log { x.ln() } else { x };
        let u = (x - self.low) / (self.high - self.low);
        u.is_finite().then_some(u)
    }

    /// The value at position `u`, snapped to the range and step.
    fn decode(&self, u: f64) -> Option<ParamValue> {
        let x = self.low + u.clamp(0.0, 1.0) * (self.high - self.low);
        let x = if self.log { x.exp() } else { x };
        self.dist.from_internal(x)
    }
}

/// The state of a (μ/μ_w, λ)-CMA-ES over `[0, 1]ⁿ` (the `cmaes` package's `CMA`).
struct Cma {
    n: usize,
    lambda: usize,
    mu: usize,
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    cc: f64,
    c1: f64,
    cmu: f64,
    chi_n: f64,
    mean: Vec<f64>,
    sigma: f64,
    /// Row-major `n × n`.
    c: Vec<f64>,
    p_sigma: Vec<f64>,
    pc: Vec<f64>,
    generation: u32,
}

impl Cma {
    fn new(n: usize) -> Cma {
        let nf = n as f64;
        let lambda = CmaEsSampler::population_size(n);
        let mu = lambda / 2;
        let w: Vec<f64> = (0..lambda).map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln()).collect();
        let sum_sq = |ws: &[f64]| ws.iter().sum::<f64>().powi(2) / ws.iter().map(|x| x * x).sum::<f64>();
        let mu_eff = sum_sq(&w[..mu]);
        let mu_eff_minus = sum_sq(&w[mu..]);
        let alpha_cov = 2.0;
        let c1 = alpha_cov / ((nf + 1.3).powi(2) + mu_eff);
        let cmu = (1.0 - c1 - 1e-8)
            .min(alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + alpha_cov * mu_eff / 2.0));
        let min_alpha =
            (1.0 + c1 / cmu).min(1.0 + 2.0 * mu_eff_minus / (mu_eff + 2.0)).min((1.0 - c1 - cmu) / (nf * cmu));
        let positive: f64 = w.iter().filter(|&&x| x > 0.0).sum();
        let negative: f64 = w.iter().filter(|&&x| x < 0.0).map(|x| -x).sum();
        let weights = w.iter().map(|&x| if x >= 0.0 { x / positive } else { min_alpha * x / negative }).collect();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let cc = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let mut c = vec![0.0; n * n];
        (0..n).for_each(|i| c[i * n + i] = 1.0);
        Cma {
            n,
            lambda,
            mu,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            cc,
            c1,
            cmu,
            chi_n,
            mean: vec![0.5; n],
            sigma: 1.0 / 6.0,
            c,
            p_sigma: vec![0.0; n],
            pc: vec![0.0; n],
            generation: 0,
        }
    }

    /// Symmetrises `C`, clamps its negative eigenvalues, and returns `(B, D)` with
    /// `C = B diag(D²) Bᵀ` (`B`'s columns the eigenvectors).
    fn eigen(&mut self) -> (Vec<f64>, Vec<f64>) {
        let n = self.n;
        for i in 0..n {
            for j in 0..i {
                let s = (self.c[i * n + j] + self.c[j * n + i]) / 2.0;
                self.c[i * n + j] = s;
                self.c[j * n + i] = s;
            }
        }
        let (mut d2, b) = jacobi_eigen(&self.c, n);
        d2.iter_mut().filter(|x| x.is_nan() || **x < 0.0).for_each(|x| *x = EPS);
        for i in 0..n {
            for j in 0..n {
                self.c[i * n + j] = (0..n).map(|k| b[i * n + k] * d2[k] * b[j * n + k]).sum();
            }
        }
        (b, d2.iter().map(|x| x.sqrt()).collect())
    }

    /// A sample in `[0, 1]ⁿ` (redrawn up to `10 n` times, then clamped).
    fn ask(&mut self, stream: &mut Stream) -> Vec<f64> {
        let (b, d) = self.eigen();
        let n = self.n;
        let mut draw = || -> Vec<f64> {
            let z: Vec<f64> = (0..n).map(|_| stream.normal()).collect();
            (0..n)
                .map(|i| self.mean[i] + self.sigma * (0..n).map(|k| b[i * n + k] * d[k] * z[k]).sum::<f64>())
                .collect()
        };
        for _ in 0..10 * n {
            let x = draw();
            if x.iter().all(|v| (0.0..=1.0).contains(v)) {
                return x;
            }
        }
        draw().into_iter().map(|v| if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.5 }).collect()
    }

    /// One generation's update from `λ` (sample, value) pairs.
    fn tell(&mut self, solutions: &mut [(Vec<f64>, f64)]) {
        let n = self.n;
        let nf = n as f64;
        self.generation += 1;
        solutions.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (b, d) = self.eigen();
        let y: Vec<Vec<f64>> =
            solutions.iter().map(|(x, _)| (0..n).map(|i| (x[i] - self.mean[i]) / self.sigma).collect()).collect();
        let mut y_w = vec![0.0; n];
        for (yk, w) in y.iter().zip(&self.weights).take(self.mu) {
            (0..n).for_each(|i| y_w[i] += w * yk[i]);
        }
        (0..n).for_each(|i| self.mean[i] += self.sigma * y_w[i]);
        // C^{-1/2} v = B diag(1/D) Bᵀ v.
        let inv_sqrt = |v: &[f64]| -> Vec<f64> {
            let t: Vec<f64> = (0..n).map(|k| (0..n).map(|i| b[i * n + k] * v[i]).sum::<f64>() / d[k]).collect();
            (0..n).map(|i| (0..n).map(|k| b[i * n + k] * t[k]).sum()).collect()
        };
        let cs = (self.c_sigma * (2.0 - self.c_sigma) * self.mu_eff).sqrt();
        let c2_yw = inv_sqrt(&y_w);
        (0..n).for_each(|i| self.p_sigma[i] = (1.0 - self.c_sigma) * self.p_sigma[i] + cs * c2_yw[i]);
        let norm_ps = self.p_sigma.iter().map(|x| x * x).sum::<f64>().sqrt();
        self.sigma *= ((self.c_sigma / self.d_sigma) * (norm_ps / self.chi_n - 1.0)).exp();
        self.sigma = self.sigma.min(SIGMA_MAX);
        let left = norm_ps / (1.0 - (1.0 - self.c_sigma).powi(2 * (self.generation as i32 + 1))).sqrt();
        let right = (1.4 + 2.0 / (nf + 1.0)) * self.chi_n;
        let h_sigma = if left < right { 1.0 } else { 0.0 };
        let ccs = (self.cc * (2.0 - self.cc) * self.mu_eff).sqrt();
        (0..n).for_each(|i| self.pc[i] = (1.0 - self.cc) * self.pc[i] + h_sigma * ccs * y_w[i]);
        let w_io: Vec<f64> = y
            .iter()
            .zip(&self.weights)
            .map(|(yk, &w)| {
                if w >= 0.0 {
                    w
                } else {
                    let s: f64 = inv_sqrt(yk).iter().map(|x| x * x).sum();
                    w * nf / (s + EPS)
                }
            })
            .collect();
        let delta_h_sigma = (1.0 - h_sigma) * self.cc * (2.0 - self.cc);
        let sum_w: f64 = self.weights.iter().sum();
        let keep = 1.0 + self.c1 * delta_h_sigma - self.c1 - self.cmu * sum_w;
        for i in 0..n {
            for j in 0..n {
                let rank_mu: f64 = y.iter().zip(&w_io).map(|(yk, w)| w * yk[i] * yk[j]).sum();
                self.c[i * n + j] = keep * self.c[i * n + j] + self.c1 * self.pc[i] * self.pc[j] + self.cmu * rank_mu;
            }
        }
    }
}

/// Eigenvalues and eigenvectors (the columns of the row-major result) of the symmetric
/// row-major `n × n` matrix `a`, by cyclic Jacobi rotations.
fn jacobi_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off.is_nan() || off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Standard normal deviates for one (seed, trial).
struct Stream(u64);

impl Stream {
    fn new(seed: u64, trial: u64) -> Self {
        const CMA: u64 = 0x636d_615f_6573_6d70; // "cma_esmp"
        Stream(splitmix64(splitmix64(seed ^ CMA) ^ splitmix64(trial ^ 0x5851_f42d_4c95_7f2d)))
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ((splitmix64(self.0) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box–Muller (one deviate per pair of uniforms).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 1.0];
        let (d, v) = jacobi_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| v[i * 3 + k] * d[k] * v[j * 3 + k]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-12, "({i},{j}) {r}");
            }
        }
    }

    #[test]
    fn constants_are_hansens() {
        let c = Cma::new(3);
        assert_eq!((c.lambda, c.mu), (7, 3));
        let pos: f64 = c.weights[..3].iter().sum();
        assert!((pos - 1.0).abs() < 1e-12 && c.weights[3..].iter().all(|&w| w <= 0.0));
        assert!(c.c1 > 0.0 && c.cmu > 0.0 && c.c1 + c.cmu < 1.0);
    }

    #[test]
    fn updates_match_the_cmaes_package() {
        // `cmaes.CMA(mean=[0.5]*3, sigma=1/6, bounds=[[0, 1]]*3)` (cmaes 0.13.1) told four
        // generations of these points: its mean, sigma, C and paths afterwards.
        let mut c = Cma::new(3);
        let target = [0.3, 0.6, 0.45];
        for g in 0..4 {
            let mut sols: Vec<(Vec<f64>, f64)> = (0..c.lambda)
                .map(|i| {
                    let k = (g * c.lambda + i) as f64;
                    let x: Vec<f64> =
                        (0..3).map(|j| ((1.7 * k + 0.9 * j as f64 + 0.3).sin() * 0.5 + 0.5) * 0.8 + 0.1).collect();
                    let v = x.iter().zip(&target).map(|(a, b)| (a - b).powi(2)).sum();
                    (x, v)
                })
                .collect();
            c.tell(&mut sols);
        }
        let close = |got: &[f64], want: &[f64]| {
            assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{got:?} vs {want:?}");
        };
        close(&c.mean, &[0.16707628094785004, 0.3889004076261776, 0.6948024908713988]);
        close(&[c.sigma], &[0.16546870956929824]);
        close(
            &c.c,
            &[
                0.7823695546239248,
                -0.0714391885538978,
                0.007109575232839935,
                -0.07143918855389787,
                0.920078585978262,
                0.12338692556304023,
                0.007109575232839935,
                0.12338692556304023,
                1.024581263852981,
            ],
        );
        close(&c.pc, &[-0.49788562041087436, -0.49388286892987193, -0.1161194085589754]);
        close(&c.p_sigma, &[-0.732092978787386, -0.4834226905296491, 0.13109225214447262]);
    }

    #[test]
    fn the_unit_map_is_optunas() {
        // Optuna's `_SearchSpaceTransform(transform_step=True, transform_0_1=True)`.
        let cases = [
            (Distribution::Int { low: 1, high: 1000, step: 1, log: true }, ParamValue::Int(10), 0.3941025802468648),
            (Distribution::Int { low: 3, high: 17, step: 2, log: false }, ParamValue::Int(5), 0.1875),
            (Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) }, ParamValue::Float(0.5), 0.5),
            (Distribution::Float { low: 1e-5, high: 0.1, log: true, step: None }, ParamValue::Float(1e-3), 0.5),
        ];
        for (dist, value, want) in cases {
            let d = Dim::new("k", &dist).unwrap();
            let u = d.encode(&value).unwrap();
            assert!((u - want).abs() < 1e-12, "{dist:?}: {u} vs {want}");
            match (d.decode(u), &value) {
                (Some(ParamValue::Float(a)), ParamValue::Float(b)) => assert!((a - b).abs() < 1e-12 * b.abs()),
                (got, _) => assert_eq!(got.as_ref(), Some(&value)),
            }
        }
    }
}
