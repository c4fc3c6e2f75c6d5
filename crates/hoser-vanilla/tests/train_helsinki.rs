//! A short real training run of the `hoser-vanilla` binary on the bundled simulated Helsinki trips:
//! per-epoch checkpoints and the best export are written, `val_next_step_acc` is logged, and the
//! model beats a "most frequent successor" baseline fitted on the training split.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use hoser::data::{DatasetOptions, HoserData};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hoser/tests/fixtures/libcity/helsinki_test");

/// Validation accuracy of predicting, at every step, the successor seen most often after the current
/// road in the training split (ties and unseen roads: the lowest candidate index, like `argmax`).
fn most_frequent_successor_accuracy(data: &HoserData) -> f64 {
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    for s in &data.train.samples {
        for (i, (&road, &label)) in s.trace_road_id().iter().zip(s.road_label()).enumerate() {
            *counts.entry((road, s.candidates(i)[label as usize])).or_default() += 1;
        }
    }
    let (mut correct, mut total) = (0u64, 0u64);
    for s in &data.val.samples {
        for (i, (&road, &label)) in s.trace_road_id().iter().zip(s.road_label()).enumerate() {
            let cands = s.candidates(i);
            let mut best = 0;
            for (k, &c) in cands.iter().enumerate() {
                if counts.get(&(road, c)).copied().unwrap_or(0) > counts.get(&(road, cands[best])).copied().unwrap_or(0)
                {
                    best = k;
                }
            }
            correct += u64::from(best == label as usize);
            total += 1;
        }
    }
    correct as f64 / total as f64
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("training.jsonl")).expect("training.jsonl");
    text.lines().map(|l| serde_json::from_str(l).expect("jsonl line")).collect()
}

#[test]
fn trains_on_helsinki_test_and_beats_the_successor_baseline() {
    let options = DatasetOptions { num_zones: 20, ..DatasetOptions::default() };
    let data = HoserData::load(Path::new(FIXTURE), &options, None).expect("fixture loads");
    let baseline = most_frequent_successor_accuracy(&data);

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/hoser/helsinki_test.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_hoser-vanilla"))
        .args(["--config", config, "--data-dir", FIXTURE, "--seed", "1", "--epochs", "20", "--batch-size", "16"])
        .args(["--warmup-steps", "10", "--lr", "0.003"])
        .args(["--set", "model.road_id_emb_dim=16", "--set", "model.len_emb_dim=4", "--set", "model.type_emb_dim=4"])
        .args(["--set", "model.lon_emb_dim=4", "--set", "model.lat_emb_dim=4", "--set", "logging.progress=off"])
        .arg("--output-dir")
        .arg(&out)
        .status()
        .expect("hoser-vanilla runs");
    assert!(status.success(), "hoser-vanilla failed: {status}");

    let ckpt = out.join("checkpoints");
    for epoch in 0..20 {
        assert!(ckpt.join(format!("epoch_{epoch}.safetensors")).is_file(), "epoch_{epoch} missing");
    }
    assert!(ckpt.join("best.safetensors").is_file());

    let events = events(&out);
    let accs: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "validation")
        .map(|e| e["metrics"]["val_next_step_acc"].as_f64().expect("val_next_step_acc logged"))
        .collect();
    assert_eq!(accs.len(), 20, "one validation per epoch");
    assert!(events.iter().filter(|e| e["event"] == "validation").all(|e| e["metrics"]["val_time_pred_mape"].is_f64()));
    let losses: Vec<f64> =
        events.iter().filter(|e| e["event"] == "train_step").filter_map(|e| e["loss"].as_f64()).collect();
    let best = accs.iter().copied().fold(f64::MIN, f64::max);
    eprintln!(
        "baseline {baseline:.4}, val_next_step_acc per epoch {accs:?}, loss {:.4} -> {:.4}",
        losses[0],
        losses[losses.len() - 1]
    );
    assert!(losses[losses.len() - 1] < losses[0], "the loss fell");
    assert!(best > baseline, "best val_next_step_acc {best:.4} does not beat the successor baseline {baseline:.4}");
}
