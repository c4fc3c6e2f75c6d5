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

fn swa_config(dir: &Path, steps: u64) -> ToyConfig {
    let mut c = config(dir, steps);
    c.ema.enabled = false;
    c.swa.enabled = true;
    c.swa.start = 3.0;
    c.swa.update_every = Some(1);
    c
}

fn exported(dir: &Path, name: &str) -> Vec<f32> {
    let file = CheckpointFile::read(&dir.join("checkpoints").join(name)).unwrap();
    let m: BTreeMap<String, Vec<f32>> = file
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect();
    flatten(&m)
}

#[test]
fn swa_equals_the_plain_mean_of_the_weights_from_its_start() {
    // Weights after steps 3..6 (each from its own run, without SWA), averaged equally.
    let per_step: Vec<Vec<f32>> = (3..=6)
        .map(|k| {
            let d = tempfile::tempdir().unwrap();
            let mut c = swa_config(d.path(), k);
            c.swa.enabled = false;
            train(&c)
        })
        .collect();
    let n = per_step.len() as f64;
    let expected: Vec<f64> =
        (0..per_step[0].len()).map(|i| per_step.iter().map(|w| w[i] as f64).sum::<f64>() / n).collect();
    let dir = tempfile::tempdir().unwrap();
    train(&swa_config(dir.path(), 6));
    let got = exported(dir.path(), "model_swa.safetensors");
    for (g, e) in got.iter().zip(&expected) {
        assert!((*g as f64 - e).abs() <= 1e-6 * (1.0 + e.abs()), "{g} vs {e}");
    }
    let v = &support::events(dir.path(), Some("validation"))[0]["metrics"];
    assert!(v["swa_val_loss"].as_f64().is_some(), "{v}");
}

#[test]
fn swalr_anneals_the_learning_rate_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = swa_config(dir.path(), 10);
    c.swa.swa_lr = Some(0.005);
    c.swa.anneal_steps = 4;
    train(&c);
    let lrs: Vec<f64> =
        support::events(dir.path(), Some("train_step")).iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    // Steps 1-2 use the schedule (0.05); from step 3 (index 2) lr = 0.005·α + 0.05·(1 − α),
    // α = (1 − cos(π·min(1, k/4)))/2 with k = 0, 1, 2, ...
    for (i, lr) in lrs.iter().enumerate() {
        let expected = if i < 2 {
            0.05
        } else {
            let t = ((i - 2) as f64 / 4.0).min(1.0);
            let a = (1.0 - (std::f64::consts::PI * t).cos()) / 2.0;
            0.005 * a + 0.05 * (1.0 - a)
        };
        assert!((lr - expected).abs() < 1e-12, "step {}: {lr} vs {expected}", i + 1);
    }
}

#[test]
fn a_resume_restores_the_swa_average_exactly() {
    // 64 samples in batches of 16: 4 steps per epoch; averaged at the end of each epoch from
    // step 5 on (steps 8, 12, 16, 20).
    let setup = |dir: &Path, steps: u64| {
        let mut c = swa_config(dir, steps);
        c.data.train_samples = 64;
        c.swa.start = 5.0;
        c.swa.update_every = None;
        c
    };
    let straight = tempfile::tempdir().unwrap();
    train(&setup(straight.path(), 20));
    let split = tempfile::tempdir().unwrap();
    train(&setup(split.path(), 10));
    let mut c = setup(split.path(), 20);
    c.resume.auto = true;
    train(&c);
    let a = exported(split.path(), "model_swa.safetensors");
    let b = exported(straight.path(), "model_swa.safetensors");
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "bit-identical SWA average after the resume");
}
