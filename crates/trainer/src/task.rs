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

/// Why a task could not assemble a batch, run a step or validate: a data file that became
/// unreadable, a malformed sample, a model that could not be built from a file. The message
/// names the file and what was expected. The loop writes `checkpoint_latest` of the last good
/// state, logs a `data_error` event and stops the run with [`crate::TrainError::Task`].
///
/// Any error type converts into it with `?` (it keeps the source's message and chain), so a
/// stage returns its own typed errors.
pub struct TaskError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl TaskError {
    /// An error from a message alone (when there is no typed error to wrap).
    pub fn msg(message: impl std::fmt::Display) -> Self {
        #[derive(Debug)]
        struct Message(String);
        impl std::fmt::Display for Message {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Message {}
        Self(Box::new(Message(message.to_string())))
    }

    /// The wrapped error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for TaskError {
    /// The error's message followed by its causes (`: cause`), as one line; a cause whose
    /// text the message already includes (`#[error("...: {0}")]`) is not repeated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

impl std::fmt::Debug for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What the fallible [`Task`] methods return.
pub type TaskResult<T> = Result<T, TaskError>;

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

    /// Assembles the samples at `indices` into a micro-batch. An unreadable or malformed
    /// sample is an error naming its file, never a panic.
    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<Self::Batch>;

    /// Called before the micro-batches of epoch `epoch` are assembled (also when a resumed run
    /// re-enters its epoch), so per-epoch data choices such as augmentations follow the epoch
    /// and not the order of calls.
    fn begin_epoch(&self, _epoch: u64) -> TaskResult<()> {
        Ok(())
    }

    /// Called before a validation at optimizer step `step` (e.g. to name its outputs by step).
    fn begin_validation(&self, _step: u64) -> TaskResult<()> {
        Ok(())
    }

    /// Forward pass of one micro-batch: the loss to minimise and named metrics.
    fn train_step(&self, model: &Self::Model, batch: &Self::Batch) -> TaskResult<StepOutput<B>>;

    /// Evaluates the model (without autodiff) on the validation set.
    fn validate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        device: &B::Device,
    ) -> TaskResult<Metrics>;

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
    /// Settings after the name as `key=value` words (`distill lambda=0.01 window=4`) are compared
    /// one by one, so a refusal lists each one that changed.
    fn mode(&self) -> String {
        "train".into()
    }

    /// Called as a resume proceeds, for a stage's own console lines (seed 002's
    /// `✅ Valid checkpoint found: …`): once the checkpoint is accepted, and once it is restored.
    fn on_resume(&self, _event: ResumeEvent<'_>) {}
}

/// How far a resume has got (see [`Task::on_resume`]).
#[derive(Debug, Clone, Copy)]
pub enum ResumeEvent<'a> {
    /// The checkpoint belongs to this run and will be resumed.
    Found {
        /// The checkpoint.
        path: &'a std::path::Path,
        /// Optimizer steps it holds.
        step: u64,
        /// Epochs completed when it was written (0-based index of the epoch in progress).
        epoch: u64,
    },
    /// Weights, optimizer and loop state are restored; training continues from `state`.
    Restored {
        /// The checkpoint.
        path: &'a std::path::Path,
        /// Where the loop stands.
        state: crate::train::LoopState,
    },
}
