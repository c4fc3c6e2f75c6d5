//! Rasters read through the system GDAL library (optional `gdal` feature): the formats the pure-Rust
//! [`geotiff`](crate::geotiff) reader does not handle, such as JPEG2000 (Sentinel-2 `.jp2` bands),
//! Sentinel-1/2 `.SAFE` products and NetCDF subdatasets (`NETCDF:"file.nc":blue`). Each one comes
//! back as the same [`Raster`] the GeoTIFF reader returns.
//!
//! # Building
//!
//! The feature is off by default and CI never builds it. It links the system `libgdal` (GDAL >= 3.4).
//! `gdal-sys` finds the library with `pkg-config` and uses the bindings it ships pre-built for that GDAL
//! version, so neither `bindgen` nor libclang is needed. On Debian bookworm (GDAL 3.6):
//!
//! ```sh
//! apt-get update && apt-get install -y libgdal-dev   # add gdal-bin for gdalinfo / gdal_translate
//! cargo build -p tiling --features gdal
//! cargo test -p tiling --features gdal --test gdal
//! ```
//!
//! For a GDAL version without pre-built bindings, enable `gdal/bindgen` (needs libclang). You can
//! also set `GDAL_VERSION` and `GDAL_HOME` (or `GDAL_LIB_DIR` / `GDAL_INCLUDE_DIR`) when
//! `pkg-config` cannot find the library.
//!
//! # Mapping to [`Raster`]
//!
//! - **Samples.** GDAL converts every band to `f32` as it reads. `u8`, `u16`, `i16` and `f32`
//!   bands keep their [`RasterDtype`], and their values are exact. Any other real type (`i8`,
//!   `u32`, `i32`, 64-bit integers, `f64`) is also read as `f32` and reported as
//!   [`RasterDtype::F32`]. This can round: integers above 2^24 and `f64` precision are lost.
//!   Bands of mixed types are reported as `F32` too. Complex bands (e.g. Sentinel-1 SLC) are
//!   refused. Derive intensity first, e.g. with a VRT pixel function.
//! - **Nodata.** The first band's nodata value; [`Raster`] holds one value for all bands.
//! - **Georeferencing.** The dataset's affine geotransform, in GDAL order. The EPSG code is the
//!   spatial reference's authority code when that authority is EPSG (for a compound CRS, e.g. a
//!   DEM with a vertical datum, the horizontal part's code). `crs` is then `EPSG:xxxx`,
//!   otherwise the spatial reference's name. A dataset with no geotransform gets `geo: None`.
//!   Sentinel-1 GRD products, georeferenced only by GCPs, are such a case: warp them first
//!   (`gdalwarp`).
//! - **Source.** The name passed in, as given; for a subdataset that is the full `NETCDF:"…":var`
//!   string.
//!
//! A dataset that only lists subdatasets (a NetCDF file with several variables, a Sentinel-2
//! `.SAFE` product) has no bands of its own. Reading it fails with an error that lists the names to
//! open instead; [`subdatasets`] returns them.

use std::path::{Path, PathBuf};

use gdal::Dataset;
use gdal::Metadata;
use gdal::raster::GdalDataType;
use gdal::spatial_ref::SpatialRef;

use crate::tile::{GeoInfo, Raster, RasterDtype, TilingError};

/// Files inside a `.SAFE` directory that GDAL opens as the product (Sentinel-1, then Sentinel-2
/// L2A and L1C), tried when GDAL does not open the directory itself.
const SAFE_MANIFESTS: [&str; 3] = ["manifest.safe", "MTD_MSIL2A.xml", "MTD_MSIL1C.xml"];

fn format_error(name: &str, message: String) -> TilingError {
    TilingError::Format { path: PathBuf::from(name), message }
}

/// Opens `name` with GDAL. A `.SAFE` directory GDAL does not take as-is is opened through its
/// manifest or metadata file.
fn open(name: &str) -> Result<Dataset, TilingError> {
    let first = match Dataset::open(name) {
        Ok(ds) => return Ok(ds),
        Err(e) => e,
    };
    let dir = Path::new(name);
    if dir.is_dir() {
        for manifest in SAFE_MANIFESTS {
            let inner = dir.join(manifest);
            if inner.is_file()
                && let Ok(ds) = Dataset::open(&inner)
            {
                return Ok(ds);
            }
        }
    }
    Err(format_error(name, format!("GDAL cannot open it: {first}")))
}

/// Reads every band of the raster GDAL opens under `path_or_gdal_name`. That can be a file (`.jp2`,
/// `.tif`, `.nc` with a single variable …), a `.SAFE` directory or a subdataset name such as
/// `NETCDF:"scene.nc":blue` or `SENTINEL2_L2A:/…/MTD_MSIL2A.xml:10m:EPSG_32633`.
///
/// See the [module docs](self) for how types, nodata and georeferencing are mapped. Errors are
/// [`TilingError::Format`] and name the dataset and GDAL's message.
pub fn read_with_gdal(path_or_gdal_name: &str) -> Result<Raster, TilingError> {
    let name = path_or_gdal_name;
    let ds = open(name)?;
    let (width, height) = ds.raster_size();
    let bands = ds.raster_count();
    if bands == 0 {
        let subs = subdatasets_of(&ds);
        let message = if subs.is_empty() {
            "GDAL opens it but it has no raster bands".to_string()
        } else {
            let names: Vec<&str> = subs.iter().map(|(n, _)| n.as_str()).collect();
            format!("it has no bands of its own; open one of its subdatasets: {}", names.join(", "))
        };
        return Err(format_error(name, message));
    }
    if width == 0 || height == 0 {
        return Err(format_error(name, format!("empty raster ({width}×{height})")));
    }
    let plane = width
        .checked_mul(height)
        .filter(|p| p.checked_mul(bands).is_some())
        .ok_or_else(|| format_error(name, format!("{width}×{height}×{bands} samples overflow")))?;

    let mut data = vec![0f32; plane * bands];
    let mut dtype: Option<RasterDtype> = None;
    let mut nodata = None;
    for (b, out) in data.chunks_exact_mut(plane).enumerate() {
        let band = ds.rasterband(b + 1).map_err(|e| format_error(name, format!("band {}: {e}", b + 1)))?;
        let band_dtype = match band.band_type() {
            GdalDataType::UInt8 => RasterDtype::U8,
            GdalDataType::UInt16 => RasterDtype::U16,
            GdalDataType::Int16 => RasterDtype::I16,
            GdalDataType::Float32 => RasterDtype::F32,
            GdalDataType::Unknown => {
                return Err(format_error(
                    name,
                    format!("band {}: complex or unknown sample type; only real bands are read", b + 1),
                ));
            }
            // Every other real type: read as f32 (may round, see the module docs).
            _ => RasterDtype::F32,
        };
        if b == 0 {
            nodata = band.no_data_value();
        }
        dtype = Some(match dtype {
            Some(d) if d != band_dtype => RasterDtype::F32,
            _ => band_dtype,
        });
        band.read_into_slice::<f32>((0, 0), (width, height), (width, height), out, None)
            .map_err(|e| format_error(name, format!("reading band {}: {e}", b + 1)))?;
    }

    Ok(Raster {
        source: PathBuf::from(name),
        width,
        height,
        bands,
        dtype: dtype.unwrap_or(RasterDtype::F32), // bands >= 1, so always set
        nodata,
        geo: geo_info(&ds),
        data,
    })
}

/// The georeferencing of `ds`: `None` without an affine geotransform (e.g. GCP-only datasets).
fn geo_info(ds: &Dataset) -> Option<GeoInfo> {
    let geotransform = ds.geo_transform().ok()?;
    let (epsg, crs) = match ds.spatial_ref() {
        Ok(srs) => {
            let epsg = epsg_code(&srs).or_else(|| {
                // Compound (horizontal + vertical) CRS: the horizontal part's code, like the GeoTIFF reader.
                let wkt = srs.to_wkt().ok().filter(|_| srs.is_compound())?;
                epsg_code(&SpatialRef::from_wkt(horizontal_wkt(&wkt)?).ok()?)
            });
            let crs = match epsg {
                Some(code) => Some(format!("EPSG:{code}")),
                None => srs.name().filter(|n| !n.is_empty()),
            };
            (epsg, crs)
        }
        Err(_) => (None, None),
    };
    Some(GeoInfo { geotransform, epsg, crs })
}

/// The EPSG code of `srs`'s root, if its authority is EPSG.
fn epsg_code(srs: &SpatialRef) -> Option<u32> {
    match srs.auth_name().as_deref() {
        Some(auth) if auth.eq_ignore_ascii_case("EPSG") => srs.auth_code().ok().and_then(|c| u32::try_from(c).ok()),
        _ => None,
    }
}

/// The first `PROJCS[…]` or `GEOGCS[…]` node of a WKT1 `COMPD_CS` (its horizontal CRS).
fn horizontal_wkt(wkt: &str) -> Option<&str> {
    let start = ["PROJCS[", "GEOGCS["].iter().filter_map(|k| wkt.find(k)).min()?;
    let (mut depth, mut quoted) = (0usize, false);
    for (i, ch) in wkt[start..].char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(&wkt[start..=start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The subdatasets GDAL lists for `path` (a NetCDF/HDF file, a `.SAFE` product …), as
/// `(name, description)` pairs in GDAL's order. Each name can be passed to [`read_with_gdal`]. A
/// dataset without subdatasets gives an empty list.
pub fn subdatasets(path: impl AsRef<Path>) -> Result<Vec<(String, String)>, TilingError> {
    let path = path.as_ref();
    let name = path.to_str().ok_or_else(|| TilingError::Format {
        path: path.to_path_buf(),
        message: "the path is not valid UTF-8, which GDAL names need".to_string(),
    })?;
    Ok(subdatasets_of(&open(name)?))
}

/// Parses the `SUBDATASETS` metadata domain (`SUBDATASET_<n>_NAME=…`, `SUBDATASET_<n>_DESC=…`).
fn subdatasets_of(ds: &Dataset) -> Vec<(String, String)> {
    let mut entries: Vec<(usize, String, String)> = Vec::new();
    for item in ds.metadata_domain("SUBDATASETS").unwrap_or_default() {
        let Some((key, value)) = item.split_once('=') else { continue };
        let Some(rest) = key.strip_prefix("SUBDATASET_") else { continue };
        let Some((index, kind)) = rest.split_once('_') else { continue };
        let Ok(index) = index.parse::<usize>() else { continue };
        let pos = match entries.iter().position(|(i, _, _)| *i == index) {
            Some(pos) => pos,
            None => {
                entries.push((index, String::new(), String::new()));
                entries.len() - 1
            }
        };
        match kind {
            "NAME" => entries[pos].1 = value.to_string(),
            "DESC" => entries[pos].2 = value.to_string(),
            _ => {}
        }
    }
    entries.sort_by_key(|(i, _, _)| *i);
    entries.into_iter().filter(|(_, n, _)| !n.is_empty()).map(|(_, n, d)| (n, d)).collect()
}
