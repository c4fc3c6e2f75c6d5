//! Stage-2 optical estimates (`opt_v2`) that stage 3 reads next to each tile.
//!
//! An estimate is a separate NPZ with **the same file name as its tile** in a stage-2 directory
//! (`tiles/scene_r0_c0.npz` → `DIR/scene_r0_c0.npz`), holding one array `opt_v2` of shape
//! `(4, H, W)`: bands B2, B3, B4, B8 in the tile's S2 units (reflectance). `stage1 predict`
//! writes them from stage 1's predictions; a stage-2 model can write the same format.
//!
//! Reading accepts what `np.savez` / `np.savez_compressed` write (stored or deflated entries,
//! NPY versions 1–3, little-endian `<f4` or `<f2` widened to `f32`, C order) and never panics on
//! a damaged file: every error names the file and says what was expected. Writing produces one
//! deflated `<f4` entry with a fixed timestamp, written atomically (temporary file in the same
//! directory, fsync, rename).

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::npz::{Dtype, decode_values, encode_npy_shape, npy_dtype, npy_header_end, parse_npy_header, write_atomic};
use crate::tile::TilingError;

/// The array key of a stage-2 estimate inside its NPZ.
pub const OPT_V2_KEY: &str = "opt_v2";

/// Bands of an estimate: B2, B3, B4, B8 (the tile's S2 bands).
pub const OPT_V2_BANDS: usize = 4;

/// One stage-2 estimate: `opt_v2` as read from its NPZ.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// `[4, height, width]` row-major (C order), reflectance.
    pub data: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Where the estimate of `tile_path` lives under `stage2_dir`: `stage2_dir/<tile file name>`.
pub fn estimate_path(stage2_dir: &Path, tile_path: &Path) -> PathBuf {
    match tile_path.file_name() {
        Some(name) => stage2_dir.join(name),
        // A tile path always names a file; keep the directory rather than panic on `..` or `/`.
        None => stage2_dir.to_path_buf(),
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> TilingError {
    TilingError::Format { path: path.to_path_buf(), message: message.into() }
}

fn content_err(path: &Path, message: impl Into<String>) -> TilingError {
    TilingError::Content { path: path.to_path_buf(), message: message.into() }
}

/// Reads the estimate at `path` (see [`estimate_path`]).
///
/// Errors (each names the file and what was expected): a missing file, a file that is not a
/// readable zip (truncated, garbage), no `opt_v2` array (the keys found are listed), an array
/// that is not `(4, H, W)`, not `<f4`/`<f2`, not C order, or whose data is shorter or longer than
/// its shape, and compressed data that does not decompress or fails its CRC.
pub fn read_estimate(path: &Path) -> Result<Estimate, TilingError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tile = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return Err(content_err(
                path,
                format!(
                    "no stage-2 estimate for tile {tile}: expected {} with array {OPT_V2_KEY} ({OPT_V2_BANDS}, H, W); \
                     write them with `stage1 predict` or set data.stage2_proxy",
                    path.display()
                ),
            ));
        }
        Err(e) => return Err(TilingError::Io { path: path.to_path_buf(), source: e }),
    };
    let mut archive = ZipArchive::new(Cursor::new(bytes.as_slice())).map_err(|e| {
        format_err(path, format!("not a readable NPZ (zip) archive: {e}; expected array {OPT_V2_KEY} (4, H, W)"))
    })?;
    let name = format!("{OPT_V2_KEY}.npy");
    let keys: Vec<String> =
        archive.file_names().map(|n| format!("`{}`", n.strip_suffix(".npy").unwrap_or(n))).collect();
    let mut entry = match archive.by_name(&name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            let found = if keys.is_empty() { "none".to_string() } else { keys.join(", ") };
            return Err(content_err(
                path,
                format!("missing key `{OPT_V2_KEY}` (no `{name}` entry in the archive); keys found: {found}"),
            ));
        }
        Err(e) => return Err(format_err(path, format!("cannot open `{name}`: {e}"))),
    };
    let declared = entry.size();
    let bad = |e: std::io::Error| format_err(path, format!("cannot decompress `{name}`: {e}"));
    let key_err = |m: String| format_err(path, format!("`{OPT_V2_KEY}`: {m}"));
    // The header first (its length is in the first 10–12 bytes), so a bad shape or dtype is
    // reported before any data is read.
    let mut head = Vec::with_capacity(256);
    (&mut entry).take(12).read_to_end(&mut head).map_err(bad)?;
    let end = npy_header_end(&head).map_err(key_err)?;
    (&mut entry).take(end.saturating_sub(head.len()) as u64).read_to_end(&mut head).map_err(bad)?;
    let header = parse_npy_header(&head).map_err(key_err)?;
    let (item, _) = npy_dtype(&header).map_err(key_err)?;
    let (height, width) = match header.shape.as_slice() {
        &[OPT_V2_BANDS, h, w] => (h, w),
        other => {
            return Err(content_err(
                path,
                format!(
                    "`{OPT_V2_KEY}` has shape {} but expected ({OPT_V2_BANDS}, H, W): bands B2, B3, B4, B8",
                    python_tuple(other)
                ),
            ));
        }
    };
    let needed = OPT_V2_BANDS.checked_mul(height).and_then(|n| n.checked_mul(width)).and_then(|n| n.checked_mul(item));
    let Some(needed) = needed else {
        return Err(key_err(format!("shape (4, {height}, {width}) overflows")));
    };
    if header.data_offset.checked_add(needed).map(|n| n as u64) != Some(declared) {
        return Err(key_err(format!(
            "shape (4, {height}, {width}) needs {needed} data bytes, the `{name}` entry holds {}",
            declared.saturating_sub(header.data_offset as u64)
        )));
    }
    // Grows with the bytes that actually arrive: a lying entry size cannot force a huge allocation.
    let mut data = Vec::with_capacity(needed.min(1 << 28));
    (&mut entry).take(needed as u64).read_to_end(&mut data).map_err(bad)?;
    if data.len() != needed {
        return Err(key_err(format!("truncated data: {} of {needed} bytes", data.len())));
    }
    // Reading to the end lets the zip reader check the entry's CRC.
    std::io::copy(&mut entry, &mut std::io::sink()).map_err(bad)?;
    Ok(Estimate { data: decode_values(&data, item), height, width })
}

/// `(a, b, c)` / `(a,)` / `()` as numpy prints a shape.
fn python_tuple(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// Writes `data` (`[4, height, width]` row-major, reflectance) as the estimate at `path`: one
/// `<f4` array `opt_v2` of shape `(4, height, width)` in a deflated NPZ, written atomically.
///
/// Errors: `data` does not hold `4 · height · width` values, an empty size, or the write fails
/// (each names `path`).
pub fn write_estimate(path: &Path, data: &[f32], height: usize, width: usize) -> Result<(), TilingError> {
    let expected = OPT_V2_BANDS.checked_mul(height).and_then(|n| n.checked_mul(width));
    if height == 0 || width == 0 || expected != Some(data.len()) {
        return Err(content_err(
            path,
            format!("an estimate of {height}x{width} needs {OPT_V2_BANDS}·{height}·{width} values, got {}", data.len()),
        ));
    }
    let zip_err = |e: zip::result::ZipError| format_err(path, format!("cannot encode NPZ: {e}"));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let mut npy = Vec::with_capacity(data.len() * 4 + 128);
    encode_npy_shape(&mut npy, data, &[OPT_V2_BANDS, height, width], Dtype::F32);
    let mut writer = ZipWriter::new(Cursor::new(Vec::with_capacity(npy.len() / 2 + 1024)));
    writer.start_file(format!("{OPT_V2_KEY}.npy"), options).map_err(zip_err)?;
    writer.write_all(&npy).map_err(|e| TilingError::Io { path: path.to_path_buf(), source: e })?;
    let bytes = writer.finish().map_err(zip_err)?.into_inner();
    write_atomic(path, &bytes)
}
