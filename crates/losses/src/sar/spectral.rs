//! Colour-ratio loss and spectral-index errors (NDVI, EVI, SAM) on B2/B3/B4/B8 tensors.
//!
//! These terms are physical only on reflectances (Sentinel-2 DN / 10000, non-negative); apply
//! them to de-standardised predictions and targets, never to standardised values, whose
//! denominators can cross zero.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::util::{check_channels, check_same_shape};
use super::{BLUE, GREEN, NIR, OPTICAL_CHANNELS, RED};

/// `ε` in the colour ratios `x / (y + ε)`.
pub const RATIO_EPS: f64 = 1e-6;
/// `ε` in the NDVI denominator `max(NIR + R, 0) + ε`.
pub const NDVI_EPS: f64 = 1e-6;
/// `ε` added to the EVI denominator `NIR + 6·R − 7.5·B + 1 + ε`.
pub const EVI_EPS: f64 = 1e-6;
/// Lower bound of the EVI denominator (see [`evi`]); keeps EVI finite and bounded,
/// `|EVI| ≤ 25·|NIR − R|`, where bright blue (cloud, haze, snow) drives the textbook
/// denominator to zero or below.
pub const EVI_MIN_DENOMINATOR: f64 = 0.1;
/// `ε` inside the square root of the RMSE, `sqrt(MSE + ε)`: the gradient stays finite (zero)
/// when prediction and target are identical; the value there is `1e-6` instead of 0.
pub const RMSE_EPS: f64 = 1e-12;
/// `ε` inside the spectral norms of [`sam`], `sqrt(Σ x² + ε)`.
pub const SAM_NORM_EPS: f64 = 1e-12;
/// [`sam`] clamps the cosine to `[−1 + SAM_CLAMP, 1 − SAM_CLAMP]` so the gradient of `acos`
/// stays finite; identical spectra therefore read `acos(1 − 1e-7) ≈ 4.5e-4` rad, not 0.
pub const SAM_CLAMP: f64 = 1e-7;

/// One channel of `[B, 4, H, W]` as `[B, 1, H, W]`.
fn band<B: Backend>(x: &Tensor<B, 4>, channel: usize) -> Tensor<B, 4> {
    x.clone().narrow(1, channel, 1)
}

/// Colour-ratio loss, shape `[1]`, on `[B, 4, H, W]` tensors in B2, B3, B4, B8 order:
///
/// ```text
/// L = ( mean|R/G(p) − R/G(t)| + mean|R/B(p) − R/B(t)| + mean|NIR/R(p) − NIR/R(t)| ) / 3
/// ```
///
/// with each ratio `x / (y + ε)`, `ε` = [`RATIO_EPS`] = 1e-6, and R = B4 (channel 2),
/// G = B3 (channel 1), B = B2 (channel 0), NIR = B8 (channel 3).
///
/// Reference implementation (`CombinedLoss.color_consistency`); its channel order
/// (B, G, R, NIR) was already right and is kept.
///
/// # Panics
/// If `pred` is not `[B, 4, H, W]` or `target` differs in shape.
pub fn colour_ratio_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    check_channels("colour_ratio_loss", &pred, OPTICAL_CHANNELS);
    check_same_shape("colour_ratio_loss", &pred, &target);
    let ratio = |x: &Tensor<B, 4>, num: usize, den: usize| band(x, num) / band(x, den).add_scalar(RATIO_EPS);
    let term = |num: usize, den: usize| (ratio(&pred, num, den) - ratio(&target, num, den)).abs().mean();
    (term(RED, GREEN) + term(RED, BLUE) + term(NIR, RED)).div_scalar(3.0)
}

/// NDVI of `[B, 4, H, W]` (B2, B3, B4, B8), `[B, 1, H, W]`:
///
/// ```text
/// NDVI = clamp( (NIR − R) / (max(NIR + R, 0) + ε), −1, 1 ),   ε = 1e-6
/// ```
///
/// with NIR = B8 (channel 3), R = B4 (channel 2). For non-negative reflectances this is the
/// textbook `(NIR − R) / (NIR + R + ε)`, which already lies in `[−1, 1]`; the `max` and the
/// clamp only act on negative inputs (no physical NDVI), keeping the value finite.
///
/// Reference: Rouse et al., "Monitoring vegetation systems in the Great Plains with ERTS"
/// (1974). Reference implementation, corrected: it read R and NIR from channels 0 and 3 as
/// if the order were R, G, B, NIR.
///
/// # Panics
/// If `x` is not `[B, 4, H, W]`.
pub fn ndvi<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    check_channels("ndvi", &x, OPTICAL_CHANNELS);
    let (nir, red) = (band(&x, NIR), band(&x, RED));
    let den = (nir.clone() + red.clone()).clamp_min(0.0).add_scalar(NDVI_EPS);
    ((nir - red) / den).clamp(-1.0, 1.0)
}

/// EVI of `[B, 4, H, W]` (B2, B3, B4, B8), `[B, 1, H, W]`:
///
/// ```text
/// EVI = 2.5 · (NIR − R) / max(NIR + 6·R − 7.5·B + 1 + ε, δ),   ε = 1e-6, δ = 0.1
/// ```
///
/// with NIR = B8 (channel 3), R = B4 (channel 2), B = B2 (channel 0), reflectances in
/// `[0, 1]` (the `+ 1` is the canopy background term `L` and assumes that scale). The
/// textbook denominator reaches zero and goes negative where blue dominates (cloud, haze,
/// snow), which makes EVI infinite or flips its sign; the floor `δ` =
/// [`EVI_MIN_DENOMINATOR`] keeps it positive, so EVI is finite and `|EVI| ≤ 25·|NIR − R|`.
/// Vegetated land has a denominator above 1, where the floor changes nothing. Where the floor
/// is active the gradient flows through the numerator only.
///
/// Reference: Huete et al., "Overview of the radiometric and biophysical performance of the
/// MODIS vegetation indices" (2002), with G = 2.5, C1 = 6, C2 = 7.5, L = 1. Reference
/// implementation, corrected: it read R, B, NIR from channels 0, 2, 3 as if the order were
/// R, G, B, NIR, and did not guard the denominator.
///
/// # Panics
/// If `x` is not `[B, 4, H, W]`.
pub fn evi<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    check_channels("evi", &x, OPTICAL_CHANNELS);
    let (nir, red, blue) = (band(&x, NIR), band(&x, RED), band(&x, BLUE));
    let den = (nir.clone() + red.clone().mul_scalar(6.0) - blue.mul_scalar(7.5))
        .add_scalar(1.0 + EVI_EPS)
        .clamp_min(EVI_MIN_DENOMINATOR);
    (nir - red).mul_scalar(2.5) / den
}

/// `sqrt(mean((a − b)²) + ε)` over all elements, `ε` = [`RMSE_EPS`].
fn rmse<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    (a - b).square().mean().add_scalar(RMSE_EPS).sqrt()
}

/// NDVI error, shape `[1]`: `sqrt(mean_{b,h,w}(NDVI(pred) − NDVI(target))² + 1e-12)` with
/// [`ndvi`] (B2, B3, B4, B8 order).
///
/// Reference implementation (`SpectralIndexLoss`), corrected channel order.
///
/// # Panics
/// If `pred` is not `[B, 4, H, W]` or `target` differs in shape.
pub fn ndvi_rmse<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    check_same_shape("ndvi_rmse", &pred, &target);
    rmse(ndvi(pred), ndvi(target))
}

/// EVI error, shape `[1]`: `sqrt(mean_{b,h,w}(EVI(pred) − EVI(target))² + 1e-12)` with
/// [`evi`] (B2, B3, B4, B8 order, floored denominator).
///
/// Reference implementation (`SpectralIndexLoss`), corrected channel order and denominator.
///
/// # Panics
/// If `pred` is not `[B, 4, H, W]` or `target` differs in shape.
pub fn evi_rmse<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    check_same_shape("evi_rmse", &pred, &target);
    rmse(evi(pred), evi(target))
}

/// Spectral angle mapper, shape `[1]`, in radians:
///
/// ```text
/// cos = Σ_c p_c·t_c / ( sqrt(Σ_c p_c² + ε) · sqrt(Σ_c t_c² + ε) ),   ε = 1e-12
/// SAM = mean_{b,h,w} acos( clamp(cos, −1 + 1e-7, 1 − 1e-7) )
/// ```
///
/// over the 4 channels of each pixel. The clamp keeps the gradient of `acos` finite; it also
/// puts a floor of about 4.5e-4 rad on the angle of identical spectra.
///
/// Reference: Kruse et al., "The spectral image processing system (SIPS)" (1993).
/// Reference implementation (`SpectralIndexLoss`), with a finite-gradient clamp.
///
/// # Panics
/// If `pred` and `target` differ in shape.
pub fn sam<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    check_same_shape("sam", &pred, &target);
    let dot = (pred.clone() * target.clone()).sum_dim(1);
    let norm = |x: Tensor<B, 4>| x.square().sum_dim(1).add_scalar(SAM_NORM_EPS).sqrt();
    let cos = dot / (norm(pred) * norm(target));
    cos.clamp(-1.0 + SAM_CLAMP, 1.0 - SAM_CLAMP).acos().mean()
}

/// Spectral-index loss, shape `[1]`: [`ndvi_rmse`] + [`evi_rmse`] + [`sam`].
///
/// Reference implementation (`SpectralIndexLoss`: RMSE(NDVI) + RMSE(EVI) + SAM), corrected:
/// B2, B3, B4, B8 channel order and a floored EVI denominator.
///
/// # Panics
/// If `pred` is not `[B, 4, H, W]` or `target` differs in shape.
pub fn spectral_index_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    ndvi_rmse(pred.clone(), target.clone()) + evi_rmse(pred.clone(), target.clone()) + sam(pred, target)
}
