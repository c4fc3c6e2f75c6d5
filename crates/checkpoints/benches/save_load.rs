//! Checkpoint save/load throughput for a ~100 MB model against plain sequential write/read of
//! the same number of bytes on the same disk. Run with `cargo xtask bench checkpoint` (or
//! `cargo bench -p checkpoints`); set `BENCH_DIR` to measure another disk (default: the
//! system temp dir).
//!
//! - `checkpoint_save_100mb`: weights out of a burn module (5000 × 5000 f32 linear layer),
//!   serialisation, checksum, temp file, fsync, rename, directory fsync.
//! - `checkpoint_extract_100mb` / `checkpoint_write_file_100mb`: the two halves of a save
//!   (weights out of the module; the atomic file write).
//! - `plain_write_100mb`: `File::create` + `write_all` + `sync_all` of 100 MB.
//! - `checkpoint_load_100mb`: read, checksum verification, parse, weights into the module.
//! - `checkpoint_read_file_100mb`: read and verify only (no module).
//! - `plain_read_100mb`: `fs::read` of the 100 MB file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::nn::{Linear, LinearConfig};
use checkpoints::module::{load_weights, weights_of};
use checkpoints::{CheckpointFile, Kind, Meta, RunIdentity, SCHEMA_VERSION};
use criterion::{Criterion, criterion_group, criterion_main};

type B = Flex;

fn dir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn meta() -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        kind: Kind::Weights,
        step: 1,
        epoch: 0,
        metrics: BTreeMap::new(),
        identity: RunIdentity { seed: 1, dataset_id: "bench".into(), mode: "train".into(), config_hash: "0".into() },
        created_unix: 0.0,
    }
}

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let model: Linear<B> = LinearConfig::new(5000, 5000).with_bias(false).init(&device);
    let tmp = dir();
    let ckpt = tmp.path().join("model.safetensors");
    let plain = tmp.path().join("plain.bin");
    let bytes = vec![7u8; 100_000_000];

    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10);
    g.bench_function("checkpoint_save_100mb", |b| {
        b.iter(|| {
            let (tensors, ids) = weights_of::<B, _>(&model);
            let extra = BTreeMap::from([("trainyard.param_ids".into(), serde_json::to_string(&ids).unwrap())]);
            CheckpointFile { meta: meta(), tensors, blobs: BTreeMap::new(), extra }.write(&ckpt, || {}).unwrap();
        })
    });
    g.bench_function("checkpoint_extract_100mb", |b| b.iter(|| weights_of::<B, _>(&model)));
    let (tensors, _) = weights_of::<B, _>(&model);
    let ready = CheckpointFile { meta: meta(), tensors, blobs: BTreeMap::new(), extra: BTreeMap::new() };
    g.bench_function("checkpoint_write_file_100mb", |b| b.iter(|| ready.write(&ckpt, || {}).unwrap()));
    g.bench_function("plain_write_100mb", |b| {
        b.iter(|| {
            let mut f = std::fs::File::create(&plain).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
        })
    });
    g.bench_function("checkpoint_read_file_100mb", |b| b.iter(|| CheckpointFile::read(&ckpt).unwrap()));
    g.bench_function("checkpoint_load_100mb", |b| {
        b.iter(|| {
            let file = CheckpointFile::read(&ckpt).unwrap();
            load_weights(model.clone(), file.tensors, None, &ckpt).unwrap()
        })
    });
    g.bench_function("plain_read_100mb", |b| b.iter(|| std::fs::read(&plain).unwrap()));
    g.finish();
}

criterion_group!(checkpoint, benches);
criterion_main!(checkpoint);
