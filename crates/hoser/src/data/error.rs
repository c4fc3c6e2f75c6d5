//! Errors of the data pipeline: every one names the file, the 1-based data row (the header is not
//! counted) and the offending value, so a user can open the file and fix it.

use std::fmt;
use std::path::PathBuf;

/// Why one trajectory row does not fit the road network or the time axis.
///
/// With `skip_invalid: true` such rows are skipped and counted (see
/// [`SkipCounts`](super::SkipCounts)); otherwise they are a [`DataError::InvalidTrajectory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidTrajectory {
    /// `rid_list` and `time_list` have different lengths.
    LengthMismatch {
        /// Number of road ids in `rid_list`.
        roads: usize,
        /// Number of timestamps in `time_list`.
        times: usize,
    },
    /// A road id that is not a row of `roadmap.geo`.
    UnknownRoad {
        /// 0-based position in `rid_list`.
        position: usize,
        /// The road id.
        road: u64,
        /// Number of roads in the network (valid ids are `0..num_roads`).
        num_roads: usize,
    },
    /// Two consecutive roads that `roadmap.rel` does not connect.
    BadTransition {
        /// 0-based position of `from` in `rid_list`.
        position: usize,
        /// The road the vehicle is on.
        from: u32,
        /// The next road, which is not a successor of `from`.
        to: u32,
    },
    /// A timestamp earlier than the one before it.
    NonMonotonicTime {
        /// 0-based position of the later (earlier-valued) timestamp in `time_list`.
        position: usize,
        /// The timestamp at `position - 1`.
        previous: String,
        /// The timestamp at `position`.
        current: String,
    },
    /// Fewer than two roads: there is no prediction step.
    TooShort {
        /// Number of roads.
        roads: usize,
    },
}

impl InvalidTrajectory {
    /// Short machine-friendly name of the reason (`bad_transition`, `unknown_road`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::UnknownRoad { .. } => "unknown_road",
            Self::BadTransition { .. } => "bad_transition",
            Self::NonMonotonicTime { .. } => "non_monotonic_time",
            Self::TooShort { .. } => "too_short",
        }
    }
}

impl fmt::Display for InvalidTrajectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch { roads, times } => {
                write!(
                    f,
                    "rid_list has {roads} road ids but time_list has {times} timestamps; they must match one to one"
                )
            }
            Self::UnknownRoad { position, road, num_roads } => write!(
                f,
                "unknown road id {road} at rid_list position {position}: roadmap.geo has {num_roads} roads (ids 0..{})",
                num_roads.saturating_sub(1)
            ),
            Self::BadTransition { position, from, to } => write!(
                f,
                "road {from} -> road {to} (rid_list positions {position}..{}) is not a connection: road {to} is not a \
                 successor of road {from} in roadmap.rel",
                position + 1
            ),
            Self::NonMonotonicTime { position, previous, current } => write!(
                f,
                "time_list goes backwards at position {position}: {current} is earlier than {previous}; times must not \
                 decrease"
            ),
            Self::TooShort { roads } => {
                write!(f, "a trajectory needs at least 2 roads to make a prediction step, got {roads}")
            }
        }
    }
}

/// Everything that can go wrong while reading, checking, preprocessing or caching HOSER data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file is not well-formed CSV (unbalanced quotes, ragged rows, invalid UTF-8).
    #[error("{}: malformed CSV: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// What the CSV parser reported.
        message: String,
    },
    /// A required column is missing from a CSV header.
    #[error("{}: missing column `{column}` in the header row (found: {found})", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column that is required.
        column: &'static str,
        /// The columns that are there, comma-separated.
        found: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{}, data row {row}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based data row (line `row + 1` of a file with a header).
        row: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A trajectory that contradicts the road network or the time order.
    #[error("{}, data row {row}: {reason} (set skip_invalid: true to skip and count such rows)", path.display())]
    InvalidTrajectory {
        /// The trajectory file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// What is wrong with it.
        reason: InvalidTrajectory,
    },
    /// The zone partition could not be computed or does not fit the network.
    #[error("zone partition: {0}")]
    Partition(String),
    /// An option value that cannot work.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl DataError {
    /// Wraps an I/O error with the file it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Wraps a CSV error, keeping I/O failures as [`DataError::Io`].
    pub(crate) fn csv(path: impl Into<PathBuf>, error: csv::Error) -> Self {
        let path = path.into();
        if error.is_io_error() {
            match error.into_kind() {
                csv::ErrorKind::Io(source) => Self::Io { path, source },
                other => Self::Csv { path, message: format!("{other:?}") },
            }
        } else {
            Self::Csv { path, message: error.to_string() }
        }
    }

    /// A [`DataError::Malformed`] for `row` of `path`.
    pub(crate) fn malformed(path: impl Into<PathBuf>, row: usize, message: impl Into<String>) -> Self {
        Self::Malformed { path: path.into(), row, message: message.into() }
    }
}
