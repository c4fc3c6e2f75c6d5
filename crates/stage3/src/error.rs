//! What can stop stage 3: a config key that does not fit the data or the model, a tile or
//! stage-2 estimate that cannot be read or used, or a stage-1 base that does not load. Every
//! message names the key or file.

use std::path::PathBuf;

use sarmodels::WeightError;
use tiling::TilingError;

/// Why the stage-3 task could not be built, or could not read a batch or a validation tile.
#[derive(Debug, thiserror::Error)]
pub enum Stage3Error {
    /// A config key is unset or does not fit the data, the model or the losses.
    #[error("{key}: {message}")]
    Config {
        /// The dotted key (`data.tile_size`, `loss`, ...).
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A tile directory or manifest holds no tiles of a split.
    #[error("{}: no {what}", dir.display())]
    NoTiles {
        /// The directory read.
        dir: PathBuf,
        /// Which tiles are missing, and how to provide them.
        what: &'static str,
    },
    /// A tile, its sidecar or the manifest could not be read (the message names the file).
    #[error(transparent)]
    Tiles(#[from] TilingError),
    /// A tile has no stage-2 estimate in `data.stage2_dir`.
    #[error(
        "tile {}: no stage-2 estimate {} (expected an NPZ with array opt_v2 of shape (4, H, W) for every tile; \
         write them with `stage1 predict --weights RUN/best_model.safetensors --data-dir TILES --out DIR`)",
        tile.display(),
        expected.display()
    )]
    MissingEstimate {
        /// The tile.
        tile: PathBuf,
        /// Where its estimate should be.
        expected: PathBuf,
    },
    /// A stage-2 estimate does not match its tile.
    #[error("{}: {message} (the estimate of tile {})", path.display(), tile.display())]
    Estimate {
        /// The estimate file.
        path: PathBuf,
        /// The tile it belongs to.
        tile: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tiles do not fit the model or the losses (size, patch grid, minimum side).
    #[error("{}: {message}", path.display())]
    Tile {
        /// A tile of the set (the first).
        path: PathBuf,
        /// What is wrong and the minimum or multiple expected.
        message: String,
    },
    /// A decoding thread panicked (a bug in a reader, reported instead of taking the run down).
    #[error("{}: decoding the tiles of this batch panicked", path.display())]
    Decode {
        /// The first tile the thread was decoding.
        path: PathBuf,
    },
    /// `model.pretrained` does not load into this model.
    #[error("model.pretrained: {0}")]
    Pretrained(WeightError),
}

impl Stage3Error {
    /// A [`Stage3Error::Config`] for `key`.
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        Self::Config { key: key.into(), message: message.into() }
    }
}
