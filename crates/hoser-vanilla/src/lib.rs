//! The `hoser-vanilla` stage: HOSER trained from scratch on next-road cross-entropy plus the
//! log1p relative time loss (upstream `train.py`), on the shared trainer.
//!
//! The road and zone encoders run on every training step (trainable, as upstream; not the fork's
//! frozen `no_grad` features). Validation reports `val_next_step_acc` (Σ correct / Σ supervised
//! steps over the whole split) and `val_time_pred_mape` (HOSER's log1p relative error), and the best
//! model is selected by the accuracy.

pub mod map;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use hoser::baseline::most_frequent_successor_accuracy;
use hoser::data::{Batch, Collator, DataError, DatasetOptions, HoserData, file_crc32c};
use hoser::model::{BatchTensors, GraphTensors, Hoser, HoserConfig, HoserConfigError};
use losses::combined::{CombinedError, CombinedLoss};
use losses::sequence::{
    CandidateSteps, NextStepAccuracy, SequenceLossError, TimeErrorSums, TimeNormalization, hoser_time_loss,
    masked_cross_entropy, next_step_accuracy, time_error,
};
use serde::{Deserialize, Serialize};
use trainer::config::{ConfigProblem, RunConfig, Validate};
use trainer::task::{Metrics, Mode, Selection, StepOutput, Task, TaskError, TaskResult};

/// Stage name: the binary, the default output directory `runs/hoser-vanilla`.
pub const NAME: &str = "hoser-vanilla";

/// Loss term names this stage computes (config weights `ce_weight`, `time_weight`).
pub const LOSS_TERMS: [&str; 2] = ["ce", "time"];

/// `model:` — HOSER's dimensions (upstream defaults), exactly [`HoserConfig`]'s keys; the table
/// sizes come from the data. A newtype only so that the trainer's `Validate` can be implemented
/// here (prefixing `HoserConfig::problems` with `model.`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelSection(pub HoserConfig);

impl Validate for ModelSection {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        for (key, message) in self.0.problems() {
            p.push(ConfigProblem::new(&format!("model.{key}"), message));
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
            p.push(ConfigProblem::new("data.dataset", "expected a dataset name"));
        }
        if self.num_zones == 0 {
            p.push(ConfigProblem::new("data.num_zones", "expected a positive number"));
        }
        if self.max_len == Some(0) {
            p.push(ConfigProblem::new("data.max_len", "expected at least 1, or null for no crop"));
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
                p.push(ConfigProblem::new("loss", e.to_string()));
            }
        }
    }
}

/// Full config of the stage.
pub type VanillaConfig = RunConfig<ModelSection, DataSection, LossSection>;

/// Upstream `train.py`'s optimisation as dotted-key stage defaults: batch 256, gradient-norm clip
/// 1.0, AdamW lr 1e-3 with weight decay 0.1, linear warm-up over 10 % of the run then cosine. What
/// hoser-vanilla and hoser-distill both start from (below the config file).
pub fn upstream_training_defaults() -> Vec<(String, figment::value::Value)> {
    use figment::value::Value;
    vec![
        ("training.batch_size".into(), Value::from(256u64)),
        ("training.gradient_clip_norm".into(), Value::from(1.0)),
        ("optimizer.lr".into(), Value::from(1e-3)),
        ("optimizer.weight_decay".into(), Value::from(0.1)),
        ("optimizer.scheduler.name".into(), Value::from("cosine")),
        ("optimizer.scheduler.warmup_ratio".into(), Value::from(0.1)),
    ]
}

/// `configs/hoser/NAME.yaml` when it exists: the config a `--dataset NAME` run without
/// `--config` reads (upstream reads `config/NAME.yaml`), for hoser-vanilla and hoser-distill alike.
pub fn dataset_config_file(dataset: Option<&str>) -> Option<PathBuf> {
    let path = PathBuf::from("configs/hoser").join(format!("{}.yaml", dataset?));
    path.is_file().then_some(path)
}

/// Why the task could not be built from the config and the dataset.
#[derive(Debug, thiserror::Error)]
pub enum VanillaError {
    /// The dataset could not be read or preprocessed; the source names the file, row and value.
    #[error("loading the dataset in {}: {source}", dir.display())]
    Data {
        /// The dataset directory.
        dir: PathBuf,
        /// What went wrong, naming the file.
        #[source]
        source: DataError,
    },
    /// A split the run needs has no trajectory to learn from or validate on.
    #[error(
        "{}: the {split} split is empty ({summary}): there is nothing to {purpose}; give it trajectories of at \
         least 2 roads",
        path.display()
    )]
    EmptySplit {
        /// The split's file.
        path: PathBuf,
        /// `training` or `validation`.
        split: &'static str,
        /// What reading the file found (rows, single-road and skipped counts).
        summary: String,
        /// What the split is for.
        purpose: &'static str,
    },
    /// The model config does not fit the data.
    #[error(transparent)]
    Model(#[from] HoserConfigError),
    /// The loss weights do not form a loss.
    #[error("loss: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Loss(Vec<CombinedError>),
    /// The training split's travel times give no usable normalisation.
    #[error("time normalisation of the training split: {0}")]
    TimeNormalization(#[source] SequenceLossError),
}

/// The vanilla HOSER task over a loaded dataset.
pub struct VanillaTask {
    /// Where `validation/epoch_N.png` goes (the run's output directory).
    run_dir: PathBuf,
    /// Optimizer steps per epoch (names the validation map by epoch).
    steps_per_epoch: u64,
    /// The optimizer step of the validation in progress ([`Task::begin_validation`]).
    validation_step: AtomicU64,
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
    /// Loads (and caches) the dataset the config names. Fails before any training when the
    /// training or validation split has no sample (a header-only `val.csv` would otherwise
    /// validate to an accuracy of 0 and export that as the best model).
    pub fn new(config: &VanillaConfig) -> Result<Self, VanillaError> {
        let dir = config.data.dir();
        let options = DatasetOptions {
            skip_invalid: config.data.skip_invalid,
            upstream_angle_quirk: config.model.0.upstream_angle_quirk,
            num_zones: config.data.num_zones,
            partition_seed: config.data.partition_seed,
        };
        let data_error = |source| VanillaError::Data { dir: dir.clone(), source };
        let data = HoserData::load(&dir, &options, config.data.cache_dir.as_deref()).map_err(data_error)?;
        for (split, purpose, samples, summary) in [
            ("training", "train on", &data.train.samples, &data.train.summary),
            ("validation", "validate on", &data.val.samples, &data.val.summary),
        ] {
            if samples.is_empty() {
                return Err(VanillaError::EmptySplit {
                    path: summary.file.clone(),
                    split,
                    summary: summary.describe(),
                    purpose,
                });
            }
        }
        let collator = data.collator(config.data.max_len).map_err(data_error)?;
        let f = &data.features;
        let model = config.model.0.with_tables(data.network.num_roads(), f.num_road_types, f.num_zones);
        // `build_model` calls the infallible `init`: every problem is reported here instead.
        model.check()?;
        let loss = CombinedLoss::new(&config.loss.weights(), &LOSS_TERMS).map_err(VanillaError::Loss)?;
        let norm = TimeNormalization::new(f.time.mean, f.time.std).map_err(VanillaError::TimeNormalization)?;
        let mut key = Vec::new();
        for path in [&data.files.geo, &data.files.rel, &data.files.train, &data.files.val, &data.files.test] {
            key.extend_from_slice(&file_crc32c(path).map_err(data_error)?.to_le_bytes());
        }
        // Plain data (bools and integers) always serialise.
        key.extend_from_slice(serde_json::to_string(&options).unwrap_or_default().as_bytes());
        key.extend_from_slice(format!("{:?}", config.data.max_len).as_bytes());
        let dataset_id = format!("hoser-{}-{:08x}", config.data.dataset, crc32c::crc32c(&key));
        let baseline_acc = most_frequent_successor_accuracy(&data.train.samples, &data.val.samples);
        tracing::info!("most-frequent-successor baseline: validation next-step accuracy {baseline_acc:.4}");
        let val_batch_size = config.training.batch_size.max(1);
        let steps_per_epoch =
            config.training.steps_per_epoch(data.train.samples.len(), config.debug.overfit_single_batch).max(1);
        Ok(Self {
            run_dir: config.output_dir.clone(),
            steps_per_epoch,
            validation_step: AtomicU64::new(0),
            data,
            collator,
            model,
            loss,
            norm,
            val_batch_size,
            dataset_id,
            baseline_acc,
        })
    }

    /// Writes `validation/epoch_N.png` (or `step_N.png` for a validation inside an epoch): the
    /// first [`map::MAP_TRAJECTORIES`] trajectories of the validation batch `batch` with the
    /// model's top-1 next roads (`logits` of that batch, `[B, T, C]`).
    fn write_map(&self, batch: &Batch, logits: &[f32]) -> Result<PathBuf, String> {
        let step = self.validation_step.load(Ordering::SeqCst);
        let (name, when) = if step.is_multiple_of(self.steps_per_epoch) {
            let epoch = step / self.steps_per_epoch;
            (format!("epoch_{epoch}.png"), format!("epoch {epoch} (optimizer step {step})"))
        } else {
            (format!("step_{step}.png"), format!("optimizer step {step}"))
        };
        let dir = self.run_dir.join("validation");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(name);
        let drawn: Vec<map::Drawn> =
            (0..map::MAP_TRAJECTORIES.min(batch.batch_size)).map(|i| map::drawn(batch, logits, i)).collect();
        map::write(&path, &self.data.network, &drawn, &format!("validation trajectories after {when}"))?;
        Ok(path)
    }

    /// The loaded dataset.
    pub fn data(&self) -> &HoserData {
        &self.data
    }

    /// The collator of the training and validation batches (its `max_len` crop included).
    pub fn collator(&self) -> &Collator {
        &self.collator
    }

    /// The model config (table sizes from the data).
    pub fn model_config(&self) -> &HoserConfig {
        &self.model
    }

    /// Validation counts over the whole validation split, accumulated exactly over batches.
    pub fn evaluate<B: Backend>(
        &self,
        model: &Hoser<B>,
        device: &B::Device,
    ) -> Result<(NextStepAccuracy, TimeErrorSums), SequenceLossError> {
        self.evaluate_and(model, device, |_, _| ())
    }

    /// [`VanillaTask::evaluate`], handing the first batch and its logits (`[B, T, C]`) to `first`.
    fn evaluate_and<B: Backend>(
        &self,
        model: &Hoser<B>,
        device: &B::Device,
        first: impl FnOnce(&Batch, &[f32]),
    ) -> Result<(NextStepAccuracy, TimeErrorSums), SequenceLossError> {
        let graph = GraphTensors::new(&self.data.features, device);
        let mut acc = NextStepAccuracy::default();
        let mut time = TimeErrorSums::default();
        let mut first = Some(first);
        for chunk in self.data.val.samples.chunks(self.val_batch_size) {
            let batch = self.collator.collate(chunk);
            let b = DeviceBatch::new(&batch, &self.data.features.road_to_zone, device)?;
            let (logits, time_pred) = model.forward(&graph, &b.input);
            if let Some(f) = first.take() {
                match logits.clone().into_data().convert::<f32>().to_vec::<f32>() {
                    Ok(values) => f(&batch, &values),
                    Err(e) => tracing::warn!("validation map: reading the logits: {e:?}"),
                }
            }
            acc += next_step_accuracy(logits, &b.steps)?;
            time += time_error(time_pred, b.seconds, &b.steps, self.norm)?;
        }
        Ok((acc, time))
    }
}

/// A collated batch on the device: model inputs, masks and targets.
pub struct DeviceBatch<B: Backend> {
    input: BatchTensors<B>,
    steps: CandidateSteps<B>,
    seconds: Tensor<B, 2>,
}

impl<B: Backend> DeviceBatch<B> {
    fn new(batch: &Batch, road_to_zone: &[u32], device: &B::Device) -> Result<Self, SequenceLossError> {
        let [b, t] = batch.step_shape();
        let ints =
            |v: &[i64], shape: Vec<usize>| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        let trace_len = ints(&batch.trace_len, vec![b]);
        let candidate_len =
            Tensor::<B, 2, Int>::from_data(TensorData::new(batch.candidate_len.clone(), [b, t]), device);
        let label = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.road_label.clone(), [b, t]), device);
        let steps = CandidateSteps::from_lengths(trace_len, candidate_len, label, batch.max_candidates)?;
        let seconds = Tensor::from_data(TensorData::new(batch.timestamp_label.clone(), [b, t]), device);
        Ok(Self { input: BatchTensors::new(batch, road_to_zone, device), steps, seconds })
    }
}

/// One training micro-batch: the static graph tensors (the encoders run on them every step) and
/// the collated batch.
pub struct VanillaBatch<B: Backend> {
    graph: GraphTensors<B>,
    batch: DeviceBatch<B>,
}

impl<B: Backend> VanillaBatch<B> {
    /// The batch's prediction steps (masks and targets).
    pub fn steps(&self) -> &CandidateSteps<B> {
        &self.batch.steps
    }
}

/// One forward pass's loss terms (each `None` when its weight is 0, so it is not computed) and
/// the next-road logits `[B, T, C]` they came from.
pub struct StepTerms<B: Backend> {
    /// Masked next-road cross-entropy `L_next`.
    pub next_step: Option<Tensor<B, 1>>,
    /// HOSER's log1p relative time loss `L_time`.
    pub time: Option<Tensor<B, 1>>,
    /// The candidate logits.
    pub logits: Tensor<B, 3>,
}

impl VanillaTask {
    /// The model's forward pass on `batch` and the loss terms whose weight is not 0: what
    /// `train_step` combines, and what hoser-distill adds its KL term to.
    pub fn step_terms<B: AutodiffBackend>(
        &self,
        model: &Hoser<B>,
        batch: &VanillaBatch<B>,
    ) -> TaskResult<StepTerms<B>> {
        let b = &batch.batch;
        let (logits, time_pred) = model.forward(&batch.graph, &b.input);
        let next_step =
            if self.loss.is_active("ce") { Some(masked_cross_entropy(logits.clone(), &b.steps)?) } else { None };
        let time = if self.loss.is_active("time") {
            Some(hoser_time_loss(time_pred, b.seconds.clone(), &b.steps, self.norm)?)
        } else {
            None
        };
        Ok(StepTerms { next_step, time, logits })
    }
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
            batch: DeviceBatch::new(&batch, &self.data.features.road_to_zone, device)?,
        })
    }

    fn train_step(&self, model: &Hoser<B>, batch: &VanillaBatch<B>) -> TaskResult<StepOutput<B>> {
        let terms = self.step_terms(model, batch)?;
        let mut computed = Vec::new();
        if let Some(ce) = terms.next_step {
            computed.push(("ce", ce));
        }
        if let Some(time) = terms.time {
            computed.push(("time", time));
        }
        let out = self.loss.combine(computed)?;
        let mut metrics = out.components();
        metrics.remove("loss");
        Ok(StepOutput { loss: out.total, metrics })
    }

    fn begin_validation(&self, step: u64) -> TaskResult<()> {
        self.validation_step.store(step, Ordering::SeqCst);
        Ok(())
    }

    fn validate(&self, model: &Hoser<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        let (acc, time) = self.evaluate_and(model, device, |batch, logits| {
            if let Err(e) = self.write_map(batch, logits) {
                tracing::warn!("could not write the validation map: {e}");
            }
        })?;
        let accuracy = acc.accuracy().ok_or_else(|| {
            TaskError::msg(format!("{}: no validation step to score", self.data.val.summary.file.display()))
        })?;
        let mut m = Metrics::new();
        m.insert("val_next_step_acc".into(), accuracy);
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
        let h = c.model.0.with_tables(10, 2, 3);
        assert_eq!(h, HoserConfig::upstream(10, 2, 3));
        assert_eq!(c.data.dir(), PathBuf::from("data/Beijing"));
        assert_eq!(c.loss.weights(), BTreeMap::from([("ce".into(), 1.0), ("time".into(), 1.0)]));
    }

    #[test]
    fn bad_sections_are_reported_by_key() {
        let mut c = VanillaConfig::default();
        c.model.0.num_heads = 7;
        c.data.num_zones = 0;
        c.data.max_len = Some(0);
        c.loss = LossSection { ce_weight: 0.0, time_weight: 0.0 };
        let keys = problems(&c);
        for key in ["model.num_heads", "data.num_zones", "data.max_len", "loss"] {
            assert!(keys.iter().any(|k| k == key), "{key} not reported in {keys:?}");
        }
    }
}
