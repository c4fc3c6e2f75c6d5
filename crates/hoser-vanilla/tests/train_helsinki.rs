//! A short real training run of the `hoser-vanilla` binary on the bundled simulated Helsinki trips:
//! per-epoch checkpoints and the best export are written, `val_next_step_acc` is logged, and the
//! model beats a "most frequent successor" baseline fitted on the training split.

use std::path::Path;
use std::process::Command;

use hoser::baseline::most_frequent_successor_accuracy;
use hoser::data::{DatasetOptions, HoserData};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hoser/tests/fixtures/libcity/helsinki_test");

fn events(dir: &Path) -> Vec<serde_json::Value> {
    trainer::telemetry::read_events(dir).unwrap_or_else(|e| panic!("{e}")).events
}

#[test]
fn trains_on_helsinki_test_and_beats_the_successor_baseline() {
    let options = DatasetOptions { num_zones: 20, ..DatasetOptions::default() };
    let data = HoserData::load(Path::new(FIXTURE), &options, None).expect("fixture loads");
    let baseline = most_frequent_successor_accuracy(&data.train.samples, &data.val.samples);

    // Run where upstream users run it: no --output-dir, so the three roots land in the working directory.
    let tmp = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/hoser/helsinki_test.yaml");
    let status = Command::new(env!("CARGO_BIN_EXE_hoser-vanilla"))
        .args(["--config", config, "--data-dir", FIXTURE, "--seed", "1", "--epochs", "20", "--batch-size", "16"])
        .args(["--warmup-steps", "10", "--lr", "0.003"])
        .args(["--set", "model.road_id_emb_dim=16", "--set", "model.len_emb_dim=4", "--set", "model.type_emb_dim=4"])
        .args(["--set", "model.lon_emb_dim=4", "--set", "model.lat_emb_dim=4", "--set", "logging.progress=off"])
        .current_dir(tmp.path())
        .status()
        .expect("hoser-vanilla runs");
    assert!(status.success(), "hoser-vanilla failed: {status}");

    let out = tmp.path().join("save/helsinki_test/seed1");
    let log = tmp.path().join("log/helsinki_test/seed1");
    let tensorboard = tmp.path().join("tensorboard_log/helsinki_test/seed1");
    assert!(out.join("config.yaml").is_file(), "resolved config in save/{{dataset}}/seed{{seed}}");
    assert!(log.join("metrics.csv").is_file(), "metrics.csv in log/{{dataset}}/seed{{seed}}");
    assert!(!out.join("training.jsonl").exists(), "telemetry is not duplicated into save/");
    let tb_files = std::fs::read_dir(&tensorboard).expect("tensorboard_log/{dataset}/seed{seed}").count();
    assert!(tb_files > 0, "TensorBoard event files in tensorboard_log/");
    // Seed 002's layout: the epoch saves (named from 1, as upstream) and best beside config.yaml.
    for epoch in 1..=20 {
        assert!(out.join(format!("epoch_{epoch}.safetensors")).is_file(), "epoch_{epoch} missing");
    }
    assert!(!out.join("epoch_0.safetensors").exists() && !out.join("checkpoints").exists());
    assert!(out.join("best.safetensors").is_file());
    // The validation map of every epoch, at the size the code states.
    for epoch in 1..=20 {
        let png = std::fs::read(out.join(format!("validation/epoch_{epoch}.png"))).expect("validation map");
        let size =
            (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!(size, hoser_vanilla::map::MAP_SIZE, "epoch_{epoch}.png");
    }

    let events = events(&log);
    let accs: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "validation")
        .map(|e| e["metrics"]["val_next_step_acc"].as_f64().expect("val_next_step_acc logged"))
        .collect();
    assert_eq!(accs.len(), 20, "one validation per epoch");
    assert!(events.iter().filter(|e| e["event"] == "validation").all(|e| e["metrics"]["val_time_pred_mape"].is_f64()));
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "validation")
            .all(|e| e["metrics"]["val_successor_baseline_acc"].as_f64().is_some_and(|b| (b - baseline).abs() < 1e-12)),
        "the logged baseline is the one computed here"
    );
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

#[test]
fn a_missing_data_directory_is_one_clear_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_dataset");
    let out = Command::new(env!("CARGO_BIN_EXE_hoser-vanilla"))
        .args(["--epochs", "1", "--set", "logging.progress=off", "--data-dir"])
        .arg(&missing)
        .current_dir(tmp.path())
        .output()
        .expect("hoser-vanilla runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("loading the data"), "stderr: {stderr}");
    assert!(stderr.contains(&missing.join("roadmap.geo").display().to_string()), "names the file: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
}

#[test]
fn dataset_flag_reads_the_dataset_config_and_fills_the_three_upstream_roots() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let print = |dataset: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_hoser-vanilla"))
            .args(["--dataset", dataset, "--seed", "3", "--print-config"])
            .current_dir(root)
            .output()
            .expect("hoser-vanilla runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_yaml::from_slice::<serde_yaml::Value>(&out.stdout).expect("print-config is YAML")
    };
    let sf = print("San_Francisco");
    assert_eq!(sf["output_dir"].as_str(), Some("save/San_Francisco/seed3"));
    assert_eq!(sf["logging"]["log_dir"].as_str(), Some("log/San_Francisco/seed3"));
    assert_eq!(sf["logging"]["tensorboard_dir"].as_str(), Some("tensorboard_log/San_Francisco/seed3"));
    assert_eq!(sf["training"]["batch_size"].as_u64(), Some(256));
    assert_eq!(sf["training"]["epochs"].as_u64(), Some(25));
    assert_eq!(sf["optimizer"]["scheduler"]["warmup_ratio"].as_f64(), Some(0.05), "SF warms up over 5 %");
    let porto = print("Porto");
    assert_eq!(porto["optimizer"]["scheduler"]["warmup_ratio"].as_f64(), Some(0.1));
    assert_eq!(porto["data"]["data_dir"].as_str(), Some("data/Porto"));
}
