//! A small conditional denoiser that refines the generator's output with DDIM.
//!
//! It models the residual `r = target − cond`, where `cond` is the generator's output: input
//! `concat(x_t, cond, sar)` → conv3×3 → `blocks` residual blocks (conv3×3, + per-channel timestep
//! embedding, GELU, conv3×3) → GELU → conv3×3 → `out_channels`, predicting x0 of the residual
//! (diffusers' `prediction_type = "sample"`). The output convolution starts at zero, so an untrained
//! denoiser predicts a zero residual and the refined output equals the generator's.
//!
//! The schedule ([`DdimSchedule`]) is diffusers' `linear` betas (1e-4 … 0.02) rescaled to zero
//! terminal SNR, sampled with "trailing" timestep spacing and eta 0. All randomness (timesteps, noise)
//! is drawn on the host from `ChaCha8Rng` seeded by the caller, so it is identical on every backend
//! and on resume.

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{DenoiserConfig, GeneratorConfig};
use crate::generator::ModelError;
use crate::lora::apply_trainability;

/// One residual block: `x + conv2(gelu(conv1(x) + time(emb)))`.
#[derive(Module, Debug)]
pub struct DenoiserBlock<B: Backend> {
    /// First 3×3 convolution.
    pub conv1: Conv2d<B>,
    /// Timestep embedding → per-channel shift.
    pub time: Linear<B>,
    /// Second 3×3 convolution.
    pub conv2: Conv2d<B>,
}

impl<B: Backend> DenoiserBlock<B> {
    /// `x` `[b, c, h, w]`, `emb` `[b, c]` → `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let [b, c] = emb.dims();
        let h = self.conv1.forward(x.clone()) + self.time.forward(emb).reshape([b, c, 1, 1]);
        x + self.conv2.forward(gelu(h))
    }
}

/// The conditional residual denoiser (built by [`DenoiserConfig::init`]); every parameter trains.
#[derive(Module, Debug)]
pub struct Denoiser<B: Backend> {
    /// `concat(x_t, cond, sar)` → `channels`.
    pub conv_in: Conv2d<B>,
    /// Residual blocks.
    pub blocks: Vec<DenoiserBlock<B>>,
    /// `channels` → `out_channels`; zeros at initialisation.
    pub conv_out: Conv2d<B>,
    /// Feature channels (also the timestep embedding width).
    pub channels: usize,
    /// Optical channels (x_t, cond and the prediction).
    pub out_channels: usize,
    /// SAR channels.
    pub in_channels: usize,
    /// T of the training schedule.
    pub train_timesteps: usize,
}

fn conv3<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
}

impl DenoiserConfig {
    /// A randomly initialised denoiser for `in_channels` SAR and `out_channels` optical bands.
    ///
    /// # Panics
    /// If `channels` is zero or odd (rejected by [`GeneratorConfig::validate`]).
    pub fn init<B: Backend>(&self, in_channels: usize, out_channels: usize, device: &B::Device) -> Denoiser<B> {
        let c = self.channels;
        assert!(c > 0 && c.is_multiple_of(2), "denoiser.channels must be a positive even number, got {c}");
        let blocks = (0..self.blocks)
            .map(|_| DenoiserBlock {
                conv1: conv3(c, c, device),
                time: LinearConfig::new(c, c).init(device),
                conv2: conv3(c, c, device),
            })
            .collect();
        let conv_out = Conv2dConfig::new([c, out_channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_initializer(Initializer::Zeros)
            .init(device);
        let denoiser = Denoiser {
            conv_in: conv3(2 * out_channels + in_channels, c, device),
            blocks,
            conv_out,
            channels: c,
            out_channels,
            in_channels,
            train_timesteps: self.train_timesteps,
        };
        // Fixes the random values now (a clone of a lazily initialised burn parameter would draw its
        // own) and records trainability on the parameters.
        apply_trainability(denoiser, false)
    }
}

impl GeneratorConfig {
    /// The denoiser for this generator's bands ([`DenoiserConfig::init`] of `self.denoiser`).
    pub fn init_denoiser<B: Backend>(&self, device: &B::Device) -> Denoiser<B> {
        self.denoiser.init(self.in_channels, self.out_channels, device)
    }
}

impl<B: Backend> Denoiser<B> {
    /// The predicted residual x0 `[b, out, h, w]` from the noisy residual `x_t` `[b, out, h, w]`, the
    /// generator output `cond` `[b, out, h, w]`, the SAR input `sar` `[b, in, h, w]` and one
    /// timestep per sample.
    ///
    /// # Panics
    /// If `timesteps.len()` differs from the batch size or the shapes disagree (programmer errors).
    pub fn forward(
        &self,
        x_t: Tensor<B, 4>,
        cond: Tensor<B, 4>,
        sar: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Tensor<B, 4> {
        let [b, _, _, _] = x_t.dims();
        assert_eq!(timesteps.len(), b, "one timestep per sample");
        let device = x_t.device();
        let emb = Tensor::<B, 2>::from_data(
            TensorData::new(timestep_embedding(timesteps, self.channels), [b, self.channels]),
            &device,
        );
        let mut h = self.conv_in.forward(Tensor::cat(vec![x_t, cond, sar], 1));
        for block in &self.blocks {
            h = block.forward(h, emb.clone());
        }
        self.conv_out.forward(gelu(h))
    }

    /// The training schedule (T = `train_timesteps`).
    pub fn schedule(&self) -> DdimSchedule {
        DdimSchedule::new(self.train_timesteps)
    }
}

/// Sinusoidal timestep embedding `[timesteps.len() · dim]` (row-major): `[cos(t·f_k), sin(t·f_k)]` with
/// `f_k = exp(−ln(10000)·k/(dim/2))`, `k < dim/2` (diffusers' `get_timestep_embedding` with
/// `flip_sin_to_cos`, shift 0).
pub fn timestep_embedding(timesteps: &[usize], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half).map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        out.extend(freqs.iter().map(|f| (t as f64 * f).cos() as f32));
        out.extend(freqs.iter().map(|f| (t as f64 * f).sin() as f32));
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    out
}

/// DDIM noise schedule: diffusers' `linear` betas with `rescale_zero_terminal_snr`.
#[derive(Debug, Clone, PartialEq)]
pub struct DdimSchedule {
    /// ᾱ_t for `t` in `0..T`; strictly decreasing, `ᾱ_{T−1} = 0`.
    pub alphas_cumprod: Vec<f64>,
}

impl DdimSchedule {
    /// The schedule for `train_timesteps` = T steps: `β = linspace(1e-4, 0.02, T)`, ᾱ = cumprod(1 − β),
    /// then √ᾱ shifted and scaled so that `√ᾱ_{T−1} = 0` and `√ᾱ_0` is unchanged.
    ///
    /// # Panics
    /// If T < 2 (rejected by [`GeneratorConfig::validate`]).
    pub fn new(train_timesteps: usize) -> Self {
        let t = train_timesteps;
        assert!(t >= 2, "the DDIM schedule needs at least 2 training timesteps, got {t}");
        let (start, end) = (1e-4f64, 0.02f64);
        let mut acc = 1.0;
        let sqrt_ab: Vec<f64> = (0..t)
            .map(|i| {
                acc *= 1.0 - (start + (end - start) * i as f64 / (t - 1) as f64);
                acc.sqrt()
            })
            .collect();
        let (first, last) = (sqrt_ab[0], sqrt_ab[t - 1]);
        let alphas_cumprod = sqrt_ab
            .iter()
            .enumerate()
            .map(|(i, s)| if i == t - 1 { 0.0 } else { ((s - last) * first / (first - last)).powi(2) })
            .collect();
        Self { alphas_cumprod }
    }

    /// T.
    pub fn train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Checks that `steps` is a valid number of sampling steps (`1..=T`).
    pub fn check_steps(&self, steps: usize) -> Result<(), ModelError> {
        let t = self.train_timesteps();
        if steps == 0 || steps > t {
            return Err(ModelError::SamplingSteps { steps, train_timesteps: t });
        }
        Ok(())
    }

    /// The `steps` sampling timesteps, descending, with diffusers' "trailing" spacing:
    /// `round(arange(T, 0, −T/steps)) − 1` (T = 1000, 10 steps → 999, 899, …, 99). Rounding is half to
    /// even, as numpy's.
    ///
    /// # Panics
    /// If `steps` is outside `1..=T` (see [`DdimSchedule::check_steps`]).
    pub fn timesteps(&self, steps: usize) -> Vec<usize> {
        if let Err(e) = self.check_steps(steps) {
            panic!("{e}");
        }
        let t = self.train_timesteps() as f64;
        let ratio = t / steps as f64;
        // round(T − i·ratio) ≥ round(ratio) ≥ 1 because steps ≤ T.
        (0..steps).map(|i| (t - i as f64 * ratio).round_ties_even() as usize - 1).collect()
    }
}

/// One DDIM update (eta 0) from the sample `x` at ᾱ_t to ᾱ_prev given the predicted x0:
/// `ε̂ = (x − √ᾱ_t·x̂0)/√(1 − ᾱ_t)` (zero when `ᾱ_t = 1`), result `√ᾱ_prev·x̂0 + √(1 − ᾱ_prev)·ε̂`.
/// With `ᾱ_prev = 1` the result is exactly `x̂0`.
pub fn ddim_step<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    x0_hat: Tensor<B, D>,
    ab_t: f64,
    ab_prev: f64,
) -> Tensor<B, D> {
    if ab_prev >= 1.0 {
        return x0_hat;
    }
    let one_minus = 1.0 - ab_t;
    let x0_part = x0_hat.clone().mul_scalar(ab_prev.sqrt());
    if one_minus <= f64::EPSILON {
        return x0_part;
    }
    let eps = (x - x0_hat.mul_scalar(ab_t.sqrt())).div_scalar(one_minus.sqrt());
    x0_part + eps.mul_scalar((1.0 - ab_prev).sqrt())
}

/// `n` standard normal samples from the host generator (Box–Muller over pairs of uniforms).
fn normal_samples(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// The DDIM sampling loop with any x0 predictor: starts from `x_T` (the caller's noise), visits
/// `schedule.timesteps(steps)` and returns the last x0 prediction. `predict(x_t, t)` returns x̂0.
///
/// Each step moves to the next listed timestep (ᾱ = 1 after the last). diffusers instead steps to
/// `t − T // steps`, which is the same when `steps` divides T and lands between the listed timesteps
/// otherwise.
///
/// # Panics
/// If `steps` is outside `1..=T`.
pub fn sample_with<B: Backend, const D: usize>(
    schedule: &DdimSchedule,
    x_t: Tensor<B, D>,
    steps: usize,
    mut predict: impl FnMut(Tensor<B, D>, usize) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let ts = schedule.timesteps(steps);
    let ac = &schedule.alphas_cumprod;
    let mut x = x_t;
    let mut x0 = None;
    for (i, &t) in ts.iter().enumerate() {
        let x0_hat = predict(x.clone(), t);
        let ab_prev = ts.get(i + 1).map_or(1.0, |&p| ac[p]);
        x = ddim_step(x, x0_hat.clone(), ac[t], ab_prev);
        x0 = Some(x0_hat);
    }
    // `timesteps` returns at least one step.
    x0.unwrap_or(x)
}

/// The refined residual x0 `[b, out, h, w]` (the caller adds it to `cond`): DDIM (eta 0) from
/// host-seeded noise over `steps` trailing timesteps, with ᾱ = 1 after the last step. No gradients are
/// needed (call it on the inner / validation model).
///
/// # Panics
/// If `steps` is outside `1..=train_timesteps` (check with [`DdimSchedule::check_steps`]).
pub fn sample<B: Backend>(
    denoiser: &Denoiser<B>,
    cond: Tensor<B, 4>,
    sar: Tensor<B, 4>,
    steps: usize,
    seed: u64,
) -> Tensor<B, 4> {
    let dims = cond.dims();
    let noise = normal_noise(seed, dims.iter().product());
    sample_from(denoiser, cond, sar, steps, noise)
}

/// [`sample`] with one seed per sample (`seeds.len()` = batch): sample `i` starts from
/// `normal_noise(seeds[i], …)`, so a sample's result does not depend on the batch it is in
/// (`sample` with one seed and a batch of one is the same draw).
///
/// # Panics
/// If `seeds.len()` differs from the batch, or as [`sample`].
pub fn sample_per_sample<B: Backend>(
    denoiser: &Denoiser<B>,
    cond: Tensor<B, 4>,
    sar: Tensor<B, 4>,
    steps: usize,
    seeds: &[u64],
) -> Tensor<B, 4> {
    let [b, c, h, w] = cond.dims();
    assert_eq!(seeds.len(), b, "one seed per sample: {} seeds for a batch of {b}", seeds.len());
    let noise = seeds.iter().flat_map(|&s| normal_noise(s, c * h * w)).collect();
    sample_from(denoiser, cond, sar, steps, noise)
}

/// `n` standard normal values from `ChaCha8Rng::seed_from_u64(seed)` (Box–Muller over pairs of
/// uniforms): the starting noise of [`sample`].
pub fn normal_noise(seed: u64, n: usize) -> Vec<f32> {
    normal_samples(&mut ChaCha8Rng::seed_from_u64(seed), n)
}

/// DDIM from the given starting noise (row-major, `cond`'s shape).
fn sample_from<B: Backend>(
    denoiser: &Denoiser<B>,
    cond: Tensor<B, 4>,
    sar: Tensor<B, 4>,
    steps: usize,
    noise: Vec<f32>,
) -> Tensor<B, 4> {
    let schedule = denoiser.schedule();
    let dims = cond.dims();
    let x_t = Tensor::<B, 4>::from_data(TensorData::new(noise, dims), &cond.device());
    let b = dims[0];
    sample_with(&schedule, x_t, steps, |x, t| denoiser.forward(x, cond.clone(), sar.clone(), &vec![t; b]))
}

/// The denoiser's training loss on a batch: per sample `t ~ U{0, …, T−1}`, `ε ~ N(0, 1)`,
/// `x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε`, and the MSE between the predicted and the true x0 (mean over every
/// element). `residual_x0` is `target − cond`; `cond` and `sar` are used as given (the caller detaches
/// `cond`). The draws (all timesteps first, then the noise in row-major order) come from
/// `ChaCha8Rng::seed_from_u64(seed)`.
pub fn training_loss<B: Backend>(
    denoiser: &Denoiser<B>,
    residual_x0: Tensor<B, 4>,
    cond: Tensor<B, 4>,
    sar: Tensor<B, 4>,
    seed: u64,
) -> Tensor<B, 1> {
    let schedule = denoiser.schedule();
    let dims = residual_x0.dims();
    let b = dims[0];
    let device = residual_x0.device();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..schedule.train_timesteps())).collect();
    let noise = normal_samples(&mut rng, dims.iter().product());
    let coef = |f: fn(f64) -> f64| {
        let v: Vec<f32> = ts.iter().map(|&t| f(schedule.alphas_cumprod[t]) as f32).collect();
        Tensor::<B, 4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &device)
    };
    let eps = Tensor::<B, 4>::from_data(TensorData::new(noise, dims), &device);
    let x_t = residual_x0.clone() * coef(f64::sqrt) + eps * coef(|a| (1.0 - a).sqrt());
    let pred = denoiser.forward(x_t, cond, sar, &ts);
    (pred - residual_x0).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::tests::{host, max_abs_diff};
    use burn::backend::{Autodiff, Flex};
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Distribution;

    type B = Flex;
    type AB = Autodiff<Flex>;

    fn small() -> DenoiserConfig {
        DenoiserConfig { channels: 8, blocks: 2, train_timesteps: 1000 }
    }

    /// A denoiser whose output convolution is random (the initial zeros would hide the inputs).
    fn random_out<BK: Backend>(mut d: Denoiser<BK>, device: &BK::Device) -> Denoiser<BK> {
        let shape = d.conv_out.weight.shape();
        d.conv_out.weight = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.2), device));
        d
    }

    #[test]
    fn trailing_timesteps_match_diffusers() {
        let s = DdimSchedule::new(1000);
        assert_eq!(s.timesteps(10), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        assert_eq!(s.timesteps(3), [999, 666, 332]); // numpy: round(arange(1000, 0, -333.33)) - 1
        assert_eq!(s.timesteps(1), [999]);
        assert_eq!(s.timesteps(1000), (0..1000).rev().collect::<Vec<_>>());
        assert_eq!(s.check_steps(0), Err(ModelError::SamplingSteps { steps: 0, train_timesteps: 1000 }));
        assert!(s.check_steps(1001).is_err());
        assert!(s.check_steps(50).is_ok());
    }

    #[test]
    fn zero_terminal_snr_schedule() {
        let t = 1000;
        let s = DdimSchedule::new(t);
        let ac = &s.alphas_cumprod;
        assert_eq!(ac.len(), t);
        assert_eq!(ac[t - 1], 0.0);
        // ᾱ_0 = 1 − β_0: the rescaling keeps √ᾱ_0.
        assert!((ac[0] - 0.9999).abs() < 1e-12);
        // ᾱ_1 = ((√ᾱ'_1 − √ᾱ'_T) · √ᾱ'_0 / (√ᾱ'_0 − √ᾱ'_T))², with ᾱ' the unscaled products.
        let beta = |i: usize| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0;
        let s0 = (1.0 - beta(0)).sqrt();
        let s1 = ((1.0 - beta(0)) * (1.0 - beta(1))).sqrt();
        let st = (0..t).map(|i| (1.0 - beta(i)).ln()).sum::<f64>().exp().sqrt();
        assert!((st * st - 4.0358297653756754e-05).abs() < 1e-12, "unscaled ᾱ_T (numpy reference)");
        let want = ((s1 - st) * s0 / (s0 - st)).powi(2);
        assert!((ac[1] - want).abs() < 1e-12, "{} vs {want}", ac[1]);
        assert!(ac.windows(2).all(|w| w[1] < w[0]), "strictly decreasing");
        let two = DdimSchedule::new(2).alphas_cumprod;
        assert!((two[0] - 0.9999).abs() < 1e-12 && two[1] == 0.0, "{two:?}");
    }

    #[test]
    fn ddim_step_follows_the_closed_form() {
        let device = Default::default();
        let x0 = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
        let eps = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
        let at = |ab: f64| x0.clone().mul_scalar(ab.sqrt()) + eps.clone().mul_scalar((1.0 - ab).sqrt());
        for (ab_t, ab_prev) in [(0.3, 0.7), (0.0, 0.2), (0.9, 0.95)] {
            let got = ddim_step(at(ab_t), x0.clone(), ab_t, ab_prev);
            assert!(max_abs_diff(&host(got), &host(at(ab_prev))) < 1e-5, "{ab_t} → {ab_prev}");
        }
        // ᾱ_prev = 1 returns x̂0 exactly; ᾱ_t = 1 has no noise to estimate.
        assert_eq!(host(ddim_step(at(0.3), x0.clone(), 0.3, 1.0)), host(x0.clone()));
        let got = ddim_step(x0.clone(), x0.clone(), 1.0, 0.25);
        assert_eq!(host(got), host(x0.clone().mul_scalar(0.5)));
    }

    /// With a perfect x0 predictor every visited x_t equals √ᾱ_t·x0 + √(1 − ᾱ_t)·x_T (DDIM keeps the
    /// noise) and the result is x0 exactly.
    #[test]
    fn sampling_with_a_perfect_predictor_returns_x0() {
        let device = Default::default();
        let s = DdimSchedule::new(1000);
        let x0 = Tensor::<B, 4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<B, 4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let mut visited = Vec::new();
        let out = sample_with(&s, noise.clone(), 10, |x, t| {
            let ab = s.alphas_cumprod[t];
            let want = x0.clone().mul_scalar(ab.sqrt()) + noise.clone().mul_scalar((1.0 - ab).sqrt());
            assert!(max_abs_diff(&host(x), &host(want)) < 1e-5, "t {t}");
            visited.push(t);
            x0.clone()
        });
        assert_eq!(visited, s.timesteps(10));
        assert_eq!(host(out), host(x0));
    }

    #[test]
    fn sample_is_seeded_and_starts_from_a_zero_residual() {
        let device = Default::default();
        let d = small().init::<B>(2, 4, &device);
        let cond = Tensor::<B, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let sar = Tensor::<B, 4>::random([2, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let out = sample(&d, cond.clone(), sar.clone(), 4, 7);
        assert_eq!(out.dims(), [2, 4, 8, 8]);
        assert!(host(out).iter().all(|v| *v == 0.0), "zero-initialised output convolution");
        let d = random_out(d, &device);
        let a = host(sample(&d, cond.clone(), sar.clone(), 4, 7));
        assert_eq!(a, host(sample(&d, cond.clone(), sar.clone(), 4, 7)));
        assert!(max_abs_diff(&a, &host(sample(&d, cond, sar, 4, 8))) > 1e-4);
    }

    #[test]
    fn per_sample_seeds_make_a_sample_independent_of_its_batch() {
        let device = Default::default();
        let d = random_out(small().init::<B>(2, 4, &device), &device);
        let cond = Tensor::<B, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let sar = Tensor::<B, 4>::random([2, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let both = host(sample_per_sample(&d, cond.clone(), sar.clone(), 4, &[11, 12]));
        for (i, seed) in [11u64, 12].into_iter().enumerate() {
            let one = |t: &Tensor<B, 4>| t.clone().narrow(0, i, 1);
            let alone = host(sample(&d, one(&cond), one(&sar), 4, seed));
            let n = alone.len();
            assert!(max_abs_diff(&alone, &both[i * n..(i + 1) * n]) < 1e-6, "sample {i}");
        }
        assert_eq!(normal_noise(5, 7).len(), 7);
        assert_eq!(normal_noise(5, 7), normal_noise(5, 8)[..7]);
    }

    #[test]
    fn training_loss_is_seeded() {
        let device = Default::default();
        let d = small().init::<B>(2, 4, &device);
        let x0 = Tensor::<B, 4>::random([3, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let cond = Tensor::<B, 4>::random([3, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let sar = Tensor::<B, 4>::random([3, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        // An untrained denoiser predicts 0: the loss is the mean square of x0 whatever the draws.
        let l = training_loss(&d, x0.clone(), cond.clone(), sar.clone(), 1).into_scalar();
        let ms = host(x0.clone()).iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / (3.0 * 4.0 * 64.0);
        assert!((l as f64 - ms).abs() < 1e-5);
        let d = random_out(d, &device);
        let loss = |seed| training_loss(&d, x0.clone(), cond.clone(), sar.clone(), seed).into_scalar();
        assert_eq!(loss(1), loss(1));
        assert_ne!(loss(1), loss(2));
    }

    #[test]
    fn every_denoiser_parameter_trains() {
        let device = Default::default();
        let d = random_out(small().init::<AB>(2, 4, &device), &device);
        let x0 = Tensor::<AB, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let cond = Tensor::<AB, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let sar = Tensor::<AB, 4>::random([2, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let grads = training_loss(&d, x0, cond, sar, 3).backward();
        struct V<'a>(&'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients, usize);
        impl ModuleVisitor<AB> for V<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
                let g = p.val().grad(self.0).expect("gradient");
                assert!(g.abs().sum().into_scalar() > 0.0);
                self.1 += 1;
            }
        }
        let mut v = V(&grads, 0);
        d.visit(&mut v);
        assert_eq!(v.1, 2 + 2 * 6 + 2); // conv_in, blocks × (conv1, time, conv2) × (weight, bias), conv_out
    }

    #[test]
    fn timestep_embedding_values() {
        let e = timestep_embedding(&[0, 3], 4);
        // f = [1, 1/100]: t 3 → [cos 3, cos .03, sin 3, sin .03].
        assert_eq!(&e[..4], &[1.0, 1.0, 0.0, 0.0]);
        let want = [3f64.cos(), 0.03f64.cos(), 3f64.sin(), 0.03f64.sin()];
        for (g, w) in e[4..].iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
    }
}
