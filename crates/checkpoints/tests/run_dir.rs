//! The checkpoint directory as seed 002 lays it out and as users get it wrong: the run
//! directory itself (`checkpoint.dir: .`) shared with the run's other files, 1-based
//! `epoch_N` names, independent files per retention name, and directories that cannot hold
//! checkpoints.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use checkpoints::format::RawTensor;
use checkpoints::store::{TOP_K_DIR, newest_valid};
use checkpoints::{
    CheckpointFile, CheckpointStore, Kind, Meta, Mode, RetentionConfig, RunIdentity, SCHEMA_VERSION, Trigger,
};
use safetensors::Dtype;

fn file(step: u64, epoch: u64, kind: Kind) -> CheckpointFile {
    CheckpointFile {
        meta: Meta {
            schema_version: SCHEMA_VERSION,
            kind,
            step,
            epoch,
            metrics: BTreeMap::new(),
            identity: RunIdentity { seed: 42, dataset_id: "d".into(), mode: "train".into(), config_hash: "c".into() },
            created_unix: 0.0,
        },
        tensors: vec![RawTensor {
            name: "w".into(),
            dtype: Dtype::U8,
            shape: vec![16],
            data: burn::tensor::Bytes::from_bytes_vec(vec![step as u8; 16]),
        }],
        blobs: BTreeMap::new(),
        extra: BTreeMap::new(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

/// A run directory as the trainer leaves it, plus an archived earlier run holding a newer
/// checkpoint and files of other writers, some with checkpoint-like names.
fn busy_run_dir(run: &Path) {
    fs::write(run.join("config.yaml"), "seed: 42\n").unwrap();
    fs::write(run.join("training.jsonl"), "{}\n").unwrap();
    fs::write(run.join("metrics.csv"), "step\n").unwrap();
    fs::create_dir_all(run.join("tensorboard")).unwrap();
    fs::write(run.join("tensorboard/events.out.tfevents.1"), b"tb").unwrap();
    // Another stage's safetensors export and a user's file that only looks like ours.
    fs::write(run.join("hoser_state_dict.safetensors"), b"not ours").unwrap();
    fs::write(run.join("epoch_7.safetensors"), b"a user's file with our name pattern").unwrap();
    fs::write(run.join("epoch_07.safetensors"), b"not a canonical name").unwrap();
    fs::write(run.join(".config.yaml.tmp-999999999-0"), b"another writer's temporary").unwrap();
    // An earlier run, archived in place: a newer checkpoint that must not be resumed from.
    let archived = run.join("archived/run_1");
    fs::create_dir_all(&archived).unwrap();
    file(900, 9, Kind::Resume).write(&archived.join("checkpoint_latest.safetensors"), || {}).unwrap();
}

#[test]
fn the_run_directory_itself_holds_checkpoints_without_touching_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("save/Beijing/seed42");
    fs::create_dir_all(&run).unwrap();
    busy_run_dir(&run);
    let before: Vec<(String, Vec<u8>)> = [
        "config.yaml",
        "hoser_state_dict.safetensors",
        "epoch_7.safetensors",
        "epoch_07.safetensors",
        ".config.yaml.tmp-999999999-0",
    ]
    .iter()
    .map(|n| (n.to_string(), fs::read(run.join(n)).unwrap()))
    .collect();

    let config =
        RetentionConfig { dir: ".".into(), per_epoch: true, keep_last_n_epochs: Some(2), ..RetentionConfig::default() };
    let dir = config.checkpoint_dir(&run);
    assert_eq!(dir, run);
    let mut store = CheckpointStore::open(&dir, config, "val_loss", Mode::Min, None).unwrap();
    // Four epochs of 10 steps; validation at each epoch end, improving.
    for epoch in 1..=4u64 {
        let step = epoch * 10;
        let triggers = [Trigger::Validation { value: 1.0 / epoch as f64, is_best: true }, Trigger::EpochEnd { epoch }];
        store.save(step, &triggers, || file(step, epoch, Kind::Resume), || file(step, epoch, Kind::Weights)).unwrap();
    }
    let n = names(&run);
    for name in
        ["epoch_3.safetensors", "epoch_4.safetensors", "checkpoint_latest.safetensors", "best.safetensors", TOP_K_DIR]
    {
        assert!(n.contains(&name.to_string()), "{name} missing from {n:?}");
    }
    assert!(
        !n.contains(&"epoch_1.safetensors".into()) && !n.contains(&"epoch_2.safetensors".into()),
        "keep_last_n_epochs: 2: {n:?}"
    );
    assert!(!n.contains(&"epoch_0.safetensors".into()), "epochs are named from 1: {n:?}");
    assert_eq!(
        CheckpointFile::read(&run.join("epoch_4.safetensors")).unwrap().meta.epoch,
        4,
        "epoch_N holds N epochs completed"
    );
    // Every file of other writers is untouched, and the archive is where it was.
    for (name, bytes) in &before {
        assert_eq!(&fs::read(run.join(name)).unwrap(), bytes, "{name} was changed");
    }
    assert!(run.join("tensorboard/events.out.tfevents.1").is_file());
    assert!(run.join("archived/run_1/checkpoint_latest.safetensors").is_file());

    // Reopening (a resumed run) neither adopts nor deletes the user's `epoch_7`.
    let config =
        RetentionConfig { dir: ".".into(), per_epoch: true, keep_last_n_epochs: Some(1), ..RetentionConfig::default() };
    let mut store = CheckpointStore::open(&dir, config, "val_loss", Mode::Min, None).unwrap();
    let report =
        store.save(50, &[Trigger::EpochEnd { epoch: 5 }], || file(50, 5, Kind::Resume), || unreachable!()).unwrap();
    let mut removed: Vec<String> =
        report.removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    removed.sort();
    assert_eq!(removed, ["epoch_3.safetensors", "epoch_4.safetensors"]);
    assert!(run.join("epoch_7.safetensors").is_file(), "a file that is not our checkpoint is never deleted");

    // Auto-resume looks only at the store's own files in this directory: not the archived
    // run's newer checkpoint, and it does not complain about other stages' files.
    let mut skipped = Vec::new();
    let (path, found) = newest_valid(&dir, |e| skipped.push(e.to_string())).unwrap();
    assert_eq!(found.meta.step, 50, "{}", path.display());
    assert_eq!(path, run.join("checkpoint_latest.safetensors"));
    assert_eq!(skipped.len(), 1, "only the foreign file under our name is reported: {skipped:?}");
    assert!(
        skipped[0].contains("epoch_7.safetensors") && skipped[0].contains("not a trainyard checkpoint"),
        "{skipped:?}"
    );
}

#[test]
fn each_retention_name_is_an_independent_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = RetentionConfig { per_epoch: true, ..RetentionConfig::default() };
    let mut store = CheckpointStore::open(tmp.path(), config, "val_loss", Mode::Min, None).unwrap();
    let triggers = [Trigger::Validation { value: 0.5, is_best: true }, Trigger::EpochEnd { epoch: 1 }];
    let report = store.save(10, &triggers, || file(10, 1, Kind::Resume), || file(10, 1, Kind::Weights)).unwrap();
    let latest = tmp.path().join("checkpoint_latest.safetensors");
    let epoch = tmp.path().join("epoch_1.safetensors");
    let top = tmp.path().join(TOP_K_DIR).join("best_val_loss_0.500000_step_10.safetensors");
    assert_eq!(report.written[..3], [latest.clone(), top.clone(), epoch.clone()]);
    // Damage one name in place (truncation through the same path): the others still load.
    fs::OpenOptions::new().write(true).open(&epoch).unwrap().set_len(10).unwrap();
    assert!(CheckpointFile::read(&epoch).is_err());
    assert_eq!(CheckpointFile::read(&latest).unwrap().meta.step, 10);
    assert_eq!(CheckpointFile::read(&top).unwrap().meta.step, 10);
}

#[test]
fn a_checkpoint_directory_that_is_a_file_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoints");
    fs::write(&dir, b"oops").unwrap();
    let err = CheckpointStore::open(&dir, RetentionConfig::default(), "m", Mode::Min, None).unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()) && err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&dir).unwrap(), b"oops", "the file is left as it was");
}

#[test]
fn a_directory_where_the_latest_checkpoint_goes_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let latest = tmp.path().join("checkpoint_latest.safetensors");
    fs::create_dir(&latest).unwrap();
    fs::write(latest.join("keep.txt"), b"x").unwrap();
    let err =
        CheckpointStore::open(tmp.path(), RetentionConfig::default(), "m", Mode::Min, None).unwrap_err().to_string();
    assert!(err.contains("checkpoint_latest.safetensors") && err.contains("not a regular file"), "{err}");
    assert!(latest.join("keep.txt").is_file());
    // Auto-resume reports it instead of failing or descending into it.
    let mut skipped = Vec::new();
    assert!(newest_valid(tmp.path(), |e| skipped.push(e.to_string())).is_none());
    assert!(
        skipped.iter().any(|s| s.contains("checkpoint_latest.safetensors") && s.contains("directory")),
        "{skipped:?}"
    );
}

#[test]
fn a_read_only_checkpoint_directory_fails_at_open_not_at_the_first_save() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    fs::create_dir(&dir).unwrap();
    // Read-only by mode for ordinary users; root ignores modes, so there it is a read-only mount.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let writable_anyway = fs::write(dir.join("probe"), b"").is_ok();
    let _ = fs::remove_file(dir.join("probe"));
    struct Unmount<'a>(&'a Path, bool);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("umount").arg(self.0).status();
            }
            let _ = fs::set_permissions(self.0, fs::Permissions::from_mode(0o755));
        }
    }
    let mut guard = Unmount(&dir, false);
    if writable_anyway {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: the directory stays writable here (root without mount)");
            return;
        }
        guard.1 = true;
    }
    let err = CheckpointStore::open(&dir, RetentionConfig::default(), "m", Mode::Min, None).unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("cannot be created") || err.contains("no file can be created"), "{err}");
    drop(guard);
}

#[test]
fn auto_resume_in_a_run_directory_skips_truncated_and_foreign_files_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path();
    let config = RetentionConfig { dir: ".".into(), per_epoch: true, ..RetentionConfig::default() };
    let mut store = CheckpointStore::open(run, config, "m", Mode::Min, None).unwrap();
    for epoch in 1..=2u64 {
        let step = epoch * 5;
        store
            .save(step, &[Trigger::EpochEnd { epoch }], || file(step, epoch, Kind::Resume), || unreachable!())
            .unwrap();
    }
    // A crash-free but damaged newest name, and a foreign file with a newer-looking name.
    let latest = run.join("checkpoint_latest.safetensors");
    let bytes = fs::read(&latest).unwrap();
    fs::write(&latest, &bytes[..bytes.len() - 7]).unwrap();
    fs::write(run.join("checkpoint_step_99.safetensors"), b"PK\x03\x04 a zip, not ours").unwrap();
    let mut skipped = Vec::new();
    let (path, found) = newest_valid(run, |e| skipped.push(e.to_string())).unwrap();
    assert_eq!((found.meta.step, &path), (10, &run.join("epoch_2.safetensors")));
    assert!(
        skipped.iter().any(|s| s.contains("checkpoint_latest.safetensors") && s.contains("truncated")),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|s| s.contains("checkpoint_step_99.safetensors")), "{skipped:?}");
    // Reopening keeps every file: damaged or foreign, nothing is cleaned away.
    let config =
        RetentionConfig { dir: ".".into(), per_epoch: true, keep_last_n_steps: Some(1), ..RetentionConfig::default() };
    CheckpointStore::open(run, config, "m", Mode::Min, Some(path)).unwrap();
    for n in [
        "checkpoint_latest.safetensors",
        "checkpoint_step_99.safetensors",
        "epoch_1.safetensors",
        "epoch_2.safetensors",
    ] {
        assert!(run.join(n).is_file(), "{n} was removed");
    }
}
