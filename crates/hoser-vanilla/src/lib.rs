//! The `hoser-vanilla` stage: HOSER trained from scratch on next-road cross-entropy plus the
//! log1p relative time loss (upstream `train.py`), on the shared trainer.
//!
//! The road and zone encoders run on every training step (trainable, as upstream; not the fork's
//! frozen `no_grad` features). Validation reports `val_next_step_acc` (Σ correct / Σ supervised
//! steps over the whole split) and `val_time_pred_mape` (HOSER's log1p relative error), and the best
//! model is selected by the accuracy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use hoser::baseline::most_frequent_successor_accuracy;
use hoser::data::{Batch, Collator, DatasetOptions, HoserData, file_crc32c};
use hoser::model::{BatchTensors, GraphTensors, Hoser, HoserConfig};
use losses::combined::CombinedLoss;
use losses::sequence::{
    CandidateSteps, NextStepAccuracy, TimeErrorSums, TimeNormalization, hoser_time_loss, masked_cross_entropy,
    next_step_accuracy, time_error,
};
use serde::{Deserialize, Serialize};
use trainer::config::{ConfigProblem, RunConfig, Validate};
use trainer::task::{Metrics, Mode, Selection, StepOutput, Task, TaskResult};

/// Stage name: the binary, the default output directory `runs/hoser-vanilla`.
pub const NAME: &str = "hoser-vanilla";

/// Loss term names this stage computes (config weights `ce_weight`, `time_weight`).
pub const LOSS_TERMS: [&str; 2] = ["ce", "time"];

fn problem(key: &str, message: &str) -> ConfigProblem {
    ConfigProblem { key: key.into(), message: message.into(), origin: None }
}

/// `model:` — HOSER's dimensions (upstream defaults); the table sizes come from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Road id embedding width (64 upstream).
    pub road_id_emb_dim: usize,
    /// Road length embedding width (16 upstream).
    pub len_emb_dim: usize,
    /// Road type embedding width (16 upstream).
    pub type_emb_dim: usize,
    /// Longitude embedding width (16 upstream).
    pub lon_emb_dim: usize,
    /// Latitude embedding width (16 upstream).
    pub lat_emb_dim: usize,
    /// Attention heads of the trajectory encoder (2 upstream).
    pub num_heads: usize,
    /// Transformer blocks of the trajectory encoder (2 upstream).
    pub num_layers: usize,
    /// Reproduce upstream's swapped-axis candidate angle (see `hoser::data::FeatureOptions`).
    pub upstream_angle_quirk: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        let u = HoserConfig::upstream(1, 1, 1);
        Self {
            road_id_emb_dim: u.road_id_emb_dim,
            len_emb_dim: u.len_emb_dim,
            type_emb_dim: u.type_emb_dim,
            lon_emb_dim: u.lon_emb_dim,
            lat_emb_dim: u.lat_emb_dim,
            num_heads: u.num_heads,
            num_layers: u.num_layers,
            upstream_angle_quirk: true,
        }
    }
}

impl ModelSection {
    /// The model config for tables of the given sizes.
    pub fn hoser_config(&self, num_roads: usize, num_road_types: usize, num_zones: usize) -> HoserConfig {
        HoserConfig {
            num_roads,
            num_road_types,
            num_zones,
            road_id_emb_dim: self.road_id_emb_dim,
            len_emb_dim: self.len_emb_dim,
            type_emb_dim: self.type_emb_dim,
            lon_emb_dim: self.lon_emb_dim,
            lat_emb_dim: self.lat_emb_dim,
            num_heads: self.num_heads,
            num_layers: self.num_layers,
        }
    }
}

impl Validate for ModelSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        for (key, v) in [
            ("model.road_id_emb_dim", self.road_id_emb_dim),
            ("model.len_emb_dim", self.len_emb_dim),
            ("model.type_emb_dim", self.type_emb_dim),
            ("model.lon_emb_dim", self.lon_emb_dim),
            ("model.lat_emb_dim", self.lat_emb_dim),
            ("model.num_heads", self.num_heads),
            ("model.num_layers", self.num_layers),
        ] {
            if v == 0 {
                p.push(problem(key, "expected a positive number"));
            }
        }
        let d = self.hoser_config(1, 1, 1).hidden_dim();
        if !d.is_multiple_of(2) {
            p.push(problem("model.road_id_emb_dim", &format!("the summed embedding width {d} must be even")));
        }
        if self.num_heads > 0 && !(2 * d).is_multiple_of(self.num_heads) {
            p.push(problem(
                "model.num_heads",
                &format!("the trajectory width {} is not divisible by {} heads", 2 * d, self.num_heads),
            ));
        }
    }
}

/// `data:` — which LibCity dataset and how it is preprocessed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Dataset name (`Beijing`, `Porto`, ...); names the default `data_dir`.
    pub dataset: String,
    /// Directory of `roadmap.geo`, `roadmap.rel`, `train.csv`, `val.csv`, `test.csv`
    /// (default `data/<dataset>`).
    pub data_dir: Option<PathBuf>,
    /// Zones computed with METIS when the dataset has no `road_network_partition` file (300 upstream).
    pub num_zones: usize,
    /// Seed of the zone partitioner.
    pub partition_seed: u64,
    /// Skip (and count) trajectories that contradict the road network instead of failing.
    pub skip_invalid: bool,
    /// Keep only the last `max_len` steps of longer trajectories (`null`: no crop).
    pub max_len: Option<usize>,
    /// Directory of the preprocessing cache (`null`: no cache).
    pub cache_dir: Option<PathBuf>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            dataset: "Beijing".into(),
            data_dir: None,
            num_zones: 300,
            partition_seed: 0,
            skip_invalid: false,
            max_len: None,
            cache_dir: None,
        }
    }
}

impl DataSection {
    /// `data_dir`, or `data/<dataset>`.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("data").join(&self.dataset))
    }
}

impl Validate for DataSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if self.dataset.is_empty() {
            p.push(problem("data.dataset", "expected a dataset name"));
        }
        if self.num_zones == 0 {
            p.push(problem("data.num_zones", "expected a positive number"));
        }
        if self.max_len == Some(0) {
            p.push(problem("data.max_len", "expected at least 1, or null for no crop"));
        }
    }
}

/// `loss:` — weights of `loss = ce_weight · L_next + time_weight · L_time` (upstream: both 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// Weight of the masked next-road cross-entropy (`loss_ce`).
    pub ce_weight: f64,
    /// Weight of HOSER's log1p relative time loss (`loss_time`).
    pub time_weight: f64,
}

impl Default for LossSection {
    fn default() -> Self {
        Self { ce_weight: 1.0, time_weight: 1.0 }
    }
}

impl LossSection {
    /// The weights by term name.
    pub fn weights(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([("ce".to_string(), self.ce_weight), ("time".to_string(), self.time_weight)])
    }
}

impl Validate for LossSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if let Err(errors) = CombinedLoss::new(&self.weights(), &LOSS_TERMS) {
            for e in errors {
                p.push(problem("loss", &e.to_string()));
            }
        }
    }
}

/// Full config of the stage.
pub type VanillaConfig = RunConfig<ModelSection, DataSection, LossSection>;

/// The vanilla HOSER task over a loaded dataset.
pub struct VanillaTask {
    data: HoserData,
    collator: Collator,
    model: HoserConfig,
    loss: CombinedLoss,
    norm: TimeNormalization,
    val_batch_size: usize,
    dataset_id: String,
    baseline_acc: f64,
}

impl VanillaTask {
    /// Loads (and caches) the dataset the config names.
    pub fn new(config: &VanillaConfig) -> Result<Self, String> {
        let dir = config.data.dir();
        let options = DatasetOptions {
            skip_invalid: config.data.skip_invalid,
            upstream_angle_quirk: config.model.upstream_angle_quirk,
            num_zones: config.data.num_zones,
            partition_seed: config.data.partition_seed,
        };
        let data = HoserData::load(&dir, &options, config.data.cache_dir.as_deref())
            .map_err(|e| format!("loading the dataset in {}: {e}", dir.display()))?;
        let collator = data.collator(config.data.max_len).map_err(|e| e.to_string())?;
        let f = &data.features;
        let model = config.model.hoser_config(data.network.num_roads(), f.num_road_types, f.num_zones);
        let loss = CombinedLoss::new(&config.loss.weights(), &LOSS_TERMS)
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let norm = TimeNormalization::new(f.time.mean, f.time.std).map_err(|e| e.to_string())?;
        let mut key = Vec::new();
        for path in [&data.files.geo, &data.files.rel, &data.files.train, &data.files.val, &data.files.test] {
            key.extend_from_slice(&file_crc32c(path).map_err(|e| e.to_string())?.to_le_bytes());
        }
        key.extend_from_slice(serde_json::to_string(&options).expect("options serialise").as_bytes());
        key.extend_from_slice(format!("{:?}", config.data.max_len).as_bytes());
        let dataset_id = format!("hoser-{}-{:08x}", config.data.dataset, crc32c::crc32c(&key));
        let baseline_acc = most_frequent_successor_accuracy(&data.train.samples, &data.val.samples);
        tracing::info!("most-frequent-successor baseline: validation next-step accuracy {baseline_acc:.4}");
        let val_batch_size = config.training.batch_size.max(1);
        Ok(Self { data, collator, model, loss, norm, val_batch_size, dataset_id, baseline_acc })
    }

    /// The loaded dataset.
    pub fn data(&self) -> &HoserData {
        &self.data
    }

    /// The model config (table sizes from the data).
    pub fn model_config(&self) -> &HoserConfig {
        &self.model
    }

    /// Validation counts over the whole validation split, accumulated exactly over batches.
    pub fn evaluate<B: Backend>(&self, model: &Hoser<B>, device: &B::Device) -> (NextStepAccuracy, TimeErrorSums) {
        let graph = GraphTensors::new(&self.data.features, device);
        let mut acc = NextStepAccuracy::default();
        let mut time = TimeErrorSums::default();
        for chunk in self.data.val.samples.chunks(self.val_batch_size) {
            let b = DeviceBatch::new(&self.collator.collate(chunk), &self.data.features.road_to_zone, device);
            let (logits, time_pred) = model.forward(&graph, &b.input);
            acc += next_step_accuracy(logits, &b.steps).expect("batch shapes agree");
            time += time_error(time_pred, b.seconds, &b.steps, self.norm).expect("batch shapes agree");
        }
        (acc, time)
    }
}

/// A collated batch on the device: model inputs, masks and targets.
pub struct DeviceBatch<B: Backend> {
    input: BatchTensors<B>,
    steps: CandidateSteps<B>,
    seconds: Tensor<B, 2>,
}

impl<B: Backend> DeviceBatch<B> {
    fn new(batch: &Batch, road_to_zone: &[u32], device: &B::Device) -> Self {
        let [b, t] = batch.step_shape();
        let ints =
            |v: &[i64], shape: Vec<usize>| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        let trace_len = ints(&batch.trace_len, vec![b]);
        let candidate_len =
            Tensor::<B, 2, Int>::from_data(TensorData::new(batch.candidate_len.clone(), [b, t]), device);
        let label = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.road_label.clone(), [b, t]), device);
        let steps = CandidateSteps::from_lengths(trace_len, candidate_len, label, batch.max_candidates)
            .expect("collated lengths agree");
        let seconds = Tensor::from_data(TensorData::new(batch.timestamp_label.clone(), [b, t]), device);
        Self { input: BatchTensors::new(batch, road_to_zone, device), steps, seconds }
    }
}

/// One training micro-batch: the static graph tensors (the encoders run on them every step) and
/// the collated batch.
pub struct VanillaBatch<B: Backend> {
    graph: GraphTensors<B>,
    batch: DeviceBatch<B>,
}

impl<B: AutodiffBackend> Task<B> for VanillaTask {
    type Model = Hoser<B>;
    type Batch = VanillaBatch<B>;

    fn build_model(&self, device: &B::Device) -> Hoser<B> {
        self.model.init(device)
    }

    fn train_len(&self) -> usize {
        self.data.train.samples.len()
    }

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<VanillaBatch<B>> {
        let batch = self.collator.collate(indices.iter().map(|&i| &self.data.train.samples[i]));
        Ok(VanillaBatch {
            graph: GraphTensors::new(&self.data.features, device),
            batch: DeviceBatch::new(&batch, &self.data.features.road_to_zone, device),
        })
    }

    fn train_step(&self, model: &Hoser<B>, batch: &VanillaBatch<B>) -> TaskResult<StepOutput<B>> {
        let b = &batch.batch;
        let (logits, time_pred) = model.forward(&batch.graph, &b.input);
        let mut computed = Vec::new();
        if self.loss.is_active("ce") {
            computed.push(("ce", masked_cross_entropy(logits, &b.steps).expect("batch shapes agree")));
        }
        if self.loss.is_active("time") {
            let time = hoser_time_loss(time_pred, b.seconds.clone(), &b.steps, self.norm).expect("batch shapes agree");
            computed.push(("time", time));
        }
        let out = self.loss.combine(computed).expect("every active term is computed");
        let mut metrics = out.components();
        metrics.remove("loss");
        Ok(StepOutput { loss: out.total, metrics })
    }

    fn validate(&self, model: &Hoser<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        let (acc, time) = self.evaluate(model, device);
        let mut m = Metrics::new();
        m.insert("val_next_step_acc".into(), acc.accuracy().unwrap_or(0.0));
        // A constant column, so metrics.csv and TensorBoard show the model against the baseline.
        m.insert("val_successor_baseline_acc".into(), self.baseline_acc);
        if let Some(mape) = time.hoser_time_mape() {
            m.insert("val_time_pred_mape".into(), mape);
        }
        Ok(m)
    }

    fn selection(&self) -> Selection {
        Selection { metric: "val_next_step_acc".into(), mode: Mode::Max }
    }

    fn dataset_id(&self) -> String {
        self.dataset_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &VanillaConfig) -> Vec<String> {
        // The stage's own sections (the shared ones need a budget the defaults leave unset).
        let mut p = Vec::new();
        config.model.validate(&mut p);
        config.data.validate(&mut p);
        config.loss.validate(&mut p);
        p.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults_are_upstream_and_valid() {
        let c = VanillaConfig::default();
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let h = c.model.hoser_config(10, 2, 3);
        assert_eq!(h, HoserConfig::upstream(10, 2, 3));
        assert_eq!(c.data.dir(), PathBuf::from("data/Beijing"));
        assert_eq!(c.loss.weights(), BTreeMap::from([("ce".into(), 1.0), ("time".into(), 1.0)]));
    }

    #[test]
    fn bad_sections_are_reported_by_key() {
        let mut c = VanillaConfig::default();
        c.model.num_heads = 7;
        c.data.num_zones = 0;
        c.data.max_len = Some(0);
        c.loss = LossSection { ce_weight: 0.0, time_weight: 0.0 };
        let keys = problems(&c);
        for key in ["model.num_heads", "data.num_zones", "data.max_len", "loss"] {
            assert!(keys.iter().any(|k| k == key), "{key} not reported in {keys:?}");
        }
    }
}
