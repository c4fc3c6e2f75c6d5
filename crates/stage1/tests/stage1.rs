//! End-to-end runs of the `stage1` binary on synthetic tiles (test-size model, CPU): every output
//! of seed 000 exists and agrees with the log, every documented config key is read, an injected
//! out-of-memory lowers the timesteps and training goes on, and a run killed mid-way and resumed
//! from its top-K checkpoint ends bit-identical to an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const LOWVR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/train/stage1.lowvr.yaml");

/// 4 synthetic 128 px scenes cut into 64 px tiles (train / val / test by scene), made once.
fn tiles() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let n = stage1::write_synthetic_tiles(dir.path(), 6, 128, 64, 3).expect("synthetic tiles");
        assert_eq!(n, 24);
        dir
    })
    .path()
}

/// The lowvr config at test size: 64 px tiles, batch 2, no accumulation, plain progress.
fn stage1(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stage1"));
    c.current_dir(ROOT)
        .args(["--config", LOWVR, "--data-dir"])
        .arg(tiles())
        .args(["--set", "model.size=test", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-3"])
        .args(["--warmup-steps", "2", "--set", "logging.progress=plain", "--set", "logging.tensorboard=false"])
        .args(["--set", "data.num_workers=1", "--set", "data.val_batch_size=2"])
        .arg("--output-dir")
        .arg(out);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("stage1 starts");
    assert!(out.status.success(), "stage1 failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn events(dir: &Path) -> Vec<Value> {
    trainer::telemetry::read_events(dir).unwrap_or_else(|e| panic!("{e}")).events
}

fn of<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["event"] == kind).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_run_writes_every_seed_output_and_stops_early() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = stage1(&out);
    // Patience 1 with an improvement threshold no change can meet: the second validation stops the run.
    c.args(["--steps", "40", "--val-every", "4", "--save-every", "6", "--keep-top-k", "2"]).args([
        "--early-stopping",
        "--early-stopping-patience",
        "1",
        "--early-stopping-min-delta",
        "10",
    ]);
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);

    for line in
        ["Total parameters: ", "Trainable parameters: ", "Initial timesteps: 10", "Top-2 checkpoint management enabled"]
    {
        assert!(stderr.contains(line), "console lacks {line:?}:\n{stderr}");
    }
    for line in ["[Step 4] Running validation...", "Val Loss: ", "  L1: ", ", MS-SSIM: ", "  SAR-Edge Agreement: "] {
        assert!(stderr.contains(line), "validation block lacks {line:?}:\n{stderr}");
    }

    let evs = events(&out);
    let vals = of(&evs, "validation");
    assert_eq!(vals.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![4, 8], "stopped at the 2nd");
    assert!(of(&evs, "stop_requested").iter().any(|e| e["policy"] == "early_stopping"));
    assert_eq!(of(&evs, "train_step").len(), 8);
    for s in of(&evs, "train_step") {
        for k in ["loss", "lr"] {
            assert!(s[k].is_f64(), "train_step lacks {k}: {s}");
        }
        for k in ["l1", "ms_ssim", "sar_structure", "denoiser"] {
            assert!(s["metrics"][k].is_f64(), "train_step lacks the term {k}: {s}");
        }
    }
    for v in &vals {
        let m = &v["metrics"];
        for k in ["val_loss", "sar_edge_agreement", "l1", "ms_ssim", "sar_structure", "psnr", "psnr_mean_image"] {
            assert!(m[k].is_f64(), "validation lacks {k}: {v}");
        }
        assert_eq!(m["sar_edge_agreement"], m["sar_structure"]);
        // val_loss is the weighted sum of the terms (lowvr weights: l1 1, ms_ssim 0.5, sar_structure 0.2).
        let expect = m["l1"].as_f64().unwrap()
            + 0.5 * m["ms_ssim"].as_f64().unwrap()
            + 0.2 * m["sar_structure"].as_f64().unwrap();
        assert!((m["val_loss"].as_f64().unwrap() - expect).abs() < 1e-9, "{m}");
    }

    // Checkpoints: step interval, top-K named by the logged metric, best model by val_loss at the root.
    let ckpt = out.join("checkpoints");
    assert!(ckpt.join("checkpoint_step_6.safetensors").is_file(), "{:?}", files(&ckpt));
    let top_k = files(&ckpt.join("top_k"));
    let expected: Vec<String> = vals
        .iter()
        .map(|v| {
            let s = v["metrics"]["sar_edge_agreement"].as_f64().unwrap();
            format!("best_sar_edge_agreement_{s:.6}_step_{}.safetensors", v["step"])
        })
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(top_k, expected_sorted, "two validations, keep 2: both kept under their logged score");
    assert!(out.join("best_model.safetensors").is_file());
    assert!(out.join(stage1::BASE_EXPORT).is_file(), "merged generator export");

    // The validation grid: 4 rows of 64-px tiles upscaled 4× to 256 px, three columns, a header
    // row and a label margin.
    let png = std::fs::read(out.join("validation/step_4.png")).expect("validation grid");
    assert_eq!(&png[1..4], b"PNG");
    let (w, h) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((w as usize, h as usize), stage1::grid::size(4, 64, 64));
    assert_eq!((w, h), (200 + 3 * 256 + 2 * 4, 44 + 4 * 256 + 3 * 4));
}

#[test]
fn an_injected_out_of_memory_lowers_the_timesteps_and_training_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = stage1(&out);
    c.args(["--steps", "8", "--val-every", "4", "--timesteps", "7"]).args(["--set", "oom.inject_at_steps=[3, 6]"]);
    run(c);
    let evs = events(&out);
    let ooms = of(&evs, "oom");
    assert_eq!(ooms.len(), 2, "{ooms:?}");
    assert_eq!(ooms[0]["action"], "timesteps 7 -> 5");
    assert_eq!(ooms[1]["action"], "timesteps 5 -> 4", "reduction 2, floor min_timesteps 4");
    assert_eq!(of(&evs, "train_step").len(), 8, "every step trained");
    let t: Vec<f64> = of(&evs, "validation").iter().map(|v| v["metrics"]["timesteps"].as_f64().unwrap()).collect();
    assert_eq!(t, vec![5.0, 4.0], "validation samples with the lowered step count");
}

/// Tensors of a safetensors file by name (metadata differs between runs).
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__" && !k.starts_with("__trainyard__"))
        .map(|(k, v)| {
            let (a, b) =
                (v["data_offsets"][0].as_u64().unwrap() as usize, v["data_offsets"][1].as_u64().unwrap() as usize);
            (k.clone(), bytes[8 + n + a..8 + n + b].to_vec())
        })
        .collect()
}

fn losses(evs: &[Value]) -> BTreeMap<u64, f64> {
    of(evs, "train_step").iter().map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap())).collect()
}

#[test]
fn a_killed_run_resumed_from_its_top_k_checkpoint_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--steps", "12", "--val-every", "4", "--keep-top-k", "3", "--set", "model.lora.enabled=true"];
    let whole = tmp.path().join("whole");
    let mut c = stage1(&whole);
    c.args(args);
    run(c);

    // Kill -9 once step 10 is logged (after the step-8 validation saved its top-K checkpoint).
    let killed = tmp.path().join("killed");
    let mut c = stage1(&killed);
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    loop {
        let done = trainer::telemetry::read_events(&killed)
            .is_ok_and(|log| log.events.iter().any(|e| e["event"] == "train_step" && e["step"] == 10));
        if done || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "the run never reached step 10");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let top_k: Vec<PathBuf> =
        std::fs::read_dir(killed.join("checkpoints/top_k")).unwrap().map(|e| e.unwrap().path()).collect();
    let from = top_k
        .iter()
        .find(|p| p.to_string_lossy().ends_with("_step_8.safetensors"))
        .expect("top-K checkpoint of step 8")
        .clone();

    let mut c = stage1(&killed);
    c.args(args).arg("--resume").arg(&from);
    run(c);

    let (a, b) = (losses(&events(&whole)), losses(&events(&killed)));
    assert_eq!(a.len(), 12);
    for step in 9..=12 {
        assert_eq!(a[&step].to_bits(), b[&step].to_bits(), "step {step}: {} vs {}", a[&step], b[&step]);
    }
    let (ta, tb) = (
        tensors(&whole.join("checkpoints/checkpoint_latest.safetensors")),
        tensors(&killed.join("checkpoints/checkpoint_latest.safetensors")),
    );
    assert!(!ta.is_empty());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(*v == tb[k], "tensor {k} differs after the resume");
    }
}

/// Changes one key of configs/train/stage1.lowvr.yaml (with extra flags where another key must
/// follow) and expects the resolved config to change, or the value to be rejected by name.
const CHANGES: &[(&str, &str, &[&str])] = &[
    ("model.size", "test", &[]),
    ("model.timesteps", "8", &[]),
    ("model.standardize", "false", &[]),
    ("model.pretrained", "@file", &[]),
    ("model.lora.enabled", "false", &[]),
    ("model.lora.rank", "4", &[]),
    ("model.lora.alpha", "8", &[]),
    ("model.lora.dropout", "0.1", &[]),
    ("model.lora.target_modules", "[proj]", &[]),
    ("data.data_dir", "@dir", &[]),
    ("data.val_split", "0.2", &[]),
    ("data.tile_size", "64", &[]),
    ("data.max_tiles", "10", &[]),
    ("data.augment", "false", &[]),
    ("data.num_workers", "2", &[]),
    ("training.steps", "100", &[]),
    ("training.batch_size", "2", &[]),
    ("training.grad_accum_steps", "4", &[]),
    ("training.optimizer.type", "sgd", &[]),
    ("training.optimizer.lr", "0.0002", &[]),
    ("training.optimizer.weight_decay", "0.02", &[]),
    ("training.optimizer.betas", "[0.8, 0.99]", &[]),
    ("training.optimizer.eps", "1.0e-6", &[]),
    ("training.scheduler.type", "linear", &[]),
    ("training.scheduler.warmup_steps", "10", &[]),
    ("training.scheduler.min_lr", "1.0e-7", &[]),
    ("training.max_grad_norm", "0.5", &[]),
    ("loss.l1_weight", "2.0", &[]),
    ("loss.ms_ssim_weight", "0.25", &[]),
    ("loss.lpips_weight", "0.1", &["loss.lpips.weights=@file"]),
    ("loss.sar_structure_weight", "0.3", &[]),
    ("validation.val_every", "50", &[]),
    ("validation.val_batch_size", "2", &[]),
    ("checkpointing.save_every", "100", &[]),
    ("checkpointing.keep_last_n", "3", &[]),
    ("early_stopping.enabled", "false", &[]),
    ("early_stopping.metric", "val_loss", &[]),
    ("early_stopping.patience", "3", &[]),
    ("early_stopping.min_delta", "0.001", &[]),
    ("early_stopping.mode", "max", &[]),
    ("top_k_checkpoints.k", "2", &[]),
    ("top_k_checkpoints.save_dir", "elsewhere/top_k", &[]),
    ("output.output_dir", "runs/elsewhere", &[]),
    ("logging.log_every", "5", &[]),
    ("logging.gpu_memory_every", "50", &[]),
    ("system.device", "cuda", &[]),
    ("system.seed", "7", &[]),
    ("system.oom_handling.enabled", "false", &[]),
    ("system.oom_handling.min_timesteps", "3", &[]),
    ("system.oom_handling.reduction_step", "1", &[]),
];

fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                leaves(&if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

fn set(doc: &mut serde_yaml::Value, key: &str, value: serde_yaml::Value) {
    let mut cur = doc;
    for part in key.split('.') {
        cur = &mut cur[part];
    }
    *cur = value;
}

#[test]
fn every_key_of_the_lowvr_config_is_read() {
    let text = std::fs::read_to_string(LOWVR).unwrap();
    let base: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut keys = Vec::new();
    leaves("", &base, &mut keys);
    let listed: Vec<&str> = CHANGES.iter().map(|c| c.0).collect();
    for k in &keys {
        assert!(listed.contains(&k.as_str()), "{k} is in the config but not checked here: add it to CHANGES");
    }

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("weights.safetensors");
    std::fs::write(&file, b"placeholder").unwrap();
    let other = tmp.path().join("other_tiles");
    std::fs::create_dir(&other).unwrap();
    let fill = |v: &str| v.replace("@file", &file.display().to_string()).replace("@dir", &other.display().to_string());
    let print = |doc: &serde_yaml::Value, extra: &[String]| {
        let path = tmp.path().join("config.yaml");
        std::fs::write(&path, serde_yaml::to_string(doc).unwrap()).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_stage1"));
        c.current_dir(ROOT).arg("--config").arg(&path).arg("--data-dir").arg(tiles()).arg("--print-config");
        // --data-dir would hide a change of data.data_dir: drop it for that key.
        if extra.iter().any(|e| e == "no-data-dir") {
            c = Command::new(env!("CARGO_BIN_EXE_stage1"));
            c.current_dir(ROOT).arg("--config").arg(&path).arg("--print-config");
        }
        for e in extra.iter().filter(|e| *e != "no-data-dir") {
            c.args(["--set", e]);
        }
        c.output().unwrap()
    };
    let mut baseline_doc = base.clone();
    set(&mut baseline_doc, "data.data_dir", serde_yaml::Value::String(tiles().display().to_string()));
    let reference = print(&base, &[]);
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let reference_no_dir = print(&baseline_doc, &["no-data-dir".into()]);
    assert!(reference_no_dir.status.success(), "{}", String::from_utf8_lossy(&reference_no_dir.stderr));

    for (key, value, extra) in CHANGES {
        let mut doc = if *key == "data.data_dir" { baseline_doc.clone() } else { base.clone() };
        set(&mut doc, key, serde_yaml::from_str(&fill(value)).unwrap());
        let mut flags: Vec<String> = extra.iter().map(|e| fill(e)).collect();
        let reference = if *key == "data.data_dir" {
            flags.push("no-data-dir".into());
            &reference_no_dir
        } else {
            &reference
        };
        let o = print(&doc, &flags);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            assert_ne!(o.stdout, reference.stdout, "changing {key} to {value} changed nothing: the key is ignored");
        } else {
            // A value the stage cannot use is refused, naming the key (as written, or the native key it maps to).
            let last = key.rsplit('.').next().unwrap();
            assert_eq!(o.status.code(), Some(2), "{key}: {stderr}");
            assert!(
                stderr.contains(last) || stderr.contains(&key.replace("system.", "")),
                "{key} rejected without naming it: {stderr}"
            );
        }
    }
}

#[test]
fn a_lora_run_on_a_trained_base_starts_from_that_base() {
    let tmp = tempfile::tempdir().unwrap();
    // Full training writes the merged generator...
    let full = tmp.path().join("full");
    let mut c = stage1(&full);
    c.args(["--steps", "6", "--val-every", "6", "--set", "model.lora.enabled=false"]);
    run(c);
    let base = full.join(stage1::BASE_EXPORT);
    let full_val = of(&events(&full), "validation").last().map(|v| v["metrics"].clone()).unwrap();

    // ...which a LoRA run loads as its frozen base. With a vanishing learning rate the adapters
    // (B = 0) stay at zero, so its generator is the base: same head PSNR on the same tiles.
    let lora = tmp.path().join("lora");
    let mut c = stage1(&lora);
    c.args(["--steps", "3", "--val-every", "3", "--set", "optimizer.lr=1e-12"])
        .args(["--set", "optimizer.scheduler.min_lr=0", "--set", "model.lora.enabled=true", "--set"])
        .arg(format!("model.pretrained={}", base.display()));
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = stderr.lines().find(|l| l.starts_with("Trainable parameters: ")).expect("trainable line");
    let pct: f64 = line.rsplit('(').next().unwrap().trim_end_matches(" %)").parse().unwrap();
    assert!(pct > 0.0 && pct < 100.0, "only adapters and the denoiser train: {line}");
    let lora_val = of(&events(&lora), "validation").last().map(|v| v["metrics"].clone()).unwrap();
    let (a, b) = (full_val["psnr_head"].as_f64().unwrap(), lora_val["psnr_head"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4, "head PSNR {a} after full training, {b} from the loaded base");

    // A base that does not fit the model is refused before training, naming the option.
    let bad = tmp.path().join("bad");
    let mut c = stage1(&bad);
    c.args(["--steps", "3", "--set", "model.size=tiny", "--set"]).arg(format!("model.pretrained={}", base.display()));
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model.pretrained") && stderr.contains("shape"), "{stderr}");
    assert!(!bad.join("checkpoints").exists(), "nothing trained");
}
