//! Road → grid-cell tokens: LM-TAD's vocabulary over a LibCity road network.
//!
//! Every road is one token, the cell of a `cell_deg` grid (default [`DEFAULT_CELL_DEG`] = 0.001°)
//! that holds the road's centroid. The grid is bounded by **all** `roadmap.geo` vertices and has
//! `H = floor(lat_span / g) + 1` rows and `W = floor(lng_span / g) + 1` columns (the same f64
//! operations as Python's `int(span / g) + 1`); a point's cell is
//! `floor((lat − min_lat)/g)·W + floor((lng − min_lng)/g)`, row and column each clamped into the
//! grid. Three special tokens follow the `H·W` cells: `PAD = H·W`, `EOT = H·W + 1`,
//! `SOT = H·W + 2`, so the vocabulary has `H·W + 3` tokens and `SOT = vocab − 1` (which the fork
//! infers). A trajectory is `[SOT] + cells + [EOT]`, repeated cells kept.
//!
//! **One centroid definition.** The fork's converter (`convert_HOSER_to_LMTAD.py`) put a road at
//! the *mean of its vertices*, while its runtime mapper (`critics/grid_mapper.py`) uses the
//! shapely *LineString centroid* (length-weighted segment midpoints), so a teacher imported from
//! the fork may disagree with this map on roads near cell borders. Here there is one definition,
//! [`RoadNetwork::centroids`] (the LineString centroid, also used by HOSER's road features),
//! for training, scoring and distillation alike; the saved map records it as `"line_centroid"`.
//!
//! The map is saved beside a teacher ([`TokenMap::save`] / [`TokenMap::load`]) together with the
//! dataset's name and the CRC-32C of its `roadmap.geo`, so distillation uses exactly the tokens the
//! teacher was trained on, and [`TokenMap::check_dataset`] refuses a teacher made for another
//! road network.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DataError, Road, RoadNetwork, file_crc32c};

/// The grid cell size of the fork's HOSER-data teacher: 0.001° in latitude and longitude.
pub const DEFAULT_CELL_DEG: f64 = 0.001;

/// The `format` tag of a saved token map.
pub const FORMAT_TAG: &str = "trainyard-lmtad-token-map";

/// The version of the saved token-map format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the centroid definition recorded in a saved map (see the module doc).
pub const CENTROID_DEFINITION: &str = "line_centroid";

/// The largest vocabulary a map may have: tokens are `u32`.
const MAX_VOCAB: f64 = u32::MAX as f64;

/// Everything that can go wrong while building, saving, loading or checking a token map; every
/// variant names the file, road or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The cell size is not a finite number of degrees above zero.
    #[error("grid cell size {cell_deg}° is not a finite number of degrees > 0 (the default is {DEFAULT_CELL_DEG})")]
    CellSize {
        /// The cell size given.
        cell_deg: f64,
    },
    /// The network has no roads, so there is no grid to bound.
    #[error("the road network has no roads: there is no grid to build a token map on")]
    EmptyNetwork,
    /// A road without a single vertex.
    #[error("road {road} has no vertices: every road needs at least one [lon, lat] point")]
    RoadWithoutVertices {
        /// The road id.
        road: usize,
    },
    /// A vertex that is not a finite `[lon, lat]`.
    #[error("road {road}, vertex {vertex}: [lon, lat] = [{lon}, {lat}] is not a finite coordinate")]
    NonFiniteVertex {
        /// The road id.
        road: usize,
        /// 0-based index of the vertex in the road's polyline.
        vertex: usize,
        /// Its longitude.
        lon: f64,
        /// Its latitude.
        lat: f64,
    },
    /// A road whose centroid is not finite (its coordinates are too large to sum).
    #[error("road {road}: centroid [lon, lat] = [{lon}, {lat}] is not finite")]
    NonFiniteCentroid {
        /// The road id.
        road: usize,
        /// Centroid longitude.
        lon: f64,
        /// Centroid latitude.
        lat: f64,
    },
    /// The network has another number of centroids than roads (an inconsistent network).
    #[error("the road network has {roads} roads but {centroids} centroids")]
    CentroidCount {
        /// Number of roads.
        roads: usize,
        /// Number of centroids.
        centroids: usize,
    },
    /// Grid bounds that are not finite or not ordered (`min ≤ max`).
    #[error("grid bounds lat {min_lat}..{max_lat}, lng {min_lng}..{max_lng} are not finite numbers with min <= max")]
    InvalidBounds {
        /// Southern bound.
        min_lat: f64,
        /// Western bound.
        min_lng: f64,
        /// Northern bound.
        max_lat: f64,
        /// Eastern bound.
        max_lng: f64,
    },
    /// The grid would have more cells than `u32` tokens can number.
    #[error(
        "a {cell_deg}° grid over lat {min_lat}..{max_lat}, lng {min_lng}..{max_lng} has {rows} x {cols} cells, more \
         than {} tokens can number; use a larger cell size",
        u32::MAX
    )]
    GridTooLarge {
        /// The cell size.
        cell_deg: f64,
        /// Southern bound.
        min_lat: f64,
        /// Western bound.
        min_lng: f64,
        /// Northern bound.
        max_lat: f64,
        /// Eastern bound.
        max_lng: f64,
        /// Rows the grid would have.
        rows: f64,
        /// Columns the grid would have.
        cols: f64,
    },
    /// A road id that is not in the map (outside `0..num_roads`).
    #[error(
        "unknown road id {road} at position {position}: the token map has {num_roads} roads (ids 0..{})",
        num_roads.saturating_sub(1)
    )]
    UnknownRoad {
        /// The road id.
        road: u32,
        /// 0-based position in the road list.
        position: usize,
        /// Number of roads in the map.
        num_roads: usize,
    },
    /// A road network file could not be read (its CRC-32C is part of the map).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A token-map file could not be read, written or renamed.
    #[error("token map {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A token-map file is not JSON (truncated, edited by hand, another file).
    #[error("token map {}: not a valid JSON token map: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the JSON parser reported.
        #[source]
        source: serde_json::Error,
    },
    /// A token-map file that parses but whose content is inconsistent or of another format.
    #[error("token map {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the values involved.
        reason: String,
    },
    /// The map was made for another dataset (another name or another `roadmap.geo`).
    #[error(
        "token map {origin} was made for dataset `{map_dataset}` (roadmap.geo CRC-32C {map_crc:08x}), not \
         `{dataset}` ({} CRC-32C {crc:08x}): a teacher is tied to the road network it was trained on",
        geo.display()
    )]
    DatasetMismatch {
        /// Where the map came from: its file, or "built in memory".
        origin: String,
        /// The dataset the map was made for.
        map_dataset: String,
        /// The CRC-32C of that dataset's `roadmap.geo`.
        map_crc: u32,
        /// The dataset asked for.
        dataset: String,
        /// That dataset's `roadmap.geo`.
        geo: PathBuf,
        /// Its CRC-32C.
        crc: u32,
    },
}

/// The `cell_deg` grid a token map numbers its cells on, bounded by every vertex of the network.
///
/// Cells are numbered row-major from the south-west corner: `row · cols + col`, row along
/// latitude, column along longitude.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Cell size in degrees (latitude and longitude alike).
    pub cell_deg: f64,
    /// Smallest vertex latitude.
    pub min_lat: f64,
    /// Smallest vertex longitude.
    pub min_lng: f64,
    /// Largest vertex latitude.
    pub max_lat: f64,
    /// Largest vertex longitude.
    pub max_lng: f64,
    /// Number of rows, `floor((max_lat − min_lat)/cell_deg) + 1`.
    pub rows: usize,
    /// Number of columns, `floor((max_lng − min_lng)/cell_deg) + 1`.
    pub cols: usize,
}

impl Grid {
    /// The grid bounded by every vertex of `roads` (each `[lon, lat]`).
    ///
    /// Fails on a cell size that is not finite and > 0, no roads, a road without vertices, a
    /// non-finite vertex, or a grid with more cells than `u32` tokens can number.
    pub fn bounding(roads: &[Road], cell_deg: f64) -> Result<Grid, TokenError> {
        check_cell_deg(cell_deg)?;
        if roads.is_empty() {
            return Err(TokenError::EmptyNetwork);
        }
        let (mut min_lat, mut min_lng) = (f64::INFINITY, f64::INFINITY);
        let (mut max_lat, mut max_lng) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (road, r) in roads.iter().enumerate() {
            if r.coordinates.is_empty() {
                return Err(TokenError::RoadWithoutVertices { road });
            }
            for (vertex, &[lon, lat]) in r.coordinates.iter().enumerate() {
                if !(lon.is_finite() && lat.is_finite()) {
                    return Err(TokenError::NonFiniteVertex { road, vertex, lon, lat });
                }
                min_lat = min_lat.min(lat);
                min_lng = min_lng.min(lon);
                max_lat = max_lat.max(lat);
                max_lng = max_lng.max(lon);
            }
        }
        Self::from_bounds(cell_deg, min_lat, min_lng, max_lat, max_lng)
    }

    /// The grid over explicit bounds (all finite, `min ≤ max`), with rows and columns computed as
    /// Python's `int(span / g) + 1`.
    pub fn from_bounds(
        cell_deg: f64,
        min_lat: f64,
        min_lng: f64,
        max_lat: f64,
        max_lng: f64,
    ) -> Result<Grid, TokenError> {
        check_cell_deg(cell_deg)?;
        let finite = [min_lat, min_lng, max_lat, max_lng].iter().all(|v| v.is_finite());
        if !(finite && min_lat <= max_lat && min_lng <= max_lng) {
            return Err(TokenError::InvalidBounds { min_lat, min_lng, max_lat, max_lng });
        }
        // `span / g` is ≥ 0 here, where Python's int() (truncation) and floor agree.
        let rows = ((max_lat - min_lat) / cell_deg).floor() + 1.0;
        let cols = ((max_lng - min_lng) / cell_deg).floor() + 1.0;
        if !(rows >= 1.0 && cols >= 1.0 && rows * cols + 3.0 <= MAX_VOCAB) {
            return Err(TokenError::GridTooLarge { cell_deg, min_lat, min_lng, max_lat, max_lng, rows, cols });
        }
        // Both are integers in 1..=u32::MAX (checked above), so the casts are exact.
        Ok(Grid { cell_deg, min_lat, min_lng, max_lat, max_lng, rows: rows as usize, cols: cols as usize })
    }

    /// `(row, col)` of a point, each clamped into the grid (a NaN coordinate lands in row / column 0).
    pub fn row_col(&self, lat: f64, lng: f64) -> (usize, usize) {
        let clamp = |v: f64, n: usize| -> usize {
            // `as` saturates (negative and NaN → 0, too large → usize::MAX) before the clamp.
            (v.floor() as usize).min(n.saturating_sub(1))
        };
        (clamp((lat - self.min_lat) / self.cell_deg, self.rows), clamp((lng - self.min_lng) / self.cell_deg, self.cols))
    }

    /// The cell of a point, `row · cols + col`, row and column clamped into the grid.
    pub fn cell(&self, lat: f64, lng: f64) -> u32 {
        let (row, col) = self.row_col(lat, lng);
        // A grid from `bounding`/`from_bounds` has fewer than u32::MAX cells; a hand-made one
        // that does not saturates instead of wrapping.
        u32::try_from(row.saturating_mul(self.cols).saturating_add(col)).unwrap_or(u32::MAX)
    }

    /// Number of cells, `rows · cols`.
    pub fn num_cells(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
}

fn check_cell_deg(cell_deg: f64) -> Result<(), TokenError> {
    if cell_deg.is_finite() && cell_deg > 0.0 { Ok(()) } else { Err(TokenError::CellSize { cell_deg }) }
}

/// How the roads share the occupied cells (for a log line; [`fmt::Display`] writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct Occupancy {
    /// Number of roads.
    pub roads: usize,
    /// Number of grid cells.
    pub cells: usize,
    /// Cells holding at least one road.
    pub occupied_cells: usize,
    /// Mean number of roads per occupied cell.
    pub mean_roads_per_cell: f64,
    /// Largest number of roads in one cell.
    pub max_roads_per_cell: usize,
}

impl fmt::Display for Occupancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} roads on {} of {} cells ({:.2} roads per occupied cell on average, at most {})",
            self.roads, self.occupied_cells, self.cells, self.mean_roads_per_cell, self.max_roads_per_cell
        )
    }
}

/// The road → token map of one dataset: its grid, every road's cell, and the dataset it was made
/// for (name and `roadmap.geo` CRC-32C).
///
/// Serialises (serde) to the same validated JSON form as [`TokenMap::save`]; deserialising checks
/// it like [`TokenMap::load`]. Equality compares the content, not where a map was loaded from.
#[derive(Debug, Clone)]
pub struct TokenMap {
    dataset: String,
    geo_crc32c: u32,
    grid: Grid,
    road_tokens: Vec<u32>,
    /// The file it was loaded from, for messages; not part of the content.
    source: Option<PathBuf>,
}

impl PartialEq for TokenMap {
    fn eq(&self, other: &Self) -> bool {
        self.dataset == other.dataset
            && self.geo_crc32c == other.geo_crc32c
            && self.grid == other.grid
            && self.road_tokens == other.road_tokens
    }
}

/// The saved form, field for field (the redundant special tokens are checked on load).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenMapFile {
    format: String,
    version: u32,
    dataset: String,
    /// 8 hex digits, as in the messages.
    geo_crc32c: String,
    centroid: String,
    grid: Grid,
    pad: u32,
    eot: u32,
    sot: u32,
    vocab_size: usize,
    road_tokens: Vec<u32>,
}

impl TokenMap {
    /// Builds the map of a dataset: the grid bounding every vertex of `network`, each road's
    /// centroid cell ([`RoadNetwork::centroids`]), and the CRC-32C of `geo_path` (the
    /// `roadmap.geo` the network was read from).
    pub fn build(dataset: &str, geo_path: &Path, network: &RoadNetwork, cell_deg: f64) -> Result<Self, TokenError> {
        let grid = Grid::bounding(network.roads(), cell_deg)?;
        let centroids = network.centroids();
        if centroids.len() != network.num_roads() {
            return Err(TokenError::CentroidCount { roads: network.num_roads(), centroids: centroids.len() });
        }
        let road_tokens = centroids
            .iter()
            .enumerate()
            .map(|(road, &[lon, lat])| {
                if lon.is_finite() && lat.is_finite() {
                    Ok(grid.cell(lat, lon))
                } else {
                    Err(TokenError::NonFiniteCentroid { road, lon, lat })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let geo_crc32c = file_crc32c(geo_path)?;
        Ok(Self { dataset: dataset.to_owned(), geo_crc32c, grid, road_tokens, source: None })
    }

    /// The dataset the map was made for.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The CRC-32C of the dataset's `roadmap.geo` when the map was made.
    pub fn geo_crc32c(&self) -> u32 {
        self.geo_crc32c
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Number of roads (valid ids are `0..num_roads()`).
    pub fn num_roads(&self) -> usize {
        self.road_tokens.len()
    }

    /// Every road's token, indexed by road id.
    pub fn road_tokens(&self) -> &[u32] {
        &self.road_tokens
    }

    /// The padding token, `rows · cols`.
    pub fn pad(&self) -> u32 {
        self.cells_u32()
    }

    /// The end-of-trajectory token, `rows · cols + 1`.
    pub fn eot(&self) -> u32 {
        self.cells_u32() + 1
    }

    /// The start-of-trajectory token, `rows · cols + 2` (= `vocab_size() − 1`).
    pub fn sot(&self) -> u32 {
        self.cells_u32() + 2
    }

    /// Number of tokens: the cells plus PAD, EOT and SOT.
    pub fn vocab_size(&self) -> usize {
        self.grid.num_cells() + 3
    }

    /// Number of cells as a token value; a map's grid always has at most `u32::MAX − 3` cells
    /// (checked when it is built or loaded).
    fn cells_u32(&self) -> u32 {
        u32::try_from(self.grid.num_cells()).unwrap_or(u32::MAX - 2)
    }

    /// The token of one road, `None` for an id outside the map.
    pub fn token(&self, road: u32) -> Option<u32> {
        self.road_tokens.get(road as usize).copied()
    }

    /// The cells of a road list, one per road (no special tokens).
    pub fn cells(&self, roads: &[u32]) -> Result<Vec<u32>, TokenError> {
        roads
            .iter()
            .enumerate()
            .map(|(position, &road)| {
                self.token(road).ok_or(TokenError::UnknownRoad { road, position, num_roads: self.num_roads() })
            })
            .collect()
    }

    /// `[SOT] + cells + [EOT]`, a training sequence (repeated cells are NOT collapsed); an unknown
    /// road id is an error naming it and its position.
    pub fn encode(&self, roads: &[u32]) -> Result<Vec<u32>, TokenError> {
        let mut out = self.history(roads)?;
        out.push(self.eot());
        Ok(out)
    }

    /// `[SOT] + cells`, a history for next-token inference; an unknown road id is an error naming it.
    pub fn history(&self, roads: &[u32]) -> Result<Vec<u32>, TokenError> {
        let mut out = Vec::with_capacity(roads.len() + 2);
        out.push(self.sot());
        out.extend(self.cells(roads)?);
        Ok(out)
    }

    /// Number of cells holding at least one road.
    pub fn occupied_cells(&self) -> usize {
        self.occupancy().occupied_cells
    }

    /// How many cells the roads occupy, and how many roads share one (mean and max).
    pub fn occupancy(&self) -> Occupancy {
        let mut per_cell: BTreeMap<u32, usize> = BTreeMap::new();
        for &t in &self.road_tokens {
            *per_cell.entry(t).or_default() += 1;
        }
        let occupied_cells = per_cell.len();
        Occupancy {
            roads: self.road_tokens.len(),
            cells: self.grid.num_cells(),
            occupied_cells,
            mean_roads_per_cell: if occupied_cells == 0 {
                0.0
            } else {
                self.road_tokens.len() as f64 / occupied_cells as f64
            },
            max_roads_per_cell: per_cell.values().copied().max().unwrap_or(0),
        }
    }

    fn to_file(&self) -> TokenMapFile {
        TokenMapFile {
            format: FORMAT_TAG.to_owned(),
            version: FORMAT_VERSION,
            dataset: self.dataset.clone(),
            geo_crc32c: format!("{:08x}", self.geo_crc32c),
            centroid: CENTROID_DEFINITION.to_owned(),
            grid: self.grid.clone(),
            pad: self.pad(),
            eot: self.eot(),
            sot: self.sot(),
            vocab_size: self.vocab_size(),
            road_tokens: self.road_tokens.clone(),
        }
    }

    /// Writes the map as JSON, atomically (temporary file, fsync, rename): a crash leaves the old
    /// file or the new one, never a torn one. Replaces an existing file.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let json = serde_json::to_vec_pretty(&self.to_file())
            .map_err(|e| TokenError::Io { path: path.to_owned(), source: std::io::Error::other(e) })?;
        checkpoints::atomic::write_atomic(path, |f| f.write_all(&json), || {})
            .map_err(|source| TokenError::Io { path: path.to_owned(), source })
    }

    /// Reads a map written by [`TokenMap::save`], checking everything: the format tag and version,
    /// the grid (finite bounds, `cell_deg > 0`, rows and columns as the bounds give them), the
    /// special tokens and vocabulary size, and every road token `< rows · cols`. Errors name the
    /// file.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Io { path: path.to_owned(), source })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| TokenError::Parse { path: path.to_owned(), source })?;
        let invalid = |reason: String| TokenError::Invalid { path: path.to_owned(), reason };
        precheck(&value).map_err(invalid)?;
        // Parsed again from the bytes (not the value) so that a type error says its line and column.
        let file: TokenMapFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut map = from_file(file).map_err(invalid)?;
        map.source = Some(path.to_owned());
        Ok(map)
    }

    /// Refuses a map made for another dataset: by name, and by the CRC-32C of its `roadmap.geo`
    /// (`geo_path`, the file the current network is read from).
    pub fn check_dataset(&self, dataset: &str, geo_path: &Path) -> Result<(), TokenError> {
        let crc = file_crc32c(geo_path)?;
        if dataset == self.dataset && crc == self.geo_crc32c {
            return Ok(());
        }
        Err(TokenError::DatasetMismatch {
            origin: match &self.source {
                Some(path) => path.display().to_string(),
                None => "(built in memory)".to_owned(),
            },
            map_dataset: self.dataset.clone(),
            map_crc: self.geo_crc32c,
            dataset: dataset.to_owned(),
            geo: geo_path.to_owned(),
            crc,
        })
    }
}

/// The checks on a saved map that come before its typed parse: the format tag and version (so
/// another file or a future version is named as such rather than as an unknown field) and the
/// grid's numbers. The error says what is wrong with which value.
fn precheck(value: &serde_json::Value) -> Result<(), String> {
    let format = value.get("format").and_then(|v| v.as_str());
    if format != Some(FORMAT_TAG) {
        return Err(format!(
            "format is {}, expected \"{FORMAT_TAG}\" (is this an LM-TAD token map?)",
            value.get("format").map_or("missing".to_owned(), |v| v.to_string())
        ));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(FORMAT_VERSION)) {
        return Err(format!(
            "format version is {}, this build reads version {FORMAT_VERSION}",
            value.get("version").map_or("missing".to_owned(), |v| v.to_string())
        ));
    }
    // JSON has no NaN or infinity (serde_json writes them as null): name such a grid number
    // rather than report a bare type error.
    for key in ["cell_deg", "min_lat", "min_lng", "max_lat", "max_lng"] {
        match value.get("grid").and_then(|g| g.get(key)) {
            Some(v) if !v.is_number() => return Err(format!("grid.{key} is {v}, expected a finite number")),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a parsed saved map and builds it; the error says what is wrong with which value.
fn from_file(file: TokenMapFile) -> Result<TokenMap, String> {
    if file.centroid != CENTROID_DEFINITION {
        return Err(format!(
            "centroid definition is {:?}, expected {CENTROID_DEFINITION:?} (the one this build maps roads with)",
            file.centroid
        ));
    }
    let geo_crc32c = (file.geo_crc32c.len() == 8)
        .then(|| u32::from_str_radix(&file.geo_crc32c, 16).ok())
        .flatten()
        .ok_or_else(|| format!("geo_crc32c {:?} is not 8 hex digits", file.geo_crc32c))?;
    let g = &file.grid;
    let expected = Grid::from_bounds(g.cell_deg, g.min_lat, g.min_lng, g.max_lat, g.max_lng)
        .map_err(|e| format!("grid {g:?}: {e}"))?;
    if expected.rows != g.rows || expected.cols != g.cols {
        return Err(format!(
            "grid has {} x {} cells, but its bounds and cell size give {} x {}",
            g.rows, g.cols, expected.rows, expected.cols
        ));
    }
    if file.road_tokens.is_empty() {
        return Err("road_tokens is empty: a map needs at least one road".to_owned());
    }
    let map =
        TokenMap { dataset: file.dataset, geo_crc32c, grid: expected, road_tokens: file.road_tokens, source: None };
    let cells = map.grid.num_cells();
    if let Some((road, &t)) = map.road_tokens.iter().enumerate().find(|(_, t)| **t as usize >= cells) {
        return Err(format!("road {road} has token {t}, not a cell of the {} x {} grid (< {cells})", g.rows, g.cols));
    }
    for (name, saved, expected) in [
        ("pad", file.pad as usize, map.pad() as usize),
        ("eot", file.eot as usize, map.eot() as usize),
        ("sot", file.sot as usize, map.sot() as usize),
        ("vocab_size", file.vocab_size, map.vocab_size()),
    ] {
        if saved != expected {
            return Err(format!("{name} is {saved}, but a {} x {} grid gives {expected}", g.rows, g.cols));
        }
    }
    Ok(map)
}

impl Serialize for TokenMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_file().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TokenMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        precheck(&value).map_err(serde::de::Error::custom)?;
        let file = TokenMapFile::deserialize(value).map_err(serde::de::Error::custom)?;
        from_file(file).map_err(serde::de::Error::custom)
    }
}
