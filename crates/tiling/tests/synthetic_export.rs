//! Synthetic scenes through `trainyard-tile --synthetic`, their GeoTIFF export
//! (`--write-scene-tiffs`, `SyntheticScene::write_geotiffs`) and the GeoTIFF writer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tiling::geotiff::{WriteOptions, read_geotiff, read_info, write_geotiff};
use tiling::npz;
use tiling::synthetic::{FAKE_EPSG, SyntheticConfig, SyntheticScene, fake_geo};
use tiling::tiler::Manifest;
use tiling::{GeoInfo, Raster, RasterDtype, Split};

fn tile_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainyard-tile")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn files_with(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect()
}

#[test]
fn cli_synthetic_tiles_are_counted_labelled_and_split_by_scene() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiles");
    let o = tile_cli(&["--synthetic", "3", "--synthetic-size", "256", "256", "--size", "128", "--out", s(&out)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("from 3 synthetic scenes"), "{stderr}");

    // 3 scenes × (256 / 128)² windows, no clouds and every pixel valid: 12 tiles.
    let m = Manifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(m.tiles.len(), 12);
    assert!(m.skipped.is_empty());
    let npz_files = files_with(&out, ".npz");
    assert_eq!(npz_files.len(), 12);
    let sidecars: BTreeSet<String> =
        files_with(&out, ".json").into_iter().filter(|n| !n.starts_with("manifest")).collect();
    assert_eq!(sidecars.len(), 12);
    for name in &sidecars {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap();
        assert_eq!(json["synthetic"], serde_json::Value::Bool(true), "{name}");
        let sources = json["source_files"].as_array().unwrap();
        assert!(
            !sources.is_empty() && sources.iter().all(|f| f.as_str().unwrap().starts_with("synthetic://")),
            "{name}"
        );
        assert_eq!(json["crs"], format!("EPSG:{FAKE_EPSG}"), "{name}");
    }
    for t in &m.tiles {
        assert!(t.scene.starts_with("synthetic-seed42-scene"), "{}", t.scene);
        assert!(t.source_files.iter().all(|f| f.starts_with("synthetic://")), "{:?}", t.source_files);
        let tile = npz::read_tile(&out.join(&t.npz)).unwrap();
        assert!(tile.sidecar.synthetic);
        assert_eq!(tile.sidecar.split, Some(t.split));
    }

    // Splits never share a scene: each scene's tiles have one split, and the per-split scene lists
    // are disjoint and cover the three scenes.
    let mut split_of: BTreeMap<&str, BTreeSet<Split>> = BTreeMap::new();
    for t in &m.tiles {
        split_of.entry(&t.scene).or_default().insert(t.split);
    }
    assert_eq!(split_of.len(), 3);
    assert!(split_of.values().all(|s| s.len() == 1), "{split_of:?}");
    let per = &m.summary.scenes_per_split;
    let (train, val, test): (BTreeSet<_>, BTreeSet<_>, BTreeSet<_>) =
        (per.train.iter().collect(), per.val.iter().collect(), per.test.iter().collect());
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
    assert_eq!(train.len() + val.len() + test.len(), 3);
    for r in &m.scenes {
        assert_eq!(r.split, *split_of[r.scene.as_str()].iter().next().unwrap());
    }
}

#[test]
fn cli_exported_geotiffs_tile_to_the_same_npz_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (direct, tifs, via_files) = (dir.path().join("direct"), dir.path().join("tifs"), dir.path().join("files"));
    let common = ["--synthetic-size", "200", "150", "--synthetic-seed", "7", "--synthetic-clouds", "2", "--size", "64"];
    let mut args = vec!["--synthetic", "2", "--out", s(&direct), "--write-scene-tiffs", s(&tifs), "--overlap", "8"];
    args.extend(common);
    let o = tile_cli(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The scene list names every file, relative to itself; clouds give a mask per scene.
    let list = std::fs::read_to_string(tifs.join("scenes.csv")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "scene_id,s1,s2,cloud_mask");
    assert_eq!(
        lines[1],
        "synthetic-seed7-scene0,synthetic-seed7-scene0_s1.tif,synthetic-seed7-scene0_s2.tif,\
         synthetic-seed7-scene0_cloud_mask.tif"
    );
    assert_eq!(lines.len(), 3);
    assert_eq!(files_with(&tifs, ".tif").len(), 6);

    let o =
        tile_cli(&["--scenes", s(&tifs.join("scenes.csv")), "--out", s(&via_files), "--size", "64", "--overlap", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        Manifest::read(&direct.join("manifest.json")).unwrap(),
        Manifest::read(&via_files.join("manifest.json")).unwrap(),
    );
    assert!(!a.tiles.is_empty());
    assert_eq!(a.tiles.len(), b.tiles.len());
    assert_eq!(a.skipped.len(), b.skipped.len());
    for (x, y) in a.tiles.iter().zip(&b.tiles) {
        assert_eq!((&x.tile_id, x.split, x.window, x.geotransform), (&y.tile_id, y.split, y.window, y.geotransform));
        assert_eq!(x.checksum, y.checksum, "{}: same planes, same NPZ bytes", x.tile_id);
        assert_eq!(std::fs::read(direct.join(&x.npz)).unwrap(), std::fs::read(via_files.join(&y.npz)).unwrap());
    }
}

#[test]
fn cli_export_only_and_bad_synthetic_options() {
    let dir = tempfile::tempdir().unwrap();
    let tifs = dir.path().join("tifs");
    let o = tile_cli(&["--synthetic", "1", "--synthetic-size", "40", "30", "--write-scene-tiffs", s(&tifs)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("synthetic"), "{stderr}");
    assert_eq!(files_with(&tifs, ".tif").len(), 2, "no clouds, no mask");
    assert_eq!(read_info(&tifs.join("synthetic-seed42-scene0_s1.tif")).unwrap().width, 40);
    assert!(!files_with(&tifs, ".csv").is_empty());

    let out = dir.path().join("out");
    for (args, needle) in [
        (vec!["--synthetic", "0", "--out", s(&out)], "at least one scene"),
        (vec!["--synthetic", "1", "--synthetic-size", "0", "8", "--out", s(&out)], "at least one scene"),
        (vec!["--synthetic", "1", "--s1", "a.tif", "--out", s(&out)], "cannot be used with"),
        (vec!["--synthetic", "1"], "--out"),
        (vec!["--synthetic-size", "8", "8", "--scenes", "x.csv", "--out", s(&out)], "cannot be used with"),
        (
            vec!["--write-scene-tiffs", s(&out), "--s1", "a.tif", "--s2", "b.tif", "--scene-id", "x"],
            "cannot be used with",
        ),
    ] {
        let o = tile_cli(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: `{needle}` not in {stderr}");
    }
}

#[test]
fn exported_scene_round_trips_exactly_through_geotiff() {
    // Odd sizes: a partial last strip; clouds: a mask file and nodata in S2.
    let cfg = SyntheticConfig { cloud_count: 2, ..SyntheticConfig::new(97, 61, 3) };
    let scene = SyntheticScene::generate(&cfg, 5);
    let dir = tempfile::tempdir().unwrap();
    let files = scene.write_geotiffs(&dir.path().join("nested")).unwrap();
    assert_eq!(files.id, scene.id);
    let geo = fake_geo(97, 61, 5);

    let s1 = read_geotiff(&files.s1).unwrap();
    assert_eq!((s1.width, s1.height, s1.bands, s1.dtype, s1.nodata), (97, 61, 2, RasterDtype::F32, None));
    assert_eq!(bits(&s1.data), bits(&scene.s1.data));
    assert_eq!(s1.geo.as_ref(), Some(&geo));

    let s2 = read_geotiff(&files.s2).unwrap();
    assert_eq!((s2.width, s2.height, s2.bands, s2.dtype, s2.nodata), (97, 61, 4, RasterDtype::U16, Some(0.0)));
    assert_eq!(bits(&s2.data), bits(&scene.s2.data));
    assert_eq!(s2.geo.as_ref(), Some(&geo));

    let mask = read_geotiff(files.cloud_mask.as_ref().expect("clouds give a mask")).unwrap();
    assert_eq!((mask.bands, mask.dtype), (1, RasterDtype::U8));
    let expected: Vec<f32> = scene.s2.data[..97 * 61].iter().map(|&v| f32::from(v == 0.0)).collect();
    assert!(expected.contains(&1.0));
    assert_eq!(bits(&mask.data), bits(&expected));

    // The files say they are synthetic.
    let bytes = std::fs::read(&files.s1).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("SYNTHETIC scene rendered by trainyard tiling::synthetic"));
    assert!(text.contains("<Item name=\"SYNTHETIC\">true</Item>"));
    assert!(text.contains("synthetic://seed-3/scene-5/s1"));
}

fn raster(dtype: RasterDtype, bands: usize, w: usize, h: usize, data: Vec<f32>, geo: Option<GeoInfo>) -> Raster {
    Raster { source: PathBuf::from("mem"), width: w, height: h, bands, dtype, nodata: None, geo, data }
}

#[test]
fn geotiff_writer_round_trips_every_type_and_transform() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (13, 7);
    let n = w * h;
    let rotated = GeoInfo { geotransform: [1000.0, 2.0, 0.5, 5000.0, 0.25, -3.0], epsg: Some(32611), crs: None };
    let geographic = GeoInfo { geotransform: [10.0, 0.01, 0.0, 50.0, 0.0, -0.01], epsg: Some(4326), crs: None };
    let cases = [
        raster(RasterDtype::U8, 3, w, h, (0..3 * n).map(|i| (i % 256) as f32).collect(), None),
        raster(RasterDtype::I16, 1, w, h, (0..n).map(|i| (i as f32 - 40.0) * 317.0).collect(), Some(rotated)),
        raster(RasterDtype::U16, 2, w, h, (0..2 * n).map(|i| (i * 331 % 65_536) as f32).collect(), Some(geographic)),
        raster(
            RasterDtype::F32,
            2,
            w,
            h,
            (0..2 * n).map(|i| if i % 11 == 0 { f32::NAN } else { i as f32 * 1.0e-3 - 0.07 }).collect(),
            None,
        ),
    ];
    for (k, r) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{k}.tif"));
        let mut r = r.clone();
        r.nodata = (k == 2).then_some(7.0);
        write_geotiff(&path, &r, &WriteOptions::default()).unwrap();
        let back = read_geotiff(&path).unwrap();
        assert_eq!((back.width, back.height, back.bands, back.dtype, back.nodata), (w, h, r.bands, r.dtype, r.nodata));
        let nan_bits =
            |v: &[f32]| v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>();
        assert_eq!(nan_bits(&back.data), nan_bits(&r.data), "case {k}");
        match &r.geo {
            None => assert_eq!(back.geo, None),
            Some(g) => {
                let b = back.geo.unwrap();
                assert_eq!((b.geotransform, b.epsg), (g.geotransform, g.epsg), "case {k}");
            }
        }
    }

    // Values the sample type cannot hold, float16, and band-name mismatches are errors naming the file.
    let path = dir.path().join("bad.tif");
    let err = |r: &Raster, o: &WriteOptions| write_geotiff(&path, r, o).unwrap_err().to_string();
    let e = err(&raster(RasterDtype::U16, 1, 2, 1, vec![1.0, 1.5], None), &WriteOptions::default());
    assert!(e.contains("bad.tif") && e.contains("1.5") && e.contains("uint16"), "{e}");
    let e = err(&raster(RasterDtype::U8, 1, 2, 1, vec![1.0, 256.0], None), &WriteOptions::default());
    assert!(e.contains("256") && e.contains("uint8"), "{e}");
    let e = err(&raster(RasterDtype::F16, 1, 1, 1, vec![1.0], None), &WriteOptions::default());
    assert!(e.contains("float16"), "{e}");
    let named = WriteOptions { band_names: vec!["a".into(), "b".into()], ..WriteOptions::default() };
    let e = err(&raster(RasterDtype::F32, 1, 1, 1, vec![1.0], None), &named);
    assert!(e.contains("2 band names for 1 bands"), "{e}");
    assert!(!path.exists());
}
