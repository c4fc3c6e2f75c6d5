//! GeoTIFF / Cloud-Optimized GeoTIFF reader in pure Rust: the `tiff` crate parses the file
//! structure (header, BigTIFF, byte order, tags), the strips and tiles are decoded here
//! (`geotiff/decode.rs`, with `weezl` for LZW and `flate2` for Deflate).
//!
//! [`read_geotiff`] reads a whole image, [`read_window`] a rectangle of it; both return a
//! band-major `f32` [`Raster`]. A window read decodes only the strips or tiles the window
//! touches, which is what makes a COG cheap to cut into tiles. [`GeoTiff`] keeps the file open
//! for many window reads, and [`read_info`] reads the header alone. [`write_geotiff`] writes a
//! [`Raster`] back out (uncompressed strips, with its georeferencing and nodata), readable here,
//! by GDAL and by rasterio.
//!
//! Supported:
//!
//! * classic TIFF and BigTIFF, little- and big-endian; the first image (IFD) of the file — for a
//!   COG that is the full-resolution image, overviews and masks are ignored;
//! * strips and tiles (partial edge tiles and strips included); sparse chunks (offset and byte
//!   count 0, GDAL's `SPARSE_OK`) read as the nodata value, or 0 without one, as GDAL does;
//! * compression none (1), LZW (5), Deflate (8 and the old 32946) and PackBits (32773), with
//!   predictor none (1), horizontal (2) or floating point (3);
//! * sample types uint8, uint16, int16 and float32, converted to `f32` exactly;
//! * any number of bands, interleaved (PlanarConfiguration 1) or planar (2). Every sample is a
//!   band, read as stored, whatever the PhotometricInterpretation says (as GDAL reads them: an RGB
//!   image with an extra NIR sample gives 4 bands, a palette image its indices, WhiteIsZero is
//!   not inverted); only YCbCr is refused, as its chroma may be subsampled;
//! * `GDAL_NODATA` (tag 42113, ASCII) as [`Raster::nodata`];
//! * the affine geotransform from ModelPixelScale (33550) + ModelTiepoint (33922), or
//!   ModelTransformation (34264); the CRS from the GeoKey directory (34735): EPSG code from
//!   ProjectedCSTypeGeoKey (3072) or GeographicTypeGeoKey (2048), else the citation text
//!   (PCSCitation 3073, GTCitation 1026, GeogCitation 2049) from GeoAsciiParams (34737).
//!
//! PixelIsArea vs PixelIsPoint (`GTRasterTypeGeoKey`, 1025): the returned geotransform always
//! refers to the outer corner of pixel (0, 0). For PixelIsPoint files the tie point names the
//! centre of the pixel, so the origin is moved by half a pixel (`x0 -= (dx + rx) / 2`,
//! `y0 -= (ry + dy) / 2`) — the same transform GDAL reports by default.
//!
//! Not supported (each a [`TilingError::Format`] naming the file and the problem): JPEG, CCITT,
//! ZSTD, WebP, LERC, JPEG-XL and any other compression; other sample types (int8, uint32, int32,
//! float64, float16, complex, 1–7 bit); YCbCr images. A file without a PhotometricInterpretation
//! tag is refused by the `tiff` crate's header parser.
//! Ground control points without an affine transform (e.g. Sentinel-1 GRD measurement TIFFs)
//! give `geo: None`. GDAL's per-band scale/offset (GDAL_METADATA, 42112) and internal masks are
//! not applied.

mod decode;
mod encode;
mod georef;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tiff::decoder::ifd::Value;
use tiff::decoder::{ChunkType, Decoder, Limits};
use tiff::tags::Tag;
use tiff::{TiffError, TiffFormatError, TiffResult};

pub use encode::{WriteOptions, encode_geotiff, write_geotiff};
pub use georef::window_geotransform;

use crate::tile::{GeoInfo, Raster, RasterDtype, TilingError};

/// Compression of the pixel data (only the ones this reader decodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed (1).
    None,
    /// LZW (5).
    Lzw,
    /// Deflate / zlib (8, or the old code 32946).
    Deflate,
    /// PackBits run-length (32773).
    PackBits,
}

/// Everything the header says about the first image of a GeoTIFF, without its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoTiffInfo {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bands (SamplesPerPixel).
    pub bands: usize,
    /// Sample type on disk.
    pub dtype: RasterDtype,
    /// `GDAL_NODATA`, if set.
    pub nodata: Option<f64>,
    /// Georeferencing, if the file has an affine one.
    pub geo: Option<GeoInfo>,
    /// Compression of the strips or tiles.
    pub compression: Compression,
    /// Predictor tag value (1 none, 2 horizontal, 3 floating point).
    pub predictor: u16,
    /// True for a tiled image, false for strips.
    pub tiled: bool,
    /// Width of one chunk: the tile width, or the image width for strips.
    pub chunk_width: usize,
    /// Height of one chunk: the tile height, or the rows per strip (at most the image height).
    pub chunk_height: usize,
    /// True for PlanarConfiguration 2 (one chunk per band), false for interleaved samples.
    pub planar: bool,
}

/// An open GeoTIFF: the header is parsed once, then any number of windows can be read.
#[derive(Debug)]
pub struct GeoTiff {
    path: PathBuf,
    decoder: Decoder<BufReader<File>>,
    info: GeoTiffInfo,
    /// File offset and byte count of every chunk (strip or tile), planes one after the other;
    /// a byte count of 0 marks a sparse chunk.
    chunks: Vec<(u64, u64)>,
    /// How every chunk is stored.
    format: decode::ChunkFormat,
}

/// Reads the whole first image of a GeoTIFF / COG.
pub fn read_geotiff(path: &Path) -> Result<Raster, TilingError> {
    GeoTiff::open(path)?.read()
}

/// Reads the window of `height` rows and `width` columns whose top-left pixel is `(row, col)`,
/// decoding only the strips or tiles it touches. The raster's geotransform is the window's own
/// (origin at the window's corner). A window that does not fit in the image is a
/// [`TilingError::Content`] error.
pub fn read_window(path: &Path, row: usize, col: usize, height: usize, width: usize) -> Result<Raster, TilingError> {
    GeoTiff::open(path)?.read_window(row, col, height, width)
}

/// Reads the header of a GeoTIFF (size, bands, type, nodata, georeferencing, layout) without
/// decoding any pixels.
pub fn read_info(path: &Path) -> Result<GeoTiffInfo, TilingError> {
    Ok(GeoTiff::open(path)?.info)
}

fn format_error(path: &Path, message: impl Into<String>) -> TilingError {
    TilingError::Format { path: path.to_path_buf(), message: message.into() }
}

/// Turns a `tiff` error into ours; `context` says what was being read.
fn tiff_error(path: &Path, err: TiffError, context: &str) -> TilingError {
    match err {
        TiffError::FormatError(TiffFormatError::TiffSignatureNotFound | TiffFormatError::TiffSignatureInvalid) => {
            format_error(path, "not a TIFF file (no II*/MM* or BigTIFF signature)")
        }
        TiffError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format_error(path, format!("truncated TIFF: the data ends while reading {context}"))
        }
        TiffError::IoError(e) if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput) => {
            format_error(path, format!("corrupt TIFF data in {context}: {e}"))
        }
        TiffError::IoError(e) => TilingError::Io { path: path.to_path_buf(), source: e },
        TiffError::FormatError(e) => format_error(path, format!("corrupt TIFF ({context}): {e}")),
        TiffError::UnsupportedError(e) => format_error(path, format!("unsupported TIFF feature ({context}): {e}")),
        TiffError::LimitsExceeded => format_error(path, format!("{context} exceeds the decoder's memory limits")),
        other => format_error(path, format!("cannot read {context}: {other}")),
    }
}

fn compression_name(code: u16) -> &'static str {
    match code {
        1 => "none",
        2 => "CCITT RLE",
        3 => "CCITT Group 3 fax",
        4 => "CCITT Group 4 fax",
        5 => "LZW",
        6 => "old-style JPEG",
        7 => "JPEG",
        8 | 32946 => "Deflate",
        32773 => "PackBits",
        34712 => "JPEG 2000",
        34887 => "LERC",
        34925 => "LZMA",
        50000 => "ZSTD",
        50001 => "WebP",
        50002 | 52546 => "JPEG XL",
        _ => "unknown",
    }
}

fn sample_type_name(format: u16, bits: u16) -> String {
    let kind = match format {
        1 => "uint",
        2 => "int",
        3 => "float",
        4 => "void",
        5 => "complex int",
        6 => "complex float",
        _ => "unknown",
    };
    format!("{kind}{bits}")
}

/// Largest decoded strip or tile accepted (1 GiB), against absurd tile sizes in corrupt headers.
const MAX_CHUNK_BYTES: usize = 1 << 30;

/// Limits on what the `tiff` crate may allocate for one tag's values: tile offset arrays of
/// large COGs exceed its 1 MiB default. (It decodes no pixels here.)
fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.ifd_value_size = 256 << 20;
    limits
}

/// One GeoTIFF tag's value, converted; `None` when the tag is absent.
fn geo_tag<T>(
    decoder: &mut Decoder<BufReader<File>>,
    path: &Path,
    tag: Tag,
    convert: fn(Value) -> TiffResult<T>,
) -> Result<Option<T>, TilingError> {
    let err = |e| tiff_error(path, e, "the GeoTIFF tags");
    decoder.find_tag(tag).map_err(err)?.map(convert).transpose().map_err(err)
}

impl GeoTiff {
    /// Opens a GeoTIFF and parses the header of its first image. Fails with a
    /// [`TilingError::Format`] for anything this reader does not decode (see the module
    /// documentation), and for chunks that lie past the end of the file (a truncated file).
    pub fn open(path: &Path) -> Result<GeoTiff, TilingError> {
        let file = File::open(path).map_err(|source| TilingError::Io { path: path.to_path_buf(), source })?;
        let file_len = file.metadata().map_err(|source| TilingError::Io { path: path.to_path_buf(), source })?.len();
        let mut decoder = Decoder::new(BufReader::new(file))
            .map_err(|e| tiff_error(path, e, "the header"))?
            .with_limits(decoder_limits());
        let tag_err = |e| tiff_error(path, e, "the tags");

        let compression_code: u16 = decoder.find_tag_unsigned(Tag::Compression).map_err(tag_err)?.unwrap_or(1);
        let compression = match compression_code {
            1 => Compression::None,
            5 => Compression::Lzw,
            8 | 32946 => Compression::Deflate,
            32773 => Compression::PackBits,
            code => {
                return Err(format_error(
                    path,
                    format!(
                        "unsupported compression {} ({code}); supported: none, LZW, Deflate, PackBits",
                        compression_name(code)
                    ),
                ));
            }
        };

        let bands: u16 = decoder.find_tag_unsigned(Tag::SamplesPerPixel).map_err(tag_err)?.unwrap_or(1);
        let bits: Vec<u16> = decoder.find_tag_unsigned_vec(Tag::BitsPerSample).map_err(tag_err)?.unwrap_or(vec![1]);
        let formats: Vec<u16> = decoder.find_tag_unsigned_vec(Tag::SampleFormat).map_err(tag_err)?.unwrap_or(vec![1]);
        let (bits, format) = (bits.first().copied().unwrap_or(1), formats.first().copied().unwrap_or(1));
        let dtype = match (format, bits) {
            (1, 8) => RasterDtype::U8,
            (1, 16) => RasterDtype::U16,
            (2, 16) => RasterDtype::I16,
            (3, 32) => RasterDtype::F32,
            _ => {
                return Err(format_error(
                    path,
                    format!(
                        "unsupported sample type {} (SampleFormat {format}, BitsPerSample {bits}); \
                         supported: uint8, uint16, int16, float32",
                        sample_type_name(format, bits)
                    ),
                ));
            }
        };

        let photometric: u16 = decoder.find_tag_unsigned(Tag::PhotometricInterpretation).map_err(tag_err)?.unwrap_or(1);
        let planar = decoder.find_tag_unsigned::<u16>(Tag::PlanarConfiguration).map_err(tag_err)?.unwrap_or(1) == 2;
        if photometric == 6 {
            return Err(format_error(
                path,
                "unsupported PhotometricInterpretation YCbCr (6); supported: any other, samples are read as stored",
            ));
        }
        let predictor: u16 = decoder.find_tag_unsigned(Tag::Predictor).map_err(tag_err)?.unwrap_or(1);
        if !matches!((predictor, dtype), (1 | 2, _) | (3, RasterDtype::F32)) {
            return Err(format_error(
                path,
                format!("unsupported Predictor {predictor} for {dtype:?} samples; supported: 1, 2, and 3 for float32"),
            ));
        }

        let (width, height) = decoder.dimensions().map_err(tag_err)?;
        let (width, height) = (width as usize, height as usize);
        let tiled = decoder.get_chunk_type() == ChunkType::Tile;
        let (chunk_width, chunk_height) = decoder.chunk_dimensions();
        let (chunk_width, chunk_height) = (chunk_width as usize, (chunk_height as usize).min(height));
        if chunk_width == 0 || chunk_height == 0 {
            return Err(format_error(path, "zero tile size or RowsPerStrip"));
        }
        let samples = if planar { 1 } else { usize::from(bands) };
        let chunk_size = [chunk_width, chunk_height, samples, usize::from(bits / 8)]
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .filter(|&n| n <= MAX_CHUNK_BYTES);
        if chunk_size.is_none() {
            return Err(format_error(
                path,
                format!("a {chunk_width}x{chunk_height} chunk of {samples} samples per pixel is larger than 1 GiB"),
            ));
        }

        let (offsets_tag, counts_tag, unit) = if tiled {
            (Tag::TileOffsets, Tag::TileByteCounts, "tile")
        } else {
            (Tag::StripOffsets, Tag::StripByteCounts, "strip")
        };
        let offsets = decoder.get_tag_u64_vec(offsets_tag).map_err(tag_err)?;
        let counts = decoder.get_tag_u64_vec(counts_tag).map_err(tag_err)?;
        let chunks_per_plane = width.div_ceil(chunk_width) * height.div_ceil(chunk_height);
        let expected = chunks_per_plane * if planar { usize::from(bands) } else { 1 };
        if offsets.len() != expected || counts.len() != expected {
            return Err(format_error(
                path,
                format!("{} {unit} offsets and {} byte counts, expected {expected}", offsets.len(), counts.len()),
            ));
        }
        for (i, (&offset, &count)) in offsets.iter().zip(&counts).enumerate() {
            if count > 0 && offset.checked_add(count).is_none_or(|end| end > file_len) {
                return Err(format_error(
                    path,
                    format!(
                        "truncated file: {unit} {i} of {expected} (bytes {offset}..{}) lies past the end of the \
                         file ({file_len} bytes)",
                        offset.saturating_add(count)
                    ),
                ));
            }
        }

        let nodata =
            match decoder.find_tag(Tag::GdalNodata).map_err(tag_err)? {
                None => None,
                Some(value) => {
                    let text = value.into_string().map_err(tag_err)?;
                    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
                    Some(text.parse::<f64>().map_err(|_| {
                        format_error(path, format!("GDAL_NODATA (tag 42113) is not a number: {text:?}"))
                    })?)
                }
            };

        let tags = georef::GeoTags {
            geo_keys: geo_tag(&mut decoder, path, Tag::GeoKeyDirectoryTag, Value::into_u16_vec)?,
            geo_ascii: geo_tag(&mut decoder, path, Tag::GeoAsciiParamsTag, Value::into_string)?,
            pixel_scale: geo_tag(&mut decoder, path, Tag::ModelPixelScaleTag, Value::into_f64_vec)?,
            tiepoints: geo_tag(&mut decoder, path, Tag::ModelTiepointTag, Value::into_f64_vec)?,
            transformation: geo_tag(&mut decoder, path, Tag::ModelTransformationTag, Value::into_f64_vec)?,
        };
        let geo = georef::geo_info(&tags).map_err(|m| format_error(path, format!("GeoTIFF tags: {m}")))?;

        let info = GeoTiffInfo {
            width,
            height,
            bands: usize::from(bands),
            dtype,
            nodata,
            geo,
            compression,
            predictor,
            tiled,
            chunk_width,
            chunk_height,
            planar,
        };
        let big_endian = {
            let mut magic = [0u8; 2];
            let reader = decoder.inner();
            reader
                .seek(SeekFrom::Start(0))
                .and_then(|_| reader.read_exact(&mut magic))
                .map_err(|source| TilingError::Io { path: path.to_path_buf(), source })?;
            magic == *b"MM"
        };
        let format =
            decode::ChunkFormat { compression, predictor, dtype, big_endian, samples, row_pixels: chunk_width };
        let chunks = offsets.into_iter().zip(counts).collect();
        Ok(GeoTiff { path: path.to_path_buf(), decoder, info, chunks, format })
    }

    /// The header of the image.
    pub fn info(&self) -> &GeoTiffInfo {
        &self.info
    }

    /// The file this reader was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole image.
    pub fn read(&mut self) -> Result<Raster, TilingError> {
        let (height, width) = (self.info.height, self.info.width);
        self.read_window(0, 0, height, width)
    }

    /// Reads a window (see [`read_window`]), decoding only the chunks it touches.
    pub fn read_window(&mut self, row: usize, col: usize, height: usize, width: usize) -> Result<Raster, TilingError> {
        let info = &self.info;
        let fits = row.checked_add(height).is_some_and(|end| end <= info.height)
            && col.checked_add(width).is_some_and(|end| end <= info.width);
        if height == 0 || width == 0 || !fits {
            return Err(TilingError::Content {
                path: self.path.clone(),
                message: format!(
                    "window rows {row}..{}, cols {col}..{} does not fit the {}x{} image (rows x cols), or is empty",
                    row.saturating_add(height),
                    col.saturating_add(width),
                    info.height,
                    info.width
                ),
            });
        }
        let (cw, ch) = (info.chunk_width, info.chunk_height);
        let across = info.width.div_ceil(cw);
        let per_plane = across * info.height.div_ceil(ch);
        let (planes, samples) = if info.planar { (info.bands, 1) } else { (1, info.bands) };
        let unit = if info.tiled { "tile" } else { "strip" };
        let plane_len = height * width;
        let fill = info.nodata.map_or(0.0, |v| v as f32);
        let mut data = vec![0.0f32; info.bands * plane_len];

        for cy in row / ch..=(row + height - 1) / ch {
            for cx in col / cw..=(col + width - 1) / cw {
                // This chunk's pixels (edge chunks are cut to the image) and their overlap with
                // the window, in image coordinates.
                let (y0, x0) = (cy * ch, cx * cw);
                let (dh, dw) = (ch.min(info.height - y0), cw.min(info.width - x0));
                let (ys, ye) = (row.max(y0), (row + height).min(y0 + dh));
                let (xs, xe) = (col.max(x0), (col + width).min(x0 + dw));
                for plane in 0..planes {
                    let index = plane * per_plane + cy * across + cx;
                    let (offset, count) = self.chunks[index];
                    let fail = |message: String| format_error(&self.path, format!("{unit} {index}: {message}"));
                    // Rows stored in this chunk: tiles are always whole (padded), the last strip
                    // may be short.
                    let rows = if info.tiled { ch } else { dh };
                    let chunk = if count == 0 {
                        vec![fill; rows * cw * samples]
                    } else {
                        let mut raw = vec![0u8; count as usize];
                        let reader = self.decoder.inner();
                        reader
                            .seek(SeekFrom::Start(offset))
                            .and_then(|_| reader.read_exact(&mut raw))
                            .map_err(|e| fail(format!("cannot read bytes {offset}..{}: {e}", offset + count)))?;
                        self.format.decode(&raw, rows).map_err(fail)?
                    };
                    // Copy the overlap with the window; the chunk's rows are `cw` pixels wide.
                    for y in ys..ye {
                        let src = &chunk[(y - y0) * cw * samples..];
                        let dst = (y - row) * width;
                        for s in 0..samples {
                            let out = &mut data[(plane + s) * plane_len + dst..];
                            for x in xs..xe {
                                out[x - col] = src[(x - x0) * samples + s];
                            }
                        }
                    }
                }
            }
        }

        let geo = info.geo.as_ref().map(|g| GeoInfo {
            geotransform: window_geotransform(&g.geotransform, row, col),
            epsg: g.epsg,
            crs: g.crs.clone(),
        });
        Ok(Raster {
            source: self.path.clone(),
            width,
            height,
            bands: info.bands,
            dtype: info.dtype,
            nodata: info.nodata,
            geo,
            data,
        })
    }
}
