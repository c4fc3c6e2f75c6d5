//! The one training loop of trainyard and everything around it: the task trait stages
//! implement, configuration (defaults ← YAML ← environment ← flags), backend selection,
//! telemetry (jsonl, csv, TensorBoard, progress), and Ctrl-C handling.
//!
//! A stage binary implements [`cli::Stage`] and calls [`cli::main`]; library users can drive
//! [`train::Trainer`] directly with a [`task::Task`].

pub mod averaging;
pub mod backend;
pub mod cli;
pub mod config;
pub mod curves;
pub mod early_stopping;
pub mod grads;
pub mod interrupt;
pub mod lr_find;
pub mod oom;
pub mod optim;
pub mod policy;
pub mod problems;
pub mod spike_guard;
pub mod task;
pub mod telemetry;
pub mod tensorboard;
pub mod toy;
pub mod train;
pub mod tune_cli;

pub use config::RunConfig;
pub use task::{Metrics, Mode, Selection, StepOutput, Task, TaskError, TaskResult};
pub use train::{Decision, LoopConfig, LoopState, RunSummary, StopPolicy, StopReason, TrainError, Trainer, Validation};
