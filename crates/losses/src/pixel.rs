//! Pixel-wise losses: L1 and MSE, plain and restricted to a valid mask.
//!
//! Every function reduces to a one-element tensor (shape `[1]`) so it can be weighted, summed
//! and back-propagated like any other loss. The masked variants take a float mask where `1`
//! marks a valid element and `0` an invalid one (for example pixels outside the swath, or
//! missing bands). The mask has the rank of the inputs and either their shape or a shape that
//! broadcasts to it (a `[B, 1, H, W]` mask for `[B, C, H, W]` images): a broadcast mask counts
//! once per channel it covers.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Mean absolute error over all elements: `L1 = (1/N) Σ_i |pred_i − target_i|`.
///
/// # Panics
///
/// If the shapes of `pred` and `target` differ.
pub fn l1<B: Backend, const D: usize>(pred: Tensor<B, D>, target: Tensor<B, D>) -> Tensor<B, 1> {
    (pred - target).abs().mean()
}

/// Mean squared error over all elements: `MSE = (1/N) Σ_i (pred_i − target_i)²`.
///
/// # Panics
///
/// If the shapes of `pred` and `target` differ.
pub fn mse<B: Backend, const D: usize>(pred: Tensor<B, D>, target: Tensor<B, D>) -> Tensor<B, 1> {
    (pred - target).square().mean()
}

/// Mean absolute error over the valid elements only:
/// `L1_m = Σ_i m_i |pred_i − target_i| / Σ_i m_i`, with `m` the mask broadcast to the shape of
/// `pred` (see the [module docs](self)).
///
/// When the mask has no valid element (`Σ m = 0`) the result is exactly `0` and its gradient is
/// zero everywhere: never NaN. A mask with values other than 0 and 1 acts as non-negative
/// per-element weights (a weighted mean).
///
/// # Panics
///
/// If the shapes of `pred` and `target` differ, or `mask` does not broadcast to them.
pub fn masked_l1<B: Backend, const D: usize>(
    pred: Tensor<B, D>,
    target: Tensor<B, D>,
    mask: Tensor<B, D>,
) -> Tensor<B, 1> {
    masked_mean((pred - target).abs(), mask)
}

/// Mean squared error over the valid elements only:
/// `MSE_m = Σ_i m_i (pred_i − target_i)² / Σ_i m_i`, with `m` the mask broadcast to the shape of
/// `pred` (see the [module docs](self)).
///
/// When the mask has no valid element (`Σ m = 0`) the result is exactly `0` and its gradient is
/// zero everywhere: never NaN. A mask with values other than 0 and 1 acts as non-negative
/// per-element weights (a weighted mean).
///
/// # Panics
///
/// If the shapes of `pred` and `target` differ, or `mask` does not broadcast to them.
pub fn masked_mse<B: Backend, const D: usize>(
    pred: Tensor<B, D>,
    target: Tensor<B, D>,
    mask: Tensor<B, D>,
) -> Tensor<B, 1> {
    masked_mean((pred - target).square(), mask)
}

/// `Σ m·v / Σ m`, with the denominator replaced by 1 when it is 0 (the numerator is then 0 too,
/// so the value is 0 and the gradient `m / 1 = 0`).
fn masked_mean<B: Backend, const D: usize>(values: Tensor<B, D>, mask: Tensor<B, D>) -> Tensor<B, 1> {
    let mask = mask.expand(values.dims());
    let count = mask.clone().sum();
    let denom = count.clone().mask_fill(count.lower_equal_elem(0.0), 1.0);
    (values * mask).sum() / denom
}
