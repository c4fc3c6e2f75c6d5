//! A task that fails to read its data mid-run (a tile or CSV that went bad after start-up)
//! stops the run without a panic: a `data_error` event naming what failed, `checkpoint_latest`
//! of the last good step, and a `TrainError::Task` carrying the task's message. Resuming from
//! that checkpoint once the data is fixed ends exactly where an uninterrupted run ends.

use std::cell::Cell;
use std::path::Path;

use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::toy::{Mlp, ToyConfig, ToyTask};
use trainer::{TrainError, Trainer};

#[path = "../../../tests/support/mod.rs"]
mod support;

type B = CpuBackend;

/// Fails the `fail_batch`-th micro-batch (0-based, counted over the run) or the
/// `fail_validation`-th validation, as a file going bad would.
#[derive(Default)]
struct BadData {
    fail_batch: Option<usize>,
    fail_validation: Option<usize>,
    batches: Cell<usize>,
    validations: Cell<usize>,
}

impl support::ToyHooks for BadData {
    fn train_batch(&self, _indices: &[usize]) -> Result<(), String> {
        let i = self.batches.replace(self.batches.get() + 1);
        if Some(i) == self.fail_batch {
            return Err("reading tile /data/tiles/t_0007.npz: unexpected end of file (truncated?)".into());
        }
        Ok(())
    }
    fn before_validate(&self) -> Result<(), String> {
        let i = self.validations.replace(self.validations.get() + 1);
        if Some(i) == self.fail_validation {
            return Err("reading val.csv row 3: expected a road id, got `x`".into());
        }
        Ok(())
    }
}

fn config(dir: &Path) -> ToyConfig {
    let mut c = ToyConfig { seed: 5, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(12);
    c.training.batch_size = 32;
    c.training.val_every = Some(4);
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c
}

fn run(c: &ToyConfig, hooks: BadData) -> Result<trainer::RunSummary<Mlp<B>>, TrainError> {
    let task = support::HookedToy { inner: ToyTask::new(c), hooks };
    Trainer::new(c.loop_config()).run::<B, _>(&task, &Default::default())
}

fn latest(dir: &Path) -> checkpoints::CheckpointFile {
    checkpoints::CheckpointFile::read(&dir.join("checkpoints/checkpoint_latest.safetensors")).unwrap()
}

#[test]
fn a_batch_that_fails_to_load_checkpoints_the_last_good_step_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Micro-batch 6 (0-based) is the first of optimizer step 7.
    let err = run(&config(dir.path()), BadData { fail_batch: Some(6), ..Default::default() }).err().unwrap();
    let TrainError::Task { step, ref message, ref checkpoint, .. } = err else { panic!("not a task error: {err}") };
    assert_eq!(step, 7);
    assert!(message.contains("t_0007.npz"), "{message}");
    let text = err.to_string();
    assert!(text.contains("assembling a training batch at optimizer step 7"), "{text}");
    assert!(text.contains("checkpoint_latest.safetensors"), "{text}");
    assert!(checkpoint.as_ref().is_some_and(|p| p.is_file()));
    assert_eq!(latest(dir.path()).meta.step, 6, "the last good state, not the failed step");
    let events = support::events(dir.path(), Some("data_error"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["step"], 7);
    assert!(events[0]["message"].as_str().unwrap().contains("t_0007.npz"));
    assert!(support::events(dir.path(), Some("train_step")).iter().all(|e| e["step"].as_u64() < Some(7)));

    // With the data fixed, resuming from that checkpoint ends where an uninterrupted run ends.
    let mut c = config(dir.path());
    c.resume.auto = true;
    let resumed = run(&c, BadData::default()).unwrap();
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&config(straight_dir.path()), BadData::default()).unwrap();
    assert_eq!(resumed.state.step, 12);
    assert_eq!(support::weights::<B, _>(&resumed.model), support::weights::<B, _>(&straight.model));
}

#[test]
fn a_validation_that_fails_to_read_its_data_stops_with_the_step_saved() {
    let dir = tempfile::tempdir().unwrap();
    // The second validation, after step 8.
    let err = run(&config(dir.path()), BadData { fail_validation: Some(1), ..Default::default() }).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, TrainError::Task { step: 8, .. }), "{text}");
    assert!(text.contains("validating at optimizer step 8") && text.contains("val.csv row 3"), "{text}");
    assert_eq!(latest(dir.path()).meta.step, 8);
    assert_eq!(support::events(dir.path(), Some("validation")).len(), 1);
}
