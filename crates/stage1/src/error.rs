//! What can stop stage 1: a config key that does not fit the data or the model, a tile that
//! cannot be read or used, or base weights that do not load. Every message names the key or file.

use std::path::PathBuf;

use sarmodels::WeightError;
use tiling::TilingError;

/// Why the stage-1 task could not be built, or could not read a batch or a validation tile.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
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

impl Stage1Error {
    /// A [`Stage1Error::Config`] for `key`.
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        Self::Config { key: key.into(), message: message.into() }
    }
}
