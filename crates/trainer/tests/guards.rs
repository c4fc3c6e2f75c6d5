//! The spike guard and the NaN/Inf anomaly check on the toy task, with faults injected from
//! a chosen step: each stops the run where expected, leaves a checkpoint, and the spike
//! guard's count survives a resume.

use std::cell::Cell;
use std::path::Path;

use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::interrupt::{Interrupts, Signal};
use trainer::toy::{Mlp, ToyConfig, ToyTask};
use trainer::{StepOutput, StopReason, Task, TrainError, Trainer};

#[path = "../../../tests/support/mod.rs"]
mod support;

type B = CpuBackend;

#[derive(Clone, Copy)]
enum Fault {
    /// Multiply the loss (and so the gradients) by this factor.
    ScaleLoss(f64),
    /// Make the loss NaN.
    NanLoss,
    /// Report a NaN loss component `bad` next to the loss.
    NanComponent,
}

/// Injects `fault` from micro-batch `from` on (counted from `seen`'s start), and raises an
/// interrupt while micro-batch `interrupt_at` is computed.
struct Faulty {
    fault: Fault,
    from: usize,
    seen: Cell<usize>,
    interrupt_at: Option<usize>,
    interrupts: Interrupts,
}

impl support::ToyHooks for Faulty {
    fn train_step(&self, out: &mut StepOutput<B>) {
        let i = self.seen.get();
        self.seen.set(i + 1);
        if Some(i) == self.interrupt_at {
            self.interrupts.request(Signal::Interrupt);
        }
        if i >= self.from {
            match self.fault {
                Fault::ScaleLoss(k) => out.loss = out.loss.clone().mul_scalar(k),
                Fault::NanLoss => out.loss = out.loss.clone().mul_scalar(f64::NAN),
                Fault::NanComponent => {
                    out.metrics.insert("bad".into(), f64::NAN);
                }
            }
        }
    }
}

fn config(dir: &Path) -> ToyConfig {
    let mut c = ToyConfig { seed: 9, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(30);
    c.training.batch_size = 16;
    c.training.val_every = Some(10);
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c
}

fn run(
    c: &ToyConfig,
    fault: Fault,
    from: usize,
    offset: usize,
    interrupt_at: Option<usize>,
) -> Result<trainer::RunSummary<Mlp<B>>, TrainError> {
    let interrupts = Interrupts::none();
    let task = support::HookedToy {
        inner: ToyTask::new(c),
        hooks: Faulty { fault, from, seen: Cell::new(offset), interrupt_at, interrupts: interrupts.clone() },
    };
    Trainer::new(c.loop_config()).interrupts(interrupts).run::<B, _>(&task, &Default::default())
}

fn latest_step(dir: &Path) -> u64 {
    checkpoints::CheckpointFile::read(&dir.join("checkpoints/checkpoint_latest.safetensors")).unwrap().meta.step
}

#[test]
fn three_consecutive_gradient_spikes_abort_with_a_checkpoint() {
    // From step 5 on (micro-batch index 4) the gradients are a million times larger: steps
    // 5, 6 and 7 exceed the default threshold of 1000, so step 7 aborts.
    let dir = tempfile::tempdir().unwrap();
    let s = run(&config(dir.path()), Fault::ScaleLoss(1e6), 4, 0, None).unwrap();
    assert_eq!(s.state.step, 7);
    assert!(matches!(&s.reason, StopReason::Aborted { policy, .. } if policy == "spike_guard"), "{:?}", s.reason);
    assert_eq!(support::events(dir.path(), Some("spike_abort"))[0]["step"], 7);
    assert_eq!(latest_step(dir.path()), 7);

    // The guard is what stopped it: without a threshold the run reaches its budget.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.spike_guard.grad_norm_threshold = None;
    assert_eq!(run(&c, Fault::ScaleLoss(1e6), 4, 0, None).unwrap().state.step, 30);
}

#[test]
fn the_spike_count_survives_a_resume() {
    // Interrupted after step 6 (two spikes counted), resumed: step 7 is the third and aborts.
    let dir = tempfile::tempdir().unwrap();
    let first = run(&config(dir.path()), Fault::ScaleLoss(1e6), 4, 0, Some(5)).unwrap();
    assert_eq!((first.state.step, &first.reason), (6, &StopReason::Interrupted(Signal::Interrupt)));
    let mut c = config(dir.path());
    c.resume.auto = true;
    let second = run(&c, Fault::ScaleLoss(1e6), 4, 6, None).unwrap();
    assert_eq!(second.state.step, 7, "a guard that forgot its count would abort at step 9");
    assert!(matches!(second.reason, StopReason::Aborted { .. }));
}

#[test]
fn a_nan_loss_stops_before_the_update_with_the_last_good_state_saved() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(&config(dir.path()), Fault::NanLoss, 3, 0, None).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("step 4") && msg.contains("the loss of micro-batch 1 is NaN"), "{msg}");
    assert!(msg.contains("checkpoint_latest.safetensors"), "{msg}");
    // The checkpoint holds the weights after step 3, untouched by the NaN step.
    assert_eq!(latest_step(dir.path()), 3);
    let straight = tempfile::tempdir().unwrap();
    let mut c = config(straight.path());
    c.training.max_steps = Some(3);
    let good = run(&c, Fault::NanLoss, usize::MAX, 0, None).unwrap();
    let saved =
        checkpoints::CheckpointFile::read(&dir.path().join("checkpoints/checkpoint_latest.safetensors")).unwrap();
    let restored = checkpoints::module::load_weights(
        <ToyTask as Task<B>>::build_model(&ToyTask::new(&c), &Default::default()),
        saved.tensors,
        None,
        Path::new("latest"),
    )
    .unwrap();
    assert_eq!(support::weights::<B, _>(&restored), support::weights::<B, _>(&good.model));
}

#[test]
fn detect_anomaly_names_the_first_non_finite_loss_component() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.debug.detect_anomaly = true;
    let msg = run(&c, Fault::NanComponent, 5, 0, None).err().unwrap().to_string();
    assert!(msg.contains("step 6") && msg.contains("loss component `bad` is NaN"), "{msg}");
    assert_eq!(support::events(dir.path(), Some("anomaly"))[0]["step"], 6);

    // Without it, a NaN component (not the loss itself) does not stop training.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(&config(dir.path()), Fault::NanComponent, 5, 0, None).unwrap().state.step, 30);
}
