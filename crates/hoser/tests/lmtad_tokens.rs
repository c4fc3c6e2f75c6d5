//! LM-TAD tokenisation: hand-checked cells on a small fixture, the special tokens, encoding, the
//! saved map (round trip and tampered files) and the dataset check.

use std::path::{Path, PathBuf};

use hoser::data::{Road, RoadNetwork};
use hoser::lmtad::tokens::{DEFAULT_CELL_DEG, Grid, TokenError, TokenMap};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn network(dir: &Path) -> RoadNetwork {
    RoadNetwork::read(&dir.join("roadmap.geo"), &dir.join("roadmap.rel")).expect("fixture network reads")
}

/// The `lmtad_grid` fixture's map on the default 0.001° grid.
fn grid_map() -> TokenMap {
    let dir = fixture("lmtad_grid");
    TokenMap::build("lmtad_grid", &dir.join("roadmap.geo"), &network(&dir), DEFAULT_CELL_DEG).expect("map builds")
}

fn road(coordinates: Vec<[f64; 2]>) -> Road {
    Road { coordinates, start_key: String::new(), end_key: String::new(), highway: "primary".into(), length: 1.0 }
}

// The fixture by hand (g = 0.001; every quotient below is the f64 value Python's float arithmetic
// gives, which is what the map must reproduce):
//
// Bounds over all vertices: lng 116.3 .. 116.3052 (roads 3 and 4), lat 39.9 .. 39.9034 (roads 3, 4).
//   H = int((39.9034 − 39.9)/0.001) + 1 = int(3.3999999999991815) + 1 = 4
//   W = int((116.3052 − 116.3)/0.001) + 1 = int(5.200000000002092) + 1 = 6
//   24 cells; PAD = 24, EOT = 25, SOT = 26, vocab = 27.
//   (Swapping lat and lng would give a 6 × 4 grid and other tokens below.)
//
// Centroids (LineString centroid = length-weighted mean of segment midpoints):
// - road 0, interior: midpoint (116.3005, 39.9005): row floor(0.50000000000239) = 0,
//   col floor(0.49999999998818) = 0 → token 0.
// - road 1, on a cell border: vertical 39.9015 .. 39.9025 at lng 116.3025, centroid lat 39.902
//   exactly the border between rows 1 and 2: (39.902 − 39.9)/0.001 = 2.0000000000024443 → row 2;
//   col floor(2.4999999999977) = 2 → token 2·6 + 2 = 14.
// - road 2, vertex mean ≠ line centroid: lat 39.9015 (row floor(1.5000000000000568) = 1);
//   lng offsets from 116.3 are 0.2, 0.3, 1.9 (× 0.001).
//   vertex mean: (0.2 + 0.3 + 1.9)/3 = 0.8 → col 0 → token 6 (what the fork's converter used);
//   line centroid: segments 0.1 long (midpoint 0.25) and 1.6 long (midpoint 1.1):
//   (0.1·0.25 + 1.6·1.1)/1.7 = 1.785/1.7 = 1.05 → col 1 → token 1·6 + 1 = 7 (what we use).
// - road 3, from the minimum corner (116.3, 39.9) to (116.3004, 39.9003): centroid
//   (116.3002, 39.90015), row floor(0.15) = 0, col floor(0.2) = 0 → token 0 (shares road 0's cell).
// - road 4, zero length at the maximum corner: the centroid is its point (116.3052, 39.9034):
//   row floor(3.3999999999991815) = 3 = H − 1, col floor(5.200000000002092) = 5 = W − 1 →
//   token 3·6 + 5 = 23, the last cell.
// - road 5, diagonal (116.3041, 39.9012) → (116.3049, 39.9028): midpoint (116.3045, 39.902),
//   row 2 (the same border as road 1), col floor(4.500000000007276) = 4 → token 2·6 + 4 = 16.
const EXPECTED_TOKENS: [u32; 6] = [0, 14, 7, 0, 23, 16];

#[test]
fn fixture_roads_land_in_hand_computed_cells() {
    let map = grid_map();
    let grid = map.grid();
    assert_eq!((grid.rows, grid.cols), (4, 6), "grid {grid:?}");
    assert_eq!((grid.min_lat, grid.min_lng, grid.max_lat, grid.max_lng), (39.9, 116.3, 39.9034, 116.3052));
    assert_eq!(grid.cell_deg, 0.001);
    assert_eq!(grid.num_cells(), 24);
    assert_eq!(map.num_roads(), 6);
    assert_eq!(map.road_tokens(), &EXPECTED_TOKENS);
    for (road, &t) in EXPECTED_TOKENS.iter().enumerate() {
        assert_eq!(map.token(road as u32), Some(t), "road {road}");
    }
    assert_eq!(map.token(6), None);
    assert_eq!((map.pad(), map.eot(), map.sot(), map.vocab_size()), (24, 25, 26, 27));
    assert_eq!(map.sot() as usize, map.vocab_size() - 1, "the fork infers SOT = vocab - 1");
}

#[test]
fn the_line_centroid_not_the_vertex_mean_decides_the_cell() {
    let dir = fixture("lmtad_grid");
    let net = network(&dir);
    let map = grid_map();
    let road2 = &net.roads()[2].coordinates;
    let n = road2.len() as f64;
    let mean = [road2.iter().map(|p| p[0]).sum::<f64>() / n, road2.iter().map(|p| p[1]).sum::<f64>() / n];
    assert_eq!(map.grid().cell(mean[1], mean[0]), 6, "vertex mean {mean:?}");
    let [lon, lat] = net.centroids()[2];
    assert!((lon - 116.30105).abs() < 1e-9 && (lat - 39.9015).abs() < 1e-9, "centroid [{lon}, {lat}]");
    assert_eq!(map.token(2), Some(7));
}

#[test]
fn grid_cells_are_row_major_and_clamped_outside_the_bounds() {
    let grid = grid_map().grid().clone();
    assert_eq!(grid.cell(39.9, 116.3), 0, "minimum corner");
    assert_eq!(grid.cell(39.9034, 116.3052), 23, "maximum corner");
    assert_eq!(grid.row_col(39.9034, 116.3052), (3, 5));
    // Outside the bounds each of row and column is clamped on its own.
    assert_eq!(grid.cell(40.5, 117.0), 23, "north-east of the grid");
    assert_eq!(grid.cell(39.0, 116.0), 0, "south-west of the grid");
    assert_eq!(grid.cell(40.5, 116.0), 18, "north-west: last row, first column");
    assert_eq!(grid.cell(39.0, 117.0), 5, "south-east: first row, last column");
    assert_eq!(grid.cell(39.9015, 116.3019), 7, "row 1, col 1");
    // Never panics, even on NaN.
    assert_eq!(grid.cell(f64::NAN, f64::NAN), 0);
}

#[test]
fn grid_rows_and_cols_use_python_float_arithmetic() {
    // (116.303 − 116.3)/0.001 = 3.0000000000001137 in f64: int() gives 3, so 4 columns.
    let grid = Grid::from_bounds(0.001, 39.9, 116.3, 39.9, 116.303).expect("grid");
    assert_eq!((grid.rows, grid.cols), (1, 4));
    // A single point is a 1 × 1 grid.
    let one = Grid::bounding(&[road(vec![[24.9, 60.1]])], 0.001).expect("grid");
    assert_eq!((one.rows, one.cols, one.num_cells()), (1, 1, 1));
}

#[test]
fn occupancy_counts_roads_per_occupied_cell() {
    let occupancy = grid_map().occupancy();
    assert_eq!(occupancy.occupied_cells, 5, "cells 0, 7, 14, 16, 23");
    assert_eq!(occupancy.max_roads_per_cell, 2, "roads 0 and 3 share cell 0");
    assert!((occupancy.mean_roads_per_cell - 1.2).abs() < 1e-12);
    assert_eq!(grid_map().occupied_cells(), 5);
    assert_eq!(occupancy.to_string(), "6 roads on 5 of 24 cells (1.20 roads per occupied cell on average, at most 2)");
}

#[test]
fn encode_wraps_cells_in_sot_and_eot_without_collapsing_repeats() {
    let map = grid_map();
    // Roads 0 and 3 share cell 0: both stay.
    assert_eq!(map.encode(&[0, 3, 1, 5]).expect("encode"), vec![26, 0, 0, 14, 16, 25]);
    assert_eq!(map.history(&[0, 3, 1, 5]).expect("history"), vec![26, 0, 0, 14, 16]);
    assert_eq!(map.encode(&[]).expect("encode"), vec![26, 25]);
    assert_eq!(map.history(&[]).expect("history"), vec![26]);
}

#[test]
fn an_unknown_road_is_an_error_naming_it() {
    let map = grid_map();
    for result in [map.encode(&[0, 1, 99]), map.history(&[0, 1, 99])] {
        let err = result.expect_err("road 99 is not in a 6-road map");
        assert!(matches!(err, TokenError::UnknownRoad { road: 99, position: 2, num_roads: 6 }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("99") && msg.contains("position 2") && msg.contains("6 roads"), "{msg}");
    }
}

#[test]
fn a_saved_map_round_trips() {
    let map = grid_map();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token_map.json");
    map.save(&path).expect("save");
    let loaded = TokenMap::load(&path).expect("load");
    assert_eq!(loaded, map);
    assert_eq!(loaded.geo_crc32c(), map.geo_crc32c());
    // Saving again replaces the file atomically and leaves no temporary behind.
    loaded.save(&path).expect("save again");
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).expect("read_dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("token_map.json")]);
    // The file carries the documented fields.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(json["format"], "trainyard-lmtad-token-map");
    assert_eq!(json["version"], 1);
    assert_eq!(json["dataset"], "lmtad_grid");
    assert_eq!(json["centroid"], "line_centroid");
    assert_eq!(json["geo_crc32c"], format!("{:08x}", map.geo_crc32c()));
    assert_eq!((json["pad"].as_u64(), json["eot"].as_u64(), json["sot"].as_u64()), (Some(24), Some(25), Some(26)));
    assert_eq!(json["vocab_size"], 27);
    assert_eq!(json["grid"]["rows"], 4);
    assert_eq!(json["road_tokens"], serde_json::json!(EXPECTED_TOKENS));
}

#[test]
fn serde_embedding_uses_the_validated_file_form() {
    let map = grid_map();
    let value = serde_json::to_value(&map).expect("serialise");
    assert_eq!(value["format"], "trainyard-lmtad-token-map");
    let back: TokenMap = serde_json::from_value(value.clone()).expect("deserialise");
    assert_eq!(back, map);
    let mut bad = value;
    bad["road_tokens"][0] = serde_json::json!(24);
    let err = serde_json::from_value::<TokenMap>(bad).expect_err("token 24 is not a cell");
    assert!(err.to_string().contains("road 0 has token 24"), "{err}");
}

/// Saves the fixture map, edits its JSON with `edit`, and returns the load error.
fn load_tampered(edit: impl FnOnce(&mut serde_json::Value)) -> (PathBuf, TokenError, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tampered.json");
    grid_map().save(&path).expect("save");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");
    let err = TokenMap::load(&path).expect_err("a tampered map must not load");
    (path, err, dir)
}

#[test]
fn tampered_map_files_are_refused_naming_the_file() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("token >= cells", Box::new(|j| j["road_tokens"][4] = 24.into()), "road 4 has token 24"),
        ("wrong vocab", Box::new(|j| j["vocab_size"] = 28.into()), "vocab_size is 28"),
        ("wrong sot", Box::new(|j| j["sot"] = 23.into()), "sot is 23"),
        ("wrong tag", Box::new(|j| j["format"] = "hoser-cache".into()), "\"hoser-cache\""),
        ("no tag", Box::new(|j| drop(j.as_object_mut().map(|o| o.remove("format")))), "format is missing"),
        ("future version", Box::new(|j| j["version"] = 2.into()), "version is 2"),
        ("rows", Box::new(|j| j["grid"]["rows"] = 5.into()), "5 x 6 cells"),
        ("cell_deg 0", Box::new(|j| j["grid"]["cell_deg"] = 0.0.into()), "cell size 0"),
        ("negative cell_deg", Box::new(|j| j["grid"]["cell_deg"] = (-0.001).into()), "cell size -0.001"),
        ("non-finite bound", Box::new(|j| j["grid"]["min_lat"] = serde_json::Value::Null), "grid.min_lat is null"),
        ("min > max", Box::new(|j| j["grid"]["max_lng"] = 116.0.into()), "min <= max"),
        ("bad crc", Box::new(|j| j["geo_crc32c"] = "xyz".into()), "not 8 hex digits"),
        ("centroid", Box::new(|j| j["centroid"] = "vertex_mean".into()), "\"vertex_mean\""),
        ("no roads", Box::new(|j| j["road_tokens"] = serde_json::json!([])), "road_tokens is empty"),
        ("negative token", Box::new(|j| j["road_tokens"][0] = (-1).into()), "expected u32 at line"),
        ("unknown field", Box::new(|j| j["extra"] = 1.into()), "unknown field `extra`"),
    ];
    for (what, edit, needle) in cases {
        let (path, err, _dir) = load_tampered(edit);
        let msg = err.to_string();
        assert!(matches!(err, TokenError::Invalid { .. }), "{what}: {err:?}");
        assert!(msg.contains(&path.display().to_string()), "{what}: the message names the file: {msg}");
        assert!(msg.contains(needle), "{what}: expected {needle:?} in: {msg}");
    }
}

#[test]
fn truncated_or_missing_map_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token_map.json");
    grid_map().save(&path).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = TokenMap::load(&path).expect_err("truncated");
    assert!(matches!(err, TokenError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");

    let missing = dir.path().join("absent.json");
    let err = TokenMap::load(&missing).expect_err("missing");
    assert!(matches!(err, TokenError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.json"), "{err}");
}

#[test]
fn check_dataset_accepts_the_same_dataset_only() {
    let dir = fixture("lmtad_grid");
    let geo = dir.join("roadmap.geo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("token_map.json");
    grid_map().save(&path).expect("save");
    let map = TokenMap::load(&path).expect("load");
    map.check_dataset("lmtad_grid", &geo).expect("same dataset, same roadmap.geo");

    // Another name: refused, naming the file and both datasets.
    let err = map.check_dataset("helsinki_test", &geo).expect_err("another name");
    let msg = err.to_string();
    assert!(matches!(err, TokenError::DatasetMismatch { .. }), "{err:?}");
    for needle in [
        path.display().to_string(),
        "`lmtad_grid`".into(),
        "`helsinki_test`".into(),
        format!("{:08x}", map.geo_crc32c()),
        "tied to the road network".into(),
    ] {
        assert!(msg.contains(&needle), "expected {needle:?} in: {msg}");
    }

    // The same name with an edited roadmap.geo (one coordinate moved): refused by its CRC.
    let copy = tmp.path().join("lmtad_grid");
    std::fs::create_dir(&copy).expect("mkdir");
    let text = std::fs::read_to_string(&geo).expect("read geo");
    let edited = text.replacen("116.3009,39.9005", "116.3008,39.9005", 1);
    assert_ne!(edited, text, "the edit must change the file");
    std::fs::write(copy.join("roadmap.geo"), edited).expect("write geo");
    let err = map.check_dataset("lmtad_grid", &copy.join("roadmap.geo")).expect_err("edited roadmap.geo");
    let msg = err.to_string();
    assert!(matches!(err, TokenError::DatasetMismatch { ref dataset, .. } if dataset == "lmtad_grid"), "{err:?}");
    assert!(msg.contains(&copy.join("roadmap.geo").display().to_string()), "{msg}");

    // A roadmap.geo that cannot be read is an error naming it.
    let err = map.check_dataset("lmtad_grid", &copy.join("absent.geo")).expect_err("missing geo");
    assert!(err.to_string().contains("absent.geo"), "{err}");

    // A map built in memory says so.
    let err = grid_map().check_dataset("other", &geo).expect_err("another name");
    assert!(err.to_string().contains("built in memory"), "{err}");
}

#[test]
fn bad_cell_sizes_and_networks_are_errors_not_panics() {
    let dir = fixture("lmtad_grid");
    let geo = dir.join("roadmap.geo");
    let net = network(&dir);
    for cell_deg in [0.0, -0.001, f64::NAN, f64::INFINITY] {
        let err = TokenMap::build("lmtad_grid", &geo, &net, cell_deg).expect_err("bad cell size");
        assert!(matches!(err, TokenError::CellSize { .. }), "{cell_deg}: {err:?}");
        assert!(err.to_string().contains(&format!("{cell_deg}")), "{err}");
    }
    // 4 · 10⁹ · 5 · 10⁹ cells do not fit in u32 tokens.
    let err = TokenMap::build("lmtad_grid", &geo, &net, 1e-12).expect_err("grid too large");
    assert!(matches!(err, TokenError::GridTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("larger cell size"), "{err}");

    let empty = RoadNetwork::new(Vec::new(), &[]).expect("empty network");
    let err = TokenMap::build("empty", &geo, &empty, DEFAULT_CELL_DEG).expect_err("no roads");
    assert!(matches!(err, TokenError::EmptyNetwork), "{err:?}");

    let nan = RoadNetwork::new(vec![road(vec![[24.9, 60.1]]), road(vec![[24.9, 60.1], [f64::NAN, 60.2]])], &[])
        .expect("network");
    let err = TokenMap::build("nan", &geo, &nan, DEFAULT_CELL_DEG).expect_err("NaN vertex");
    assert!(matches!(err, TokenError::NonFiniteVertex { road: 1, vertex: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("road 1, vertex 1"), "{err}");

    let err = Grid::bounding(&[road(vec![[24.9, 60.1]]), road(Vec::new())], DEFAULT_CELL_DEG).expect_err("no vertices");
    assert!(matches!(err, TokenError::RoadWithoutVertices { road: 1 }), "{err:?}");

    // Finite vertices on a representable grid whose centroid overflows: the segment length
    // sqrt(dx² + dy²) is infinite, so the length-weighted mean is NaN.
    let huge = RoadNetwork::new(vec![road(vec![[1e200, 0.0], [-1e200, 0.0]])], &[]).expect("network");
    let err = TokenMap::build("huge", &geo, &huge, 1e195).expect_err("centroid overflows");
    assert!(matches!(err, TokenError::NonFiniteCentroid { road: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("road 0: centroid"), "{err}");

    let err = TokenMap::build("lmtad_grid", &dir.join("absent.geo"), &net, DEFAULT_CELL_DEG).expect_err("no geo");
    assert!(err.to_string().contains("absent.geo"), "{err}");
}

#[test]
fn the_bundled_helsinki_dataset_builds_a_map() {
    let dir = fixture("libcity/helsinki_test");
    let net = network(&dir);
    let map = TokenMap::build("helsinki_test", &dir.join("roadmap.geo"), &net, DEFAULT_CELL_DEG).expect("map");
    let grid = map.grid();
    let occupancy = map.occupancy();
    println!("helsinki_test: {} x {} grid {grid:?}; {occupancy}; vocab {}", grid.rows, grid.cols, map.vocab_size());
    assert_eq!(map.num_roads(), 553);
    assert_eq!(map.num_roads(), net.num_roads());
    assert_eq!((grid.rows, grid.cols), (HELSINKI_ROWS, HELSINKI_COLS));
    assert_eq!(map.vocab_size(), HELSINKI_ROWS * HELSINKI_COLS + 3);
    assert_eq!(occupancy.occupied_cells, HELSINKI_OCCUPIED);
    assert_eq!(occupancy.max_roads_per_cell, HELSINKI_MAX_PER_CELL);
    assert_eq!(map.road_tokens().iter().map(|&t| u64::from(t)).sum::<u64>(), HELSINKI_TOKEN_SUM);
    assert_eq!(&map.road_tokens()[..10], &HELSINKI_FIRST_TOKENS);
    assert_eq!(
        (grid.min_lng, grid.max_lng, grid.min_lat, grid.max_lat),
        (26.9300631, 26.969835, 60.5200787, 60.5399365)
    );
    assert!(map.road_tokens().iter().all(|&t| (t as usize) < grid.num_cells()));
    // Every road's token is its centroid's cell.
    for (road, &[lon, lat]) in net.centroids().iter().enumerate() {
        assert_eq!(map.token(road as u32), Some(grid.cell(lat, lon)), "road {road}");
    }
    map.check_dataset("helsinki_test", &dir.join("roadmap.geo")).expect("same dataset");
    let other = fixture("lmtad_grid").join("roadmap.geo");
    assert!(map.check_dataset("helsinki_test", &other).is_err(), "another roadmap.geo under the same name");
}

// Independent figures: the same grid and LineString centroid written in plain Python (float
// arithmetic, `int(span / 0.001) + 1`, floor and clamp) over the fixture's roadmap.geo gave bounds
// lng 26.9300631 .. 26.969835, lat 60.5200787 .. 60.5399365, a 20 x 40 grid, 224 occupied cells
// (2.47 roads per occupied cell, at most 8), token sum 225366 and first tokens
// 252, 252, 408, 408, 604, 604, 97, 136, 135, 58. (With the vertex mean instead, 66 of the 553
// roads land in another cell.)
const HELSINKI_ROWS: usize = 20;
const HELSINKI_COLS: usize = 40;
const HELSINKI_OCCUPIED: usize = 224;
const HELSINKI_MAX_PER_CELL: usize = 8;
const HELSINKI_TOKEN_SUM: u64 = 225_366;
const HELSINKI_FIRST_TOKENS: [u32; 10] = [252, 252, 408, 408, 604, 604, 97, 136, 135, 58];
