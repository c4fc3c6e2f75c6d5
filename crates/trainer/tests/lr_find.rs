//! The LR range test on the toy task through the library API.

#[path = "../../../tests/support/mod.rs"]
mod support;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use trainer::Task;
use trainer::backend::CpuBackend;
use trainer::toy::{Mlp, ToyTask};
use trainer::train::init_model;

type B = CpuBackend;

use support::toy_config;

fn weights<M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
    support::weights::<B, M>(model)
}

#[test]
fn the_lr_range_test_leaves_the_model_and_optimizer_bit_identical() {
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::{AdamW, AdamWConfig, Optimizer};
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use schedulers::finder::FinderConfig;

    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.batch_size = 256;
    let cfg = c.loop_config();
    let task = ToyTask::new(&c);
    let device = Default::default();
    // A model and an optimizer with real moments: three ordinary steps first.
    let mut model = init_model::<B, _>(&task, c.seed, &device);
    let mut optim = AdamWConfig::new().init::<B, Mlp<B>>();
    for step in 0..3 {
        let batch = task.train_batch(&[step, step + 1, step + 2], &device).unwrap();
        let grads = task.train_step(&model, &batch).unwrap().loss.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(0.01, model, grads);
    }
    let bits = |m: &Mlp<B>| weights(m).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    // The optimizer's state per parameter, serialised, in a fixed order.
    let moments = |o: &OptimizerAdaptor<AdamW, Mlp<B>, B>| {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let mut all: Vec<(String, Vec<u8>)> = o
            .to_record()
            .into_iter()
            .map(|(id, state)| (id.to_string(), Recorder::<B>::record(&recorder, state, ()).unwrap()))
            .collect();
        all.sort();
        all
    };
    let (weights_before, moments_before) = (bits(&model), moments(&optim));
    assert_eq!(moments_before.len(), 4, "moments for both layers' weights and biases");

    let finder = FinderConfig { min_lr: 1e-6, max_lr: 1.0, num_steps: 40, ..FinderConfig::default() };
    let sweep = trainer::lr_find::range_test::<B, _, _>(&cfg, &task, &model, &optim, &device, &finder, None).unwrap();

    assert!(bits(&model) == weights_before, "the model is untouched");
    assert!(moments(&optim) == moments_before, "the optimizer state is untouched");
    // The sweep did train its copy: the loss moved, and the points follow the grid.
    let points = sweep.points();
    assert!(points.len() >= 30, "{} points", points.len());
    assert!(points.iter().enumerate().all(|(k, p)| p.lr == finder.lr_at(k)));
    let (first, best) = (points[0].loss, points.iter().map(|p| p.loss).fold(f64::INFINITY, f64::min));
    assert!(best < 0.8 * first, "the copy learned: first {first}, best {best}");
    let s = sweep.suggestion().expect("a suggestion");
    assert!((finder.min_lr..=finder.max_lr).contains(&s.lr));
}
