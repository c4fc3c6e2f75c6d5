//! Synthetic paired Sentinel-1 / Sentinel-2 scenes, clearly labelled as such.
//!
//! One latent land-cover map (see [`LandCover`]) is drawn deterministically from a seed: Voronoi
//! parcels of crops, forest and bare soil, urban districts (a grid of rectangular blocks with
//! streets), lakes (irregular blobs), meandering rivers and roads (polylines with a width), in
//! that drawing order (roads last, so they bridge rivers). Both modalities are rendered from it:
//!
//! - **S1** ([`SyntheticScene::s1`]): linear σ0 power (not dB), 2 bands (VV, VH), `F32`. Each pixel
//!   is the class mean of [`BACKSCATTER_DB`] turned into linear power, times independent
//!   multiplicative gamma speckle per band (shape = `looks`, scale = `1 / looks`: mean 1, coefficient
//!   of variation `1 / sqrt(looks)`). [`SyntheticScene::s1_db`] gives the same raster in dB.
//! - **S2** ([`SyntheticScene::s2`]): Sentinel-2 L2A digital numbers (reflectance · 10000, rounded),
//!   4 bands (B2, B3, B4, B8), dtype `U16`, nodata 0. Each pixel is the class reflectance of
//!   [`REFLECTANCE`] plus Gaussian noise (`s2_noise`), clamped to `[1, 65535]` DN so that no valid
//!   pixel collides with the nodata value; optional cloud blobs are written as nodata.
//!
//! These are the inputs the tiler expects from real scenes (S1 as linear power, S2 as DN it divides
//! by 10000). [`SyntheticScene::tiles`] and [`synthetic_tiles`] cut ready tiles directly (S1 in dB,
//! S2 as reflectance DN / 10000, nodata → NaN) for tests and smoke runs.
//!
//! Everything produced here says it is synthetic: raster sources are `synthetic://seed-<seed>/
//! scene-<index>/s1` (and `/s2`), tile sidecars have `synthetic: true`, `source_files` holding those
//! `synthetic://` names and `"generator": "tiling::synthetic"`. Scenes exported as GeoTIFF
//! ([`SyntheticScene::write_geotiffs`]) say so in their description and GDAL metadata, and carry a
//! fake UTM georeference ([`fake_geo`]); tiles cut from those files by path are not flagged
//! synthetic by the tiler, as it only sees file names.
//!
//! Determinism: every random draw comes from ChaCha8 streams seeded from `(seed, scene index,
//! purpose)` and is turned into numbers by this module's own helpers (not `rand`'s distributions),
//! so the same configuration gives bit-identical rasters across platforms and `rand` releases.
//! The map, the SAR speckle and the optical noise use separate streams: changing `looks` leaves the
//! map and the optical bands unchanged.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::geotiff::{WriteOptions, write_geotiff};
use crate::tile::{GeoInfo, Raster, RasterDtype, Sidecar, Split, Tile, TilingError};
use crate::tiler::{s1_to_db, s2_to_reflectance};

/// Land-cover classes of the latent map (`SyntheticScene::classes` holds their `u8` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum LandCover {
    /// Open water (lakes, rivers): specular, dark in both SAR and NIR.
    Water = 0,
    /// Cereal field (e.g. winter wheat).
    Cereal = 1,
    /// Maize field.
    Maize = 2,
    /// Rapeseed field (flowering: bright green/red).
    Rapeseed = 3,
    /// Forest: volume scattering, high VH; dark visible, high NIR.
    Forest = 4,
    /// Urban blocks: double bounce, bright SAR; flat, bright visible spectrum.
    Urban = 5,
    /// Roads and streets: smooth asphalt, dark SAR.
    Road = 6,
    /// Bare soil.
    Bare = 7,
}

impl LandCover {
    /// Every class, in code order.
    pub const ALL: [LandCover; 8] = [
        LandCover::Water,
        LandCover::Cereal,
        LandCover::Maize,
        LandCover::Rapeseed,
        LandCover::Forest,
        LandCover::Urban,
        LandCover::Road,
        LandCover::Bare,
    ];

    /// The class of a code, if it is one.
    pub fn from_code(code: u8) -> Option<LandCover> {
        LandCover::ALL.get(code as usize).copied()
    }

    /// The class's `u8` code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LandCover::Water => "water",
            LandCover::Cereal => "cereal",
            LandCover::Maize => "maize",
            LandCover::Rapeseed => "rapeseed",
            LandCover::Forest => "forest",
            LandCover::Urban => "urban",
            LandCover::Road => "road",
            LandCover::Bare => "bare",
        }
    }

    /// Mean backscatter `[VV, VH]` in dB ([`BACKSCATTER_DB`]).
    pub fn backscatter_db(self) -> [f32; 2] {
        BACKSCATTER_DB[self as usize]
    }

    /// Mean reflectance `[B2, B3, B4, B8]` ([`REFLECTANCE`]).
    pub fn reflectance(self) -> [f32; 4] {
        REFLECTANCE[self as usize]
    }
}

/// Class-mean C-band backscatter `[VV, VH]` in dB, indexed by [`LandCover`] code.
///
/// The value is `10·log10` of the class's mean *linear* σ0 (the usual definition of a class-mean
/// backscatter). Speckle has mean 1 in linear power, so averaging linear intensity over a region
/// and converting to dB recovers the table; the mean of per-pixel dB values is lower by
/// `10/ln 10 · (ψ(L) − ln L)` (≈ 0.57 dB for `L = 4` looks).
///
/// | class    |   VV  |   VH  |
/// |----------|-------|-------|
/// | water    | −22.0 | −28.0 |
/// | cereal   | −13.0 | −19.5 |
/// | maize    | −10.5 | −16.5 |
/// | rapeseed |  −9.0 | −15.0 |
/// | forest   |  −7.5 | −13.0 |
/// | urban    |  −4.0 | −11.0 |
/// | road     | −17.0 | −25.0 |
/// | bare     | −14.5 | −23.0 |
pub const BACKSCATTER_DB: [[f32; 2]; 8] = [
    [-22.0, -28.0],
    [-13.0, -19.5],
    [-10.5, -16.5],
    [-9.0, -15.0],
    [-7.5, -13.0],
    [-4.0, -11.0],
    [-17.0, -25.0],
    [-14.5, -23.0],
];

/// Class-mean surface reflectance `[B2, B3, B4, B8]` (blue, green, red, NIR; 0..1), indexed by
/// [`LandCover`] code. S2 DN = reflectance · 10000.
///
/// | class    |  B2   |  B3   |  B4   |  B8   |
/// |----------|-------|-------|-------|-------|
/// | water    | 0.060 | 0.050 | 0.030 | 0.015 |
/// | cereal   | 0.035 | 0.070 | 0.040 | 0.380 |
/// | maize    | 0.030 | 0.065 | 0.035 | 0.450 |
/// | rapeseed | 0.050 | 0.110 | 0.090 | 0.380 |
/// | forest   | 0.020 | 0.040 | 0.025 | 0.300 |
/// | urban    | 0.110 | 0.115 | 0.125 | 0.170 |
/// | road     | 0.090 | 0.095 | 0.100 | 0.120 |
/// | bare     | 0.080 | 0.110 | 0.150 | 0.230 |
pub const REFLECTANCE: [[f32; 4]; 8] = [
    [0.060, 0.050, 0.030, 0.015],
    [0.035, 0.070, 0.040, 0.380],
    [0.030, 0.065, 0.035, 0.450],
    [0.050, 0.110, 0.090, 0.380],
    [0.020, 0.040, 0.025, 0.300],
    [0.110, 0.115, 0.125, 0.170],
    [0.090, 0.095, 0.100, 0.120],
    [0.080, 0.110, 0.150, 0.230],
];

/// Relative frequency of the parcel classes (cereal, maize, rapeseed, forest, bare) when a
/// Voronoi parcel's class is drawn.
const PARCEL_CLASSES: [(LandCover, f64); 5] = [
    (LandCover::Cereal, 0.25),
    (LandCover::Maize, 0.20),
    (LandCover::Rapeseed, 0.15),
    (LandCover::Forest, 0.25),
    (LandCover::Bare, 0.15),
];

/// Parameters of a synthetic scene. Counts are absolute; [`SyntheticConfig::new`] scales them to
/// the scene size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Equivalent number of looks of the SAR speckle (gamma shape; > 0).
    pub looks: f64,
    /// Voronoi parcels (crops, forest, bare soil) tiling the background.
    pub field_count: usize,
    /// Roads (polylines crossing the scene edge to edge).
    pub road_count: usize,
    /// Rivers (meandering polylines entering from an edge).
    pub river_count: usize,
    /// Lakes (irregular blobs).
    pub lake_count: usize,
    /// Urban districts, each a grid of blocks separated by streets.
    pub urban_districts: usize,
    /// Blocks per urban district.
    pub urban_blocks: usize,
    /// Cloud blobs written as S2 nodata (0 DN); S1 is unaffected.
    pub cloud_count: usize,
    /// Standard deviation of the Gaussian noise added to S2 reflectance (reflectance units).
    pub s2_noise: f64,
}

impl SyntheticConfig {
    /// A configuration for a `width × height` scene with feature counts scaled to its area
    /// (about one parcel per 50 × 50 px, one road per 256 px of perimeter/2, one lake per
    /// 256 × 256 px, one river, one urban district of 9 blocks, no clouds, 4 looks, noise 0.01).
    pub fn new(width: usize, height: usize, seed: u64) -> SyntheticConfig {
        let area = width * height;
        SyntheticConfig {
            width,
            height,
            seed,
            looks: 4.0,
            field_count: (area / 2500).max(4),
            road_count: ((width + height) / 256).max(1),
            river_count: 1,
            lake_count: (area / (256 * 256)).max(1),
            urban_districts: 1,
            urban_blocks: 9,
            cloud_count: 0,
            s2_noise: 0.01,
        }
    }
}

impl Default for SyntheticConfig {
    /// [`SyntheticConfig::new`]`(256, 256, 0)`.
    fn default() -> Self {
        SyntheticConfig::new(256, 256, 0)
    }
}

/// One synthetic scene: the latent land-cover map and the two rasters rendered from it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticScene {
    /// `synthetic-seed<seed>-scene<index>`.
    pub id: String,
    /// Scene index (the per-scene random stream).
    pub index: u64,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Sentinel-1 VV, VH as linear σ0 power, `F32`, source `synthetic://seed-<seed>/scene-<i>/s1`.
    pub s1: Raster,
    /// Sentinel-2 B2, B3, B4, B8 as L2A DN (reflectance · 10000), `U16`, nodata 0, source
    /// `synthetic://seed-<seed>/scene-<i>/s2`.
    pub s2: Raster,
    /// Latent land-cover map, row-major, [`LandCover`] codes.
    pub classes: Vec<u8>,
    /// Equivalent number of looks of the speckle in `s1`.
    pub looks: f64,
}

/// Random-stream purposes (one ChaCha8 stream each per scene).
const STREAM_MAP: u64 = 1;
const STREAM_S1: u64 = 2;
const STREAM_S2: u64 = 3;

impl SyntheticScene {
    /// Draws the land-cover map of scene `index` from `cfg` and renders both modalities.
    pub fn generate(cfg: &SyntheticConfig, index: u64) -> SyntheticScene {
        let classes = land_cover_map(cfg, index);
        SyntheticScene::render(cfg, index, classes)
    }

    /// Renders S1 and S2 from a given land-cover map (`cfg.width × cfg.height` codes, row-major;
    /// clouds and noise still come from `cfg` and `index`).
    ///
    /// # Panics
    /// If `classes` has the wrong length or holds a code that is not a [`LandCover`].
    pub fn render(cfg: &SyntheticConfig, index: u64, classes: Vec<u8>) -> SyntheticScene {
        let (w, h) = (cfg.width, cfg.height);
        let n = w * h;
        assert_eq!(classes.len(), n, "land-cover map must have width × height = {n} codes");
        assert!(cfg.looks > 0.0, "looks must be positive");
        let cls: Vec<LandCover> = classes
            .iter()
            .map(|&c| LandCover::from_code(c).unwrap_or_else(|| panic!("{c} is not a land-cover code")))
            .collect();

        // S1: class mean (linear) × gamma speckle, independent per band.
        let mut rng = stream(cfg.seed, index, STREAM_S1);
        let mut s1 = vec![0f32; 2 * n];
        for band in 0..2 {
            for (i, c) in cls.iter().enumerate() {
                let mean = 10f64.powf(f64::from(c.backscatter_db()[band]) / 10.0);
                s1[band * n + i] = (mean * gamma(&mut rng, cfg.looks) / cfg.looks) as f32;
            }
        }

        // S2: class reflectance + Gaussian noise, as rounded DN; clouds → nodata 0.
        let mut rng = stream(cfg.seed, index, STREAM_S2);
        let mut s2 = vec![0f32; 4 * n];
        for band in 0..4 {
            for (i, c) in cls.iter().enumerate() {
                let r = f64::from(c.reflectance()[band]) + cfg.s2_noise * normal(&mut rng);
                s2[band * n + i] = (r * 10000.0).round().clamp(1.0, 65535.0) as f32;
            }
        }
        let clouds = cloud_mask(cfg, index);
        for (i, _) in clouds.iter().enumerate().filter(|(_, c)| **c) {
            for band in 0..4 {
                s2[band * n + i] = 0.0;
            }
        }

        let base = format!("synthetic://seed-{}/scene-{index}", cfg.seed);
        SyntheticScene {
            id: format!("synthetic-seed{}-scene{index}", cfg.seed),
            index,
            width: w,
            height: h,
            s1: Raster {
                source: PathBuf::from(format!("{base}/s1")),
                width: w,
                height: h,
                bands: 2,
                dtype: RasterDtype::F32,
                nodata: None,
                geo: None,
                data: s1,
            },
            s2: Raster {
                source: PathBuf::from(format!("{base}/s2")),
                width: w,
                height: h,
                bands: 4,
                dtype: RasterDtype::U16,
                nodata: Some(0.0),
                geo: None,
                data: s2,
            },
            classes,
            looks: cfg.looks,
        }
    }

    /// The S1 raster in dB: `10·log10(max(σ0, 1e-10))` (same source name and dtype).
    pub fn s1_db(&self) -> Raster {
        let mut r = self.s1.clone();
        for v in &mut r.data {
            *v = to_db(*v);
        }
        r
    }

    /// The scene as tiler input: S1 linear power (`s1_is_db: false`), S2 DN with nodata 0 (clouds),
    /// no separate cloud mask; the scene id is [`SyntheticScene::id`].
    pub fn to_scene(&self) -> crate::tiler::Scene {
        crate::tiler::Scene {
            id: self.id.clone(),
            s1: self.s1.clone(),
            s1_is_db: false,
            s2: self.s2.clone(),
            cloud_mask: None,
        }
    }

    /// The scene with both rasters placed on the fake UTM grid of [`fake_geo`] (it keeps any
    /// georeferencing it already has).
    pub fn with_fake_georeference(mut self) -> SyntheticScene {
        let geo = fake_geo(self.width, self.height, self.index);
        for r in [&mut self.s1, &mut self.s2] {
            r.geo.get_or_insert_with(|| geo.clone());
        }
        self
    }

    /// The cloud mask implied by S2 (cloud pixels are 0 DN, valid ones at least 1): a 1-band
    /// `U8` raster, 1 for cloud, on the S2 grid, source `synthetic://seed-<seed>/scene-<i>/cloud_mask`;
    /// `None` when the scene has no cloud.
    pub fn cloud_mask(&self) -> Option<Raster> {
        let n = self.width * self.height;
        let data: Vec<f32> = self.s2.data[..n].iter().map(|&v| if v == 0.0 { 1.0 } else { 0.0 }).collect();
        data.contains(&1.0).then(|| Raster {
            source: PathBuf::from(format!("{}/cloud_mask", self.source_base())),
            width: self.width,
            height: self.height,
            bands: 1,
            dtype: RasterDtype::U8,
            nodata: None,
            geo: self.s2.geo.clone(),
            data,
        })
    }

    /// Writes the scene as GeoTIFFs into `dir` (created if missing): `<id>_s1.tif` (VV, VH linear
    /// σ0 power, float32), `<id>_s2.tif` (B2, B3, B4, B8 DN, uint16, GDAL_NODATA 0) and, when the
    /// scene has clouds, `<id>_cloud_mask.tif` (uint8, 1 = cloud). Uncompressed strips; the
    /// georeferencing is the scene's own or else the fake one of [`fake_geo`]. Every file says it
    /// is synthetic: `ImageDescription`, and GDAL metadata items `SYNTHETIC=true`, `SOURCE`
    /// (the `synthetic://` name) and `GENERATOR=tiling::synthetic`, plus band descriptions.
    /// [`crate::geotiff::read_geotiff`] reads back exactly the values of [`SyntheticScene::s1`]
    /// and [`SyntheticScene::s2`].
    pub fn write_geotiffs(&self, dir: &Path) -> Result<SceneFiles, TilingError> {
        std::fs::create_dir_all(dir).map_err(|source| TilingError::Io { path: dir.to_path_buf(), source })?;
        let geo = fake_geo(self.width, self.height, self.index);
        let write = |raster: &Raster, suffix: &str, content: &str, bands: &[&str]| {
            let path = dir.join(format!("{}_{suffix}.tif", self.id));
            let mut raster = raster.clone();
            raster.geo.get_or_insert_with(|| geo.clone());
            let source = raster.source.to_string_lossy().into_owned();
            let options = WriteOptions {
                description: Some(format!(
                    "SYNTHETIC scene rendered by trainyard tiling::synthetic ({source}): {content}. Not real \
                     Sentinel data; the georeference (EPSG:{FAKE_EPSG}, {FAKE_PIXEL_M} m pixels) is fake."
                )),
                band_names: bands.iter().map(|b| b.to_string()).collect(),
                metadata: vec![
                    ("SYNTHETIC".into(), "true".into()),
                    ("SOURCE".into(), source),
                    ("GENERATOR".into(), "tiling::synthetic".into()),
                    ("CONTENT".into(), content.into()),
                ],
            };
            write_geotiff(&path, &raster, &options).map(|()| path)
        };
        Ok(SceneFiles {
            id: self.id.clone(),
            s1: write(&self.s1, "s1", "Sentinel-1 VV, VH as linear sigma0 power", &["VV", "VH"])?,
            s2: write(
                &self.s2,
                "s2",
                "Sentinel-2 L2A B2, B3, B4, B8 as DN (reflectance x 10000), nodata 0",
                &["B2", "B3", "B4", "B8"],
            )?,
            cloud_mask: self
                .cloud_mask()
                .map(|m| write(&m, "cloud_mask", "cloud mask, 1 = cloud", &["cloud_mask"]))
                .transpose()?,
        })
    }

    /// Cuts the scene into non-overlapping `size × size` tiles (row-major; a remainder at the
    /// right/bottom edge is dropped), all assigned to `split`, with the tiler's default arithmetic:
    /// S1 to dB with [`crate::tiler::s1_to_db`] and a floor of [`TILE_S1_DB_FLOOR`], S2 to
    /// reflectance with [`crate::tiler::s2_to_reflectance`] (DN / 10000), and every band of a
    /// nodata pixel (cloud) set to NaN. Tile ids are `<scene id>-r<row>-c<col>`.
    pub fn tiles(&self, size: usize, split: Split) -> Vec<Tile> {
        assert!(size > 0, "tile size must be positive");
        let (w, h) = (self.width, self.height);
        let n = w * h;
        let tn = size * size;
        let mut out = Vec::new();
        for row in (0..h.saturating_sub(size - 1)).step_by(size) {
            for col in (0..w.saturating_sub(size - 1)).step_by(size) {
                let mut s1 = Vec::with_capacity(2 * tn);
                let mut s2 = Vec::with_capacity(4 * tn);
                for band in 0..2 {
                    for y in row..row + size {
                        let start = band * n + y * w + col;
                        s1.extend(
                            self.s1.data[start..start + size].iter().map(|&v| s1_to_db(v, Some(TILE_S1_DB_FLOOR))),
                        );
                    }
                }
                for band in 0..4 {
                    for y in row..row + size {
                        let start = band * n + y * w + col;
                        s2.extend(self.s2.data[start..start + size].iter().map(|&v| s2_to_reflectance(v, 1e-4)));
                    }
                }
                let mut valid = 0;
                for p in 0..tn {
                    if (0..4).any(|b| self.s2.data[b * n + (row + p / size) * w + col + p % size] == 0.0) {
                        (0..2).for_each(|b| s1[b * tn + p] = f32::NAN);
                        (0..4).for_each(|b| s2[b * tn + p] = f32::NAN);
                    } else {
                        valid += 1;
                    }
                }
                let id = format!("{}-r{row:05}-c{col:05}", self.id);
                let mut extra = serde_json::Map::new();
                extra.insert("generator".into(), "tiling::synthetic".into());
                extra.insert("looks".into(), self.looks.into());
                let sidecar = Sidecar {
                    tile_id: id.clone(),
                    height: size,
                    width: size,
                    split: Some(split),
                    scene: Some(self.source_base()),
                    row: Some(row),
                    col: Some(col),
                    geotransform: None,
                    crs: None,
                    source_files: vec![
                        self.s1.source.to_string_lossy().into_owned(),
                        self.s2.source.to_string_lossy().into_owned(),
                    ],
                    synthetic: true,
                    valid_fraction: Some(valid as f64 / tn as f64),
                    checksum: None,
                    extra,
                };
                out.push(Tile { id, height: size, width: size, s1, s2, sidecar });
            }
        }
        out
    }

    /// `synthetic://seed-<seed>/scene-<index>`.
    fn source_base(&self) -> String {
        let s = self.s1.source.to_string_lossy();
        s.strip_suffix("/s1").unwrap_or(&s).to_string()
    }
}

/// EPSG code of the fake georeference of exported synthetic scenes (WGS 84 / UTM zone 33N).
pub const FAKE_EPSG: u32 = 32633;
/// Pixel size of the fake georeference, in metres.
pub const FAKE_PIXEL_M: f64 = 10.0;

/// A fake but valid georeference for synthetic scene `index` of `width × height` pixels:
/// EPSG:32633, north-up, [`FAKE_PIXEL_M`] m pixels. Scenes are laid out 8 to a row, 10 km apart,
/// from (300 000 E, 6 000 000 N) eastwards then southwards, so that scene footprints of one size do
/// not overlap. Only the grid is meant: the location says nothing about the content.
pub fn fake_geo(width: usize, height: usize, index: u64) -> GeoInfo {
    let (col, row) = ((index % 8) as f64, (index / 8) as f64);
    let x0 = 300_000.0 + col * (width as f64 * FAKE_PIXEL_M + 10_000.0);
    let y0 = 6_000_000.0 - row * (height as f64 * FAKE_PIXEL_M + 10_000.0);
    GeoInfo {
        geotransform: [x0, FAKE_PIXEL_M, 0.0, y0, 0.0, -FAKE_PIXEL_M],
        epsg: Some(FAKE_EPSG),
        crs: Some(format!("EPSG:{FAKE_EPSG}")),
    }
}

/// The files of one scene as listed in a `trainyard-tile --scenes` CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneFiles {
    /// Scene id.
    pub id: String,
    /// Sentinel-1 GeoTIFF.
    pub s1: PathBuf,
    /// Sentinel-2 GeoTIFF.
    pub s2: PathBuf,
    /// Cloud mask GeoTIFF, if any.
    pub cloud_mask: Option<PathBuf>,
}

/// Writes the scene list `trainyard-tile --scenes` reads: header `scene_id,s1,s2,cloud_mask`,
/// one row per scene, paths relative to the list's directory when they lie under it.
pub fn write_scene_list(path: &Path, scenes: &[SceneFiles]) -> Result<(), TilingError> {
    let base = path.parent().unwrap_or(Path::new(""));
    let rel = |p: &Path| p.strip_prefix(base).unwrap_or(p).to_string_lossy().into_owned();
    let err = |e: csv::Error| TilingError::Format { path: path.to_path_buf(), message: format!("cannot write: {e}") };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["scene_id", "s1", "s2", "cloud_mask"]).map_err(err)?;
    for s in scenes {
        let mask = s.cloud_mask.as_deref().map(rel).unwrap_or_default();
        w.write_record([s.id.clone(), rel(&s.s1), rel(&s.s2), mask]).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TilingError::Io { path: path.to_path_buf(), source: e.into_error() })?;
    crate::npz::write_atomic(path, &bytes)
}

/// The split of synthetic scene `index` in [`synthetic_tiles`]: `index % 4 == 1` → validation,
/// `index % 8 == 3` → test, otherwise training (scenes 0, 1, 2, 3 → train, val, train, test).
/// A scene's tiles never straddle splits.
pub fn split_for_scene(index: u64) -> Split {
    if index % 4 == 1 {
        Split::Val
    } else if index % 8 == 3 {
        Split::Test
    } else {
        Split::Train
    }
}

/// `n` ready `size × size` tiles for tests and smoke runs: scenes of `2·size × 2·size` (four tiles
/// each, [`SyntheticConfig::new`] defaults, scene `i` seeded from `(seed, i)`), cut with
/// [`SyntheticScene::tiles`], split by scene with [`split_for_scene`]; the first `n` tiles in scene
/// then row-major order.
pub fn synthetic_tiles(n: usize, size: usize, seed: u64) -> Vec<Tile> {
    let cfg = SyntheticConfig::new(2 * size, 2 * size, seed);
    let mut out = Vec::with_capacity(n);
    let mut index = 0u64;
    while out.len() < n {
        let scene = SyntheticScene::generate(&cfg, index);
        let need = n - out.len();
        out.extend(scene.tiles(size, split_for_scene(index)).into_iter().take(need));
        index += 1;
    }
    out
}

/// dB floor of the S1 planes of [`SyntheticScene::tiles`] (the tiler's default).
pub const TILE_S1_DB_FLOOR: f32 = -30.0;

/// `10·log10(max(σ0, 1e-10))`, no floor.
fn to_db(v: f32) -> f32 {
    s1_to_db(v, None)
}

// ---------------------------------------------------------------------------------------------
// Land-cover map

/// Draws the land-cover map of scene `index` (row-major codes).
pub fn land_cover_map(cfg: &SyntheticConfig, index: u64) -> Vec<u8> {
    let (w, h) = (cfg.width, cfg.height);
    let mut map = vec![LandCover::Bare.code(); w * h];
    if w == 0 || h == 0 {
        return map;
    }
    let mut rng = stream(cfg.seed, index, STREAM_MAP);
    let (wf, hf) = (w as f64, h as f64);
    let min_side = wf.min(hf);

    // 1. Voronoi parcels.
    let total: f64 = PARCEL_CLASSES.iter().map(|(_, p)| p).sum();
    let parcels: Vec<(f64, f64, u8)> = (0..cfg.field_count.max(1))
        .map(|_| {
            let (x, y) = (uniform(&mut rng) * wf, uniform(&mut rng) * hf);
            let mut u = uniform(&mut rng) * total;
            let mut class = PARCEL_CLASSES[PARCEL_CLASSES.len() - 1].0;
            for (c, p) in PARCEL_CLASSES {
                if u < p {
                    class = c;
                    break;
                }
                u -= p;
            }
            (x, y, class.code())
        })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let mut best = (f64::INFINITY, LandCover::Bare.code());
            for &(sx, sy, c) in &parcels {
                let d = (px - sx).powi(2) + (py - sy).powi(2);
                if d < best.0 {
                    best = (d, c);
                }
            }
            map[y * w + x] = best.1;
        }
    }

    // 2. Urban districts: a grid of blocks, streets between and around them.
    for _ in 0..cfg.urban_districts {
        let blocks = cfg.urban_blocks.max(1);
        let cols = (blocks as f64).sqrt().ceil() as usize;
        let rows = blocks.div_ceil(cols);
        let street = 2usize;
        let block = 8 + below(&mut rng, 9) as usize; // 8..=16 px
        let dw = cols * (block + street) + street;
        let dh = rows * (block + street) + street;
        let x0 = (uniform(&mut rng) * (w.saturating_sub(dw) + 1) as f64) as usize;
        let y0 = (uniform(&mut rng) * (h.saturating_sub(dh) + 1) as f64) as usize;
        for y in y0..(y0 + dh).min(h) {
            for x in x0..(x0 + dw).min(w) {
                map[y * w + x] = LandCover::Road.code();
            }
        }
        for b in 0..blocks {
            let (r, c) = (b / cols, b % cols);
            let bx = x0 + street + c * (block + street);
            let by = y0 + street + r * (block + street);
            for y in by..(by + block).min(h) {
                for x in bx..(bx + block).min(w) {
                    map[y * w + x] = LandCover::Urban.code();
                }
            }
        }
    }

    // 3. Lakes: r(θ) = r0 · (1 + Σ a_k cos(kθ + φ_k)).
    for _ in 0..cfg.lake_count {
        let (cx, cy) = (uniform(&mut rng) * wf, uniform(&mut rng) * hf);
        let r0 = (0.04 + 0.06 * uniform(&mut rng)) * min_side;
        let harmonics: Vec<(f64, f64, f64)> =
            (2..=4).map(|k| (k as f64, 0.15 * uniform(&mut rng), 2.0 * PI * uniform(&mut rng))).collect();
        let rmax = r0 * 1.5;
        fill_box(&mut map, w, h, cx, cy, rmax, LandCover::Water, |dx, dy| {
            let theta = dy.atan2(dx);
            let r = r0 * (1.0 + harmonics.iter().map(|(k, a, phi)| a * (k * theta + phi).cos()).sum::<f64>());
            dx * dx + dy * dy <= r * r
        });
    }

    // 4. Rivers: enter from an edge, heading inwards, meandering sinusoidally plus a random walk.
    for _ in 0..cfg.river_count {
        let (mut x, mut y, heading) = edge_start(&mut rng, wf, hf);
        let radius = 1.5 + 2.0 * uniform(&mut rng); // width 3..7 px
        let amp = 0.3 + 0.5 * uniform(&mut rng);
        let wavelength = (0.15 + 0.25 * uniform(&mut rng)) * min_side;
        let phase = 2.0 * PI * uniform(&mut rng);
        let mut drift = 0.0;
        for t in 0..4 * (w + h) {
            stamp_disc(&mut map, w, h, x, y, radius, LandCover::Water);
            drift += 0.02 * normal(&mut rng);
            let dir = heading + drift + amp * (2.0 * PI * t as f64 / wavelength + phase).sin();
            x += dir.cos();
            y += dir.sin();
            if x < -radius || y < -radius || x > wf + radius || y > hf + radius {
                break;
            }
        }
    }

    // 5. Roads: edge-to-edge polylines through jittered intermediate vertices.
    for _ in 0..cfg.road_count {
        let (sx, sy, heading) = edge_start(&mut rng, wf, hf);
        let length = 2.0 * (wf + hf);
        let (ex, ey) = (sx + length * heading.cos(), sy + length * heading.sin());
        let radius = 1.0 + 0.5 * uniform(&mut rng); // width 2..3 px
        let segments = 2 + below(&mut rng, 3) as usize;
        let mut pts = vec![(sx, sy)];
        for s in 1..segments {
            let f = s as f64 / segments as f64;
            let jitter = 0.08 * min_side;
            pts.push((
                sx + f * (ex - sx) + jitter * (2.0 * uniform(&mut rng) - 1.0),
                sy + f * (ey - sy) + jitter * (2.0 * uniform(&mut rng) - 1.0),
            ));
        }
        pts.push((ex, ey));
        for pair in pts.windows(2) {
            let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
            let steps = ((bx - ax).hypot(by - ay) * 2.0).ceil().max(1.0) as usize;
            for s in 0..=steps {
                let f = s as f64 / steps as f64;
                let (px, py) = (ax + f * (bx - ax), ay + f * (by - ay));
                if px < -radius - 1.0 || py < -radius - 1.0 || px > wf + radius + 1.0 || py > hf + radius + 1.0 {
                    continue;
                }
                stamp_disc(&mut map, w, h, px, py, radius, LandCover::Road);
            }
        }
    }
    map
}

/// Cloud blobs of scene `index` (true = cloud), from their own stream so that they never change
/// the map.
fn cloud_mask(cfg: &SyntheticConfig, index: u64) -> Vec<bool> {
    let (w, h) = (cfg.width, cfg.height);
    let mut mask = vec![false; w * h];
    if cfg.cloud_count == 0 || w == 0 || h == 0 {
        return mask;
    }
    let mut rng = stream(cfg.seed, index, STREAM_S2 + 1000);
    let min_side = (w as f64).min(h as f64);
    for _ in 0..cfg.cloud_count {
        let (cx, cy) = (uniform(&mut rng) * w as f64, uniform(&mut rng) * h as f64);
        let r0 = (0.05 + 0.1 * uniform(&mut rng)) * min_side;
        let harmonics: Vec<(f64, f64, f64)> =
            (2..=5).map(|k| (k as f64, 0.2 * uniform(&mut rng), 2.0 * PI * uniform(&mut rng))).collect();
        let rmax = r0 * 1.8;
        let (x0, x1) = ((cx - rmax).floor().max(0.0) as usize, ((cx + rmax).ceil().max(0.0) as usize).min(w));
        let (y0, y1) = ((cy - rmax).floor().max(0.0) as usize, ((cy + rmax).ceil().max(0.0) as usize).min(h));
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let theta = dy.atan2(dx);
                let r = r0 * (1.0 + harmonics.iter().map(|(k, a, phi)| a * (k * theta + phi).cos()).sum::<f64>());
                if dx * dx + dy * dy <= r * r {
                    mask[y * w + x] = true;
                }
            }
        }
    }
    mask
}

/// Sets `class` on every pixel within `rmax` of `(cx, cy)` whose offset passes `inside`.
#[allow(clippy::too_many_arguments)]
fn fill_box(
    map: &mut [u8],
    w: usize,
    h: usize,
    cx: f64,
    cy: f64,
    rmax: f64,
    class: LandCover,
    inside: impl Fn(f64, f64) -> bool,
) {
    let (x0, x1) = ((cx - rmax).floor().max(0.0) as usize, ((cx + rmax).ceil().max(0.0) as usize).min(w));
    let (y0, y1) = ((cy - rmax).floor().max(0.0) as usize, ((cy + rmax).ceil().max(0.0) as usize).min(h));
    for y in y0..y1 {
        for x in x0..x1 {
            if inside(x as f64 + 0.5 - cx, y as f64 + 0.5 - cy) {
                map[y * w + x] = class.code();
            }
        }
    }
}

/// Sets `class` on the pixels whose centres lie within `radius` of `(cx, cy)`.
fn stamp_disc(map: &mut [u8], w: usize, h: usize, cx: f64, cy: f64, radius: f64, class: LandCover) {
    fill_box(map, w, h, cx, cy, radius + 1.0, class, |dx, dy| dx * dx + dy * dy <= radius * radius);
}

/// A point on a random edge of the scene and the heading from it towards a random point of the
/// scene's central half, so that the feature crosses the middle of the scene.
fn edge_start(rng: &mut ChaCha8Rng, wf: f64, hf: f64) -> (f64, f64, f64) {
    let along = uniform(rng);
    let (x, y) = match below(rng, 4) {
        0 => (along * wf, 0.0),
        1 => (along * wf, hf),
        2 => (0.0, along * hf),
        _ => (wf, along * hf),
    };
    let (tx, ty) = ((0.25 + 0.5 * uniform(rng)) * wf, (0.25 + 0.5 * uniform(rng)) * hf);
    (x, y, (ty - y).atan2(tx - x))
}

// ---------------------------------------------------------------------------------------------
// Random numbers (own helpers over the ChaCha8 stream, so results do not depend on `rand`'s
// distribution implementations).

/// SplitMix64 finaliser.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ChaCha8 stream of `(seed, scene, purpose)`.
fn stream(seed: u64, scene: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(scene ^ splitmix64(purpose))));
    rng.set_stream(purpose);
    rng
}

/// Uniform in the open interval (0, 1).
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Uniform integer in `0..n` (`n > 0`; Lemire's widening multiply, bias < 2⁻⁵⁰ for small `n`).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// Standard normal (Box–Muller, one value per call).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2) = (uniform(rng), uniform(rng));
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Gamma(shape, scale 1) by Marsaglia & Tsang (2000); shapes below 1 via the `U^(1/shape)` boost.
fn gamma(rng: &mut ChaCha8Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = uniform(rng);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = uniform(rng);
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_moments() {
        let mut rng = stream(1, 2, 3);
        for shape in [0.7, 1.0, 4.0, 9.5] {
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| gamma(&mut rng, shape)).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            assert!((m / shape - 1.0).abs() < 0.02, "shape {shape}: mean {m}");
            assert!((v / shape - 1.0).abs() < 0.05, "shape {shape}: var {v}");
        }
    }

    #[test]
    fn every_class_appears_in_a_large_scene() {
        let cfg = SyntheticConfig::new(512, 512, 7);
        let map = land_cover_map(&cfg, 0);
        for c in LandCover::ALL {
            assert!(map.iter().filter(|&&m| m == c.code()).count() > 200, "{} too rare", c.name());
        }
    }
}
