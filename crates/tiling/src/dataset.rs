//! The tile dataset and its loader: standardisation, paired augmentation, parallel decoding with
//! a bounded prefetch queue, in-order delivery and a resumable cursor.
//!
//! - A [`TileSource`] says how many tiles there are and loads one by index: [`MemorySource`]
//!   (tiles in memory, for tests and synthetic smoke runs) or [`NpzSource`] (NPZ tiles with JSON
//!   sidecars on disk, read with [`crate::npz::read_tile`]).
//! - A [`TileDataset`] turns tile `index` of epoch `epoch` into a [`Sample`]: a validity mask
//!   (1 where all six channels are finite), per-band [`Standardization`], non-finite values set to
//!   0 (after standardisation, i.e. at the band mean), and, **for the training split only**, a
//!   paired [`Augment`] (flips and rot90, identical on S1, S2 and the mask) drawn from
//!   `(seed, epoch, index)`. Validation and test samples are never augmented, whatever the
//!   configuration says.
//! - A [`Loader`] walks one epoch's order (a seeded shuffle per `(seed, epoch)` for training,
//!   sequential otherwise) from a [`Cursor`], decoding on worker threads and yielding samples in
//!   order, so its output does not depend on the number of workers or on thread timing.
//! - [`collate`] stacks samples into a [`Batch`].
//!
//! Random draws use ChaCha8 streams and this module's own integer helpers (not `rand`'s
//! distributions), so orders and augmentations are stable across platforms and `rand` releases.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::tile::{Sidecar, Split, Tile, TilingError};

// ---------------------------------------------------------------------------------------------
// Sources

/// Where tiles come from: a fixed, indexable list. Implementations must be cheap to share
/// between the loader's worker threads.
pub trait TileSource: Send + Sync {
    /// Number of tiles.
    fn len(&self) -> usize;

    /// True when there are no tiles.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Id of tile `index` (`index < len()`).
    fn tile_id(&self, index: usize) -> &str;

    /// The file (or name) errors about tile `index` should name; by default its id.
    fn path(&self, index: usize) -> PathBuf {
        PathBuf::from(self.tile_id(index))
    }

    /// Loads tile `index`. Errors name the file.
    fn load(&self, index: usize) -> Result<Tile, TilingError>;
}

/// Tiles held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    tiles: Vec<Tile>,
}

impl MemorySource {
    /// All the given tiles, in order.
    pub fn new(tiles: Vec<Tile>) -> MemorySource {
        MemorySource { tiles }
    }

    /// The tiles whose sidecar `split` is `split` (order kept).
    pub fn with_split(tiles: Vec<Tile>, split: Split) -> MemorySource {
        MemorySource { tiles: tiles.into_iter().filter(|t| t.sidecar.split == Some(split)).collect() }
    }

    /// The tiles.
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }
}

impl TileSource for MemorySource {
    fn len(&self) -> usize {
        self.tiles.len()
    }

    fn tile_id(&self, index: usize) -> &str {
        &self.tiles[index].id
    }

    fn load(&self, index: usize) -> Result<Tile, TilingError> {
        Ok(self.tiles[index].clone())
    }
}

/// NPZ tiles on disk (`<id>.npz` with its sidecar `<id>.json`), read with
/// [`crate::npz::read_tile_verified`]: a tile listed in a manifest is checked against the
/// manifest's checksum as well as its sidecar's.
#[derive(Debug, Clone, Default)]
pub struct NpzSource {
    entries: Vec<NpzEntry>,
}

#[derive(Debug, Clone)]
struct NpzEntry {
    id: String,
    path: PathBuf,
    /// CRC-32C the manifest lists for the file, if it came from one.
    checksum: Option<String>,
}

impl NpzSource {
    /// The given NPZ files, in the given order; ids are the file stems.
    pub fn from_paths(paths: impl IntoIterator<Item = PathBuf>) -> NpzSource {
        let entries = paths
            .into_iter()
            .map(|p| NpzEntry {
                id: p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                path: p,
                checksum: None,
            })
            .collect();
        NpzSource { entries }
    }

    /// Every `*.npz` directly in `dir` (not recursive), sorted by file name.
    pub fn from_dir(dir: &Path) -> Result<NpzSource, TilingError> {
        let io = |source| TilingError::Io { path: dir.to_path_buf(), source };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "npz") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(NpzSource::from_paths(paths))
    }

    /// The `*.npz` tiles directly in `dir` whose sidecar says `split`, sorted by file name. Every
    /// tile needs a sidecar with a `split`: a missing sidecar or split is an error naming the
    /// file (never a guess from the path).
    pub fn from_dir_split(dir: &Path, split: Split) -> Result<NpzSource, TilingError> {
        let all = NpzSource::from_dir(dir)?;
        let mut entries = Vec::new();
        for entry in all.entries {
            let json = crate::npz::sidecar_path(&entry.path);
            let sidecar: Sidecar = crate::npz::read_sidecar(&json)?;
            match sidecar.split {
                Some(s) if s == split => entries.push(entry),
                Some(_) => {}
                None => {
                    return Err(TilingError::Content {
                        path: json,
                        message: "sidecar has no `split`; cannot assign the tile to a split".into(),
                    });
                }
            }
        }
        Ok(NpzSource { entries })
    }

    /// The tiles a tiler `manifest.json` lists (for `split`, or all when `None`), in manifest
    /// order; NPZ paths are relative to the manifest's directory, and each tile is checked
    /// against the manifest's checksum when it is read.
    ///
    /// Errors name the manifest and the entry: an NPZ path that is absolute or leaves the
    /// manifest's directory (`..`), and a listed file that does not exist.
    pub fn from_manifest(manifest: &Path, split: Option<Split>) -> Result<NpzSource, TilingError> {
        let m = crate::tiler::Manifest::read(manifest)?;
        let dir = manifest.parent().unwrap_or(Path::new("."));
        let entry_err = |id: &str, npz: &str, what: &str| TilingError::Content {
            path: manifest.to_path_buf(),
            message: format!("tile `{id}`: npz `{npz}` {what}"),
        };
        let mut entries = Vec::new();
        for t in m.tiles.into_iter().filter(|t| split.is_none_or(|s| t.split == s)) {
            let relative = Path::new(&t.npz);
            let inside =
                !t.npz.is_empty() && relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(entry_err(
                    &t.tile_id,
                    &t.npz,
                    "is not a relative path inside the manifest's directory (absolute paths and `..` are refused)",
                ));
            }
            let path = dir.join(relative);
            if !path.is_file() {
                return Err(entry_err(&t.tile_id, &t.npz, &format!("is listed but {} does not exist", path.display())));
            }
            entries.push(NpzEntry { id: t.tile_id, path, checksum: Some(t.checksum) });
        }
        Ok(NpzSource { entries })
    }

    /// The NPZ paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|e| e.path.as_path())
    }

    /// The first `n` tiles (all of them when there are fewer), keeping what is known about each.
    pub fn take(mut self, n: usize) -> NpzSource {
        self.entries.truncate(n);
        self
    }

    /// The tiles whose index `keep` accepts, in order, keeping what is known about each.
    pub fn filter(&self, mut keep: impl FnMut(usize) -> bool) -> NpzSource {
        let entries = self.entries.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, e)| e.clone()).collect();
        NpzSource { entries }
    }

    /// Checks every tile's headers ([`crate::npz::read_header`]: sidecar, zip directory, NPY
    /// headers) without decoding planes, and returns the size `(height, width)` they share
    /// (`None` when there are no tiles). A tile with bad headers, or of another size than the
    /// first, is an error naming its file.
    pub fn check_headers(&self) -> Result<Option<(usize, usize)>, TilingError> {
        let mut size: Option<((usize, usize), &Path)> = None;
        for e in &self.entries {
            let h = crate::npz::read_header(&e.path)?;
            match size {
                None => size = Some(((h.height, h.width), &e.path)),
                Some(((fh, fw), first)) if (fh, fw) != (h.height, h.width) => {
                    return Err(TilingError::Content {
                        path: e.path.clone(),
                        message: format!(
                            "tile `{}` is {}x{} but {} is {fh}x{fw}; every tile of a set must have one size",
                            h.tile_id,
                            h.height,
                            h.width,
                            first.display()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(size.map(|(s, _)| s))
    }
}

impl TileSource for NpzSource {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn tile_id(&self, index: usize) -> &str {
        &self.entries[index].id
    }

    fn path(&self, index: usize) -> PathBuf {
        self.entries[index].path.clone()
    }

    fn load(&self, index: usize) -> Result<Tile, TilingError> {
        let e = &self.entries[index];
        crate::npz::read_tile_verified(&e.path, e.checksum.as_deref())
    }
}

// ---------------------------------------------------------------------------------------------
// Standardisation

/// TerraMind v1 pretraining mean of S1GRD (VV, VH), in dB.
pub const TERRAMIND_V1_S1_MEAN: [f32; 2] = [-12.599, -20.293];
/// TerraMind v1 pretraining standard deviation of S1GRD (VV, VH), in dB.
pub const TERRAMIND_V1_S1_STD: [f32; 2] = [5.195, 5.890];
/// TerraMind v1 pretraining mean of S2L2A B02, B03, B04, B08, **in L2A DN** (reflectance · 10000).
pub const TERRAMIND_V1_S2_MEAN_DN: [f32; 4] = [1503.317, 1718.197, 1853.91, 3083.234];
/// TerraMind v1 pretraining standard deviation of S2L2A B02, B03, B04, B08, **in L2A DN**.
pub const TERRAMIND_V1_S2_STD_DN: [f32; 4] = [2141.107, 2038.973, 2134.138, 1871.918];

/// Per-band standardisation `(x − mean) / std`, in **tile units**: S1 in dB, S2 as reflectance
/// (DN / 10000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// S1 mean (VV, VH), dB.
    pub s1_mean: [f32; 2],
    /// S1 standard deviation (VV, VH), dB.
    pub s1_std: [f32; 2],
    /// S2 mean (B2, B3, B4, B8), reflectance.
    pub s2_mean: [f32; 4],
    /// S2 standard deviation (B2, B3, B4, B8), reflectance.
    pub s2_std: [f32; 4],
}

impl Standardization {
    /// TerraMind v1's true pretraining statistics (not Axion's `stdz.py` constants). S1 is used
    /// as is (dB); the S2L2A statistics are in DN, so they are divided by 10000 to match tiles
    /// holding reflectance: `(r − m/10000) / (s/10000) = (DN − m) / s`, i.e. exactly what
    /// TerraMind applies to DN.
    pub fn terramind_v1() -> Standardization {
        Standardization {
            s1_mean: TERRAMIND_V1_S1_MEAN,
            s1_std: TERRAMIND_V1_S1_STD,
            s2_mean: TERRAMIND_V1_S2_MEAN_DN.map(|m| m / 10000.0),
            s2_std: TERRAMIND_V1_S2_STD_DN.map(|s| s / 10000.0),
        }
    }

    /// The identity (mean 0, std 1): samples keep tile units.
    pub fn none() -> Standardization {
        Standardization { s1_mean: [0.0; 2], s1_std: [1.0; 2], s2_mean: [0.0; 4], s2_std: [1.0; 4] }
    }

    /// True for the identity.
    pub fn is_none(&self) -> bool {
        *self == Standardization::none()
    }

    /// Standardises band-major S1 `[2, H, W]` planes in place (`hw = H·W`).
    pub fn apply_s1(&self, s1: &mut [f32], hw: usize) {
        apply_planes(s1, hw, &self.s1_mean, &self.s1_std, false);
    }

    /// Standardises band-major S2 `[4, H, W]` planes in place.
    pub fn apply_s2(&self, s2: &mut [f32], hw: usize) {
        apply_planes(s2, hw, &self.s2_mean, &self.s2_std, false);
    }

    /// Undoes [`Standardization::apply_s1`] (model outputs back to dB).
    pub fn invert_s1(&self, s1: &mut [f32], hw: usize) {
        apply_planes(s1, hw, &self.s1_mean, &self.s1_std, true);
    }

    /// Undoes [`Standardization::apply_s2`] (model outputs back to reflectance).
    pub fn invert_s2(&self, s2: &mut [f32], hw: usize) {
        apply_planes(s2, hw, &self.s2_mean, &self.s2_std, true);
    }

    /// Checks every std is finite and positive and every mean finite.
    fn check(&self) -> Result<(), String> {
        let ok = self.s1_mean.iter().chain(&self.s2_mean).all(|m| m.is_finite())
            && self.s1_std.iter().chain(&self.s2_std).all(|s| s.is_finite() && *s > 0.0);
        if ok { Ok(()) } else { Err(format!("invalid standardisation statistics {self:?}")) }
    }
}

impl Default for Standardization {
    /// [`Standardization::terramind_v1`].
    fn default() -> Self {
        Standardization::terramind_v1()
    }
}

fn apply_planes(data: &mut [f32], hw: usize, mean: &[f32], std: &[f32], invert: bool) {
    for (b, plane) in data.chunks_mut(hw.max(1)).enumerate().take(mean.len()) {
        let (m, s) = (mean[b], std[b]);
        if invert {
            plane.iter_mut().for_each(|v| *v = *v * s + m);
        } else {
            plane.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Augmentation

/// A paired geometric augmentation, applied as: horizontal flip (reverse W), then vertical flip
/// (reverse H), then `rot90` quarter turns counter-clockwise (numpy's `rot90` over the `(H, W)`
/// axes: `out[i][j] = in[j][W−1−i]` for one turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Reverse each row.
    pub hflip: bool,
    /// Reverse the row order.
    pub vflip: bool,
    /// Quarter turns, 0..4.
    pub rot90: u8,
}

impl Augment {
    /// No change.
    pub const IDENTITY: Augment = Augment { hflip: false, vflip: false, rot90: 0 };

    /// The augmentation of tile `index` in `epoch` for `seed`: hflip and vflip with probability
    /// 1/2 each and `rot90` uniform in 0..4, from a ChaCha8 stream seeded by a mix of the three.
    /// For non-square tiles (`square == false`) `rot90` is drawn from {0, 2} only: an odd number
    /// of quarter turns would swap H and W and break batching.
    pub fn draw(seed: u64, epoch: u64, index: u64, square: bool) -> Augment {
        let mut rng = rng_for(&[seed, epoch, index, DOMAIN_AUGMENT]);
        let bits = rng.next_u64();
        let rot90 = if square { below(&mut rng, 4) as u8 } else { 2 * below(&mut rng, 2) as u8 };
        Augment { hflip: bits & 1 == 1, vflip: bits & 2 == 2, rot90 }
    }

    /// Shape `(H', W')` of a `height × width` plane after this augmentation.
    pub fn output_shape(&self, height: usize, width: usize) -> (usize, usize) {
        if self.rot90 % 2 == 1 { (width, height) } else { (height, width) }
    }

    /// Applies the augmentation to band-major `[channels, height, width]` planes; returns the new
    /// planes (shape [`Augment::output_shape`] per channel).
    pub fn apply(&self, data: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
        let hw = height * width;
        assert_eq!(data.len(), channels * hw, "planes must be [channels, height, width]");
        if *self == Augment::IDENTITY {
            return data.to_vec();
        }
        gather(&self.source_map(height, width), data)
    }

    /// Offset in the input plane of every output pixel, in output order.
    fn source_map(&self, height: usize, width: usize) -> Vec<usize> {
        let (oh, ow) = self.output_shape(height, width);
        let mut map = Vec::with_capacity(oh * ow);
        for i in 0..oh {
            for j in 0..ow {
                // Undo rot90: position (y, x) in the flipped plane.
                let (y, x) = match self.rot90 % 4 {
                    0 => (i, j),
                    1 => (j, width - 1 - i),
                    2 => (height - 1 - i, width - 1 - j),
                    _ => (height - 1 - j, i),
                };
                // Undo the flips.
                let y = if self.vflip { height - 1 - y } else { y };
                let x = if self.hflip { width - 1 - x } else { x };
                map.push(y * width + x);
            }
        }
        map
    }
}

/// Applies a source map to every plane of band-major data.
fn gather(map: &[usize], data: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for plane in data.chunks(map.len().max(1)) {
        out.extend(map.iter().map(|&k| plane[k]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Dataset

/// How a [`TileDataset`] turns tiles into samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetConfig {
    /// The split these tiles belong to. Only [`Split::Train`] is shuffled and augmented.
    pub split: Split,
    /// Seed of the epoch shuffles and augmentations.
    pub seed: u64,
    /// Per-band statistics (default: TerraMind v1; [`Standardization::none`] to keep tile units).
    pub standardization: Standardization,
    /// Paired flips / rot90 on the training split (ignored for validation and test).
    pub augment: bool,
    /// Shuffle the order every epoch on the training split (ignored for validation and test).
    pub shuffle: bool,
    /// Required `(height, width)` of every tile, if set (a mismatch is an error naming the file).
    pub tile_size: Option<(usize, usize)>,
    /// Reject a tile whose sidecar names another split (guards against split leaks).
    pub check_split: bool,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            split: Split::Train,
            seed: 0,
            standardization: Standardization::terramind_v1(),
            augment: true,
            shuffle: true,
            tile_size: None,
            check_split: true,
        }
    }
}

impl DatasetConfig {
    /// Defaults for `split` with `seed`.
    pub fn new(split: Split, seed: u64) -> DatasetConfig {
        DatasetConfig { split, seed, ..DatasetConfig::default() }
    }

    /// True when samples of this dataset are augmented (training split and `augment`).
    pub fn augments(&self) -> bool {
        self.augment && self.split == Split::Train
    }

    /// True when the epoch order is shuffled (training split and `shuffle`).
    pub fn shuffles(&self) -> bool {
        self.shuffle && self.split == Split::Train
    }
}

/// One decoded, standardised (and, on the training split, augmented) tile.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Tile id.
    pub tile_id: String,
    /// Index of the tile in its source.
    pub index: usize,
    /// S1 `[2, H, W]` (VV, VH), standardised; invalid pixels 0.
    pub s1: Vec<f32>,
    /// S2 `[4, H, W]` (B2, B3, B4, B8), standardised; invalid pixels 0.
    pub s2: Vec<f32>,
    /// `[1, H, W]`: 1 where all six channels were finite, else 0.
    pub valid: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The augmentation applied ([`Augment::IDENTITY`] off the training split).
    pub augment: Augment,
}

/// Tiles of one split from a [`TileSource`], as [`Sample`]s. Cheap to clone (shared source).
pub struct TileDataset<S: TileSource> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    source: S,
    config: DatasetConfig,
}

impl<S: TileSource> Clone for TileDataset<S> {
    fn clone(&self) -> Self {
        TileDataset { inner: Arc::clone(&self.inner) }
    }
}

impl<S: TileSource + 'static> TileDataset<S> {
    /// A dataset over `source` (errors if the statistics are not usable).
    pub fn new(source: S, config: DatasetConfig) -> Result<TileDataset<S>, TilingError> {
        config
            .standardization
            .check()
            .map_err(|message| TilingError::Content { path: PathBuf::from("<dataset config>"), message })?;
        Ok(TileDataset { inner: Arc::new(Inner { source, config }) })
    }

    /// Number of tiles (samples per epoch).
    pub fn len(&self) -> usize {
        self.inner.source.len()
    }

    /// True when there are no tiles.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configuration.
    pub fn config(&self) -> &DatasetConfig {
        &self.inner.config
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// Source indices in the order epoch `epoch` visits them: a Fisher–Yates shuffle from a
    /// ChaCha8 stream seeded by `(seed, epoch)` on the training split, `0..len` otherwise.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if self.inner.config.shuffles() {
            let mut rng = rng_for(&[self.inner.config.seed, epoch, DOMAIN_ORDER]);
            for i in (1..order.len()).rev() {
                let j = below(&mut rng, i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// Loads tile `index` and turns it into its sample for `epoch` (deterministic: the same
    /// `(seed, epoch, index)` always gives the same sample).
    pub fn sample(&self, index: usize, epoch: u64) -> Result<Sample, TilingError> {
        let inner = &*self.inner;
        let cfg = &inner.config;
        let tile = inner.source.load(index)?;
        let content = |message: String| TilingError::Content { path: inner.source.path(index), message };
        let (h, w) = (tile.height, tile.width);
        let hw = h * w;
        if hw == 0 || tile.s1.len() != 2 * hw || tile.s2.len() != 4 * hw {
            return Err(content(format!(
                "tile `{}` is {h}x{w} but holds {} S1 and {} S2 values (expected [2, H, W] and [4, H, W])",
                tile.id,
                tile.s1.len(),
                tile.s2.len()
            )));
        }
        if let Some((eh, ew)) = cfg.tile_size
            && (eh, ew) != (h, w)
        {
            return Err(content(format!("tile `{}` is {h}x{w}, expected {eh}x{ew}", tile.id)));
        }
        if cfg.check_split
            && let Some(s) = tile.sidecar.split
            && s != cfg.split
        {
            return Err(content(format!(
                "tile `{}` belongs to the {s:?} split but was loaded into a {:?} dataset",
                tile.id, cfg.split
            )));
        }

        let mut s1 = tile.s1;
        let mut s2 = tile.s2;
        let valid: Vec<f32> = (0..hw)
            .map(|p| {
                let ok = (0..2).all(|b| s1[b * hw + p].is_finite()) && (0..4).all(|b| s2[b * hw + p].is_finite());
                if ok { 1.0 } else { 0.0 }
            })
            .collect();
        cfg.standardization.apply_s1(&mut s1, hw);
        cfg.standardization.apply_s2(&mut s2, hw);
        for v in s1.iter_mut().chain(s2.iter_mut()) {
            if !v.is_finite() {
                *v = 0.0;
            }
        }

        let augment =
            if cfg.augments() { Augment::draw(cfg.seed, epoch, index as u64, h == w) } else { Augment::IDENTITY };
        let (oh, ow) = augment.output_shape(h, w);
        let (s1, s2, valid) = if augment == Augment::IDENTITY {
            (s1, s2, valid)
        } else {
            let map = augment.source_map(h, w);
            (gather(&map, &s1), gather(&map, &s2), gather(&map, &valid))
        };
        Ok(Sample { tile_id: tile.id, index, s1, s2, valid, height: oh, width: ow, augment })
    }

    /// A loader over the rest of `cursor.epoch` from `cursor.position`.
    pub fn loader(&self, cursor: Cursor, config: LoaderConfig) -> Loader {
        Loader::start(self.clone(), cursor, config)
    }
}

// ---------------------------------------------------------------------------------------------
// Loader

/// Position in the sample stream: the next sample is position `position` of epoch `epoch`'s
/// order ([`TileDataset::epoch_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch.
    pub epoch: u64,
    /// Samples of the epoch already delivered.
    pub position: usize,
}

impl Cursor {
    /// The start of `epoch`.
    pub fn start(epoch: u64) -> Cursor {
        Cursor { epoch, position: 0 }
    }

    /// The start of the next epoch.
    pub fn next_epoch(&self) -> Cursor {
        Cursor::start(self.epoch + 1)
    }
}

/// Parallelism of a [`Loader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    /// Decoding threads; 0 decodes on the caller's thread when a sample is asked for.
    pub workers: usize,
    /// Most samples decoded (or being decoded) but not yet handed out; at least 1. Values below
    /// `workers` leave workers idle.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig { workers: 2, prefetch: 8 }
    }
}

type Decoded = (usize, Result<Sample, TilingError>);
type DecodeFn = Box<dyn Fn(usize) -> Result<Sample, TilingError> + Send>;

/// Decoding of the rest of one epoch. Iterates `Result<Sample, TilingError>` in epoch order; an
/// error for one tile (naming its file) is yielded at that tile's position and the loader carries
/// on with the next. Dropping it stops and joins the workers.
pub struct Loader {
    epoch: u64,
    next: usize,
    end: usize,
    /// Synchronous decoding (`workers == 0`).
    sync: Option<(DecodeFn, Arc<Vec<usize>>)>,
    shared: Arc<Shared>,
    rx: Option<Receiver<Decoded>>,
    pending: HashMap<usize, Result<Sample, TilingError>>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    prefetch: usize,
}

struct State {
    /// Next position a worker will claim.
    claimed: usize,
    /// Positions handed out to the caller.
    released: usize,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Loader {
    fn start<S: TileSource + 'static>(dataset: TileDataset<S>, cursor: Cursor, config: LoaderConfig) -> Loader {
        let order = Arc::new(dataset.epoch_order(cursor.epoch));
        let end = order.len();
        let first = cursor.position.min(end);
        let epoch = cursor.epoch;
        let prefetch = config.prefetch.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { claimed: first, released: first, stop: false }),
            wake: Condvar::new(),
            prefetch,
        });
        let decode = {
            let dataset = dataset.clone();
            move |index: usize| decode_guarded(&dataset, index, epoch)
        };
        if config.workers == 0 {
            return Loader {
                epoch,
                next: first,
                end,
                sync: Some((Box::new(decode), order)),
                shared,
                rx: None,
                pending: HashMap::new(),
                workers: Vec::new(),
            };
        }
        let (tx, rx) = sync_channel::<Decoded>(prefetch);
        let workers = (0..config.workers)
            .map(|_| {
                let (tx, shared, order, dataset) =
                    (tx.clone(), Arc::clone(&shared), Arc::clone(&order), dataset.clone());
                std::thread::spawn(move || {
                    loop {
                        let pos = {
                            let mut st = shared.lock();
                            loop {
                                if st.stop || st.claimed >= end {
                                    return;
                                }
                                if st.claimed - st.released < shared.prefetch {
                                    break;
                                }
                                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                            }
                            st.claimed += 1;
                            st.claimed - 1
                        };
                        let result = decode_guarded(&dataset, order[pos], epoch);
                        if tx.send((pos, result)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Loader { epoch, next: first, end, sync: None, shared, rx: Some(rx), pending: HashMap::new(), workers }
    }

    /// Where the stream stands: the next sample this loader would yield. Saving it and starting a
    /// new loader there yields exactly the remaining samples.
    pub fn cursor(&self) -> Cursor {
        Cursor { epoch: self.epoch, position: self.next }
    }

    /// Samples left in this epoch.
    pub fn remaining(&self) -> usize {
        self.end - self.next
    }
}

/// Decodes one sample, turning a panic in the source or dataset into an error naming the tile.
fn decode_guarded<S: TileSource + 'static>(
    dataset: &TileDataset<S>,
    index: usize,
    epoch: u64,
) -> Result<Sample, TilingError> {
    catch_unwind(AssertUnwindSafe(|| dataset.sample(index, epoch))).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(TilingError::Content { path: dataset.source().path(index), message: format!("decoding panicked: {what}") })
    })
}

impl Iterator for Loader {
    type Item = Result<Sample, TilingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let pos = self.next;
        let item = if let Some((decode, order)) = &self.sync {
            decode(order[pos])
        } else {
            loop {
                if let Some(r) = self.pending.remove(&pos) {
                    break r;
                }
                match self.rx.as_ref().map(|rx| rx.recv()) {
                    Some(Ok((p, r))) => {
                        self.pending.insert(p, r);
                    }
                    _ => {
                        // Unreachable while workers run: they only exit at the end or on stop.
                        self.next = self.end;
                        return Some(Err(TilingError::Content {
                            path: PathBuf::from("<loader>"),
                            message: format!("loader workers exited before position {pos}"),
                        }));
                    }
                }
            }
        };
        self.next += 1;
        let mut st = self.shared.lock();
        st.released += 1;
        drop(st);
        self.shared.wake.notify_all();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        self.rx = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batching

/// Samples stacked along a leading batch axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[B, 2, H, W]`.
    pub s1: Vec<f32>,
    /// `[B, 4, H, W]`.
    pub s2: Vec<f32>,
    /// `[B, 1, H, W]`.
    pub valid: Vec<f32>,
    /// Tile ids, in batch order.
    pub ids: Vec<String>,
    /// B.
    pub batch: usize,
    /// H.
    pub height: usize,
    /// W.
    pub width: usize,
}

/// Stacks samples (all the same `H × W`; an empty slice gives an empty batch of shape 0 × 0).
/// A sample of another shape is an error naming its tile.
pub fn collate(samples: &[Sample]) -> Result<Batch, TilingError> {
    let (height, width) = samples.first().map(|s| (s.height, s.width)).unwrap_or((0, 0));
    let hw = height * width;
    let mut batch = Batch {
        s1: Vec::with_capacity(samples.len() * 2 * hw),
        s2: Vec::with_capacity(samples.len() * 4 * hw),
        valid: Vec::with_capacity(samples.len() * hw),
        ids: Vec::with_capacity(samples.len()),
        batch: samples.len(),
        height,
        width,
    };
    for s in samples {
        if (s.height, s.width) != (height, width) || s.s1.len() != 2 * hw || s.s2.len() != 4 * hw || s.valid.len() != hw
        {
            return Err(TilingError::Content {
                path: PathBuf::from(&s.tile_id),
                message: format!(
                    "cannot batch a {}x{} sample with {height}x{width} samples (or its planes have the wrong length)",
                    s.height, s.width
                ),
            });
        }
        batch.s1.extend_from_slice(&s.s1);
        batch.s2.extend_from_slice(&s.s2);
        batch.valid.extend_from_slice(&s.valid);
        batch.ids.push(s.tile_id.clone());
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------------------------
// What the training stages share: their tile sets, the size check, parallel decoding

/// The training and validation tiles of a data directory, and whether the dataset must check
/// each tile's sidecar split (`check_split`: only when both sets come from a manifest).
///
/// - `data_dir/manifest.json` exists: its `train` and `val` splits.
/// - No manifest: every `*.npz` in `data_dir`, split by a stable hash of the tile id (CRC-32C
///   modulo 10⁶ below `val_split`·10⁶ is validation), so the split does not depend on file order.
/// - `val_dir` set: the validation tiles are every `*.npz` in it instead; the training tiles
///   stay as above (the manifest's `train` split, or the tiles the hash does not send to
///   validation).
///
/// Errors name the directory or manifest that could not be read.
pub fn train_val_sources(
    data_dir: &Path,
    val_dir: Option<&Path>,
    val_split: f64,
) -> Result<(NpzSource, NpzSource, bool), TilingError> {
    let manifest = data_dir.join("manifest.json");
    let (train, val, check_split) = if manifest.is_file() {
        let train = NpzSource::from_manifest(&manifest, Some(Split::Train))?;
        let val = match val_dir {
            Some(_) => None,
            None => Some(NpzSource::from_manifest(&manifest, Some(Split::Val))?),
        };
        (train, val, true)
    } else {
        // No manifest: a stable hash of the tile id decides, so the split does not depend on file order.
        let all = NpzSource::from_dir(data_dir)?;
        let threshold = (val_split * 1_000_000.0) as u32;
        let in_val = |i: usize| crc32c::crc32c(all.tile_id(i).as_bytes()) % 1_000_000 < threshold;
        let val = if val_dir.is_some() { None } else { Some(all.filter(in_val)) };
        (all.filter(|i| !in_val(i)), val, false)
    };
    let val = match (val, val_dir) {
        (Some(v), _) => v,
        (None, Some(d)) => NpzSource::from_dir(d)?,
        // `val` is None only when `val_dir` is set (both branches above).
        (None, None) => NpzSource::default(),
    };
    Ok((train, val, check_split && val_dir.is_none()))
}

/// Why a tile set does not fit a stage (see [`check_tile_set`]); each stage turns it into its
/// own error, naming its config key for [`TileSetError::TileSize`].
#[derive(Debug, thiserror::Error)]
pub enum TileSetError {
    /// A tile's headers could not be read, or the set mixes sizes (the message names the file).
    #[error(transparent)]
    Tiles(#[from] TilingError),
    /// The tiles are not the required `tile_size`² (the configured tile size).
    #[error("is {expected} but the {set} tiles are {height}x{width} (e.g. {})", example.display())]
    TileSize {
        /// The set (`training`, `validation`).
        set: String,
        /// The required side.
        expected: usize,
        /// The tiles' height.
        height: usize,
        /// The tiles' width.
        width: usize,
        /// The set's first tile.
        example: PathBuf,
    },
    /// A directory or manifest holds no tiles of a split (see [`check_not_empty`]).
    #[error("{}: no {what}", dir.display())]
    NoTiles {
        /// The directory read.
        dir: PathBuf,
        /// Which tiles are missing, and how to provide them.
        what: &'static str,
    },
    /// The tiles do not fit the model or are smaller than a loss's or metric's minimum.
    #[error("{}: {message}", path.display())]
    Tile {
        /// The set's first tile.
        path: PathBuf,
        /// What is wrong and the minimum or multiple expected.
        message: String,
    },
}

/// Checks that a stage has tiles to train and to validate on: an empty training set names
/// `data_dir`, an empty validation set names `val_dir` (or `data_dir` when it is unset), each with
/// how to provide the tiles.
pub fn check_not_empty(
    train: &NpzSource,
    val: &NpzSource,
    data_dir: &Path,
    val_dir: Option<&Path>,
) -> Result<(), TileSetError> {
    if train.is_empty() {
        return Err(TileSetError::NoTiles {
            dir: data_dir.to_path_buf(),
            what: "training tiles (expected *.npz tiles, e.g. from trainyard-tile)",
        });
    }
    if val.is_empty() {
        return Err(TileSetError::NoTiles {
            dir: val_dir.unwrap_or(data_dir).to_path_buf(),
            what: "validation tiles (set data.val_dir or data.val_split)",
        });
    }
    Ok(())
}

/// Checks one tile set when a stage's task is built: every tile's headers, one size for all,
/// equal to `tile_size`² when set, accepted by `fits` (the model's patch grid: `Err` says why
/// not) and at least `min_side` = (side, what needs it) on both axes. An empty set passes.
pub fn check_tile_set(
    set: &str,
    source: &NpzSource,
    tile_size: Option<usize>,
    fits: impl FnOnce(usize, usize) -> Result<(), String>,
    min_side: Option<(usize, &str)>,
) -> Result<(), TileSetError> {
    let Some((h, w)) = source.check_headers()? else { return Ok(()) };
    let first = source.paths().next().map(Path::to_path_buf).unwrap_or_default();
    if let Some(side) = tile_size
        && (h, w) != (side, side)
    {
        return Err(TileSetError::TileSize { set: set.into(), expected: side, height: h, width: w, example: first });
    }
    if let Err(e) = fits(h, w) {
        return Err(TileSetError::Tile {
            path: first,
            message: format!("{set} tiles are {h}x{w}, which model.size does not fit: {e}"),
        });
    }
    if let Some((side, what)) = min_side
        && (h < side || w < side)
    {
        return Err(TileSetError::Tile {
            path: first,
            message: format!(
                "{set} tiles are {h}x{w}, smaller than the {side}x{side} minimum of {what}; \
                 cut larger tiles (trainyard-tile --size {side} or more)"
            ),
        });
    }
    Ok(())
}

/// Runs `decode` on every index of `indices` on up to `workers` threads (contiguous chunks) and
/// returns the results in the order of `indices`. The first error in that order is returned
/// (after every thread finished). A thread that panics (a bug in a reader) does not take the
/// caller down: its chunk is reported as `on_panic(first index of the chunk)`.
pub fn decode_parallel<T: Send, E: Send>(
    indices: &[usize],
    workers: usize,
    decode: impl Fn(usize) -> Result<T, E> + Sync,
    on_panic: impl Fn(usize) -> E,
) -> Result<Vec<T>, E> {
    let chunk = indices.len().div_ceil(workers.max(1)).max(1);
    let decode = &decode;
    std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(chunk)
            .filter_map(|part| {
                let first = *part.first()?;
                Some((first, scope.spawn(move || part.iter().map(|&i| decode(i)).collect::<Vec<_>>())))
            })
            .collect();
        // Join every thread before looking at any result: a panicked thread left to the scope's
        // own join would panic the caller.
        let joined: Vec<_> = handles.into_iter().map(|(first, handle)| (first, handle.join())).collect();
        let mut out = Vec::with_capacity(indices.len());
        for (first, decoded) in joined {
            let decoded = decoded.map_err(|_| on_panic(first))?;
            for item in decoded {
                out.push(item?);
            }
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// Random helpers

const DOMAIN_ORDER: u64 = 1;
const DOMAIN_AUGMENT: u64 = 2;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ChaCha8 stream seeded by an order-sensitive (splitmix64) mix of `parts`: the dataset's
/// shuffles and augmentations draw from `[seed, epoch, (index,) domain]`; a stage drawing its own
/// per-tile randomness passes a domain of its own so its stream never coincides with these.
pub fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    let mut h = 0u64;
    for &p in parts {
        h = splitmix64(h ^ splitmix64(p));
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// Uniform integer in `0..n` by rejection (exact).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let zone = u64::MAX - (u64::MAX - n + 1) % n;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_parallel_keeps_order_and_returns_the_first_error_in_order() {
        let indices: Vec<usize> = (0..23).rev().collect();
        for workers in [0, 1, 4, 64] {
            let out = decode_parallel(&indices, workers, |i| Ok::<_, String>(i * 10), |i| format!("panic {i}"));
            assert_eq!(out, Ok(indices.iter().map(|i| i * 10).collect::<Vec<_>>()), "workers {workers}");
        }
        let failing = |i: usize| if i.is_multiple_of(5) { Err(format!("tile {i} is bad")) } else { Ok(i) };
        // Order 22, 21, ...: the first failing index met is 20.
        assert_eq!(decode_parallel(&indices, 4, failing, |i| format!("panic {i}")), Err("tile 20 is bad".into()));
        assert_eq!(decode_parallel(&[], 4, failing, |i| format!("panic {i}")), Ok(vec![]));
    }

    #[test]
    fn decode_parallel_reports_panicking_chunks_by_their_first_index_without_panicking() {
        let indices: Vec<usize> = (0..8).collect();
        // Chunks of 2 on 4 workers: [0, 1] [2, 3] [4, 5] [6, 7]; two of them panic.
        let out = decode_parallel(
            &indices,
            4,
            |i| if i == 3 || i == 6 { panic!("reader bug at {i}") } else { Ok::<_, String>(i) },
            |first| format!("chunk from {first} panicked"),
        );
        assert_eq!(out, Err("chunk from 2 panicked".into()));
    }

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"").unwrap();
        }
    }

    fn ids(s: &NpzSource) -> Vec<String> {
        (0..s.len()).map(|i| s.tile_id(i).to_string()).collect()
    }

    #[test]
    fn train_val_sources_hash_split_is_stable_and_val_dir_replaces_validation() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..40).map(|i| format!("t{i:02}.npz")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        touch(tmp.path(), &refs);
        let (train, val, check_split) = train_val_sources(tmp.path(), None, 0.25).unwrap();
        assert!(!check_split, "no manifest: sidecar splits are not checked");
        assert_eq!(train.len() + val.len(), 40);
        assert!(!val.is_empty() && !train.is_empty());
        for i in 0..val.len() {
            assert!(crc32c::crc32c(val.tile_id(i).as_bytes()) % 1_000_000 < 250_000);
        }
        let (all_train, none, _) = train_val_sources(tmp.path(), None, 0.0).unwrap();
        assert_eq!((all_train.len(), none.len()), (40, 0));

        let vdir = tmp.path().join("val");
        touch(&vdir, &["v1.npz", "v0.npz", "notes.txt"]);
        let (train2, val2, check2) = train_val_sources(tmp.path(), Some(&vdir), 0.25).unwrap();
        assert_eq!(ids(&train2), ids(&train), "val_dir leaves the training tiles as they were");
        assert_eq!(ids(&val2), ["v0", "v1"]);
        assert!(!check2);
    }

    #[test]
    fn train_val_sources_names_a_missing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = train_val_sources(&missing, None, 0.1).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        touch(tmp.path(), &["a.npz"]);
        let err = train_val_sources(tmp.path(), Some(&missing), 0.1).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn check_not_empty_names_the_directory_of_the_empty_split() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), &["a.npz"]);
        let some = NpzSource::from_dir(tmp.path()).unwrap();
        let none = NpzSource::default();
        let (data, val) = (Path::new("/data/tiles"), Path::new("/data/val"));
        assert!(check_not_empty(&some, &some, data, None).is_ok());
        let err = check_not_empty(&none, &some, data, Some(val)).unwrap_err().to_string();
        assert!(err.starts_with("/data/tiles: no training tiles"), "{err}");
        let err = check_not_empty(&some, &none, data, Some(val)).unwrap_err().to_string();
        assert!(err.starts_with("/data/val: no validation tiles"), "{err}");
        let err = check_not_empty(&some, &none, data, None).unwrap_err().to_string();
        assert!(err.starts_with("/data/tiles: no validation tiles"), "{err}");
    }

    #[test]
    fn check_tile_set_passes_an_empty_set_and_names_an_unreadable_tile() {
        let fits = |_: usize, _: usize| Ok(());
        assert!(check_tile_set("training", &NpzSource::default(), Some(8), fits, Some((11, "x"))).is_ok());
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), &["broken.npz"]);
        let source = NpzSource::from_dir(tmp.path()).unwrap();
        let err = check_tile_set("training", &source, None, fits, None).unwrap_err();
        assert!(matches!(err, TileSetError::Tiles(_)), "{err:?}");
        assert!(err.to_string().contains("broken"), "{err}");
    }

    /// Tiles of `side`² from synthetic scenes, with the tiler's manifest and scene splits.
    fn synthetic_tiles(dir: &Path, side: usize) {
        use crate::synthetic::{SyntheticConfig, SyntheticScene};
        let cfg = SyntheticConfig::new(2 * side, 2 * side, 7);
        let scenes =
            (0..10u64).map(|i| SyntheticScene::generate(&cfg, i).with_fake_georeference().to_scene()).collect();
        let tiler = crate::tiler::TilerConfig { size: side, seed: 7, ..Default::default() };
        crate::tiler::tile_scenes(dir, scenes, tiler).unwrap();
    }

    #[test]
    fn manifest_splits_and_the_tile_set_checks_name_key_tile_and_minimum() {
        let tmp = tempfile::tempdir().unwrap();
        synthetic_tiles(tmp.path(), 16);
        let (train, val, check_split) = train_val_sources(tmp.path(), None, 0.5).unwrap();
        assert!(check_split, "both sets from the manifest: sidecar splits are checked");
        assert!(!train.is_empty() && !val.is_empty(), "{} / {}", train.len(), val.len());
        let (_, _, with_val_dir) = train_val_sources(tmp.path(), Some(tmp.path()), 0.5).unwrap();
        assert!(!with_val_dir, "a separate val dir is not split-checked");

        let fits = |_: usize, _: usize| Ok(());
        check_tile_set("training", &train, Some(16), fits, Some((11, "MS-SSIM"))).unwrap();
        let first = train.paths().next().unwrap().display().to_string();

        let err = check_tile_set("training", &train, Some(32), fits, None).unwrap_err();
        assert!(matches!(err, TileSetError::TileSize { expected: 32, height: 16, width: 16, .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("is 32 but the training tiles are 16x16 (e.g. {first})"));

        let err = check_tile_set("validation", &train, None, |h, w| Err(format!("{h}x{w} is no grid")), None);
        let err = err.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{first}: validation tiles are 16x16, which model.size does not fit: 16x16 is no grid")
        );

        let err = check_tile_set("training", &train, None, fits, Some((24, "MS-SSIM"))).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{first}: training tiles are 16x16, smaller than the 24x24 minimum of MS-SSIM"))
        );
        assert!(err.contains("--size 24"), "{err}");
    }
}
