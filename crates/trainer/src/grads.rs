//! Whole-model gradient operations burn does not provide: global L2 norm, global-norm and
//! value clipping, and scaling. burn's own clipping is per tensor; users coming from PyTorch
//! expect `clip_grad_norm_` over all parameters together.

use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

enum Op {
    SumSquares,
    Scale(f64),
    Clamp(f64),
}

struct GradVisitor<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    op: Op,
    sum: Option<Tensor<B::InnerBackend, 1>>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.op {
            Op::SumSquares => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    let sq = g.powi_scalar(2).sum();
                    self.sum = Some(match self.sum.take() {
                        Some(s) => s + sq,
                        None => sq,
                    });
                }
            }
            Op::Scale(factor) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads.register(param.id, g.mul_scalar(factor));
                }
            }
            Op::Clamp(bound) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads.register(param.id, g.clamp(-bound, bound));
                }
            }
        }
    }
}

fn apply<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    op: Op,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut v = GradVisitor::<B> { grads, op, sum: None, _b: PhantomData };
    model.visit(&mut v);
    v.sum
}

/// Global L2 norm of all gradients of `model` (one device sync).
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams) -> f64 {
    match apply::<B, M>(model, grads, Op::SumSquares) {
        Some(s) => {
            let v: f64 = s.into_scalar().elem();
            v.sqrt()
        }
        None => 0.0,
    }
}

/// Multiplies every gradient by `factor`.
pub fn scale<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, factor: f64) {
    apply::<B, M>(model, grads, Op::Scale(factor));
}

/// Clamps every gradient element to `[-bound, bound]`.
pub fn clamp<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, bound: f64) {
    apply::<B, M>(model, grads, Op::Clamp(bound));
}

/// Clips to a global norm of at most `max_norm` (PyTorch `clip_grad_norm_` semantics:
/// scale by `max_norm / (norm + 1e-6)` when the norm exceeds `max_norm`).
/// Takes the norm measured before clipping and returns it unchanged.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    norm: f64,
    max_norm: f64,
) -> f64 {
    if norm.is_finite() && norm > max_norm {
        scale::<B, M>(model, grads, max_norm / (norm + 1e-6));
    }
    norm
}
