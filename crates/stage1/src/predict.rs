//! `stage1 predict`: stage 1's prediction for every tile of a directory, written as the stage-2
//! estimate (`opt_v2`, [`tiling::stage2`]) that stage 3 reads when no stage-2 model exists.
//!
//! The model is built from the run's config (`config.yaml` next to the weights, or `--config`)
//! and loaded from the trainer's weights export (`best_model.safetensors`, adapters included).
//! Tiles are read un-augmented with the model's standardisation, predicted in batches by the
//! generator and the DDIM refiner, and de-standardised to reflectance. The refiner's starting
//! noise is drawn per tile from a seed derived from the config's `seed` and the tile's file name,
//! so a tile gets the same estimate whatever the batch size, split or other tiles of the run.
//! Pixels whose inputs were not finite keep their prediction (the valid mask lives with the tile).
//!
//! Nothing is overwritten without `--overwrite`: every target is checked before the first
//! prediction. `predict.json` in the output directory records where the estimates came from.

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use checkpoints::format::{CheckpointError, CheckpointFile};
use sarmodels::denoiser::sample_per_sample;
use serde::{Deserialize, Serialize};
use tiling::TilingError;
use tiling::dataset::{DatasetConfig, NpzSource, Standardization, TileDataset, TileSource};
use tiling::stage2::{estimate_path, write_estimate};
use tiling::tile::Split;

use crate::{Stage1Config, Stage1Error, Stage1Model, collate, load_samples};

/// File name of the provenance record written next to the estimates.
pub const REPORT: &str = "predict.json";

/// Which tiles of the data directory to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitFilter {
    /// Every tile.
    #[default]
    All,
    /// Tiles of the training split (manifest or sidecar).
    Train,
    /// Tiles of the validation split.
    Val,
    /// Tiles of the test split.
    Test,
}

impl SplitFilter {
    fn split(self) -> Option<Split> {
        match self {
            SplitFilter::All => None,
            SplitFilter::Train => Some(Split::Train),
            SplitFilter::Val => Some(Split::Val),
            SplitFilter::Test => Some(Split::Test),
        }
    }
}

/// What `stage1 predict` does, once its config is loaded.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// The weights export (`RUN/best_model.safetensors`).
    pub weights: PathBuf,
    /// The config the model was built from (recorded in [`REPORT`]).
    pub config_path: PathBuf,
    /// Directory of NPZ tiles.
    pub data_dir: PathBuf,
    /// Where the estimates go (never `data_dir`).
    pub out: PathBuf,
    /// Tiles per forward pass.
    pub batch_size: usize,
    /// Which tiles.
    pub split: SplitFilter,
    /// Replace estimates that exist.
    pub overwrite: bool,
}

/// Why `stage1 predict` stopped. [`PredictError::exit_code`] maps each to the CLI's convention.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// A flag has an unusable value.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag (`--batch-size`, `--out`, ...).
        flag: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// An estimate (or `predict.json`) exists and `--overwrite` was not given.
    #[error("{}: exists; pass --overwrite to replace the estimates in {}", path.display(), dir.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
        /// The output directory.
        dir: PathBuf,
    },
    /// The data directory holds no tiles of the chosen split.
    #[error("{}: no *.npz tiles{}", dir.display(), if *split == SplitFilter::All { String::new() } else { format!(" of the {split:?} split").to_lowercase() })]
    NoTiles {
        /// The data directory.
        dir: PathBuf,
        /// The split asked for.
        split: SplitFilter,
    },
    /// The weights file cannot be read, or does not fit the model the config describes (the
    /// message names the missing, unexpected or mis-shaped tensors).
    #[error("--weights {}", .0)]
    Weights(#[source] CheckpointError),
    /// The config does not describe a model that fits the tiles.
    #[error(transparent)]
    Model(Stage1Error),
    /// A tile, its sidecar or the manifest cannot be read (the message names the file).
    #[error(transparent)]
    Tiles(#[from] TilingError),
    /// Writing an estimate or the report failed.
    #[error("writing {}: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

impl PredictError {
    /// 2 for bad flags, config, weights or input files; 1 for a failure while predicting or writing.
    pub fn exit_code(&self) -> u8 {
        match self {
            PredictError::Write { .. } => 1,
            _ => 2,
        }
    }
}

/// One record of `predict.json`: where a set of estimates came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictRecord {
    /// `stage1`'s crate version.
    pub stage1_version: String,
    /// The weights file.
    pub weights: PathBuf,
    /// CRC-32C of the weights file's bytes (hex).
    pub weights_crc32c: String,
    /// Optimizer steps of the run when the weights were written.
    pub weights_step: u64,
    /// The config the model was built from.
    pub config: PathBuf,
    /// The tile directory.
    pub data_dir: PathBuf,
    /// The split predicted.
    pub split: SplitFilter,
    /// DDIM steps of the refiner.
    pub timesteps: usize,
    /// The config's seed (each tile's noise seed is derived from it and the file name).
    pub seed: u64,
    /// Tiles predicted.
    pub tiles: usize,
    /// Tiles per forward pass.
    pub batch_size: usize,
}

/// `predict.json`: one record per `stage1 predict` run into the directory, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictReport {
    /// The runs.
    pub runs: Vec<PredictRecord>,
}

/// The seed of tile `file_name`'s refiner noise under config seed `seed`.
pub fn tile_seed(seed: u64, file_name: &str) -> u64 {
    seed ^ u64::from(crc32c::crc32c(file_name.as_bytes())).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The standardisation `model.standardize` selects (what training applied to the tiles).
pub fn standardization(config: &Stage1Config) -> Standardization {
    if config.model.standardize { Standardization::terramind_v1() } else { Standardization::none() }
}

/// The refined prediction `[b, 4, h, w]` (standardised) of `sar` `[b, 2, h, w]`: the generator's
/// output plus the DDIM residual started from each tile's own noise (`seeds`, one per tile).
pub fn refine<B: Backend>(model: &Stage1Model<B>, sar: Tensor<B, 4>, timesteps: usize, seeds: &[u64]) -> Tensor<B, 4> {
    let head = model.generator.forward(sar.clone());
    let residual = sample_per_sample(&model.denoiser, head.clone(), sar, timesteps, seeds);
    head + residual
}

/// Builds the model `config` describes and loads the weights export `path` into it.
///
/// Returns the model and the file's CRC-32C and step. A missing, damaged or foreign file, or
/// weights of another model (size, LoRA, denoiser), is [`PredictError::Weights`] naming the file
/// and the tensors that do not fit.
pub fn load_model<B: Backend>(
    config: &Stage1Config,
    path: &Path,
    device: &B::Device,
) -> Result<(Stage1Model<B>, String, u64), PredictError> {
    let bytes = std::fs::read(path).map_err(|e| PredictError::Weights(CheckpointError::io(path, e)))?;
    let crc = format!("{:08x}", crc32c::crc32c(&bytes));
    let file = CheckpointFile::from_bytes(&bytes, path).map_err(PredictError::Weights)?;
    drop(bytes);
    let gc = config.model.generator();
    let generator =
        gc.try_init::<B>(device).map_err(|e| PredictError::Model(Stage1Error::config("model", e.to_string())))?;
    let model = Stage1Model { generator, denoiser: gc.init_denoiser(device) };
    let model = checkpoints::module::load_weights(model, file.tensors, None, path).map_err(PredictError::Weights)?;
    Ok((model, crc, file.meta.step))
}

/// The tiles of `dir` for `split`: manifest order when `dir/manifest.json` exists (its splits),
/// else sorted file names (the sidecars' splits).
fn tiles(dir: &Path, split: SplitFilter) -> Result<NpzSource, TilingError> {
    let manifest = dir.join("manifest.json");
    if manifest.is_file() {
        NpzSource::from_manifest(&manifest, split.split())
    } else {
        match split.split() {
            None => NpzSource::from_dir(dir),
            Some(s) => NpzSource::from_dir_split(dir, s),
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Predicts every tile `opts` selects with `config`'s model and writes its estimate to
/// `estimate_path(opts.out, tile)`, then appends a record to `opts.out/predict.json`.
///
/// Checked before anything is predicted: `--out` is not the data directory, the batch size, the
/// weights (they must fit the model), every tile's headers and size against the model, and that
/// no target exists (unless `overwrite`). `progress(done, total)` is called after every batch.
pub fn run<B: Backend>(
    config: &Stage1Config,
    opts: &PredictOptions,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<PredictRecord, PredictError> {
    if opts.batch_size == 0 {
        return Err(PredictError::Flag { flag: "--batch-size", message: "expected at least 1 tile".into() });
    }
    if opts.out == opts.data_dir || same_dir(&opts.out, &opts.data_dir) {
        return Err(PredictError::Flag {
            flag: "--out",
            message: format!(
                "{} is the tile directory (--data-dir); write the estimates to a directory of their own",
                opts.out.display()
            ),
        });
    }
    if opts.out.exists() && !opts.out.is_dir() {
        return Err(PredictError::Flag {
            flag: "--out",
            message: format!("{} is not a directory", opts.out.display()),
        });
    }
    let source = tiles(&opts.data_dir, opts.split)?;
    if source.is_empty() {
        return Err(PredictError::NoTiles { dir: opts.data_dir.clone(), split: opts.split });
    }
    let Some((h, w)) = source.check_headers()? else {
        return Err(PredictError::NoTiles { dir: opts.data_dir.clone(), split: opts.split });
    };
    let first = source.paths().next().map(Path::to_path_buf).unwrap_or_default();
    config.model.generator().check_input(h, w).map_err(|e| {
        PredictError::Model(Stage1Error::Tile {
            path: first.clone(),
            message: format!("tiles are {h}x{w}, which model.size does not fit: {e}"),
        })
    })?;
    let targets: Vec<PathBuf> = source.paths().map(|p| estimate_path(&opts.out, p)).collect();
    let report_path = opts.out.join(REPORT);
    let mut report = match std::fs::read(&report_path) {
        Ok(bytes) => match serde_json::from_slice::<PredictReport>(&bytes) {
            Ok(r) => r,
            Err(_) if opts.overwrite => PredictReport::default(),
            Err(e) => {
                return Err(PredictError::Flag {
                    flag: "--out",
                    message: format!(
                        "{} is not a predict.json this command wrote ({e}); pass --overwrite to replace it",
                        report_path.display()
                    ),
                });
            }
        },
        Err(_) => PredictReport::default(),
    };
    if !opts.overwrite
        && let Some(existing) = targets.iter().find(|t| t.exists())
    {
        return Err(PredictError::Exists { path: existing.clone(), dir: opts.out.clone() });
    }
    let (model, crc, step) = load_model::<B>(config, &opts.weights, device)?;

    let standardization = standardization(config);
    let mut dc = DatasetConfig::new(Split::Val, config.seed);
    dc.standardization = standardization.clone();
    dc.augment = false;
    dc.shuffle = false;
    dc.check_split = false;
    let dataset = TileDataset::new(source, dc)?;
    let names: Vec<String> = (0..dataset.len()).map(|i| file_name(&dataset.source().path(i))).collect();
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| PredictError::Write { path: opts.out.clone(), message: e.to_string() })?;

    let timesteps = config.model.timesteps;
    let total = dataset.len();
    let order: Vec<usize> = (0..total).collect();
    let mut done = 0;
    for chunk in order.chunks(opts.batch_size) {
        let samples = load_samples(&dataset, chunk, 0, config.data.num_workers).map_err(tile_error)?;
        let batch = collate::<B>(&samples, device).map_err(tile_error)?;
        let seeds: Vec<u64> = chunk.iter().map(|&i| tile_seed(config.seed, &names[i])).collect();
        let out = refine(&model, batch.sar, timesteps, &seeds);
        let mut host: Vec<f32> = out.into_data().iter::<f32>().collect();
        // `load_samples` returns one sample per index, in order, and the host data holds each
        // sample's [4, h, w] block in that order (collate refused samples of differing sizes).
        for (k, &i) in chunk.iter().enumerate() {
            let s = &samples[k];
            let hw = s.height * s.width;
            let tile = &mut host[k * 4 * hw..(k + 1) * 4 * hw];
            standardization.invert_s2(tile, hw);
            let target = &targets[i];
            write_estimate(target, tile, s.height, s.width)
                .map_err(|e| PredictError::Write { path: target.clone(), message: e.to_string() })?;
        }
        done += chunk.len();
        progress(done, total);
    }

    let record = PredictRecord {
        stage1_version: env!("CARGO_PKG_VERSION").to_string(),
        weights: opts.weights.clone(),
        weights_crc32c: crc,
        weights_step: step,
        config: opts.config_path.clone(),
        data_dir: opts.data_dir.clone(),
        split: opts.split,
        timesteps,
        seed: config.seed,
        tiles: total,
        batch_size: opts.batch_size,
    };
    report.runs.push(record.clone());
    let mut json = serde_json::to_vec_pretty(&report)
        .map_err(|e| PredictError::Write { path: report_path.clone(), message: e.to_string() })?;
    json.push(b'\n');
    checkpoints::atomic::write_atomic(&report_path, |f| std::io::Write::write_all(f, &json), || {})
        .map_err(|e| PredictError::Write { path: report_path, message: e.to_string() })?;
    Ok(record)
}

/// A tile that fails to decode after its headers passed is a bad input file.
fn tile_error(e: Stage1Error) -> PredictError {
    match e {
        Stage1Error::Tiles(t) => PredictError::Tiles(t),
        other => PredictError::Model(other),
    }
}
