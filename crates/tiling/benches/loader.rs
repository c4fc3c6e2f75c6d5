//! Loader throughput (tiles/s) over synthetic 128 × 128 tiles (the stage-1 smoke tile size) on
//! the training split: standardisation plus paired augmentation, prefetch 8, with 1 and 2 decoding
//! workers. Run with `cargo bench -p tiling --bench loader`; set `BENCH_DIR` to put the NPZ files
//! on another disk (default: the system temp dir).
//!
//! - `loader/npz_f32/workers_N`: NPZ tiles (float32, deflated, with sidecars) read from disk.
//! - `loader/npz_f16/workers_N`: the same tiles written as float16.
//! - `loader/memory/workers_N`: the same tiles from memory (no decoding; the loader's own cost).

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tiling::Split;
use tiling::dataset::{Cursor, DatasetConfig, LoaderConfig, MemorySource, NpzSource, TileDataset, TileSource};
use tiling::npz::{self, Dtype};
use tiling::synthetic::synthetic_tiles;

const TILES: usize = 64;
const SIZE: usize = 128;

fn dir() -> tempfile::TempDir {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn run_epochs<S: TileSource + 'static>(c: &mut Criterion, name: &str, dataset: &TileDataset<S>) {
    let mut g = c.benchmark_group("loader");
    g.sample_size(10);
    g.throughput(Throughput::Elements(dataset.len() as u64));
    for workers in [1, 2] {
        let mut epoch = 0;
        g.bench_function(format!("{name}/workers_{workers}"), |b| {
            b.iter(|| {
                let mut n = 0;
                for sample in dataset.loader(Cursor::start(epoch), LoaderConfig { workers, prefetch: 8 }) {
                    std::hint::black_box(sample.unwrap());
                    n += 1;
                }
                epoch += 1;
                assert_eq!(n, dataset.len());
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    // Every tile relabelled as training, so all of them are shuffled and augmented.
    let tiles: Vec<_> = synthetic_tiles(TILES, SIZE, 1)
        .into_iter()
        .map(|mut t| {
            t.sidecar.split = Some(Split::Train);
            t
        })
        .collect();
    let config = DatasetConfig::new(Split::Train, 0);

    for (name, dtype) in [("npz_f32", Dtype::F32), ("npz_f16", Dtype::F16)] {
        let tmp = dir();
        for t in &tiles {
            npz::write_tile(tmp.path(), t, dtype).unwrap();
        }
        let dataset = TileDataset::new(NpzSource::from_dir(tmp.path()).unwrap(), config.clone()).unwrap();
        run_epochs(c, name, &dataset);
    }
    let dataset = TileDataset::new(MemorySource::new(tiles), config).unwrap();
    run_epochs(c, "memory", &dataset);
}

criterion_group!(loader, benches);
criterion_main!(loader);
