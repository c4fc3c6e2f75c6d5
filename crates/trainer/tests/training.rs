//! The loop's arithmetic through the public API on the CPU backend, with the toy task:
//! learning, averaged accumulation, global-norm clipping, min_steps, telemetry agreement.

use std::path::Path;

#[path = "../../../tests/support/mod.rs"]
mod support;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde_json::Value;
use trainer::backend::CpuBackend;
use trainer::grads;
use trainer::tensorboard::read_scalars;
use trainer::toy::{Mlp, ToyConfig, ToyTask};
use trainer::train::init_model;
use trainer::{Decision, StopPolicy, StopReason, Task, Trainer, Validation};

type B = CpuBackend;

use support::toy_config;

fn train(config: &ToyConfig) -> trainer::RunSummary<Mlp<B>> {
    let task = ToyTask::new(config);
    Trainer::new(config.loop_config()).run::<B, _>(&task, &Default::default()).expect("training runs")
}

fn weights<M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
    support::weights::<B, M>(model)
}

fn events(dir: &Path, kind: &str) -> Vec<Value> {
    support::events(dir, Some(kind))
}

#[test]
fn the_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_config(dir.path());
    let summary = train(&config);
    assert_eq!(summary.reason, StopReason::Budget);
    assert_eq!(summary.state.step, 100);
    let losses: Vec<f64> = events(dir.path(), "train_step").iter().map(|e| e["loss"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 100);
    let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let tail: f64 = losses[90..].iter().sum::<f64>() / 10.0;
    assert!(tail < head / 3.0, "mean loss of the last 10 steps {tail} vs first 10 {head}");
    let vals: Vec<f64> =
        events(dir.path(), "validation").iter().map(|e| e["metrics"]["val_loss"].as_f64().unwrap()).collect();
    assert_eq!(vals.len(), 4, "validated at steps 25, 50, 75, 100");
    assert!(vals[3] < vals[0], "validation loss fell: {vals:?}");
}

fn one_step(dir: &Path, samples: usize, batch: usize, accumulation: usize) -> Vec<f32> {
    let mut c = toy_config(dir);
    c.data.train_samples = samples;
    c.training.max_steps = None;
    c.training.epochs = Some(1);
    c.training.batch_size = batch;
    c.training.gradient_accumulation_steps = accumulation;
    c.training.val_every = None;
    // Adam's first step is nearly invariant to the gradient's scale (m / sqrt(v) ≈ sign(g)),
    // which would hide summing instead of averaging. A large epsilon makes the update
    // proportional to the gradient, so the scale shows in the weights.
    c.optimizer.lr = 0.05;
    c.optimizer.eps = 10.0;
    let summary = train(&c);
    assert_eq!(summary.state.step, 1, "exactly one optimizer step");
    weights(&summary.model)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn four_micro_batches_equal_one_batch_of_four_times_the_size() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let accumulated = one_step(d1.path(), 32, 8, 4);
    let big = one_step(d2.path(), 32, 32, 1);
    let diff = max_abs_diff(&accumulated, &big);
    assert!(diff < 1e-5, "weights differ by {diff}");

    // A ragged window (8 + 8 + 8 + 6 samples) must weight the short micro-batch by its size.
    let (d3, d4) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ragged = one_step(d3.path(), 30, 8, 4);
    let big = one_step(d4.path(), 30, 30, 1);
    let diff = max_abs_diff(&ragged, &big);
    assert!(diff < 1e-5, "ragged window: weights differ by {diff}");

    // And summing instead of averaging would not pass: one micro-batch alone differs.
    let d5 = tempfile::tempdir().unwrap();
    let single = one_step(d5.path(), 8, 8, 1);
    assert!(max_abs_diff(&single, &accumulated) > 1e-4);
}

#[test]
fn clipping_bounds_the_global_gradient_norm() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_config(dir.path());
    let task = ToyTask::new(&config);
    let device = Default::default();
    // Through init_model: a lazily initialised model drawn outside the init lock would take
    // values from the global RNG while a concurrent test initialises its own.
    let model = init_model::<B, _>(&task, config.seed, &device);
    let batch = <ToyTask as Task<B>>::train_batch(&task, &(0..64).collect::<Vec<_>>(), &device).unwrap();
    // Scale the loss so the raw norm is far above the bound.
    let loss = <ToyTask as Task<B>>::train_step(&task, &model, &batch).unwrap().loss.mul_scalar(1000.0);
    let mut g = GradientsParams::from_grads(loss.backward(), &model);

    // Independent computation: sum of squares over every parameter's gradient, read element-wise.
    struct Norm<'a>(&'a GradientsParams, f64);
    impl ModuleVisitor<B> for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let g = self.0.get::<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, D>(p.id).unwrap();
            self.1 += g.into_data().to_vec::<f32>().unwrap().iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        }
    }
    let mut independent = Norm(&g, 0.0);
    model.visit(&mut independent);
    let raw = independent.1.sqrt();

    let norm = grads::global_norm::<B, _>(&model, &mut g);
    assert!((norm - raw).abs() / raw < 1e-5, "global_norm {norm} vs independent {raw}");
    assert!(raw > 1.0);
    grads::clip_global_norm::<B, _>(&model, &mut g, norm, 0.5);
    let clipped = grads::global_norm::<B, _>(&model, &mut g);
    assert!((clipped - 0.5).abs() < 1e-4, "clipped norm {clipped}");

    // Within the loop: the logged norm is the pre-clip norm, and clipping shrinks the update.
    // (A large epsilon keeps Adam's update proportional to the gradient; see the accumulation test.)
    let run = |clip: Option<f64>| {
        let d = tempfile::tempdir().unwrap();
        let mut c = toy_config(d.path());
        c.training.max_steps = Some(1);
        c.training.gradient_clip_norm = clip;
        c.optimizer.eps = 10.0;
        c.optimizer.weight_decay = 0.0;
        let w = weights(&train(&c).model);
        let logged = events(d.path(), "train_step")[0]["grad_norm"].as_f64().unwrap();
        (w, logged)
    };
    let initial = weights(&init_model::<B, _>(&ToyTask::new(&toy_config(dir.path())), 7, &Default::default()));
    let (free, free_norm) = run(None);
    let (clipped, clipped_norm) = run(Some(free_norm / 10.0));
    assert_eq!(free_norm, clipped_norm, "the logged norm is measured before clipping");
    let step = |w: &[f32]| w.iter().zip(&initial).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let ratio = step(&clipped) / step(&free);
    assert!(ratio < 0.2, "a 10x clip shrinks the first update (ratio {ratio})");
}

#[test]
fn value_clipping_clamps_each_element() {
    let dir = tempfile::tempdir().unwrap();
    let config = toy_config(dir.path());
    let task = ToyTask::new(&config);
    let device = Default::default();
    // Through init_model: a lazily initialised model drawn outside the init lock would take
    // values from the global RNG while a concurrent test initialises its own.
    let model = init_model::<B, _>(&task, config.seed, &device);
    let batch = <ToyTask as Task<B>>::train_batch(&task, &[0, 1, 2, 3], &device).unwrap();
    let loss = <ToyTask as Task<B>>::train_step(&task, &model, &batch).unwrap().loss.mul_scalar(1000.0);
    let mut g = GradientsParams::from_grads(loss.backward(), &model);
    grads::clamp::<B, _>(&model, &mut g, 0.01);
    let norm = grads::global_norm::<B, _>(&model, &mut g);
    let count = weights(&model).len() as f64;
    assert!(norm <= 0.01 * count.sqrt() + 1e-6);
    assert!(norm > 0.0);
}

struct AlwaysStop;
impl StopPolicy for AlwaysStop {
    fn name(&self) -> &str {
        "always"
    }
    fn after_validation(&mut self, v: &Validation<'_>) -> Decision {
        Decision { stop: Some(format!("asked at step {}", v.step)), ..Decision::default() }
    }
}

#[test]
fn stop_requests_wait_for_min_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.val_every = Some(10);
    c.training.min_steps = 35;
    let task = ToyTask::new(&c);
    let summary = Trainer::new(c.loop_config()).policy(AlwaysStop).run::<B, _>(&task, &Default::default()).unwrap();
    assert_eq!(summary.state.step, 40, "first validation at or after min_steps = 35");
    assert!(matches!(summary.reason, StopReason::Requested { .. }));
    let ignored: Vec<u64> = events(dir.path(), "stop_ignored").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(ignored, vec![10, 20, 30]);
}

#[test]
fn jsonl_csv_and_tensorboard_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.max_steps = Some(40);
    c.training.val_every = Some(20);
    train(&c);

    let steps = events(dir.path(), "train_step");
    let vals = events(dir.path(), "validation");
    let first = &steps[0];
    for key in ["step", "epoch", "loss", "lr", "grad_norm", "metrics", "elapsed", "step_time", "memory"] {
        assert!(!first[key].is_null(), "train_step lacks {key}: {first}");
    }

    let tb_dir = dir.path().join("tensorboard");
    let file = std::fs::read_dir(&tb_dir).unwrap().next().unwrap().unwrap().path();
    assert!(file.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
    let scalars = read_scalars(&file).unwrap();
    let tb_losses: Vec<(u64, f32)> =
        scalars.iter().filter(|s| s.tag == "train/loss").map(|s| (s.step, s.value)).collect();
    let jsonl_losses: Vec<(u64, f32)> =
        steps.iter().map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap() as f32)).collect();
    assert_eq!(tb_losses, jsonl_losses);

    let mut csv = csv::Reader::from_path(dir.path().join("metrics.csv")).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, ["step", "epoch", "elapsed", "lr", "train_loss", "val_loss", "val_mae"]);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), vals.len());
    for (row, val) in rows.iter().zip(&vals) {
        let step: u64 = row[0].parse().unwrap();
        assert_eq!(step, val["step"].as_u64().unwrap());
        let val_loss: f64 = row[5].parse().unwrap();
        assert_eq!(val_loss, val["metrics"]["val_loss"].as_f64().unwrap());
        let tb_val = scalars.iter().find(|s| s.tag == "val/val_loss" && s.step == step).unwrap();
        assert_eq!(tb_val.value, val_loss as f32);
        // train_loss in the csv is the mean of the jsonl losses since the previous validation.
        let window: Vec<f64> = steps
            .iter()
            .filter(|e| {
                let s = e["step"].as_u64().unwrap();
                s <= step && s > step - 20
            })
            .map(|e| e["loss"].as_f64().unwrap())
            .collect();
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        let train_loss: f64 = row[4].parse().unwrap();
        assert!((train_loss - mean).abs() < 1e-12, "{train_loss} vs {mean}");
    }
}

#[test]
fn the_model_is_evaluated_without_autodiff_after_training() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.max_steps = Some(5);
    let summary = train(&c);
    let task = ToyTask::new(&c);
    let metrics = <ToyTask as Task<B>>::validate(&task, &summary.model.valid(), &Default::default()).unwrap();
    let logged = events(dir.path(), "validation").last().unwrap()["metrics"]["val_loss"].as_f64().unwrap();
    assert_eq!(metrics["val_loss"], logged, "the final validation is of the returned weights");
}

/// TensorBoard's own reader (through `scripts/read_tensorboard.py`) must parse our event
/// files. Runs when a Python with the `tensorboard` package is available (`TENSORBOARD_PYTHON`, else `python3`); `.ci/run`
/// installs one. Skips with a message otherwise.
#[test]
fn tensorboard_python_reader_parses_event_files() {
    let python = std::env::var("TENSORBOARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import tensorboard"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: {python} cannot import tensorboard (set TENSORBOARD_PYTHON)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.max_steps = Some(10);
    c.training.val_every = Some(5);
    train(&c);
    let file = std::fs::read_dir(dir.path().join("tensorboard")).unwrap().next().unwrap().unwrap().path();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/read_tensorboard.py");
    let out = std::process::Command::new(&python).arg(script).arg(&file).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<(u64, String, f32)> = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<(u64, String, f32)> =
        read_scalars(&file).unwrap().into_iter().map(|s| (s.step, s.tag, s.value)).collect();
    assert_eq!(parsed, ours);
    let losses: Vec<f32> =
        events(dir.path(), "train_step").iter().map(|e| e["loss"].as_f64().unwrap() as f32).collect();
    let tb_losses: Vec<f32> = parsed.iter().filter(|(_, t, _)| t == "train/loss").map(|(_, _, v)| *v).collect();
    assert_eq!(tb_losses, losses);
    assert_eq!(parsed.iter().filter(|(_, t, _)| t == "val/val_loss").count(), 2);
}

#[test]
fn memory_is_logged_around_steps_and_validations() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = toy_config(dir.path());
    c.training.max_steps = Some(20);
    c.training.val_every = Some(10);
    c.logging.memory_every = Some(10);
    train(&c);
    let points: Vec<(u64, String)> = events(dir.path(), "memory")
        .iter()
        .map(|e| (e["step"].as_u64().unwrap(), e["point"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(u64, String)> = [10, 20]
        .iter()
        .flat_map(|&s| {
            ["Before Forward", "After Backward", "Before Validation", "After Validation"].map(|p| (s, p.to_string()))
        })
        .collect();
    assert_eq!(points, expected);
    let first = &events(dir.path(), "memory")[0];
    assert!(first["rss_bytes"].as_u64().unwrap() > 1 << 20);
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(first["total_bytes"].as_u64(), Some(kib * 1024), "MemTotal from /proc/meminfo");
    }
}

#[test]
fn validate_before_training_logs_a_baseline_that_is_not_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = toy_config(dir.path());
    config.debug.validate_before_training = true;
    config.training.max_steps = Some(50);
    let summary = train(&config);
    let vals = events(dir.path(), "validation");
    let steps: Vec<u64> = vals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 25, 50], "a baseline at step 0, then the usual validations");
    assert_eq!(vals[0]["is_best"], false, "the baseline never becomes the best model");
    assert!(vals[0]["metrics"]["val_loss"].as_f64().unwrap() > vals[2]["metrics"]["val_loss"].as_f64().unwrap());
    assert!(summary.state.best.is_some_and(|(step, _)| step > 0));

    // Off by default: no step-0 validation.
    let other = tempfile::tempdir().unwrap();
    let mut config = toy_config(other.path());
    config.training.max_steps = Some(25);
    train(&config);
    let steps: Vec<u64> = events(other.path(), "validation").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [25]);
}
