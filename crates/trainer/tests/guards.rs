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

fn plain(c: &ToyConfig) -> Result<trainer::RunSummary<trainer::toy::Mlp<B>>, TrainError> {
    Trainer::new(c.loop_config()).run::<B, _>(&ToyTask::new(c), &Default::default())
}

#[test]
fn an_out_of_memory_step_is_retried_with_split_micro_batches_and_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.oom.inject_at_steps = vec![3];
    let s = plain(&c).unwrap();
    assert_eq!(s.state.step, 30, "training continued");
    let oom = &support::events(dir.path(), Some("oom"))[0];
    assert_eq!((oom["step"].as_u64(), oom["split"].as_u64()), (Some(3), Some(2)));
    // The effective batch is unchanged: the weights match a run that never ran out of memory,
    // up to the summation order of the split micro-batches.
    let clean = tempfile::tempdir().unwrap();
    let reference = plain(&config(clean.path())).unwrap();
    let (a, b) = (support::weights::<B, _>(&s.model), support::weights::<B, _>(&reference.model));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "weights differ by {diff}");
}

#[test]
fn the_oom_rung_survives_a_resume() {
    let straight = tempfile::tempdir().unwrap();
    let mut c = config(straight.path());
    c.training.max_steps = Some(10);
    c.oom.inject_at_steps = vec![3];
    let reference = plain(&c).unwrap();

    let split = tempfile::tempdir().unwrap();
    let mut c = config(split.path());
    c.training.max_steps = Some(6);
    c.oom.inject_at_steps = vec![3];
    plain(&c).unwrap();
    let mut c = config(split.path());
    c.training.max_steps = Some(10);
    c.resume.auto = true;
    let resumed = plain(&c).unwrap();
    // Steps 7-10 still run split in two: bit-identical to the uninterrupted run.
    assert_eq!(support::weights::<B, _>(&resumed.model), support::weights::<B, _>(&reference.model));
}

#[test]
fn out_of_memory_at_the_bottom_of_the_ladder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.oom.inject_at_steps = vec![3];
    c.oom.min_micro_batch = 16;
    let msg = plain(&c).err().unwrap().to_string();
    assert!(msg.contains("out of memory at optimizer step 3") && msg.contains("injected"), "{msg}");
    assert_eq!(support::events(dir.path(), Some("oom")).len(), 1);
}

/// A stage knob like stage 1's diffusion timesteps: 10, lowered by 4, never below 4.
struct Timesteps(Cell<u64>);

impl support::ToyHooks for Timesteps {
    fn degrade(&self) -> Option<String> {
        let now = self.0.get();
        let lowered = now.saturating_sub(4).max(4);
        (lowered < now).then(|| {
            self.0.set(lowered);
            format!("timesteps {now} -> {lowered}")
        })
    }
    fn degrade_state(&self) -> serde_json::Value {
        serde_json::json!({"timesteps": self.0.get()})
    }
    fn restore_degrade(&self, state: &serde_json::Value) -> Result<(), String> {
        self.0.set(state["timesteps"].as_u64().ok_or("no timesteps")?);
        Ok(())
    }
}

#[test]
fn the_stage_knob_is_lowered_first_then_micro_batches_are_split_and_the_knob_survives_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = |c: &ToyConfig, start: u64| {
        let task = support::HookedToy { inner: ToyTask::new(c), hooks: Timesteps(Cell::new(start)) };
        Trainer::new(c.loop_config()).run::<B, _>(&task, &Default::default()).map(|_| task.hooks.0.get())
    };
    let mut c = config(dir.path());
    c.training.max_steps = Some(8);
    c.oom.inject_at_steps = vec![3, 5, 7];
    assert_eq!(run(&c, 10).unwrap(), 4);
    let ooms = support::events(dir.path(), Some("oom"));
    let seen: Vec<(u64, u64, u64)> = ooms
        .iter()
        .map(|e| (e["step"].as_u64().unwrap(), e["knob"]["timesteps"].as_u64().unwrap(), e["split"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [(3, 6, 1), (5, 4, 1), (7, 4, 2)], "knob 10 -> 6 -> 4 (floor), then split");

    // A resumed run starts from the saved knob setting, not the configured one.
    let mut c = config(dir.path());
    c.training.max_steps = Some(9);
    c.resume.auto = true;
    assert_eq!(run(&c, 10).unwrap(), 4);
}

#[test]
fn a_panic_that_is_not_out_of_memory_still_propagates() {
    struct Bug;
    impl support::ToyHooks for Bug {
        fn train_step(&self, _out: &mut StepOutput<B>) {
            panic!("index out of bounds: the len is 3 but the index is 7");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let task = support::HookedToy { inner: ToyTask::new(&c), hooks: Bug };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Trainer::new(c.loop_config()).run::<B, _>(&task, &Default::default())
    }));
    assert!(outcome.is_err(), "a real bug is not retried as out-of-memory");
    assert!(support::events(dir.path(), Some("oom")).is_empty());
}
