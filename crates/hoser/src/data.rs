//! HOSER's data pipeline, faithful to upstream `dataset.py` / `train.py` / `data/preprocess`:
//!
//! - [`RoadNetwork`]: LibCity `roadmap.geo` (`geo_id` = road id, 0..N-1 in any row order) and
//!   `roadmap.rel` (successors in file order, which fixes the label index);
//! - [`read_trajectories`]: `train.csv` / `val.csv` / `test.csv`, every consecutive road pair checked
//!   against `rel` (an error naming file, row and road ids, or a counted skip with `skip_invalid`);
//! - [`ZonePartition`] (METIS k-way, or an existing `road_network_partition` file) and the sparse
//!   [`ZoneTransitions`] counted on the training trajectories;
//! - [`Sample`]: the per-step features of one trajectory, and [`StaticFeatures`]: road attributes,
//!   the GAT road graph (sparse), the GCN zone graph and the time-label normalisation;
//! - [`Collator`] → [`Batch`]: padding to the batch's longest trajectory and widest candidate set,
//!   with step and candidate masks and an optional crop to the last `max_len` steps;
//! - [`HoserData::load`]: all of the above with a checksum-keyed preprocessing cache.
//!
//! Deliberate differences from upstream: no top-k candidate filter (the fork's filter corrupts
//! candidates and labels); the `O(T²)` matrices are computed at collation, not stored; a
//! single-road trajectory is counted and gives no sample instead of an empty one.

mod batch;
mod cache;
mod error;
mod features;
mod geo;
mod roadmap;
mod time;
mod trajectory;
mod zones;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, Collator};
pub use cache::{CACHE_FILE_NAME, CacheManifest, file_crc32c};
pub use error::{DataError, InvalidTrajectory};
pub use features::{FeatureOptions, RoadGraph, Sample, StaticFeatures, TimeStats, ZoneGraph};
pub use geo::{EARTH_RADIUS_M, angle_difference, get_angle, haversine_m, heading, heading_swapped, line_centroid};
pub use roadmap::{DatasetFiles, Road, RoadNetwork};
pub use time::{CivilTime, Timestamp, TimestampError, civil_from_days, days_from_civil};
pub use trajectory::{
    SkipCounts, SplitSummary, Trajectory, TrajectoryFile, read_rid_lists, read_trajectories, validate,
};
pub use zones::{ZonePartition, ZoneTransitions};

use cache::{CacheRead, CachedData};

/// Options of [`HoserData::load`]; all of them are part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetOptions {
    /// Skip (and count) trajectories that contradict the road network or the clock instead of
    /// failing on the first one. Default `false`.
    pub skip_invalid: bool,
    /// See [`FeatureOptions::upstream_angle_quirk`]. Default `true`.
    pub upstream_angle_quirk: bool,
    /// Number of zones when the partition is computed (no `road_network_partition` file). Default
    /// 300, as upstream.
    pub num_zones: usize,
    /// Seed of the partitioner. Default 0, as upstream's `kaffpa --seed 0`.
    pub partition_seed: u64,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        Self { skip_invalid: false, upstream_angle_quirk: true, num_zones: 300, partition_seed: 0 }
    }
}

impl DatasetOptions {
    /// The feature options these dataset options imply.
    pub fn feature_options(&self) -> FeatureOptions {
        FeatureOptions { upstream_angle_quirk: self.upstream_angle_quirk }
    }
}

/// Where the zones came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionSource {
    /// Read from the dataset's `road_network_partition` file.
    File,
    /// Computed with METIS k-way.
    Metis {
        /// Requested number of zones.
        num_zones: usize,
        /// Partitioner seed.
        seed: u64,
    },
}

/// What happened with the preprocessing cache on this load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache directory was given; everything was computed.
    Disabled,
    /// The cache matched the inputs and options and was used.
    Hit,
    /// There was no cache yet; it was built and written.
    Missing,
    /// The cache was for other inputs or options (the reason says which); it was rebuilt.
    Stale(String),
    /// The cache file was damaged (the reason says how); it was rebuilt, with a warning.
    Corrupt(String),
}

/// One split's samples and what reading it found.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// One sample per valid trajectory with at least two roads, in file order.
    pub samples: Vec<Sample>,
    /// Rows read, kept, skipped.
    pub summary: SplitSummary,
}

/// A whole HOSER dataset, preprocessed.
#[derive(Debug, Clone)]
pub struct HoserData {
    /// The input files.
    pub files: DatasetFiles,
    /// The options used.
    pub options: DatasetOptions,
    /// The road network.
    pub network: RoadNetwork,
    /// Zone of every road.
    pub partition: ZonePartition,
    /// Where the zones came from.
    pub partition_source: PartitionSource,
    /// Zone transitions of the training trajectories.
    pub zone_transitions: ZoneTransitions,
    /// Static encoder inputs.
    pub features: StaticFeatures,
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Split,
    /// What the cache did.
    pub cache: CacheStatus,
}

impl HoserData {
    /// Loads the standard files of `dir` (see [`DatasetFiles::in_dir`]), using and refreshing the
    /// cache in `cache_dir` if one is given.
    pub fn load(dir: &Path, options: &DatasetOptions, cache_dir: Option<&Path>) -> Result<Self, DataError> {
        Self::load_files(DatasetFiles::in_dir(dir), options, cache_dir)
    }

    /// Loads explicit files. The road network is always read (it is small and the collator needs
    /// it); samples, zones and static features come from the cache when its manifest matches.
    pub fn load_files(
        files: DatasetFiles,
        options: &DatasetOptions,
        cache_dir: Option<&Path>,
    ) -> Result<Self, DataError> {
        let network = RoadNetwork::read(&files.geo, &files.rel)?;
        let (cached, cache_status, manifest) = match cache_dir {
            None => (None, CacheStatus::Disabled, None),
            Some(dir) => {
                let manifest = manifest_for(&files, options)?;
                let path = dir.join(CACHE_FILE_NAME);
                match cache::read_cache(&path, &manifest) {
                    CacheRead::Hit(data) if data.partition.num_roads() == network.num_roads() => {
                        (Some(*data), CacheStatus::Hit, Some(manifest))
                    }
                    CacheRead::Hit(_) => {
                        (None, CacheStatus::Corrupt("road count differs from roadmap.geo".into()), Some(manifest))
                    }
                    CacheRead::Missing => (None, CacheStatus::Missing, Some(manifest)),
                    CacheRead::Stale(why) => (None, CacheStatus::Stale(why), Some(manifest)),
                    CacheRead::Corrupt(why) => {
                        tracing::warn!("preprocessing cache {} is corrupt ({why}); rebuilding it", path.display());
                        (None, CacheStatus::Corrupt(why), Some(manifest))
                    }
                }
            }
        };
        let data = match cached {
            Some(data) => data,
            None => {
                let data = build(&files, options, &network)?;
                if let (Some(dir), Some(manifest)) = (cache_dir, &manifest) {
                    let path = dir.join(CACHE_FILE_NAME);
                    if let Err(e) = cache::write_cache(&path, manifest, &data) {
                        // The data are computed; a failed cache write only costs time next run.
                        tracing::warn!("could not write the preprocessing cache: {e}");
                    }
                }
                data
            }
        };
        let CachedData { partition, partition_from_file, transitions, features, splits } = data;
        let [mut train, mut val, mut test] = splits.map(|(samples, summary)| Split { samples, summary });
        // A cache hit may come from the same files at another path: report the current ones.
        train.summary.file.clone_from(&files.train);
        val.summary.file.clone_from(&files.val);
        test.summary.file.clone_from(&files.test);
        for split in [&train, &val, &test] {
            let summary = &split.summary;
            if summary.single_road > 0 || summary.skipped.total() > 0 {
                tracing::warn!("{}", summary.describe());
            } else {
                tracing::info!("{}", summary.describe());
            }
        }
        let partition_source = if partition_from_file {
            PartitionSource::File
        } else {
            PartitionSource::Metis { num_zones: options.num_zones, seed: options.partition_seed }
        };
        Ok(Self {
            files,
            options: options.clone(),
            network,
            partition,
            partition_source,
            zone_transitions: transitions,
            features,
            train,
            val,
            test,
            cache: cache_status,
        })
    }

    /// A collator for this dataset's samples.
    pub fn collator(&self, max_len: Option<usize>) -> Result<Collator, DataError> {
        Collator::new(&self.network, max_len)
    }
}

fn manifest_for(files: &DatasetFiles, options: &DatasetOptions) -> Result<CacheManifest, DataError> {
    let mut inputs = std::collections::BTreeMap::new();
    for (role, path) in
        [("geo", &files.geo), ("rel", &files.rel), ("train", &files.train), ("val", &files.val), ("test", &files.test)]
    {
        inputs.insert(role.to_owned(), Some(file_crc32c(path)?));
    }
    let partition = if files.partition.exists() { Some(file_crc32c(&files.partition)?) } else { None };
    inputs.insert("partition".to_owned(), partition);
    Ok(CacheManifest {
        format: cache::FORMAT_VERSION,
        inputs,
        options: serde_json::to_value(options).expect("options always serialise"),
    })
}

/// Builds everything the cache holds from the input files.
fn build(files: &DatasetFiles, options: &DatasetOptions, network: &RoadNetwork) -> Result<CachedData, DataError> {
    let partition_from_file = files.partition.exists();
    let partition = if partition_from_file {
        ZonePartition::read(&files.partition, network.num_roads())?
    } else {
        ZonePartition::compute(network, options.num_zones, options.partition_seed)?
    };
    let feature_options = options.feature_options();
    let read_split = |path: &std::path::PathBuf| -> Result<(Vec<Sample>, TrajectoryFile), DataError> {
        let file = read_trajectories(path, network, options.skip_invalid)?;
        let samples = file
            .trajectories
            .iter()
            .filter(|t| t.roads.len() >= 2)
            .map(|t| {
                Sample::build(network, &t.roads, &t.times, &feature_options)
                    .map_err(|reason| DataError::InvalidTrajectory { path: path.clone(), row: t.row, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((samples, file))
    };
    let (train_samples, train_file) = read_split(&files.train)?;
    let (val_samples, val_file) = read_split(&files.val)?;
    let (test_samples, test_file) = read_split(&files.test)?;
    let transitions = ZoneTransitions::count(&partition, train_file.trajectories.iter().map(|t| t.roads.as_slice()));
    let time = TimeStats::fit(train_samples.iter().flat_map(|s| s.timestamp_label().iter().map(|&v| f64::from(v))))
        .ok_or_else(|| {
            DataError::malformed(
                &files.train,
                0,
                format!(
                    "the training split is empty, no trajectory with at least 2 roads ({}): nothing to train on \
                     or to fit the time normalisation",
                    train_file.summary.describe()
                ),
            )
        })?;
    let features = StaticFeatures::build(network, &partition, &transitions, time);
    let splits =
        [(train_samples, train_file.summary), (val_samples, val_file.summary), (test_samples, test_file.summary)];
    Ok(CachedData { partition, partition_from_file, transitions, features, splits })
}
