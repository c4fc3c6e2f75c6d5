//! Collation of samples into padded batches (upstream `train.py:MyCollateFn`), with masks and an
//! optional crop to the last `max_len` steps.
//!
//! Layout: every buffer is a flat row-major `Vec`; its shape is given by [`Batch::batch_size`] `B`,
//! [`Batch::max_trace_len`] `T` and [`Batch::max_candidates`] `C`. Ids and lengths are `i64` and floats
//! `f32`, so each buffer maps one-to-one onto a tensor.
//!
//! Padding follows the reference: steps beyond a row's `trace_len` are zeros (road 0, label 0,
//! candidate_len 0), candidates beyond a step's `candidate_len` are id 0 with metric and angle 0.
//! Road 0 and metric 0 are also legitimate real values (the destination-nearest candidate always has
//! `metric_dis` exactly 0), so padding must be told apart by the masks (or equivalently by
//! `trace_len`/`candidate_len`), never by value. This crate applies no top-k candidate filter: the
//! fork's filter sorted the padded axis and let padding clones displace real candidates.

use super::error::DataError;
use super::features::{Sample, TimeStats, write_distance_mat, write_time_mat};
use super::roadmap::RoadNetwork;

/// One padded batch of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// B, the number of trajectories.
    pub batch_size: usize,
    /// T, the largest `trace_len` in the batch (after cropping).
    pub max_trace_len: usize,
    /// C, the largest `candidate_len` over every step of the batch.
    pub max_candidates: usize,
    /// `[B, T]` road of each step.
    pub trace_road_id: Vec<i64>,
    /// `[B, T]` time-of-day feature (negated on weekends).
    pub temporal_info: Vec<f32>,
    /// `[B, T, T]` clipped centroid distances / 1000 m.
    pub trace_distance_mat: Vec<f32>,
    /// `[B, T, T]` clipped time differences / 5 min.
    pub trace_time_interval_mat: Vec<f32>,
    /// `[B]` real steps per row.
    pub trace_len: Vec<i64>,
    /// `[B]` destination road per row.
    pub destination_road_id: Vec<i64>,
    /// `[B, T, C]` candidate roads.
    pub candidate_road_id: Vec<i64>,
    /// `[B, T, C]` candidate distance metric.
    pub metric_dis: Vec<f32>,
    /// `[B, T, C]` candidate angle metric.
    pub metric_angle: Vec<f32>,
    /// `[B, T]` real candidates per step (0 on padded steps).
    pub candidate_len: Vec<i64>,
    /// `[B, T]` index of the true next road among the candidates.
    pub road_label: Vec<i64>,
    /// `[B, T]` seconds to the next road (raw, not normalised).
    pub timestamp_label: Vec<f32>,
    /// `[B, T]` `true` at real steps (`t < trace_len`).
    pub step_mask: Vec<bool>,
    /// `[B, T, C]` `true` at real candidates (`c < candidate_len`, always `false` on padded steps).
    pub candidate_mask: Vec<bool>,
}

impl Batch {
    /// `[B, T]`.
    pub fn step_shape(&self) -> [usize; 2] {
        [self.batch_size, self.max_trace_len]
    }

    /// `[B, T, T]`.
    pub fn pair_shape(&self) -> [usize; 3] {
        [self.batch_size, self.max_trace_len, self.max_trace_len]
    }

    /// `[B, T, C]`.
    pub fn candidate_shape(&self) -> [usize; 3] {
        [self.batch_size, self.max_trace_len, self.max_candidates]
    }

    /// Total number of real steps `Σ trace_len`.
    pub fn num_steps(&self) -> usize {
        self.trace_len.iter().map(|&t| t as usize).sum()
    }

    /// `[B, T]` normalised time target `(log1p(Δt) − mean) / std` at real steps, 0 at padded ones.
    pub fn normalized_timestamp_label(&self, stats: &TimeStats) -> Vec<f32> {
        self.timestamp_label
            .iter()
            .zip(&self.step_mask)
            .map(|(&s, &real)| if real { stats.normalize(f64::from(s)) as f32 } else { 0.0 })
            .collect()
    }
}

/// Builds [`Batch`]es for one road network.
#[derive(Debug, Clone)]
pub struct Collator {
    centroids: Vec<[f64; 2]>,
    max_len: Option<usize>,
}

impl Collator {
    /// A collator for samples built on `network`; `max_len` (≥ 1) keeps only the last `max_len` steps
    /// of longer trajectories.
    pub fn new(network: &RoadNetwork, max_len: Option<usize>) -> Result<Self, DataError> {
        if max_len == Some(0) {
            return Err(DataError::InvalidOption("max_len must be at least 1 (or unset for no crop)".into()));
        }
        Ok(Self { centroids: network.centroids().to_vec(), max_len })
    }

    /// The crop length, if any.
    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// Pads `samples` into one batch. Each sample is first cut to its last `max_len` steps, so
    /// `trace_len`, labels, candidates and both matrices describe the same window.
    pub fn collate<'a>(&self, samples: impl IntoIterator<Item = &'a Sample>) -> Batch {
        let windows: Vec<Window<'a>> = samples.into_iter().map(|s| Window::new(s, self.max_len)).collect();
        let b = windows.len();
        let t = windows.iter().map(|w| w.len).max().unwrap_or(0);
        let c = windows.iter().flat_map(|w| (0..w.len).map(|i| w.candidate_range(i).len())).max().unwrap_or(0);
        let mut batch = Batch {
            batch_size: b,
            max_trace_len: t,
            max_candidates: c,
            trace_road_id: vec![0; b * t],
            temporal_info: vec![0.0; b * t],
            trace_distance_mat: vec![0.0; b * t * t],
            trace_time_interval_mat: vec![0.0; b * t * t],
            trace_len: vec![0; b],
            destination_road_id: vec![0; b],
            candidate_road_id: vec![0; b * t * c],
            metric_dis: vec![0.0; b * t * c],
            metric_angle: vec![0.0; b * t * c],
            candidate_len: vec![0; b * t],
            road_label: vec![0; b * t],
            timestamp_label: vec![0.0; b * t],
            step_mask: vec![false; b * t],
            candidate_mask: vec![false; b * t * c],
        };
        for (row, w) in windows.iter().enumerate() {
            let s = w.sample;
            let steps = w.start..w.start + w.len;
            let bt = row * t;
            batch.trace_len[row] = w.len as i64;
            batch.destination_road_id[row] = i64::from(s.destination_road_id);
            for (k, i) in steps.clone().enumerate() {
                batch.trace_road_id[bt + k] = i64::from(s.trace_road_id[i]);
                batch.temporal_info[bt + k] = s.temporal_info[i];
                batch.road_label[bt + k] = i64::from(s.road_label[i]);
                batch.timestamp_label[bt + k] = s.timestamp_label[i];
                batch.step_mask[bt + k] = true;
                let range = w.candidate_range(k);
                batch.candidate_len[bt + k] = range.len() as i64;
                let btc = (bt + k) * c;
                for (slot, j) in range.enumerate() {
                    batch.candidate_road_id[btc + slot] = i64::from(s.candidate_road_id[j]);
                    batch.metric_dis[btc + slot] = s.metric_dis[j];
                    batch.metric_angle[btc + slot] = s.metric_angle[j];
                    batch.candidate_mask[btc + slot] = true;
                }
            }
            let btt = row * t * t;
            write_distance_mat(
                &s.trace_road_id[steps.clone()],
                &self.centroids,
                &mut batch.trace_distance_mat[btt..],
                t,
            );
            write_time_mat(&s.temporal_info[steps], &mut batch.trace_time_interval_mat[btt..], t);
        }
        batch
    }
}

/// The steps of a sample that survive the crop.
struct Window<'a> {
    sample: &'a Sample,
    start: usize,
    len: usize,
}

impl<'a> Window<'a> {
    fn new(sample: &'a Sample, max_len: Option<usize>) -> Self {
        let t = sample.trace_len();
        let len = max_len.map_or(t, |m| m.min(t));
        Self { sample, start: t - len, len }
    }

    /// Candidate index range of the `k`-th step of the window.
    fn candidate_range(&self, k: usize) -> std::ops::Range<usize> {
        let i = self.start + k;
        self.sample.candidate_offsets[i] as usize..self.sample.candidate_offsets[i + 1] as usize
    }
}
