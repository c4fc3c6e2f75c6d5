//! Geometry used by the features, each a transcription of what the reference calls so the numbers
//! match it: the `haversine` package's great-circle distance, shapely's (GEOS) LineString centroid and
//! HOSER's `utils.get_angle`.

use std::f64::consts::PI;

/// Mean Earth radius in metres used by the Python `haversine` package (`6371.0088 km × 1000`).
pub const EARTH_RADIUS_M: f64 = 6371.0088 * 1000.0;

/// Great-circle distance in metres between two points given in degrees, with the same operation order
/// as `haversine.haversine_vector(..., 'm')`.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (lat1, lon1, lat2, lon2) = (lat1.to_radians(), lon1.to_radians(), lat2.to_radians(), lon2.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let d = (dlat * 0.5).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_M * d.sqrt().asin()
}

/// Centroid `[x, y]` of a LineString exactly as GEOS computes it for shapely's `LineString.centroid`:
/// the average of the segment midpoints weighted by the planar segment lengths, in raw coordinate
/// space (degrees). Zero-length segments are skipped; a line of total length zero has its first point
/// as centroid. An empty slice gives `None`.
pub fn line_centroid(points: &[[f64; 2]]) -> Option<[f64; 2]> {
    let first = *points.first()?;
    let (mut sum_x, mut sum_y, mut total) = (0.0_f64, 0.0_f64, 0.0_f64);
    for w in points.windows(2) {
        let (p, q) = (w[0], w[1]);
        let (dx, dy) = (p[0] - q[0], p[1] - q[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        total += len;
        sum_x += len * ((p[0] + q[0]) / 2.0);
        sum_y += len * ((p[1] + q[1]) / 2.0);
    }
    Some(if total > 0.0 { [sum_x / total, sum_y / total] } else { first })
}

/// HOSER's `utils.get_angle(lat1, lon1, lat2, lon2)`: the direction of travel from point 1 to point 2,
/// `atan2(lat2 − lat1, cos(lat1·π/180)·(lon2 − lon1))` mapped into `[0, 2π)`.
pub fn get_angle(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let dy = lat2 - lat1;
    let dx = (PI / 180.0 * lat1).cos() * (lon2 - lon1);
    let angle = dy.atan2(dx);
    if angle < 0.0 { angle + PI * 2.0 } else { angle }
}

/// Heading of the straight line from `from` to `to`, both `[lon, lat]`, with the coordinates in their
/// correct places (`get_angle(lat_from, lon_from, lat_to, lon_to)`).
pub fn heading(from: [f64; 2], to: [f64; 2]) -> f64 {
    get_angle(from[1], from[0], to[1], to[0])
}

/// The reference's `metric_angle` heading with its argument swap: it passes `[lon, lat]` pairs into
/// `get_angle(lat1, lon1, lat2, lon2)`, so longitude plays latitude and vice versa.
pub fn heading_swapped(from: [f64; 2], to: [f64; 2]) -> f64 {
    get_angle(from[0], from[1], to[0], to[1])
}

/// `|a − b|` folded into `[0, π]`, in `f64` (used by the road-graph edge attribute).
pub fn angle_difference(a: f64, b: f64) -> f64 {
    let d = (a - b).abs();
    if d > PI { PI * 2.0 - d } else { d }
}
