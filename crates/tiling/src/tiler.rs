//! Scenes → tiles: windows, S1 to dB, S2 to reflectance, validity filtering, leak-free splits
//! and a manifest.
//!
//! A [`Tiler`] takes scenes one at a time ([`Tiler::add_scene`]), so only one scene is in memory,
//! and writes each kept window as `<out>/<scene>_r<row>_c<col>.npz` as soon as it is cut.
//! Splits depend on the set of all scene (or region) ids, so [`Tiler::finish`] assigns them
//! once every scene is in, then writes the JSON sidecars and `manifest.json` / `manifest.csv`.
//! An interrupted run leaves NPZ files without sidecars or manifest, which [`crate::npz::read_tile`]
//! refuses; rerunning overwrites them.
//!
//! Windows: `stride = size − overlap`; windows start at `0, stride, 2·stride, …` while they fit.
//! When the last one does not reach the scene's edge, one more window is added that is shifted
//! to end exactly at the edge (it overlaps its neighbour by more than `overlap`). Every pixel of
//! a scene at least `size` on each side is thus covered and every window lies fully inside the
//! scene; a scene smaller than `size` on either side yields no tile and is listed in the summary.
//!
//! Validity per pixel: finite in all six bands, no band equal to its raster's nodata value, and
//! not cloudy (cloud-mask value nonzero, NaN included). Validity is judged on the input values,
//! before any conversion. Windows whose valid fraction is below `min_valid_fraction`, or with no
//! valid pixel at all, are skipped and counted; in kept tiles every band of an invalid pixel is NaN.
//!
//! Splits: the sorted unique split keys (scene ids, or region ids with [`SplitBy::Region`]) are
//! shuffled with ChaCha8 seeded by `seed` and cut by the ratios, so a scene or region never spans
//! two splits and the assignment is reproducible for a given seed and set of scenes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::npz::{self, Dtype};
use crate::tile::{GeoInfo, Raster, Sidecar, Split, Tile, TilingError};

/// One scene to tile: co-registered S1 and S2 rasters on the same pixel grid.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Scene id; a plain file stem (letters, digits, `_`, `-`, `.`), unique within a run.
    pub id: String,
    /// Sentinel-1, 2 bands (VV, VH): linear σ0 power, or dB when `s1_is_db`.
    pub s1: Raster,
    /// True when `s1` already holds dB, so no log conversion is applied (the floor still is).
    pub s1_is_db: bool,
    /// Sentinel-2 L2A, 4 bands (B2, B3, B4, B8) as DN.
    pub s2: Raster,
    /// Optional 1-band cloud mask on the same grid; any nonzero value (or NaN) marks cloud.
    pub cloud_mask: Option<Raster>,
}

/// What splits are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    /// Each scene id is a unit.
    #[default]
    Scene,
    /// Scenes whose centre falls in the same coarse grid cell (in their CRS) are one unit.
    Region,
}

/// Fractions of the split units that go to train, val and test (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitRatios {
    /// Training fraction.
    pub train: f64,
    /// Validation fraction.
    pub val: f64,
    /// Test fraction.
    pub test: f64,
}

impl Default for SplitRatios {
    fn default() -> Self {
        Self { train: 0.7, val: 0.15, test: 0.15 }
    }
}

/// Tiling parameters. Everything here affects the output and is echoed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TilerConfig {
    /// Tile side in pixels.
    pub size: usize,
    /// Pixels shared by neighbouring windows (`stride = size − overlap`).
    pub overlap: usize,
    /// S1 values below this many dB are raised to it (`None`: no floor). Conversion from
    /// linear σ0 is `10·log10(max(σ0, 1e-10))`.
    pub s1_db_floor: Option<f32>,
    /// S2 DN are multiplied by this to give reflectance.
    pub s2_scale: f64,
    /// Windows with a smaller fraction of valid pixels are skipped.
    pub min_valid_fraction: f64,
    /// Train / val / test fractions of the split units.
    pub split_ratios: SplitRatios,
    /// Split by scene or by region.
    pub split_by: SplitBy,
    /// Region cell side in metres, for projected CRSs.
    pub region_size_m: f64,
    /// Region cell side in degrees, for geographic CRSs (EPSG 4000–4999).
    pub region_size_deg: f64,
    /// Seed of the split shuffle.
    pub seed: u64,
    /// Sample type of the written planes.
    pub dtype: Dtype,
    /// When only one of S1 and S2 is georeferenced, take the other to lie on its pixel grid, so
    /// the tiles get its geotransform and CRS (`true`, the default for scenes built in memory,
    /// which are co-registered by construction). `false` refuses such a scene with an error
    /// naming the raster without georeferencing: `trainyard-tile` sets `false` unless given
    /// `--assume-same-grid`.
    pub assume_same_grid: bool,
}

impl Default for TilerConfig {
    fn default() -> Self {
        Self {
            size: 256,
            overlap: 0,
            s1_db_floor: Some(-30.0),
            s2_scale: 1.0 / 10000.0,
            min_valid_fraction: 0.5,
            split_ratios: SplitRatios::default(),
            split_by: SplitBy::Scene,
            region_size_m: 50_000.0,
            region_size_deg: 0.5,
            seed: 42,
            dtype: Dtype::F32,
            assume_same_grid: true,
        }
    }
}

impl TilerConfig {
    /// Checks the parameters; the message names the offending value and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("size must be at least 1 pixel".into());
        }
        if self.overlap >= self.size {
            return Err(format!("overlap {} must be smaller than size {}", self.overlap, self.size));
        }
        if !(0.0..=1.0).contains(&self.min_valid_fraction) {
            return Err(format!("min_valid_fraction {} must be within [0, 1]", self.min_valid_fraction));
        }
        if !(self.s2_scale.is_finite() && self.s2_scale > 0.0) {
            return Err(format!("s2_scale {} must be a positive number", self.s2_scale));
        }
        if let Some(floor) = self.s1_db_floor
            && !floor.is_finite()
        {
            return Err(format!("s1_db_floor {floor} must be finite (leave it unset for no floor)"));
        }
        let r = self.split_ratios;
        let parts = [r.train, r.val, r.test];
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0) || (parts.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(format!("split ratios {}/{}/{} must be non-negative and sum to 1", r.train, r.val, r.test));
        }
        for (name, v) in [("region_size_m", self.region_size_m), ("region_size_deg", self.region_size_deg)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} {v} must be a positive number"));
            }
        }
        Ok(())
    }

    /// Window start positions along an axis of `len` pixels (see the module docs).
    pub fn window_starts(&self, len: usize) -> Vec<usize> {
        window_starts(len, self.size, self.size - self.overlap)
    }
}

fn window_starts(len: usize, size: usize, stride: usize) -> Vec<usize> {
    if len < size {
        return Vec::new();
    }
    let mut starts: Vec<usize> = (0..=len - size).step_by(stride).collect();
    if let Some(&last) = starts.last()
        && last + size < len
    {
        starts.push(len - size);
    }
    starts
}

/// S1 linear σ0 power → dB: `10·log10(max(σ0, 1e-10))`, then raised to `floor` if given.
pub fn s1_to_db(sigma0: f32, floor: Option<f32>) -> f32 {
    let db = (10.0 * f64::from(sigma0).max(1e-10).log10()) as f32;
    apply_floor(db, floor)
}

fn apply_floor(db: f32, floor: Option<f32>) -> f32 {
    match floor {
        Some(f) if db < f => f,
        _ => db,
    }
}

/// S2 DN → reflectance: `DN · scale`, rounded once to `f32`.
pub fn s2_to_reflectance(dn: f32, scale: f64) -> f32 {
    (f64::from(dn) * scale) as f32
}

/// Seeded, leak-free split assignment: the sorted unique `keys` are shuffled with ChaCha8
/// seeded by `seed` and cut at `round(n·train)` and `round(n·(train + val))`.
pub fn assign_splits<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    ratios: SplitRatios,
    seed: u64,
) -> BTreeMap<String, Split> {
    let unique: BTreeSet<&str> = keys.into_iter().collect();
    let mut ids: Vec<&str> = unique.into_iter().collect();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = ids.len() as f64;
    let train_end = (n * ratios.train).round() as usize;
    let val_end = ((n * (ratios.train + ratios.val)).round() as usize).max(train_end);
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let split = if i < train_end {
                Split::Train
            } else if i < val_end {
                Split::Val
            } else {
                Split::Test
            };
            (id.to_string(), split)
        })
        .collect()
}

/// Region id of a scene: the grid cell (in its CRS units) holding the scene's centre, e.g.
/// `EPSG-32633_x8_y103`. Cells are `region_size_deg` wide for geographic CRSs (EPSG 4000–4999)
/// and `region_size_m` otherwise. Scenes in different CRSs (e.g. UTM zones) never share a region.
/// Only the centre counts: scenes that overlap but whose centres fall in different cells can
/// land in different splits, so pick a cell well larger than one scene's footprint.
pub fn region_id(geo: &GeoInfo, width: usize, height: usize, config: &TilerConfig) -> String {
    let gt = geo.geotransform;
    let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
    let x = gt[0] + cx * gt[1] + cy * gt[2];
    let y = gt[3] + cx * gt[4] + cy * gt[5];
    let epsg = geo.epsg.or_else(|| geo.crs.as_deref().and_then(|c| c.strip_prefix("EPSG:")?.parse().ok()));
    let cell =
        if epsg.is_some_and(|e| (4000..5000).contains(&e)) { config.region_size_deg } else { config.region_size_m };
    let crs = match (epsg, &geo.crs) {
        (Some(e), _) => format!("EPSG-{e}"),
        (None, Some(c)) => c.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect(),
        (None, None) => "unknown-crs".to_string(),
    };
    format!("{crs}_x{}_y{}", (x / cell).floor() as i64, (y / cell).floor() as i64)
}

/// A window of a scene, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Top row.
    pub row: usize,
    /// Left column.
    pub col: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// One written tile in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTile {
    /// `<scene>_r<row>_c<col>`.
    pub tile_id: String,
    /// NPZ file name, relative to the manifest.
    pub npz: String,
    /// Scene id.
    pub scene: String,
    /// Region id, when splitting by region.
    pub region: Option<String>,
    /// Split.
    pub split: Split,
    /// Input files (S1, S2, cloud mask).
    pub source_files: Vec<String>,
    /// Window in the scene.
    pub window: Window,
    /// GDAL geotransform of the tile (origin at its own top-left corner).
    pub geotransform: Option<[f64; 6]>,
    /// CRS of the scene.
    pub crs: Option<String>,
    /// Fraction of valid pixels.
    pub valid_fraction: f64,
    /// CRC-32C of the NPZ bytes, hex.
    pub checksum: String,
}

/// Why a window was skipped: which cause invalidated more of its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Mostly cloud (per the cloud mask).
    MostlyCloud,
    /// Mostly nodata: NaN/infinite samples or the rasters' nodata value.
    MostlyNodata,
}

/// A window that was not written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedTile {
    /// The id it would have had.
    pub tile_id: String,
    /// Scene id.
    pub scene: String,
    /// Window in the scene.
    pub window: Window,
    /// Fraction of valid pixels.
    pub valid_fraction: f64,
    /// Fraction of pixels marked cloudy.
    pub cloud_fraction: f64,
    /// Fraction of pixels with a non-finite or nodata sample.
    pub nodata_fraction: f64,
    /// The dominant cause.
    pub reason: SkipReason,
}

/// One value per split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerSplit<T> {
    /// Train.
    pub train: T,
    /// Validation.
    pub val: T,
    /// Test.
    pub test: T,
}

impl<T> PerSplit<T> {
    /// The value of one split.
    pub fn get(&self, split: Split) -> &T {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    fn get_mut(&mut self, split: Split) -> &mut T {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
            Split::Test => &mut self.test,
        }
    }
}

/// Per-scene record in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    /// Scene id.
    pub scene: String,
    /// Region id, when splitting by region.
    pub region: Option<String>,
    /// Split of all its tiles.
    pub split: Split,
    /// Input files (S1, S2, cloud mask).
    pub source_files: Vec<String>,
    /// Whether S1 came in as dB (`true`) or linear σ0.
    pub s1_input_db: bool,
    /// Scene width in pixels.
    pub width: usize,
    /// Scene height in pixels.
    pub height: usize,
    /// Tiles written.
    pub tiles_written: usize,
    /// Windows skipped.
    pub tiles_skipped: usize,
}

/// Skipped-window counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipSummary {
    /// All skipped windows.
    pub total: usize,
    /// The threshold they fell below.
    pub min_valid_fraction: f64,
    /// Count per dominant cause.
    pub by_reason: BTreeMap<SkipReason, usize>,
}

/// Run totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSummary {
    /// Tiles written, all splits.
    pub tiles_written: usize,
    /// Tiles written per split.
    pub tiles_per_split: PerSplit<usize>,
    /// Scene ids per split.
    pub scenes_per_split: PerSplit<Vec<String>>,
    /// Skipped windows and why.
    pub skipped: SkipSummary,
    /// Scenes smaller than one tile on some side (no windows).
    pub scenes_smaller_than_tile: Vec<String>,
    /// The configuration used.
    pub config: TilerConfig,
}

/// `manifest.json`: every tile, every skipped window, every scene, and the totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Tiles written, in scene order then row, column.
    pub tiles: Vec<ManifestTile>,
    /// Windows skipped for too few valid pixels.
    pub skipped: Vec<SkippedTile>,
    /// Scenes, in the order they were added.
    pub scenes: Vec<SceneRecord>,
    /// Totals and the configuration.
    pub summary: ManifestSummary,
}

impl Manifest {
    /// Reads a `manifest.json`.
    pub fn read(path: &Path) -> Result<Self, TilingError> {
        let bytes = std::fs::read(path).map_err(|source| TilingError::Io { path: path.to_path_buf(), source })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| TilingError::Format { path: path.to_path_buf(), message: format!("malformed manifest: {e}") })
    }
}

/// A tile written during [`Tiler::add_scene`], waiting for its split.
struct PendingTile {
    sidecar: Sidecar,
    scene_index: usize,
    window: Window,
    checksum: String,
}

/// Summary of one [`Tiler::add_scene`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SceneReport {
    /// Tiles written.
    pub written: usize,
    /// Windows skipped for too few valid pixels.
    pub skipped: usize,
    /// Windows considered.
    pub windows: usize,
}

/// Cuts scenes into tiles under one output directory (see the module docs).
pub struct Tiler {
    config: TilerConfig,
    out_dir: PathBuf,
    threads: usize,
    scenes: Vec<SceneRecord>,
    split_keys: Vec<String>,
    tiles: Vec<PendingTile>,
    skipped: Vec<SkippedTile>,
}

/// Pixel status bits.
const NODATA: u8 = 1;
const CLOUD: u8 = 2;

impl Tiler {
    /// Starts a run writing into `out_dir` (created if missing).
    pub fn new(out_dir: &Path, config: TilerConfig) -> Result<Self, TilingError> {
        config.validate().map_err(|message| TilingError::Content {
            path: out_dir.to_path_buf(),
            message: format!("invalid tiler configuration: {message}"),
        })?;
        std::fs::create_dir_all(out_dir).map_err(|source| TilingError::Io { path: out_dir.to_path_buf(), source })?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            config,
            out_dir: out_dir.to_path_buf(),
            threads,
            scenes: Vec::new(),
            split_keys: Vec::new(),
            tiles: Vec::new(),
            skipped: Vec::new(),
        })
    }

    /// Sets the number of worker threads that cut, compress and write tiles (default: all cores;
    /// the output does not depend on it).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &TilerConfig {
        &self.config
    }

    /// Validates a scene, cuts it and writes its kept tiles' NPZ files.
    ///
    /// Errors: a scene id that is not a plain file stem or was already added; S1 without 2
    /// bands, S2 without 4, a cloud mask without 1; S1, S2 and mask of different shapes or
    /// (when both are georeferenced) on different grids; only one of S1 and S2 georeferenced
    /// unless [`TilerConfig::assume_same_grid`]; with [`SplitBy::Region`], a scene without
    /// georeferencing. Each message names the files involved.
    pub fn add_scene(&mut self, scene: Scene) -> Result<SceneReport, TilingError> {
        let Scene { id, mut s1, s1_is_db, mut s2, cloud_mask } = scene;
        check_scene(&id, &s1, &s2, cloud_mask.as_ref(), &self.scenes, &self.config)?;
        let geo = s2.geo.clone().or_else(|| s1.geo.clone());
        let region = match self.config.split_by {
            SplitBy::Scene => None,
            SplitBy::Region => match &geo {
                Some(g) => Some(region_id(g, s2.width, s2.height, &self.config)),
                None => {
                    return Err(TilingError::Content {
                        path: s2.source.clone(),
                        message: format!(
                            "scene `{id}`: splitting by region needs georeferenced rasters, and neither {} nor {} has a geotransform",
                            s1.source.display(),
                            s2.source.display()
                        ),
                    });
                }
            },
        };
        let mut source_files = vec![s1.source.display().to_string(), s2.source.display().to_string()];
        if let Some(m) = &cloud_mask {
            source_files.push(m.source.display().to_string());
        }

        let (width, height) = (s2.width, s2.height);
        let status = pixel_status(&s1, &s2, cloud_mask.as_ref());
        drop(cloud_mask);
        let floor = self.config.s1_db_floor;
        for v in &mut s1.data {
            *v = if s1_is_db { apply_floor(*v, floor) } else { s1_to_db(*v, floor) };
        }
        let scale = self.config.s2_scale;
        for v in &mut s2.data {
            *v = s2_to_reflectance(*v, scale);
        }

        let size = self.config.size;
        let windows: Vec<Window> = self
            .config
            .window_starts(height)
            .into_iter()
            .flat_map(|row| {
                self.config.window_starts(width).into_iter().map(move |col| Window {
                    row,
                    col,
                    height: size,
                    width: size,
                })
            })
            .collect();

        let ctx = CutContext {
            scene_id: &id,
            width,
            status: &status,
            s1: &s1.data,
            s2: &s2.data,
            geo: geo.as_ref(),
            region: region.as_deref(),
            source_files: &source_files,
            config: &self.config,
            out_dir: &self.out_dir,
        };
        let outcomes = parallel_map(&windows, self.threads, |w| ctx.cut(*w))?;

        let scene_index = self.scenes.len();
        let mut report = SceneReport { written: 0, skipped: 0, windows: windows.len() };
        for outcome in outcomes {
            match outcome {
                Cut::Written { sidecar, window, checksum } => {
                    report.written += 1;
                    self.tiles.push(PendingTile { sidecar: *sidecar, scene_index, window, checksum });
                }
                Cut::Skipped(s) => {
                    report.skipped += 1;
                    self.skipped.push(s);
                }
            }
        }
        self.split_keys.push(region.clone().unwrap_or_else(|| id.clone()));
        self.scenes.push(SceneRecord {
            scene: id,
            region,
            split: Split::Train,
            source_files,
            s1_input_db: s1_is_db,
            width,
            height,
            tiles_written: report.written,
            tiles_skipped: report.skipped,
        });
        Ok(report)
    }

    /// Assigns splits, writes every sidecar and `manifest.json` / `manifest.csv`, and returns
    /// the manifest.
    pub fn finish(mut self) -> Result<Manifest, TilingError> {
        let splits =
            assign_splits(self.split_keys.iter().map(String::as_str), self.config.split_ratios, self.config.seed);
        for (record, key) in self.scenes.iter_mut().zip(&self.split_keys) {
            record.split = splits[key];
        }
        for t in &mut self.tiles {
            t.sidecar.split = Some(self.scenes[t.scene_index].split);
        }
        let out_dir = &self.out_dir;
        parallel_map(&self.tiles, self.threads, |t| npz::write_sidecar(out_dir, &t.sidecar).map(|_| ()))?;

        let mut summary = ManifestSummary {
            tiles_written: self.tiles.len(),
            tiles_per_split: PerSplit::default(),
            scenes_per_split: PerSplit::default(),
            skipped: SkipSummary {
                total: self.skipped.len(),
                min_valid_fraction: self.config.min_valid_fraction,
                by_reason: BTreeMap::new(),
            },
            scenes_smaller_than_tile: Vec::new(),
            config: self.config.clone(),
        };
        for s in &self.skipped {
            *summary.skipped.by_reason.entry(s.reason).or_default() += 1;
        }
        for r in &self.scenes {
            summary.scenes_per_split.get_mut(r.split).push(r.scene.clone());
            if r.width < self.config.size || r.height < self.config.size {
                summary.scenes_smaller_than_tile.push(r.scene.clone());
            }
        }
        let tiles: Vec<ManifestTile> = self
            .tiles
            .into_iter()
            .map(|t| {
                let record = &self.scenes[t.scene_index];
                *summary.tiles_per_split.get_mut(record.split) += 1;
                ManifestTile {
                    npz: format!("{}.npz", t.sidecar.tile_id),
                    tile_id: t.sidecar.tile_id,
                    scene: record.scene.clone(),
                    region: record.region.clone(),
                    split: record.split,
                    source_files: t.sidecar.source_files,
                    window: t.window,
                    geotransform: t.sidecar.geotransform,
                    crs: t.sidecar.crs,
                    valid_fraction: t.sidecar.valid_fraction.unwrap_or(1.0),
                    checksum: t.checksum,
                }
            })
            .collect();
        let manifest = Manifest { tiles, skipped: self.skipped, scenes: self.scenes, summary };
        write_manifest(&self.out_dir, &manifest)?;
        Ok(manifest)
    }
}

/// Makes `dir` ready to receive a new tiler run and returns how many earlier tiles it removed.
///
/// A missing or empty directory is ready as is. A non-empty one is refused (an error naming it
/// and what it holds) unless `overwrite`: a new run would replace its manifest and orphan the
/// tiles listed in it. With `overwrite`, the earlier run's output is removed first —
/// `manifest.json` and `manifest.csv` before anything else, so no manifest ever lists a missing
/// tile, then every `*.npz` directly in `dir` with its `<stem>.json` sidecar. Other files and
/// subdirectories are kept.
pub fn prepare_output_dir(dir: &Path, overwrite: bool) -> Result<usize, TilingError> {
    let io = |source| TilingError::Io { path: dir.to_path_buf(), source };
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    if names.is_empty() {
        return Ok(0);
    }
    names.sort();
    let tiles: Vec<&PathBuf> = names.iter().filter(|p| p.extension().is_some_and(|e| e == "npz")).collect();
    if !overwrite {
        let has_manifest = names.iter().any(|p| p.file_name().is_some_and(|n| n == "manifest.json"));
        let example = names.first().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
        return Err(TilingError::Content {
            path: dir.to_path_buf(),
            message: format!(
                "the output directory is not empty ({} entries{}, {} NPZ tiles, e.g. `{}`); a new run would replace \
                 its manifest and orphan its tiles. Choose a new or empty directory, or overwrite it \
                 (trainyard-tile --overwrite removes the earlier tiles and manifest first)",
                names.len(),
                if has_manifest { " with a manifest.json" } else { "" },
                tiles.len(),
                example.unwrap_or_default()
            ),
        });
    }
    let remove = |path: &Path| match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TilingError::Io { path: path.to_path_buf(), source }),
    };
    for name in ["manifest.json", "manifest.csv"] {
        remove(&dir.join(name))?;
    }
    for path in &tiles {
        remove(&npz::sidecar_path(path))?;
        remove(path)?;
    }
    Ok(tiles.len())
}

/// Cuts, tiles and finishes a list of scenes held in memory (convenience over [`Tiler`]).
pub fn tile_scenes(out_dir: &Path, scenes: Vec<Scene>, config: TilerConfig) -> Result<Manifest, TilingError> {
    let mut tiler = Tiler::new(out_dir, config)?;
    for scene in scenes {
        tiler.add_scene(scene)?;
    }
    tiler.finish()
}

fn content(path: &Path, message: String) -> TilingError {
    TilingError::Content { path: path.to_path_buf(), message }
}

fn check_scene(
    id: &str,
    s1: &Raster,
    s2: &Raster,
    mask: Option<&Raster>,
    previous: &[SceneRecord],
    config: &TilerConfig,
) -> Result<(), TilingError> {
    let valid_id = !id.is_empty()
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_id {
        return Err(content(
            &s2.source,
            format!("scene id `{id}` must be a plain file stem (letters, digits, `_`, `-`, `.`; no leading `.`)"),
        ));
    }
    if previous.iter().any(|r| r.scene == id) {
        return Err(content(
            &s2.source,
            format!("scene id `{id}` was already added in this run; scene ids must be unique"),
        ));
    }
    for (r, bands, what) in [(s1, 2, "S1 (VV, VH)"), (s2, 4, "S2 (B2, B3, B4, B8)")] {
        if r.bands != bands {
            return Err(content(
                &r.source,
                format!("scene `{id}`: {what} raster has {} bands, expected {bands}", r.bands),
            ));
        }
    }
    if let Some(m) = mask
        && m.bands != 1
    {
        return Err(content(&m.source, format!("scene `{id}`: cloud mask has {} bands, expected 1", m.bands)));
    }
    for r in [Some(s1), Some(s2), mask].into_iter().flatten() {
        if r.data.len() != r.bands * r.width * r.height {
            return Err(content(
                &r.source,
                format!("raster holds {} samples, expected {}x{}x{}", r.data.len(), r.bands, r.height, r.width),
            ));
        }
    }
    let others = [Some((s2, "S2")), mask.map(|m| (m, "cloud mask"))];
    for (other, what) in others.into_iter().flatten() {
        if (other.width, other.height) != (s1.width, s1.height) {
            return Err(content(
                &s1.source,
                format!(
                    "scene `{id}`: S1 is {}x{} (width x height) but {what} {} is {}x{}; the tiler does not reproject, \
                     so resample both onto one grid first",
                    s1.width,
                    s1.height,
                    other.source.display(),
                    other.width,
                    other.height
                ),
            ));
        }
        if let (Some(a), Some(b)) = (&s1.geo, &other.geo)
            && let Some(why) = grid_mismatch(a, b)
        {
            return Err(content(
                &s1.source,
                format!(
                    "scene `{id}`: S1 and {what} {} are not on the same grid ({why}); the tiler does not reproject",
                    other.source.display()
                ),
            ));
        }
    }
    if !config.assume_same_grid {
        let one_sided = match (&s1.geo, &s2.geo) {
            (None, Some(_)) => Some((s1, "S1", s2, "S2")),
            (Some(_), None) => Some((s2, "S2", s1, "S1")),
            _ => None,
        };
        if let Some((bare, bare_name, georef, georef_name)) = one_sided {
            return Err(content(
                &bare.source,
                format!(
                    "scene `{id}`: the {bare_name} raster has no georeferencing but the {georef_name} raster {} has; \
                     its tiles would silently take the {georef_name} CRS and geotransform. Georeference it, or \
                     declare that it lies on the {georef_name} pixel grid (trainyard-tile --assume-same-grid)",
                    georef.source.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Why two georeferenced rasters of the same shape are not on one pixel grid, if they are not.
fn grid_mismatch(a: &GeoInfo, b: &GeoInfo) -> Option<String> {
    let crs_a = a.epsg.map(|e| format!("EPSG:{e}")).or_else(|| a.crs.clone());
    let crs_b = b.epsg.map(|e| format!("EPSG:{e}")).or_else(|| b.crs.clone());
    if let (Some(x), Some(y)) = (&crs_a, &crs_b)
        && x != y
    {
        return Some(format!("CRS {x} vs {y}"));
    }
    let (ga, gb) = (a.geotransform, b.geotransform);
    for i in [1, 2, 4, 5] {
        if (ga[i] - gb[i]).abs() > 1e-6 * ga[i].abs().max(gb[i].abs()).max(1e-12) {
            return Some(format!(
                "pixel size/rotation {:?} vs {:?}",
                [ga[1], ga[2], ga[4], ga[5]],
                [gb[1], gb[2], gb[4], gb[5]]
            ));
        }
    }
    // Origins may differ by float noise but not by half a pixel or more.
    let (px, py) = ((ga[1].abs() + ga[2].abs()) / 2.0, (ga[4].abs() + ga[5].abs()) / 2.0);
    if (ga[0] - gb[0]).abs() >= px || (ga[3] - gb[3]).abs() >= py {
        return Some(format!("origin ({}, {}) vs ({}, {})", ga[0], ga[3], gb[0], gb[3]));
    }
    None
}

/// Per-pixel status: `NODATA` if any band is non-finite or equal to its raster's nodata value,
/// `CLOUD` if the mask is nonzero (NaN included).
fn pixel_status(s1: &Raster, s2: &Raster, mask: Option<&Raster>) -> Vec<u8> {
    let n = s1.width * s1.height;
    let mut status = vec![0u8; n];
    for r in [s1, s2] {
        let nodata = r.nodata;
        for band in r.data.chunks_exact(n) {
            for (s, &v) in status.iter_mut().zip(band) {
                if !v.is_finite() || nodata.is_some_and(|nd| f64::from(v) == nd) {
                    *s |= NODATA;
                }
            }
        }
    }
    if let Some(m) = mask {
        for (s, &v) in status.iter_mut().zip(&m.data) {
            if v != 0.0 {
                *s |= CLOUD;
            }
        }
    }
    status
}

/// What [`CutContext::cut`] did with a window.
enum Cut {
    Written { sidecar: Box<Sidecar>, window: Window, checksum: String },
    Skipped(SkippedTile),
}

/// Everything a worker needs to cut one window of a scene.
struct CutContext<'a> {
    scene_id: &'a str,
    width: usize,
    status: &'a [u8],
    s1: &'a [f32],
    s2: &'a [f32],
    geo: Option<&'a GeoInfo>,
    region: Option<&'a str>,
    source_files: &'a [String],
    config: &'a TilerConfig,
    out_dir: &'a Path,
}

impl CutContext<'_> {
    fn cut(&self, w: Window) -> Result<Cut, TilingError> {
        let tile_id = format!("{}_r{}_c{}", self.scene_id, w.row, w.col);
        let (mut valid, mut cloud, mut nodata) = (0usize, 0usize, 0usize);
        for y in w.row..w.row + w.height {
            for &s in &self.status[y * self.width + w.col..y * self.width + w.col + w.width] {
                valid += usize::from(s == 0);
                cloud += usize::from(s & CLOUD != 0);
                nodata += usize::from(s & NODATA != 0);
            }
        }
        let area = (w.height * w.width) as f64;
        let valid_fraction = valid as f64 / area;
        if valid == 0 || valid_fraction < self.config.min_valid_fraction {
            let reason = if cloud >= nodata { SkipReason::MostlyCloud } else { SkipReason::MostlyNodata };
            return Ok(Cut::Skipped(SkippedTile {
                tile_id,
                scene: self.scene_id.to_string(),
                window: w,
                valid_fraction,
                cloud_fraction: cloud as f64 / area,
                nodata_fraction: nodata as f64 / area,
                reason,
            }));
        }

        let n_scene = self.status.len();
        let extract = |data: &[f32], bands: usize| {
            let mut out = Vec::with_capacity(bands * w.height * w.width);
            for band in data.chunks_exact(n_scene).take(bands) {
                for y in w.row..w.row + w.height {
                    let start = y * self.width + w.col;
                    let values = &band[start..start + w.width];
                    let flags = &self.status[start..start + w.width];
                    out.extend(values.iter().zip(flags).map(|(&v, &s)| if s == 0 { v } else { f32::NAN }));
                }
            }
            out
        };
        let (s1, s2) = (extract(self.s1, 2), extract(self.s2, 4));

        let geotransform = self.geo.map(|g| {
            let gt = g.geotransform;
            let (c, r) = (w.col as f64, w.row as f64);
            [gt[0] + c * gt[1] + r * gt[2], gt[1], gt[2], gt[3] + c * gt[4] + r * gt[5], gt[4], gt[5]]
        });
        let crs = self.geo.and_then(|g| g.crs.clone().or_else(|| g.epsg.map(|e| format!("EPSG:{e}"))));
        let mut extra = serde_json::Map::new();
        if let Some(region) = self.region {
            extra.insert("region".into(), region.into());
        }
        let mut sidecar = Sidecar {
            tile_id: tile_id.clone(),
            height: w.height,
            width: w.width,
            split: None,
            scene: Some(self.scene_id.to_string()),
            row: Some(w.row),
            col: Some(w.col),
            geotransform,
            crs,
            source_files: self.source_files.to_vec(),
            // A scene rendered by `synthetic` names its sources `synthetic://…`: its tiles say so.
            synthetic: self.source_files.iter().any(|f| f.starts_with("synthetic://")),
            valid_fraction: Some(valid_fraction),
            checksum: None,
            extra,
        };
        let tile = Tile { id: tile_id, height: w.height, width: w.width, s1, s2, sidecar: sidecar.clone() };
        let (_, checksum) = npz::write_npz(self.out_dir, &tile, self.config.dtype)?;
        sidecar.checksum = Some(checksum.clone());
        Ok(Cut::Written { sidecar: Box::new(sidecar), window: w, checksum })
    }
}

/// Maps `f` over `items` on up to `threads` scoped threads, keeping the input order; stops
/// early and returns the first error (in input order among those seen).
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, TilingError> + Sync,
) -> Result<Vec<R>, TilingError> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut results: Vec<(usize, Result<R, TilingError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut local = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = f(item);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        local.push((i, r));
                    }
                    local
                })
            })
            .collect();
        workers.into_iter().flat_map(|h| h.join().expect("tiler worker panicked")).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Writes `manifest.json` and `manifest.csv` into `dir`, atomically.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), TilingError> {
    let json_path = dir.join("manifest.json");
    let mut json = serde_json::to_vec_pretty(manifest).map_err(|e| TilingError::Format {
        path: json_path.clone(),
        message: format!("cannot serialise manifest: {e}"),
    })?;
    json.push(b'\n');
    npz::write_atomic(&json_path, &json)?;

    let csv_path = dir.join("manifest.csv");
    let csv_err = |e: csv::Error| TilingError::Format {
        path: csv_path.clone(),
        message: format!("cannot write manifest CSV: {e}"),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "tile_id",
        "npz",
        "scene",
        "region",
        "split",
        "row",
        "col",
        "height",
        "width",
        "valid_fraction",
        "checksum",
        "crs",
        "geotransform",
        "source_files",
    ])
    .map_err(csv_err)?;
    for t in &manifest.tiles {
        let split = match t.split {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        };
        let gt = t.geotransform.map(|g| g.map(|v| v.to_string()).join(" ")).unwrap_or_default();
        w.write_record([
            t.tile_id.as_str(),
            &t.npz,
            &t.scene,
            t.region.as_deref().unwrap_or(""),
            split,
            &t.window.row.to_string(),
            &t.window.col.to_string(),
            &t.window.height.to_string(),
            &t.window.width.to_string(),
            &t.valid_fraction.to_string(),
            &t.checksum,
            t.crs.as_deref().unwrap_or(""),
            &gt,
            &t.source_files.join(";"),
        ])
        .map_err(csv_err)?;
    }
    let bytes = w.into_inner().map_err(|e| TilingError::Io { path: csv_path.clone(), source: e.into_error() })?;
    npz::write_atomic(&csv_path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_shift_the_last_window_to_the_edge() {
        assert_eq!(window_starts(600, 256, 224), vec![0, 224, 344]);
        assert_eq!(window_starts(500, 256, 224), vec![0, 224, 244]);
        assert_eq!(window_starts(512, 256, 256), vec![0, 256]);
        assert_eq!(window_starts(256, 256, 256), vec![0]);
        assert_eq!(window_starts(255, 256, 256), Vec::<usize>::new());
    }

    #[test]
    fn grid_mismatch_tolerates_noise_only() {
        let g =
            |x0: f64, dx: f64| GeoInfo { geotransform: [x0, dx, 0.0, 100.0, 0.0, -dx], epsg: Some(32633), crs: None };
        assert!(grid_mismatch(&g(0.0, 10.0), &g(1e-9, 10.0)).is_none());
        assert!(grid_mismatch(&g(0.0, 10.0), &g(10.0, 10.0)).is_some());
        assert!(grid_mismatch(&g(0.0, 10.0), &g(0.0, 20.0)).is_some());
    }
}
