//! Per-trajectory samples (upstream `dataset.py:process_row`) and the static road/zone features built
//! once per dataset (upstream `train.py`).
//!
//! Arithmetic follows the reference's dtypes: distances and angles are computed in `f64` and cast to
//! `f32` where the reference casts, then clipped, shifted and scaled in `f32`.
//!
//! The two `T × T` matrices of a sample (`trace_distance_mat`, `trace_time_interval_mat`) are not
//! stored: they are pure functions of the stored road ids and `temporal_info`, so
//! [`Sample::trace_distance_mat`] and [`Sample::trace_time_interval_mat`] compute them on demand and
//! the collator builds them per batch. That keeps the cache `O(T)` per trajectory instead of the
//! `O(T²)` that made the reference's Beijing cache need ~13 GB.

use std::collections::HashMap;
use std::f32::consts::PI as PI_F32;
use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::error::InvalidTrajectory;
use super::geo::{angle_difference, haversine_m, heading, heading_swapped};
use super::roadmap::RoadNetwork;
use super::time::Timestamp;
use super::trajectory::validate;
use super::zones::{ZonePartition, ZoneTransitions};

/// Options that change the per-step features (and so are part of the cache key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureOptions {
    /// Reproduce the reference's `metric_angle` argument swap (default `true`).
    ///
    /// Upstream calls `get_angle(*end_of_road, *end_of_candidate)` with `[lon, lat]` pairs although
    /// `get_angle` expects `(lat1, lon1, lat2, lon2)`, so its "angle" is
    /// `atan2(Δlon, cos(lon₁·π/180)·Δlat)`. Weights trained upstream (and imported by state-dict key)
    /// expect that feature, so the quirk is on by default; set `false` for the geometrically correct
    /// heading `atan2(Δlat, cos(lat₁·π/180)·Δlon)` when training from scratch.
    pub upstream_angle_quirk: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        Self { upstream_angle_quirk: true }
    }
}

/// One trajectory r_0..r_L turned into T = L prediction steps (step i: on road r_i, predict r_{i+1}).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub(crate) trace_road_id: Vec<u32>,
    pub(crate) temporal_info: Vec<f32>,
    pub(crate) destination_road_id: u32,
    pub(crate) candidate_offsets: Vec<u32>,
    pub(crate) candidate_road_id: Vec<u32>,
    pub(crate) metric_dis: Vec<f32>,
    pub(crate) metric_angle: Vec<f32>,
    pub(crate) road_label: Vec<u32>,
    pub(crate) timestamp_label: Vec<f32>,
    pub(crate) start_time: Timestamp,
}

impl Sample {
    /// Builds the sample of one trajectory: `roads` r_0..r_L (L ≥ 1) and their entry `times`.
    ///
    /// Fails if the trajectory is too short or does not fit the network or the clock (the same checks
    /// as [`read_trajectories`](super::read_trajectories)).
    pub fn build(
        network: &RoadNetwork,
        roads: &[u32],
        times: &[Timestamp],
        options: &FeatureOptions,
    ) -> Result<Self, InvalidTrajectory> {
        let ids: Vec<u64> = roads.iter().map(|&r| u64::from(r)).collect();
        validate(network, &ids, times)?;
        if roads.len() < 2 {
            return Err(InvalidTrajectory::TooShort { roads: roads.len() });
        }
        let t = roads.len() - 1;
        let destination = roads[t];
        let centroids = network.centroids();
        let dest_centroid = centroids[destination as usize];
        let dest_end = network.road(destination).end();
        let angle_of = if options.upstream_angle_quirk { heading_swapped } else { heading };

        let mut temporal_info: Vec<f32> = times[..t].iter().map(|ts| ts.day_fraction() as f32).collect();
        if times[0].is_weekend() {
            temporal_info.iter_mut().for_each(|v| *v = -*v);
        }

        let mut candidate_offsets = Vec::with_capacity(t + 1);
        candidate_offsets.push(0u32);
        let mut candidate_road_id = Vec::new();
        let mut metric_dis = Vec::new();
        let mut metric_angle = Vec::new();
        let mut road_label = Vec::with_capacity(t);
        for i in 0..t {
            let road = roads[i];
            let candidates = network.successors(road);
            let distances: Vec<f32> = candidates
                .iter()
                .map(|&c| {
                    let cc = centroids[c as usize];
                    haversine_m(cc[1], cc[0], dest_centroid[1], dest_centroid[0]) as f32
                })
                .collect();
            let min = distances.iter().copied().fold(f32::INFINITY, f32::min);
            metric_dis.extend(distances.iter().map(|&d| ((d - min) / 100.0).ln_1p()));

            let here = network.road(road).end();
            let to_destination = angle_of(here, dest_end);
            metric_angle.extend(candidates.iter().map(|&c| {
                let to_candidate = angle_of(here, network.road(c).end());
                let a = (to_candidate - to_destination).abs() as f32;
                let a = if a > PI_F32 { (2.0 * PI) as f32 - a } else { a };
                a / PI_F32
            }));

            candidate_road_id.extend_from_slice(candidates);
            candidate_offsets.push(candidate_road_id.len() as u32);
            // `validate` checked every transition, so the next road is a candidate.
            road_label.push(network.candidate_index(road, roads[i + 1]).unwrap_or_default() as u32);
        }
        let timestamp_label = times.windows(2).map(|w| (w[1].seconds() - w[0].seconds()) as f32).collect();
        Ok(Self {
            trace_road_id: roads[..t].to_vec(),
            temporal_info,
            destination_road_id: destination,
            candidate_offsets,
            candidate_road_id,
            metric_dis,
            metric_angle,
            road_label,
            timestamp_label,
            start_time: times[0],
        })
    }

    /// Number of prediction steps T (`trace_len`).
    pub fn trace_len(&self) -> usize {
        self.trace_road_id.len()
    }

    /// Road of each step, r_0..r_{T−1} (`trace_road_id`).
    pub fn trace_road_id(&self) -> &[u32] {
        &self.trace_road_id
    }

    /// Time of day of each step in `[0, 1)`, the whole vector negated when the trajectory starts on
    /// a Saturday or Sunday (`temporal_info`).
    pub fn temporal_info(&self) -> &[f32] {
        &self.temporal_info
    }

    /// Last road r_L (`destination_road_id`).
    pub fn destination_road_id(&self) -> u32 {
        self.destination_road_id
    }

    /// First road r_0 (the origin).
    pub fn origin_road_id(&self) -> u32 {
        self.trace_road_id[0]
    }

    /// Entry time of the first road.
    pub fn start_time(&self) -> Timestamp {
        self.start_time
    }

    fn range(&self, step: usize) -> std::ops::Range<usize> {
        self.candidate_offsets[step] as usize..self.candidate_offsets[step + 1] as usize
    }

    /// Candidates of a step: the successors of its road in `roadmap.rel` order (`candidate_road_id`).
    pub fn candidates(&self, step: usize) -> &[u32] {
        &self.candidate_road_id[self.range(step)]
    }

    /// `log1p((d_c − min d)/100)` per candidate, d = centroid distance to the destination in metres.
    pub fn metric_dis(&self, step: usize) -> &[f32] {
        &self.metric_dis[self.range(step)]
    }

    /// Angle between "towards the candidate's end" and "towards the destination's end", in `[0, 1]`.
    pub fn metric_angle(&self, step: usize) -> &[f32] {
        &self.metric_angle[self.range(step)]
    }

    /// Number of candidates per step (`candidate_len`).
    pub fn candidate_len(&self) -> Vec<usize> {
        self.candidate_offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect()
    }

    /// Index of the true next road among each step's candidates (`road_label`).
    pub fn road_label(&self) -> &[u32] {
        &self.road_label
    }

    /// Seconds from entering r_i to entering r_{i+1} (`timestamp_label`).
    pub fn timestamp_label(&self) -> &[f32] {
        &self.timestamp_label
    }

    /// `trace_distance_mat` `[T, T]` row-major: `min(haversine(c_i, c_j) m, 1000) / 1000` between the
    /// step roads' centroids (`network` must be the one the sample was built on).
    pub fn trace_distance_mat(&self, network: &RoadNetwork) -> Vec<f32> {
        let mut out = vec![0.0; self.trace_len() * self.trace_len()];
        write_distance_mat(&self.trace_road_id, network.centroids(), &mut out, self.trace_len());
        out
    }

    /// `trace_time_interval_mat` `[T, T]` row-major: `min(|τ_i − τ_j|·1440, 5) / 5` (minutes apart,
    /// saturating at 5; a trip across midnight saturates, as upstream).
    pub fn trace_time_interval_mat(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.trace_len() * self.trace_len()];
        write_time_mat(&self.temporal_info, &mut out, self.trace_len());
        out
    }

    /// The last `max_len` steps (all if `max_len >= T`), every per-step field cut to the same window;
    /// the destination and `start_time` stay those of the whole trajectory. The matrices of the result
    /// are the bottom-right `max_len × max_len` block of the original ones.
    pub fn crop_last(&self, max_len: usize) -> Self {
        let t = self.trace_len();
        let start = t - max_len.min(t);
        if start == 0 {
            return self.clone();
        }
        let c0 = self.candidate_offsets[start] as usize;
        Self {
            trace_road_id: self.trace_road_id[start..].to_vec(),
            temporal_info: self.temporal_info[start..].to_vec(),
            destination_road_id: self.destination_road_id,
            candidate_offsets: self.candidate_offsets[start..].iter().map(|&o| o - c0 as u32).collect(),
            candidate_road_id: self.candidate_road_id[c0..].to_vec(),
            metric_dis: self.metric_dis[c0..].to_vec(),
            metric_angle: self.metric_angle[c0..].to_vec(),
            road_label: self.road_label[start..].to_vec(),
            timestamp_label: self.timestamp_label[start..].to_vec(),
            start_time: self.start_time,
        }
    }
}

/// Fills the top-left `t × t` block of a row-major matrix with row stride `stride`.
pub(crate) fn write_distance_mat(roads: &[u32], centroids: &[[f64; 2]], out: &mut [f32], stride: usize) {
    for (i, &a) in roads.iter().enumerate() {
        let ca = centroids[a as usize];
        for (j, &b) in roads.iter().enumerate() {
            let cb = centroids[b as usize];
            let d = haversine_m(ca[1], ca[0], cb[1], cb[0]) as f32;
            out[i * stride + j] = d.clamp(0.0, 1000.0) / 1000.0;
        }
    }
}

/// Fills the top-left `t × t` block of a row-major matrix with row stride `stride`.
pub(crate) fn write_time_mat(temporal: &[f32], out: &mut [f32], stride: usize) {
    for (i, &a) in temporal.iter().enumerate() {
        for (j, &b) in temporal.iter().enumerate() {
            let minutes = (a * 1440.0 - b * 1440.0).abs();
            out[i * stride + j] = minutes.clamp(0.0, 5.0) / 5.0;
        }
    }
}

/// Mean and population standard deviation of `log1p(Δt seconds)` over all training steps: the model
/// predicts `(log1p(Δt) − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeStats {
    /// Mean of `log1p(Δt)`.
    pub mean: f64,
    /// Population (`ddof = 0`, numpy's default) standard deviation of `log1p(Δt)`.
    pub std: f64,
}

impl TimeStats {
    /// Fits on durations in seconds; `None` if there are none.
    pub fn fit(seconds: impl IntoIterator<Item = f64>) -> Option<Self> {
        let logs: Vec<f64> = seconds.into_iter().map(f64::ln_1p).collect();
        if logs.is_empty() {
            return None;
        }
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Some(Self { mean, std: var.sqrt() })
    }

    /// `(log1p(seconds) − mean) / std`, the normalised time target.
    pub fn normalize(&self, seconds: f64) -> f64 {
        (seconds.ln_1p() - self.mean) / self.std
    }

    /// Inverse of [`normalize`](Self::normalize), clamped at 0 seconds: `max(expm1(y·std + mean), 0)`.
    pub fn denormalize(&self, normalized: f64) -> f64 {
        (normalized * self.std + self.mean).exp_m1().max(0.0)
    }
}

/// The GAT's road graph (not the `rel` graph): roads that share an endpoint, written with exactly the
/// same coordinate text, are linked in both directions. Edges are sorted by `(src, dst)`, the
/// reference's `nonzero` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoadGraph {
    /// Source road of each edge.
    pub src: Vec<u32>,
    /// Target road of each edge.
    pub dst: Vec<u32>,
    /// `|heading_src − heading_dst|` folded into `[0, π]`, divided by π.
    pub angle: Vec<f32>,
    /// 1 if `dst` is a successor of `src` in `roadmap.rel`, else 0.
    pub reachable: Vec<f32>,
}

impl RoadGraph {
    /// Builds the graph sparsely: endpoints are grouped by their text, and each group links every
    /// ordered pair of distinct roads in it (duplicates merged).
    pub fn build(network: &RoadNetwork) -> Self {
        let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
        for (id, road) in network.roads().iter().enumerate() {
            groups.entry(road.start_key.as_str()).or_default().push(id as u32);
            groups.entry(road.end_key.as_str()).or_default().push(id as u32);
        }
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for members in groups.values() {
            for &a in members {
                for &b in members {
                    if a != b {
                        pairs.push((a, b));
                    }
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let headings: Vec<f64> = network.roads().iter().map(|r| heading(r.start(), r.end())).collect();
        let mut g = Self::default();
        for (a, b) in pairs {
            g.src.push(a);
            g.dst.push(b);
            g.angle.push((angle_difference(headings[a as usize], headings[b as usize]) / PI) as f32);
            g.reachable.push(if network.successors(a).contains(&b) { 1.0 } else { 0.0 });
        }
        g
    }

    /// Number of edges E.
    pub fn num_edges(&self) -> usize {
        self.src.len()
    }

    /// `road_edge_index` `[2, E]` row-major (sources, then targets).
    pub fn edge_index(&self) -> Vec<i64> {
        self.src.iter().chain(&self.dst).map(|&v| i64::from(v)).collect()
    }

    /// `intersection_attr` `[E, 2]` row-major: `[angle, reachable]` per edge.
    pub fn edge_attr(&self) -> Vec<f32> {
        self.angle.iter().zip(&self.reachable).flat_map(|(&a, &r)| [a, r]).collect()
    }
}

/// The GCN's zone graph: the nonzero entries of the zone transition matrix `M`, in row-major order,
/// weighted `M_ab / sqrt(r_a · r_b)` with `r` the row sums clamped at ≥ 1 (row sums for both ends,
/// as upstream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneGraph {
    /// Source zone of each edge.
    pub src: Vec<u32>,
    /// Target zone of each edge.
    pub dst: Vec<u32>,
    /// Normalised weight of each edge.
    pub weight: Vec<f32>,
}

impl ZoneGraph {
    /// Builds the weighted edges from the counts, in `f32` like the reference.
    pub fn build(transitions: &ZoneTransitions) -> Self {
        let inv_sqrt: Vec<f32> = transitions.row_sums().iter().map(|&r| 1.0 / (r as f32).max(1.0).sqrt()).collect();
        let mut g = Self::default();
        for (&(a, b), &c) in transitions.nonzero() {
            g.src.push(a);
            g.dst.push(b);
            g.weight.push(c as f32 * inv_sqrt[a as usize] * inv_sqrt[b as usize]);
        }
        g
    }

    /// `zone_edge_index` `[2, E]` row-major.
    pub fn edge_index(&self) -> Vec<i64> {
        self.src.iter().chain(&self.dst).map(|&v| i64::from(v)).collect()
    }
}

/// Static inputs of the road network encoder, built once per dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticFeatures {
    /// z-score of `log1p(length)` per road.
    pub road_attr_len: Vec<f32>,
    /// Label-encoded `highway` per road.
    pub road_attr_type: Vec<u32>,
    /// Number of distinct `highway` classes (the type embedding size).
    pub num_road_types: usize,
    /// z-score of the centroid longitude per road.
    pub road_attr_lon: Vec<f32>,
    /// z-score of the centroid latitude per road.
    pub road_attr_lat: Vec<f32>,
    /// Road graph for the GAT.
    pub road_graph: RoadGraph,
    /// Zone graph for the GCN.
    pub zone_graph: ZoneGraph,
    /// Zone of each road (`road2zone`).
    pub road_to_zone: Vec<u32>,
    /// Number of zones Z.
    pub num_zones: usize,
    /// Time-label normalisation fitted on the training steps.
    pub time: TimeStats,
}

/// `(x − mean(x)) / std(x)` with the population std, computed in `f64`. A constant column (std 0)
/// maps to zeros instead of the reference's NaNs.
///
/// The reference does this in `float32` (numpy on `float32` arrays, after casting the centroids to
/// `float32`), whose rounding at longitudes near 116° is ~4e-6°; on city-scale data that moves the
/// z-scores by ~1e-4, on a network only 0.02° wide by ~1e-3. The `f64` result is the exact one.
fn z_score(values: &[f64]) -> Vec<f32> {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let std = if std > 0.0 { std } else { 1.0 };
    values.iter().map(|v| ((v - mean) / std) as f32).collect()
}

impl StaticFeatures {
    /// Builds every static feature. `time` comes from the training samples (see [`TimeStats::fit`]).
    pub fn build(
        network: &RoadNetwork,
        partition: &ZonePartition,
        transitions: &ZoneTransitions,
        time: TimeStats,
    ) -> Self {
        let log_len: Vec<f64> = network.roads().iter().map(|r| r.length.ln_1p()).collect();
        let lon: Vec<f64> = network.centroids().iter().map(|c| c[0]).collect();
        let lat: Vec<f64> = network.centroids().iter().map(|c| c[1]).collect();
        Self {
            road_attr_len: z_score(&log_len),
            road_attr_type: network.highway_labels().to_vec(),
            num_road_types: network.highway_classes().len(),
            road_attr_lon: z_score(&lon),
            road_attr_lat: z_score(&lat),
            road_graph: RoadGraph::build(network),
            zone_graph: ZoneGraph::build(transitions),
            road_to_zone: partition.zones().to_vec(),
            num_zones: partition.num_zones(),
            time,
        }
    }
}
