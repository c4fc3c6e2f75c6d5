//! The EMA of the weights on the toy task: equal to an independent computation from the
//! weights after each step, evaluated at validation, and restored exactly by a resume.

use std::collections::BTreeMap;
use std::path::Path;

use checkpoints::CheckpointFile;
use trainer::Trainer;
use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::toy::{ToyConfig, ToyTask};

#[path = "../../../tests/support/mod.rs"]
mod support;

type B = CpuBackend;

fn config(dir: &Path, steps: u64) -> ToyConfig {
    let mut c = ToyConfig { seed: 21, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(steps);
    c.training.batch_size = 16;
    c.training.val_every = Some(5);
    c.optimizer.lr = 0.05;
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c.ema.enabled = true;
    c.ema.decay = 0.6;
    c
}

fn train(c: &ToyConfig) -> Vec<f32> {
    let summary = Trainer::new(c.loop_config()).run::<B, _>(&ToyTask::new(c), &Default::default()).unwrap();
    support::weights::<B, _>(&summary.model)
}

/// The exported EMA tensors, in the model's visiting order (hidden.weight, hidden.bias, ...).
fn exported_ema(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let file = CheckpointFile::read(&dir.join("checkpoints/model_ema.safetensors")).unwrap();
    file.tensors
        .iter()
        .map(|t| (t.name.clone(), t.data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect()
}

fn flatten(m: &BTreeMap<String, Vec<f32>>) -> Vec<f32> {
    ["hidden.weight", "hidden.bias", "output.weight", "output.bias"].iter().flat_map(|k| m[*k].clone()).collect()
}

#[test]
fn ema_equals_an_independent_average_of_the_weights_after_each_step() {
    // Weights after steps 1..5, each from its own run (training is deterministic).
    let per_step: Vec<Vec<f32>> = (1..=5)
        .map(|k| {
            let d = tempfile::tempdir().unwrap();
            train(&config(d.path(), k))
        })
        .collect();
    // e1 = w1 (first update copies); e_k = 0.6 e_{k-1} + 0.4 w_k.
    let mut expected: Vec<f64> = per_step[0].iter().map(|&v| v as f64).collect();
    for w in &per_step[1..] {
        for (e, &v) in expected.iter_mut().zip(w) {
            *e = 0.6 * *e + 0.4 * v as f64;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    train(&config(dir.path(), 5));
    let got = flatten(&exported_ema(dir.path()));
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!((*g as f64 - e).abs() <= 1e-6 * (1.0 + e.abs()), "{g} vs {e}");
    }
    // The average is not just the last weights.
    assert_ne!(got, per_step[4]);
    // And it is evaluated at validation next to the model.
    let v = &support::events(dir.path(), Some("validation"))[0]["metrics"];
    assert!(v["ema_val_loss"].as_f64().is_some() && v["val_loss"].as_f64().is_some(), "{v}");
}

#[test]
fn a_resume_restores_the_ema_exactly() {
    let straight = tempfile::tempdir().unwrap();
    train(&config(straight.path(), 12));

    let split = tempfile::tempdir().unwrap();
    train(&config(split.path(), 7));
    let mut c = config(split.path(), 12);
    c.resume.auto = true;
    train(&c);
    assert_eq!(exported_ema(split.path()), exported_ema(straight.path()), "bit-identical EMA after the resume");
}
