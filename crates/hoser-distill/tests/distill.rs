//! The distilled HOSER run (`hoser-distill` without a subcommand) end to end on the bundled
//! simulated Helsinki trips: λ = 0 is hoser-vanilla bit for bit, a SIGKILLed run resumes to the
//! uninterrupted result, a changed setting is refused (or archived with `--on-mismatch fresh`),
//! a corrupt `checkpoint_latest` falls back to the last `epoch_N`, the cached and online teacher
//! agree, the teacher cache is invalidated when it should be, and careless input gets one clear
//! error.
//!
//! One teacher (2 epochs of the demo config) is trained per test binary and shared. Students use
//! the smoke config's small embeddings (the model is smaller, every code path is the same) and
//! batch 32, so the 140 trips give 5 steps per epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use checkpoints::CheckpointFile;
use serde_json::Value;

/// Steps per epoch: 140 training trips in batches of 32.
const STEPS_PER_EPOCH: u64 = 5;

/// Everything in `--output-dir`, no progress bar.
const QUIET: [&str; 6] =
    ["--set", "logging.progress=off", "--set", "logging.log_dir=null", "--set", "logging.tensorboard_dir=null"];

/// The small embeddings of configs/smoke/hoser-vanilla.yaml.
const SMALL: [&str; 10] = [
    "--set",
    "model.road_id_emb_dim=16",
    "--set",
    "model.len_emb_dim=4",
    "--set",
    "model.type_emb_dim=4",
    "--set",
    "model.lon_emb_dim=4",
    "--set",
    "model.lat_emb_dim=4",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hoser-distill"));
    c.current_dir(root());
    c
}

/// A teacher trained by `hoser-distill teacher` with `extra` flags, in a directory under the
/// target's tmp dir that lives as long as the test process.
fn train_teacher(extra: &[&str]) -> PathBuf {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = dir.path().join("lmtad");
    let mut c = bin();
    c.args(["teacher", "--config", "configs/lmtad/helsinki_test.yaml", "--output-dir"]).arg(&out);
    c.args(["--set", "logging.progress=off"]).args(extra);
    run(c);
    assert!(out.join("teacher.safetensors").is_file());
    // Kept for the whole process; removed with the target directory.
    std::mem::forget(dir);
    out
}

/// The teacher every test distils from (2 epochs of the demo config, seed 42).
fn teacher() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| train_teacher(&["--epochs", "2"]))
}

/// Another teacher (seed 3, 1 epoch): other weights, same token map.
fn other_teacher() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| train_teacher(&["--epochs", "1", "--seed", "3"]))
}

/// The flags every student run shares: demo config, 2 epochs, small model, all in `out`.
fn student_args(c: &mut Command, out: &Path) {
    student_epochs(c, out, 2);
}

fn student_epochs(c: &mut Command, out: &Path, epochs: u64) {
    student_budget(c, out, &["--epochs", &epochs.to_string()]);
}

/// `budget`: `--epochs N` or `--max-steps N` (the two together are refused).
fn student_budget(c: &mut Command, out: &Path, budget: &[&str]) {
    c.args(["--config", "configs/hoser/helsinki_test.yaml", "--output-dir"]).arg(out);
    c.args(budget).args(QUIET).args(SMALL);
}

/// `hoser-distill` distilling from the shared teacher into `out`, 2 epochs.
fn distill(out: &Path) -> Command {
    distill_epochs(out, 2)
}

fn distill_epochs(out: &Path, epochs: u64) -> Command {
    let mut c = bin();
    student_epochs(&mut c, out, epochs);
    c.arg("--teacher").arg(teacher());
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed ({}): {}", out.status, stderr(&out));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `c`, expecting it to fail with `code`; returns its stderr.
fn fails(mut c: Command, code: i32) -> String {
    let out = c.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{c:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn events(dir: &Path) -> Vec<Value> {
    trainer::telemetry::read_events(dir).unwrap_or_else(|e| panic!("{e}")).events
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn step_of(e: &Value) -> u64 {
    e["step"].as_u64().unwrap_or_else(|| panic!("no step in {e}"))
}

fn bits(e: &Value, pointer: &str) -> u64 {
    e.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("no {pointer} in {e}")).to_bits()
}

/// The events of each process that wrote to the log: split at `run_start` and `resume`.
fn segments(events: &[Value]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    for e in events {
        if e["event"] == "run_start" || e["event"] == "resume" || out.is_empty() {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(e.clone());
    }
    out
}

/// Every tensor of a checkpoint or export, by name: (dtype, shape, little-endian bytes).
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let file = CheckpointFile::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!file.tensors.is_empty(), "{}: no tensors", path.display());
    file.tensors.into_iter().map(|t| (t.name, (format!("{:?}", t.dtype), t.shape, t.data.to_vec()))).collect()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>(), "{} vs {}", a.display(), b.display());
    for (name, x) in &ta {
        assert!(x == &tb[name], "tensor {name} differs: {} vs {}", a.display(), b.display());
    }
}

/// Every file under `dir` (relative path → bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in snapshot(from) {
        let path = to.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// The step a resumed run continues from, read from its `✅ Valid checkpoint found` line.
fn resumed_step(err: &str) -> (u64, String) {
    let line = err
        .lines()
        .find(|l| l.contains("✅ Valid checkpoint found: will resume from epoch"))
        .unwrap_or_else(|| panic!("no resume line in: {err}"));
    let step = line.split("(step ").nth(1).and_then(|s| s.split(',').next()).and_then(|s| s.parse().ok());
    (step.unwrap_or_else(|| panic!("no step in {line}")), line.to_string())
}

/// The teacher id a distilled run's mode records: CRC-32C over the CRCs of its weights and map.
fn teacher_id(dir: &Path) -> String {
    let (w, m) = hoser_distill::distill::teacher_checksums(dir).unwrap();
    format!("{:08x}", crc32c::crc32c(&[w.to_le_bytes(), m.to_le_bytes()].concat()))
}

/// The hoser-vanilla binary of this target directory. Cargo builds it when hoser-vanilla's tests
/// are part of the same `cargo test` (`--workspace`, as `cargo xtask ci` runs, or `cargo xtask ci
/// --stage hoser-distill`, which tests `-p hoser-vanilla` too). It is not built from here: a
/// nested `cargo build -p hoser-vanilla` resolves burn's features for another package selection and
/// rebuilds the whole stack in the shared target directory.
fn vanilla_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let distill = PathBuf::from(env!("CARGO_BIN_EXE_hoser-distill"));
        let path = distill.with_file_name(format!("hoser-vanilla{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.is_file(),
            "{} is missing: run these tests together with hoser-vanilla's (`cargo test -p hoser-distill -p \
             hoser-vanilla`), which builds it",
            path.display()
        );
        path
    })
}

/// With λ = 0 no teacher is read (the teacher path does not even exist) and the run is
/// hoser-vanilla's with the same config, seed and budget: every step's loss, loss terms, gradient
/// norm and learning rate, every validation metric and every tensor of the last epoch's
/// checkpoint, of `checkpoint_latest` and of the best export are bit for bit the same.
#[test]
fn lambda_zero_equals_hoser_vanilla_bit_for_bit() {
    let vanilla = vanilla_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (d, v) = (tmp.path().join("distill"), tmp.path().join("vanilla"));
    let mut c = bin();
    student_args(&mut c, &d);
    c.arg("--teacher").arg(tmp.path().join("no-teacher-here")).args(["--set", "distill.lambda=0"]);
    let o = run(c);
    assert!(stderr(&o).contains("no teacher is read"), "{}", stderr(&o));
    let mut c = Command::new(vanilla);
    c.current_dir(root());
    student_args(&mut c, &v);
    run(c);

    let (de, ve) = (events(&d), events(&v));
    let (ds, vs) = (of_kind(&de, "train_step"), of_kind(&ve, "train_step"));
    assert_eq!(ds.len(), 2 * STEPS_PER_EPOCH as usize);
    assert_eq!(ds.len(), vs.len());
    for (a, b) in ds.iter().zip(&vs) {
        assert_eq!(step_of(a), step_of(b));
        for p in ["/loss", "/grad_norm", "/lr"] {
            assert_eq!(bits(a, p), bits(b, p), "{p} at step {}: {a} vs {b}", step_of(a));
        }
        // Seed 002's names for hoser-vanilla's terms.
        assert_eq!(bits(a, "/metrics/loss_next_step"), bits(b, "/metrics/loss_ce"));
        assert_eq!(bits(a, "/metrics/loss_time_pred"), bits(b, "/metrics/loss_time"));
        assert!(a["metrics"].get("loss_kl").is_none(), "λ = 0 computes no KL: {a}");
    }
    let (dv, vv) = (of_kind(&de, "validation"), of_kind(&ve, "validation"));
    assert_eq!(dv.len(), 2);
    assert_eq!(dv.len(), vv.len());
    for (a, b) in dv.iter().zip(&vv) {
        assert_eq!(a["metrics"], b["metrics"]);
        for k in a["metrics"].as_object().unwrap().keys() {
            assert_eq!(bits(a, &format!("/metrics/{k}")), bits(b, &format!("/metrics/{k}")), "{k}");
        }
    }
    for f in ["epoch_2.safetensors", "best.safetensors", "checkpoint_latest.safetensors"] {
        assert_same_tensors(&d.join(f), &v.join(f));
    }
}

/// A mid-epoch checkpoint, then SIGKILL; the very same command resumes (with seed 002's console
/// lines) and ends where an uninterrupted run with the same config ends: the losses of every step
/// (each step exactly once across the two processes) and every final tensor, bit for bit.
#[test]
fn kill_9_mid_epoch_then_the_same_command_equals_an_uninterrupted_run() {
    use std::os::unix::process::ExitStatusExt as _;
    let tmp = tempfile::tempdir().unwrap();
    // Saves every 2 steps (mid-epoch at 2, 4, 6, 8), each held 200 ms before it becomes visible so
    // the kill lands before the epoch's end. Both runs have the same config.
    let command = |out: &Path| {
        let mut c = distill(out);
        c.args(["--set", "checkpoint.every_n_steps=2", "--set", "debug.save_delay_ms=200"]);
        c
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(command(&a));

    let mut child = command(&b).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let checkpointed = loop {
        let steps: Vec<u64> = std::fs::read_to_string(b.join("training.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "checkpoint")
            .map(|e| step_of(&e))
            .collect();
        if let Some(&s) = steps.iter().find(|&&s| s % STEPS_PER_EPOCH != 0) {
            break s;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run B ended ({status}) before a mid-epoch checkpoint");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "run B never checkpointed");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(of_kind(&events(&b), "run_end").is_empty(), "run B finished before the kill");

    let o = run(command(&b));
    let err = stderr(&o);
    assert!(err.contains("✅ Valid checkpoint found: will resume from epoch"), "{err}");
    assert!(err.contains("✅ Resumed from checkpoint: epoch"), "{err}");
    let (resumed, line) = resumed_step(&err);
    assert!(resumed >= checkpointed && resumed % STEPS_PER_EPOCH != 0, "not a mid-epoch resume: {line}");

    let (ea, eb) = (events(&a), events(&b));
    let straight = of_kind(&ea, "train_step");
    assert_eq!(straight.iter().map(|e| step_of(e)).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let parts = segments(&eb);
    assert_eq!(parts.len(), 2, "one killed process, one resumed");
    assert_eq!(parts[1][0]["event"], "resume");
    let killed = of_kind(&parts[0], "train_step");
    let after = of_kind(&parts[1], "train_step");
    // Before the checkpoint from the killed process, after it from the resumed one: each step once.
    let union: Vec<&Value> = killed.iter().filter(|e| step_of(e) <= resumed).chain(after.iter()).copied().collect();
    assert_eq!(union.iter().map(|e| step_of(e)).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(after.first().map(|e| step_of(e)), Some(resumed + 1));
    for (x, y) in union.iter().zip(&straight) {
        for p in ["/loss", "/grad_norm", "/lr", "/metrics/loss_kl", "/metrics/loss_next_step"] {
            assert_eq!(bits(x, p), bits(y, p), "{p} at step {}", step_of(x));
        }
    }
    // Steps the killed process did past the checkpoint are redone identically.
    for x in killed.iter().filter(|e| step_of(e) > resumed) {
        assert_eq!(bits(x, "/loss"), bits(straight[step_of(x) as usize - 1], "/loss"));
    }
    let val = |e: &[Value]| of_kind(e, "validation").iter().map(|v| v["metrics"].clone()).collect::<Vec<_>>();
    assert_eq!(val(&eb), val(&ea));
    for f in ["checkpoint_latest.safetensors", "epoch_2.safetensors", "best.safetensors"] {
        assert_same_tensors(&a.join(f), &b.join(f));
    }
}

/// The `mode …` lines of a refusal.
fn mode_lines(err: &str) -> Vec<String> {
    err.lines().map(str::trim).filter(|l| l.starts_with("- mode")).map(String::from).collect()
}

/// A changed distillation setting, teacher or seed is refused (exit 1) with one line per
/// difference, and the earlier run's files are left byte for byte as they were.
#[test]
fn a_changed_distillation_setting_is_refused_listing_each_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(distill(&out));
    let before = snapshot(&out);
    assert!(before.contains_key(Path::new("checkpoint_latest.safetensors")));
    assert!(before.contains_key(Path::new("config.yaml")));

    let mut c = distill(&out);
    c.args(["--set", "distill.lambda=0.02", "--set", "distill.window=3"]);
    let err = fails(c, 1);
    assert!(err.contains("checkpoint_latest.safetensors: checkpoint belongs to a different run"), "{err}");
    assert_eq!(
        mode_lines(&err),
        ["- mode lambda: checkpoint 0.01, this run 0.02", "- mode window: checkpoint 4, this run 3"],
        "{err}"
    );
    assert!(snapshot(&out) == before, "a refused run changed the run directory");

    let mut c = bin();
    student_args(&mut c, &out);
    c.arg("--teacher").arg(other_teacher());
    let err = fails(c, 1);
    let line =
        format!("- mode teacher: checkpoint {}, this run {}", teacher_id(teacher()), teacher_id(other_teacher()));
    assert_eq!(mode_lines(&err), [line], "{err}");
    assert!(snapshot(&out) == before, "a refused run changed the run directory");

    let mut c = distill(&out);
    c.args(["--seed", "7"]);
    let err = fails(c, 1);
    assert!(err.contains("seed: checkpoint 42, this run 7"), "{err}");
    assert!(mode_lines(&err).is_empty(), "{err}");
    assert!(snapshot(&out) == before, "a refused run changed the run directory");
}

/// `--on-mismatch fresh`: the earlier run moves whole, byte for byte, into `archived/run_*`, and
/// the new settings' run starts from step 1.
#[test]
fn on_mismatch_fresh_archives_the_previous_run_and_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(distill(&out));
    let before = snapshot(&out);

    let mut c = distill(&out);
    c.args(["--set", "distill.lambda=0.02", "--set", "distill.window=3", "--on-mismatch", "fresh"]);
    let err = stderr(&run(c));
    assert!(err.contains("archived the previous run to"), "{err}");
    assert!(!err.contains("Valid checkpoint found"), "{err}");
    let archives: Vec<PathBuf> = std::fs::read_dir(out.join("archived")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(archives[0].file_name().unwrap().to_string_lossy().starts_with("run_"));
    assert!(snapshot(&archives[0]) == before, "the archive is not the earlier run, whole and unchanged");

    let e = events(&out);
    assert_eq!(of_kind(&e, "run_start").len(), 1, "a new log");
    assert!(of_kind(&e, "resume").is_empty());
    let mode = e[0]["identity"]["mode"].as_str().unwrap();
    assert!(mode.contains("lambda=0.02") && mode.contains("window=3"), "{mode}");
    let steps: Vec<u64> = of_kind(&e, "train_step").iter().map(|s| step_of(s)).collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>());
    let latest = CheckpointFile::read(&out.join("checkpoint_latest.safetensors")).unwrap();
    assert_eq!(latest.meta.identity.mode, mode);
}

/// A garbled `checkpoint_latest` is skipped with a warning naming it; the run resumes from the
/// last epoch's checkpoint, and ends exactly where resuming from an intact latest ends.
#[test]
fn a_corrupt_checkpoint_latest_falls_back_to_the_newest_valid_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, intact) = (tmp.path().join("run"), tmp.path().join("intact"));
    run(distill(&out));
    copy_dir(&out, &intact);
    let epoch_2 = std::fs::read(out.join("epoch_2.safetensors")).unwrap();
    let latest = out.join("checkpoint_latest.safetensors");
    let mut bytes = std::fs::read(&latest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].iter_mut().for_each(|b| *b = !*b);
    std::fs::write(&latest, &bytes).unwrap();

    let third = |dir: &Path| stderr(&run(distill_epochs(dir, 3)));
    let err = third(&out);
    let warning = err
        .lines()
        .find(|l| l.contains("WARN") && l.contains("skipping checkpoint"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(warning.contains("checkpoint_latest.safetensors"), "{warning}");
    let (step, line) = resumed_step(&err);
    assert_eq!(step, 2 * STEPS_PER_EPOCH, "{line}");
    assert!(line.contains("will resume from epoch 3") && line.contains("epoch_2.safetensors"), "{line}");
    assert!(err.contains("✅ Resumed from checkpoint: epoch 3"), "{err}");
    let parts = segments(&events(&out));
    assert_eq!(parts.len(), 2);
    let resumed: Vec<u64> = of_kind(&parts[1], "train_step").iter().map(|e| step_of(e)).collect();
    assert_eq!(resumed, (11..=15).collect::<Vec<_>>());
    assert!(out.join("epoch_3.safetensors").is_file());
    // The resume source is kept as it was (retention would otherwise keep only the last epoch).
    let keeping = format!("keeping {}: it is this run's resume source", out.join("epoch_2.safetensors").display());
    assert!(err.contains(&keeping), "{err}");
    assert_eq!(std::fs::read(out.join("epoch_2.safetensors")).unwrap(), epoch_2);

    let err = third(&intact);
    assert!(resumed_step(&err).1.contains("checkpoint_latest.safetensors"), "{err}");
    for f in ["checkpoint_latest.safetensors", "epoch_3.safetensors"] {
        assert_same_tensors(&out.join(f), &intact.join(f));
    }
}

/// `distill.cache: false` runs the teacher on every batch; its per-step KL and loss agree with
/// the cached probabilities' run to 1e-6 (relative), for every step of a 2-epoch run.
#[test]
fn cached_and_online_teacher_give_the_same_kl() {
    let tmp = tempfile::tempdir().unwrap();
    let (cached, online) = (tmp.path().join("cached"), tmp.path().join("online"));
    let mut c = distill(&cached);
    c.arg("--set").arg(format!("data.cache_dir={}", tmp.path().join("cache").display()));
    let err = stderr(&run(c));
    assert!(err.contains("teacher probabilities cached in"), "{err}");
    let mut c = distill(&online);
    c.args(["--set", "distill.cache=false"]);
    let err = stderr(&run(c));
    assert!(err.contains("the teacher runs on every batch"), "{err}");

    let (ec, eo) = (events(&cached), events(&online));
    let (sc, so) = (of_kind(&ec, "train_step"), of_kind(&eo, "train_step"));
    assert_eq!(sc.len(), 10);
    assert_eq!(sc.len(), so.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs());
    let f = |e: &Value, p: &str| e.pointer(p).and_then(Value::as_f64).unwrap();
    let mut worst = 0f64;
    for (a, b) in sc.iter().zip(&so) {
        let (ka, kb) = (f(a, "/metrics/loss_kl"), f(b, "/metrics/loss_kl"));
        assert!(ka > 0.0, "the KL is not vacuous: {a}");
        assert!(close(ka, kb), "loss_kl at step {}: cached {ka}, online {kb}", step_of(a));
        assert!(close(f(a, "/loss"), f(b, "/loss")), "loss at step {}: {a} vs {b}", step_of(a));
        worst = worst.max((ka - kb).abs() / ka);
    }
    eprintln!("largest relative loss_kl difference, cached vs online: {worst:e}");
}

/// The teacher cache in `data.cache_dir`: written once, read by a later run (giving the same
/// loss bit for bit), one file per window (another window leaves the first file alone, and a
/// return to it is a hit), rewritten when the teacher changes, and a corrupt file is a warning
/// and a recomputation, never a panic.
#[test]
fn the_teacher_cache_is_rebuilt_when_the_teacher_changes_and_kept_per_window() {
    use hoser_distill::distill::{DistillSteps, teacher_cache_file};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let file = cache.join(teacher_cache_file(4, DistillSteps::All));
    assert_eq!(file.file_name().unwrap(), "teacher-probs-w4-all.bin");
    let file3 = cache.join(teacher_cache_file(3, DistillSteps::All));
    let mut n = 0;
    // A one-step run in a new output directory; its stderr and first loss.
    let mut step = |teacher: &Path, extra: &[&str]| {
        n += 1;
        let out = tmp.path().join(format!("run{n}"));
        let mut c = bin();
        student_budget(&mut c, &out, &["--max-steps", "1"]);
        c.arg("--teacher").arg(teacher).args(extra);
        c.arg("--set").arg(format!("data.cache_dir={}", cache.display()));
        let err = stderr(&run(c));
        assert!(!err.contains("panicked"), "{err}");
        let steps = events(&out);
        let steps = of_kind(&steps, "train_step");
        assert_eq!(steps.len(), 1);
        let loss = bits(steps[0], "/loss");
        (err, loss)
    };
    let cached_in = format!("teacher probabilities cached in {}", file.display());
    let read_from = format!("teacher probabilities: read from {}", file.display());

    let (err, first) = step(teacher(), &[]);
    assert!(err.contains(&cached_in), "{err}");
    let written = std::fs::read(&file).unwrap();

    let (err, loss) = step(teacher(), &[]);
    assert!(err.contains(&read_from) && !err.contains("computed in"), "{err}");
    assert_eq!(loss, first, "the cached probabilities give the computed ones' loss");
    assert_eq!(std::fs::read(&file).unwrap(), written, "a hit does not rewrite the cache");

    let cached_in3 = format!("teacher probabilities cached in {}", file3.display());
    let read_from3 = format!("teacher probabilities: read from {}", file3.display());
    let (err, _) = step(teacher(), &["--set", "distill.window=3"]);
    assert!(err.contains(&cached_in3), "{err}");
    let window3 = std::fs::read(&file3).unwrap();
    assert_ne!(window3, written);
    assert_eq!(std::fs::read(&file).unwrap(), written, "window 4's file is left alone");
    let (err, _) = step(teacher(), &["--set", "distill.window=3"]);
    assert!(err.contains(&read_from3), "{err}");
    let (err, loss) = step(teacher(), &[]);
    assert!(err.contains(&read_from) && loss == first, "back to window 4: a hit, {err}");

    let (err, _) = step(other_teacher(), &["--set", "distill.window=3"]);
    assert!(err.contains("stale (teacher weights changed)") && err.contains(&cached_in3), "{err}");
    assert_ne!(std::fs::read(&file3).unwrap(), window3);

    std::fs::write(&file, b"not a cache at all").unwrap();
    let (err, _) = step(teacher(), &[]);
    let warning = err.lines().find(|l| l.contains("corrupt")).unwrap_or_else(|| panic!("{err}"));
    assert!(warning.contains("WARN") && warning.contains("bad magic"), "{warning}");
    assert!(err.contains(&cached_in), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), written, "recomputed and rewritten as the first time");

    // A cut-off payload.
    std::fs::write(&file, &written[..written.len() - 9]).unwrap();
    let (err, loss) = step(teacher(), &[]);
    assert!(err.contains("corrupt (payload length differs from the manifest)"), "{err}");
    assert_eq!(loss, first);
    assert_eq!(std::fs::read(&file).unwrap(), written);
}

/// Careless input: a missing teacher, a teacher of another dataset, bad distillation keys and a
/// window longer than the teacher's context are each one clear error, and nothing is trained.
#[test]
fn careless_teachers_and_distillation_settings_are_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let no_training = |out: &Path| {
        assert!(!out.join("training.jsonl").exists() && !out.join("checkpoint_latest.safetensors").exists());
    };
    let errors = |err: &str| err.lines().filter(|l| l.contains("error")).count();

    // No such directory.
    let missing = tmp.path().join("nonexistent");
    let out = tmp.path().join("a");
    let mut c = bin();
    student_args(&mut c, &out);
    c.arg("--teacher").arg(&missing);
    let err = fails(c, 1);
    assert_eq!(errors(&err), 1, "{err}");
    assert!(
        err.contains(&format!("the teacher: {}: no model_config.json", missing.display()))
            && err.contains("model_config.json"),
        "{err}"
    );
    no_training(&out);

    // A directory without the weights.
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    for f in ["model_config.json", "token_map.json"] {
        std::fs::copy(teacher().join(f), partial.join(f)).unwrap();
    }
    let mut c = bin();
    student_args(&mut c, &out);
    c.arg("--teacher").arg(&partial);
    let err = fails(c, 1);
    assert_eq!(errors(&err), 1, "{err}");
    assert!(err.contains(&partial.display().to_string()) && err.contains("teacher.safetensors"), "{err}");
    no_training(&out);

    // A teacher whose token map was written for another dataset.
    let foreign = tmp.path().join("foreign");
    copy_dir(teacher(), &foreign);
    let mut c = bin();
    c.args(["teacher-map", "--dataset", "other_name", "--overwrite", "--teacher"]).arg(&foreign);
    c.args(["--data-dir", "crates/hoser/tests/fixtures/libcity/helsinki_test"]);
    run(c);
    let mut c = bin();
    student_args(&mut c, &out);
    c.arg("--teacher").arg(&foreign);
    let err = fails(c, 1);
    assert_eq!(errors(&err), 1, "{err}");
    assert!(err.contains("`other_name`") && err.contains("`helsinki_test`"), "{err}");
    no_training(&out);

    // Bad keys: all reported, by key, before anything is read.
    for validate in [true, false] {
        let mut c = distill(&out);
        c.args(["--set", "distill.window=0", "--set", "distill.temperature=-1"]);
        if validate {
            c.arg("--validate-config");
        }
        let err = fails(c, 2);
        assert!(err.contains("distill.window: expected at least 1 token of history"), "{err}");
        assert!(err.contains("distill.temperature: expected a positive temperature, got -1"), "{err}");
        no_training(&out);
    }

    // Longer than the teacher's context (block_size 1024).
    let mut c = distill(&out);
    c.args(["--set", "distill.window=1025"]);
    let err = fails(c, 1);
    assert_eq!(errors(&err), 1, "{err}");
    assert!(err.contains("distill.window: 1025 tokens of history") && err.contains("at most 1024"), "{err}");
    no_training(&out);
}

/// `hoser-distill tune` with the reference search space (`configs/hoser/tune_distill.yaml`, its
/// `distill.*` keys being aliases of `loss.distill.*`): every trial is a distilled run with the
/// sampled λ, τ and window, seed 42 + trial number, in the study's `complete/` directory.
#[test]
fn tune_trials_are_distilled_runs_with_the_sampled_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study");
    let mut c = bin();
    c.args(["tune", "--config", "configs/hoser/helsinki_test.yaml", "--epochs", "1"])
        .args(["--space", "configs/hoser/tune_distill.yaml", "--n-trials", "2", "--pruner", "none", "--study"])
        .arg(&study)
        .args(SMALL)
        .arg("--teacher")
        .arg(teacher());
    run(c);
    let journal = std::fs::read_to_string(study.join("journal.jsonl")).unwrap();
    let started: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "trial_started")
        .collect();
    assert_eq!(started.len(), 2);
    for t in &started {
        let n = t["number"].as_u64().unwrap();
        let dir = study.join("complete").join(format!("trial_{n:03}"));
        let config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("config.yaml")).unwrap()).unwrap();
        assert_eq!(config["seed"].as_u64(), Some(42 + n));
        let distill = &config["loss"]["distill"];
        let params = &t["params"];
        assert_eq!(distill["lambda"].as_f64().unwrap().to_bits(), params["distill.lambda"].as_f64().unwrap().to_bits());
        assert_eq!(
            distill["temperature"].as_f64().unwrap().to_bits(),
            params["distill.temperature"].as_f64().unwrap().to_bits()
        );
        assert_eq!(distill["window"].as_u64(), params["distill.window"].as_u64());
        let accuracies: Vec<f64> = of_kind(&events(&dir), "validation")
            .iter()
            .map(|e| e["metrics"]["val_next_step_acc"].as_f64().unwrap())
            .collect();
        assert_eq!(accuracies.len(), 1, "one epoch, one validation");
        let value = journal
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["event"] == "completed" && e["number"] == n)
            .unwrap()["value"]
            .as_f64()
            .unwrap();
        assert_eq!(value, accuracies[0], "the objective is the run's validation accuracy");
    }
    assert_ne!(started[0]["params"], started[1]["params"]);
}
