//! Stage-2 estimates (`opt_v2`) through the public API: a written estimate reads back exactly,
//! numpy's variants read (stored entries, float16), and every damaged or foreign file is an
//! error naming the file and what was expected, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use tiling::stage2::{Estimate, OPT_V2_KEY, estimate_path, read_estimate, write_estimate};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// NPY v1.0 bytes with the given header dict and raw data.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    let header = format!("{dict}\n");
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn header(descr: &str, fortran: bool, shape: &str) -> String {
    let f = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}")
}

/// An NPZ at `path` with the given `(entry name, bytes)` members.
fn npz(path: &Path, entries: &[(&str, Vec<u8>)], method: CompressionMethod) {
    let mut w = ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        w.start_file(*name, SimpleFileOptions::default().compression_method(method)).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.001 - 0.1).collect()
}

fn error_of(path: &Path) -> String {
    match read_estimate(path) {
        Ok(e) => panic!("{} read as an estimate of {}x{}", path.display(), e.height, e.width),
        Err(e) => e.to_string(),
    }
}

fn assert_names(message: &str, path: &Path, parts: &[&str]) {
    assert!(message.contains(&path.display().to_string()), "message does not name {}: {message}", path.display());
    for p in parts {
        assert!(message.contains(p), "message lacks {p:?}: {message}");
    }
}

#[test]
fn estimate_path_keeps_the_tile_file_name() {
    let p = estimate_path(Path::new("/runs/opt_v2"), Path::new("tiles/scene_r0_c0.npz"));
    assert_eq!(p, PathBuf::from("/runs/opt_v2/scene_r0_c0.npz"));
}

#[test]
fn a_written_estimate_reads_back_exactly_and_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scene_r0_c0.npz");
    let mut data = ramp(4 * 3 * 5);
    data[7] = f32::NAN;
    write_estimate(&path, &data, 3, 5).unwrap();
    let e = read_estimate(&path).unwrap();
    assert_eq!((e.height, e.width), (3, 5));
    assert_eq!(e.data.len(), data.len());
    for (a, b) in e.data.iter().zip(&data) {
        assert!(a.to_bits() == b.to_bits(), "{a} != {b}");
    }
    // Same input, same bytes; overwriting replaces the file and leaves no temporary behind.
    let first = std::fs::read(&path).unwrap();
    write_estimate(&path, &data, 3, 5).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), first);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["scene_r0_c0.npz"]);
    // The one member is `opt_v2.npy`, `<f4`, shape (4, 3, 5), as numpy expects.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(zip.file_names().collect::<Vec<_>>(), [format!("{OPT_V2_KEY}.npy")]);
    let mut entry = zip.by_index(0).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes[10..128]);
    assert!(text.contains("'descr': '<f4'") && text.contains("'shape': (4, 3, 5)"), "{text}");
    assert_eq!((bytes.len() - 128), 4 * 4 * 3 * 5, "data starts at 128 (64-byte aligned header)");
}

#[test]
fn writing_the_wrong_number_of_values_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let e = write_estimate(&path, &ramp(10), 2, 2).unwrap_err().to_string();
    assert_names(&e, &path, &["2x2", "got 10"]);
    let e = write_estimate(&path, &[], 0, 0).unwrap_err().to_string();
    assert_names(&e, &path, &["0x0"]);
    assert!(!path.exists(), "nothing written");
}

#[test]
fn stored_entries_and_float16_read_as_numpy_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let values = [0.5f32, -1.0, 0.25, 2.0, 0.0, 1.5, -0.125, 3.0];
    let data = f32_bytes(&values);
    npz(
        &path,
        &[(&format!("{OPT_V2_KEY}.npy"), npy(&header("<f4", false, "(4, 1, 2)"), &data))],
        CompressionMethod::Stored,
    );
    assert_eq!(read_estimate(&path).unwrap(), Estimate { data: values.to_vec(), height: 1, width: 2 });

    let half: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    npz(
        &path,
        &[
            ("other.npy", npy(&header("<f4", false, "(1,)"), &[0; 4])),
            ("opt_v2.npy", npy(&header("<f2", false, "(4, 2, 1)"), &half)),
        ],
        CompressionMethod::Deflated,
    );
    let e = read_estimate(&path).unwrap();
    assert_eq!((e.height, e.width, e.data), (2, 1, values.to_vec()), "float16 widens exactly");
}

#[test]
fn a_missing_file_says_which_tile_and_how_to_make_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = estimate_path(dir.path(), Path::new("tiles/scene_r1_c2.npz"));
    let e = error_of(&path);
    assert_names(&e, &path, &["no stage-2 estimate for tile scene_r1_c2.npz", "opt_v2 (4, H, W)", "stage1 predict"]);
}

#[test]
fn a_missing_key_lists_the_keys_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let plane = npy(&header("<f4", false, "(2, 2)"), &[0; 16]);
    npz(&path, &[("s2_b2.npy", plane.clone()), ("s2_b3.npy", plane)], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["missing key `opt_v2`", "keys found: `s2_b2`, `s2_b3`"]);
    npz(&path, &[], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["missing key `opt_v2`", "keys found: none"]);
}

#[test]
fn wrong_shapes_dtypes_and_orders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    let cases: [(String, usize, &[&str]); 7] = [
        (header("<f4", false, "(3, 2, 2)"), 48, &["shape (3, 2, 2)", "expected (4, H, W)"]),
        (header("<f4", false, "(2, 2)"), 16, &["shape (2, 2)", "expected (4, H, W)"]),
        (header("<f4", false, "(16,)"), 64, &["shape (16,)"]),
        (header("<f4", false, "(1, 4, 2, 2)"), 64, &["shape (1, 4, 2, 2)"]),
        (header("<f8", false, "(4, 2, 2)"), 128, &["dtype `<f8`", "`<f4`"]),
        (header(">f4", false, "(4, 2, 2)"), 64, &["dtype `>f4`", "little-endian"]),
        (header("<f4", true, "(4, 2, 2)"), 64, &["fortran_order", "C order"]),
    ];
    for (dict, len, parts) in cases {
        npz(&path, &[("opt_v2.npy", npy(&dict, &vec![0; len]))], CompressionMethod::Deflated);
        assert_names(&error_of(&path), &path, parts);
    }
}

#[test]
fn data_that_does_not_match_the_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npz");
    npz(&path, &[("opt_v2.npy", npy(&header("<f4", false, "(4, 2, 2)"), &[0; 60]))], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["needs 64 data bytes", "holds 60"]);
    npz(&path, &[("opt_v2.npy", npy(&header("<f4", false, "(4, 2, 2)"), &[0; 68]))], CompressionMethod::Stored);
    assert_names(&error_of(&path), &path, &["needs 64 data bytes", "holds 68"]);
    // A shape whose byte count overflows, and a header cut short.
    let huge = format!("(4, {}, {})", usize::MAX / 2, 3);
    npz(&path, &[("opt_v2.npy", npy(&header("<f4", false, &huge), &[0; 8]))], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["overflows"]);
    npz(&path, &[("opt_v2.npy", b"\x93NUMPY\x01\x00\xff\x00{'descr'".to_vec())], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["`opt_v2`"]);
    npz(&path, &[("opt_v2.npy", b"not an array".to_vec())], CompressionMethod::Deflated);
    assert_names(&error_of(&path), &path, &["bad magic"]);
}

#[test]
fn truncated_garbage_and_corrupt_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.npz");
    write_estimate(&good, &ramp(4 * 16 * 16), 16, 16).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let path = dir.path().join("t.npz");

    std::fs::write(&path, b"this is not a zip file at all").unwrap();
    assert_names(&error_of(&path), &path, &["not a readable NPZ (zip) archive", "opt_v2"]);
    std::fs::write(&path, []).unwrap();
    assert_names(&error_of(&path), &path, &["not a readable NPZ"]);
    for cut in [bytes.len() / 2, bytes.len() - 10, 30] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert_names(&error_of(&path), &path, &["not a readable NPZ"]);
    }
    // Damage inside the compressed data: a decompression or CRC error, never a value read.
    for at in [60, bytes.len() / 3, bytes.len() / 2] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        assert!(read_estimate(&path).is_err(), "a flipped byte at {at} went unnoticed");
    }
    // A directory where the file should be.
    let sub = dir.path().join("sub.npz");
    std::fs::create_dir(&sub).unwrap();
    assert!(error_of(&sub).contains("sub.npz"));
}

/// Files numpy 2.4 wrote: `np.savez(p, opt_v2=x.astype(np.float16))` (stored entries) and
/// `np.savez_compressed(p, opt_v2=x, month=np.int64(3))`, with `x = (arange(60, dtype=float32)
/// · 0.001 − 0.1).reshape(4, 3, 5)`; the extra key is ignored.
#[test]
fn numpy_written_estimates_read() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let x: Vec<f32> = (0..60).map(|i| i as f32 * 0.001f32 - 0.1f32).collect();
    let e = read_estimate(&fixtures.join("numpy_opt_v2_compressed.npz")).unwrap();
    assert_eq!((e.height, e.width), (3, 5));
    assert_eq!(e.data, x);
    let e = read_estimate(&fixtures.join("numpy_opt_v2_f16.npz")).unwrap();
    assert_eq!((e.height, e.width), (3, 5));
    for (a, b) in e.data.iter().zip(&x) {
        assert_eq!(*a, half::f16::from_f32(*b).to_f32());
    }
}
