//! Stage-3 samples: a tile (`s1` in dB, `s2_truth` in reflectance, valid mask, paired
//! augmentation, from `tiling`'s dataset exactly as stage 1 reads it) plus its stage-2 estimate
//! `opt_v2`, read from `data.stage2_dir` (`DIR/<tile file name>`, array `opt_v2` `(4, H, W)`)
//! or, when asked for by name, the reference's `noisy_truth` proxy.
//!
//! The estimate goes through the tile's own augmentation, so the three images stay aligned; a
//! NaN in it masks the pixel like a NaN in the tile does, and is then zeroed.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand_distr::{Distribution, Normal};
use tiling::dataset::{NpzSource, Sample, Standardization, TileDataset, TileSource, decode_parallel, rng_for};
use tiling::stage2::{estimate_path, read_estimate};

use crate::error::Stage3Error;

/// Where `opt_v2` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage2Source {
    /// Estimates in this directory, one per tile (`DIR/<tile file name>`).
    Dir(PathBuf),
    /// `clip(truth + N(0, σ²), 0, 1)`, drawn from a ChaCha8 stream seeded by (seed, epoch, tile index).
    NoisyTruth {
        /// σ in reflectance.
        sigma: f64,
        /// Run seed.
        seed: u64,
    },
}

/// One tile with its stage-2 estimate, on the host.
#[derive(Debug, Clone)]
pub struct Stage3Sample {
    /// The tile: `s1` `[2, H, W]` in dB, `s2` `[4, H, W]` in reflectance (the truth), `valid`
    /// `[1, H, W]` (0 where any input, the estimate included, was not finite; those pixels are 0).
    pub tile: Sample,
    /// `opt_v2` `[4, H, W]` in reflectance, augmented like the tile.
    pub opt_v2: Vec<f32>,
    /// The tile's file.
    pub path: PathBuf,
}

/// Domain separator of the proxy's random stream (distinct from tiling's order / augment streams).
const DOMAIN_PROXY: u64 = 0x5354_4147_4533; // "STAGE3"

/// A tile set with its stage-2 estimates.
#[derive(Clone)]
pub struct Stage3Data {
    /// The tiles, read without standardisation (dB, reflectance) and augmented on the training split.
    pub tiles: TileDataset<NpzSource>,
    /// Where `opt_v2` comes from.
    pub stage2: Stage2Source,
}

impl Stage3Data {
    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// True when there are no tiles.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Checks that every tile has its estimate file (contents are checked when read).
    pub fn check_estimates(&self) -> Result<(), Stage3Error> {
        let Stage2Source::Dir(dir) = &self.stage2 else { return Ok(()) };
        for path in self.tiles.source().paths() {
            let expected = estimate_path(dir, path);
            if !expected.is_file() {
                return Err(Stage3Error::MissingEstimate { tile: path.to_path_buf(), expected });
            }
        }
        Ok(())
    }

    /// Tile `index` and its estimate for `epoch`.
    pub fn sample(&self, index: usize, epoch: u64) -> Result<Stage3Sample, Stage3Error> {
        let mut tile = self.tiles.sample(index, epoch)?;
        let path = self.tiles.source().path(index);
        let (h, w) = (tile.height, tile.width);
        let hw = h * w;
        let mut opt_v2 = match &self.stage2 {
            Stage2Source::Dir(dir) => {
                let file = estimate_path(dir, &path);
                // `check_estimates` found every file when the task was built; one removed since
                // is `read_estimate`'s missing-estimate error, naming the tile and the file.
                let est = read_estimate(&file)?;
                // The tile's size before its augmentation (odd quarter turns swap H and W).
                let (th, tw) = tile.augment.output_shape(h, w);
                if (est.height, est.width) != (th, tw) {
                    return Err(Stage3Error::Estimate {
                        path: file,
                        tile: path,
                        message: format!(
                            "opt_v2 is (4, {}, {}) but the tile is {th}x{tw}: expected (4, {th}, {tw})",
                            est.height, est.width
                        ),
                    });
                }
                tile.augment.apply(&est.data, 4, th, tw)
            }
            Stage2Source::NoisyTruth { sigma, seed } => {
                let mut rng = rng_for(&[*seed, epoch, index as u64, DOMAIN_PROXY]);
                // σ was validated finite and non-negative.
                let noise = Normal::new(0.0f64, *sigma).unwrap_or_else(|_| unreachable!("σ ≥ 0 is validated"));
                tile.s2.iter().map(|&t| (f64::from(t) + noise.sample(&mut rng)).clamp(0.0, 1.0) as f32).collect()
            }
        };
        for p in 0..hw {
            if (0..4).any(|b| !opt_v2[b * hw + p].is_finite()) {
                tile.valid[p] = 0.0;
                for b in 0..4 {
                    opt_v2[b * hw + p] = 0.0;
                }
            }
        }
        Ok(Stage3Sample { tile, opt_v2, path })
    }
}

/// Decodes `indices` of `data` for `epoch` on up to `workers` threads, in order. A tile or
/// estimate that cannot be read is an error naming its file.
pub fn load_samples(
    data: &Stage3Data,
    indices: &[usize],
    epoch: u64,
    workers: usize,
) -> Result<Vec<Stage3Sample>, Stage3Error> {
    // A panic while decoding is a bug in a reader; report it against the tiles of that chunk.
    let decode_panicked = |first: usize| Stage3Error::Decode { path: data.tiles.source().path(first) };
    decode_parallel(indices, workers, |i| data.sample(i, epoch), decode_panicked)
}

/// A batch on the device.
pub struct Stage3Batch<B: Backend> {
    /// `[b, 2, h, w]` model input (standardised VV, VH when `model.standardize`).
    pub sar: Tensor<B, 4>,
    /// `[b, 2, h, w]` VV, VH in dB, for the SAR losses and metrics.
    pub sar_db: Tensor<B, 4>,
    /// `[b, 4, h, w]` model input (standardised opt_v2 when `model.standardize`).
    pub opt_v2: Tensor<B, 4>,
    /// `[b, 4, h, w]` opt_v2 in reflectance.
    pub opt_v2_refl: Tensor<B, 4>,
    /// `[b, 4, h, w]` the truth in reflectance.
    pub truth: Tensor<B, 4>,
    /// `[b, 1, h, w]`: 1 where every input was finite.
    pub valid: Tensor<B, 4>,
}

/// Stacks samples into a batch on the device; samples of different sizes are an error naming a tile.
pub fn collate<B: Backend>(
    samples: &[Stage3Sample],
    standardization: &Standardization,
    device: &B::Device,
) -> Result<Stage3Batch<B>, Stage3Error> {
    let first = samples.first().ok_or_else(|| Stage3Error::config("training.batch_size", "an empty batch"))?;
    let (h, w) = (first.tile.height, first.tile.width);
    let hw = h * w;
    if let Some(odd) = samples.iter().find(|s| (s.tile.height, s.tile.width) != (h, w)) {
        return Err(Stage3Error::Tile {
            path: odd.path.clone(),
            message: format!(
                "is {}x{} but {} in the same batch is {h}x{w}: a batch needs one size (set data.tile_size)",
                odd.tile.height,
                odd.tile.width,
                first.path.display()
            ),
        });
    }
    let b = samples.len();
    let (mut sar_db, mut opt, mut truth, mut valid) =
        (Vec::with_capacity(b * 2 * hw), Vec::with_capacity(b * 4 * hw), Vec::with_capacity(b * 4 * hw), Vec::new());
    for s in samples {
        sar_db.extend_from_slice(&s.tile.s1);
        opt.extend_from_slice(&s.opt_v2);
        truth.extend_from_slice(&s.tile.s2);
        valid.extend_from_slice(&s.tile.valid);
    }
    let mut sar_in = sar_db.clone();
    let mut opt_in = opt.clone();
    for i in 0..b {
        standardization.apply_s1(&mut sar_in[i * 2 * hw..(i + 1) * 2 * hw], hw);
        standardization.apply_s2(&mut opt_in[i * 4 * hw..(i + 1) * 4 * hw], hw);
    }
    // Masked pixels are 0 in every input (also after standardisation).
    for i in 0..b {
        for p in 0..hw {
            if valid[i * hw + p] == 0.0 {
                for c in 0..2 {
                    sar_in[(i * 2 + c) * hw + p] = 0.0;
                }
                for c in 0..4 {
                    opt_in[(i * 4 + c) * hw + p] = 0.0;
                }
            }
        }
    }
    let t = |data: Vec<f32>, c: usize| Tensor::<B, 4>::from_data(TensorData::new(data, [b, c, h, w]), device);
    Ok(Stage3Batch {
        sar: t(sar_in, 2),
        sar_db: t(sar_db, 2),
        opt_v2: t(opt_in, 4),
        opt_v2_refl: t(opt, 4),
        truth: t(truth, 4),
        valid: t(valid, 1),
    })
}
