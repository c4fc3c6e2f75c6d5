//! One training step (forward, backward, AdamW) of a small pre-norm transformer encoder
//! (2 layers, d_model 128, 4 heads, d_ff 512; batch 8 x 64 tokens) on burn's flex and ndarray
//! CPU backends: median of 20 timed steps after 5 warm-up steps.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::AutodiffModule;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

fn bench<B: AutodiffBackend>(name: &str) {
    let device = Default::default();
    B::seed(&device, 1);
    let mut model: TransformerEncoder<B> = TransformerEncoderConfig::new(128, 512, 4, 2).with_norm_first(true).init(&device);
    let x = Tensor::<B, 3>::random([8, 64, 128], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<B, 3>::random([8, 64, 128], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = AdamWConfig::new().init::<B, TransformerEncoder<B>>();
    let mut times = vec![];
    for i in 0..25 {
        let t = Instant::now();
        let out = model.forward(TransformerEncoderInput::new(x.clone()));
        let loss = (out - y.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        B::sync(&device).unwrap();
        if i >= 5 { times.push(t.elapsed().as_secs_f64() * 1e3); }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name}: transformer step median {:.1} ms (min {:.1}, max {:.1}) over {} steps", times[times.len()/2], times[0], times[times.len()-1], times.len());
    let _ = model.valid();
}

fn main() {
    bench::<Autodiff<Flex>>("flex");
    bench::<Autodiff<NdArray>>("ndarray");
}
