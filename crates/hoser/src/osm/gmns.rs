//! GMNS (`node.csv`, `link.csv`) plus map-matched GPS journeys (`gps.csv`, `expected_routes.csv`,
//! the layout of the `mapmatching4gmns` I-95 example) → LibCity files.
//!
//! * `roadmap.geo`: one row per link, in ascending `link_id` order (road id = row index).
//!   `coordinates` come from the WKT `LINESTRING` in `geometry`; `highway` is `facility_type`, or
//!   `motorway` where that is empty; `length` is the link's GMNS `length` (metres). Extra columns:
//!   `link_id, osm_way_id, from_node_id, to_node_id, geometry_length` (haversine length of the WKT,
//!   which differs from `length` on a few links), `free_speed, lanes`.
//! * `roadmap.rel`: link `a` → link `b` whenever `a.to_node_id == b.from_node_id`, ordered by `a`
//!   then `b`. U-turn pairs (`b.to_node_id == a.from_node_id`) are kept, as in the GMNS graph; they
//!   are counted in [`GmnsDataset::u_turn_relations`].
//! * Trajectories: one per row of `expected_routes.csv` (`journey_id`, `link_ids`), in file order;
//!   `rid_list` maps each link id to its road id. Every consecutive pair must be a successor pair,
//!   otherwise the conversion fails. `time_list` holds, for each link, the time at which the
//!   journey's GPS trace (fixes sorted by `capture_time`, joined into a polyline) passes closest to
//!   the link's first point, linearly interpolated between the two fixes around that closest
//!   point and rounded to the second. The search only moves forward along the trace, so times never
//!   decrease; a link entered before the first fix gets the first fix's time.
//! * Split, fixed: routes 1–3 → `train.csv`, 4 → `val.csv`, 5 and later → `test.csv`. Columns
//!   `traj_id,journey_id,rid_list,time_list,synthetic` with `synthetic` = 0 (real GPS, real routes
//!   as matched by the upstream map matcher).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    EARTH_RADIUS_M, OsmError, coordinates_json, create_dir, polyline_length_m, rid_list, time_list, write_csv,
    write_rel,
};

/// One GMNS link as a LibCity road.
#[derive(Clone, Debug, PartialEq)]
pub struct GmnsLink {
    /// GMNS `link_id`.
    pub link_id: i64,
    /// GMNS `osm_way_id` text (may be empty).
    pub osm_way_id: String,
    /// GMNS `from_node_id`.
    pub from_node_id: i64,
    /// GMNS `to_node_id`.
    pub to_node_id: i64,
    /// `facility_type`, or `motorway` where empty.
    pub highway: String,
    /// `[lon, lat]` points of the WKT geometry.
    pub coordinates: Vec<[f64; 2]>,
    /// GMNS `length` in metres.
    pub length: f64,
    /// GMNS `free_speed` text (km/h in osm2gmns output; may be empty).
    pub free_speed: String,
    /// GMNS `lanes` text (may be empty).
    pub lanes: String,
}

/// One journey as a LibCity trajectory.
#[derive(Clone, Debug, PartialEq)]
pub struct GmnsTrajectory {
    /// `journey_id` from `expected_routes.csv`.
    pub journey_id: String,
    /// Road ids (row indices of `roadmap.geo`).
    pub roads: Vec<usize>,
    /// Unix seconds, one per road, non-decreasing.
    pub times: Vec<i64>,
    /// Largest distance (metres) between a link's first point and the GPS trace.
    pub max_snap_m: f64,
}

/// A converted GMNS data set.
#[derive(Clone, Debug, PartialEq)]
pub struct GmnsDataset {
    /// Links in road-id order.
    pub links: Vec<GmnsLink>,
    /// Successor pairs in `rel` order.
    pub successors: Vec<(usize, usize)>,
    /// How many successor pairs are U-turns (`b` goes back to `a`'s from-node).
    pub u_turn_relations: usize,
    /// Trajectories in `expected_routes.csv` order.
    pub trajectories: Vec<GmnsTrajectory>,
}

/// Counts of what [`gmns_to_libcity`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GmnsSummary {
    /// Rows of `roadmap.geo`.
    pub links: usize,
    /// Rows of `roadmap.rel`.
    pub relations: usize,
    /// U-turn pairs among them.
    pub u_turn_relations: usize,
    /// Trajectories written.
    pub trajectories: usize,
    /// Trajectories in train, val, test.
    pub split: [usize; 3],
    /// Largest link-to-trace distance met while timing links, metres.
    pub max_snap_m: f64,
}

struct Table {
    path: std::path::PathBuf,
    header: csv::StringRecord,
    rows: Vec<csv::StringRecord>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, OsmError> {
        let csv_err = |source| OsmError::Csv { path: path.to_path_buf(), source };
        let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
        let header = reader.headers().map_err(csv_err)?.clone();
        let rows = reader.records().collect::<Result<Vec<_>, _>>().map_err(csv_err)?;
        Ok(Self { path: path.to_path_buf(), header, rows })
    }

    fn invalid(&self, message: String) -> OsmError {
        OsmError::Invalid { path: self.path.clone(), message }
    }

    fn column(&self, name: &str) -> Result<usize, OsmError> {
        self.header.iter().position(|h| h == name).ok_or_else(|| self.invalid(format!("no `{name}` column")))
    }

    fn parse<T: std::str::FromStr>(&self, row: usize, col: usize) -> Result<T, OsmError> {
        let text = self.rows[row].get(col).unwrap_or("").trim();
        text.parse()
            .map_err(|_| self.invalid(format!("row {}: `{}` = {text:?} is not a number", row + 2, &self.header[col])))
    }
}

fn parse_wkt_linestring(text: &str) -> Option<Vec<[f64; 2]>> {
    let body = text.trim().strip_prefix("LINESTRING")?.trim().strip_prefix('(')?.strip_suffix(')')?;
    let mut points = Vec::new();
    for pair in body.split(',') {
        let mut it = pair.split_whitespace();
        let lon = it.next()?.parse().ok()?;
        let lat = it.next()?.parse().ok()?;
        points.push([lon, lat]);
    }
    (points.len() >= 2).then_some(points)
}

/// Reads `link.csv`, `gps.csv` and `expected_routes.csv` from `raw_dir` and converts them as the
/// module docs describe. `node.csv`, when present, is only used to check that every link's end
/// nodes exist.
pub fn convert_gmns(raw_dir: &Path) -> Result<GmnsDataset, OsmError> {
    let links_t = Table::read(&raw_dir.join("link.csv"))?;
    let (c_id, c_way, c_from, c_to, c_geom, c_len, c_fac, c_speed, c_lanes) = (
        links_t.column("link_id")?,
        links_t.column("osm_way_id")?,
        links_t.column("from_node_id")?,
        links_t.column("to_node_id")?,
        links_t.column("geometry")?,
        links_t.column("length")?,
        links_t.column("facility_type")?,
        links_t.column("free_speed")?,
        links_t.column("lanes")?,
    );
    let mut links = Vec::with_capacity(links_t.rows.len());
    for (i, row) in links_t.rows.iter().enumerate() {
        let coordinates = parse_wkt_linestring(&row[c_geom])
            .ok_or_else(|| links_t.invalid(format!("row {}: geometry is not a WKT LINESTRING", i + 2)))?;
        let facility = row[c_fac].trim();
        links.push(GmnsLink {
            link_id: links_t.parse(i, c_id)?,
            osm_way_id: row[c_way].trim().to_string(),
            from_node_id: links_t.parse(i, c_from)?,
            to_node_id: links_t.parse(i, c_to)?,
            highway: if facility.is_empty() { "motorway".to_string() } else { facility.to_string() },
            coordinates,
            length: links_t.parse(i, c_len)?,
            free_speed: row[c_speed].trim().to_string(),
            lanes: row[c_lanes].trim().to_string(),
        });
    }
    links.sort_by_key(|l| l.link_id);
    if let Some(w) = links.windows(2).find(|w| w[0].link_id == w[1].link_id) {
        return Err(links_t.invalid(format!("link_id {} occurs twice", w[0].link_id)));
    }
    let road_of: HashMap<i64, usize> = links.iter().enumerate().map(|(i, l)| (l.link_id, i)).collect();

    let node_path = raw_dir.join("node.csv");
    if node_path.exists() {
        let nodes_t = Table::read(&node_path)?;
        let c_node = nodes_t.column("node_id")?;
        let ids = (0..nodes_t.rows.len()).map(|i| nodes_t.parse(i, c_node)).collect::<Result<HashSet<i64>, _>>()?;
        if let Some(l) = links.iter().find(|l| !ids.contains(&l.from_node_id) || !ids.contains(&l.to_node_id)) {
            return Err(links_t.invalid(format!("link {} names a node missing from node.csv", l.link_id)));
        }
    }

    let mut starting_at: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, l) in links.iter().enumerate() {
        starting_at.entry(l.from_node_id).or_default().push(i);
    }
    let mut successors = Vec::new();
    let mut u_turn_relations = 0;
    for (a, link) in links.iter().enumerate() {
        for &b in starting_at.get(&link.to_node_id).map(Vec::as_slice).unwrap_or(&[]) {
            u_turn_relations += usize::from(links[b].to_node_id == link.from_node_id);
            successors.push((a, b));
        }
    }
    let pair_set: HashSet<(usize, usize)> = successors.iter().copied().collect();

    let gps_t = Table::read(&raw_dir.join("gps.csv"))?;
    let (g_j, g_t, g_lat, g_lon) = (
        gps_t.column("journey_id")?,
        gps_t.column("capture_time")?,
        gps_t.column("latitude")?,
        gps_t.column("longitude")?,
    );
    let mut fixes: HashMap<String, Vec<(i64, [f64; 2])>> = HashMap::new();
    for (i, row) in gps_t.rows.iter().enumerate() {
        let fix = (gps_t.parse(i, g_t)?, [gps_t.parse(i, g_lon)?, gps_t.parse(i, g_lat)?]);
        fixes.entry(row[g_j].trim().to_string()).or_default().push(fix);
    }
    for trace in fixes.values_mut() {
        trace.sort_by_key(|f| f.0);
    }

    let routes_t = Table::read(&raw_dir.join("expected_routes.csv"))?;
    let (r_j, r_links) = (routes_t.column("journey_id")?, routes_t.column("link_ids")?);
    let mut trajectories = Vec::new();
    for (i, row) in routes_t.rows.iter().enumerate() {
        let journey_id = row[r_j].trim().to_string();
        let mut roads = Vec::new();
        for text in row[r_links].split(',') {
            let id: i64 =
                text.trim().parse().map_err(|_| routes_t.invalid(format!("row {}: bad link id {text:?}", i + 2)))?;
            let road = road_of.get(&id).ok_or_else(|| routes_t.invalid(format!("row {}: unknown link {id}", i + 2)))?;
            roads.push(*road);
        }
        if let Some(w) = roads.windows(2).find(|w| !pair_set.contains(&(w[0], w[1]))) {
            return Err(routes_t.invalid(format!(
                "journey {journey_id}: link {} is not followed by link {} in the network",
                links[w[0]].link_id, links[w[1]].link_id
            )));
        }
        let trace = fixes
            .get(&journey_id)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| gps_t.invalid(format!("no GPS fixes for journey {journey_id}")))?;
        let entries: Vec<[f64; 2]> = roads.iter().map(|&r| links[r].coordinates[0]).collect();
        let (times, max_snap_m) = time_points_along_trace(trace, &entries);
        trajectories.push(GmnsTrajectory { journey_id, roads, times, max_snap_m });
    }
    Ok(GmnsDataset { links, successors, u_turn_relations, trajectories })
}

/// For each point (in order), the interpolated time at which the time-sorted `trace` passes closest
/// to it, searching only forward from the previous point's match. Returns the times and the largest
/// point-to-trace distance in metres.
fn time_points_along_trace(trace: &[(i64, [f64; 2])], points: &[[f64; 2]]) -> (Vec<i64>, f64) {
    let lat0 = trace.iter().map(|f| f.1[1]).sum::<f64>() / trace.len() as f64;
    let k = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
    let xy = |p: [f64; 2]| [p[0] * k * lat0.to_radians().cos(), p[1] * k];
    let fixes: Vec<[f64; 2]> = trace.iter().map(|f| xy(f.1)).collect();
    let mut from = 0usize;
    let mut last_time = i64::MIN;
    let mut max_snap = 0.0f64;
    let mut times = Vec::with_capacity(points.len());
    for &p in points {
        let p = xy(p);
        // (distance, segment index, parameter along the segment)
        let mut best = (f64::INFINITY, from, 0.0);
        if fixes.len() == 1 {
            best = (((p[0] - fixes[0][0]).powi(2) + (p[1] - fixes[0][1]).powi(2)).sqrt(), 0, 0.0);
        }
        for s in from..fixes.len().saturating_sub(1) {
            let (a, b) = (fixes[s], fixes[s + 1]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let d = ((a[0] + t * dx - p[0]).powi(2) + (a[1] + t * dy - p[1]).powi(2)).sqrt();
            if d < best.0 {
                best = (d, s, t);
            }
        }
        let (d, s, t) = best;
        from = s;
        max_snap = max_snap.max(d);
        let time = if fixes.len() == 1 {
            trace[0].0
        } else {
            let (t0, t1) = (trace[s].0 as f64, trace[s + 1].0 as f64);
            (t0 + t * (t1 - t0)).round() as i64
        };
        last_time = last_time.max(time);
        times.push(last_time);
    }
    (times, max_snap)
}

impl GmnsDataset {
    /// Writes `roadmap.geo`, `roadmap.rel`, `train.csv`, `val.csv` and `test.csv` into `dir`.
    pub fn write_libcity(&self, dir: &Path) -> Result<GmnsSummary, OsmError> {
        create_dir(dir)?;
        let header = [
            "geo_id",
            "type",
            "coordinates",
            "highway",
            "length",
            "link_id",
            "osm_way_id",
            "from_node_id",
            "to_node_id",
            "geometry_length",
            "free_speed",
            "lanes",
        ];
        let rows = self.links.iter().enumerate().map(|(id, l)| {
            vec![
                id.to_string(),
                "LineString".to_string(),
                coordinates_json(&l.coordinates),
                l.highway.clone(),
                l.length.to_string(),
                l.link_id.to_string(),
                l.osm_way_id.clone(),
                l.from_node_id.to_string(),
                l.to_node_id.to_string(),
                format!("{:.3}", polyline_length_m(&l.coordinates)),
                l.free_speed.clone(),
                l.lanes.clone(),
            ]
        });
        write_csv(&dir.join("roadmap.geo"), &header, rows)?;
        write_rel(&dir.join("roadmap.rel"), &self.successors)?;

        let mut split = [0usize; 3];
        for (name, which) in [("train.csv", 0usize), ("val.csv", 1), ("test.csv", 2)] {
            let rows: Vec<Vec<String>> = self
                .trajectories
                .iter()
                .enumerate()
                .filter(|(i, _)| split_of(*i) == which)
                .map(|(i, t)| {
                    vec![i.to_string(), t.journey_id.clone(), rid_list(&t.roads), time_list(&t.times), "0".to_string()]
                })
                .collect();
            split[which] = rows.len();
            write_csv(&dir.join(name), &["traj_id", "journey_id", "rid_list", "time_list", "synthetic"], rows)?;
        }
        Ok(GmnsSummary {
            links: self.links.len(),
            relations: self.successors.len(),
            u_turn_relations: self.u_turn_relations,
            trajectories: self.trajectories.len(),
            split,
            max_snap_m: self.trajectories.iter().map(|t| t.max_snap_m).fold(0.0, f64::max),
        })
    }
}

/// Fixed split of the `i`-th route: 0 = train (routes 1–3), 1 = val (route 4), 2 = test (the rest).
fn split_of(i: usize) -> usize {
    match i {
        0..=2 => 0,
        3 => 1,
        _ => 2,
    }
}

/// [`convert_gmns`] then [`GmnsDataset::write_libcity`].
pub fn gmns_to_libcity(raw_dir: &Path, out_dir: &Path) -> Result<GmnsSummary, OsmError> {
    convert_gmns(raw_dir)?.write_libcity(out_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wkt_linestring() {
        assert_eq!(parse_wkt_linestring("LINESTRING (1 2,3.5 -4)"), Some(vec![[1.0, 2.0], [3.5, -4.0]]));
        assert_eq!(parse_wkt_linestring("POINT (1 2)"), None);
        assert_eq!(parse_wkt_linestring("LINESTRING (1 2)"), None);
    }

    #[test]
    fn trace_timing_interpolates_and_never_goes_back() {
        // A trace due north, 0.001° (≈111 m) per 10 s.
        let trace: Vec<(i64, [f64; 2])> = (0..5).map(|i| (100 + 10 * i, [0.0, 0.001 * i as f64])).collect();
        let (times, snap) =
            time_points_along_trace(&trace, &[[0.0, -0.001], [0.0, 0.0015], [0.0005, 0.0025], [0.0, 0.001]]);
        assert_eq!(times, vec![100, 115, 125, 125]);
        assert!(snap > 55.0 && snap < 112.0, "{snap}");
    }
}
