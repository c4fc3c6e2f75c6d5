//! Small tensor helpers shared by the SAR losses.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;

/// Replicate ("edge") padding of the two spatial dimensions of `[B, C, H, W]` by `pad` on
/// every side, built from `narrow`, `repeat_dim` and `cat` so it stays on the device, keeps
/// the input's dtype and is differentiable (border pixels receive the gradient of their copies).
pub(crate) fn pad_replicate<B: Backend>(x: Tensor<B, 4>, pad: usize) -> Tensor<B, 4> {
    if pad == 0 {
        return x;
    }
    let pad_dim = |x: Tensor<B, 4>, dim: usize| {
        let n = x.dims()[dim];
        let first = x.clone().narrow(dim, 0, 1).repeat_dim(dim, pad);
        let last = x.clone().narrow(dim, n - 1, 1).repeat_dim(dim, pad);
        Tensor::cat(vec![first, x, last], dim)
    };
    let x = pad_dim(x, 2);
    pad_dim(x, 3)
}

/// Mean over a `k × k` window centred on every pixel (stride 1, `k` odd), with replicate
/// padding so the output keeps the input's `H × W` and the border is not pulled towards zero.
pub(crate) fn box_mean<B: Backend>(x: Tensor<B, 4>, k: usize) -> Tensor<B, 4> {
    debug_assert!(k % 2 == 1, "box window must be odd");
    let padded = pad_replicate(x, k / 2);
    avg_pool2d(padded, [k, k], [1, 1], [0, 0], true, false)
}

/// Flattens `[B, C, H, W]` into `[B, C·H·W]`.
pub(crate) fn per_sample_rows<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    x.flatten::<2>(1, 3)
}

/// Panics with a clear message unless `x` is `[B, channels, H, W]` with non-zero sizes.
pub(crate) fn check_channels<B: Backend>(what: &str, x: &Tensor<B, 4>, channels: usize) {
    let [b, c, h, w] = x.dims();
    assert!(
        c == channels && b > 0 && h > 0 && w > 0,
        "{what}: expected a [B, {channels}, H, W] tensor with non-zero sizes, got [{b}, {c}, {h}, {w}]"
    );
}

/// Panics with a clear message unless `a` and `b` have the same shape.
pub(crate) fn check_same_shape<B: Backend>(what: &str, a: &Tensor<B, 4>, b: &Tensor<B, 4>) {
    assert!(a.dims() == b.dims(), "{what}: shape mismatch, {:?} vs {:?}", a.dims(), b.dims());
}

/// Panics unless `x` and `y` share batch size and spatial size (channels may differ).
pub(crate) fn check_same_grid<B: Backend>(what: &str, x: &Tensor<B, 4>, y: &Tensor<B, 4>) {
    let [bx, _, hx, wx] = x.dims();
    let [by, _, hy, wy] = y.dims();
    assert!(
        bx == by && hx == hy && wx == wy,
        "{what}: batch / spatial size mismatch, {:?} vs {:?}",
        x.dims(),
        y.dims()
    );
}
