//! The loop's optimizer: burn's AdamW with weight decay applied per parameter group.
//!
//! PyTorch users put biases and norm scales in a group without weight decay (nanoGPT's and
//! LM-TAD's `configure_optimizers`: "any parameter that is 2-D will be weight decayed,
//! otherwise no"). burn has no parameter groups, but its optimizer steps one tensor at a time
//! with the tensor's rank known at compile time, so [`GroupedAdamW`] routes each tensor to an
//! AdamW with or without decay by rank. The moments are burn's AdamW state unchanged, so
//! checkpoints of either setting have the same layout.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, LearningRate, SimpleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::config::OptimizerConfig;

/// `optimizer.weight_decay_params`: which parameters `optimizer.weight_decay` applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayParams {
    /// Every parameter (burn's and PyTorch's AdamW default).
    #[default]
    All,
    /// Only parameters of rank ≥ 2 (linear and convolution weights, embedding tables); biases
    /// and norm scales are not decayed (nanoGPT / LM-TAD).
    Matrices,
}

impl DecayParams {
    /// Whether a parameter of rank `rank` is decayed.
    pub fn decays(self, rank: usize) -> bool {
        match self {
            Self::All => true,
            Self::Matrices => rank >= 2,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Matrices => "matrices",
        }
    }
}

/// AdamW whose weight decay applies only to the parameters [`DecayParams`] selects.
#[derive(Clone)]
pub struct GroupedAdamW {
    decayed: AdamW,
    plain: AdamW,
    params: DecayParams,
}

impl GroupedAdamW {
    /// The optimizer `o` describes, with Adam's β1 set to `beta_1`.
    pub fn new(o: &OptimizerConfig, beta_1: f64) -> Self {
        let config = |weight_decay: f64| {
            AdamWConfig::new()
                .with_beta_1(beta_1 as f32)
                .with_beta_2(o.betas[1] as f32)
                .with_epsilon(o.eps as f32)
                .with_weight_decay(weight_decay as f32)
                .build()
        };
        Self { decayed: config(o.weight_decay), plain: config(0.0), params: o.weight_decay_params }
    }
}

impl<B: Backend> SimpleOptimizer<B> for GroupedAdamW {
    type State<const D: usize> = <AdamW as SimpleOptimizer<B>>::State<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let adam = if self.params.decays(D) { &self.decayed } else { &self.plain };
        SimpleOptimizer::<B>::step(adam, lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// The loop's optimizer for a model `M`.
pub type LoopOptimizer<B, M> = OptimizerAdaptor<GroupedAdamW, M, B>;

/// The configured optimizer with Adam's β1 set to `beta_1`.
pub fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(o: &OptimizerConfig, beta_1: f64) -> LoopOptimizer<B, M> {
    OptimizerAdaptor::from(GroupedAdamW::new(o, beta_1))
}

/// How many parameter tensors and scalars fall in each group: `(decayed tensors, decayed
/// parameters, undecayed tensors, undecayed parameters)` (LM-TAD prints the same four numbers).
pub fn decay_groups<B: Backend, M: burn::module::Module<B>>(model: &M, params: DecayParams) -> [usize; 4] {
    struct Count {
        params: DecayParams,
        n: [usize; 4],
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let numel = param.shape().num_elements();
            let i = if self.params.decays(D) { 0 } else { 2 };
            self.n[i] += 1;
            self.n[i + 1] += numel;
        }
    }
    let mut c = Count { params, n: [0; 4] };
    model.visit(&mut c);
    c.n
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    use super::*;

    type B = Flex;

    fn config(params: DecayParams) -> OptimizerConfig {
        OptimizerConfig { weight_decay: 0.1, weight_decay_params: params, ..OptimizerConfig::default() }
    }

    /// With a zero gradient Adam's update is zero, so what is left is the decay `p·(1 − lr·wd)`.
    #[test]
    fn matrices_decays_only_rank_two_and_more() {
        let device = Default::default();
        let lr = 0.5;
        for (params, vector_factor) in [(DecayParams::All, 1.0 - 0.05), (DecayParams::Matrices, 1.0)] {
            let opt = GroupedAdamW::new(&config(params), 0.9);
            let v = Tensor::<B, 1>::from_data(TensorData::from([2.0f32, -4.0]), &device);
            let m = Tensor::<B, 2>::from_data(TensorData::from([[2.0f32, -4.0]]), &device);
            let (v2, _) = SimpleOptimizer::<B>::step(&opt, lr, v.clone(), v.zeros_like(), None);
            let (m2, _) = SimpleOptimizer::<B>::step(&opt, lr, m.clone(), m.zeros_like(), None);
            let v2: Vec<f32> = v2.into_data().to_vec().unwrap();
            let m2: Vec<f32> = m2.into_data().to_vec().unwrap();
            assert_eq!(v2, vec![2.0 * vector_factor as f32, -4.0 * vector_factor as f32], "{params:?}");
            assert_eq!(m2, vec![2.0 * 0.95f32, -4.0 * 0.95f32], "{params:?}");
        }
    }

    /// Both groups take the same Adam step as burn's AdamW (the moments are not touched by the
    /// routing): compared against a plain AdamW without decay on a non-zero gradient.
    #[test]
    fn the_adam_update_is_burns() {
        let device = Default::default();
        let o = OptimizerConfig { weight_decay: 0.0, ..config(DecayParams::Matrices) };
        let grouped = GroupedAdamW::new(&o, 0.9);
        let plain = AdamWConfig::new().with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.0).build();
        let p = Tensor::<B, 2>::from_data(TensorData::from([[1.0f32, 2.0], [3.0, 4.0]]), &device);
        let g = Tensor::<B, 2>::from_data(TensorData::from([[0.5f32, -1.0], [0.25, 2.0]]), &device);
        let (a, sa) = SimpleOptimizer::<B>::step(&grouped, 0.01, p.clone(), g.clone(), None);
        let (b, sb) = SimpleOptimizer::<B>::step(&plain, 0.01, p.clone(), g.clone(), None);
        let (a, _) = SimpleOptimizer::<B>::step(&grouped, 0.01, a, g.clone(), sa);
        let (b, _) = SimpleOptimizer::<B>::step(&plain, 0.01, b, g, sb);
        assert_eq!(a.into_data().to_vec::<f32>().unwrap(), b.into_data().to_vec::<f32>().unwrap());
    }
}
