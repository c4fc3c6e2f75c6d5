//! The types every module shares: a raster read from disk, a paired tile, its JSON sidecar,
//! splits, and the error type (every variant names the file it is about).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// NPZ keys of the Sentinel-1 bands, in channel order (VV, VH), in dB.
pub const S1_KEYS: [&str; 2] = ["s1_vv", "s1_vh"];
/// NPZ keys of the Sentinel-2 bands, in channel order (B2, B3, B4, B8), as reflectance
/// (L2A DN / 10000).
pub const S2_KEYS: [&str; 4] = ["s2_b2", "s2_b3", "s2_b4", "s2_b8"];

/// Sample type of a raster as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RasterDtype {
    /// Unsigned 8-bit.
    U8,
    /// Unsigned 16-bit.
    U16,
    /// Signed 16-bit.
    I16,
    /// 32-bit float.
    F32,
    /// 16-bit float (NPZ tiles only).
    F16,
}

/// Georeferencing of a raster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoInfo {
    /// GDAL-order affine transform: `[x0, dx, rx, y0, ry, dy]` (pixel corner at (0, 0)).
    pub geotransform: [f64; 6],
    /// EPSG code of the projected or geographic CRS, when the GeoKeys give one.
    pub epsg: Option<u32>,
    /// `EPSG:xxxx` or the GeoKeys' citation text.
    pub crs: Option<String>,
}

/// A multi-band raster in memory, band-major (`data[b * height * width + y * width + x]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raster {
    /// File it came from.
    pub source: PathBuf,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bands.
    pub bands: usize,
    /// Sample type on disk (values are converted to `f32` exactly for every supported type).
    pub dtype: RasterDtype,
    /// The file's nodata value, if any.
    pub nodata: Option<f64>,
    /// Georeferencing, if the file has any.
    pub geo: Option<GeoInfo>,
    /// Samples, band-major.
    pub data: Vec<f32>,
}

/// Train / validation / test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training tiles (the only ones augmented).
    Train,
    /// Validation tiles.
    Val,
    /// Held-out test tiles.
    Test,
}

/// The JSON sidecar of one tile (`<tile_id>.json` next to `<tile_id>.npz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Unique tile id (also the file stem); BigEarthNet-style sidecars call it `id`.
    #[serde(alias = "id")]
    pub tile_id: String,
    /// Pixel rows.
    pub height: usize,
    /// Pixel columns.
    pub width: usize,
    /// Split the tile belongs to.
    pub split: Option<Split>,
    /// Scene (or region) the tile was cut from; splits never share one.
    pub scene: Option<String>,
    /// Top row of the tile's window in its scene.
    pub row: Option<usize>,
    /// Left column of the tile's window in its scene.
    pub col: Option<usize>,
    /// Geotransform of the tile (its own origin), if the scene was georeferenced.
    pub geotransform: Option<[f64; 6]>,
    /// CRS, e.g. `EPSG:32633`.
    pub crs: Option<String>,
    /// Files the tile was read from.
    #[serde(default)]
    pub source_files: Vec<String>,
    /// True for synthetic tiles: every file they produce says so.
    #[serde(default)]
    pub synthetic: bool,
    /// Fraction of pixels valid in every band.
    pub valid_fraction: Option<f64>,
    /// CRC-32C of the NPZ file's bytes, hex.
    pub checksum: Option<String>,
    /// Anything else a producer wrote (kept on rewrite).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A paired tile in memory: `s1` is `[2, H, W]` (VV, VH in dB), `s2` is `[4, H, W]`
/// (B2, B3, B4, B8 reflectance), both band-major `f32`; NaN marks invalid pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Tile id.
    pub id: String,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Sentinel-1 planes.
    pub s1: Vec<f32>,
    /// Sentinel-2 planes.
    pub s2: Vec<f32>,
    /// Its sidecar.
    pub sidecar: Sidecar,
}

/// Everything that can go wrong reading, tiling or loading; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TilingError {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not in the expected format, or uses a feature we do not read.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A tile fails a content check (shapes, band count, all-NaN).
    #[error("{path}: {message}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
}
