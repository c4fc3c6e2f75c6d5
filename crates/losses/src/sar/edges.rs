//! Sobel edges, the differentiable SAR-structure loss and the SAR agreement metrics.

use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use super::util::{check_channels, check_same_grid, pad_replicate, per_sample_rows};
use super::{BLUE, GREEN, OPTICAL_CHANNELS, RED};

/// `ε` inside the Sobel magnitude `sqrt(gx² + gy² + ε)`. It keeps the magnitude and its
/// gradient finite where both gradients are zero (flat regions), at the cost of a floor of
/// `sqrt(ε) = 1e-4` on the magnitude.
pub const SOBEL_EPS: f64 = 1e-8;
/// `ε` in the per-sample max normalisation `m / (max(m) + ε)`.
pub const NORMALIZE_EPS: f64 = 1e-8;
/// `ε` in the cosine of [`sar_agreement_per_sample`]: `⟨a, b⟩ / (‖a‖·‖b‖ + ε)`.
pub const AGREEMENT_EPS: f64 = 1e-8;
/// ITU-R BT.601 luma weight of red (applied to [`RED`] = B4 = channel 2).
pub const LUMA_RED: f64 = 0.299;
/// ITU-R BT.601 luma weight of green (applied to [`GREEN`] = B3 = channel 1).
pub const LUMA_GREEN: f64 = 0.587;
/// ITU-R BT.601 luma weight of blue (applied to [`BLUE`] = B2 = channel 0).
pub const LUMA_BLUE: f64 = 0.114;

/// How [`sobel`] extends the image by one pixel on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// Repeat the border pixel (PyTorch `padding_mode="replicate"`). A constant image has
    /// zero gradient everywhere, border included. Used by every loss and metric here.
    #[default]
    Replicate,
    /// Pad with zeros (PyTorch `conv2d(padding=1)`). The border of a non-zero image shows
    /// spurious edges; this is what the reference metric did.
    Zero,
}

/// Per-channel Sobel gradients `(gx, gy)` of `x: [B, C, H, W]`, each `[B, C, H, W]`.
///
/// Cross-correlation (as `conv2d` computes it) with
///
/// ```text
/// Sx = [[-1, 0, 1],      Sy = [[-1, -2, -1],
///       [-2, 0, 2],            [ 0,  0,  0],
///       [-1, 0, 1]]            [ 1,  2,  1]]
/// ```
///
/// so `gx` is positive where the image brightens to the right (increasing column index) and
/// `gy` is positive where it brightens downwards (increasing row index). Channels are
/// processed independently (depthwise). The border is handled by `padding`.
///
/// Reference: I. Sobel and G. Feldman, "A 3×3 isotropic gradient operator for image
/// processing" (1968); the kernels are those of the reference implementation's `Stage3Loss`
/// and `CombinedLoss`.
pub fn sobel<B: Backend>(x: Tensor<B, 4>, padding: Padding) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, c, h, w] = x.dims();
    assert!(b > 0 && c > 0 && h > 0 && w > 0, "sobel: expected non-zero sizes, got [{b}, {c}, {h}, {w}]");
    let device = x.device();
    #[rustfmt::skip]
    let kernels: [f64; 18] = [
        -1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0, // Sx
        -1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0, // Sy
    ];
    let weight = Tensor::<B, 4>::from_data(TensorData::new(kernels.to_vec(), [2, 1, 3, 3]), (&device, x.dtype()));
    // Every channel becomes its own single-channel image; one conv gives both gradients.
    let planes = x.reshape([b * c, 1, h, w]);
    let grads = match padding {
        Padding::Replicate => {
            conv2d(pad_replicate(planes, 1), weight, None, ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
        }
        Padding::Zero => conv2d(planes, weight, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1)),
    };
    let gx = grads.clone().narrow(1, 0, 1).reshape([b, c, h, w]);
    let gy = grads.narrow(1, 1, 1).reshape([b, c, h, w]);
    (gx, gy)
}

/// Per-channel Sobel magnitude `sqrt(gx² + gy² + ε)` of `x: [B, C, H, W]`, with `(gx, gy)`
/// from [`sobel`] and `ε` = [`SOBEL_EPS`] = 1e-8 (it keeps the value and the gradient finite
/// where `gx = gy = 0`; flat regions read `1e-4`, not 0).
///
/// Reference: the magnitude of the reference implementation's `SARStructureLoss` /
/// `Stage3Loss` (same `ε`).
pub fn sobel_magnitude<B: Backend>(x: Tensor<B, 4>, padding: Padding) -> Tensor<B, 4> {
    let (gx, gy) = sobel(x, padding);
    (gx.square() + gy.square()).add_scalar(SOBEL_EPS).sqrt()
}

/// Luminance `Y = 0.299·R + 0.587·G + 0.114·B` of an optical `[B, 4, H, W]` tensor in the
/// B2, B3, B4, B8 order, i.e. `Y = 0.299·x[:, 2] + 0.587·x[:, 1] + 0.114·x[:, 0]`; NIR
/// (channel 3) is not used. Returns `[B, 1, H, W]`.
///
/// Reference: ITU-R BT.601 luma weights. Reference implementation, corrected: it applied
/// the weights to channels 0, 1, 2 (B2, B3, B4 = blue, green, red) as if they were R, G, B.
///
/// # Panics
/// If `optical` does not have 4 channels.
pub fn luminance<B: Backend>(optical: Tensor<B, 4>) -> Tensor<B, 4> {
    check_channels("luminance", &optical, OPTICAL_CHANNELS);
    let red = optical.clone().narrow(1, RED, 1);
    let green = optical.clone().narrow(1, GREEN, 1);
    let blue = optical.narrow(1, BLUE, 1);
    red.mul_scalar(LUMA_RED) + green.mul_scalar(LUMA_GREEN) + blue.mul_scalar(LUMA_BLUE)
}

/// Mean over the SAR channels (VV, VH) of `sar: [B, C, H, W]`, `[B, 1, H, W]`.
///
/// Reference: the reference implementation's `bs = mean_c(s1)`.
pub fn sar_mean<B: Backend>(sar: Tensor<B, 4>) -> Tensor<B, 4> {
    sar.mean_dim(1)
}

/// Divides every sample of `x: [B, C, H, W]` by its own maximum: `x_b / (max(x_b) + ε)`, the
/// maximum taken over `C·H·W` of sample `b` only, `ε` = [`NORMALIZE_EPS`] = 1e-8. Meant for
/// non-negative maps (Sobel magnitudes), which land in `[0, 1]`.
///
/// Reference implementation, corrected: it divided by the maximum over the whole batch
/// tensor, so one sample's map depended on the other samples in the batch.
pub fn normalize_per_sample_max<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, _, _, _] = x.dims();
    let max = per_sample_rows(x.clone()).max_dim(1).reshape([b, 1, 1, 1]);
    x / max.add_scalar(NORMALIZE_EPS)
}

/// Optical edge map `N(|∇Y|)`, `[B, 1, H, W]` in `[0, 1]`: the Sobel magnitude (replicate
/// padding) of the [`luminance`] `Y`, normalised by [`normalize_per_sample_max`].
pub fn optical_edge_map<B: Backend>(optical: Tensor<B, 4>) -> Tensor<B, 4> {
    normalize_per_sample_max(sobel_magnitude(luminance(optical), Padding::Replicate))
}

/// SAR edge map `N(|∇ mean_c(sar)|)`, `[B, 1, H, W]` in `[0, 1]`: the Sobel magnitude
/// (replicate padding) of [`sar_mean`], normalised by [`normalize_per_sample_max`]. Invariant
/// to an offset and a positive scale of the SAR values, so dB inputs need no rescaling.
pub fn sar_edge_map<B: Backend>(sar: Tensor<B, 4>) -> Tensor<B, 4> {
    normalize_per_sample_max(sobel_magnitude(sar_mean(sar), Padding::Replicate))
}

/// The two edge maps of a pair, after checking shapes.
fn edge_maps<B: Backend>(what: &str, optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    check_channels(what, &optical, OPTICAL_CHANNELS);
    check_same_grid(what, &optical, &sar);
    (optical_edge_map(optical), sar_edge_map(sar))
}

/// Per-sample SAR-edge disagreement, `[B]`: for each sample `b`,
///
/// ```text
/// d_b = mean_{h,w} | E_opt[b,h,w] − E_sar[b,h,w] |
/// ```
///
/// with `E_opt` = [`optical_edge_map`] (luminance of B4/B3/B2) and `E_sar` =
/// [`sar_edge_map`] (channel mean of VV/VH), both max-normalised per sample. 0 when the
/// optical luminance edges equal the SAR edges up to a positive scale (up to the effect of
/// [`SOBEL_EPS`]); at most 1. Lower is better. A sample's value does not depend on the rest of
/// the batch.
///
/// Reference implementation, corrected: the reference's `SARStructure` thresholded the edge
/// maps into {0, 0.5, 1} (no gradient) and weighted the wrong channels for luminance.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` or `sar` does not share its batch and spatial size.
pub fn sar_edge_agreement_per_sample<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    let [b, _, _, _] = optical.dims();
    let (e_opt, e_sar) = edge_maps("sar_edge_agreement", optical, sar);
    per_sample_rows(e_opt - e_sar).abs().mean_dim(1).reshape([b])
}

/// Stage-1 metric `sar_edge_agreement` (lower is better), shape `[1]`: the batch mean of
/// [`sar_edge_agreement_per_sample`]. Equal in value to [`sar_structure_loss`]; compute it on
/// the inner backend (or detach) when used as a metric.
pub fn sar_edge_agreement<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    sar_edge_agreement_per_sample(optical, sar).mean()
}

/// Differentiable SAR-structure loss, shape `[1]`:
///
/// ```text
/// L = mean_{b,h,w} | N(|∇Y(optical)|) − N(|∇ mean_c(sar)|) |
/// ```
///
/// with `Y = 0.299·B4 + 0.587·B3 + 0.114·B2` ([`luminance`]), `|∇·|` the Sobel magnitude
/// `sqrt(gx² + gy² + 1e-8)` with replicate padding, and `N` the per-sample max normalisation
/// `m / (max_b(m) + 1e-8)`. The gradient flows through both maps (through the optical side
/// when only the optical image is a prediction).
///
/// Reference implementation (`CombinedLoss.sar_structure`), corrected: no hard thresholds
/// (they gave zero gradient), luminance on the right channels, per-sample normalisation.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` or `sar` does not share its batch and spatial size.
pub fn sar_structure_loss<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    sar_edge_agreement_per_sample(optical, sar).mean()
}

/// Per-sample SAR agreement, `[B]`: the cosine similarity of the flattened edge maps,
///
/// ```text
/// a_b = ⟨E_opt[b], E_sar[b]⟩ / (‖E_opt[b]‖₂ · ‖E_sar[b]‖₂ + 1e-8)
/// ```
///
/// with `E_opt` = [`optical_edge_map`] and `E_sar` = [`sar_edge_map`] (replicate-padded Sobel
/// magnitudes, max-normalised per sample). In `(0, 1]` because the maps are positive; 1 for
/// identical structure. Higher is better. A sample's score is independent of the batch.
///
/// Reference implementation (`compute_sar_agreement`), corrected: luminance on B4/B3/B2
/// instead of channels 0/1/2, replicate instead of zero padding (no border edges), per-sample
/// instead of batch-global max normalisation.
///
/// # Panics
/// If `optical` is not `[B, 4, H, W]` or `sar` does not share its batch and spatial size.
pub fn sar_agreement_per_sample<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    let [b, _, _, _] = optical.dims();
    let (e_opt, e_sar) = edge_maps("sar_agreement", optical, sar);
    let (a, s) = (per_sample_rows(e_opt), per_sample_rows(e_sar));
    let dot = (a.clone() * s.clone()).sum_dim(1);
    let norms = a.square().sum_dim(1).sqrt() * s.square().sum_dim(1).sqrt();
    (dot / norms.add_scalar(AGREEMENT_EPS)).reshape([b])
}

/// Stage-3 metric `sar_agreement` (higher is better), shape `[1]`: the batch mean of
/// [`sar_agreement_per_sample`].
pub fn sar_agreement<B: Backend>(optical: Tensor<B, 4>, sar: Tensor<B, 4>) -> Tensor<B, 1> {
    sar_agreement_per_sample(optical, sar).mean()
}
