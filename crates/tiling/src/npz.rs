//! Axion-style NPZ tiles: a zip of `.npy` arrays, one `(H, W)` plane per key of [`S1_KEYS`]
//! and [`S2_KEYS`], with a JSON [`Sidecar`] `<id>.json` next to `<id>.npz`.
//!
//! Reading accepts what `np.savez` and `np.savez_compressed` write: stored or deflated entries,
//! NPY format versions 1–3, little-endian `<f4` or `<f2` in C order. Float16 planes are widened
//! to `f32` exactly. Keys other than the six planes (`month`, `inc_angle`, …) are ignored.
//!
//! Writing produces deflated entries (like `np.savez_compressed`) with a fixed 1980-01-01 entry
//! timestamp, so the same tile always gives the same bytes and the same checksum. Files are
//! written atomically: a temporary file in the target directory, fsync, rename.

use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::tile::{S1_KEYS, S2_KEYS, Sidecar, Tile, TilingError};

/// Sample type of the planes written to an NPZ tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// `<f4`, exact.
    #[default]
    F32,
    /// `<f2`: values are rounded to the nearest float16 (NaN stays NaN); half the size.
    F16,
}

impl Dtype {
    /// NPY `descr` string.
    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
        }
    }
}

/// A 2-D `.npy` array read into `f32`.
struct Plane {
    shape: (usize, usize),
    data: Vec<f32>,
}

fn format_err(path: &Path, message: impl Into<String>) -> TilingError {
    TilingError::Format { path: path.to_path_buf(), message: message.into() }
}

fn content_err(path: &Path, message: impl Into<String>) -> TilingError {
    TilingError::Content { path: path.to_path_buf(), message: message.into() }
}

fn io_err(path: &Path, source: std::io::Error) -> TilingError {
    TilingError::Io { path: path.to_path_buf(), source }
}

/// The sidecar path of a tile: `<stem>.json` next to `<stem>.npz`.
pub fn sidecar_path(npz_path: &Path) -> PathBuf {
    npz_path.with_extension("json")
}

/// Reads a tile: its six planes from `npz_path` and its sidecar `<stem>.json`.
///
/// Errors (each names the file): missing or malformed sidecar, a file whose CRC-32C differs from
/// the sidecar's `checksum` (when it has one), a file that is not a zip, a missing key (named),
/// an array that is not 2-D `<f4`/`<f2` in C order, planes of different shapes, a sidecar whose
/// `height`/`width` disagree with the planes, and a tile with no pixel that is finite in all six
/// planes.
pub fn read_tile(npz_path: &Path) -> Result<Tile, TilingError> {
    read_tile_verified(npz_path, None)
}

/// [`read_tile`], also checking the file's CRC-32C against `expected` (e.g. the manifest's
/// `checksum` for the tile): a mismatch is an error naming the tile and both checksums.
pub fn read_tile_verified(npz_path: &Path, expected: Option<&str>) -> Result<Tile, TilingError> {
    let json_path = sidecar_path(npz_path);
    let sidecar = read_sidecar(&json_path)?;

    let bytes = std::fs::read(npz_path).map_err(|e| io_err(npz_path, e))?;
    let actual = checksum_hex(&bytes);
    let claims = [(expected, "the manifest"), (sidecar.checksum.as_deref(), "its sidecar")];
    for (want, whose) in claims {
        if let Some(want) = want
            && !want.eq_ignore_ascii_case(&actual)
        {
            return Err(content_err(
                npz_path,
                format!(
                    "checksum mismatch for tile `{}`: the file's CRC-32C is {actual} but {whose} says {want} \
                     (the file changed or was damaged after it was written)",
                    sidecar.tile_id
                ),
            ));
        }
    }
    let mut archive = ZipArchive::new(Cursor::new(bytes.as_slice()))
        .map_err(|e| format_err(npz_path, format!("not a readable NPZ (zip) archive: {e}")))?;

    let mut planes = Vec::with_capacity(S1_KEYS.len() + S2_KEYS.len());
    for key in S1_KEYS.iter().chain(S2_KEYS.iter()) {
        planes.push((*key, read_plane(&mut archive, npz_path, key)?));
    }

    let (first_key, first) = (&planes[0].0, &planes[0].1);
    let shape = first.shape;
    for (key, plane) in &planes[1..] {
        if plane.shape != shape {
            return Err(shape_mismatch(npz_path, key, plane.shape, first_key, shape));
        }
    }
    let (height, width) = shape;
    check_sidecar_shape(npz_path, &json_path, &sidecar, shape)?;

    let n = height * width;
    let valid = (0..n).any(|i| planes.iter().all(|(_, p)| p.data[i].is_finite()));
    if !valid {
        return Err(content_err(
            npz_path,
            "all-NaN tile: no pixel is finite in every band (s1_vv, s1_vh, s2_b2, s2_b3, s2_b4, s2_b8)",
        ));
    }

    let mut s1 = Vec::with_capacity(2 * n);
    let mut s2 = Vec::with_capacity(4 * n);
    for (i, (_, plane)) in planes.into_iter().enumerate() {
        if i < S1_KEYS.len() {
            s1.extend_from_slice(&plane.data);
        } else {
            s2.extend_from_slice(&plane.data);
        }
    }
    Ok(Tile { id: sidecar.tile_id.clone(), height, width, s1, s2, sidecar })
}

fn shape_mismatch(
    npz_path: &Path,
    key: &str,
    shape: (usize, usize),
    first_key: &str,
    first: (usize, usize),
) -> TilingError {
    content_err(
        npz_path,
        format!(
            "`{key}` has shape ({}, {}) but `{first_key}` has ({}, {}); all S1 and S2 planes must match",
            shape.0, shape.1, first.0, first.1
        ),
    )
}

fn check_sidecar_shape(
    npz_path: &Path,
    json_path: &Path,
    sidecar: &Sidecar,
    (height, width): (usize, usize),
) -> Result<(), TilingError> {
    if (sidecar.height, sidecar.width) != (height, width) {
        return Err(content_err(
            npz_path,
            format!(
                "planes are {height}x{width} but the sidecar {} says {}x{}",
                json_path.display(),
                sidecar.height,
                sidecar.width
            ),
        ));
    }
    Ok(())
}

/// What a tile's headers say, read by [`read_header`] without decoding its planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileHeader {
    /// Tile id (from the sidecar).
    pub tile_id: String,
    /// Rows of every plane.
    pub height: usize,
    /// Columns of every plane.
    pub width: usize,
    /// Sample type of the planes (the first plane's; the others may differ between `<f4` and `<f2`).
    pub dtype: Dtype,
}

/// Checks a tile cheaply, without decompressing its planes: the sidecar, the zip directory and
/// the six NPY headers (every key present, 2-D `<f4`/`<f2` in C order, all planes of one shape
/// that the sidecar agrees with, each entry exactly as long as its shape needs).
///
/// What it cannot see — damaged compressed data, a changed checksum, an all-NaN tile — is
/// reported by [`read_tile`] when the tile is read. Errors name the file, as `read_tile`'s do.
pub fn read_header(npz_path: &Path) -> Result<TileHeader, TilingError> {
    let json_path = sidecar_path(npz_path);
    let sidecar = read_sidecar(&json_path)?;
    let file = File::open(npz_path).map_err(|e| io_err(npz_path, e))?;
    let mut archive = ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(npz_path, format!("not a readable NPZ (zip) archive: {e}")))?;
    let mut first: Option<(&str, (usize, usize), Dtype)> = None;
    for key in S1_KEYS.iter().chain(S2_KEYS.iter()) {
        let name = format!("{key}.npy");
        let mut entry = open_entry(&mut archive, npz_path, key)?;
        let size = entry.size();
        // An NPY header is at most 12 bytes of preamble plus a u32 length; numpy writes 128 or so.
        let mut head = Vec::with_capacity(256);
        let bad = |e: std::io::Error| format_err(npz_path, format!("cannot decompress `{name}`: {e}"));
        (&mut entry).take(12).read_to_end(&mut head).map_err(bad)?;
        let header_len = npy_header_end(&head).map_err(|m| format_err(npz_path, format!("`{key}`: {m}")))?;
        (&mut entry).take(header_len.saturating_sub(head.len()) as u64).read_to_end(&mut head).map_err(bad)?;
        let header = parse_npy_header(&head).map_err(|m| format_err(npz_path, format!("`{key}`: {m}")))?;
        let (item, dtype, shape) =
            check_npy_header(&header).map_err(|m| format_err(npz_path, format!("`{key}`: {m}")))?;
        let needed = shape
            .0
            .checked_mul(shape.1)
            .and_then(|n| n.checked_mul(item))
            .and_then(|n| n.checked_add(header.data_offset));
        if needed.map(|n| n as u64) != Some(size) {
            return Err(format_err(
                npz_path,
                format!(
                    "`{key}`: shape ({}, {}) needs {} bytes in `{name}`, the entry holds {size}",
                    shape.0,
                    shape.1,
                    needed.map_or("more than usize::MAX".to_string(), |n| n.to_string())
                ),
            ));
        }
        match first {
            None => first = Some((key, shape, dtype)),
            Some((first_key, first_shape, _)) if first_shape != shape => {
                return Err(shape_mismatch(npz_path, key, shape, first_key, first_shape));
            }
            Some(_) => {}
        }
    }
    // S1_KEYS is not empty, so the loop set `first`.
    let Some((_, shape, dtype)) = first else { return Err(format_err(npz_path, "no planes")) };
    check_sidecar_shape(npz_path, &json_path, &sidecar, shape)?;
    Ok(TileHeader { tile_id: sidecar.tile_id, height: shape.0, width: shape.1, dtype })
}

/// Reads and parses a sidecar JSON file.
pub fn read_sidecar(json_path: &Path) -> Result<Sidecar, TilingError> {
    let bytes = match std::fs::read(json_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(content_err(
                json_path,
                "missing sidecar: every tile `<id>.npz` needs its `<id>.json` next to it",
            ));
        }
        Err(e) => return Err(io_err(json_path, e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| format_err(json_path, format!("malformed sidecar JSON: {e}")))
}

fn open_entry<'a, R: Read + std::io::Seek>(
    archive: &'a mut ZipArchive<R>,
    npz_path: &Path,
    key: &str,
) -> Result<zip::read::ZipFile<'a, R>, TilingError> {
    let name = format!("{key}.npy");
    match archive.by_name(&name) {
        Ok(entry) => Ok(entry),
        Err(zip::result::ZipError::FileNotFound) => {
            Err(content_err(npz_path, format!("missing key `{key}` (no `{name}` entry in the archive)")))
        }
        Err(e) => Err(format_err(npz_path, format!("cannot open `{name}`: {e}"))),
    }
}

fn read_plane<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    npz_path: &Path,
    key: &str,
) -> Result<Plane, TilingError> {
    let name = format!("{key}.npy");
    let mut entry = open_entry(archive, npz_path, key)?;
    // The declared size is only a hint: cap it so a corrupt header cannot demand a huge allocation.
    let mut bytes = Vec::with_capacity(entry.size().min(1 << 28) as usize);
    entry.read_to_end(&mut bytes).map_err(|e| format_err(npz_path, format!("cannot decompress `{name}`: {e}")))?;
    parse_npy(&bytes).map_err(|message| format_err(npz_path, format!("`{key}`: {message}")))
}

/// Parsed NPY header.
pub(crate) struct NpyHeader {
    pub(crate) descr: String,
    pub(crate) fortran_order: bool,
    pub(crate) shape: Vec<usize>,
    pub(crate) data_offset: usize,
}

/// Item size and dtype of an array we can read (C order, `<f4` or `<f2`); otherwise what is wrong.
pub(crate) fn npy_dtype(header: &NpyHeader) -> Result<(usize, Dtype), String> {
    if header.fortran_order {
        return Err("fortran_order arrays are not supported; save the array in C order".into());
    }
    match header.descr.as_str() {
        "<f4" => Ok((4, Dtype::F32)),
        "<f2" => Ok((2, Dtype::F16)),
        other => {
            Err(format!("dtype `{other}` is not supported; expected little-endian float32 `<f4` or float16 `<f2`"))
        }
    }
}

/// Item size, dtype and `(H, W)` of a header we can read; otherwise what is wrong.
fn check_npy_header(header: &NpyHeader) -> Result<(usize, Dtype, (usize, usize)), String> {
    let (item, dtype) = npy_dtype(header)?;
    if header.shape.len() != 2 {
        return Err(format!(
            "expected a 2-D (H, W) array, found rank {} with shape {:?}",
            header.shape.len(),
            header.shape
        ));
    }
    Ok((item, dtype, (header.shape[0], header.shape[1])))
}

fn parse_npy(bytes: &[u8]) -> Result<Plane, String> {
    let header = parse_npy_header(bytes)?;
    let (item, _, (h, w)) = check_npy_header(&header)?;
    let n = h.checked_mul(w).ok_or("shape overflows")?;
    let needed = n.checked_mul(item).ok_or("shape overflows")?;
    let data = &bytes[header.data_offset..];
    if data.len() != needed {
        return Err(format!("shape ({h}, {w}) needs {needed} data bytes, the entry has {}", data.len()));
    }
    Ok(Plane { shape: (h, w), data: decode_values(data, item) })
}

/// Little-endian `<f4` (`item` 4) or `<f2` (`item` 2) samples widened to `f32`; a trailing
/// partial item is ignored (callers check the length first).
pub(crate) fn decode_values(data: &[u8], item: usize) -> Vec<f32> {
    if item == 4 {
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    }
}

/// Where the header of an NPY array ends (its data starts), from its first 10–12 bytes.
pub(crate) fn npy_header_end(bytes: &[u8]) -> Result<usize, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an NPY array (bad magic)".into());
    }
    match bytes[6] {
        1 => Ok(10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated NPY header".into());
            }
            Ok(12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize)
        }
        v => Err(format!("NPY format version {v} is not supported (expected 1, 2 or 3)")),
    }
}

/// Parses the header of an NPY array from its first bytes (at least up to [`npy_header_end`]).
pub(crate) fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    let end = npy_header_end(bytes)?;
    let start = if bytes[6] == 1 { 10 } else { 12 };
    if bytes.len() < end {
        return Err("truncated NPY header".into());
    }
    let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| "NPY header is not text")?;
    let dict = HeaderDict::parse(text).ok_or_else(|| format!("unreadable NPY header `{}`", text.trim()))?;
    Ok(NpyHeader { descr: dict.descr, fortran_order: dict.fortran_order, shape: dict.shape, data_offset: end })
}

/// The three keys of an NPY header dict, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
struct HeaderDict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl HeaderDict {
    fn parse(text: &str) -> Option<Self> {
        let mut p = HeaderScanner { s: text.trim().as_bytes(), i: 0 };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.expect(b'{')?;
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            match key.as_str() {
                "descr" => descr = Some(p.string()?),
                "fortran_order" => fortran = Some(p.boolean()?),
                "shape" => shape = Some(p.tuple()?),
                _ => return None,
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        Some(Self { descr: descr?, fortran_order: fortran?, shape: shape? })
    }
}

/// A tiny scanner over the Python-literal header.
struct HeaderScanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl HeaderScanner<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }
    fn string(&mut self) -> Option<String> {
        let quote = *self.s.get(self.i)?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == quote)?;
        self.i = start + len + 1;
        Some(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }
    fn boolean(&mut self) -> Option<bool> {
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Some(value);
            }
        }
        None
    }
    fn tuple(&mut self) -> Option<Vec<usize>> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Some(dims);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            // Python 2 era files may write `3L`.
            let digits = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            dims.push(digits.parse().ok()?);
            self.eat(b'L');
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Some(dims);
            }
        }
    }
}

/// Encodes one `(h, w)` plane as NPY v1.0 bytes.
fn encode_npy(out: &mut Vec<u8>, plane: &[f32], h: usize, w: usize, dtype: Dtype) {
    encode_npy_shape(out, plane, &[h, w], dtype);
}

/// Encodes a C-order array of `shape` (at least one dimension) as NPY v1.0 bytes.
pub(crate) fn encode_npy_shape(out: &mut Vec<u8>, plane: &[f32], shape: &[usize], dtype: Dtype) {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    // Python's tuple syntax: `(5,)` for one dimension, `(4, 32, 32)` for more.
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {tuple}, }}", dtype.descr());
    // numpy pads the header with spaces so that the data starts on a 64-byte boundary.
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - 10;
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + (total - unpadded), b' ');
    out.push(b'\n');
    match dtype {
        Dtype::F32 => {
            out.reserve(plane.len() * 4);
            for v in plane {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::F16 => {
            out.reserve(plane.len() * 2);
            for v in plane {
                out.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
    }
}

/// Encodes a tile's six planes as NPZ bytes (deflated entries, fixed timestamps).
pub(crate) fn encode_npz(tile: &Tile, dtype: Dtype, path_for_errors: &Path) -> Result<Vec<u8>, TilingError> {
    let n = tile.height * tile.width;
    if tile.s1.len() != S1_KEYS.len() * n || tile.s2.len() != S2_KEYS.len() * n {
        return Err(content_err(
            path_for_errors,
            format!(
                "tile `{}` is {}x{} but holds {} S1 and {} S2 values (expected {} and {})",
                tile.id,
                tile.height,
                tile.width,
                tile.s1.len(),
                tile.s2.len(),
                S1_KEYS.len() * n,
                S2_KEYS.len() * n
            ),
        ));
    }
    let zip_err = |e: zip::result::ZipError| format_err(path_for_errors, format!("cannot encode NPZ: {e}"));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let mut writer = ZipWriter::new(Cursor::new(Vec::with_capacity(n * 6 * 2 + 4096)));
    let mut npy = Vec::with_capacity(n * 4 + 128);
    let planes = tile.s1.chunks_exact(n).zip(S1_KEYS).chain(tile.s2.chunks_exact(n).zip(S2_KEYS));
    for (plane, key) in planes {
        npy.clear();
        encode_npy(&mut npy, plane, tile.height, tile.width, dtype);
        writer.start_file(format!("{key}.npy"), options).map_err(zip_err)?;
        writer.write_all(&npy).map_err(|e| io_err(path_for_errors, e))?;
    }
    Ok(writer.finish().map_err(zip_err)?.into_inner())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TilingError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Hex CRC-32C of some bytes, as written in sidecars and manifests.
pub fn checksum_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

/// Writes a sidecar atomically to `<dir>/<tile_id>.json` and returns its path.
pub(crate) fn write_sidecar(dir: &Path, sidecar: &Sidecar) -> Result<PathBuf, TilingError> {
    let path = dir.join(format!("{}.json", sidecar.tile_id));
    let mut json =
        serde_json::to_vec_pretty(sidecar).map_err(|e| format_err(&path, format!("cannot serialise sidecar: {e}")))?;
    json.push(b'\n');
    write_atomic(&path, &json)?;
    Ok(path)
}

/// Writes `<dir>/<tile.id>.npz` (NPZ bytes are returned with the path so callers can checksum them).
pub(crate) fn write_npz(dir: &Path, tile: &Tile, dtype: Dtype) -> Result<(PathBuf, String), TilingError> {
    check_tile_id(dir, &tile.id)?;
    let path = dir.join(format!("{}.npz", tile.id));
    let bytes = encode_npz(tile, dtype, &path)?;
    let checksum = checksum_hex(&bytes);
    write_atomic(&path, &bytes)?;
    Ok((path, checksum))
}

/// Rejects ids that are not a plain file stem (ids become file names).
pub(crate) fn check_tile_id(dir: &Path, id: &str) -> Result<(), TilingError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(content_err(
            dir,
            format!("tile id `{id}` is not a plain file stem (use letters, digits, `_`, `-`, `.`; not leading `.`)"),
        ))
    }
}

/// Writes a tile as `<dir>/<id>.npz` plus its sidecar `<dir>/<id>.json`, both atomically, and
/// returns the NPZ path. The sidecar's `tile_id`, `height`, `width` and `checksum` (CRC-32C of
/// the NPZ bytes) are set from the tile; its other fields are written as given.
pub fn write_tile(dir: &Path, tile: &Tile, dtype: Dtype) -> Result<PathBuf, TilingError> {
    let (npz, checksum) = write_npz(dir, tile, dtype)?;
    let mut sidecar = tile.sidecar.clone();
    sidecar.tile_id = tile.id.clone();
    sidecar.height = tile.height;
    sidecar.width = tile.width;
    sidecar.checksum = Some(checksum);
    write_sidecar(dir, &sidecar)?;
    Ok(npz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_variants() {
        let mut bytes = Vec::new();
        encode_npy(&mut bytes, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, Dtype::F32);
        let header_end = bytes.len() - 24;
        assert_eq!(header_end % 64, 0);
        let plane = parse_npy(&bytes).unwrap();
        assert_eq!(plane.shape, (2, 3));
        assert_eq!(plane.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        let d = HeaderDict::parse("{'descr': '<f2', 'fortran_order': True, 'shape': (7L, 2), }").unwrap();
        assert_eq!((d.descr.as_str(), d.fortran_order, d.shape), ("<f2", true, vec![7, 2]));
        let d = HeaderDict::parse("{\"shape\": (5,), \"descr\": \">f4\", \"fortran_order\": False}").unwrap();
        assert_eq!((d.descr.as_str(), d.shape), (">f4", vec![5]));
        assert!(HeaderDict::parse("{'descr': '<f4'}").is_none());
    }

    #[test]
    fn rejects_fortran_big_endian_and_rank() {
        let make = |dict: &str, data: usize| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b.resize(b.len() + data, 0);
            b
        };
        let e = parse_npy(&make("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16)).err().unwrap();
        assert!(e.contains("fortran_order"), "{e}");
        let e = parse_npy(&make("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", 16)).err().unwrap();
        assert!(e.contains("`>f4`"), "{e}");
        let e = parse_npy(&make("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", 32)).err().unwrap();
        assert!(e.contains("`<f8`"), "{e}");
        let e = parse_npy(&make("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 1), }", 16)).err().unwrap();
        assert!(e.contains("rank 3"), "{e}");
        let e = parse_npy(&make("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 12)).err().unwrap();
        assert!(e.contains("needs 16 data bytes"), "{e}");
    }
}
