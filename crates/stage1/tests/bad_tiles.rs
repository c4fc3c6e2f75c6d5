//! The `stage1` binary on broken tile sets: every bad tile is an error naming its file, never a
//! panic. Header problems are found when the task is built (before any step); a tile that fails
//! to decode mid-run stops the run with a `data_error` event and `checkpoint_latest` of the last
//! good step.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tiling::npz::{self, Dtype};
use tiling::tiler::Manifest;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const LOWVR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/train/stage1.lowvr.yaml");

/// 6 synthetic 64 px scenes cut into 32 px tiles, made once; each test breaks its own copy.
fn template(size: usize) -> &'static Path {
    static T32: OnceLock<tempfile::TempDir> = OnceLock::new();
    static T8: OnceLock<tempfile::TempDir> = OnceLock::new();
    static T16: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = match size {
        32 => &T32,
        16 => &T16,
        _ => &T8,
    };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        stage1::write_synthetic_tiles(dir.path(), 6, 64, size, 5).expect("synthetic tiles");
        dir
    })
    .path()
}

fn copy_of(size: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tiles");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(template(size)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    (tmp, data)
}

fn manifest(data: &Path) -> Manifest {
    Manifest::read(&data.join("manifest.json")).unwrap()
}

/// The `index`-th (manifest order) tile of `split` ("train" / "val").
fn nth(data: &Path, split: &str, index: usize) -> PathBuf {
    let m = manifest(data);
    let t = m.tiles.iter().filter(|t| format!("{:?}", t.split).to_lowercase() == split).nth(index).unwrap();
    data.join(&t.npz)
}

fn stage1(data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stage1"))
        .current_dir(ROOT)
        .args(["--config", LOWVR, "--data-dir"])
        .arg(data)
        .args(["--set", "model.size=test", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-3"])
        .args(["--warmup-steps", "1", "--set", "logging.progress=plain", "--set", "logging.tensorboard=false"])
        .args(["--set", "data.num_workers=1", "--set", "data.val_batch_size=2", "--set", "data.baseline_tiles=1"])
        .args(["--set", "model.timesteps=2", "--set", "model.min_timesteps=1"])
        .arg("--output-dir")
        .arg(out)
        .args(extra)
        .output()
        .expect("stage1 starts")
}

/// Exit 1 with every needle in stderr, no panic, and no training step taken.
fn refused_before_training(data: &Path, extra: &[&str], needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = stage1(data, &out, &[&["--steps", "2", "--val-every", "2"], extra].concat());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "`{n}` not in:\n{stderr}");
    }
    assert!(!out.join("checkpoints").exists(), "no checkpoint before training");
}

/// Rewrites the NPZ at `path`: `drop` removes an entry, `replace` swaps one's bytes.
fn rewrite(path: &Path, drop: Option<&str>, replace: Option<(&str, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        if drop == Some(name.as_str()) {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some((n, new)) = &replace
            && *n == name
        {
            data = new.clone();
        }
        out.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(&data).unwrap();
    }
    std::fs::write(path, out.finish().unwrap().into_inner()).unwrap();
}

fn npy(descr: &str, fortran: bool, h: usize, w: usize, item: usize) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({h}, {w}), }}",
        if fortran { "True" } else { "False" }
    );
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.resize(b.len() + h * w * item, 0);
    b
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_later_tile_with_bad_headers_is_refused_when_the_task_is_built() {
    type Break = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "truncated",
            Box::new(|p| {
                let b = std::fs::read(p).unwrap();
                std::fs::write(p, &b[..b.len() / 3]).unwrap()
            }),
            "not a readable NPZ",
        ),
        ("not a zip", Box::new(|p| std::fs::write(p, b"hello").unwrap()), "not a readable NPZ"),
        ("missing band", Box::new(|p| rewrite(p, Some("s2_b4.npy"), None)), "missing key `s2_b4`"),
        ("<f8", Box::new(|p| rewrite(p, None, Some(("s1_vh.npy", npy("<f8", false, 32, 32, 8))))), "`<f8`"),
        ("<i4", Box::new(|p| rewrite(p, None, Some(("s1_vh.npy", npy("<i4", false, 32, 32, 4))))), "`<i4`"),
        (">f4", Box::new(|p| rewrite(p, None, Some(("s2_b2.npy", npy(">f4", false, 32, 32, 4))))), "`>f4`"),
        ("fortran", Box::new(|p| rewrite(p, None, Some(("s2_b3.npy", npy("<f4", true, 32, 32, 4))))), "fortran_order"),
        (
            "band sizes",
            Box::new(|p| rewrite(p, None, Some(("s2_b8.npy", npy("<f4", false, 16, 32, 4))))),
            "`s2_b8` has shape (16, 32)",
        ),
    ];
    for (what, broken, needle) in cases {
        let (_tmp, data) = copy_of(32);
        let bad = nth(&data, "train", 3);
        broken(&bad);
        eprintln!("case {what}");
        refused_before_training(&data, &[], &[&name(&bad), needle]);
    }
    // A corrupt validation tile is found before training too.
    let (_tmp, data) = copy_of(32);
    let bad = nth(&data, "val", 1);
    rewrite(&bad, Some("s1_vv.npy"), None);
    refused_before_training(&data, &[], &[&name(&bad), "missing key `s1_vv`"]);
}

#[test]
fn tiles_of_another_size_or_too_small_are_config_errors_naming_the_minimum() {
    // A later training tile of another size, with and without data.tile_size.
    let (_tmp, data) = copy_of(32);
    let bad = nth(&data, "train", 2);
    let mut t = npz::read_tile(&bad).unwrap();
    t.height = 16;
    t.s1.truncate(2 * 16 * 32);
    t.s2.truncate(4 * 16 * 32);
    t.s1 = [&t.s1[..16 * 32], &npz::read_tile(&bad).unwrap().s1[32 * 32..48 * 32]].concat();
    t.s2 = (0..4).flat_map(|b| npz::read_tile(&bad).unwrap().s2[b * 1024..b * 1024 + 512].to_vec()).collect();
    npz::write_tile(&data, &t, Dtype::F32).unwrap();
    refused_before_training(&data, &[], &[&name(&bad), "16x32", "one size"]);
    refused_before_training(&data, &["--set", "data.tile_size=32"], &[&name(&bad), "16x32"]);

    // All 32 px but data.tile_size says 64.
    let (_tmp, data) = copy_of(32);
    refused_before_training(&data, &["--set", "data.tile_size=64"], &["data.tile_size", "is 64", "32x32"]);

    // 8x8 tiles fit the test model's 8 px patches but not MS-SSIM's 11x11 window.
    let (_tmp, data) = copy_of(8);
    refused_before_training(&data, &[], &["8x8", "11x11", "MS-SSIM", ".npz"]);

    // 16 px tiles pass MS-SSIM's window but not LPIPS AlexNet's minimum input, which would
    // panic inside the trunk: refused before the weights are even read.
    let (_tmp, data) = copy_of(16);
    let any_file = nth(&data, "train", 0);
    let weights = format!("loss.lpips.weights={}", any_file.display());
    let min = losses::lpips::LpipsNet::Alex.min_input_size();
    refused_before_training(
        &data,
        &["--set", "loss.lpips_weight=0.1", "--set", "loss.lpips.net=alex", "--set", &weights],
        &["16x16", &format!("{min}x{min}"), "LPIPS"],
    );
}

#[test]
fn manifest_entries_that_are_missing_or_leave_the_directory_are_refused() {
    let (_tmp, data) = copy_of(32);
    let gone = nth(&data, "train", 4);
    std::fs::remove_file(&gone).unwrap();
    refused_before_training(&data, &[], &["manifest.json", &name(&gone), "does not exist"]);

    let (_tmp, data) = copy_of(32);
    let mut m = manifest(&data);
    m.tiles[3].npz = "../../../../etc/passwd".into();
    let id = m.tiles[3].tile_id.clone();
    std::fs::write(data.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    refused_before_training(&data, &[], &["manifest.json", &id, "../../../../etc/passwd"]);
}

/// Rewrites a tile with every value NaN (valid NPZ, matching checksums in sidecar and manifest).
fn nan_fill(data: &Path, path: &Path) {
    let mut t = npz::read_tile(path).unwrap();
    t.s1.iter_mut().chain(t.s2.iter_mut()).for_each(|v| *v = f32::NAN);
    npz::write_tile(data, &t, Dtype::F32).unwrap();
    let crc = npz::read_sidecar(&npz::sidecar_path(path)).unwrap().checksum.unwrap();
    let mut m = manifest(data);
    let file = name(path);
    m.tiles.iter_mut().filter(|e| e.npz == file).for_each(|e| e.checksum = crc.clone());
    std::fs::write(data.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

/// A run that fails mid-way: exit 1 naming the file, a `data_error` event, `checkpoint_latest`.
fn fails_mid_run(data: &Path, extra: &[&str], needles: &[&str]) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = stage1(data, &out, extra);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "`{n}` not in:\n{stderr}");
    }
    let jsonl = std::fs::read_to_string(out.join("training.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = jsonl.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let error = events.iter().find(|e| e["event"] == "data_error").expect("a data_error event");
    for n in needles {
        assert!(error["message"].as_str().unwrap().contains(n), "{error}");
    }
    let steps = events.iter().filter(|e| e["event"] == "train_step").count() as u64;
    let latest: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint_latest"))
        .collect();
    assert!(!latest.is_empty(), "checkpoint_latest written after {steps} steps");
    steps
}

#[test]
fn a_tile_that_fails_to_decode_mid_run_stops_with_a_checkpoint_and_exit_1() {
    // An all-NaN training tile (not the first, which start-up reads for the baseline).
    let (_tmp, data) = copy_of(32);
    let bad = nth(&data, "train", 9);
    nan_fill(&data, &bad);
    let steps = fails_mid_run(&data, &["--steps", "30", "--val-every", "100"], &[&name(&bad), "all-NaN"]);
    assert!(steps < 30, "stopped early");

    // A validation tile: the first validation fails after step 2.
    let (_tmp, data) = copy_of(32);
    let bad = nth(&data, "val", 2);
    nan_fill(&data, &bad);
    let steps = fails_mid_run(&data, &["--steps", "4", "--val-every", "2"], &[&name(&bad), "all-NaN"]);
    assert_eq!(steps, 2);

    // The manifest's checksum no longer matches the file.
    let (_tmp, data) = copy_of(32);
    let mut m = manifest(&data);
    let t = m.tiles.iter_mut().filter(|t| t.split == tiling::Split::Train).nth(7).unwrap();
    t.checksum = "0badc0de".into();
    let file = t.npz.clone();
    std::fs::write(data.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    fails_mid_run(&data, &["--steps", "30", "--val-every", "100"], &[&file, "checksum mismatch", "0badc0de"]);
}
