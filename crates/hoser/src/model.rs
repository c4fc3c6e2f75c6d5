//! The HOSER model in burn, matching upstream `models/*.py` (current form: learnable temporal
//! frequencies): road network encoder (GATv2 over roads, GCN over zones), trajectory encoder
//! (gated road–zone fusion, temporal encoding, spatio-temporal relative attention) and the
//! destination-oriented navigator with its time head.
//!
//! Parameters are named after upstream's module attributes, so [`Hoser::load_safetensors`] and
//! [`Hoser::save_safetensors`] read and write upstream `state_dict` keys (buffers excluded). Dropout is
//! not modelled: upstream's configs set it to 0.

mod graph;
mod weights;

pub use graph::{BatchTensors, GraphTensors};
pub use weights::WeightError;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, IndexingUpdateOp, Tensor};
use serde::{Deserialize, Serialize};

/// Width of the hidden layer of the fusion gate and of each half of the time head (fixed upstream).
const HEAD_WIDTH: usize = 64;

/// Model dimensions (upstream `config/<Dataset>.yaml`): the `model:` section of a HOSER stage
/// config. The table sizes come from the data ([`HoserConfig::with_tables`]) and are not config
/// keys; [`HoserConfig::problems`] names what cannot work, [`HoserConfig::try_init`] builds the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoserConfig {
    /// Number of roads (`road_id_num_embeddings`), from the data.
    #[serde(skip)]
    pub num_roads: usize,
    /// Number of road types (`type_num_embeddings`), from the data.
    #[serde(skip)]
    pub num_road_types: usize,
    /// Number of zones (`zone_id_num_embeddings`), from the data.
    #[serde(skip)]
    pub num_zones: usize,
    /// Road id embedding width (64 upstream).
    pub road_id_emb_dim: usize,
    /// Length embedding width (16 upstream).
    pub len_emb_dim: usize,
    /// Type embedding width (16 upstream).
    pub type_emb_dim: usize,
    /// Longitude embedding width (16 upstream).
    pub lon_emb_dim: usize,
    /// Latitude embedding width (16 upstream).
    pub lat_emb_dim: usize,
    /// Attention heads of the trajectory encoder (2 upstream).
    pub num_heads: usize,
    /// Transformer blocks of the trajectory encoder (2 upstream).
    pub num_layers: usize,
    /// Feed the model upstream's swapped-axis candidate angle (see
    /// [`FeatureOptions::upstream_angle_quirk`](crate::data::FeatureOptions::upstream_angle_quirk)):
    /// weights trained on one convention expect it, so it belongs with the model. Default `true`.
    pub upstream_angle_quirk: bool,
}

impl Default for HoserConfig {
    /// Upstream's dimensions, with empty tables (set them with [`HoserConfig::with_tables`]).
    fn default() -> Self {
        Self::upstream(0, 0, 0)
    }
}

/// A [`HoserConfig`] that cannot build a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HOSER model config: {}", .problems.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
pub struct HoserConfigError {
    /// `(field, message)` per problem; fields are the config keys (`num_heads`, ...).
    pub problems: Vec<(String, String)>,
}

impl HoserConfig {
    /// Upstream's dimensions (Beijing / Porto / San Francisco configs) for the given table sizes.
    pub fn upstream(num_roads: usize, num_road_types: usize, num_zones: usize) -> Self {
        Self {
            num_roads,
            num_road_types,
            num_zones,
            road_id_emb_dim: 64,
            len_emb_dim: 16,
            type_emb_dim: 16,
            lon_emb_dim: 16,
            lat_emb_dim: 16,
            num_heads: 2,
            num_layers: 2,
            upstream_angle_quirk: true,
        }
    }

    /// The same dimensions for tables of the given sizes (from the dataset).
    pub fn with_tables(&self, num_roads: usize, num_road_types: usize, num_zones: usize) -> Self {
        Self { num_roads, num_road_types, num_zones, ..self.clone() }
    }

    /// The road / zone embedding width d, which is also the trajectory and navigator hidden size
    /// (upstream asserts `intersection_emb_dim == zone_id_emb_dim == d` and uses 128 for both hidden
    /// sizes).
    pub fn hidden_dim(&self) -> usize {
        self.road_id_emb_dim + self.len_emb_dim + self.type_emb_dim + self.lon_emb_dim + self.lat_emb_dim
    }

    /// What is wrong with the dimensions, as `(field, message)` (empty when they can build a
    /// model). The table sizes are not checked here: they come from the data (see
    /// [`HoserConfig::try_init`]).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (key, v) in [
            ("road_id_emb_dim", self.road_id_emb_dim),
            ("len_emb_dim", self.len_emb_dim),
            ("type_emb_dim", self.type_emb_dim),
            ("lon_emb_dim", self.lon_emb_dim),
            ("lat_emb_dim", self.lat_emb_dim),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
        ] {
            if v == 0 {
                p.push((key.to_owned(), "expected a positive number".to_owned()));
            }
        }
        let d = self.hidden_dim();
        if !d.is_multiple_of(2) {
            p.push((
                "road_id_emb_dim".to_owned(),
                format!("the summed embedding width {d} must be even (cos/sin temporal encoding)"),
            ));
        }
        if self.num_heads > 0 && !(2 * d).is_multiple_of(self.num_heads) {
            p.push((
                "num_heads".to_owned(),
                format!("the trajectory width {} is not divisible by {} heads", 2 * d, self.num_heads),
            ));
        }
        p
    }

    /// Every problem [`HoserConfig::try_init`] would report (the dimensions, and tables that are
    /// empty), without building the model.
    pub fn check(&self) -> Result<(), HoserConfigError> {
        let mut problems = self.problems();
        for (key, v) in
            [("num_roads", self.num_roads), ("num_road_types", self.num_road_types), ("num_zones", self.num_zones)]
        {
            if v == 0 {
                problems.push((key.to_owned(), "the dataset gives an empty table".to_owned()));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(HoserConfigError { problems }) }
    }

    /// A randomly initialised model, or every problem of the config (see [`HoserConfig::check`]).
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Hoser<B>, HoserConfigError> {
        self.check()?;
        let d = self.hidden_dim();
        Ok(Hoser {
            road_network_encoder: RoadNetworkEncoder::new(self, device),
            trajectory_encoder: TrajectoryEncoder::new(self, device),
            navigator: Navigator::new(d, device),
        })
    }

    /// A randomly initialised model; see [`HoserConfig::try_init`].
    ///
    /// # Panics
    /// If the config does not validate (a programmer error: a stage checks it with `try_init` or
    /// [`HoserConfig::problems`] when it loads its config).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Hoser<B> {
        match self.try_init(device) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }
}

fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// `layer` applied to the last axis of `x`, with the leading axes flattened into one. burn's
/// `Linear` on a rank > 2 input is a batched matmul against the broadcast weight, and its backward
/// materialises one `[d_in, d_out]` weight gradient per leading index before summing them (365 MB
/// for the navigator's `k_proj` at B = 64, T = 29); as one 2-D matmul the same training step runs
/// about twice as fast on the CPU backend (ARCHITECTURE.md, "HOSER training throughput vs
/// upstream (CPU)").
fn apply<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    if D <= 2 {
        return layer.forward(x);
    }
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    let y = layer.forward(x.reshape([rows, dims[D - 1]]));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// Two linears with an activation between them, named like PyTorch `nn.Sequential` items 0 and 2.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `…0`.
    pub l0: Linear<B>,
    /// `…2`.
    pub l2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn new(d_in: usize, d_hidden: usize, d_out: usize, device: &B::Device) -> Self {
        Self { l0: linear(d_in, d_hidden, true, device), l2: linear(d_hidden, d_out, true, device) }
    }

    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        apply(&self.l2, gelu(apply(&self.l0, x)))
    }
}

/// One PyG `GATv2Conv` (heads 1, edge_dim 2, self-loops with mean-filled edge attrs).
#[derive(Module, Debug)]
pub struct GatV2Conv<B: Backend> {
    /// Source-side projection.
    pub lin_l: Linear<B>,
    /// Target-side projection.
    pub lin_r: Linear<B>,
    /// Edge attribute projection (no bias).
    pub lin_edge: Linear<B>,
    /// Attention vector `[1, 1, d]` (PyG layout).
    pub att: Param<Tensor<B, 3>>,
    /// Output bias.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> GatV2Conv<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        Self {
            lin_l: linear(d, d, true, device),
            lin_r: linear(d, d, true, device),
            lin_edge: linear(2, d, false, device),
            att: Param::from_tensor(Tensor::random([1, 1, d], Distribution::Normal(0.0, 0.1), device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
        }
    }

    /// `x` `[N, d]` → `[N, d]` over the graph's road edges (self-loops included).
    fn forward(&self, x: Tensor<B, 2>, g: &GraphTensors<B>) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let x_l = self.lin_l.forward(x.clone());
        let x_r = self.lin_r.forward(x);
        let x_j = x_l.select(0, g.road_src.clone());
        let m = x_j.clone() + x_r.select(0, g.road_dst.clone()) + self.lin_edge.forward(g.road_edge_attr.clone());
        let att = self.att.val().reshape([1, d]);
        let score = (leaky_relu(m, 0.2) * att).sum_dim(1); // [E, 1]
        let alpha = graph::segment_softmax(score, &g.road_dst, &g.road_dst_host, n);
        let out = Tensor::zeros([n, d], &x_j.device()).select_assign(
            0,
            g.road_dst.clone(),
            x_j * alpha,
            IndexingUpdateOp::Add,
        );
        out + self.bias.val().unsqueeze_dim(0)
    }
}

/// One PyG `GCNConv` (self-loops weight 1, symmetric normalisation).
#[derive(Module, Debug)]
pub struct GcnConv<B: Backend> {
    /// Projection (no bias).
    pub lin: Linear<B>,
    /// Output bias.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> GcnConv<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        Self { lin: linear(d, d, false, device), bias: Param::from_tensor(Tensor::zeros([d], device)) }
    }

    fn forward(&self, x: Tensor<B, 2>, g: &GraphTensors<B>) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let h = self.lin.forward(x);
        let msg = h.select(0, g.zone_src.clone()) * g.zone_norm.clone();
        let out = Tensor::zeros([n, d], &msg.device()).select_assign(0, g.zone_dst.clone(), msg, IndexingUpdateOp::Add);
        out + self.bias.val().unsqueeze_dim(0)
    }
}

/// PyG `GAT`: two convolutions with ReLU between.
#[derive(Module, Debug)]
pub struct RoadGat<B: Backend> {
    /// The convolutions.
    pub convs: Vec<GatV2Conv<B>>,
}

/// PyG `GCN`: two convolutions with ReLU between.
#[derive(Module, Debug)]
pub struct ZoneGcn<B: Backend> {
    /// The convolutions.
    pub convs: Vec<GcnConv<B>>,
}

/// Upstream `RoadNetworkEncoder`.
#[derive(Module, Debug)]
pub struct RoadNetworkEncoder<B: Backend> {
    /// Road id embedding.
    pub road_id_emb: Embedding<B>,
    /// Length embedding `Linear(1, ·)`.
    pub len_emb: Linear<B>,
    /// Road type embedding.
    pub type_emb: Embedding<B>,
    /// Longitude embedding `Linear(1, ·)`.
    pub lon_emb: Linear<B>,
    /// Latitude embedding `Linear(1, ·)`.
    pub lat_emb: Linear<B>,
    /// Zone id embedding.
    pub zone_id_emb: Embedding<B>,
    /// Road GNN.
    pub road_gat: RoadGat<B>,
    /// Zone GNN.
    pub zone_gcn: ZoneGcn<B>,
}

impl<B: Backend> RoadNetworkEncoder<B> {
    fn new(c: &HoserConfig, device: &B::Device) -> Self {
        let d = c.hidden_dim();
        Self {
            road_id_emb: EmbeddingConfig::new(c.num_roads, c.road_id_emb_dim).init(device),
            len_emb: linear(1, c.len_emb_dim, true, device),
            type_emb: EmbeddingConfig::new(c.num_road_types, c.type_emb_dim).init(device),
            lon_emb: linear(1, c.lon_emb_dim, true, device),
            lat_emb: linear(1, c.lat_emb_dim, true, device),
            zone_id_emb: EmbeddingConfig::new(c.num_zones, d).init(device),
            road_gat: RoadGat { convs: vec![GatV2Conv::new(d, device), GatV2Conv::new(d, device)] },
            zone_gcn: ZoneGcn { convs: vec![GcnConv::new(d, device), GcnConv::new(d, device)] },
        }
    }

    /// All road embeddings after the GAT, `[N, d]`.
    pub fn road_embedding(&self, g: &GraphTensors<B>) -> Tensor<B, 2> {
        let x = Tensor::cat(
            vec![
                self.road_id_emb.weight.val(),
                self.len_emb.forward(g.road_attr_len.clone()),
                self.type_emb.weight.val().select(0, g.road_attr_type.clone()),
                self.lon_emb.forward(g.road_attr_lon.clone()),
                self.lat_emb.forward(g.road_attr_lat.clone()),
            ],
            1,
        );
        let mut x = x;
        for (i, conv) in self.road_gat.convs.iter().enumerate() {
            if i > 0 {
                x = relu(x);
            }
            x = conv.forward(x, g);
        }
        x
    }

    /// All zone embeddings after the GCN, `[Z, d]`.
    pub fn zone_embedding(&self, g: &GraphTensors<B>) -> Tensor<B, 2> {
        let mut x = self.zone_id_emb.weight.val();
        for (i, conv) in self.zone_gcn.convs.iter().enumerate() {
            if i > 0 {
                x = relu(x);
            }
            x = conv.forward(x, g);
        }
        x
    }
}

/// Upstream `TemporalEncoder` (learnable frequencies).
#[derive(Module, Debug)]
pub struct TemporalEncoder<B: Backend> {
    /// `[d/2]` frequencies.
    pub freqs: Param<Tensor<B, 1>>,
}

/// Upstream `CausalSelfAttention` with spatio-temporal relative terms.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// Relative key term `Linear(2, d_head)`, shared by the heads.
    pub relative_position_emb_k: Linear<B>,
    /// Relative value term `Linear(2, d_head)`, shared by the heads.
    pub relative_position_emb_v: Linear<B>,
    /// Joint q/k/v projection.
    pub c_attn: Linear<B>,
    /// Output projection.
    pub c_proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    fn forward(&self, x: Tensor<B, 3>, rel: Tensor<B, 4>, mask: Tensor<B, 4, burn::tensor::Bool>) -> Tensor<B, 3> {
        let [b, t, w] = x.dims();
        let h = self.num_heads;
        let dh = w / h;
        let qkv = apply(&self.c_attn, x);
        let split = |i: usize| qkv.clone().narrow(2, i * w, w).reshape([b, t, h, dh]).swap_dims(1, 2);
        let (q, k, v) = (split(0), split(1), split(2)); // [B, H, T, dh]
        let attn1 = q.clone().matmul(k.swap_dims(2, 3));
        let k2 = apply(&self.relative_position_emb_k, rel.clone()); // [B, T, T, dh]
        let attn2 = q.swap_dims(1, 2).matmul(k2.swap_dims(2, 3)).swap_dims(1, 2);
        let attn = (attn1 + attn2) * (1.0 / (dh as f64).sqrt());
        let attn = softmax(attn.mask_fill(mask.expand([b, h, t, t]), f32::NEG_INFINITY), 3);
        let weight1 = attn.clone().matmul(v);
        let v2 = apply(&self.relative_position_emb_v, rel);
        let weight2 = attn.swap_dims(1, 2).matmul(v2).swap_dims(1, 2);
        let y = (weight1 + weight2).swap_dims(1, 2).reshape([b, t, w]);
        apply(&self.c_proj, y)
    }
}

/// Upstream pre-LN transformer `Block`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Attention.
    pub attn: CausalSelfAttention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// `w → 4w → GELU → w`.
    pub mlp: Mlp<B>,
}

/// Upstream `transformer` ModuleDict (only `h` holds parameters).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The blocks.
    pub h: Vec<Block<B>>,
}

/// Upstream `TrajectoryEncoder`.
#[derive(Module, Debug)]
pub struct TrajectoryEncoder<B: Backend> {
    /// Gate MLP `2d → 64 → GELU → 1`.
    pub road_zone_fusion_mlp: Mlp<B>,
    /// Time-of-day encoding.
    pub temporal_encoder: TemporalEncoder<B>,
    /// Transformer blocks.
    pub transformer: Transformer<B>,
}

impl<B: Backend> TrajectoryEncoder<B> {
    fn new(c: &HoserConfig, device: &B::Device) -> Self {
        let d = c.hidden_dim();
        let w = 2 * d;
        let dh = w / c.num_heads;
        let block = || Block {
            ln_1: LayerNormConfig::new(w).init(device),
            attn: CausalSelfAttention {
                relative_position_emb_k: linear(2, dh, true, device),
                relative_position_emb_v: linear(2, dh, true, device),
                c_attn: linear(w, 3 * w, true, device),
                c_proj: linear(w, w, true, device),
                num_heads: c.num_heads,
            },
            ln_2: LayerNormConfig::new(w).init(device),
            mlp: Mlp::new(w, 4 * w, w, device),
        };
        Self {
            road_zone_fusion_mlp: Mlp::new(2 * d, HEAD_WIDTH, 1, device),
            temporal_encoder: TemporalEncoder {
                freqs: Param::from_tensor(Tensor::random([d / 2], Distribution::Normal(0.0, 1.0), device)),
            },
            transformer: Transformer { h: (0..c.num_layers).map(|_| block()).collect() },
        }
    }

    /// `[B, T, d]` road and zone embeddings → `[B, T, 2d]`.
    fn forward(&self, road: Tensor<B, 3>, zone: Tensor<B, 3>, input: &BatchTensors<B>) -> Tensor<B, 3> {
        let d = road.dims()[2];
        let gate = sigmoid(self.road_zone_fusion_mlp.forward(Tensor::cat(vec![road.clone(), zone.clone()], 2)));
        let spatial = road + gate * zone;
        let freqs = self.temporal_encoder.freqs.val().unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0);
        let angle = input.temporal_info.clone().unsqueeze_dim::<3>(2) * freqs;
        let temporal = Tensor::cat(vec![angle.clone().cos(), angle.sin()], 2) * (1.0 / (2.0 * d as f64)).sqrt();
        let mut x = Tensor::cat(vec![spatial, temporal], 2);
        let rel = Tensor::cat(
            vec![
                input.trace_distance_mat.clone().unsqueeze_dim::<4>(3),
                input.trace_time_interval_mat.clone().unsqueeze_dim::<4>(3),
            ],
            3,
        );
        let mask = input.attention_mask();
        for block in &self.transformer.h {
            x = x.clone() + block.attn.forward(block.ln_1.forward(x), rel.clone(), mask.clone());
            x = x.clone() + block.mlp.forward(block.ln_2.forward(x));
        }
        x
    }
}

/// Upstream `Navigator`.
#[derive(Module, Debug)]
pub struct Navigator<B: Backend> {
    /// `Linear(1, d)` of the distance metric.
    pub metric_distance_proj: Linear<B>,
    /// `Linear(1, d)` of the angle metric.
    pub metric_angle_proj: Linear<B>,
    /// `3d → d`, no bias.
    pub q_proj: Linear<B>,
    /// `3d → d`, no bias.
    pub k_proj: Linear<B>,
    /// `d → 1`, no bias.
    pub v_proj: Linear<B>,
    /// Unused upstream head `3d → 64 → 1`, kept so state dicts round-trip.
    pub time_estimator: Mlp<B>,
    /// Time head, trajectory side `2d → 64`.
    pub time_estimator_linear_1: Linear<B>,
    /// Time head, candidate side `d → 64`.
    pub time_estimator_linear_2: Linear<B>,
    /// Time head output `128 → 1`.
    pub time_estimator_linear_3: Linear<B>,
}

impl<B: Backend> Navigator<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        Self {
            metric_distance_proj: linear(1, d, true, device),
            metric_angle_proj: linear(1, d, true, device),
            q_proj: linear(3 * d, d, false, device),
            k_proj: linear(3 * d, d, false, device),
            v_proj: linear(d, 1, false, device),
            time_estimator: Mlp::new(3 * d, HEAD_WIDTH, 1, device),
            time_estimator_linear_1: linear(2 * d, HEAD_WIDTH, true, device),
            time_estimator_linear_2: linear(d, HEAD_WIDTH, true, device),
            time_estimator_linear_3: linear(2 * HEAD_WIDTH, 1, true, device),
        }
    }

    /// Trajectory `[B, T, 2d]`, destination zone `[B, d]`, candidates `[B, T, C, d]` →
    /// (logits, time) `[B, T, C]`.
    fn forward(
        &self,
        traj: Tensor<B, 3>,
        dest_zone: Tensor<B, 2>,
        cand: Tensor<B, 4>,
        input: &BatchTensors<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [b, t, c, d] = cand.dims();
        let dest = dest_zone.unsqueeze_dim::<3>(1).expand([b, t, d]);
        let q = apply(&self.q_proj, Tensor::cat(vec![traj.clone(), dest], 2)).unsqueeze_dim::<4>(2);
        let k = Tensor::cat(
            vec![
                cand.clone(),
                apply(&self.metric_distance_proj, input.metric_dis.clone().unsqueeze_dim::<4>(3)),
                apply(&self.metric_angle_proj, input.metric_angle.clone().unsqueeze_dim::<4>(3)),
            ],
            3,
        );
        let k = apply(&self.k_proj, k);
        let logits = apply(&self.v_proj, (q + k).tanh()).reshape([b, t, c]);
        let h1 = apply(&self.time_estimator_linear_1, traj).unsqueeze_dim::<4>(2).expand([b, t, c, HEAD_WIDTH]);
        let h2 = apply(&self.time_estimator_linear_2, cand);
        let time = apply(&self.time_estimator_linear_3, gelu(Tensor::cat(vec![h1, h2], 3))).reshape([b, t, c]);
        (logits, time)
    }
}

/// The whole HOSER model (upstream `HOSER`).
#[derive(Module, Debug)]
pub struct Hoser<B: Backend> {
    /// Road and zone GNNs.
    pub road_network_encoder: RoadNetworkEncoder<B>,
    /// Trajectory transformer.
    pub trajectory_encoder: TrajectoryEncoder<B>,
    /// Next-road and time heads.
    pub navigator: Navigator<B>,
}

impl<B: Backend> Hoser<B> {
    /// Logits and normalised time predictions, both `[B, T, C]`. The road and zone GNNs run on every
    /// call (trainable, like upstream's per-batch `setup_road_network_features`). Padded steps and
    /// candidates hold finite garbage; the losses mask them.
    pub fn forward(&self, graph: &GraphTensors<B>, input: &BatchTensors<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let roads = self.road_network_encoder.road_embedding(graph);
        let zones = self.road_network_encoder.zone_embedding(graph);
        let [b, t] = input.trace_road_id.dims();
        let [_, _, c] = input.candidate_road_id.dims();
        let d = roads.dims()[1];
        let gather3 = |table: &Tensor<B, 2>, ids: &Tensor<B, 2, burn::tensor::Int>| {
            table.clone().select(0, ids.clone().reshape([b * t])).reshape([b, t, d])
        };
        let road = gather3(&roads, &input.trace_road_id);
        let zone = gather3(&zones, &input.trace_zone_id);
        let traj = self.trajectory_encoder.forward(road, zone, input);
        let dest_zone = zones.select(0, input.destination_zone_id.clone());
        let cand = roads.select(0, input.candidate_road_id.clone().reshape([b * t * c])).reshape([b, t, c, d]);
        self.navigator.forward(traj, dest_zone, cand, input)
    }
}
