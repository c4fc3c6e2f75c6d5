//! Tiles for the SAR→optical stages: raster readers (GeoTIFF / COG in pure Rust, Axion-style
//! NPZ tiles), the tiler (scenes → tiles with a manifest and leak-free splits), synthetic
//! paired scenes, and the dataset loader (standardisation, paired augmentation, prefetch,
//! resumable cursor). No burn dependency: the loader yields plain `f32` planes.
//!
//! - [`stage2`]: the stage-2 estimates (`opt_v2`, one NPZ per tile under a stage-2 directory)
//!   that stage 3 reads and `stage1 predict` writes.
//! - [`preview`]: the validation images' display helpers and PNG writing, shared by the stages.

pub mod dataset;
#[cfg(feature = "gdal")]
pub mod gdal_reader;
pub mod geotiff;
pub mod npz;
pub mod preview;
pub mod stage2;
pub mod synthetic;
pub mod tile;
pub mod tiler;

pub use tile::{GeoInfo, Raster, RasterDtype, S1_KEYS, S2_KEYS, Sidecar, Split, Tile, TilingError};
