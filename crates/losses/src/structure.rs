//! Structural similarity: SSIM and multi-scale SSIM (MS-SSIM).
//!
//! Both reproduce torchmetrics (`StructuralSimilarityIndexMeasure` and
//! `MultiScaleStructuralSimilarityIndexMeasure`, 1.8) with its defaults: Gaussian window of 11
//! taps with σ = 1.5, K1 = 0.01, K2 = 0.03, an explicit `data_range`, the betas
//! (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and `normalize="relu"`. Inputs are `[B, C, H, W]`;
//! every channel is filtered separately.
//!
//! # Definition (one scale)
//!
//! With `G` the separable Gaussian filter (normalised 1-D taps `g_t ∝ exp(−t²/(2σ²))` for
//! `t = −(k−1)/2 ..= (k−1)/2`, applied along H then W), each image and channel is first
//! reflection-padded by `p = (k−1)/2` on every side (mirror without repeating the edge, as
//! `torch.nn.functional.pad(mode="reflect")`), then
//!
//! ```text
//! μx = G*x   μy = G*y   σx² = max(G*(x²) − μx², 0)   σy² = max(G*(y²) − μy², 0)   σxy = G*(xy) − μxμy
//! C1 = (K1·L)²   C2 = (K2·L)²   (L = data_range)
//! cs  map = (2σxy + C2) / (σx² + σy² + C2)
//! sim map = (2μxμy + C1) / (μx² + μy² + C1) · cs map
//! ```
//!
//! Both maps are `H × W`. Like torchmetrics, the SSIM of an image is the mean of the **whole**
//! sim map (border pixels included, computed from the reflected padding) over all channels and
//! pixels, while its contrast-sensitivity `cs` is the mean of the cs map **cropped** by `p` on
//! every side (`(H−2p) × (W−2p)`, the positions whose window lies inside the image, i.e. a
//! valid convolution) over all channels and pixels. The batch value is the mean of the
//! per-image values (torchmetrics' `reduction="elementwise_mean"`).
//!
//! # MS-SSIM and the small-tile rule
//!
//! Scale 0 is the input; scale `i+1` is scale `i` average-pooled 2×2 with stride 2 (odd sizes
//! are floored, as `avg_pool2d`), so scale `i` is `⌊H/2^i⌋ × ⌊W/2^i⌋`. With `n` scales and
//! weights `w`, per image
//!
//! ```text
//! MS-SSIM = Π_{i<n−1} relu(cs_i)^{w_i} · relu(ssim_{n−1})^{w_{n−1}}
//! ```
//!
//! (without `relu` when `normalize` is off), then the mean over the batch.
//!
//! torchmetrics raises an error when the tile is too small for all the betas (for the five
//! default betas: H or W below 176). Here instead, **scale `i` is usable when
//! `⌊H/2^i⌋ ≥ kernel_size` and `⌊W/2^i⌋ ≥ kernel_size`; the first `n` scales are used, `n`
//! being the number of usable scales among the first `betas.len()`**. When all of them are
//! usable the betas are used as given (exactly torchmetrics' formula; note that the default betas
//! sum to 1.0001, not 1). When fewer are usable, the first `n` betas are divided by their sum so
//! that they sum to 1. With the defaults (kernel 11, five betas):
//!
//! | tile side | sizes per scale          | scales | weights                                  |
//! |-----------|--------------------------|--------|------------------------------------------|
//! | ≥ 176     | 176, 88, 44, 22, 11      | 5      | the betas as given                       |
//! | 128       | 128, 64, 32, 16, (8)     | 4      | (0.0448, 0.2856, 0.3001, 0.2363) / 0.8668 |
//! | 120       | 120, 60, 30, 15, (7)     | 4      | same as 128                              |
//! | 88 – 175  |                          | 4      | same as 128                              |
//! | 44 – 87   |                          | 3      | (0.0448, 0.2856, 0.3001) / 0.6305         |
//! | 22 – 43   |                          | 2      | (0.0448, 0.2856) / 0.3304                 |
//! | 11 – 21   |                          | 1      | (1.0): MS-SSIM = relu(SSIM)              |
//!
//! The five-scale threshold (176) is the one at which torchmetrics starts accepting the input,
//! so where torchmetrics gives a value this gives the same value. A tile smaller than the
//! window (`H` or `W` < `kernel_size`) has no usable scale and is rejected.
//!
//! # Notes
//!
//! - The Gaussian window has `kernel_size` taps. torchmetrics ignores `kernel_size` when the
//!   window is Gaussian and uses `2·⌊3.5σ + 0.5⌋ + 1` taps; both are 11 with the defaults.
//! - Where `relu` clips a term (`v ≤ 0`) the value is 0 and so is the gradient, as with torch
//!   autograd; the power is never evaluated at 0, so no infinity or NaN enters the backward
//!   pass on any backend.
//! - pytorch_msssim is a different definition (valid convolution for the SSIM map too, product
//!   per channel before the channel mean, zero-padded pooling of odd sizes) and gives slightly
//!   different numbers; only its `cs` terms coincide with torchmetrics'.

use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// torchmetrics' default MS-SSIM betas (Wang et al. 2003), finest scale first. They sum to 1.0001.
pub const DEFAULT_MS_SSIM_BETAS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// Parameters of SSIM (and of every scale of MS-SSIM). The defaults are torchmetrics'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsimConfig {
    /// Dynamic range `L` of the inputs (1.0 for images in [0, 1], 2.0 for [−1, 1]). It sets
    /// `C1 = (k1·L)²` and `C2 = (k2·L)²`; the inputs are not clamped. Default 1.0.
    pub data_range: f64,
    /// Number of taps of the Gaussian window (odd). Default 11.
    pub kernel_size: usize,
    /// Standard deviation of the Gaussian window, in pixels. Default 1.5.
    pub sigma: f64,
    /// Luminance stabiliser `K1`. Default 0.01.
    pub k1: f64,
    /// Contrast stabiliser `K2`. Default 0.03.
    pub k2: f64,
}

impl Default for SsimConfig {
    fn default() -> Self {
        Self { data_range: 1.0, kernel_size: 11, sigma: 1.5, k1: 0.01, k2: 0.03 }
    }
}

/// Parameters of MS-SSIM. The defaults are torchmetrics'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MsSsimConfig {
    /// Parameters shared by every scale.
    pub ssim: SsimConfig,
    /// One exponent per scale, finest first; their count is the maximum number of scales.
    /// Default [`DEFAULT_MS_SSIM_BETAS`].
    pub betas: Vec<f64>,
    /// Apply `relu` to each per-image `cs` / SSIM term before the weighted product
    /// (torchmetrics' `normalize="relu"`). Without it a negative term raised to a fractional
    /// power gives NaN, as in torchmetrics with `normalize=None`. Default `true`.
    pub normalize: bool,
}

impl Default for MsSsimConfig {
    fn default() -> Self {
        Self { ssim: SsimConfig::default(), betas: DEFAULT_MS_SSIM_BETAS.to_vec(), normalize: true }
    }
}

/// An invalid [`SsimConfig`] or [`MsSsimConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SsimConfigError {
    /// `data_range` is not finite and positive.
    #[error("SSIM data_range must be finite and > 0, got {0}")]
    DataRange(f64),
    /// `kernel_size` is even or zero.
    #[error("SSIM kernel_size must be odd (1, 3, 5, ...), got {0}")]
    KernelSize(usize),
    /// `sigma` is not finite and positive.
    #[error("SSIM sigma must be finite and > 0, got {0}")]
    Sigma(f64),
    /// `k1` or `k2` is negative or not finite.
    #[error("SSIM k1 and k2 must be finite and >= 0, got k1 = {k1}, k2 = {k2}")]
    Constants {
        /// The configured `k1`.
        k1: f64,
        /// The configured `k2`.
        k2: f64,
    },
    /// `betas` is empty, or has a negative or non-finite entry.
    #[error("MS-SSIM betas must be a non-empty list of finite values >= 0, got {0:?}")]
    Betas(Vec<f64>),
}

impl SsimConfig {
    /// Checks the parameters: `data_range` and `sigma` finite and > 0, `kernel_size` odd,
    /// `k1`, `k2` finite and ≥ 0.
    pub fn validate(&self) -> Result<(), SsimConfigError> {
        if !(self.data_range.is_finite() && self.data_range > 0.0) {
            return Err(SsimConfigError::DataRange(self.data_range));
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(SsimConfigError::KernelSize(self.kernel_size));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(SsimConfigError::Sigma(self.sigma));
        }
        let ok = |k: f64| k.is_finite() && k >= 0.0;
        if !(ok(self.k1) && ok(self.k2)) {
            return Err(SsimConfigError::Constants { k1: self.k1, k2: self.k2 });
        }
        Ok(())
    }

    /// The normalised 1-D Gaussian taps, as torchmetrics' `_gaussian`: offsets
    /// `(1−k)/2 ..= (k−1)/2`, `exp(−(t/σ)²/2)`, divided by their sum.
    pub fn gaussian_taps(&self) -> Vec<f64> {
        let k = self.kernel_size;
        let half = (k as f64 - 1.0) / 2.0;
        let taps: Vec<f64> = (0..k).map(|i| (i as f64 - half) / self.sigma).map(|t| (-0.5 * t * t).exp()).collect();
        let sum: f64 = taps.iter().sum();
        taps.into_iter().map(|t| t / sum).collect()
    }
}

impl MsSsimConfig {
    /// Checks the SSIM parameters and the betas (non-empty, finite, ≥ 0).
    pub fn validate(&self) -> Result<(), SsimConfigError> {
        self.ssim.validate()?;
        if self.betas.is_empty() || self.betas.iter().any(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(SsimConfigError::Betas(self.betas.clone()));
        }
        Ok(())
    }

    /// Number of scales used for an `height × width` input: how many of the first
    /// `betas.len()` scales have `⌊H/2^i⌋ ≥ kernel_size` and `⌊W/2^i⌋ ≥ kernel_size` (see the
    /// [module docs](self)). 0 when the input is smaller than the window.
    pub fn scales(&self, height: usize, width: usize) -> usize {
        let k = self.ssim.kernel_size;
        (0..self.betas.len()).take_while(|&i| (height >> i) >= k && (width >> i) >= k).count()
    }

    /// The exponents applied to an `height × width` input, finest scale first: the betas as
    /// given when every scale is usable, otherwise the usable ones divided by their sum. Empty
    /// when no scale is usable.
    ///
    /// # Panics
    ///
    /// If some but not all scales are usable and the usable betas sum to 0.
    pub fn weights(&self, height: usize, width: usize) -> Vec<f64> {
        let n = self.scales(height, width);
        let used = &self.betas[..n];
        if n == self.betas.len() || n == 0 {
            return used.to_vec();
        }
        let sum: f64 = used.iter().sum();
        assert!(sum > 0.0, "MS-SSIM: the betas of the {n} usable scales of a {height}x{width} input sum to 0");
        used.iter().map(|b| b / sum).collect()
    }
}

/// Per-image SSIM, shape `[B]`: the mean of the SSIM map over channels and pixels (see the
/// [module docs](self) for the definition, padding and reduction).
///
/// # Panics
///
/// If the config is invalid, the shapes differ, or `H` or `W` is not larger than
/// `(kernel_size − 1)/2` (the reflection padding needs it; torchmetrics has the same limit).
pub fn ssim_per_image<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &SsimConfig) -> Tensor<B, 1> {
    check_config(config.validate());
    check_shapes(&pred, &target);
    let window = Window::new(config, &pred);
    scale_term(pred, target, config, &window, Term::Ssim)
}

/// SSIM of a batch, shape `[1]`: the mean over the batch of [`ssim_per_image`]
/// (torchmetrics' `StructuralSimilarityIndexMeasure` with `reduction="elementwise_mean"`).
///
/// # Panics
///
/// As [`ssim_per_image`].
pub fn ssim<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &SsimConfig) -> Tensor<B, 1> {
    ssim_per_image(pred, target, config).mean()
}

/// The SSIM loss `1 − ssim`, shape `[1]`.
///
/// # Panics
///
/// As [`ssim_per_image`].
pub fn ssim_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &SsimConfig) -> Tensor<B, 1> {
    ssim(pred, target, config).neg().add_scalar(1.0)
}

/// Per-image MS-SSIM, shape `[B]`, with as many scales as fit the input (see the
/// [module docs](self) for the small-tile rule, the weights and the definition).
///
/// # Panics
///
/// If the config is invalid, the shapes differ, the input is smaller than the window
/// (`H` or `W` < `kernel_size`, so no scale is usable), or the usable betas sum to 0 while
/// some scales are dropped.
pub fn ms_ssim_per_image<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &MsSsimConfig) -> Tensor<B, 1> {
    check_config(config.validate());
    check_shapes(&pred, &target);
    let [batch, _, height, width] = pred.dims();
    let weights = config.weights(height, width);
    assert!(
        !weights.is_empty(),
        "MS-SSIM: a {height}x{width} input is smaller than the {k}x{k} window",
        k = config.ssim.kernel_size
    );
    let window = Window::new(&config.ssim, &pred);
    let n = weights.len();

    let mut x = pred;
    let mut y = target;
    let mut result: Option<Tensor<B, 1>> = None;
    for (i, &weight) in weights.iter().enumerate() {
        let last = i + 1 == n;
        // Contrast sensitivity at every scale but the coarsest, SSIM at the coarsest.
        let which = if last { Term::Ssim } else { Term::ContrastSensitivity };
        let term_value = scale_term(x.clone(), y.clone(), &config.ssim, &window, which);
        // relu(v)^0 = 1 in torch (0^0 = 1): such a scale contributes nothing.
        if weight != 0.0 {
            let term = weighted_term(term_value, weight, config.normalize);
            result = Some(match result {
                Some(acc) => acc * term,
                None => term,
            });
        }
        if !last {
            x = avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false);
            y = avg_pool2d(y, [2, 2], [2, 2], [0, 0], true, false);
        }
    }
    // Only reachable with all used weights 0 (all scales usable, all betas 0): product of ones.
    result.unwrap_or_else(|| {
        let device = x.device();
        Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f64; batch], [batch]), (&device, x.dtype()))
    })
}

/// MS-SSIM of a batch, shape `[1]`: the mean over the batch of [`ms_ssim_per_image`]
/// (torchmetrics' `MultiScaleStructuralSimilarityIndexMeasure` with
/// `reduction="elementwise_mean"` wherever torchmetrics accepts the input size).
///
/// # Panics
///
/// As [`ms_ssim_per_image`].
pub fn ms_ssim<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &MsSsimConfig) -> Tensor<B, 1> {
    ms_ssim_per_image(pred, target, config).mean()
}

/// The MS-SSIM loss `1 − ms_ssim`, shape `[1]`.
///
/// # Panics
///
/// As [`ms_ssim_per_image`].
pub fn ms_ssim_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, config: &MsSsimConfig) -> Tensor<B, 1> {
    ms_ssim(pred, target, config).neg().add_scalar(1.0)
}

fn check_config(result: Result<(), SsimConfigError>) {
    if let Err(err) = result {
        panic!("{err}");
    }
}

fn check_shapes<B: Backend>(pred: &Tensor<B, 4>, target: &Tensor<B, 4>) {
    assert_eq!(pred.dims(), target.dims(), "SSIM: pred and target shapes differ");
}

/// `relu(v)^w` with a zero (never NaN) gradient where `v ≤ 0`, or `v^w` without `normalize`.
fn weighted_term<B: Backend>(value: Tensor<B, 1>, weight: f64, normalize: bool) -> Tensor<B, 1> {
    if !normalize {
        return value.powf_scalar(weight);
    }
    let clipped = value.clone().lower_equal_elem(0.0);
    // Where v ≤ 0, take the power of a constant 1 (finite derivative) and mask the result to 0:
    // mask_fill's backward zeroes the gradient there, so the infinite slope of 0^w never appears.
    value.mask_fill(clipped.clone(), 1.0).powf_scalar(weight).mask_fill(clipped, 0.0)
}

/// Which per-image term of one scale [`scale_term`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// Mean of the whole (reflection-padded) SSIM map.
    Ssim,
    /// Mean of the contrast-sensitivity map cropped to the valid positions.
    ContrastSensitivity,
}

/// One per-image term, shape `[B]`, of one scale (see the module docs).
fn scale_term<B: Backend>(
    x: Tensor<B, 4>,
    y: Tensor<B, 4>,
    config: &SsimConfig,
    window: &Window<B>,
    term: Term,
) -> Tensor<B, 1> {
    let [batch, channels, height, width] = x.dims();
    let k = config.kernel_size;
    let pad = (k - 1) / 2;
    assert!(
        height > pad && width > pad,
        "SSIM: a {height}x{width} input is too small for a {k}x{k} window (needs H, W > {pad})"
    );
    let c1 = (config.k1 * config.data_range).powi(2);
    let c2 = (config.k2 * config.data_range).powi(2);

    // The five filtered quantities in one pass: [x, y, x², y², xy] stacked along the batch,
    // every (image, channel) plane as its own batch entry of a single-channel convolution.
    let stack = Tensor::cat(vec![x.clone(), y.clone(), x.clone().square(), y.clone().square(), x * y], 0);
    let planes = stack.reshape([5 * batch * channels, 1, height, width]);
    let filtered = window.filter(planes).reshape([5 * batch, channels, height, width]);
    let part = |i: usize| filtered.clone().narrow(0, i * batch, batch);
    let (mu_x, mu_y, e_xx, e_yy, e_xy) = (part(0), part(1), part(2), part(3), part(4));

    let mu_x_sq = mu_x.clone().square();
    let mu_y_sq = mu_y.clone().square();
    let mu_xy = mu_x * mu_y;
    let var_x = (e_xx - mu_x_sq.clone()).clamp_min(0.0);
    let var_y = (e_yy - mu_y_sq.clone()).clamp_min(0.0);
    let cov = e_xy - mu_xy.clone();

    let upper = cov.mul_scalar(2.0).add_scalar(c2);
    let lower = (var_x + var_y).add_scalar(c2);
    let cs_map = upper / lower;
    match term {
        Term::Ssim => {
            let luminance = mu_xy.mul_scalar(2.0).add_scalar(c1) / (mu_x_sq + mu_y_sq).add_scalar(c1);
            per_image_mean(luminance * cs_map)
        }
        Term::ContrastSensitivity => {
            assert!(height >= k && width >= k, "SSIM: contrast term of a {height}x{width} input with a {k}x{k} window");
            per_image_mean(cs_map.slice([0..batch, 0..channels, pad..height - pad, pad..width - pad]))
        }
    }
}

fn per_image_mean<B: Backend>(map: Tensor<B, 4>) -> Tensor<B, 1> {
    let [batch, channels, height, width] = map.dims();
    map.reshape([batch, channels * height * width]).mean_dim(1).reshape([batch])
}

/// The separable Gaussian window as two convolution kernels (`[1, 1, k, 1]` and `[1, 1, 1, k]`),
/// built once per call on the inputs' device and dtype.
struct Window<B: Backend> {
    vertical: Tensor<B, 4>,
    horizontal: Tensor<B, 4>,
    pad: usize,
}

impl<B: Backend> Window<B> {
    fn new(config: &SsimConfig, like: &Tensor<B, 4>) -> Self {
        let taps = config.gaussian_taps();
        let k = taps.len();
        let options = (&like.device(), like.dtype());
        Self {
            vertical: Tensor::from_data(TensorData::new(taps.clone(), [1, 1, k, 1]), options),
            horizontal: Tensor::from_data(TensorData::new(taps, [1, 1, 1, k]), options),
            pad: (k - 1) / 2,
        }
    }

    /// Filters `[N, 1, H, W]` planes with reflection padding; the output is `[N, 1, H, W]`.
    fn filter(&self, planes: Tensor<B, 4>) -> Tensor<B, 4> {
        let options = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let rows = conv2d(reflect_pad(planes, 2, self.pad), self.vertical.clone(), None, options());
        conv2d(reflect_pad(rows, 3, self.pad), self.horizontal.clone(), None, options())
    }
}

/// Reflection padding of `pad` on both sides of `dim`, without repeating the edge
/// (`[1, 2, 3, 4]` padded by 2 is `[3, 2, 1, 2, 3, 4, 3, 2]`). Needs `pad < size`.
fn reflect_pad<B: Backend>(x: Tensor<B, 4>, dim: usize, pad: usize) -> Tensor<B, 4> {
    if pad == 0 {
        return x;
    }
    let size = x.dims()[dim];
    let axis = [dim as isize];
    let before = x.clone().narrow(dim, 1, pad).flip(axis);
    let after = x.clone().narrow(dim, size - pad - 1, pad).flip(axis);
    Tensor::cat(vec![before, x, after], dim)
}
