//! What a save costs when it goes under a second retention name (a validation at an epoch end
//! writes `checkpoint_latest`, `epoch_N` and a top-K entry): a hard link to the one written
//! file, against the independent copy the store makes (`atomic::copy_atomic`: temp file,
//! in-kernel copy, fsync, rename, directory fsync), against writing the bundle a second time
//! from memory. Checkpoints of 50 MB and 500 MB of f32 tensors; set `BENCH_DIR` to measure
//! another disk (default: the system temp dir) and `BENCH_SIZES_MB` (e.g. `50,500`).
//!
//! `cargo bench -p checkpoints --bench retention_copies` (the store chose copies from these numbers;
//! see the crate's `store` module).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use burn::tensor::Bytes;
use checkpoints::atomic::{copy_atomic, link_atomic};
use checkpoints::format::RawTensor;
use checkpoints::{CheckpointFile, Kind, Meta, RunIdentity, SCHEMA_VERSION};
use criterion::{Criterion, criterion_group, criterion_main};
use safetensors::Dtype;

fn dir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn bundle(mb: usize) -> CheckpointFile {
    let n = mb * 1_000_000 / 4;
    // Not constant, so nothing on the way can shortcut it.
    let data: Vec<u8> = (0..n as u32).flat_map(|i| (i.wrapping_mul(2_654_435_761) as f32).to_le_bytes()).collect();
    CheckpointFile {
        meta: Meta {
            schema_version: SCHEMA_VERSION,
            kind: Kind::Resume,
            step: 1,
            epoch: 1,
            metrics: BTreeMap::new(),
            identity: RunIdentity {
                seed: 1,
                dataset_id: "bench".into(),
                mode: "train".into(),
                config_hash: "0".into(),
            },
            created_unix: 0.0,
        },
        tensors: vec![RawTensor {
            name: "w".into(),
            dtype: Dtype::F32,
            shape: vec![n],
            data: Bytes::from_bytes_vec(data),
        }],
        blobs: BTreeMap::new(),
        extra: BTreeMap::new(),
    }
}

fn benches(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES_MB")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 500]);
    let tmp = dir();
    let first = tmp.path().join("checkpoint_latest.safetensors");
    let second = tmp.path().join("epoch_1.safetensors");
    let mut g = c.benchmark_group("retention_copies");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for mb in sizes {
        let file = bundle(mb);
        g.bench_function(format!("write_one_name_{mb}mb"), |b| b.iter(|| file.write(&first, || {}).unwrap()));
        g.bench_function(format!("write_then_link_{mb}mb"), |b| {
            b.iter(|| {
                file.write(&first, || {}).unwrap();
                link_atomic(&first, &second).unwrap();
            })
        });
        g.bench_function(format!("write_then_copy_{mb}mb"), |b| {
            b.iter(|| {
                file.write(&first, || {}).unwrap();
                copy_atomic(&first, &second).unwrap();
            })
        });
        g.bench_function(format!("write_twice_{mb}mb"), |b| {
            b.iter(|| {
                file.write(&first, || {}).unwrap();
                file.write(&second, || {}).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(retention, benches);
criterion_main!(retention);
