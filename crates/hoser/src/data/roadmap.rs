//! The road network: LibCity `roadmap.geo` (one row per road; its `geo_id`, which must be 0..N-1 in any
//! order, is the road id; without a `geo_id` column the 0-based data row is) and
//! `roadmap.rel` (directed road → road successors, kept in file order because that order fixes the
//! candidate index the model predicts).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::error::DataError;
use super::geo::line_centroid;

/// One road segment (one row of `roadmap.geo`).
#[derive(Debug, Clone, PartialEq)]
pub struct Road {
    /// The polyline, `[lon, lat]` in degrees, as parsed from the `coordinates` JSON.
    pub coordinates: Vec<[f64; 2]>,
    /// The first coordinate exactly as written in the file (its numbers' text joined by `,`), the
    /// key the reference uses to decide which roads meet (`json.loads(..., parse_float=str)`).
    pub start_key: String,
    /// The last coordinate exactly as written in the file.
    pub end_key: String,
    /// The resolved `highway` class: the value itself, or for a list-string like
    /// `"['unclassified', 'residential']"` its first element (the second if the first is
    /// `unclassified`).
    pub highway: String,
    /// Length in metres.
    pub length: f64,
}

impl Road {
    /// Builds a road from the raw `coordinates`, `highway` and `length` fields of a `roadmap.geo` row.
    /// The error says what is wrong with which field.
    pub fn from_geo_fields(coordinates: &str, highway: &str, length: f64) -> Result<Self, String> {
        let (coordinates, start_key, end_key) = parse_coordinates(coordinates)?;
        if !(length.is_finite() && length >= 0.0) {
            return Err(format!("length must be a finite number of metres >= 0, got {length}"));
        }
        Ok(Self { coordinates, start_key, end_key, highway: resolve_highway(highway)?, length })
    }

    /// First coordinate `[lon, lat]`.
    pub fn start(&self) -> [f64; 2] {
        self.coordinates[0]
    }

    /// Last coordinate `[lon, lat]`.
    pub fn end(&self) -> [f64; 2] {
        self.coordinates[self.coordinates.len() - 1]
    }
}

/// Parses a LineString coordinate list `[[lon, lat], ...]` (JSON), keeping each endpoint's text.
fn parse_coordinates(text: &str) -> Result<(Vec<[f64; 2]>, String, String), String> {
    let err = |what: &str| format!("coordinates {text:?}: {what} (expected a JSON list like [[116.39, 39.91], ...])");
    let mut points = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let s = text.trim();
    let inner = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).ok_or_else(|| err("not a list"))?;
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let open = rest.strip_prefix('[').ok_or_else(|| err("each point must be a list [lon, lat]"))?;
        let close = open.find(']').ok_or_else(|| err("unclosed point"))?;
        let numbers: Vec<&str> = open[..close].split(',').map(str::trim).collect();
        if numbers.len() < 2 {
            return Err(err("a point needs at least [lon, lat]"));
        }
        let mut xy = [0.0; 2];
        for (i, n) in numbers.iter().enumerate() {
            let valid_json_number = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
            let value: f64 = n
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && valid_json_number)
                .ok_or_else(|| err(&format!("{n:?} is not a number")))?;
            if i < 2 {
                xy[i] = value;
            }
        }
        points.push(xy);
        keys.push(numbers.join(","));
        rest = open[close + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(err("trailing comma"));
            }
        } else if !rest.is_empty() {
            return Err(err("points must be separated by commas"));
        }
    }
    if points.is_empty() {
        return Err(err("no points"));
    }
    let start = keys[0].clone();
    let end = keys.pop().unwrap_or_default();
    Ok((points, start, end))
}

/// Resolves a `highway` cell: a plain value, or a Python list-string whose first element is used
/// (the second if the first is `unclassified`, as the reference does; a one-element list keeps it).
fn resolve_highway(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err("highway is empty; every road needs a class (a string, a list-string or an integer)".into());
    }
    let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return Ok(raw.to_owned());
    };
    let items: Vec<String> = split_python_list(inner);
    match items.as_slice() {
        [] => Err(format!("highway {raw:?} is an empty list")),
        [first, second, ..] if first == "unclassified" => Ok(second.clone()),
        [first, ..] => Ok(first.clone()),
    }
}

/// Splits the inside of a Python list literal of strings, removing the quotes.
fn split_python_list(inner: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for ch in inner.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => quote = Some(ch),
            (None, ',') => items.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (None, c) => current.push(c),
        }
    }
    if !current.is_empty() || !items.is_empty() {
        items.push(current);
    }
    items
}

/// The road network: roads, their centroids, label-encoded classes and successor lists.
#[derive(Debug, Clone, PartialEq)]
pub struct RoadNetwork {
    roads: Vec<Road>,
    centroids: Vec<[f64; 2]>,
    highway_classes: Vec<String>,
    highway_label: Vec<u32>,
    successor_offsets: Vec<usize>,
    successors: Vec<u32>,
}

/// Finds a required column in a CSV header.
pub(crate) fn column_index(headers: &csv::StringRecord, path: &Path, name: &'static str) -> Result<usize, DataError> {
    headers.iter().position(|h| h.trim().trim_start_matches('\u{feff}') == name).ok_or_else(|| {
        DataError::MissingColumn {
            path: path.to_owned(),
            column: name,
            found: headers.iter().collect::<Vec<_>>().join(","),
        }
    })
}

pub(crate) fn open_csv(path: &Path) -> Result<(csv::Reader<std::fs::File>, csv::StringRecord), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
    let headers = reader.headers().map_err(|e| DataError::csv(path, e))?.clone();
    Ok((reader, headers))
}

impl RoadNetwork {
    /// Reads `roadmap.geo` (columns `coordinates`, `highway`, `length`, and `geo_id` when present:
    /// the roads are put in id order, and the ids must be exactly 0..N-1) and `roadmap.rel` (columns
    /// `origin_id`, `destination_id`). Other columns are ignored.
    pub fn read(geo: &Path, rel: &Path) -> Result<Self, DataError> {
        let roads = read_geo(geo)?;
        let relations = read_rel(rel, roads.len())?;
        Self::new(roads, &relations).map_err(|message| DataError::malformed(rel, 0, message))
    }

    /// Builds a network from roads (index = id) and directed `(origin, destination)` relations in
    /// successor order. Fails if a relation names a road that does not exist.
    pub fn new(roads: Vec<Road>, relations: &[(u32, u32)]) -> Result<Self, String> {
        let n = roads.len();
        let mut counts = vec![0usize; n + 1];
        for &(o, d) in relations {
            if o as usize >= n || d as usize >= n {
                return Err(format!("relation {o} -> {d} names a road outside 0..{n}"));
            }
            counts[o as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let successor_offsets = counts;
        let mut fill = successor_offsets.clone();
        let mut successors = vec![0u32; relations.len()];
        for &(o, d) in relations {
            successors[fill[o as usize]] = d;
            fill[o as usize] += 1;
        }

        let centroids = roads.iter().map(|r| line_centroid(&r.coordinates).unwrap_or([0.0, 0.0])).collect();
        let (highway_classes, highway_label) = label_encode(roads.iter().map(|r| r.highway.as_str()));
        Ok(Self { roads, centroids, highway_classes, highway_label, successor_offsets, successors })
    }

    /// Number of roads (valid ids are `0..num_roads()`).
    pub fn num_roads(&self) -> usize {
        self.roads.len()
    }

    /// Number of `roadmap.rel` relations.
    pub fn num_relations(&self) -> usize {
        self.successors.len()
    }

    /// All roads, indexed by id.
    pub fn roads(&self) -> &[Road] {
        &self.roads
    }

    /// One road.
    pub fn road(&self, id: u32) -> &Road {
        &self.roads[id as usize]
    }

    /// Successors of `id` in `roadmap.rel` file order: the candidate set of a step on road `id`.
    pub fn successors(&self, id: u32) -> &[u32] {
        let i = id as usize;
        &self.successors[self.successor_offsets[i]..self.successor_offsets[i + 1]]
    }

    /// Index of `to` among the successors of `from` (its first occurrence, like Python's
    /// `list.index`), i.e. the label of the step `from → to`.
    pub fn candidate_index(&self, from: u32, to: u32) -> Option<usize> {
        self.successors(from).iter().position(|&s| s == to)
    }

    /// Shapely-style length-weighted centroid `[lon, lat]` of each road.
    pub fn centroids(&self) -> &[[f64; 2]] {
        &self.centroids
    }

    /// Sorted distinct `highway` classes; a road's type label is its index here.
    pub fn highway_classes(&self) -> &[String] {
        &self.highway_classes
    }

    /// Label-encoded `highway` class of every road (sklearn `LabelEncoder` order).
    pub fn highway_labels(&self) -> &[u32] {
        &self.highway_label
    }

    /// The undirected simple graph of `roadmap.rel` (both directions, no self-loops, no duplicates) in
    /// CSR form `(offsets, neighbours)`, neighbours sorted ascending.
    pub fn undirected_adjacency(&self) -> (Vec<usize>, Vec<u32>) {
        let n = self.num_roads();
        let mut neighbours: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n];
        for o in 0..n as u32 {
            for &d in self.successors(o) {
                if d != o {
                    neighbours[o as usize].insert(d);
                    neighbours[d as usize].insert(o);
                }
            }
        }
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let mut flat = Vec::new();
        for set in neighbours {
            flat.extend(set);
            offsets.push(flat.len());
        }
        (offsets, flat)
    }
}

/// sklearn `LabelEncoder`: classes in sorted-unique order. If every value is an integer (Porto's
/// `highway` codes, which pandas reads as int64) they sort numerically, otherwise as strings.
fn label_encode<'a>(values: impl Iterator<Item = &'a str> + Clone) -> (Vec<String>, Vec<u32>) {
    let all_int = values.clone().all(|v| v.trim().parse::<i64>().is_ok());
    let mut classes: Vec<String> = values.clone().map(str::to_owned).collect::<BTreeSet<_>>().into_iter().collect();
    if all_int {
        classes.sort_by_key(|v| v.trim().parse::<i64>().unwrap_or_default());
        classes.dedup_by(|a, b| a.trim().parse::<i64>().ok() == b.trim().parse::<i64>().ok());
        let labels = values
            .map(|v| {
                let x = v.trim().parse::<i64>().ok();
                classes.iter().position(|c| c.trim().parse::<i64>().ok() == x).unwrap_or_default() as u32
            })
            .collect();
        return (classes, labels);
    }
    let labels = values.map(|v| classes.binary_search_by(|c| c.as_str().cmp(v)).unwrap_or_default() as u32).collect();
    (classes, labels)
}

fn read_geo(path: &Path) -> Result<Vec<Road>, DataError> {
    let (mut reader, headers) = open_csv(path)?;
    let c_coord = column_index(&headers, path, "coordinates")?;
    let c_highway = column_index(&headers, path, "highway")?;
    let c_length = column_index(&headers, path, "length")?;
    let c_id = headers.iter().position(|h| h.trim() == "geo_id");
    let mut roads = Vec::new();
    let mut ids = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| DataError::csv(path, e))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        if let Some(c) = c_id {
            let text = field(c).trim();
            let id: u64 = text.parse().map_err(|_| {
                DataError::malformed(path, row, format!("geo_id {text:?} is not a road id (a non-negative integer)"))
            })?;
            ids.push(id);
        }
        let length: f64 = field(c_length).trim().parse().map_err(|_| {
            DataError::malformed(path, row, format!("length {:?} is not a number of metres", field(c_length)))
        })?;
        let road = Road::from_geo_fields(field(c_coord), field(c_highway), length).map_err(|m| {
            let id = if c_id.is_some() { ids.last().copied().unwrap_or_default() } else { row as u64 - 1 };
            DataError::malformed(path, row, format!("road {id}: {m}"))
        })?;
        roads.push(road);
    }
    if roads.is_empty() {
        return Err(DataError::malformed(path, 0, "no roads: roadmap.geo has a header but no data rows"));
    }
    if c_id.is_some() {
        roads = order_by_geo_id(path, roads, &ids)?;
    }
    Ok(roads)
}

/// Puts the roads in `geo_id` order. Upstream reads a road's attributes with `geo.loc[road_id]` on
/// the default index, i.e. it assumes `geo_id` = row index; `roadmap.rel` and the trajectories name
/// roads by `geo_id`. So the ids must be exactly `0..N-1` (in any row order): a duplicated, missing
/// or out-of-range id is an error naming the row and the id, never a silent shift onto other roads.
fn order_by_geo_id(path: &Path, roads: Vec<Road>, ids: &[u64]) -> Result<Vec<Road>, DataError> {
    let n = roads.len();
    let mut row_of: Vec<Option<usize>> = vec![None; n];
    let mut out_of_range = None;
    for (i, &id) in ids.iter().enumerate() {
        let row = i + 1;
        match usize::try_from(id).ok().filter(|&id| id < n) {
            Some(slot) => {
                if let Some(first) = row_of[slot] {
                    return Err(DataError::malformed(
                        path,
                        row,
                        format!("duplicate geo_id {id}: data row {first} already has it (each road needs its own id)"),
                    ));
                }
                row_of[slot] = Some(row);
            }
            None => {
                out_of_range.get_or_insert((row, id));
            }
        }
    }
    if let Some((row, id)) = out_of_range {
        let missing =
            row_of.iter().position(Option::is_none).map(|m| format!("; geo_id {m} is missing")).unwrap_or_default();
        return Err(DataError::malformed(
            path,
            row,
            format!(
                "geo_id {id} is out of range: roadmap.geo has {n} roads, so the ids must be 0..{} (one per row, \
                 as roadmap.rel and the trajectories use them){missing}",
                n - 1
            ),
        ));
    }
    // Every slot is filled: n ids, all distinct and < n.
    let mut slots: Vec<Option<Road>> = vec![None; n];
    for (road, &id) in roads.into_iter().zip(ids) {
        slots[id as usize] = Some(road);
    }
    Ok(slots.into_iter().flatten().collect())
}

fn read_rel(path: &Path, num_roads: usize) -> Result<Vec<(u32, u32)>, DataError> {
    let (mut reader, headers) = open_csv(path)?;
    let c_o = column_index(&headers, path, "origin_id")?;
    let c_d = column_index(&headers, path, "destination_id")?;
    let mut rel = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| DataError::csv(path, e))?;
        let id = |c: usize, name: &str| -> Result<u32, DataError> {
            let text = record.get(c).unwrap_or("").trim();
            let v: u64 = text
                .parse()
                .map_err(|_| DataError::malformed(path, row, format!("{name} {text:?} is not a road id")))?;
            if v as usize >= num_roads {
                return Err(DataError::malformed(
                    path,
                    row,
                    format!("{name} {v} is not a road: roadmap.geo has {num_roads} roads (ids 0..{})", num_roads - 1),
                ));
            }
            Ok(v as u32)
        };
        rel.push((id(c_o, "origin_id")?, id(c_d, "destination_id")?));
    }
    if rel.is_empty() {
        // Without relations no road has a successor: there is nothing to predict.
        return Err(DataError::malformed(
            path,
            0,
            "no relations: roadmap.rel has a header but no data rows (expected origin_id,destination_id pairs)",
        ));
    }
    Ok(rel)
}

/// The files of one LibCity HOSER dataset directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFiles {
    /// `roadmap.geo`.
    pub geo: PathBuf,
    /// `roadmap.rel`.
    pub rel: PathBuf,
    /// `train.csv`.
    pub train: PathBuf,
    /// `val.csv`.
    pub val: PathBuf,
    /// `test.csv`.
    pub test: PathBuf,
    /// `road_network_partition` (line i = zone of road i); used when the file exists.
    pub partition: PathBuf,
}

impl DatasetFiles {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            geo: dir.join("roadmap.geo"),
            rel: dir.join("roadmap.rel"),
            train: dir.join("train.csv"),
            val: dir.join("val.csv"),
            test: dir.join("test.csv"),
            partition: dir.join("road_network_partition"),
        }
    }
}
