//! Training-step throughput on the CPU backend (burn flex): one forward, backward and AdamW
//! update per iteration. Run with `cargo xtask bench` (or `cargo bench -p trainer`).
//!
//! - `toy_mlp_step`: the toy stage's 2-layer MLP, batch 64.
//! - `transformer_step`: a small pre-norm transformer encoder (2 layers, d_model 128, 4 heads,
//!   d_ff 512) on batch 8 × 64 tokens, regressing a target sequence — the shape of work the
//!   SAR models do per token.

use burn::module::AutodiffModule;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use trainer::backend::CpuBackend;
use trainer::task::Task;
use trainer::toy::{ToyConfig, ToyTask};
use trainer::train::init_model;

type B = CpuBackend;

fn step<M: AutodiffModule<B>>(model: M, optim: &mut impl Optimizer<M, B>, loss: impl FnOnce(&M) -> Tensor<B, 1>) -> M {
    let l = loss(&model);
    let grads = GradientsParams::from_grads(l.backward(), &model);
    let model = optim.step(1e-3, model, grads);
    <B as Backend>::sync(&Default::default()).unwrap();
    model
}

fn toy_mlp(c: &mut Criterion) {
    let mut config = ToyConfig::default();
    config.data.train_samples = 64;
    let task = ToyTask::new(&config);
    let device = Default::default();
    let batch = <ToyTask as Task<B>>::train_batch(&task, &(0..64).collect::<Vec<_>>(), &device).expect("toy batch");
    let mut model = Some(init_model::<B, _>(&task, 1, &device));
    let mut optim = AdamWConfig::new().init();
    c.bench_function("toy_mlp_step", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            model = Some(step(m, &mut optim, |m| {
                <ToyTask as Task<B>>::train_step(&task, m, &batch).expect("toy step").loss
            }));
        })
    });
}

fn transformer(c: &mut Criterion) {
    let device = Default::default();
    <B as Backend>::seed(&device, 1);
    let mut model: Option<TransformerEncoder<B>> =
        Some(TransformerEncoderConfig::new(128, 512, 4, 2).with_norm_first(true).init(&device));
    let x = Tensor::<B, 3>::random([8, 64, 128], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<B, 3>::random([8, 64, 128], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = AdamWConfig::new().init();
    c.bench_function("transformer_step", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            model = Some(step(m, &mut optim, |m| {
                let out = m.forward(TransformerEncoderInput::new(x.clone()));
                (out - y.clone()).powi_scalar(2).mean()
            }));
        })
    });
}

fn config() -> Criterion {
    Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = toy_mlp, transformer }
criterion_main!(benches);
