//! Early stopping on the toy task with a scripted validation metric: it fires at exactly the
//! expected validation, its state survives a resume, and it restores the best weights.

use std::cell::Cell;
use std::path::Path;

use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::interrupt::{Interrupts, Signal};
use trainer::toy::{Mlp, ToyConfig, ToyTask};
use trainer::{Metrics, StopReason, Trainer};

#[path = "../../../tests/support/mod.rs"]
mod support;

type B = CpuBackend;

/// Replaces the toy's `val_loss` by a script (one value per validation, starting at
/// `next`), optionally raising an interrupt right after validation number `interrupt_after`.
struct Scripted {
    script: Vec<f64>,
    next: Cell<usize>,
    interrupt_after: Option<usize>,
    interrupts: Interrupts,
}

impl support::ToyHooks for Scripted {
    fn validate(&self, _: Metrics) -> Metrics {
        let i = self.next.get();
        self.next.set(i + 1);
        if Some(i + 1) == self.interrupt_after {
            self.interrupts.request(Signal::Interrupt);
        }
        Metrics::from([("val_loss".to_string(), self.script[i])])
    }
}

fn config(dir: &Path) -> ToyConfig {
    let mut c = ToyConfig { seed: 5, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(40);
    c.training.batch_size = 16;
    c.training.val_every = Some(2);
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c.early_stopping.enabled = true;
    c.early_stopping.patience = 3;
    c
}

fn run(c: &ToyConfig, script: &[f64], offset: usize, interrupt_after: Option<usize>) -> trainer::RunSummary<Mlp<B>> {
    let interrupts = Interrupts::none();
    let task = support::HookedToy {
        inner: ToyTask::new(c),
        hooks: Scripted {
            script: script.to_vec(),
            next: Cell::new(offset),
            interrupt_after,
            interrupts: interrupts.clone(),
        },
    };
    Trainer::new(c.loop_config()).interrupts(interrupts).run::<B, _>(&task, &Default::default()).unwrap()
}

/// Validations every 2 steps: 1.0 and 0.8 improve; 0.9, 0.85, 0.81 do not → the third
/// non-improving validation (step 10) stops the run.
const SCRIPT: [f64; 8] = [1.0, 0.8, 0.9, 0.85, 0.81, 0.7, 0.6, 0.5];

#[test]
fn a_scripted_plateau_stops_at_exactly_the_expected_validation() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&config(dir.path()), &SCRIPT, 0, None);
    assert_eq!(summary.state.step, 10);
    assert!(matches!(&summary.reason, StopReason::Requested { policy, .. } if policy == "early_stopping"));
    let stop = &support::events(dir.path(), Some("early_stop"))[0];
    assert_eq!(stop["step"], 10);
    assert_eq!(stop["best"]["step"], 4);
    assert_eq!(stop["wait"], 3);

    // The same plateau with min_steps 14: the stop request waits for step 14.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.training.min_steps = 14;
    assert_eq!(run(&c, &[1.0, 0.8, 0.9, 0.85, 0.81, 0.82, 0.83, 0.84], 0, None).state.step, 14);

    // Without early stopping the run goes to its budget.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.early_stopping.enabled = false;
    assert_eq!(run(&c, &[1.0; 20], 0, None).state.step, 40);
}

#[test]
fn patience_survives_a_resume() {
    // Interrupted right after the 4th validation (step 8, wait 2 of 3), resumed: the 5th
    // validation (step 10) must stop the run, as in the uninterrupted one. A policy that
    // forgot its count would stop at step 14.
    let dir = tempfile::tempdir().unwrap();
    let first = run(&config(dir.path()), &SCRIPT, 0, Some(4));
    assert_eq!((first.state.step, &first.reason), (8, &StopReason::Interrupted(Signal::Interrupt)));
    let mut c = config(dir.path());
    c.resume.auto = true;
    let resumed = run(&c, &[1.0, 0.8, 0.9, 0.85, 0.81, 0.82, 0.83, 0.84], 4, None);
    assert_eq!(resumed.state.step, 10);
    assert!(matches!(resumed.reason, StopReason::Requested { .. }));
}

#[test]
fn the_best_weights_are_restored_at_the_end() {
    // Best at the 2nd validation (step 4); stops at step 10 and returns the step-4 weights.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.early_stopping.restore_best_weights = true;
    let summary = run(&c, &[1.0, 0.5, 0.9, 0.9, 0.9], 0, None);
    assert_eq!(summary.state.step, 10);
    assert_eq!(support::events(dir.path(), Some("restored_best"))[0]["step"], 4);

    let straight = tempfile::tempdir().unwrap();
    let mut c = config(straight.path());
    c.early_stopping.enabled = false;
    c.training.max_steps = Some(4);
    let at_best = run(&c, &[1.0, 0.5], 0, None);
    assert_eq!(support::weights::<B, _>(&summary.model), support::weights::<B, _>(&at_best.model));
    // And the last weights are still in checkpoint_latest for a resume.
    assert!(dir.path().join("checkpoints/checkpoint_latest.safetensors").is_file());
}
