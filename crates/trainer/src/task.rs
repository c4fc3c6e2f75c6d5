//! What a stage supplies to the loop: its model, its data, one training step and validation.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// Named scalar metrics, ordered by name so every output lists them the same way.
pub type Metrics = BTreeMap<String, f64>;

/// The result of one forward pass on one micro-batch.
pub struct StepOutput<B: AutodiffBackend> {
    /// The scalar loss to minimise (mean over the micro-batch's samples).
    pub loss: Tensor<B, 1>,
    /// Extra named metrics of this micro-batch, logged next to the loss.
    pub metrics: Metrics,
}

pub use checkpoints::Mode;

/// The validation metric that selects the best model, with its direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Metric name as returned by [`Task::validate`].
    pub metric: String,
    /// Direction of improvement.
    pub mode: Mode,
}

/// A training task: everything stage-specific that the loop drives.
///
/// The loop owns data order: it asks for the training set's length, shuffles indices with
/// the run's seed, and asks the task to assemble each micro-batch from its indices.
pub trait Task<B: AutodiffBackend> {
    /// The trainable model.
    type Model: AutodiffModule<B>;
    /// One assembled micro-batch on the device.
    type Batch;

    /// Builds a freshly initialised model. The loop seeds the backend first.
    fn build_model(&self, device: &B::Device) -> Self::Model;

    /// Number of samples in the training set.
    fn train_len(&self) -> usize;

    /// Assembles the samples at `indices` into a micro-batch.
    fn train_batch(&self, indices: &[usize], device: &B::Device) -> Self::Batch;

    /// Called before the micro-batches of epoch `epoch` are assembled (also when a resumed run
    /// re-enters its epoch), so per-epoch data choices such as augmentations follow the epoch
    /// and not the order of calls.
    fn begin_epoch(&self, _epoch: u64) {}

    /// Called before a validation at optimizer step `step` (e.g. to name its outputs by step).
    fn begin_validation(&self, _step: u64) {}

    /// Forward pass of one micro-batch: the loss to minimise and named metrics.
    fn train_step(&self, model: &Self::Model, batch: &Self::Batch) -> StepOutput<B>;

    /// Evaluates the model (without autodiff) on the validation set.
    fn validate(&self, model: &<Self::Model as AutodiffModule<B>>::InnerModule, device: &B::Device) -> Metrics;

    /// Which validation metric selects the best model.
    fn selection(&self) -> Selection;

    /// Identifies the training data (e.g. a hash of its manifest); a checkpoint of other data
    /// is refused on resume.
    fn dataset_id(&self) -> String;

    /// Lowers the stage's memory knob one rung after an out-of-memory (e.g. diffusion timesteps
    /// by `reduction_step`, not below `min_timesteps`). Returns what it did, or `None` when the
    /// knob is at its floor (or the stage has none); then the loop splits micro-batches.
    fn degrade(&self) -> Option<String> {
        None
    }

    /// The knob's current setting, saved in checkpoints.
    fn degrade_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores a setting saved by [`Task::degrade_state`].
    fn restore_degrade(&self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }

    /// The training mode (`train`, `distill`, ...); a checkpoint of another mode is refused on resume.
    fn mode(&self) -> String {
        "train".into()
    }
}
