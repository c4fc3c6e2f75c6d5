//! The shared command line, exercised through the toy stage binary: config precedence and
//! errors, determinism across processes, and Ctrl-C / SIGTERM handling.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::toy;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

fn events(dir: &Path, kind: &str) -> Vec<Value> {
    support::events(dir, Some(kind))
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn flag_beats_env_beats_yaml_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yaml",
        "training:\n  batch_size: 4\n  max_steps: 3\noptimizer:\n  lr: 0.1\n  eps: 0.5\nseed: 1\n",
    );
    let (code, out, err) = run(toy()
        .arg("--config")
        .arg(&cfg)
        .args(["--batch-size", "6", "--print-config"])
        .env("TRAINYARD_TRAINING__BATCH_SIZE", "5")
        .env("TRAINYARD_OPTIMIZER__LR", "0.2")
        .env("TRAINYARD_SEED", "9"));
    assert_eq!(code, 0, "{err}");
    let v = yaml(&out);
    assert_eq!(v["training"]["batch_size"].as_u64(), Some(6), "flag beats env");
    assert_eq!(v["optimizer"]["lr"].as_f64(), Some(0.2), "env beats YAML");
    assert_eq!(v["seed"].as_u64(), Some(9), "env beats YAML");
    assert_eq!(v["optimizer"]["eps"].as_f64(), Some(0.5), "YAML beats default");
    assert_eq!(v["training"]["max_steps"].as_u64(), Some(3), "YAML beats default");
    assert_eq!(v["optimizer"]["weight_decay"].as_f64(), Some(0.01), "default stays");
    assert_eq!(v["output_dir"].as_str(), Some("runs/toy"), "the stage's default output directory");
}

#[test]
fn a_step_budget_flag_replaces_an_epoch_budget_from_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.yaml", "training:\n  epochs: 3\n");
    let (code, out, err) = run(toy().arg("-c").arg(&cfg).args(["--max-steps", "7", "--print-config"]));
    assert_eq!(code, 0, "{err}");
    let v = yaml(&out);
    assert_eq!(v["training"]["max_steps"].as_u64(), Some(7));
    assert!(v["training"]["epochs"].is_null());
}

#[test]
fn a_step_budget_and_an_epoch_budget_together_are_refused_naming_both_flags() {
    // Before, the later override silently won: `--max-steps 1 --epochs 2` trained two epochs.
    for args in [["--max-steps", "1", "--epochs", "2"], ["--epochs", "2", "--max-steps", "1"]] {
        let (code, _, err) = run(toy().args(args).arg("--print-config"));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--max-steps") && err.contains("--epochs"), "{err}");
    }
}

#[test]
fn print_config_shows_the_merged_config() {
    let (code, out, err) = run(toy().args(["--config", "configs/smoke/toy.yaml", "--print-config"]));
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("print_config_smoke_toy", out);
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "typo.yaml", "trainig:\n  max_steps: 10\n");
    let (code, _, err) = run(toy().arg("-c").arg(&cfg).arg("--validate-config"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown key `trainig`"), "{err}");
    assert!(err.contains("typo.yaml"), "names the file: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn validate_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.yaml",
        "training:\n  batch_size: eight\n  max_steps: 10\n  gradient_clip_norm: -1\noptimizer:\n  lr: -0.5\n  sheduler: {}\n",
    );
    let (code, out, err) = run(toy().arg("-c").arg(&cfg).arg("--validate-config"));
    assert_eq!(code, 2, "{out}");
    let text = err.replace(cfg.to_str().unwrap(), "<config>");
    insta::assert_snapshot!("validate_config_problems", text);

    let ok = write(dir.path(), "ok.yaml", "training:\n  max_steps: 10\n");
    let (code, out, err) = run(toy().arg("-c").arg(&ok).arg("--validate-config"));
    assert_eq!((code, out.trim()), (0, "configuration is valid"), "{err}");
}

#[test]
fn bad_environment_values_name_the_variable() {
    let (code, _, err) =
        run(toy().args(["--validate-config", "--max-steps", "5"]).env("TRAINYARD_TRAINING__BATCH_SIZE", "lots"));
    assert_eq!(code, 2);
    assert!(err.contains("training.batch_size"), "{err}");
    assert!(err.contains("TRAINYARD_TRAINING__BATCH_SIZE"), "{err}");
}

#[test]
fn duplicate_keys_out_of_range_counts_and_bad_set_flags_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "dup.yaml", "training:\n  max_steps: 5\n  max_steps: 7\n");
    let (code, _, err) = run(toy().arg("-c").arg(&cfg).arg("--validate-config"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dup.yaml") && err.contains("duplicate entry with key \"max_steps\""), "{err}");

    let (code, _, err) = run(toy().args(["--validate-config", "--steps", "3", "--grad-accum", "4294967297"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("training.gradient_accumulation_steps") && err.contains("1..=4294967295"), "{err}");
    let (code, _, err) =
        run(toy().args(["--validate-config", "--steps", "3"]).env("TRAINYARD_TRAINING__BATCH_SIZE", "4294967296"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("training.batch_size") && err.contains("TRAINYARD_TRAINING__BATCH_SIZE"), "{err}");

    for (flag, expect) in [
        ("training.max_steps", "expected KEY=VALUE"),
        ("training.max_steps=18446744073709551617", "out of range for key training.max_steps"),
        ("training.bogus=1", "unknown key `bogus`"),
        ("training.batch_size=eight", "training.batch_size"),
    ] {
        let (code, _, err) = run(toy().args(["--validate-config", "--steps", "3", "--set", flag]));
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(expect), "{flag}: {err}");
    }
    assert!(!dir.path().join("training.jsonl").exists());
}

#[test]
fn a_missing_config_file_and_an_absent_backend_are_clear_errors() {
    let (code, _, err) = run(toy().args(["-c", "/nonexistent/x.yaml"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/x.yaml") && err.contains("does not exist"), "{err}");

    if !cfg!(feature = "cuda") {
        let (code, _, err) = run(toy().args(["--max-steps", "1", "--device", "cuda:0"]));
        assert_eq!(code, 2);
        assert!(err.contains("--features cuda"), "{err}");
    }
}

fn train_losses(seed: u64) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, _, err) =
        run(toy().args(["--max-steps", "30", "--batch-size", "8", "--seed", &seed.to_string()]).arg("-o").arg(&out));
    assert_eq!(code, 0, "{err}");
    events(&out, "train_step").iter().map(|e| e["loss"].as_f64().unwrap()).collect()
}

#[test]
fn the_same_seed_gives_identical_losses_and_another_seed_does_not() {
    let a = train_losses(3);
    assert_eq!(a.len(), 30);
    assert_eq!(a, train_losses(3), "bit-identical losses for the same seed");
    assert_ne!(a, train_losses(4));
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, _, err) = run(toy().args(["--max-steps", "2"]).arg("-o").arg(&out));
    assert_eq!(code, 0, "{err}");
    let before = std::fs::read(out.join("training.jsonl")).unwrap();
    let (code, _, err) = run(toy().args(["--max-steps", "2"]).arg("-o").arg(&out));
    assert_eq!(code, 1);
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(std::fs::read(out.join("training.jsonl")).unwrap(), before);
}

fn interrupt_run(signal: &str, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = toy()
        .args(["--max-steps", "100000000", "--val-every", "1000000", "--set", "logging.progress=off"])
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while events(&out, "train_step").len() < 20 {
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not start training");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "the run did not stop after {signal}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(expected_code));

    let steps = events(&out, "train_step");
    let last_step = steps.last().unwrap()["step"].as_u64().unwrap();
    let interrupted = &events(&out, "interrupted")[0];
    assert_eq!(interrupted["step"].as_u64(), Some(last_step), "stopped after a completed optimizer step");
    let ckpt = events(&out, "checkpoint").pop().unwrap();
    assert_eq!(ckpt["step"].as_u64(), Some(last_step));
    // The stop may land on an epoch's last step, which saves for that reason too.
    let reasons = ckpt["reasons"].as_array().unwrap();
    assert!(reasons.contains(&"interrupted".into()), "{reasons:?}");
    assert!(reasons.iter().all(|r| r == "interrupted" || r == "epoch_end"), "{reasons:?}");
    let path = PathBuf::from(ckpt["written"][0].as_str().unwrap());
    assert_eq!(path, out.join("checkpoints/checkpoint_latest.safetensors"));
    assert!(path.is_file(), "the interrupt wrote {}", path.display());
    // The jsonl ends with the run_end event after the save.
    let log = trainer::telemetry::read_events(&out).unwrap();
    assert!(log.torn_lines.is_empty(), "{:?}", log.torn_lines);
    let last = log.events.last().unwrap();
    assert_eq!(last["event"], "run_end");
}

#[test]
fn sigint_checkpoints_after_a_completed_step_and_exits_130() {
    interrupt_run("-INT", 130);
}

#[test]
fn sigterm_checkpoints_after_a_completed_step_and_exits_143() {
    interrupt_run("-TERM", 143);
}

#[test]
fn the_overfit_check_fails_the_run_when_the_loss_does_not_drop_enough() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, _, err) = run(toy()
        .args(["--config", "configs/smoke/toy.yaml", "--max-steps", "3", "--set", "debug.expected_loss_drop=1000000"])
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 1);
    assert!(err.contains("overfit check failed"), "{err}");
}

#[test]
fn a_checkpoint_of_another_run_is_refused_then_archived_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let (code, _, err) = run(toy().args(["--max-steps", "4", "--seed", "1"]).arg("-o").arg(&a));
    assert_eq!(code, 0, "{err}");
    let latest = a.join("checkpoints/checkpoint_latest.safetensors");

    // Another seed: refused, naming the file and each difference; nothing touched.
    let before = std::fs::read(&latest).unwrap();
    let (code, _, err) = run(toy().args(["--max-steps", "8", "--seed", "2", "--auto-resume"]).arg("-o").arg(&a));
    assert_eq!(code, 1);
    assert!(err.contains("checkpoint_latest.safetensors") && err.contains("different run"), "{err}");
    assert!(err.contains("seed: checkpoint 1, this run 2"), "{err}");
    assert_eq!(std::fs::read(&latest).unwrap(), before);

    // A different model width changes the config hash.
    let (code, _, err) =
        run(toy().args(["--max-steps", "8", "--seed", "1", "--hidden", "7", "--auto-resume"]).arg("-o").arg(&a));
    assert_eq!(code, 1);
    assert!(err.contains("config (model/data/loss"), "{err}");

    // --on-mismatch fresh: the old run is archived, not deleted, and a fresh run starts.
    let (code, _, err) = run(toy()
        .args(["--max-steps", "3", "--seed", "2", "--auto-resume", "--on-mismatch", "fresh"])
        .arg("-o")
        .arg(&a));
    assert_eq!(code, 0, "{err}");
    let archived: Vec<PathBuf> = std::fs::read_dir(a.join("archived")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(archived.len(), 1);
    assert_eq!(std::fs::read(archived[0].join("checkpoints/checkpoint_latest.safetensors")).unwrap(), before);
    assert!(archived[0].join("training.jsonl").is_file());
    let starts = events(&a, "run_start");
    assert_eq!(starts.len(), 1, "the new training.jsonl belongs to the fresh run");
    assert_eq!(starts[0]["identity"]["seed"], 2);
}

#[test]
fn auto_resume_extends_a_finished_run_and_falls_back_past_a_corrupt_latest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["--max-steps", "10", "--val-every", "5", "--batch-size", "8"];
    let (code, _, err) = run(toy().args(args).arg("-o").arg(&out));
    assert_eq!(code, 0, "{err}");

    // Corrupt the newest checkpoint (break its hard links first: top_k shares the inode).
    let latest = out.join("checkpoints/checkpoint_latest.safetensors");
    let mut bytes = std::fs::read(&latest).unwrap();
    std::fs::remove_file(&latest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&latest, &bytes).unwrap();

    let (code, _, err) = run(toy()
        .args(["--max-steps", "20", "--val-every", "5", "--batch-size", "8", "--auto-resume"])
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("skipping checkpoint") && err.contains("checkpoint_latest.safetensors"), "{err}");
    let resume = &events(&out, "resume")[0];
    assert_eq!(resume["step"], 10, "the step-10 top-K copy verifies and is used");
    assert!(resume["path"].as_str().unwrap().contains("top_k"), "{resume}");
    let steps: Vec<u64> = events(&out, "train_step").iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=20).collect::<Vec<_>>(), "steps 11-20 follow steps 1-10 once each");
}

#[test]
fn early_stopping_flags_from_the_seeds_map_to_config_and_print_the_console_lines() {
    let (code, out, err) = run(toy().args([
        "--patience",
        "7",
        "--early-stop-divergence-threshold",
        "10",
        "--max-steps",
        "5",
        "--print-config",
    ]));
    assert_eq!(code, 0, "{err}");
    let v = yaml(&out)["early_stopping"].clone();
    assert_eq!(v["enabled"].as_bool(), Some(true), "any early-stopping flag turns it on");
    assert_eq!(v["patience"].as_u64(), Some(7));
    assert_eq!(v["divergence_factor"].as_f64(), Some(10.0));

    // min_delta 10 makes every validation after the first a non-improvement.
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(toy()
        .args(["--early-stopping", "--early-stopping-patience", "2", "--early-stopping-min-delta", "10"])
        .args(["--max-steps", "50", "--val-every", "1", "--set", "logging.progress=plain"])
        .arg("-o")
        .arg(dir.path().join("run"))
        .env("RUST_LOG", "info"));
    assert_eq!(code, 0, "{err}");
    for line in [
        "✓ Metric improved to",
        "⚠ No improvement for 1/2 validations (best:",
        "🛑 Early stopping triggered! No improvement for 2 validations.",
        "Best score:",
        "Best val_loss:",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert_eq!(events(&dir.path().join("run"), "early_stop")[0]["step"], 3);
}

#[test]
fn schedule_flags_from_seed_003_map_to_the_scheduler_section() {
    let print = |args: &[&str]| {
        let (code, out, err) = run(toy().args(args).args(["--max-steps", "100", "--print-config"]));
        assert_eq!(code, 0, "{args:?}: {err}");
        yaml(&out)["optimizer"]["scheduler"].clone()
    };
    let s = print(&["--lr-schedule", "onecycle", "--onecycle-pct-start", "0.4", "--onecycle-div-factor", "50"]);
    assert_eq!(
        (s["name"].as_str(), s["pct_start"].as_f64(), s["div_factor"].as_f64()),
        (Some("onecycle"), Some(0.4), Some(50.0))
    );
    let s = print(&["--lr-schedule", "cyclical", "--cyclical-mode", "triangular2"]);
    assert_eq!((s["name"].as_str(), s["cyclical_mode"].as_str()), (Some("cyclical"), Some("triangular2")));
    let s = print(&["--lr-schedule", "sgdr", "--sgdr-cycle-length", "40", "--warmup-steps", "5"]);
    assert_eq!((s["name"].as_str(), s["t_0"].as_u64(), s["warmup_steps"].as_u64()), (Some("sgdr"), Some(40), Some(5)));
}

#[test]
fn bad_schedule_combinations_are_config_errors_naming_the_key() {
    for (args, key, words) in [
        (vec!["--lr-schedule", "sgdr"], "optimizer.scheduler.t_0", "needs t_0"),
        (
            vec!["--lr-schedule", "cosine", "--onecycle-pct-start", "0.4"],
            "optimizer.scheduler.pct_start",
            "does not apply to `cosine`",
        ),
        (vec!["--lr-schedule", "exponential"], "optimizer.scheduler.gamma", "needs gamma"),
        (vec!["--lr-schedule", "cosine", "--warmup-steps", "100"], "optimizer.scheduler.warmup_steps", "not shorter"),
        (vec!["--lr-schedule", "onecycle", "--warmup-steps", "10"], "optimizer.scheduler.warmup_steps", "own warm-up"),
        (vec!["--lr-schedule", "warmup"], "optimizer.scheduler.name", "unknown variant"),
    ] {
        let (code, _, err) = run(toy().args(&args).args(["--max-steps", "50", "--validate-config"]));
        assert_eq!(code, 2, "{args:?} must be refused");
        assert!(err.contains(key) && err.contains(words), "{args:?}: expected {key} / {words:?} in:\n{err}");
    }
}

#[test]
fn a_plateau_schedule_cuts_the_rate_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(toy()
        .args(["--lr-schedule", "plateau", "--max-steps", "12", "--val-every", "2", "--lr", "0.01"])
        .args(["--set", "optimizer.scheduler.patience=1", "--set", "optimizer.scheduler.threshold=10"])
        .args(["--set", "optimizer.scheduler.threshold_mode=abs", "--set", "logging.progress=plain"])
        .arg("-o")
        .arg(dir.path())
        .env("RUST_LOG", "info"));
    assert_eq!(code, 0, "{err}");
    // Validations at 2 (best), 4, 6 (cut), 8, 10 (cut), 12: ×0.1 each time.
    let cuts: Vec<(u64, f64)> = events(dir.path(), "lr_reduced")
        .iter()
        .map(|e| (e["step"].as_u64().unwrap(), e["new_lr"].as_f64().unwrap()))
        .collect();
    assert_eq!(cuts.iter().map(|c| c.0).collect::<Vec<_>>(), [6, 10]);
    let lr_of = |step: u64| events(dir.path(), "train_step")[step as usize - 1]["lr"].as_f64().unwrap();
    assert_eq!((lr_of(6), lr_of(7), lr_of(11)), (0.01, cuts[0].1, cuts[1].1));
    assert!((cuts[1].1 - 1e-4).abs() < 1e-12);
    assert!(
        err.contains("↘ Reducing learning rate from 1.000e-2 to 1.000e-3: val_loss did not improve for 2 validations"),
        "{err}"
    );
}

#[test]
fn lr_find_writes_the_csv_the_plot_and_a_suggestion_inside_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(toy()
        .args(["lr-find", "--config", "configs/smoke/toy.yaml", "--batch-size", "256"])
        .args(["--min-lr", "1e-6", "--max-lr", "3", "--num-steps", "60"])
        .arg("-o")
        .arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let value = |line: &str, prefix: &str| -> f64 {
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} lacks {prefix:?}")).parse().unwrap()
    };
    let suggested = value(lines[0], "Suggested optimal LR: ");
    assert!((1e-6..=3.0).contains(&suggested), "{suggested}");
    // (the exact formatting is tested in the schedulers crate; here the ranges' arithmetic)
    let range = |line: &str, prefix: &str| -> (f64, f64) {
        let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} lacks {prefix:?}"));
        let (a, b) = rest.split_once(" to ").unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let (lo, hi) = range(lines[1], "Conservative range: ");
    assert!((lo * 10.0 / suggested - 1.0).abs() < 0.01 && hi == suggested, "{}", lines[1]);
    let (lo, hi) = range(lines[2], "Aggressive range: ");
    assert!(lo == suggested && (hi / (2.0 * suggested) - 1.0).abs() < 0.01, "{}", lines[2]);

    let csv = std::fs::read_to_string(dir.path().join("lr_find.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "step,lr,loss,smoothed_loss");
    assert!(rows.len() > 30 && rows.len() <= 61, "{} rows", rows.len());
    let first: Vec<f64> = rows[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!((first[0], first[1]), (0.0, 1e-6), "the sweep starts at min_lr");
    let swept = |r: &&str| r.split(',').nth(1).unwrap().parse::<f64>().unwrap();
    assert!(rows.iter().skip(1).any(|r| (swept(r) / suggested - 1.0).abs() < 0.005), "the suggestion is a swept rate");
    let png = std::fs::read(dir.path().join("lr_find.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // No training run was started there.
    assert!(!dir.path().join("training.jsonl").exists());
}
