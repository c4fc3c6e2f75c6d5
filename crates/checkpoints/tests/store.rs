//! The checkpoint directory through its public API: retention over random metric sequences,
//! the resume source, disk-full saves, and the search for the newest valid checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checkpoints::format::RawTensor;
use checkpoints::store::{TOP_K_DIR, newest_valid};
use checkpoints::{
    CheckpointFile, CheckpointStore, Kind, Meta, Mode, RetentionConfig, RunIdentity, SCHEMA_VERSION, Trigger,
};
use proptest::prelude::*;
use safetensors::Dtype;

fn file(step: u64, kind: Kind, payload: usize) -> CheckpointFile {
    CheckpointFile {
        meta: Meta {
            schema_version: SCHEMA_VERSION,
            kind,
            step,
            epoch: 0,
            metrics: BTreeMap::new(),
            identity: RunIdentity { seed: 1, dataset_id: "d".into(), mode: "train".into(), config_hash: "c".into() },
            created_unix: 0.0,
        },
        tensors: vec![RawTensor {
            name: "w".into(),
            dtype: Dtype::U8,
            shape: vec![payload],
            data: burn::tensor::Bytes::from_bytes_vec(vec![step as u8; payload]),
        }],
        blobs: BTreeMap::new(),
        extra: BTreeMap::new(),
    }
}

fn top_k_steps(dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(dir.join(TOP_K_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| n.rsplit_once("_step_").unwrap().1.trim_end_matches(".safetensors").parse().unwrap())
        .collect();
    steps.sort_unstable();
    steps
}

/// A scratch directory on tmpfs when there is one (fsync is cheap there).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() }
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![8 => -5.0f64..5.0, 1 => Just(f64::NAN), 1 => (-2i32..2).prop_map(f64::from)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Files on disk after random validations: the top-K directory holds exactly the K best
    /// (NaN worst, ties to the earlier) plus the resume source if it was pushed out; the
    /// resume source is never deleted; the best export always holds the best step.
    #[test]
    fn retention_on_disk_keeps_the_best_and_the_resume_source(
        k in 1usize..4,
        max in any::<bool>(),
        scores in prop::collection::vec(score(), 1..16),
        protect in 0usize..16,
    ) {
        let dir = scratch();
        let mode = if max { Mode::Max } else { Mode::Min };
        let config = RetentionConfig { keep_top_k: k, ..RetentionConfig::default() };
        let protect = protect % scores.len();
        let mut protected: Option<PathBuf> = None;
        let mut store = CheckpointStore::open(dir.path(), config.clone(), "m", mode, None).unwrap();
        let mut best: Option<(u64, f64)> = None;
        for (i, &v) in scores.iter().enumerate() {
            let step = i as u64 + 1;
            let is_best = best.is_none_or(|(_, b)| mode.is_better(v, b));
            if is_best {
                best = Some((step, v));
            }
            let report = store
                .save(step, &[Trigger::Validation { value: v, is_best }], || file(step, Kind::Resume, 8), || file(step, Kind::Weights, 8))
                .unwrap();
            if i == protect {
                // Resume from this step's top-K file (if it got one), as `--resume` would.
                protected = report.written.iter().find(|p| p.starts_with(dir.path().join(TOP_K_DIR))).cloned();
                if protected.is_some() {
                    store = CheckpointStore::open(dir.path(), config.clone(), "m", mode, protected.clone()).unwrap();
                }
            }
            if let Some(p) = &protected {
                prop_assert!(p.exists(), "the resume source {} was deleted", p.display());
            }
        }
        let key = |s: u64, v: f64| (v.is_nan(), if v.is_nan() { 0.0 } else if max { -v } else { v }, s);
        let mut ranked: Vec<(u64, f64)> = scores.iter().enumerate().map(|(i, &v)| (i as u64 + 1, v)).collect();
        ranked.sort_by(|a, b| key(a.0, a.1).partial_cmp(&key(b.0, b.1)).unwrap());
        let mut expected: Vec<u64> = ranked.iter().take(k).map(|r| r.0).collect();
        let on_disk = top_k_steps(dir.path());
        if let Some(p) = &protected {
            let s: u64 = p.to_string_lossy().rsplit_once("_step_").unwrap().1.trim_end_matches(".safetensors").parse().unwrap();
            if !expected.contains(&s) {
                expected.push(s);
            }
        }
        expected.sort_unstable();
        prop_assert_eq!(on_disk, expected);
        let exported = CheckpointFile::read(&dir.path().join("best.safetensors")).unwrap();
        prop_assert_eq!(exported.meta.step, best.unwrap().0);
        prop_assert_eq!(exported.meta.kind, Kind::Weights);
    }
}

#[test]
fn step_and_epoch_checkpoints_keep_the_last_n_and_latest_is_one_file() {
    let dir = scratch();
    let config = RetentionConfig {
        keep_top_k: 0,
        every_n_steps: Some(2),
        keep_last_n_steps: Some(2),
        per_epoch: true,
        keep_last_n_epochs: Some(1),
        ..RetentionConfig::default()
    };
    let mut store = CheckpointStore::open(dir.path(), config, "m", Mode::Min, None).unwrap();
    for step in 1..=10u64 {
        let mut triggers = Vec::new();
        if store.is_step_interval(step) {
            triggers.push(Trigger::StepInterval);
        }
        if step % 5 == 0 {
            triggers.push(Trigger::EpochEnd { epoch: step / 5 - 1 });
        }
        if !triggers.is_empty() {
            store.save(step, &triggers, || file(step, Kind::Resume, 4), || file(step, Kind::Weights, 4)).unwrap();
        }
    }
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checkpoint_latest.safetensors",
            "checkpoint_step_10.safetensors",
            "checkpoint_step_8.safetensors",
            "epoch_1.safetensors",
            "top_k"
        ]
    );
    assert_eq!(CheckpointFile::read(&dir.path().join("checkpoint_latest.safetensors")).unwrap().meta.step, 10);
    // Reopening rebuilds the bookkeeping from the files: the next save evicts step 8.
    let config = RetentionConfig {
        keep_top_k: 0,
        every_n_steps: Some(2),
        keep_last_n_steps: Some(2),
        ..RetentionConfig::default()
    };
    let mut store = CheckpointStore::open(dir.path(), config, "m", Mode::Min, None).unwrap();
    let report =
        store.save(12, &[Trigger::StepInterval], || file(12, Kind::Resume, 4), || file(12, Kind::Weights, 4)).unwrap();
    assert_eq!(report.removed, vec![dir.path().join("checkpoint_step_8.safetensors")]);
}

#[test]
fn auto_resume_skips_damaged_files_naming_them() {
    let dir = scratch();
    let mut store = CheckpointStore::open(dir.path(), RetentionConfig::default(), "m", Mode::Min, None).unwrap();
    for step in [1, 2] {
        store
            .save(
                step,
                &[Trigger::Validation { value: step as f64, is_best: step == 1 }],
                || file(step, Kind::Resume, 64),
                || file(step, Kind::Weights, 64),
            )
            .unwrap();
    }
    // Damage the newest copies: flip a byte in latest (step 2), truncate step 2's top-K copy.
    // (They are hard links to one file, so break the link first.)
    let latest = dir.path().join("checkpoint_latest.safetensors");
    let mut bytes = std::fs::read(&latest).unwrap();
    std::fs::remove_file(&latest).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&latest, &bytes).unwrap();
    let top2 = std::fs::read_dir(dir.path().join(TOP_K_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_step_2.safetensors"))
        .unwrap();
    let good = std::fs::read(&top2).unwrap();
    std::fs::remove_file(&top2).unwrap();
    std::fs::write(&top2, &good[..good.len() / 2]).unwrap();

    let mut skipped = Vec::new();
    let (path, found) = newest_valid(dir.path(), |e| skipped.push(e.to_string())).unwrap();
    assert_eq!(found.meta.step, 1, "fell back to the newest checkpoint that verifies: {}", path.display());
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().any(|s| s.contains("checkpoint_latest.safetensors") && s.contains("checksum")),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|s| s.contains("_step_2.safetensors")), "{skipped:?}");
}

/// A save that runs out of space leaves the previous checkpoint loadable and reports the
/// error naming the file. Uses a real 256 KiB tmpfs where this process may mount one (root),
/// and otherwise says so and checks the same through an injected ENOSPC in `atomic`'s tests.
#[test]
fn disk_full_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root); atomic::tests covers injected ENOSPC");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let config = RetentionConfig { keep_top_k: 0, export_best: None, ..RetentionConfig::default() };
    let mut store = CheckpointStore::open(dir.path(), config, "m", Mode::Min, None).unwrap();
    store.save(1, &[Trigger::Final], || file(1, Kind::Resume, 100 << 10), || unreachable!()).unwrap();
    // 200 KiB more does not fit next to the 100 KiB already there.
    let err = store.save(2, &[Trigger::Final], || file(2, Kind::Resume, 200 << 10), || unreachable!()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("checkpoint_latest.safetensors"), "{msg}");
    assert!(msg.contains("No space left"), "{msg}");
    let kept = CheckpointFile::read(&dir.path().join("checkpoint_latest.safetensors")).unwrap();
    assert_eq!(kept.meta.step, 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn foreign_files_are_refused_with_the_reason() {
    let dir = scratch();
    let plain = dir.path().join("notes.safetensors");
    std::fs::write(&plain, b"hello, not a checkpoint").unwrap();
    let err = CheckpointFile::read(&plain).unwrap_err().to_string();
    assert!(err.contains("notes.safetensors") && err.contains("not a trainyard checkpoint"), "{err}");

    let mine = RunIdentity { seed: 1, dataset_id: "d".into(), mode: "train".into(), config_hash: "c".into() };
    let theirs = RunIdentity { seed: 2, dataset_id: "e".into(), mode: "distill".into(), config_hash: "c".into() };
    let diffs = theirs.differences(&mine);
    assert_eq!(
        diffs,
        [
            "seed: checkpoint 2, this run 1",
            "dataset: checkpoint e, this run d",
            "mode: checkpoint distill, this run train"
        ]
    );
}
