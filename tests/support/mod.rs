//! Helpers shared by the trainer's test crates (included with `#[path]`): reading a run's
//! event log, starting the toy binary with a clean environment, reading model weights.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::Command;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::Value;

/// Events of `dir/training.jsonl` (none if the file does not exist), optionally only those of
/// one kind, read by the trainer's own reader: a line cut short by a killed process is skipped.
pub fn events(dir: &Path, kind: Option<&str>) -> Vec<Value> {
    if !dir.join(trainer::telemetry::JSONL).exists() {
        return Vec::new();
    }
    let log = trainer::telemetry::read_events(dir).unwrap_or_else(|e| panic!("{e}"));
    log.events.into_iter().filter(|e| kind.is_none_or(|k| e["event"] == k)).collect()
}

/// The toy stage binary, run from the workspace root, without the caller's `TRAINYARD_*`
/// variables (they are config keys) and with warnings-only logging.
pub fn toy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainyard-toy"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    for (k, _) in std::env::vars() {
        if k.starts_with("TRAINYARD_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

/// Every parameter value of a module, in visiting order.
pub fn weights<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
            self.0.extend(p.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// What a test changes around the toy task (see [`HookedToy`]).
pub trait ToyHooks {
    /// Sees each micro-batch's sample indices before it is assembled; an error here is a data
    /// error of the task (see `Task::train_batch`).
    fn train_batch(&self, _indices: &[usize]) -> Result<(), String> {
        Ok(())
    }
    /// Called before each validation; an error here fails the validation.
    fn before_validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Sees (and may change) each micro-batch's output, in order.
    fn train_step(&self, _out: &mut trainer::StepOutput<trainer::backend::CpuBackend>) {}
    /// Sees (and may replace) each validation's metrics.
    fn validate(&self, metrics: trainer::Metrics) -> trainer::Metrics {
        metrics
    }
    /// The stage's OOM knob (see `Task::degrade`).
    fn degrade(&self) -> Option<String> {
        None
    }
    /// The knob's setting (see `Task::degrade_state`).
    fn degrade_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restores the knob (see `Task::restore_degrade`).
    fn restore_degrade(&self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// The toy task with test hooks around its training step and validation.
pub struct HookedToy<H> {
    /// The real toy task.
    pub inner: trainer::toy::ToyTask,
    /// The test's hooks.
    pub hooks: H,
}

mod hooked {
    use burn::backend::flex::FlexDevice;
    use trainer::backend::CpuBackend as B;
    use trainer::toy::{Mlp, ToyBatch, ToyTask};
    use trainer::{Metrics, Selection, StepOutput, Task, TaskError, TaskResult};

    use super::{HookedToy, ToyHooks};

    type Inner = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;

    impl<H: ToyHooks> Task<B> for HookedToy<H> {
        type Model = Mlp<B>;
        type Batch = ToyBatch<B>;
        fn build_model(&self, device: &FlexDevice) -> Mlp<B> {
            <ToyTask as Task<B>>::build_model(&self.inner, device)
        }
        fn train_len(&self) -> usize {
            <ToyTask as Task<B>>::train_len(&self.inner)
        }
        fn train_batch(&self, indices: &[usize], device: &FlexDevice) -> TaskResult<ToyBatch<B>> {
            self.hooks.train_batch(indices).map_err(TaskError::msg)?;
            <ToyTask as Task<B>>::train_batch(&self.inner, indices, device)
        }
        fn train_step(&self, model: &Mlp<B>, batch: &ToyBatch<B>) -> TaskResult<StepOutput<B>> {
            let mut out = <ToyTask as Task<B>>::train_step(&self.inner, model, batch)?;
            self.hooks.train_step(&mut out);
            Ok(out)
        }
        fn validate(&self, model: &Mlp<Inner>, device: &FlexDevice) -> TaskResult<Metrics> {
            self.hooks.before_validate().map_err(TaskError::msg)?;
            Ok(self.hooks.validate(<ToyTask as Task<B>>::validate(&self.inner, model, device)?))
        }
        fn selection(&self) -> Selection {
            <ToyTask as Task<B>>::selection(&self.inner)
        }
        fn dataset_id(&self) -> String {
            <ToyTask as Task<B>>::dataset_id(&self.inner)
        }
        fn degrade(&self) -> Option<String> {
            self.hooks.degrade()
        }
        fn degrade_state(&self) -> serde_json::Value {
            self.hooks.degrade_state()
        }
        fn restore_degrade(&self, state: &serde_json::Value) -> Result<(), String> {
            self.hooks.restore_degrade(state)
        }
    }
}

/// The toy config of the training and LR-finder tests: seed 7, 100 steps of batch 16, a
/// validation every 25 steps, lr 0.01, no progress output, writing to `dir`.
pub fn toy_config(dir: &Path) -> trainer::toy::ToyConfig {
    use trainer::config::{LoggingConfig, ProgressMode};
    let mut c = trainer::toy::ToyConfig { seed: 7, output_dir: dir.to_path_buf(), ..Default::default() };
    c.training.max_steps = Some(100);
    c.training.batch_size = 16;
    c.training.val_every = Some(25);
    c.optimizer.lr = 0.01;
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c
}
