//! Stage-3 SAR-grounding loss terms and validation metrics: the SAR-consistency edge and
//! texture terms, the identity / cycle terms against the stage-2 image, the masked spectral L1
//! against truth, the SARedge score and the GAC score.
//!
//! The reference is Axion-Sat's `Stage3Loss`
//!
//! ```text
//! total = λ_sar·sar_consistency + γ_id·identity + β_cyc·cycle + λ_spec·spectral + λ_lp·lpips
//! sar_consistency = edge_weight·edge + texture_weight·texture
//! ```
//!
//! and its `metrics.py` GAC score. Each function below states its formula and, where there is
//! one, how it departs from the reference. The departures all follow from two rules:
//!
//! - **A sample's value depends on that sample only.** Every normalisation (max, mean, min–max,
//!   quantile) is taken per sample; the reference took them over the whole batch tensor, so one
//!   sample's loss changed with the other samples in the batch.
//! - **SAR may be in any units (dB in practice).** Every term is invariant to an offset and a
//!   positive scale of the SAR values (up to the small `ε` constants): Sobel magnitudes and
//!   local variances are normalised per sample, weights are computed from standardised or
//!   min–max-normalised backscatter. The reference's `sigmoid(backscatter)` assumed `[0, 1]` inputs.
//!
//! Sobel and local variance use replicate padding, so the image border creates no edges and no
//! texture. Tensors follow the channel conventions of [`crate::sar`]: optical `[B, 4, H, W]`
//! reflectance in the band order B2, B3, B4, B8; SAR `[B, C, H, W]` (VV, VH). The names here differ
//! from [`crate::sar`]'s `cycle_loss` / `identity_loss` / `sar_confidence`, which are different,
//! confidence-weighted designs used by stage 1.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::pixel::masked_l1;
use crate::sar::{
    OPTICAL_CHANNELS, Padding, local_variance, normalize_per_sample_max, optical_edge_map, sar_edge_map, sar_mean,
    sobel_magnitude, standardize_per_sample,
};

/// `ε` in the edge weighting `Σ(d·w) / (Σw + ε)` of [`sar_edge_term`].
pub const EDGE_WEIGHT_EPS: f64 = 1e-8;
/// `ε` in the per-sample min–max normalisation `(x − min) / (max − min + ε)`.
pub const MINMAX_EPS: f64 = 1e-8;
/// `ε` in the texture normalisation `t / (mean(t) + ε)` of [`sar_texture_term`].
pub const TEXTURE_EPS: f64 = 1e-8;
/// `ε` in the cosine of the SARedge score: `⟨a, b⟩ / (‖a‖·‖b‖ + ε)`.
pub const COSINE_EPS: f64 = 1e-8;
/// Quantile of the min–max-normalised backscatter above which the urban boost switches on.
pub const URBAN_QUANTILE: f64 = 0.7;
/// Steepness of the urban-boost sigmoid `sigmoid(10·(bsn − q70))`.
pub const URBAN_SHARPNESS: f64 = 10.0;
/// Steepness of the grounding confidence `sigmoid(10·(bsn − 0.1))`.
pub const CONFIDENCE_SHARPNESS: f64 = 10.0;
/// Threshold of the grounding confidence (the reference's `adaptive_threshold`).
pub const CONFIDENCE_THRESHOLD: f64 = 0.1;
/// Edge level above which a pixel is a strong edge (level 1) in [`edge_levels`].
pub const STRONG_EDGE: f64 = 0.3;
/// Edge level from which a pixel is a weak edge (level 0.5) in [`edge_levels`].
pub const WEAK_EDGE: f64 = 0.1;
/// GAC weight of the PSNR term (without LPIPS).
pub const GAC_PSNR_WEIGHT: f64 = 0.33;
/// GAC weight of the SSIM term (without LPIPS).
pub const GAC_SSIM_WEIGHT: f64 = 0.33;
/// GAC weight of the SARedge term (without LPIPS).
pub const GAC_SAR_EDGE_WEIGHT: f64 = 0.34;
/// GAC weight of each of the four terms when LPIPS is included.
pub const GAC_LPIPS_WEIGHT: f64 = 0.25;

// ---------------------------------------------------------------------------------------------
// shape checks (panics document programming errors: the stage checks tile shapes on load)

fn check_nonempty<B: Backend>(what: &str, name: &str, x: &Tensor<B, 4>) {
    let [b, c, h, w] = x.dims();
    assert!(b > 0 && c > 0 && h > 0 && w > 0, "{what}: {name} must have non-zero sizes, got [{b}, {c}, {h}, {w}]");
}

fn check_optical<B: Backend>(what: &str, name: &str, x: &Tensor<B, 4>) {
    check_nonempty(what, name, x);
    let c = x.dims()[1];
    assert!(c == OPTICAL_CHANNELS, "{what}: {name} must be [B, {OPTICAL_CHANNELS}, H, W], got {:?}", x.dims());
}

fn check_grid<B: Backend>(what: &str, a: &Tensor<B, 4>, b: &Tensor<B, 4>) {
    let ([ba, _, ha, wa], [bb, _, hb, wb]) = (a.dims(), b.dims());
    assert!(
        ba == bb && ha == hb && wa == wb,
        "{what}: batch / spatial size mismatch, {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
}

fn check_same<B: Backend>(what: &str, a: &Tensor<B, 4>, b: &Tensor<B, 4>) {
    assert!(a.dims() == b.dims(), "{what}: shape mismatch, {:?} vs {:?}", a.dims(), b.dims());
}

fn check_pair<B: Backend>(what: &str, optical: &Tensor<B, 4>, sar: &Tensor<B, 4>) {
    check_optical(what, "the optical image", optical);
    check_nonempty(what, "the SAR image", sar);
    check_grid(what, optical, sar);
}

// ---------------------------------------------------------------------------------------------
// per-sample statistics

/// Per-sample min–max normalisation of `x: [B, C, H, W]`: `(x − min_b) / (max_b − min_b + ε)`,
/// min and max over the `C·H·W` values of sample `b` only, `ε` = [`MINMAX_EPS`]. Lands in
/// `[0, 1)`; a constant sample maps to 0. Invariant to an offset and a positive scale.
///
/// Reference implementation, corrected: it took min and max over the whole batch tensor.
///
/// # Panics
/// If `x` has a zero size.
pub fn minmax_per_sample<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    check_nonempty("minmax_per_sample", "the input", &x);
    let b = x.dims()[0];
    let rows = x.clone().flatten::<2>(1, 3);
    let min = rows.clone().min_dim(1).reshape([b, 1, 1, 1]);
    let max = rows.max_dim(1).reshape([b, 1, 1, 1]);
    (x - min.clone()) / (max - min).add_scalar(MINMAX_EPS)
}

/// Per-sample `q`-quantile of `x: [B, C, H, W]` over its `N = C·H·W` values, `[B]`, with
/// numpy's default (`method="linear"`) interpolation: with the values sorted ascending
/// (`v_0 ≤ … ≤ v_{N−1}`), `p = q·(N − 1)`, `i = ⌊p⌋`, the result is `v_i + (v_{i+1} − v_i)·(p − i)`.
/// `q` is clamped to `[0, 1]` (NaN reads as 0).
///
/// The sort is burn's `sort`: on the device where the backend has one (Flex does); burn 0.21's
/// CubeCL backends (wgpu, CUDA) fall back to reading the values to the host, sorting there and
/// uploading the result, i.e. one device synchronisation per call. Only the urban boost
/// ([`edge_weights`] with `urban_weight > 1`) calls it.
///
/// # Panics
/// If `x` has a zero size.
pub fn quantile_per_sample<B: Backend>(x: Tensor<B, 4>, q: f64) -> Tensor<B, 1> {
    check_nonempty("quantile_per_sample", "the input", &x);
    let b = x.dims()[0];
    let sorted = x.flatten::<2>(1, 3).sort(1);
    let n = sorted.dims()[1];
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let pos = q * (n.saturating_sub(1)) as f64;
    // `pos` lies in [0, n − 1], so both indices are in range.
    let lo = (pos.floor() as usize).min(n.saturating_sub(1));
    let hi = (lo + 1).min(n.saturating_sub(1));
    let frac = pos - lo as f64;
    let a = sorted.clone().narrow(1, lo, 1);
    let c = sorted.narrow(1, hi, 1);
    (a.clone() + (c - a).mul_scalar(frac)).reshape([b])
}

// ---------------------------------------------------------------------------------------------
// SAR consistency

/// Per-pixel weights of [`sar_edge_term`], `[B, 1, H, W]`, detached (no gradient flows through them):
///
/// ```text
/// bs = mean_c(sar)                                   [B, 1, H, W]
/// w  = sigmoid(standardize_per_sample(bs))           if adaptive, else 1
/// if urban_weight > 1:
///     bsn = minmax_per_sample(bs)
///     m   = sigmoid(10·(bsn − quantile_b(bsn, 0.7)))
///     w  *= 1 + (urban_weight − 1)·m
/// ```
///
/// Bright backscatter relative to the rest of its own sample counts more; with the urban boost,
/// the brightest 30 % of each sample (built-up areas) count up to `urban_weight` times more.
/// `urban_weight ≤ 1` (or NaN) means no boost.
///
/// Reference implementation, corrected (B20): the reference used `w = sigmoid(bs)`, which
/// assumes `[0, 1]` inputs; for dB SAR (about −15) every weight is about 3e-7 and the largest
/// values dominate. Standardising per sample keeps the intent and makes the weight independent
/// of units. Min–max and quantile are per sample, not over the batch (B19). The reference's
/// optional DEM weighting is not implemented (the loop never passed a DEM).
///
/// # Panics
/// If `sar` has a zero size.
pub fn edge_weights<B: Backend>(sar: Tensor<B, 4>, adaptive: bool, urban_weight: f64) -> Tensor<B, 4> {
    check_nonempty("edge_weights", "the SAR image", &sar);
    let bs = sar_mean(sar.detach());
    let mut w = if adaptive { sigmoid(standardize_per_sample(bs.clone())) } else { bs.ones_like() };
    if urban_weight > 1.0 {
        let b = bs.dims()[0];
        let bsn = minmax_per_sample(bs);
        let q = quantile_per_sample(bsn.clone(), URBAN_QUANTILE).reshape([b, 1, 1, 1]);
        let m = sigmoid((bsn - q).mul_scalar(URBAN_SHARPNESS));
        w = w * m.mul_scalar(urban_weight - 1.0).add_scalar(1.0);
    }
    w.detach()
}

/// SAR-consistency edge term, shape `[1]`:
///
/// ```text
/// e_o = N( mean_c |∇opt_c| )        e_s = N( mean_c |∇sar_c| )        [B, 1, H, W]
/// d   = |e_o − e_s|
/// edge = Σ_{b,h,w} d·w / (Σ_{b,h,w} w + 1e-8)
/// ```
///
/// with `|∇x|` the per-channel Sobel magnitude `sqrt(gx² + gy² + 1e-8)` ([`sobel_magnitude`],
/// replicate padding), `N` the division by each sample's own maximum
/// ([`normalize_per_sample_max`]) and `w` = [`edge_weights`]`(sar, adaptive, urban_weight)`
/// (detached). 0 when the optical edges equal the SAR edges up to a positive scale; at most 1.
/// Both maps are magnitudes per channel averaged over channels, as in the reference (not the
/// magnitude of the channel mean). The gradient flows into `optical` (and into `sar` through
/// `e_s` if it requires one).
///
/// Reference implementation, corrected (B19): the reference normalised each map by the maximum
/// over the whole batch tensor and used zero padding, which makes the image border an edge.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` with non-zero sizes or `sar` is not on its batch and grid.
pub fn sar_edge_term<B: Backend>(
    optical: Tensor<B, 4>,
    sar: Tensor<B, 4>,
    adaptive: bool,
    urban_weight: f64,
) -> Tensor<B, 1> {
    check_pair("sar_edge_term", &optical, &sar);
    let e_o = normalize_per_sample_max(sobel_magnitude(optical, Padding::Replicate).mean_dim(1));
    let e_s = normalize_per_sample_max(sobel_magnitude(sar.clone(), Padding::Replicate).mean_dim(1));
    let w = edge_weights(sar, adaptive, urban_weight);
    let d = (e_o - e_s).abs();
    (d * w.clone()).sum() / w.sum().add_scalar(EDGE_WEIGHT_EPS)
}

/// Per-sample, mean-normalised texture map `mean_c V(x_c) / (mean_b(·) + 1e-8)`, `[B, 1, H, W]`.
fn texture_map<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let t = local_variance(x).mean_dim(1);
    let mean = t.clone().mean_dims(&[1, 2, 3]);
    t / mean.add_scalar(TEXTURE_EPS)
}

/// SAR-consistency texture term, shape `[1]`:
///
/// ```text
/// t_o = mean_c V(opt_c) / (mean_b(·) + 1e-8)      t_s = mean_c V(sar_c) / (mean_b(·) + 1e-8)
/// texture = mean_{b,h,w} (t_o − t_s)²
/// ```
///
/// with `V` = [`local_variance`] (5×5 window, replicate padding) and `mean_b` the mean over
/// sample `b`'s pixels only. Each map has mean ≈ 1 per sample, so the term compares where the
/// texture is, not how strong it is; it is 0 when the local variances agree up to a positive
/// scale per sample. A flat sample has a zero map.
///
/// Reference implementation, corrected (B19): the reference divided by the mean over the whole
/// batch and computed `V` with zero padding and `count_include_pad`, which adds spurious
/// variance along the border.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` with non-zero sizes or `sar` is not on its batch and grid.
pub fn sar_texture_term<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    check_pair("sar_texture_term", &optical, &sar);
    (texture_map(optical) - texture_map(sar)).square().mean()
}

/// Settings of the SAR-consistency loss (`sar_consistency = edge_weight·edge +
/// texture_weight·texture`). The defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SarConsistency {
    /// Weight of [`sar_edge_term`]. Finite, ≥ 0. Default 1.0.
    pub edge_weight: f64,
    /// Weight of [`sar_texture_term`]. Finite, ≥ 0. Default 0.5.
    pub texture_weight: f64,
    /// Weight edge differences by standardised backscatter ([`edge_weights`]); `false` gives
    /// every pixel weight 1 (before the urban boost). Default `true`.
    pub adaptive_weighting: bool,
    /// Urban boost factor of [`edge_weights`]: 1 disables it. Finite, ≥ 1. Default 1.0.
    pub urban_weight: f64,
}

impl Default for SarConsistency {
    fn default() -> Self {
        Self { edge_weight: 1.0, texture_weight: 0.5, adaptive_weighting: true, urban_weight: 1.0 }
    }
}

/// The SAR-consistency loss and its two components, each shape `[1]`.
#[derive(Debug, Clone)]
pub struct SarConsistencyTerms<B: Backend> {
    /// `edge_weight·edge + texture_weight·texture`.
    pub total: Tensor<B, 1>,
    /// [`sar_edge_term`] (unweighted).
    pub edge: Tensor<B, 1>,
    /// [`sar_texture_term`] (unweighted).
    pub texture: Tensor<B, 1>,
}

impl SarConsistency {
    /// Checks the settings; returns one `(key, message)` pair per problem (empty when valid). The
    /// key is the field name; the message names the offending value and what was expected.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [("edge_weight", self.edge_weight), ("texture_weight", self.texture_weight)] {
            if !(value.is_finite() && value >= 0.0) {
                problems.push((key.to_string(), format!("{key} = {value}: expected a finite number >= 0")));
            }
        }
        if !(self.urban_weight.is_finite() && self.urban_weight >= 1.0) {
            problems.push((
                "urban_weight".to_string(),
                format!(
                    "urban_weight = {}: expected a finite number >= 1 (1 disables the urban boost)",
                    self.urban_weight
                ),
            ));
        }
        problems
    }

    /// The edge and texture terms of `optical: [B, 4, H, W]` against `sar: [B, C, H, W]` and
    /// their weighted sum.
    ///
    /// # Panics
    /// If `optical` is not `[B, 4, H, W]` with non-zero sizes or `sar` is not on its batch and grid.
    pub fn terms<B: Backend>(&self, optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> SarConsistencyTerms<B> {
        let edge = sar_edge_term(optical.clone(), sar.clone(), self.adaptive_weighting, self.urban_weight);
        let texture = sar_texture_term(optical, sar);
        let total = edge.clone().mul_scalar(self.edge_weight) + texture.clone().mul_scalar(self.texture_weight);
        SarConsistencyTerms { total, edge, texture }
    }
}

// ---------------------------------------------------------------------------------------------
// identity, cycle, spectral

/// Grounding confidence in `(0, 1)`, `[B, 1, H, W]`, detached:
///
/// ```text
/// conf = sigmoid(10·(minmax_per_sample(mean_c sar) − 0.1))
/// ```
///
/// With `bsn` the position of a pixel in its sample's backscatter range: 0.27 at the darkest
/// pixel (calm water, shadow, the noise floor), 0.5 at a tenth of the range, above 0.95 from
/// 0.4 of the range up. Invariant to an offset and a positive scale of the SAR. The identity
/// term weights by `1 − conf`, so it binds hardest on the darkest pixels.
///
/// Reference implementation (`CycleIdentityLoss`), corrected (B19): min–max per sample instead
/// of over the batch.
///
/// # Panics
/// If `sar` has a zero size.
pub fn grounding_confidence<B: Backend>(sar: Tensor<B, 4>) -> Tensor<B, 4> {
    let bsn = minmax_per_sample(sar_mean(sar.detach()));
    sigmoid(bsn.sub_scalar(CONFIDENCE_THRESHOLD).mul_scalar(CONFIDENCE_SHARPNESS)).detach()
}

/// The `sar_confidence` metric, shape `[1]`: the mean of [`grounding_confidence`] over the batch.
///
/// # Panics
/// If `sar` has a zero size.
pub fn mean_confidence<B: Backend>(sar: Tensor<B, 4>) -> Tensor<B, 1> {
    grounding_confidence(sar).mean()
}

/// Identity term, shape `[1]`: `mean_{b,c,h,w} |opt_v3 − opt_v2| · (1 − conf)` with `conf` =
/// [`grounding_confidence`]`(sar)` broadcast over the channels. A plain mean, as in the
/// reference (not normalised by the weight sum): where the SAR is dark and uninformative the
/// refined image must keep the stage-2 image.
///
/// # Panics
/// If `opt_v3` and `opt_v2` differ in shape, either has a zero size, or `sar` is not on their
/// batch and grid.
pub fn identity_term<B: Backend>(opt_v3: Tensor<B, 4>, opt_v2: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    check_nonempty("identity_term", "opt_v3", &opt_v3);
    check_same("identity_term", &opt_v3, &opt_v2);
    check_nonempty("identity_term", "the SAR image", &sar);
    check_grid("identity_term", &opt_v3, &sar);
    let keep = grounding_confidence(sar).neg().add_scalar(1.0);
    ((opt_v3 - opt_v2).abs() * keep).mean()
}

/// Cycle term, shape `[1]`: `mean_{b,c,h,w} (opt_v3 − opt_v2)²`, the reference's `MSE(opt_v3,
/// opt_v2)`.
///
/// # Panics
/// If `opt_v3` and `opt_v2` differ in shape or have a zero size.
pub fn cycle_term<B: Backend>(opt_v3: Tensor<B, 4>, opt_v2: Tensor<B, 4>) -> Tensor<B, 1> {
    check_nonempty("cycle_term", "opt_v3", &opt_v3);
    check_same("cycle_term", &opt_v3, &opt_v2);
    (opt_v3 - opt_v2).square().mean()
}

/// Spectral term, shape `[1]`: the L1 against truth over the valid pixels,
/// `Σ |opt − truth|·m / (C·Σ m)` with the mask `valid: [B, 1, H, W]` (1 = valid) broadcast over
/// the `C` channels ([`masked_l1`]). An all-zero mask gives exactly 0 (and zero gradient).
///
/// Reference: `Spectral_L1` of `Stage3Loss`, which adds `1e-8` to the denominator instead.
///
/// # Panics
/// If `optical` and `truth` differ in shape or `valid` is not `[B, 1, H, W]` on their grid.
pub fn spectral_term<B: Backend>(optical: Tensor<B, 4>, truth: Tensor<B, 4>, valid: Tensor<B, 4>) -> Tensor<B, 1> {
    check_nonempty("spectral_term", "the optical image", &optical);
    check_same("spectral_term", &optical, &truth);
    check_grid("spectral_term", &optical, &valid);
    assert!(valid.dims()[1] == 1, "spectral_term: the valid mask must be [B, 1, H, W], got {:?}", valid.dims());
    masked_l1(optical, truth, valid)
}

// ---------------------------------------------------------------------------------------------
// metrics

/// Thresholded edge levels of a max-normalised edge map `g` (values in `[0, 1]`), same shape:
/// `1[g > 0.3] + 0.5·1[0.1 ≤ g ≤ 0.3]`, i.e. 1 for strong edges, 0.5 for weak ones, 0 elsewhere.
///
/// Reference: the edge map of `CombinedLoss`'s SAR-structure term (axion.md §3.3).
pub fn edge_levels<B: Backend>(g: Tensor<B, 4>) -> Tensor<B, 4> {
    // 0.5·1[g ≥ 0.1] + 0.5·1[g > 0.3] is the same map; `mask_fill` keeps the input's dtype.
    let zero = g.zeros_like();
    let weak = zero.clone().mask_fill(g.clone().greater_equal_elem(WEAK_EDGE), 0.5);
    let strong = zero.mask_fill(g.greater_elem(STRONG_EDGE), 0.5);
    weak + strong
}

/// The parts of the SARedge score, each `[B]`.
#[derive(Debug, Clone)]
pub struct SarEdgeScore<B: Backend> {
    /// Cosine similarity of the flattened edge-level maps.
    pub cosine: Tensor<B, 1>,
    /// F1 of the strong-edge masks (levels `> 0.5`).
    pub f1: Tensor<B, 1>,
    /// `(cosine + f1) / 2`.
    pub score: Tensor<B, 1>,
}

/// The SARedge score of two edge-level maps `[B, 1, H, W]` (from [`edge_levels`]), per sample:
///
/// ```text
/// cos = ⟨L_o, L_s⟩ / (‖L_o‖·‖L_s‖ + 1e-8)
/// F1  = 2·|A ∩ S| / (|A| + |S|)          A = {L_o > 0.5}, S = {L_s > 0.5}
/// score = (cos + F1) / 2
/// ```
///
/// Empty maps: when both maps (for the cosine) or both masks (for F1) are empty, the part is 1
/// (neither image has structure, so they agree); when exactly one is empty it is 0.
///
/// # Panics
/// If the maps differ in shape.
pub fn sar_edge_score_of_levels<B: Backend>(levels_opt: Tensor<B, 4>, levels_sar: Tensor<B, 4>) -> SarEdgeScore<B> {
    check_same("sar_edge_score_of_levels", &levels_opt, &levels_sar);
    let b = levels_opt.dims()[0];
    let (a, s) = (levels_opt.flatten::<2>(1, 3), levels_sar.flatten::<2>(1, 3));
    let dot = (a.clone() * s.clone()).sum_dim(1);
    let (na, ns) = (a.clone().square().sum_dim(1).sqrt(), s.clone().square().sum_dim(1).sqrt());
    let both_empty = (na.clone() + ns.clone()).lower_equal_elem(0.0);
    let cosine = (dot / (na * ns).add_scalar(COSINE_EPS)).mask_fill(both_empty, 1.0);

    let strong = |x: Tensor<B, 2>| x.zeros_like().mask_fill(x.greater_elem(0.5), 1.0);
    let (sa, ss) = (strong(a), strong(s));
    let tp = (sa.clone() * ss.clone()).sum_dim(1);
    let n = sa.sum_dim(1) + ss.sum_dim(1);
    let none = n.clone().lower_equal_elem(0.0);
    let f1 = (tp.mul_scalar(2.0) / n.mask_fill(none.clone(), 1.0)).mask_fill(none, 1.0);

    let score = (cosine.clone() + f1.clone()).mul_scalar(0.5);
    SarEdgeScore { cosine: cosine.reshape([b]), f1: f1.reshape([b]), score: score.reshape([b]) }
}

/// The SARedge score and its parts for `optical: [B, 4, H, W]` against `sar: [B, C, H, W]`:
/// [`sar_edge_score_of_levels`] of [`edge_levels`]`(optical_edge_map(optical))` and
/// [`edge_levels`]`(sar_edge_map(sar))`, i.e. the Sobel magnitudes (replicate padding) of the
/// luminance ([`crate::sar::luminance`], B4/B3/B2) and of the SAR channel mean, each divided
/// by its own sample's maximum before thresholding.
///
/// Departure from the reference (GAC's `SARedge`): the reference thresholded the raw
/// magnitudes at 0.1 / 0.3, which only means something for inputs in `[0, 1]`; raw dB
/// magnitudes are not, so each map is max-normalised per sample first. Because of that, the
/// maximum pixel of every map is a strong edge and the empty-map conventions are only reached
/// through [`sar_edge_score_of_levels`]. A constant image (all magnitudes at the Sobel `ε` floor)
/// normalises to about 1 everywhere, i.e. reads as edges everywhere. Luminance uses the right
/// channels and the padding is replicate (see [`crate::sar`]).
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` with non-zero sizes or `sar` is not on its batch and grid.
pub fn sar_edge_score_parts<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> SarEdgeScore<B> {
    check_pair("sar_edge_score", &optical, &sar);
    sar_edge_score_of_levels(edge_levels(optical_edge_map(optical)), edge_levels(sar_edge_map(sar)))
}

/// GAC's SARedge score per sample, `[B]` in `[0, 1]`, higher is better: the `score` of
/// [`sar_edge_score_parts`]. A sample's score does not depend on the rest of the batch.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` with non-zero sizes or `sar` is not on its batch and grid.
pub fn sar_edge_score_per_sample<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    sar_edge_score_parts(optical, sar).score
}

/// GAC score: `0.33·clamp((psnr − 20)/20, 0, 1) + 0.33·(ssim + 1)/2 + 0.34·clamp(sar_edge, 0, 1)`,
/// with PSNR in dB (data range 1), SSIM in `[−1, 1]` and `sar_edge` from
/// [`sar_edge_score_per_sample`]. An infinite PSNR counts as 1; a NaN input gives NaN.
///
/// Reference: `axs_lib/metrics.py` (axion.md §6.3).
pub fn gac_score(psnr_db: f64, ssim: f64, sar_edge: f64) -> f64 {
    GAC_PSNR_WEIGHT * psnr_part(psnr_db)
        + GAC_SSIM_WEIGHT * (ssim + 1.0) / 2.0
        + GAC_SAR_EDGE_WEIGHT * sar_edge.clamp(0.0, 1.0)
}

/// GAC score with LPIPS (the reference's `include_lpips=True`): `0.25·clamp((psnr − 20)/20, 0, 1)
/// + 0.25·(ssim + 1)/2 + 0.25·clamp(sar_edge, 0, 1) + 0.25·(1 − clamp(lpips, 0, 1))`.
pub fn gac_score_with_lpips(psnr_db: f64, ssim: f64, sar_edge: f64, lpips: f64) -> f64 {
    GAC_LPIPS_WEIGHT
        * (psnr_part(psnr_db) + (ssim + 1.0) / 2.0 + sar_edge.clamp(0.0, 1.0) + (1.0 - lpips.clamp(0.0, 1.0)))
}

fn psnr_part(psnr_db: f64) -> f64 {
    ((psnr_db - 20.0) / 20.0).clamp(0.0, 1.0)
}

/// Per-image PSNR in dB over the valid pixels, one value per sample:
/// `10·log10(data_range² / mse_b)` with `mse_b = Σ m·(pred − target)² / (C·Σ m)` over sample
/// `b`, the mask `valid: [B, 1, H, W]` (1 = valid) broadcast over the `C` channels.
///
/// `+∞` when a sample's masked MSE is 0 (a perfect prediction), NaN when the sample has no
/// valid pixel (PSNR is undefined there; callers averaging over samples should skip NaN). A
/// `data_range` ≤ 0 gives NaN.
///
/// # Panics
/// If `pred` and `target` differ in shape or `valid` is not `[B, 1, H, W]` on their grid.
pub fn psnr_per_image<B: Backend>(
    pred: Tensor<B, 4>,
    target: Tensor<B, 4>,
    valid: Tensor<B, 4>,
    data_range: f64,
) -> Vec<f64> {
    check_nonempty("psnr_per_image", "the prediction", &pred);
    check_same("psnr_per_image", &pred, &target);
    check_grid("psnr_per_image", &pred, &valid);
    assert!(valid.dims()[1] == 1, "psnr_per_image: the valid mask must be [B, 1, H, W], got {:?}", valid.dims());
    let [b, c, _, _] = pred.dims();
    let sq = ((pred - target).square() * valid.clone()).sum_dims(&[1, 2, 3]).reshape([b]);
    let n = valid.sum_dims(&[1, 2, 3]).reshape([b]);
    let to_vec = |t: Tensor<B, 1>| t.into_data().convert::<f64>().iter::<f64>().collect::<Vec<f64>>();
    let peak = if data_range > 0.0 { data_range * data_range } else { f64::NAN };
    to_vec(sq)
        .into_iter()
        .zip(to_vec(n))
        .map(|(s, n)| {
            if n <= 0.0 || peak.is_nan() {
                f64::NAN
            } else {
                let mse = s / (n * c as f64);
                if mse > 0.0 { 10.0 * (peak / mse).log10() } else { f64::INFINITY }
            }
        })
        .collect()
}
