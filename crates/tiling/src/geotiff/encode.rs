//! Writing a [`Raster`] as a GeoTIFF with the `tiff` crate's encoder: strips, uncompressed (the
//! crate's Deflate encoder needs its `deflate` feature, which this crate does not enable),
//! samples interleaved (PlanarConfiguration 1) with the bands after the first declared as
//! unspecified extra samples, as GDAL writes multi-band images.

use std::io::{Cursor, Seek, Write};
use std::path::Path;

use tiff::TiffResult;
use tiff::encoder::colortype::{ColorType, Gray8, Gray16, Gray32Float, GrayI16};
use tiff::encoder::{TiffEncoder, TiffKind, TiffValue};
use tiff::tags::{ExtraSamples, Tag};

use crate::tile::{GeoInfo, Raster, RasterDtype, TilingError};

/// What goes into a GeoTIFF besides the pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// `ImageDescription` (270), e.g. where the data come from.
    pub description: Option<String>,
    /// Band descriptions (GDAL's per-band `DESCRIPTION`, rasterio's `descriptions`), in band order.
    pub band_names: Vec<String>,
    /// Dataset-level GDAL metadata items (`GDAL_METADATA`, 42112; rasterio's `tags()`).
    pub metadata: Vec<(String, String)>,
}

/// `GDAL_METADATA`: GDAL's XML metadata tag.
const GDAL_METADATA: u16 = 42112;

/// Files at least this large are written as BigTIFF (classic TIFF offsets are 32-bit).
const BIGTIFF_FROM_BYTES: usize = 3 << 30;

/// Writes `raster` to `path` (atomically: a temporary file, fsync, rename).
///
/// Sample type: the raster's [`Raster::dtype`] (uint8, uint16, int16 or float32); every value must
/// be exactly representable in it, so that [`super::read_geotiff`] reads back the same `f32`s.
/// Georeferencing, when [`Raster::geo`] is set: ModelPixelScale + ModelTiepoint for north-up
/// transforms without rotation, ModelTransformation otherwise; GeoKeys with PixelIsArea and the
/// EPSG code as ProjectedCSTypeGeoKey (or GeographicTypeGeoKey for EPSG 4000–4999). CRSs given
/// only as text are not written (no GeoKeys beyond the raster type). [`Raster::nodata`] becomes
/// `GDAL_NODATA`.
pub fn write_geotiff(path: &Path, raster: &Raster, options: &WriteOptions) -> Result<(), TilingError> {
    let bytes = encode_geotiff(path, raster, options)?;
    crate::npz::write_atomic(path, &bytes)
}

/// The bytes of the GeoTIFF [`write_geotiff`] writes; `path` only names the file in errors.
pub fn encode_geotiff(path: &Path, raster: &Raster, options: &WriteOptions) -> Result<Vec<u8>, TilingError> {
    let fail = |message: String| TilingError::Content { path: path.to_path_buf(), message };
    let (w, h, bands) = (raster.width, raster.height, raster.bands);
    if w == 0 || h == 0 || bands == 0 || u32::try_from(w).is_err() || u32::try_from(h).is_err() {
        return Err(fail(format!("cannot write a {w}x{h} raster of {bands} bands as GeoTIFF")));
    }
    if raster.data.len() != w * h * bands {
        return Err(fail(format!("raster holds {} samples, expected {bands}x{h}x{w}", raster.data.len())));
    }
    if !options.band_names.is_empty() && options.band_names.len() != bands {
        return Err(fail(format!("{} band names for {bands} bands", options.band_names.len())));
    }
    let n = w * h;
    // Band-major f32 → pixel-interleaved samples of the on-disk type, exactly.
    fn interleave<T: Copy + Default>(
        data: &[f32],
        bands: usize,
        n: usize,
        convert: impl Fn(f32) -> Option<T>,
        name: &str,
    ) -> Result<Vec<T>, String> {
        let mut out = vec![T::default(); data.len()];
        for (b, plane) in data.chunks_exact(n).enumerate() {
            for (i, &v) in plane.iter().enumerate() {
                out[i * bands + b] = convert(v).ok_or_else(|| {
                    format!("band {} pixel {i}: value {v} is not exactly representable as {name}", b + 1)
                })?;
            }
        }
        Ok(out)
    }
    fn int<T: TryFrom<i64>>(v: f32) -> Option<T> {
        (v.fract() == 0.0).then_some(v as i64).and_then(|i| T::try_from(i).ok())
    }
    let data = &raster.data;
    let sample_bytes = match raster.dtype {
        RasterDtype::U8 => 1,
        RasterDtype::U16 | RasterDtype::I16 => 2,
        RasterDtype::F32 => 4,
        RasterDtype::F16 => {
            return Err(fail(
                "float16 rasters cannot be written as GeoTIFF (supported: uint8, uint16, int16, float32)".into(),
            ));
        }
    };
    let big = n * bands * sample_bytes >= BIGTIFF_FROM_BYTES;
    let mut out = Cursor::new(Vec::new());
    let written = match raster.dtype {
        RasterDtype::U8 => {
            let s = interleave(data, bands, n, int::<u8>, "uint8").map_err(fail)?;
            write_any::<Gray8, _>(&mut out, big, raster, options, &s)
        }
        RasterDtype::U16 => {
            let s = interleave(data, bands, n, int::<u16>, "uint16").map_err(fail)?;
            write_any::<Gray16, _>(&mut out, big, raster, options, &s)
        }
        RasterDtype::I16 => {
            let s = interleave(data, bands, n, int::<i16>, "int16").map_err(fail)?;
            write_any::<GrayI16, _>(&mut out, big, raster, options, &s)
        }
        RasterDtype::F32 => {
            let s = interleave(data, bands, n, Some, "float32").map_err(fail)?;
            write_any::<Gray32Float, _>(&mut out, big, raster, options, &s)
        }
        RasterDtype::F16 => unreachable!("refused above"),
    };
    written.map_err(|e| fail(format!("cannot encode the GeoTIFF: {e}")))?;
    Ok(out.into_inner())
}

fn write_any<C: ColorType, W: Write + Seek>(
    out: &mut W,
    big: bool,
    raster: &Raster,
    options: &WriteOptions,
    samples: &[C::Inner],
) -> TiffResult<()>
where
    [C::Inner]: TiffValue,
{
    if big {
        write_image::<C, _, _>(&mut TiffEncoder::new_big(out)?, raster, options, samples)
    } else {
        write_image::<C, _, _>(&mut TiffEncoder::new(out)?, raster, options, samples)
    }
}

fn write_image<C: ColorType, W: Write + Seek, K: TiffKind>(
    encoder: &mut TiffEncoder<W, K>,
    raster: &Raster,
    options: &WriteOptions,
    samples: &[C::Inner],
) -> TiffResult<()>
where
    [C::Inner]: TiffValue,
{
    let mut image = encoder.new_image::<C>(raster.width as u32, raster.height as u32)?;
    if raster.bands > 1 {
        image.extra_samples(&vec![ExtraSamples::Unspecified; raster.bands - 1])?;
    }
    let e = image.encoder();
    e.write_tag(Tag::PlanarConfiguration, 1u16)?;
    if let Some(d) = &options.description {
        e.write_tag(Tag::ImageDescription, d.as_str())?;
    }
    if let Some(xml) = gdal_metadata(options) {
        e.write_tag(Tag::Unknown(GDAL_METADATA), xml.as_str())?;
    }
    if let Some(nodata) = raster.nodata {
        e.write_tag(Tag::GdalNodata, nodata.to_string().as_str())?;
    }
    if let Some(geo) = &raster.geo {
        let gt = geo.geotransform;
        if gt[2] == 0.0 && gt[4] == 0.0 && gt[1] > 0.0 && gt[5] < 0.0 {
            e.write_tag(Tag::ModelPixelScaleTag, &[gt[1], -gt[5], 0.0][..])?;
            e.write_tag(Tag::ModelTiepointTag, &[0.0, 0.0, 0.0, gt[0], gt[3], 0.0][..])?;
        } else {
            let m = [gt[1], gt[2], 0.0, gt[0], gt[4], gt[5], 0.0, gt[3], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
            e.write_tag(Tag::ModelTransformationTag, &m[..])?;
        }
        e.write_tag(Tag::GeoKeyDirectoryTag, &geo_keys(geo)[..])?;
    }
    image.write_data(samples)
}

/// GeoKey directory: version 1.1.0, model type, PixelIsArea, and the EPSG code if any.
fn geo_keys(geo: &GeoInfo) -> Vec<u16> {
    let epsg = geo.epsg.or_else(|| geo.crs.as_deref()?.strip_prefix("EPSG:")?.parse().ok());
    let code = epsg.and_then(|c| u16::try_from(c).ok());
    // (key, location 0 = inline SHORT, count, value)
    let mut keys: Vec<[u16; 4]> = Vec::new();
    match code {
        Some(c) if (4000..5000).contains(&c) => {
            keys.push([1024, 0, 1, 2]);
            keys.push([1025, 0, 1, 1]);
            keys.push([2048, 0, 1, c]);
        }
        Some(c) => {
            keys.push([1024, 0, 1, 1]);
            keys.push([1025, 0, 1, 1]);
            keys.push([3072, 0, 1, c]);
        }
        None => keys.push([1025, 0, 1, 1]),
    }
    let mut dir = vec![1, 1, 0, keys.len() as u16];
    dir.extend(keys.into_iter().flatten());
    dir
}

/// GDAL's metadata XML, or `None` when there is nothing to say.
fn gdal_metadata(options: &WriteOptions) -> Option<String> {
    if options.metadata.is_empty() && options.band_names.is_empty() {
        return None;
    }
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut xml = String::from("<GDALMetadata>\n");
    for (k, v) in &options.metadata {
        xml += &format!("  <Item name=\"{}\">{}</Item>\n", escape(k), escape(v));
    }
    for (b, name) in options.band_names.iter().enumerate() {
        xml += &format!("  <Item name=\"DESCRIPTION\" sample=\"{b}\" role=\"description\">{}</Item>\n", escape(name));
    }
    xml += "</GDALMetadata>";
    Some(xml)
}
