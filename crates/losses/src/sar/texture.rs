//! Texture (local variance) loss.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::util::{box_mean, check_same_shape};

/// Side of the square window of [`local_variance`].
pub const TEXTURE_WINDOW: usize = 5;

/// Per-channel local variance over a 5×5 window ([`TEXTURE_WINDOW`]), `[B, C, H, W]`:
///
/// ```text
/// V(x) = max(E₅[x²] − E₅[x]², 0)
/// ```
///
/// where `E₅` is the mean over the 5×5 window centred on each pixel (average pooling,
/// stride 1). The image is extended by 2 pixels of **replicate** padding, so every window
/// holds 25 real-or-replicated pixels and a constant image has zero variance at the border
/// too. The clamp removes tiny negative values from rounding (its gradient is zero only
/// where the variance is ≤ 0, i.e. in flat windows).
///
/// Reference implementation (`Stage3Loss` texture term), corrected: it used zero padding with
/// `count_include_pad`, which makes every border window see fake zero pixels and report
/// spurious variance.
pub fn local_variance<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let mean = box_mean(x.clone(), TEXTURE_WINDOW);
    let mean_sq = box_mean(x.square(), TEXTURE_WINDOW);
    (mean_sq - mean.square()).clamp_min(0.0)
}

/// Texture loss, shape `[1]`: `mean_{b,c,h,w} |V(pred) − V(target)|` with `V` =
/// [`local_variance`] (5×5 window, replicate padding), per channel.
///
/// Reference: the local-variance texture term of the reference implementation's
/// `Stage3Loss`, corrected: L1 between prediction and target variances (the reference
/// compared batch-mean-normalised optical and SAR variances with an MSE) and replicate
/// padding.
///
/// # Panics
/// If `pred` and `target` differ in shape.
pub fn texture_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    check_same_shape("texture_loss", &pred, &target);
    (local_variance(pred) - local_variance(target)).abs().mean()
}
