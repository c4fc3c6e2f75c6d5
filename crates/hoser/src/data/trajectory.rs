//! Map-matched trajectory files (`train.csv`, `val.csv`, `test.csv`): only `rid_list` (a quoted
//! comma-separated list of road ids, or one id) and `time_list` (comma-separated
//! `%Y-%m-%dT%H:%M:%SZ`) are read. Every row is checked against the road network and the time axis.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{DataError, InvalidTrajectory};
use super::roadmap::{RoadNetwork, column_index, open_csv};
use super::time::Timestamp;

/// One trajectory: a road sequence with one timestamp per road.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trajectory {
    /// 1-based data row in its file.
    pub row: usize,
    /// Road ids r_0..r_L.
    pub roads: Vec<u32>,
    /// Entry time of each road, t_0..t_L.
    pub times: Vec<Timestamp>,
}

/// How many rows were skipped for each reason (only with `skip_invalid: true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Consecutive roads not connected in `roadmap.rel`.
    pub bad_transition: usize,
    /// Road ids outside the network.
    pub unknown_road: usize,
    /// `rid_list` and `time_list` of different lengths.
    pub length_mismatch: usize,
    /// Times going backwards.
    pub non_monotonic_time: usize,
}

impl SkipCounts {
    /// Total number of skipped rows.
    pub fn total(&self) -> usize {
        self.bad_transition + self.unknown_road + self.length_mismatch + self.non_monotonic_time
    }

    fn count(&mut self, reason: &InvalidTrajectory) {
        match reason {
            InvalidTrajectory::BadTransition { .. } => self.bad_transition += 1,
            InvalidTrajectory::UnknownRoad { .. } => self.unknown_road += 1,
            InvalidTrajectory::LengthMismatch { .. } => self.length_mismatch += 1,
            InvalidTrajectory::NonMonotonicTime { .. } => self.non_monotonic_time += 1,
            // `validate` keeps single-road trajectories (counted as `single_road`), never this.
            InvalidTrajectory::TooShort { .. } => {}
        }
    }
}

/// What reading one trajectory file found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// The file that was read.
    pub file: PathBuf,
    /// Data rows in the file.
    pub rows: usize,
    /// Valid trajectories kept.
    pub kept: usize,
    /// Kept trajectories with a single road: valid, but they have no prediction step and give no
    /// training sample.
    pub single_road: usize,
    /// Rows skipped, by reason.
    pub skipped: SkipCounts,
    /// The first few skipped rows, as `"data row N: reason"`, to show the user.
    pub skipped_examples: Vec<String>,
}

impl SplitSummary {
    /// Number of trajectories that produce a training sample (kept, at least two roads).
    pub fn samples(&self) -> usize {
        self.kept - self.single_road
    }

    /// One line for logs: `train.csv: 5 rows, 4 samples, dropped 1 single-road (no prediction
    /// step), skipped 0 invalid`.
    pub fn describe(&self) -> String {
        let s = &self.skipped;
        let mut line = format!(
            "{}: {} rows, {} samples, dropped {} single-road (no prediction step), skipped {} invalid",
            self.file.display(),
            self.rows,
            self.samples(),
            self.single_road,
            s.total()
        );
        if s.total() > 0 {
            line.push_str(&format!(
                " (bad_transition {}, unknown_road {}, length_mismatch {}, non_monotonic_time {})",
                s.bad_transition, s.unknown_road, s.length_mismatch, s.non_monotonic_time
            ));
        }
        line
    }
}

/// A trajectory file's valid trajectories and its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrajectoryFile {
    /// The valid trajectories, in file order.
    pub trajectories: Vec<Trajectory>,
    /// Counts of what was read, kept and skipped.
    pub summary: SplitSummary,
}

const MAX_SKIPPED_EXAMPLES: usize = 5;

/// Parses a `rid_list` cell: `"7689,7799,7688"`, a single id, or the same inside `[]`/`()`.
fn parse_rid_list(text: &str) -> Result<Vec<u64>, String> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .or_else(|| t.strip_prefix('(').and_then(|s| s.strip_suffix(')')))
        .unwrap_or(t);
    let ids: Result<Vec<u64>, String> = t
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| format!("rid_list entry {s:?} is not a road id")))
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err(format!("rid_list {text:?} has no road ids"));
    }
    Ok(ids)
}

fn parse_time_list(text: &str) -> Result<Vec<Timestamp>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Timestamp::parse(s).map_err(|e| format!("time_list: {e}")))
        .collect()
}

/// Checks one trajectory against the network and the time order, in this order: lengths, road ids,
/// times, transitions. Returns the road ids narrowed to `u32`.
pub fn validate(roads: &RoadNetwork, ids: &[u64], times: &[Timestamp]) -> Result<Vec<u32>, InvalidTrajectory> {
    if ids.len() != times.len() {
        return Err(InvalidTrajectory::LengthMismatch { roads: ids.len(), times: times.len() });
    }
    let n = roads.num_roads();
    let mut out = Vec::with_capacity(ids.len());
    for (position, &road) in ids.iter().enumerate() {
        if road >= n as u64 {
            return Err(InvalidTrajectory::UnknownRoad { position, road, num_roads: n });
        }
        out.push(road as u32);
    }
    for (i, w) in times.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(InvalidTrajectory::NonMonotonicTime {
                position: i + 1,
                previous: w[0].to_string(),
                current: w[1].to_string(),
            });
        }
    }
    for (position, w) in out.windows(2).enumerate() {
        if roads.candidate_index(w[0], w[1]).is_none() {
            return Err(InvalidTrajectory::BadTransition { position, from: w[0], to: w[1] });
        }
    }
    Ok(out)
}

/// The `rid_list` of every row of a trajectory CSV, as `(1-based data row, road ids)`, without
/// checking them against a road network or reading times (e.g. to score trajectories with a
/// teacher that only knows road ids). A missing column or an unparsable cell is an error naming
/// the file and row.
pub fn read_rid_lists(path: &Path) -> Result<Vec<(usize, Vec<u64>)>, DataError> {
    let (mut reader, headers) = open_csv(path)?;
    let c_rid = column_index(&headers, path, "rid_list")?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| DataError::csv(path, e))?;
        let ids = parse_rid_list(record.get(c_rid).unwrap_or("")).map_err(|m| DataError::malformed(path, row, m))?;
        rows.push((row, ids));
    }
    Ok(rows)
}

/// Reads a trajectory CSV and checks every row.
///
/// A cell that does not parse (a non-integer road id, a malformed timestamp, a missing column) is
/// always an error. A row that parses but contradicts the network or the clock (an
/// [`InvalidTrajectory`] other than `TooShort`) is an error naming the file, the 1-based data row
/// and the values — or, with `skip_invalid`, is skipped and counted in the summary. Equal
/// consecutive times are allowed (zero-second steps occur in map-matched data); decreasing ones are
/// not.
pub fn read_trajectories(path: &Path, roads: &RoadNetwork, skip_invalid: bool) -> Result<TrajectoryFile, DataError> {
    let (mut reader, headers) = open_csv(path)?;
    let c_rid = column_index(&headers, path, "rid_list")?;
    let c_time = column_index(&headers, path, "time_list")?;
    let mut summary = SplitSummary { file: path.to_owned(), ..SplitSummary::default() };
    let mut trajectories = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| DataError::csv(path, e))?;
        summary.rows += 1;
        let ids = parse_rid_list(record.get(c_rid).unwrap_or("")).map_err(|m| DataError::malformed(path, row, m))?;
        let times =
            parse_time_list(record.get(c_time).unwrap_or("")).map_err(|m| DataError::malformed(path, row, m))?;
        match validate(roads, &ids, &times) {
            Ok(road_ids) => {
                if road_ids.len() < 2 {
                    summary.single_road += 1;
                }
                summary.kept += 1;
                trajectories.push(Trajectory { row, roads: road_ids, times });
            }
            Err(reason) if skip_invalid => {
                summary.skipped.count(&reason);
                if summary.skipped_examples.len() < MAX_SKIPPED_EXAMPLES {
                    summary.skipped_examples.push(format!("data row {row}: {reason}"));
                }
            }
            Err(reason) => return Err(DataError::InvalidTrajectory { path: path.to_owned(), row, reason }),
        }
    }
    Ok(TrajectoryFile { trajectories, summary })
}
