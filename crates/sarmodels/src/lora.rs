//! LoRA: a linear layer with an optional low-rank adapter (PEFT's `lora.Linear`).
//!
//! `y = x W + b + scaling · (dropout(x) Aᵀ) Bᵀ` with `A ∈ R^{r×in}` (kaiming-uniform with `a = √5`,
//! i.e. `U(−1/√in, 1/√in)`), `B ∈ R^{out×r}` zeros and `scaling = alpha / r`. A and B use PyTorch's
//! layouts; the base weight uses burn's `Linear` layout `[d_in, d_out]`.
//!
//! When the adapter is attached the base weight and bias are frozen, but the base product is an
//! ordinary differentiable operation: the gradient with respect to `x` flows through it to earlier
//! layers (only the base *parameters* receive none).

use burn::module::{Initializer, Module, ModuleMapper, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;

use crate::config::LoraConfig;

/// The low-rank pair of a [`LoraLinear`].
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// A, `[r, d_in]`: kaiming-uniform (`a = √5`) at initialisation.
    pub lora_a: Param<Tensor<B, 2>>,
    /// B, `[d_out, r]`: zeros at initialisation, so a fresh adapter leaves the output unchanged.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scaling: f64,
    /// Dropout on the adapter's input (active only on an autodiff backend).
    pub dropout: Dropout,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter for a `d_in → d_out` layer (trainable).
    pub fn new(d_in: usize, d_out: usize, rank: usize, scaling: f64, dropout: f64, device: &B::Device) -> Self {
        let k = 1.0 / (d_in as f64).sqrt();
        Self {
            lora_a: set_trainable(Initializer::Uniform { min: -k, max: k }.init([rank, d_in], device), true),
            lora_b: set_trainable(Initializer::Zeros.init([d_out, rank], device), true),
            scaling,
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// `scaling · (dropout(x) Aᵀ) Bᵀ`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = linear(self.dropout.forward(x), self.lora_a.val().transpose(), None);
        linear(h, self.lora_b.val().transpose(), None).mul_scalar(self.scaling)
    }

    /// `scaling · Aᵀ Bᵀ`, `[d_in, d_out]`: the adapter as a change of the base weight in burn's layout.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_a.val().transpose().matmul(self.lora_b.val().transpose()).mul_scalar(self.scaling)
    }
}

/// A linear layer (burn's `Linear` parameters and layout) with an optional LoRA adapter.
///
/// The parameters sit directly on this module (`weight`, `bias`, `adapter.lora_a`, `adapter.lora_b`),
/// so burn's parameter paths are `<name>.weight` / `<name>.bias` like a plain `Linear`'s.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// Base weight `[d_in, d_out]` (burn `Linear` layout); frozen when an adapter is attached.
    pub weight: Param<Tensor<B, 2>>,
    /// Base bias `[d_out]`; frozen when an adapter is attached.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The adapter, when LoRA targets this layer.
    pub adapter: Option<LoraAdapter<B>>,
    /// Full dotted module name (e.g. `encoder.3.attn.proj`); not a parameter, not persisted.
    #[module(skip)]
    pub name: String,
}

impl<B: Backend> LoraLinear<B> {
    /// A `d_in → d_out` layer named `name`, initialised like burn's `Linear` (`U(−1/√d_in, 1/√d_in)`).
    /// It gets an adapter iff `lora.enabled` and the lowercase name contains one of
    /// `lora.target_modules`; the base is then frozen.
    pub fn new(
        name: impl Into<String>,
        d_in: usize,
        d_out: usize,
        bias: bool,
        lora: &LoraConfig,
        device: &B::Device,
    ) -> Self {
        let name = name.into();
        let base: Linear<B> = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        let adapter =
            lora.targets(&name).then(|| LoraAdapter::new(d_in, d_out, lora.rank, lora.scaling(), lora.dropout, device));
        Self::from_linear(name, base, adapter)
    }

    /// Wraps an existing `Linear` with an optional adapter; the base is frozen iff the adapter is present
    /// (and trainable otherwise).
    pub fn from_linear(name: impl Into<String>, base: Linear<B>, adapter: Option<LoraAdapter<B>>) -> Self {
        let trainable = adapter.is_none();
        let weight = set_trainable(base.weight, trainable);
        let bias = base.bias.map(|b| set_trainable(b, trainable));
        Self { weight, bias, adapter, name: name.into() }
    }

    /// Whether an adapter is attached.
    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.shape().dims()
    }

    /// `x W + b`, plus the adapter's term when attached. `x`: `[..., d_in]` → `[..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.adapter {
            None => linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val())),
            Some(adapter) => {
                let base = linear(x.clone(), self.weight.val(), self.bias.as_ref().map(|b| b.val()));
                base + adapter.forward(x)
            }
        }
    }

    /// `x W + b` without the adapter's term (the frozen base alone), whether or not one is attached.
    pub fn forward_base<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }

    /// This layer without its adapter (the base alone; same parameters and trainability).
    pub fn without_adapter(&self) -> Self {
        Self { weight: self.weight.clone(), bias: self.bias.clone(), adapter: None, name: self.name.clone() }
    }

    /// A plain `Linear` computing the same function (dropout aside): `W + scaling · Aᵀ Bᵀ` and the bias.
    /// The merged weight keeps the base weight's parameter id and trainability and is detached from
    /// the adapter's graph.
    pub fn merge(self) -> Linear<B> {
        let Self { weight, bias, adapter, .. } = self;
        let weight = match adapter {
            None => weight,
            Some(adapter) => {
                let trainable = weight.is_require_grad();
                let merged = weight.map(|w| (w + adapter.delta_weight()).detach());
                set_trainable(merged, trainable)
            }
        };
        Linear { weight, bias }
    }

    /// This layer with the adapter folded into the base weight and removed (see [`LoraLinear::merge`]).
    pub fn merged(self) -> Self {
        let name = self.name.clone();
        let Linear { weight, bias } = self.merge();
        Self { weight, bias, adapter: None, name }
    }
}

/// Sets a parameter's trainability (autodiff `require_grad`) on the tensor and on the parameter's own
/// flag, which burn uses to restore trainability when a module goes through `valid()` / `train()`.
///
/// burn's `Param::set_require_grad` leaves that flag unchanged on a lazily initialised parameter (and on
/// a non-autodiff backend the tensor cannot record it), so a frozen parameter would become trainable
/// again after `from_inner`; re-creating the parameter lazily around its value sets both.
pub(crate) fn set_trainable<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    trainable: bool,
) -> Param<Tensor<B, D>> {
    let (id, tensor, _mapper) = param.consume();
    let device = tensor.device();
    let shape = tensor.shape();
    let tensor = tensor.detach();
    Param::uninitialized(
        id,
        move |_, require_grad| tensor.clone().set_require_grad(require_grad),
        device,
        trainable,
        shape,
    )
}

/// Sets every parameter of `module` trainable, except that with `frozen_base` only parameters inside a
/// LoRA adapter (a module path containing `adapter`) stay trainable (see [`set_trainable`]).
pub(crate) fn apply_trainability<B: Backend, M: Module<B>>(module: M, frozen_base: bool) -> M {
    let mut mapper = Trainability { frozen_base, path: Vec::new() };
    module.map(&mut mapper)
}

struct Trainability {
    frozen_base: bool,
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Trainability {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let in_adapter = self.path.iter().any(|p| p == "adapter");
        set_trainable(param, in_adapter || !self.frozen_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::tensor::Distribution;

    type B = Flex;
    type AB = Autodiff<Flex>;

    fn host<const D: usize, BK: Backend>(t: Tensor<BK, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    fn lora(rank: usize, alpha: f64) -> LoraConfig {
        LoraConfig { rank, alpha, ..LoraConfig::default() }
    }

    #[test]
    fn adapter_is_attached_by_name_and_initialised_like_peft() {
        let device = Default::default();
        let l = LoraLinear::<B>::new("encoder.0.attn.proj", 16, 6, true, &lora(4, 8.0), &device);
        let a = l.adapter.as_ref().unwrap();
        assert_eq!(a.lora_a.dims(), [4, 16]);
        assert_eq!(a.lora_b.dims(), [6, 4]);
        assert_eq!(a.scaling, 2.0);
        let k = 1.0 / 4.0; // 1/√16
        assert!(host(a.lora_a.val()).iter().all(|v| v.abs() <= k && *v != 0.0));
        assert!(host(a.lora_b.val()).iter().all(|v| *v == 0.0));
        assert_eq!(l.name, "encoder.0.attn.proj");
        assert_eq!(l.dims(), [16, 6]);
        let plain = LoraLinear::<B>::new("encoder.0.attn.qkv", 16, 48, true, &lora(4, 8.0), &device);
        assert!(!plain.has_adapter());
        let off = LoraConfig { enabled: false, ..LoraConfig::default() };
        assert!(!LoraLinear::<B>::new("encoder.0.attn.proj", 16, 6, true, &off, &device).has_adapter());
    }

    #[test]
    fn fresh_adapter_leaves_output_exactly_unchanged() {
        let device = Default::default();
        let l = LoraLinear::<B>::new("x.proj", 16, 6, true, &lora(4, 8.0), &device);
        let x = Tensor::<B, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
        let base = linear(x.clone(), l.weight.val(), l.bias.as_ref().map(|b| b.val()));
        assert_eq!(host(l.forward(x)), host(base));
    }

    /// `y = x W + b + s · x Aᵀ Bᵀ` computed on the host in f64, independently of the tensor code.
    #[test]
    fn forward_and_merge_match_the_formula() {
        let device = Default::default();
        let (din, dout, r) = (5, 3, 2);
        let mut l = LoraLinear::<B>::new("q_proj", din, dout, true, &lora(r, 6.0), &device);
        let adapter = l.adapter.as_mut().unwrap();
        adapter.lora_b = Param::from_tensor(Tensor::random([dout, r], Distribution::Normal(0.0, 1.0), &device));
        let x = Tensor::<B, 2>::random([4, din], Distribution::Normal(0.0, 1.0), &device);

        let (xs, w, bias) = (host(x.clone()), host(l.weight.val()), host(l.bias.as_ref().unwrap().val()));
        let (a, bm) = (host(adapter.lora_a.val()), host(adapter.lora_b.val()));
        let s = 3.0; // 6 / 2
        let mut expected = vec![0f64; 4 * dout];
        for n in 0..4 {
            for o in 0..dout {
                let mut y = bias[o] as f64;
                for i in 0..din {
                    y += xs[n * din + i] as f64 * w[i * dout + o] as f64;
                }
                for k in 0..r {
                    let xa: f64 = (0..din).map(|i| xs[n * din + i] as f64 * a[k * din + i] as f64).sum();
                    y += s * xa * bm[o * r + k] as f64;
                }
                expected[n * dout + o] = y;
            }
        }
        let got = host(l.forward(x.clone()));
        let merged = host(l.clone().merge().forward(x));
        for ((g, m), e) in got.iter().zip(&merged).zip(&expected) {
            assert!((*g as f64 - e).abs() < 1e-5, "{g} vs {e}");
            assert!((*m as f64 - e).abs() < 1e-5, "merged {m} vs {e}");
        }
        assert!(!l.merged().has_adapter());
    }

    #[test]
    fn frozen_base_passes_gradient_to_the_input() {
        let device = Default::default();
        let mut l = LoraLinear::<AB>::new("proj", 4, 3, true, &lora(2, 2.0), &device);
        let adapter = l.adapter.as_mut().unwrap();
        adapter.lora_b = Param::from_tensor(Tensor::random([3, 2], Distribution::Normal(0.0, 1.0), &device));
        let x = Tensor::<AB, 2>::random([2, 4], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = l.forward(x.clone()).sum().backward();
        assert!(l.weight.val().grad(&grads).is_none());
        assert!(l.bias.as_ref().unwrap().val().grad(&grads).is_none());
        let a = l.adapter.as_ref().unwrap();
        assert!(a.lora_a.val().grad(&grads).is_some());
        assert!(a.lora_b.val().grad(&grads).is_some());
        // d(sum y)/dx = row sums of (W + s Aᵀ Bᵀ): the frozen W is part of it.
        let gx = host(x.grad(&grads).unwrap());
        let w_eff = host(l.clone().merge().weight.val().inner());
        for n in 0..2 {
            for i in 0..4 {
                let e: f32 = (0..3).map(|o| w_eff[i * 3 + o]).sum();
                assert!((gx[n * 4 + i] - e).abs() < 1e-5);
            }
        }
    }

    /// Trainability survives `valid()` / `from_inner` and building on the plain backend then `train()`.
    #[test]
    fn trainability_survives_backend_round_trips() {
        let device = Default::default();
        let check = |l: &LoraLinear<AB>| {
            assert!(!l.weight.is_require_grad());
            assert!(!l.bias.as_ref().unwrap().is_require_grad());
            let a = l.adapter.as_ref().unwrap();
            assert!(a.lora_a.is_require_grad() && a.lora_b.is_require_grad());
        };
        let l = LoraLinear::<AB>::new("proj", 4, 3, true, &lora(2, 2.0), &device);
        check(&l);
        let round = LoraLinear::<AB>::from_inner(l.valid());
        check(&round);
        let inner = LoraLinear::<B>::new("proj", 4, 3, true, &lora(2, 2.0), &device);
        check(&LoraLinear::<AB>::from_inner(inner));
        let plain = LoraLinear::<B>::new("qkv", 4, 3, true, &lora(2, 2.0), &device);
        assert!(LoraLinear::<AB>::from_inner(plain).weight.is_require_grad());
    }

    #[test]
    fn clones_share_values() {
        let device = Default::default();
        let l = LoraLinear::<B>::new("proj", 4, 3, true, &lora(2, 2.0), &device);
        let c = l.clone();
        assert_eq!(host(l.weight.val()), host(c.weight.val()));
        let a = |l: &LoraLinear<B>| host(l.adapter.as_ref().unwrap().lora_a.val());
        assert_eq!(a(&l), a(&c));
    }
}
