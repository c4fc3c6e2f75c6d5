//! GeoTIFF georeferencing: the affine geotransform from ModelPixelScale + ModelTiepoint or
//! ModelTransformation, and the CRS from the GeoKey directory. Pure functions over the tag
//! values, so they can be tested without files.

use crate::tile::GeoInfo;

/// `GTModelTypeGeoKey`: 1 projected, 2 geographic, 3 geocentric.
const GT_MODEL_TYPE: u16 = 1024;
/// `GTRasterTypeGeoKey`: 1 PixelIsArea, 2 PixelIsPoint.
const GT_RASTER_TYPE: u16 = 1025;
/// `GTCitationGeoKey` (ASCII).
const GT_CITATION: u16 = 1026;
/// `GeographicTypeGeoKey`: EPSG code of the geographic CRS.
const GEOGRAPHIC_TYPE: u16 = 2048;
/// `GeogCitationGeoKey` (ASCII).
const GEOG_CITATION: u16 = 2049;
/// `ProjectedCSTypeGeoKey`: EPSG code of the projected CRS.
const PROJECTED_CS_TYPE: u16 = 3072;
/// `PCSCitationGeoKey` (ASCII).
const PCS_CITATION: u16 = 3073;

/// TIFF tag that holds a GeoKey's value when it is not stored inline.
const GEO_ASCII_PARAMS_TAG: u16 = 34737;
const RASTER_PIXEL_IS_POINT: u16 = 2;
const MODEL_TYPE_PROJECTED: u16 = 1;
const MODEL_TYPE_GEOGRAPHIC: u16 = 2;
/// 32767 means "user-defined" in every GeoKey code space; 0 "undefined".
const USER_DEFINED: u16 = 32767;

/// The georeferencing tags of one image, as read from the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GeoTags {
    /// GeoKeyDirectoryTag (34735).
    pub geo_keys: Option<Vec<u16>>,
    /// GeoAsciiParamsTag (34737).
    pub geo_ascii: Option<String>,
    /// ModelPixelScaleTag (33550): `(sx, sy, sz)`.
    pub pixel_scale: Option<Vec<f64>>,
    /// ModelTiepointTag (33922): `(i, j, k, x, y, z)` per tiepoint.
    pub tiepoints: Option<Vec<f64>>,
    /// ModelTransformationTag (34264): a 4×4 row-major matrix.
    pub transformation: Option<Vec<f64>>,
}

/// A GeoKey's value: a SHORT stored inline or text from GeoAsciiParams (double-valued keys are
/// not needed for the transform or the EPSG code and are skipped).
#[derive(Debug, Clone, PartialEq)]
enum KeyValue {
    Short(u16),
    Ascii(String),
}

/// Parses the GeoKey directory into `(key id, value)` pairs.
fn parse_keys(dir: &[u16], ascii: Option<&str>) -> Result<Vec<(u16, KeyValue)>, String> {
    if dir.len() < 4 {
        return Err(format!("GeoKeyDirectory has {} values, fewer than its 4-value header", dir.len()));
    }
    let count = usize::from(dir[3]);
    if dir.len() < 4 + 4 * count {
        return Err(format!("GeoKeyDirectory declares {count} keys but holds only {} values", dir.len()));
    }
    let mut keys = Vec::with_capacity(count);
    for entry in dir[4..4 + 4 * count].chunks_exact(4) {
        let (key, location, n, value) = (entry[0], entry[1], usize::from(entry[2]), usize::from(entry[3]));
        match location {
            0 => keys.push((key, KeyValue::Short(entry[3]))),
            GEO_ASCII_PARAMS_TAG => {
                // Count includes the '|' terminator; be lenient about strings cut short.
                let text = ascii.unwrap_or("");
                let end = (value + n).min(text.len());
                let text = text.get(value.min(end)..end).unwrap_or("");
                let text = text.trim_end_matches(['|', '\0']).trim();
                keys.push((key, KeyValue::Ascii(text.to_string())));
            }
            _ => {} // GeoDoubleParams and other locations: not used here.
        }
    }
    Ok(keys)
}

fn short(keys: &[(u16, KeyValue)], id: u16) -> Option<u16> {
    keys.iter().find_map(|(k, v)| match v {
        KeyValue::Short(s) if *k == id => Some(*s),
        _ => None,
    })
}

fn ascii(keys: &[(u16, KeyValue)], id: u16) -> Option<&str> {
    keys.iter().find_map(|(k, v)| match v {
        KeyValue::Ascii(s) if *k == id && !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

/// The affine transform from the model tags (GDAL order, pixel corner at (0, 0)), before any
/// PixelIsPoint adjustment. `None` when the file has no affine georeferencing (no tags, or
/// several tiepoints without a pixel scale, i.e. ground control points).
fn raw_geotransform(tags: &GeoTags) -> Result<Option<[f64; 6]>, String> {
    if let Some(m) = &tags.transformation {
        if m.len() != 16 {
            return Err(format!("ModelTransformation has {} values, expected 16", m.len()));
        }
        return Ok(Some([m[3], m[0], m[1], m[7], m[4], m[5]]));
    }
    match (&tags.pixel_scale, &tags.tiepoints) {
        (Some(scale), Some(tie)) => {
            if scale.len() < 2 {
                return Err(format!("ModelPixelScale has {} values, expected 3", scale.len()));
            }
            if tie.len() < 6 {
                return Err(format!("ModelTiepoint has {} values, expected a multiple of 6", tie.len()));
            }
            // GDAL: the first tiepoint anchors the grid, the y scale is stored positive for
            // north-up images.
            let (sx, sy) = (scale[0], scale[1]);
            let (i, j, x, y) = (tie[0], tie[1], tie[3], tie[4]);
            Ok(Some([x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]))
        }
        _ => Ok(None),
    }
}

/// Georeferencing of an image from its GeoTIFF tags.
///
/// * Geotransform: ModelTransformation (34264) if present, else ModelPixelScale (33550) +
///   the first ModelTiepoint (33922). Ground control points alone (several tiepoints, no pixel
///   scale) are not an affine transform: the result is `None`.
/// * PixelIsPoint (`GTRasterTypeGeoKey` = 2): the model coordinates refer to pixel centres, so
///   the origin is moved by half a pixel, `x0 -= (dx + rx) / 2`, `y0 -= (ry + dy) / 2`, giving the
///   corner-based transform GDAL reports by default (`GTIFF_POINT_GEO_IGNORE=NO`).
/// * EPSG: `ProjectedCSTypeGeoKey` (3072) unless the model type is geographic, else
///   `GeographicTypeGeoKey` (2048) unless the model type is projected; 0 and 32767
///   (user-defined) are not codes. `crs` is then `EPSG:<code>`, otherwise the first non-empty
///   citation among PCSCitation (3073), GTCitation (1026) and GeogCitation (2049).
pub(crate) fn geo_info(tags: &GeoTags) -> Result<Option<GeoInfo>, String> {
    let keys = match &tags.geo_keys {
        Some(dir) => parse_keys(dir, tags.geo_ascii.as_deref())?,
        None => Vec::new(),
    };
    let Some(mut gt) = raw_geotransform(tags)? else {
        return Ok(None);
    };
    if short(&keys, GT_RASTER_TYPE) == Some(RASTER_PIXEL_IS_POINT) {
        gt[0] -= (gt[1] + gt[2]) * 0.5;
        gt[3] -= (gt[4] + gt[5]) * 0.5;
    }
    if gt.iter().any(|v| !v.is_finite()) {
        return Err(format!("geotransform {gt:?} is not finite"));
    }
    let code = |id| short(&keys, id).filter(|&c| c != 0 && c != USER_DEFINED).map(u32::from);
    let model = short(&keys, GT_MODEL_TYPE);
    let epsg = match model {
        Some(MODEL_TYPE_PROJECTED) => code(PROJECTED_CS_TYPE),
        Some(MODEL_TYPE_GEOGRAPHIC) => code(GEOGRAPHIC_TYPE),
        _ => code(PROJECTED_CS_TYPE).or_else(|| code(GEOGRAPHIC_TYPE)),
    };
    let crs = match epsg {
        Some(code) => Some(format!("EPSG:{code}")),
        None => [PCS_CITATION, GT_CITATION, GEOG_CITATION].iter().find_map(|&id| ascii(&keys, id)).map(str::to_string),
    };
    Ok(Some(GeoInfo { geotransform: gt, epsg, crs }))
}

/// The geotransform of a window whose top-left pixel is `(row, col)` of the image with
/// transform `gt`: the origin moves to that pixel's corner, the pixel size and rotation stay.
pub fn window_geotransform(gt: &[f64; 6], row: usize, col: usize) -> [f64; 6] {
    let (r, c) = (row as f64, col as f64);
    [gt[0] + c * gt[1] + r * gt[2], gt[1], gt[2], gt[3] + c * gt[4] + r * gt[5], gt[4], gt[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[[u16; 4]]) -> Vec<u16> {
        let mut dir = vec![1, 1, 0, entries.len() as u16];
        for e in entries {
            dir.extend_from_slice(e);
        }
        dir
    }

    #[test]
    fn scale_and_tiepoint_give_a_north_up_transform() {
        let tags = GeoTags {
            pixel_scale: Some(vec![30.0, 30.0, 0.0]),
            tiepoints: Some(vec![0.0, 0.0, 0.0, 500_000.0, 4_000_000.0, 0.0]),
            geo_keys: Some(keys(&[[1024, 0, 1, 1], [1025, 0, 1, 1], [3072, 0, 1, 32633]])),
            ..GeoTags::default()
        };
        let geo = geo_info(&tags).unwrap().unwrap();
        assert_eq!(geo.geotransform, [500_000.0, 30.0, 0.0, 4_000_000.0, 0.0, -30.0]);
        assert_eq!(geo.epsg, Some(32633));
        assert_eq!(geo.crs.as_deref(), Some("EPSG:32633"));
    }

    #[test]
    fn a_tiepoint_away_from_the_origin_is_moved_back_to_pixel_zero() {
        let tags = GeoTags {
            pixel_scale: Some(vec![2.0, 3.0, 0.0]),
            tiepoints: Some(vec![10.0, 20.0, 0.0, 1000.0, 2000.0, 0.0]),
            ..GeoTags::default()
        };
        let geo = geo_info(&tags).unwrap().unwrap();
        assert_eq!(geo.geotransform, [980.0, 2.0, 0.0, 2060.0, 0.0, -3.0]);
        assert_eq!((geo.epsg, geo.crs), (None, None));
    }

    #[test]
    fn pixel_is_point_moves_the_origin_half_a_pixel_including_rotation() {
        let tags = GeoTags {
            transformation: Some(vec![
                1.5,
                -5.0,
                0.0,
                1_841_000.0,
                -5.0,
                -1.5,
                0.0,
                1_144_000.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                1.0,
            ]),
            geo_keys: Some(keys(&[[1024, 0, 1, 1], [1025, 0, 1, 2], [3072, 0, 1, 32611]])),
            ..GeoTags::default()
        };
        let geo = geo_info(&tags).unwrap().unwrap();
        assert_eq!(geo.geotransform, [1_841_001.75, 1.5, -5.0, 1_144_003.25, -5.0, -1.5]);
        assert_eq!(geo.epsg, Some(32611));
    }

    #[test]
    fn user_defined_codes_fall_back_to_the_citations() {
        let ascii = "UTM Zone 25|GCS Name = GRS 1980|".to_string();
        let tags = GeoTags {
            pixel_scale: Some(vec![90.0, 90.0, 0.0]),
            tiepoints: Some(vec![0.0, 0.0, 0.0, 1.0, 2.0, 0.0]),
            geo_keys: Some(keys(&[
                [1024, 0, 1, 1],
                [1026, 34737, 12, 0],
                [2048, 0, 1, 32767],
                [2049, 34737, 20, 12],
                [3072, 0, 1, 32767],
            ])),
            geo_ascii: Some(ascii),
            ..GeoTags::default()
        };
        let geo = geo_info(&tags).unwrap().unwrap();
        assert_eq!(geo.epsg, None);
        assert_eq!(geo.crs.as_deref(), Some("UTM Zone 25"));
    }

    #[test]
    fn geographic_model_uses_the_geographic_code_and_projected_ignores_it() {
        let base = GeoTags {
            pixel_scale: Some(vec![1.0, 1.0, 0.0]),
            tiepoints: Some(vec![0.0, 0.0, 0.0, -180.0, 90.0, 0.0]),
            ..GeoTags::default()
        };
        let geographic = GeoTags { geo_keys: Some(keys(&[[1024, 0, 1, 2], [2048, 0, 1, 4326]])), ..base.clone() };
        assert_eq!(geo_info(&geographic).unwrap().unwrap().epsg, Some(4326));
        // A projected CRS whose PCS is user-defined must not be reported as its datum's code.
        let projected =
            GeoTags { geo_keys: Some(keys(&[[1024, 0, 1, 1], [2048, 0, 1, 4326], [3072, 0, 1, 32767]])), ..base };
        assert_eq!(geo_info(&projected).unwrap().unwrap().epsg, None);
    }

    #[test]
    fn ground_control_points_alone_are_not_a_geotransform() {
        let tags = GeoTags {
            tiepoints: Some(vec![0.0, 0.0, 0.0, 10.0, 50.0, 0.0, 100.0, 0.0, 0.0, 11.0, 50.0, 0.0]),
            geo_keys: Some(keys(&[[1024, 0, 1, 2], [2048, 0, 1, 4326]])),
            ..GeoTags::default()
        };
        assert_eq!(geo_info(&tags).unwrap(), None);
    }

    #[test]
    fn malformed_tags_are_errors() {
        let short_dir = GeoTags {
            pixel_scale: Some(vec![1.0, 1.0, 0.0]),
            tiepoints: Some(vec![0.0; 6]),
            geo_keys: Some(vec![1, 1, 0, 3, 1024, 0, 1, 1]),
            ..GeoTags::default()
        };
        assert!(geo_info(&short_dir).unwrap_err().contains("declares 3 keys"));
        let bad_matrix = GeoTags { transformation: Some(vec![1.0; 6]), ..GeoTags::default() };
        assert!(geo_info(&bad_matrix).unwrap_err().contains("expected 16"));
    }

    #[test]
    fn window_transform_moves_the_origin_by_whole_pixels() {
        let gt = [100.0, 2.0, 0.5, 200.0, 0.25, -3.0];
        assert_eq!(window_geotransform(&gt, 0, 0), gt);
        assert_eq!(window_geotransform(&gt, 10, 4), [100.0 + 8.0 + 5.0, 2.0, 0.5, 200.0 + 1.0 - 30.0, 0.25, -3.0]);
    }
}
