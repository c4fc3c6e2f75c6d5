//! End-to-end runs of the `stage3` binary on synthetic tiles (test-size model, CPU): every output
//! exists, the untrained grounding reproduces opt_v2 at step 0, the base stays bit-identical, a
//! tile without an estimate fails naming it, refusals name their key, every key of the lowvr
//! config is read, and a run killed with SIGKILL and resumed ends bit-identical to an
//! uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const LOWVR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/train/stage3.lowvr.yaml");

/// Shared inputs, made once: synthetic tiles, a stage-1 base and stage-2 estimates.
struct Inputs {
    _dir: tempfile::TempDir,
    tiles: PathBuf,
    estimates: PathBuf,
    base: PathBuf,
}

/// 6 synthetic 128 px scenes cut into 64 px tiles (train / val / test by scene), a random
/// test-size stage-1 base, and for every tile an estimate `0.8·truth + 0.02` (a blurred-free but
/// biased stage 2 the grounding can correct).
fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tiles = dir.path().join("tiles");
        let n = stage1::write_synthetic_tiles(&tiles, 6, 128, 64, 3).expect("synthetic tiles");
        assert_eq!(n, 24);
        let estimates = dir.path().join("opt_v2");
        std::fs::create_dir(&estimates).unwrap();
        for entry in std::fs::read_dir(&tiles).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "npz") {
                let tile = tiling::npz::read_tile(&path).unwrap();
                let data: Vec<f32> = tile.s2.iter().map(|v| 0.8 * v + 0.02).collect();
                let out = tiling::stage2::estimate_path(&estimates, &path);
                tiling::stage2::write_estimate(&out, &data, tile.height, tile.width).unwrap();
            }
        }
        let base = dir.path().join("base_model.safetensors");
        let generator = sarmodels::GeneratorConfig {
            lora: sarmodels::LoraConfig { enabled: false, ..Default::default() },
            ..Default::default()
        };
        generator.init::<burn::backend::Flex>(&Default::default()).save_base(&base).unwrap();
        Inputs { _dir: dir, tiles, estimates, base }
    })
}

/// The lowvr config at test size: batch 2, no accumulation, one pass, plain progress.
fn stage3(out: &Path) -> Command {
    stage3_with(out, &inputs().estimates)
}

/// [`stage3`] with the stage-2 estimates of `estimates`.
fn stage3_with(out: &Path, estimates: &Path) -> Command {
    let i = inputs();
    let mut c = Command::new(env!("CARGO_BIN_EXE_stage3"));
    c.current_dir(ROOT)
        .args(["--config", LOWVR, "--data-dir"])
        .arg(&i.tiles)
        .arg("--stage2-dir")
        .arg(estimates)
        .arg("--pretrained")
        .arg(&i.base)
        .args(["--set", "model.size=test", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-3"])
        .args(["--warmup-steps", "2", "--min-steps", "0", "--set", "model.timesteps=1"])
        .args(["--set", "logging.progress=plain", "--set", "logging.tensorboard=false"])
        .args(["--set", "data.num_workers=1", "--set", "data.val_batch_size=4", "--set", "data.max_val_tiles=4"])
        .arg("--output-dir")
        .arg(out);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("stage3 starts");
    assert!(out.status.success(), "stage3 failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn fails(mut c: Command, code: i32) -> String {
    let out = c.output().expect("stage3 starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

fn events(dir: &Path) -> Vec<Value> {
    trainer::telemetry::read_events(dir).unwrap_or_else(|e| panic!("{e}")).events
}

fn of<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["event"] == kind).collect()
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

#[test]
fn a_run_writes_every_output_starts_from_opt_v2_and_keeps_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = stage3(&out);
    c.args(["--steps", "6", "--val-every", "3", "--save-every", "3"])
        .args(["--set", "debug.validate_before_training=true"]);
    let o = run(c);
    let stderr = String::from_utf8_lossy(&o.stderr);

    // Seed 001's parameter report; LoRA on the cross-attention only is a small share.
    let total = stderr.lines().find(|l| l.starts_with("✓ Total parameters: ")).expect("total line");
    let line = stderr.lines().find(|l| l.starts_with("✓ Trainable parameters: ")).expect("trainable line");
    let pct: f64 = line.rsplit('(').next().unwrap().trim_end_matches(" %)").parse().unwrap();
    assert!(pct > 0.0 && pct < 100.0, "{total} / {line}");
    assert!(stderr.contains("precision f32") || stderr.contains("Precision: f32"), "effective precision logged");

    for f in ["training.jsonl", "config.yaml", "best_model.safetensors", "validation/step_0.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for s in [3, 6] {
        assert!(out.join(format!("validation/step_{s}.png")).is_file(), "example image of step {s}");
    }
    assert!(out.join("checkpoints/checkpoint_latest.safetensors").is_file());
    assert!(out.join("checkpoints/checkpoint_step_3.safetensors").is_file());

    let evs = events(&out);
    let steps = of(&evs, "train_step");
    assert_eq!(steps.len(), 6);
    for e in &steps {
        for k in ["sar_consistency", "cycle", "identity", "spectral", "edge_alignment", "texture_correlation"] {
            assert!(e["metrics"][k].is_number() || e[k].is_number(), "step log lacks {k}: {e}");
        }
    }
    let vals = of(&evs, "validation");
    let at = |s: u64| vals.iter().find(|v| v["step"] == s).unwrap_or_else(|| panic!("no validation at {s}"));
    // At step 0 the untrained grounding returns opt_v2 exactly: every v3 metric equals its v2 twin.
    let m0 = &at(0)["metrics"];
    for (a, b) in [("sar_agreement", "sar_agreement_v2"), ("psnr", "psnr_v2"), ("ssim", "ssim_v2")] {
        assert_eq!(m0[a].as_f64().unwrap().to_bits(), m0[b].as_f64().unwrap().to_bits(), "{a} vs {b} at step 0");
    }
    assert_eq!(m0["sar_agreement_improvement"].as_f64(), Some(0.0));
    assert_eq!(m0["cycle"].as_f64(), Some(0.0), "opt_v3 == opt_v2 at step 0");
    assert_eq!(at(0)["is_best"], false, "the baseline is not the best model");
    let m6 = &at(6)["metrics"];
    for k in ["sar_agreement", "sar_agreement_v2", "sar_agreement_improvement", "psnr", "psnr_v2", "ssim", "ssim_v2"] {
        assert!(m6[k].is_number(), "validation lacks {k}");
    }
    for k in ["gac_score", "sar_confidence", "val_loss", "sar_consistency", "identity", "cycle", "spectral"] {
        assert!(m6[k].is_number(), "validation lacks {k}");
    }
    assert!(m6.get("lpips_change").is_none(), "no LPIPS weights: no lpips_change");
    assert!(m6["cycle"].as_f64().unwrap() > 0.0, "training moved opt_v3 away from opt_v2");

    // Only adapters trained: the loaded stage-1 weights are bit-identical in the best model.
    let base = tensors(&inputs().base);
    let best = tensors(&out.join("best_model.safetensors"));
    let mut compared = 0;
    for (key, bytes) in &best {
        let from = key.strip_prefix("grounding.").map(|rest| format!("decoder.{rest}")).unwrap_or_else(|| key.clone());
        if key.contains("adapter") || key.contains("optical_embed") {
            continue;
        }
        let stripped = from.trim_start_matches("sar_encoder.").to_string();
        if let Some(b) = base.get(&from).or_else(|| base.get(&stripped)) {
            assert!(b == bytes, "{key} changed during training");
            compared += 1;
        }
    }
    assert!(compared >= 10, "compared only {compared} base tensors: {:?}", best.keys().collect::<Vec<_>>());
}

#[test]
fn a_tile_without_an_estimate_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let partial = tmp.path().join("opt_v2");
    std::fs::create_dir(&partial).unwrap();
    // Drop the estimate of the first training tile.
    let manifest = inputs().tiles.join("manifest.json");
    let train = tiling::dataset::NpzSource::from_manifest(&manifest, Some(tiling::tile::Split::Train)).unwrap();
    let first = train.paths().next().unwrap().to_path_buf();
    let dropped = tiling::stage2::estimate_path(&inputs().estimates, &first);
    for entry in std::fs::read_dir(&inputs().estimates).unwrap() {
        let p = entry.unwrap().path();
        if p != dropped {
            std::fs::copy(&p, partial.join(p.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("run");
    let mut c = stage3_with(&out, &partial);
    c.args(["--steps", "4"]);
    let stderr = fails(c, 1);
    let name = dropped.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr.contains(&name) && stderr.contains("opt_v2"), "{stderr}");
    assert!(!out.join("checkpoints").exists(), "nothing trained");

    // An estimate of the wrong size names its file and both shapes.
    let wrong = partial.join(&name);
    tiling::stage2::write_estimate(&wrong, &vec![0.1; 4 * 32 * 32], 32, 32).unwrap();
    let out = tmp.path().join("run2");
    let mut c = stage3_with(&out, &partial);
    c.args(["--steps", "8", "--val-every", "8", "--set", "data.augment=false"]);
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The tile may be a training or a validation tile: either way the run stops naming the file.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&name) && stderr.contains("(4, 32, 32)"), "{stderr}");
}

#[test]
fn refusals_name_their_key_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let without = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stage3"));
        c.current_dir(ROOT).args(["--config", LOWVR, "--data-dir"]).arg(&inputs().tiles);
        c.arg("--output-dir").arg(&out).arg("--validate-config");
        c
    };
    let stderr = fails(without(), 2);
    assert!(stderr.contains("data.stage2_dir") && stderr.contains("stage1 predict"), "{stderr}");
    let mut c = without();
    c.args(["--set", "data.stage2_proxy=noisy_truth", "--pretrained"]).arg(&inputs().base);
    let o = c.output().unwrap();
    assert!(o.status.success(), "the proxy is allowed by name: {}", String::from_utf8_lossy(&o.stderr));

    // `true` names no file (the seed's "use the pretrained model").
    let mut c = without();
    c.args(["--set", "data.stage2_proxy=noisy_truth", "--set", "model.pretrained=true"]);
    let stderr = fails(c, 2);
    assert!(stderr.contains("model.pretrained") && stderr.contains("base_model.safetensors"), "{stderr}");
    let mut c = without();
    c.args(["--set", "data.stage2_proxy=noisy_truth", "--set", "model.pretrained=null"]);
    let stderr = fails(c, 2);
    assert!(stderr.contains("model.pretrained") && stderr.contains("is not set"), "{stderr}");

    for (set, key, words) in [
        // `--set` takes native keys and the file's seed names (aliases of these).
        ("model.cpu_offload=true", "cpu_offload", "not supported"),
        ("hardware.cpu_offload=true", "cpu_offload", "not supported"),
        ("model.gradient_checkpointing=true", "gradient_checkpointing", "not supported"),
        ("training.mixed_precision=true", "training.mixed_precision", "only f32"),
        ("model.lora.target_modules=[proj]", "target_modules", "proj"),
        ("data.compute_sar_agreement=false", "compute_sar_agreement", "best model"),
    ] {
        let mut c = stage3(&out);
        c.args(["--validate-config", "--set", set]);
        let stderr = fails(c, 2);
        assert!(stderr.contains(key) && stderr.contains(words), "{set}: {stderr}");
    }
    assert!(!out.exists(), "a refused config writes nothing");
}

#[test]
fn the_noisy_truth_proxy_is_deterministic_and_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let go = |name: &str| {
        let out = tmp.path().join(name);
        let mut c = Command::new(env!("CARGO_BIN_EXE_stage3"));
        c.current_dir(ROOT).args(["--config", LOWVR, "--data-dir"]).arg(&inputs().tiles);
        c.arg("--pretrained").arg(&inputs().base).arg("--output-dir").arg(&out);
        c.args(["--set", "model.size=test", "--set", "data.stage2_proxy=noisy_truth", "--batch-size", "2"])
            .args(["--grad-accum", "1", "--steps", "3", "--val-every", "3", "--timesteps", "1", "--min-steps", "0"])
            .args(["--warmup-steps", "0"])
            .args(["--set", "logging.progress=plain", "--set", "logging.tensorboard=false"])
            .args(["--set", "data.max_val_tiles=2", "--set", "data.num_workers=1"]);
        let o = run(c);
        let evs = events(&out);
        let losses: Vec<u64> = of(&evs, "train_step").iter().map(|e| e["loss"].as_f64().unwrap().to_bits()).collect();
        (String::from_utf8_lossy(&o.stderr).into_owned(), losses)
    };
    let (stderr, a) = go("a");
    let (_, b) = go("b");
    assert!(stderr.contains("PROXY"), "the proxy is announced: {stderr}");
    assert_eq!(a, b, "the proxy noise is drawn per (seed, epoch, tile)");
}

fn losses(evs: &[Value]) -> BTreeMap<u64, f64> {
    of(evs, "train_step").iter().map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap())).collect()
}

#[test]
fn a_killed_run_resumed_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--steps", "12", "--val-every", "4", "--save-every", "4"];
    let whole = tmp.path().join("whole");
    let mut c = stage3(&whole);
    c.args(args);
    run(c);

    // Kill -9 once step 10 is logged (after the step-8 checkpoint).
    let killed = tmp.path().join("killed");
    let mut c = stage3(&killed);
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
    let from = killed.join("checkpoints/checkpoint_step_8.safetensors");
    assert!(from.is_file(), "the step-8 checkpoint survived the kill");

    let mut c = stage3(&killed);
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

/// Changes one key of configs/train/stage3.lowvr.yaml (with extra flags where another key must
/// follow) and expects the resolved config to change, or the value to be rejected by name.
const CHANGES: &[(&str, &str, &[&str])] = &[
    ("model.size", "test", &[]),
    ("model.timesteps", "4", &[]),
    ("model.standardize", "false", &[]),
    ("model.pretrained", "@file", &[]),
    ("model.lora.enabled", "false", &[]),
    ("model.lora.rank", "4", &[]),
    ("model.lora.alpha", "8", &[]),
    ("model.lora.dropout", "0.1", &[]),
    ("model.lora.target_modules", "[cross_attn]", &[]),
    ("model.lora.freeze_base_model", "false", &[]),
    ("training.batch_size", "2", &[]),
    ("training.gradient_accumulation_steps", "4", &[]),
    ("training.max_steps", "100", &[]),
    ("training.min_steps", "10", &[]),
    ("training.epochs", "3", &["training.max_steps=null"]),
    ("training.save_every_n_steps", "100", &[]),
    ("training.keep_last_n_checkpoints", "2", &[]),
    ("training.early_stopping.enabled", "false", &[]),
    ("training.early_stopping.metric", "psnr", &[]),
    ("training.early_stopping.patience", "3", &[]),
    ("training.early_stopping.min_delta", "0.001", &[]),
    ("training.early_stopping.mode", "min", &[]),
    ("training.mixed_precision", "true", &[]),
    ("training.amp_dtype", "bfloat16", &[]),
    ("training.gradient_clip_norm", "0.5", &[]),
    ("training.seed", "7", &[]),
    ("optimizer.name", "sgd", &[]),
    ("optimizer.lr", "0.0002", &[]),
    ("optimizer.weight_decay", "0.02", &[]),
    ("optimizer.betas", "[0.8, 0.99]", &[]),
    ("optimizer.eps", "1.0e-6", &[]),
    ("optimizer.scheduler.name", "linear", &[]),
    ("optimizer.scheduler.warmup_steps", "10", &[]),
    ("optimizer.scheduler.min_lr", "1.0e-7", &[]),
    ("loss.sar_consistency_weight", "2.0", &[]),
    ("loss.cycle_weight", "0.25", &[]),
    ("loss.identity_weight", "0.5", &[]),
    ("loss.lpips_weight", "0.1", &["loss.lpips.weights=@file"]),
    ("loss.spectral_weight", "0.5", &[]),
    ("loss.sar_consistency.edge_weight", "0.6", &[]),
    ("loss.sar_consistency.texture_weight", "0.4", &[]),
    ("loss.sar_consistency.adaptive_weighting", "false", &[]),
    ("loss.use_lpips", "false", &[]),
    ("data.train_dir", "@dir", &[]),
    ("data.stage2_dir", "@dir", &[]),
    ("data.tile_size", "64", &[]),
    ("data.num_workers", "2", &[]),
    ("data.use_augmentation", "false", &[]),
    ("data.val_max_samples", "10", &[]),
    ("logging.output_dir", "runs/elsewhere", &[]),
    ("logging.log_every_n_steps", "5", &[]),
    ("logging.save_example_images", "false", &[]),
    ("logging.num_example_images", "2", &[]),
    ("hardware.device", "cuda", &[]),
    ("hardware.gradient_checkpointing", "true", &[]),
    ("hardware.cpu_offload", "true", &[]),
    ("validation.compute_lpips", "false", &[]),
    ("validation.lpips_threshold", "0.2", &[]),
    ("validation.every_n_steps", "50", &[]),
    ("resume.checkpoint_path", "@file", &[]),
    ("debug.overfit_single_batch", "true", &[]),
    ("debug.validate_before_training", "true", &[]),
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
    for k in &listed {
        assert!(keys.iter().any(|x| x == k), "{k} is checked here but not in the config");
    }

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("weights.safetensors");
    std::fs::write(&file, b"placeholder").unwrap();
    let other = tmp.path().join("other_dir");
    std::fs::create_dir(&other).unwrap();
    let fill = |v: &str| v.replace("@file", &file.display().to_string()).replace("@dir", &other.display().to_string());
    let i = inputs();
    // Directories and the base come from the file (not from flags) so that changing them shows.
    let mut reference_doc = base.clone();
    let path_value = |p: &Path| serde_yaml::Value::String(p.display().to_string());
    set(&mut reference_doc, "data.train_dir", path_value(&i.tiles));
    set(&mut reference_doc, "data.stage2_dir", path_value(&i.estimates));
    set(&mut reference_doc, "model.pretrained", path_value(&i.base));
    let print = |doc: &serde_yaml::Value, extra: &[String]| {
        let path = tmp.path().join("config.yaml");
        std::fs::write(&path, serde_yaml::to_string(doc).unwrap()).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_stage3"));
        c.current_dir(ROOT).arg("--config").arg(&path).arg("--print-config");
        for e in extra {
            c.args(["--set", e]);
        }
        c.output().unwrap()
    };
    let reference = print(&reference_doc, &[]);
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));

    for (key, value, extra) in CHANGES {
        let mut doc = reference_doc.clone();
        set(&mut doc, key, serde_yaml::from_str(&fill(value)).unwrap());
        let flags: Vec<String> = extra.iter().map(|e| fill(e)).collect();
        let o = print(&doc, &flags);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            assert_ne!(o.stdout, reference.stdout, "changing {key} to {value} changed nothing: the key is ignored");
        } else {
            // A value the stage cannot use is refused, naming the key (as written, or the native key it maps to).
            let last = key.rsplit('.').next().unwrap();
            assert_eq!(o.status.code(), Some(2), "{key}: {stderr}");
            assert!(
                stderr.contains(last) || stderr.contains(&key.replace("hardware.", "")),
                "{key} rejected without naming it: {stderr}"
            );
        }
    }
}

/// With LPIPS weights (random ones here: the shapes are what matters) the lpips term is logged per
/// step and validation reports `lpips_change`; LPIPS asked for without weights is refused by name.
#[test]
fn lpips_weights_add_the_term_and_lpips_change() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("lpips_alex.safetensors");
    let tensors = losses::lpips::LpipsWeights::expected_tensors(losses::lpips::LpipsNet::Alex)
        .into_iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product();
            // Positive heads (LPIPS's are non-negative), small trunk weights.
            let v = (0..n).map(|i| if k.starts_with("lin") { 0.01 } else { ((i % 7) as f32 - 3.0) * 0.01 }).collect();
            (k, shape, v)
        })
        .collect();
    checkpoints::weights::save_tensors(&weights, tensors).unwrap();
    let out = tmp.path().join("run");
    let mut c = stage3(&out);
    c.args(["--steps", "3", "--val-every", "3", "--set", "loss.lpips_weight=0.1", "--set", "loss.lpips.net=alex"])
        .arg("--set")
        .arg(format!("loss.lpips.weights={}", weights.display()));
    run(c);
    let evs = events(&out);
    for e in of(&evs, "train_step") {
        assert!(e["metrics"]["lpips"].as_f64().is_some_and(f64::is_finite), "lpips logged per step: {e}");
    }
    let v = of(&evs, "validation");
    let m = &v.last().unwrap()["metrics"];
    assert!(m["lpips"].as_f64().is_some_and(f64::is_finite), "{m}");
    assert!(m["lpips_change"].as_f64().is_some_and(|x| x.is_finite() && x >= 0.0), "{m}");

    let mut c = stage3(&tmp.path().join("refused"));
    c.args(["--validate-config", "--set", "loss.lpips_weight=0.1"]);
    let stderr = fails(c, 2);
    assert!(stderr.contains("loss.lpips.weights"), "{stderr}");
}

/// An out-of-memory lowers the grounding passes (seed: "reduce timesteps to save memory") down to
/// `model.min_timesteps`, then the loop splits micro-batches; every step still trains.
#[test]
fn an_injected_out_of_memory_lowers_the_passes_and_training_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut c = stage3(&out);
    c.args(["--steps", "6", "--val-every", "3", "--timesteps", "3", "--set", "model.min_timesteps=2"])
        .args(["--set", "oom.inject_at_steps=[2, 5]"]);
    run(c);
    let evs = events(&out);
    let ooms = of(&evs, "oom");
    assert_eq!(ooms.len(), 2, "{ooms:?}");
    assert_eq!(ooms[0]["action"], "timesteps 3 -> 2");
    assert_ne!(ooms[1]["action"], "timesteps 2 -> 1", "the floor holds: {}", ooms[1]["action"]);
    assert_eq!(of(&evs, "train_step").len(), 6, "every step trained");
    let t: Vec<f64> = of(&evs, "validation").iter().map(|v| v["metrics"]["timesteps"].as_f64().unwrap()).collect();
    assert_eq!(t, vec![2.0, 2.0], "validation grounds with the lowered pass count");
}
