//! OpenStreetMap `.osm.pbf` → LibCity road network (`roadmap.geo`, `roadmap.rel`), and the LibCity
//! writers shared with the trip simulator ([`crate::simulate`]) and the GMNS converter ([`gmns`]).
//!
//! # What the importer keeps
//!
//! * **Ways**: those whose `highway` tag is one of [`DRIVABLE_HIGHWAYS`] (`motorway` … `residential`,
//!   the five `*_link` classes, `living_street`, `unclassified`), plus `service` when
//!   [`ImportConfig::include_service`] is set. Ways tagged `area=yes` are dropped, and so, when
//!   [`ImportConfig::respect_access`] is set (the default), are ways whose `access`, `vehicle`,
//!   `motor_vehicle` or `motorcar` tag is `no` or `private`.
//! * **Segments**: every kept way is cut at its junction nodes: a node is a junction when it is the
//!   first or last node of a kept way, or when it occurs two or more times among all kept ways
//!   (a node shared by two ways, or visited twice by one). Consecutive repeated node refs are
//!   collapsed first. A way ref to a node missing from the file (a clipped extract) breaks the way
//!   there: the parts on either side are cut into segments separately, and the missing refs are
//!   counted in [`ImportStats::missing_node_refs`].
//! * **Direction**: each direction a segment can be driven in is its own directed road, as in
//!   LibCity. `oneway=yes|true|1` keeps the digitised direction only, `oneway=-1|reverse` the
//!   opposite one, `oneway=no|false|0` both. Without an explicit `oneway` tag, `highway=motorway` and
//!   `junction=roundabout|circular` are one-way in the digitised direction (the OSM defaults);
//!   everything else (including `oneway=reversible|alternating`) is two-way.
//! * **Geometry**: `coordinates` is `[[lon,lat],…]` of the road's nodes in driving order, written
//!   exactly (OSM stores nano-degree integers; the shortest decimal that round-trips is written).
//!   `length` is the haversine length in metres ([`EARTH_RADIUS_M`]), rounded to the millimetre
//!   (both directions of a segment get the same value).
//!   `highway` is the way's tag text, unchanged.
//! * **Order**: roads are sorted by way id, then segment index along the way, then the digitised
//!   direction before the reverse one. The row index is the road id (LibCity convention).
//! * **Successors** (`roadmap.rel`): road `a` → road `b` when `a`'s last node is `b`'s first node,
//!   except the immediate U-turn from `a` onto its reverse twin (same way, same segment, other
//!   direction); [`ImportConfig::u_turns`] can keep those at dead ends (where the twin is the only
//!   way on) or everywhere. Rows are ordered by `a`, then `b`; HOSER takes a road's candidate list
//!   in this file order.
//!
//! Columns written: `roadmap.geo`: `geo_id,type,coordinates,highway,length,oneway,osm_way_id,segment,u,v`
//! (`u`/`v` the first/last OSM node id, `oneway` 1 when the way is one-way); `roadmap.rel`:
//! `rel_id,type,origin_id,destination_id`.

pub mod gmns;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use osmpbf::{Element, ElementReader};
use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG, metres) used by [`haversine_m`].
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The `highway` classes the importer keeps by default (`service` is added by
/// [`ImportConfig::include_service`]).
pub const DRIVABLE_HIGHWAYS: &[&str] = &[
    "motorway",
    "motorway_link",
    "trunk",
    "trunk_link",
    "primary",
    "primary_link",
    "secondary",
    "secondary_link",
    "tertiary",
    "tertiary_link",
    "unclassified",
    "residential",
    "living_street",
];

/// Errors of the importer, the GMNS converter and the LibCity writers.
#[derive(Debug, thiserror::Error)]
pub enum OsmError {
    /// The `.osm.pbf` could not be decoded.
    #[error("reading {path}: {source}")]
    Pbf {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: osmpbf::Error,
    },
    /// A file could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be parsed or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV error.
        #[source]
        source: csv::Error,
    },
    /// The input is readable but its content is not what the converter needs.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Options of [`import_pbf`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportConfig {
    /// Also keep `highway=service` ways (driveways, parking aisles, alleys). Default `false`.
    pub include_service: bool,
    /// Drop ways whose `access`, `vehicle`, `motor_vehicle` or `motorcar` tag is `no` or `private`.
    /// Default `true`.
    pub respect_access: bool,
    /// Which successors from a road onto its own reverse twin (an immediate U-turn on the same
    /// segment) are kept. Default [`UTurns::Never`].
    pub u_turns: UTurns,
}

/// U-turn policy of [`ImportConfig::u_turns`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UTurns {
    /// No road has its reverse twin as a successor.
    #[default]
    Never,
    /// Only a road whose end node offers no other successor (a dead end) gets its twin.
    AtDeadEnds,
    /// Every two-way road gets its twin as a successor.
    Always,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self { include_service: false, respect_access: true, u_turns: UTurns::Never }
    }
}

/// One directed road (a row of `roadmap.geo`).
#[derive(Clone, Debug, PartialEq)]
pub struct Road {
    /// OSM id of the way the road lies on.
    pub way_id: i64,
    /// Index of the segment along the way (0-based, in digitised order).
    pub segment: u32,
    /// `true` when the road runs in the way's digitised direction.
    pub forward: bool,
    /// `true` when the way is one-way (the road has no reverse twin).
    pub oneway: bool,
    /// The way's `highway` tag text.
    pub highway: String,
    /// OSM node ids in driving order (at least two).
    pub nodes: Vec<i64>,
    /// `[lon, lat]` of each node, in driving order.
    pub coordinates: Vec<[f64; 2]>,
    /// Haversine length in metres, rounded to the millimetre (as written to `roadmap.geo`).
    pub length: f64,
}

/// Counts gathered by [`import_pbf`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStats {
    /// Ways in the file.
    pub ways_read: usize,
    /// Ways kept as drivable.
    pub ways_kept: usize,
    /// Way refs to nodes that are not in the file.
    pub missing_node_refs: usize,
    /// Undirected segments after splitting at junctions.
    pub segments: usize,
    /// Directed roads (rows of `roadmap.geo`).
    pub roads: usize,
    /// Successor pairs (rows of `roadmap.rel`).
    pub relations: usize,
    /// U-turn successors left out under [`ImportConfig::u_turns`].
    pub u_turns_dropped: usize,
}

/// A directed road network: roads in road-id order and their successor pairs in `rel` order.
#[derive(Clone, Debug, PartialEq)]
pub struct RoadNetwork {
    /// Roads; the index is the road id.
    pub roads: Vec<Road>,
    /// `(origin_id, destination_id)` successor pairs, ordered by origin then destination.
    pub successors: Vec<(usize, usize)>,
    /// What the import saw and produced.
    pub stats: ImportStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Both,
    Forward,
    Backward,
}

struct WayRecord {
    id: i64,
    highway: String,
    direction: Direction,
    refs: Vec<i64>,
}

/// Decides whether a way is drivable under `config`, and in which direction(s).
fn classify_way<'a>(
    tags: impl Iterator<Item = (&'a str, &'a str)>,
    config: &ImportConfig,
) -> Option<(String, Direction)> {
    let mut highway = None;
    let mut oneway = None;
    let mut roundabout = false;
    let mut blocked = false;
    let mut area = false;
    for (k, v) in tags {
        match k {
            "highway" => highway = Some(v.to_string()),
            "oneway" => oneway = Some(v.to_string()),
            "junction" => roundabout = matches!(v, "roundabout" | "circular"),
            "area" => area = v == "yes",
            "access" | "vehicle" | "motor_vehicle" | "motorcar" => {
                blocked |= config.respect_access && matches!(v, "no" | "private")
            }
            _ => {}
        }
    }
    let highway = highway?;
    let kept = DRIVABLE_HIGHWAYS.contains(&highway.as_str()) || (config.include_service && highway == "service");
    if !kept || area || blocked {
        return None;
    }
    let direction = match oneway.as_deref() {
        Some("yes" | "true" | "1") => Direction::Forward,
        Some("-1" | "reverse") => Direction::Backward,
        Some("no" | "false" | "0") => Direction::Both,
        _ if highway == "motorway" || roundabout => Direction::Forward,
        _ => Direction::Both,
    };
    Some((highway, direction))
}

/// Reads a `.osm.pbf` and builds the directed road network described in the module docs.
///
/// The file is read twice (ways first, then only the coordinates of the nodes those ways use), so
/// memory stays proportional to the drivable network. The result does not depend on the order of
/// elements in the file.
pub fn import_pbf(path: &Path, config: &ImportConfig) -> Result<RoadNetwork, OsmError> {
    let pbf_err = |source| OsmError::Pbf { path: path.to_path_buf(), source };
    let mut stats = ImportStats::default();

    // Pass 1: drivable ways.
    let mut ways = Vec::new();
    ElementReader::from_path(path)
        .map_err(pbf_err)?
        .for_each(|element| {
            if let Element::Way(way) = element {
                stats.ways_read += 1;
                if let Some((highway, direction)) = classify_way(way.tags(), config) {
                    let mut refs: Vec<i64> = way.refs().collect();
                    refs.dedup();
                    ways.push(WayRecord { id: way.id(), highway, direction, refs });
                }
            }
        })
        .map_err(pbf_err)?;
    ways.sort_by_key(|w| w.id);
    stats.ways_kept = ways.len();

    // Pass 2: coordinates of the nodes those ways use, as exact nano-degrees.
    let wanted: HashSet<i64> = ways.iter().flat_map(|w| w.refs.iter().copied()).collect();
    let mut coords: HashMap<i64, (i64, i64)> = HashMap::with_capacity(wanted.len());
    ElementReader::from_path(path)
        .map_err(pbf_err)?
        .for_each(|element| match element {
            Element::Node(n) if wanted.contains(&n.id()) => {
                coords.insert(n.id(), (n.nano_lon(), n.nano_lat()));
            }
            Element::DenseNode(n) if wanted.contains(&n.id()) => {
                coords.insert(n.id(), (n.nano_lon(), n.nano_lat()));
            }
            _ => {}
        })
        .map_err(pbf_err)?;

    // Break ways at refs to missing nodes; runs of at least two present nodes remain.
    let mut runs: Vec<(usize, Vec<i64>)> = Vec::new();
    for (w, way) in ways.iter().enumerate() {
        let mut run = Vec::new();
        for &r in &way.refs {
            if coords.contains_key(&r) {
                run.push(r);
            } else {
                stats.missing_node_refs += 1;
                if run.len() >= 2 {
                    runs.push((w, std::mem::take(&mut run)));
                }
                run.clear();
            }
        }
        if run.len() >= 2 {
            runs.push((w, run));
        }
    }

    // Junctions: run endpoints and nodes used two or more times.
    let mut uses: HashMap<i64, u32> = HashMap::new();
    for (_, run) in &runs {
        for &n in run {
            *uses.entry(n).or_default() += 1;
        }
    }
    let mut roads = Vec::new();
    let mut segment_of_way: HashMap<usize, u32> = HashMap::new();
    for (w, run) in &runs {
        let way = &ways[*w];
        let mut start = 0;
        for i in 1..run.len() {
            let junction = i == run.len() - 1 || uses[&run[i]] >= 2;
            if !junction {
                continue;
            }
            let nodes = run[start..=i].to_vec();
            start = i;
            let seg = segment_of_way.entry(*w).or_default();
            let segment = *seg;
            *seg += 1;
            stats.segments += 1;
            let oneway = way.direction != Direction::Both;
            // Measured once, in the digitised direction, and kept to the millimetre, so twins have
            // equal lengths and `roadmap.geo` round-trips exactly.
            let forward_coords: Vec<[f64; 2]> = nodes
                .iter()
                .map(|n| {
                    let (lon, lat) = coords[n];
                    [lon as f64 / 1e9, lat as f64 / 1e9]
                })
                .collect();
            let length = (polyline_length_m(&forward_coords) * 1000.0).round() / 1000.0;
            let mut push = |forward: bool| {
                let (mut nodes, mut coordinates) = (nodes.clone(), forward_coords.clone());
                if !forward {
                    nodes.reverse();
                    coordinates.reverse();
                }
                roads.push(Road {
                    way_id: way.id,
                    segment,
                    forward,
                    oneway,
                    highway: way.highway.clone(),
                    nodes,
                    coordinates,
                    length,
                });
            };
            match way.direction {
                Direction::Forward => push(true),
                Direction::Backward => push(false),
                Direction::Both => {
                    push(true);
                    push(false);
                }
            }
        }
    }
    stats.roads = roads.len();

    // Successors: a's last node == b's first node, in (a, b) order.
    let mut starting_at: HashMap<i64, Vec<usize>> = HashMap::new();
    for (id, road) in roads.iter().enumerate() {
        starting_at.entry(road.nodes[0]).or_default().push(id);
    }
    let mut successors = Vec::new();
    for (a, road) in roads.iter().enumerate() {
        let last = *road.nodes.last().expect("roads have at least two nodes");
        let next = starting_at.get(&last).map(Vec::as_slice).unwrap_or(&[]);
        let is_twin = |b: usize| {
            let other = &roads[b];
            other.way_id == road.way_id && other.segment == road.segment && other.forward != road.forward
        };
        let dead_end = next.iter().all(|&b| is_twin(b));
        for &b in next {
            let keep = !is_twin(b)
                || match config.u_turns {
                    UTurns::Never => false,
                    UTurns::AtDeadEnds => dead_end,
                    UTurns::Always => true,
                };
            if keep {
                successors.push((a, b));
            } else {
                stats.u_turns_dropped += 1;
            }
        }
    }
    stats.relations = successors.len();
    Ok(RoadNetwork { roads, successors, stats })
}

impl RoadNetwork {
    /// Writes `roadmap.geo` and `roadmap.rel` into `dir` (created if missing).
    pub fn write_libcity(&self, dir: &Path) -> Result<(), OsmError> {
        create_dir(dir)?;
        let header =
            ["geo_id", "type", "coordinates", "highway", "length", "oneway", "osm_way_id", "segment", "u", "v"];
        let rows = self.roads.iter().enumerate().map(|(id, r)| {
            vec![
                id.to_string(),
                "LineString".to_string(),
                coordinates_json(&r.coordinates),
                r.highway.clone(),
                format!("{:.3}", r.length),
                u8::from(r.oneway).to_string(),
                r.way_id.to_string(),
                r.segment.to_string(),
                r.nodes[0].to_string(),
                r.nodes[r.nodes.len() - 1].to_string(),
            ]
        });
        write_csv(&dir.join("roadmap.geo"), &header, rows)?;
        write_rel(&dir.join("roadmap.rel"), &self.successors)
    }
}

/// Great-circle distance in metres between two `[lon, lat]` points in degrees.
pub fn haversine_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (lon1, lat1) = (a[0].to_radians(), a[1].to_radians());
    let (lon2, lat2) = (b[0].to_radians(), b[1].to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Sum of the haversine lengths of a polyline's pieces, in metres.
pub fn polyline_length_m(coordinates: &[[f64; 2]]) -> f64 {
    coordinates.windows(2).map(|w| haversine_m(w[0], w[1])).sum()
}

/// The LibCity `coordinates` text: `[[lon,lat],...]`, each number the shortest decimal that
/// round-trips to the same `f64` (so the same point always prints the same).
pub fn coordinates_json(coordinates: &[[f64; 2]]) -> String {
    let points: Vec<String> = coordinates.iter().map(|[lon, lat]| format!("[{lon},{lat}]")).collect();
    format!("[{}]", points.join(","))
}

/// Formats Unix seconds as LibCity's UTC time text `%Y-%m-%dT%H:%M:%SZ` (proleptic Gregorian).
pub fn format_utc(unix_s: i64) -> String {
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

pub use crate::data::{civil_from_days, days_from_civil};

pub(crate) fn create_dir(dir: &Path) -> Result<(), OsmError> {
    std::fs::create_dir_all(dir).map_err(|source| OsmError::Io { path: dir.to_path_buf(), source })
}

/// Writes a CSV file with a header row; fields with commas or quotes are quoted.
pub(crate) fn write_csv<I>(path: &Path, header: &[&str], rows: I) -> Result<(), OsmError>
where
    I: IntoIterator<Item = Vec<String>>,
{
    let csv_err = |source| OsmError::Csv { path: path.to_path_buf(), source };
    let file = File::create(path).map_err(|source| OsmError::Io { path: path.to_path_buf(), source })?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    writer.write_record(header).map_err(csv_err)?;
    for row in rows {
        writer.write_record(&row).map_err(csv_err)?;
    }
    let mut inner =
        writer.into_inner().map_err(|e| OsmError::Io { path: path.to_path_buf(), source: e.into_error() })?;
    inner.flush().map_err(|source| OsmError::Io { path: path.to_path_buf(), source })
}

/// Writes a LibCity `roadmap.rel` (`rel_id,type,origin_id,destination_id`) in the given order.
pub fn write_rel(path: &Path, successors: &[(usize, usize)]) -> Result<(), OsmError> {
    let rows = successors
        .iter()
        .enumerate()
        .map(|(i, (a, b))| vec![i.to_string(), "geo".to_string(), a.to_string(), b.to_string()]);
    write_csv(path, &["rel_id", "type", "origin_id", "destination_id"], rows)
}

/// The LibCity `rid_list` text: road ids joined by commas.
pub fn rid_list(roads: &[usize]) -> String {
    roads.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// The LibCity `time_list` text: [`format_utc`] of each time, joined by commas.
pub fn time_list(times: &[i64]) -> String {
    times.iter().map(|&t| format_utc(t)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_and_calendar() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_722_831_104), "2024-08-05T04:11:44Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        for days in [-800_000, -1, 0, 59, 11_016, 19_723, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
    }

    #[test]
    fn haversine_one_degree_of_latitude() {
        let d = haversine_m([0.0, 0.0], [0.0, 1.0]);
        assert!((d - EARTH_RADIUS_M * std::f64::consts::PI / 180.0).abs() < 1e-6);
    }

    #[test]
    fn coordinates_print_shortest_round_trip() {
        assert_eq!(
            coordinates_json(&[[24.935, 60.1], [-77.2924001, 38.6280304]]),
            "[[24.935,60.1],[-77.2924001,38.6280304]]"
        );
        let nano: i64 = 26_939_140_100;
        assert_eq!(nano as f64 / 1e9, 26.9391401);
    }

    #[test]
    fn oneway_classification() {
        let cfg = ImportConfig::default();
        let c = |tags: &[(&'static str, &'static str)]| classify_way(tags.iter().copied(), &cfg).map(|(_, d)| d);
        assert_eq!(c(&[("highway", "residential")]), Some(Direction::Both));
        assert_eq!(c(&[("highway", "residential"), ("oneway", "yes")]), Some(Direction::Forward));
        assert_eq!(c(&[("highway", "primary"), ("oneway", "-1")]), Some(Direction::Backward));
        assert_eq!(c(&[("highway", "motorway")]), Some(Direction::Forward));
        assert_eq!(c(&[("highway", "motorway"), ("oneway", "no")]), Some(Direction::Both));
        assert_eq!(c(&[("highway", "tertiary"), ("junction", "roundabout")]), Some(Direction::Forward));
        assert_eq!(c(&[("highway", "service")]), None);
        assert_eq!(c(&[("highway", "footway")]), None);
        assert_eq!(c(&[("highway", "residential"), ("access", "private")]), None);
        assert_eq!(c(&[("highway", "pedestrian"), ("area", "yes")]), None);
        let with_service = ImportConfig { include_service: true, ..cfg.clone() };
        assert!(classify_way([("highway", "service")].into_iter(), &with_service).is_some());
    }
}
