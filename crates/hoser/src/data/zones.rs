//! Zones: a partition of the road graph into `Z` parts, and the zone transition matrix counted on the
//! training trajectories.
//!
//! Upstream runs KaHIP (`kaffpa --k 300 --seed 0 --preconfiguration=strong`) on the undirected graph
//! of `roadmap.rel`. Here the same graph is partitioned with METIS's multilevel k-way algorithm
//! (`METIS_PartGraphKway`, default 3 % imbalance like KaHIP's default; vendored C sources built with
//! `cc`, no download). Both minimise the edge cut under a balance constraint; the zones differ from
//! KaHIP's, so a `road_network_partition` file, when present, is read instead of computing one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::error::DataError;
use super::roadmap::RoadNetwork;

/// Serialises METIS calls (see [`ZonePartition::compute`]).
static METIS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Zone of every road.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonePartition {
    zone_of: Vec<u32>,
    num_zones: usize,
}

impl ZonePartition {
    /// A partition from explicit zone ids; the number of zones is `max + 1`, as upstream computes it
    /// from the file.
    pub fn new(zone_of: Vec<u32>) -> Self {
        let num_zones = zone_of.iter().max().map_or(0, |&m| m as usize + 1);
        Self { zone_of, num_zones }
    }

    /// A partition into exactly `num_zones` zones (some may be empty); fails if a zone id is out of
    /// range.
    pub fn with_num_zones(zone_of: Vec<u32>, num_zones: usize) -> Result<Self, DataError> {
        if let Some(&bad) = zone_of.iter().find(|&&z| z as usize >= num_zones) {
            return Err(DataError::Partition(format!("zone id {bad} is outside 0..{num_zones}")));
        }
        Ok(Self { zone_of, num_zones })
    }

    /// Reads a `road_network_partition` file: line i is the zone id of road i. Blank lines at the end
    /// are ignored; the number of zones is `max + 1`.
    pub fn read(path: &Path, num_roads: usize) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let lines: Vec<&str> = text.trim_end().lines().collect();
        if lines.len() != num_roads {
            return Err(DataError::malformed(
                path,
                lines.len().min(num_roads),
                format!(
                    "has {} zone lines but the road network has {num_roads} roads (one line per road)",
                    lines.len()
                ),
            ));
        }
        let zone_of = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.trim().parse::<u32>().map_err(|_| {
                    DataError::malformed(path, i + 1, format!("zone {:?} of road {i} is not a non-negative integer", l))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(zone_of))
    }

    /// Writes the partition in the `road_network_partition` format (one zone id per line).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let mut out = String::with_capacity(self.zone_of.len() * 4);
        for z in &self.zone_of {
            out.push_str(&z.to_string());
            out.push('\n');
        }
        let mut f = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
        f.write_all(out.as_bytes()).map_err(|e| DataError::io(path, e))
    }

    /// Partitions the undirected graph of `roadmap.rel` (both directions, no self-loops, duplicates
    /// merged) into `num_zones` zones with METIS k-way, seeded by `seed` (METIS's own RNG, so the same
    /// seed gives the same zones). `num_zones` must be in `1..=num_roads`.
    pub fn compute(roads: &RoadNetwork, num_zones: usize, seed: u64) -> Result<Self, DataError> {
        let n = roads.num_roads();
        if num_zones == 0 || num_zones > n {
            return Err(DataError::Partition(format!("cannot split {n} roads into {num_zones} zones (need 1..={n})")));
        }
        if num_zones == n {
            return Ok(Self { zone_of: (0..n as u32).collect(), num_zones });
        }
        let (offsets, neighbours) = roads.undirected_adjacency();
        let too_big = || DataError::Partition(format!("road graph too large for METIS ({n} roads)"));
        let xadj: Vec<metis::Idx> =
            offsets.iter().map(|&o| metis::Idx::try_from(o).map_err(|_| too_big())).collect::<Result<_, _>>()?;
        let adjncy: Vec<metis::Idx> = neighbours.iter().map(|&v| v as metis::Idx).collect();
        let nparts = metis::Idx::try_from(num_zones).map_err(|_| too_big())?;
        // METIS's seed option is a C int; fold the 64-bit seed into its non-negative range.
        let metis_seed = (seed % (i32::MAX as u64)) as metis::Idx;
        let mut part = vec![0 as metis::Idx; n];
        {
            // METIS draws from GKlib's process-global Mersenne Twister (`static mt[]` in random.c),
            // reseeded at the start of each call: two concurrent calls would race on it, which is
            // undefined behaviour and makes the zones depend on timing. One call at a time keeps the
            // result a function of (graph, Z, seed).
            let _guard = METIS_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            metis::Graph::new(1, nparts, &xadj, &adjncy)
                .map_err(|e| DataError::Partition(format!("invalid road graph for METIS: {e}")))?
                .set_option(metis::option::Seed(metis_seed))
                .part_kway(&mut part)
                .map_err(|e| DataError::Partition(format!("METIS failed: {e}")))?;
        }
        let zone_of = part.into_iter().map(|z| z as u32).collect();
        Self::with_num_zones(zone_of, num_zones)
    }

    /// Number of zones `Z` (zone ids are `0..Z`).
    pub fn num_zones(&self) -> usize {
        self.num_zones
    }

    /// Number of roads covered.
    pub fn num_roads(&self) -> usize {
        self.zone_of.len()
    }

    /// Zone of one road.
    pub fn zone(&self, road: u32) -> u32 {
        self.zone_of[road as usize]
    }

    /// Zone of every road (the model's `road2zone`).
    pub fn zones(&self) -> &[u32] {
        &self.zone_of
    }

    /// Number of undirected `roadmap.rel` edges (no self-loops, duplicates merged) whose ends lie in
    /// different zones: what the partitioner minimises.
    pub fn edge_cut(&self, roads: &RoadNetwork) -> usize {
        let (offsets, neighbours) = roads.undirected_adjacency();
        (0..roads.num_roads())
            .map(|u| {
                neighbours[offsets[u]..offsets[u + 1]]
                    .iter()
                    .filter(|&&v| (v as usize) > u && self.zone_of[u] != self.zone_of[v as usize])
                    .count()
            })
            .sum()
    }
}

/// Zone-to-zone transition counts over training trajectories, stored sparse.
///
/// `M[a, b]` counts consecutive roads of a trajectory whose zone changes from `a` to `b`; staying in
/// a zone is not counted, so the diagonal is 0. Single-road trajectories contribute nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneTransitions {
    num_zones: usize,
    counts: BTreeMap<(u32, u32), u64>,
}

impl ZoneTransitions {
    /// Counts the transitions of `trajectories` (road sequences) under `partition`.
    pub fn count<'a>(partition: &ZonePartition, trajectories: impl IntoIterator<Item = &'a [u32]>) -> Self {
        let mut counts = BTreeMap::new();
        for roads in trajectories {
            if roads.len() < 2 {
                continue;
            }
            for w in roads.windows(2) {
                let (a, b) = (partition.zone(w[0]), partition.zone(w[1]));
                if a != b {
                    *counts.entry((a, b)).or_insert(0) += 1;
                }
            }
        }
        Self { num_zones: partition.num_zones(), counts }
    }

    /// Rebuilds from stored sparse counts (zero counts are dropped).
    pub fn from_counts(num_zones: usize, counts: impl IntoIterator<Item = ((u32, u32), u64)>) -> Self {
        Self { num_zones, counts: counts.into_iter().filter(|&(_, c)| c > 0).collect() }
    }

    /// Number of zones `Z`.
    pub fn num_zones(&self) -> usize {
        self.num_zones
    }

    /// `M[from, to]`.
    pub fn get(&self, from: u32, to: u32) -> u64 {
        self.counts.get(&(from, to)).copied().unwrap_or(0)
    }

    /// The nonzero entries in row-major order (`numpy.nonzero` order).
    pub fn nonzero(&self) -> &BTreeMap<(u32, u32), u64> {
        &self.counts
    }

    /// Row sums `r_a = Σ_b M[a, b]`.
    pub fn row_sums(&self) -> Vec<u64> {
        let mut sums = vec![0u64; self.num_zones];
        for (&(a, _), &c) in &self.counts {
            sums[a as usize] += c;
        }
        sums
    }

    /// The dense `Z × Z` matrix, row-major (`zone_trans_mat.npy`); meant for small `Z`.
    pub fn dense(&self) -> Vec<u64> {
        let z = self.num_zones;
        let mut m = vec![0u64; z * z];
        for (&(a, b), &c) in &self.counts {
            m[a as usize * z + b as usize] = c;
        }
        m
    }
}
