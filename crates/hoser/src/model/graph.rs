//! Graph and batch inputs of the model as tensors, and the sparse softmax of the GAT.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::data::{Batch, StaticFeatures};

/// The static graph inputs (upstream's registered buffers), with PyG's self-loop handling applied.
#[derive(Debug, Clone)]
pub struct GraphTensors<B: Backend> {
    /// `[N, 1]` length feature.
    pub road_attr_len: Tensor<B, 2>,
    /// `[N]` road type.
    pub road_attr_type: Tensor<B, 1, Int>,
    /// `[N, 1]` longitude feature.
    pub road_attr_lon: Tensor<B, 2>,
    /// `[N, 1]` latitude feature.
    pub road_attr_lat: Tensor<B, 2>,
    /// `[E']` GAT edge sources: the graph's non-loop edges, then one self-loop per road.
    pub road_src: Tensor<B, 1, Int>,
    /// `[E']` GAT edge targets.
    pub road_dst: Tensor<B, 1, Int>,
    /// The targets on the host (for the per-target softmax shift).
    pub road_dst_host: Vec<usize>,
    /// `[E', 2]` edge attributes; a self-loop carries the mean of its road's incoming attributes.
    pub road_edge_attr: Tensor<B, 2>,
    /// `[F]` GCN edge sources (zone edges plus remaining self-loops).
    pub zone_src: Tensor<B, 1, Int>,
    /// `[F]` GCN edge targets.
    pub zone_dst: Tensor<B, 1, Int>,
    /// `[F, 1]` GCN normalised edge weights `deg^-½[src] · w · deg^-½[dst]`.
    pub zone_norm: Tensor<B, 2>,
    /// Zone of each road (host copy, to build [`BatchTensors`]).
    pub road_to_zone: Vec<u32>,
}

fn ints<B: Backend>(v: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device)
}

fn floats<B: Backend, const D: usize>(v: Vec<f32>, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

impl<B: Backend> GraphTensors<B> {
    /// Builds the graph tensors from the raw parts (upstream buffer layout): road features, road
    /// edges `(src, dst)` with `[angle, reachable]` attributes, weighted zone edges, `road2zone`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        road_attr_len: &[f32],
        road_attr_type: &[u32],
        road_attr_lon: &[f32],
        road_attr_lat: &[f32],
        road_edges: &[(usize, usize)],
        road_edge_attr: &[[f32; 2]],
        num_zones: usize,
        zone_edges: &[(usize, usize)],
        zone_weight: &[f32],
        road_to_zone: &[u32],
        device: &B::Device,
    ) -> Self {
        let n = road_attr_len.len();
        // GATv2Conv: remove self-loops, then add one per node whose attribute is the mean of the
        // node's incoming (non-loop) edge attributes (PyG `fill_value='mean'`, 0 without any).
        let mut src = Vec::new();
        let mut dst = Vec::new();
        let mut attr = Vec::new();
        let mut sum = vec![[0f32; 2]; n];
        let mut count = vec![0f32; n];
        for (&(s, t), a) in road_edges.iter().zip(road_edge_attr) {
            if s == t {
                continue;
            }
            src.push(s);
            dst.push(t);
            attr.extend_from_slice(a);
            sum[t][0] += a[0];
            sum[t][1] += a[1];
            count[t] += 1.0;
        }
        for i in 0..n {
            src.push(i);
            dst.push(i);
            let c = count[i].max(1.0);
            attr.extend_from_slice(&[sum[i][0] / c, sum[i][1] / c]);
        }
        // GCNConv: add_remaining_self_loops (an existing loop keeps its weight, others get 1), then
        // deg = Σ incoming weights, norm = deg^-½[src] · w · deg^-½[dst].
        let mut zs = Vec::new();
        let mut zd = Vec::new();
        let mut zw = Vec::new();
        let mut loop_w = vec![1f32; num_zones];
        for (&(s, t), &w) in zone_edges.iter().zip(zone_weight) {
            if s == t {
                loop_w[s] = w;
            } else {
                zs.push(s);
                zd.push(t);
                zw.push(w);
            }
        }
        for (z, &w) in loop_w.iter().enumerate() {
            zs.push(z);
            zd.push(z);
            zw.push(w);
        }
        let mut deg = vec![0f32; num_zones];
        for (&t, &w) in zd.iter().zip(&zw) {
            deg[t] += w;
        }
        let dinv: Vec<f32> = deg.iter().map(|&x| if x > 0.0 { 1.0 / x.sqrt() } else { 0.0 }).collect();
        let norm: Vec<f32> = zs.iter().zip(&zd).zip(&zw).map(|((&s, &t), &w)| dinv[s] * w * dinv[t]).collect();
        let e = src.len();
        let f = zs.len();
        Self {
            road_attr_len: floats(road_attr_len.to_vec(), [n, 1], device),
            road_attr_type: ints(&road_attr_type.iter().map(|&x| x as usize).collect::<Vec<_>>(), device),
            road_attr_lon: floats(road_attr_lon.to_vec(), [n, 1], device),
            road_attr_lat: floats(road_attr_lat.to_vec(), [n, 1], device),
            road_src: ints(&src, device),
            road_dst: ints(&dst, device),
            road_dst_host: dst,
            road_edge_attr: floats(attr, [e, 2], device),
            zone_src: ints(&zs, device),
            zone_dst: ints(&zd, device),
            zone_norm: floats(norm, [f, 1], device),
            road_to_zone: road_to_zone.to_vec(),
        }
    }

    /// Builds the graph tensors of a dataset.
    pub fn new(features: &StaticFeatures, device: &B::Device) -> Self {
        let rg = &features.road_graph;
        let road_edges: Vec<(usize, usize)> =
            rg.src.iter().zip(&rg.dst).map(|(&s, &t)| (s as usize, t as usize)).collect();
        let road_attr: Vec<[f32; 2]> = rg.angle.iter().zip(&rg.reachable).map(|(&a, &r)| [a, r]).collect();
        let zg = &features.zone_graph;
        let zone_edges: Vec<(usize, usize)> =
            zg.src.iter().zip(&zg.dst).map(|(&s, &t)| (s as usize, t as usize)).collect();
        Self::from_parts(
            &features.road_attr_len,
            &features.road_attr_type,
            &features.road_attr_lon,
            &features.road_attr_lat,
            &road_edges,
            &road_attr,
            features.num_zones,
            &zone_edges,
            &zg.weight,
            &features.road_to_zone,
            device,
        )
    }
}

/// Softmax of `score` `[E, 1]` over the edges sharing a target (PyG `softmax(alpha, index)`): each
/// score is shifted by its target's maximum (taken on the host from detached values; softmax is
/// invariant to the shift, so gradients are exact), exponentiated and divided by the scatter-added
/// sum of its target (plus PyG's 1e-16).
pub(crate) fn segment_softmax<B: Backend>(
    score: Tensor<B, 2>,
    dst: &Tensor<B, 1, Int>,
    dst_host: &[usize],
    n: usize,
) -> Tensor<B, 2> {
    let device = score.device();
    let values: Vec<f32> = score.clone().detach().into_data().convert::<f32>().into_vec().expect("f32 scores");
    let mut max = vec![f32::NEG_INFINITY; n];
    for (&t, &v) in dst_host.iter().zip(&values) {
        max[t] = max[t].max(v);
    }
    let shift: Vec<f32> = dst_host.iter().map(|&t| max[t]).collect();
    let e = shift.len();
    let exp = (score - floats::<B, 2>(shift, [e, 1], &device)).exp();
    let denom = Tensor::<B, 2>::zeros([n, 1], &device).select_assign(
        0,
        dst.clone(),
        exp.clone(),
        burn::tensor::IndexingUpdateOp::Add,
    ) + 1e-16;
    exp / denom.select(0, dst.clone())
}

/// The model inputs of one [`Batch`] as tensors (upstream `HOSER.forward` arguments, with the zone
/// lookups done on the host).
#[derive(Debug, Clone)]
pub struct BatchTensors<B: Backend> {
    /// `[B, T]` road ids.
    pub trace_road_id: Tensor<B, 2, Int>,
    /// `[B, T]` zone of each step's road.
    pub trace_zone_id: Tensor<B, 2, Int>,
    /// `[B, T]` time-of-day feature.
    pub temporal_info: Tensor<B, 2>,
    /// `[B, T, T]` distance matrix.
    pub trace_distance_mat: Tensor<B, 3>,
    /// `[B, T, T]` time interval matrix.
    pub trace_time_interval_mat: Tensor<B, 3>,
    /// `[B]` real steps per row (host copy).
    pub trace_len: Vec<usize>,
    /// `[B]` zone of the destination road.
    pub destination_zone_id: Tensor<B, 1, Int>,
    /// `[B, T, C]` candidate roads.
    pub candidate_road_id: Tensor<B, 3, Int>,
    /// `[B, T, C]` distance metric.
    pub metric_dis: Tensor<B, 3>,
    /// `[B, T, C]` angle metric.
    pub metric_angle: Tensor<B, 3>,
}

impl<B: Backend> BatchTensors<B> {
    /// Moves a batch onto `device`; `road_to_zone` is upstream's `road2zone`.
    pub fn new(batch: &Batch, road_to_zone: &[u32], device: &B::Device) -> Self {
        let [b, t] = batch.step_shape();
        let pair = batch.pair_shape();
        let cand = batch.candidate_shape();
        let int2 = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, t]), device);
        let zone = |r: &i64| i64::from(road_to_zone[*r as usize]);
        Self {
            trace_road_id: int2(batch.trace_road_id.clone()),
            trace_zone_id: int2(batch.trace_road_id.iter().map(zone).collect()),
            temporal_info: floats(batch.temporal_info.clone(), [b, t], device),
            trace_distance_mat: floats(batch.trace_distance_mat.clone(), pair, device),
            trace_time_interval_mat: floats(batch.trace_time_interval_mat.clone(), pair, device),
            trace_len: batch.trace_len.iter().map(|&l| l as usize).collect(),
            destination_zone_id: Tensor::from_data(
                TensorData::new(batch.destination_road_id.iter().map(zone).collect::<Vec<_>>(), [b]),
                device,
            ),
            candidate_road_id: Tensor::from_data(TensorData::new(batch.candidate_road_id.clone(), cand), device),
            metric_dis: floats(batch.metric_dis.clone(), cand, device),
            metric_angle: floats(batch.metric_angle.clone(), cand, device),
        }
    }

    /// `[B, 1, T, T]` attention mask, `true` where masked: `j > i` (causal) or `j ≥ trace_len`.
    pub fn attention_mask(&self) -> Tensor<B, 4, Bool> {
        let [b, t] = self.trace_road_id.dims();
        let mut mask = Vec::with_capacity(b * t * t);
        for &len in &self.trace_len {
            for i in 0..t {
                mask.extend((0..t).map(|j| j > i || j >= len));
            }
        }
        Tensor::from_data(TensorData::new(mask, [b, 1, t, t]), &self.trace_road_id.device())
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    fn host<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().unwrap()
    }

    fn host_int(t: Tensor<Flex, 1, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().into_vec().unwrap()
    }

    #[test]
    fn self_loops_follow_pyg() {
        let device = Default::default();
        // Roads: 0→1 [1, 0], 2→1 [0, 1], and a self-loop 1→1 that GATv2Conv drops.
        // Zones: 0→1 weight 2, self-loop 1→1 weight 3 (kept by add_remaining_self_loops), zone 0 gets 1.
        let g = GraphTensors::<Flex>::from_parts(
            &[0.0; 3],
            &[0; 3],
            &[0.0; 3],
            &[0.0; 3],
            &[(0, 1), (2, 1), (1, 1)],
            &[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
            2,
            &[(0, 1), (1, 1)],
            &[2.0, 3.0],
            &[0, 1, 1],
            &device,
        );
        assert_eq!(host_int(g.road_src), vec![0, 2, 0, 1, 2]);
        assert_eq!(g.road_dst_host, vec![1, 1, 0, 1, 2]);
        // Loop attrs: mean of incoming non-loop attrs, 0 without any.
        assert_eq!(host(g.road_edge_attr), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]);
        assert_eq!(host_int(g.zone_src), vec![0, 0, 1]);
        assert_eq!(host_int(g.zone_dst), vec![1, 0, 1]);
        // deg = [1, 2 + 3]; norm = deg^-½[src] · w · deg^-½[dst].
        let want = [2.0 / 5f32.sqrt(), 1.0, 3.0 / 5.0];
        for (got, want) in host(g.zone_norm).iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn softmax_is_per_target_and_survives_far_apart_scores() {
        let device = Default::default();
        let dst = [0usize, 0, 1, 1, 2];
        let score = Tensor::<Flex, 2>::from_data(
            TensorData::new(vec![1000.0f32, 1000.0, -1000.0, -1001.0, 5.0], [5, 1]),
            &device,
        );
        let alpha = host(segment_softmax(score, &ints(&dst, &device), &dst, 3));
        let e = (-1f32).exp();
        let want = [0.5, 0.5, 1.0 / (1.0 + e), e / (1.0 + e), 1.0];
        for (got, want) in alpha.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{alpha:?}");
        }
    }
}
