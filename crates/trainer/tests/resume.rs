//! A run that is stopped and resumed equals the uninterrupted run bit for bit on the CPU:
//! per-step losses, final weights, and the state of stop policies.

use std::cell::Cell;
use std::path::Path;

#[path = "../../../tests/support/mod.rs"]
mod support;

use burn::module::AutodiffModule;
use schedulers::ScheduleName;
use serde_json::Value;
use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::interrupt::{Interrupts, Signal};
use trainer::toy::{ToyConfig, ToyTask};
use trainer::{Decision, StepOutput, StopPolicy, StopReason, Trainer, Validation};

type B = CpuBackend;

/// 256 samples in batches of 24 → 11 micro-batches per epoch; 3 per optimizer step → steps
/// of 3, 3, 3 and 2 micro-batches, 4 steps per epoch.
fn config(dir: &Path, max_steps: u64) -> ToyConfig {
    let mut c = ToyConfig { seed: 11, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(max_steps);
    c.training.batch_size = 24;
    c.training.gradient_accumulation_steps = 3;
    c.training.val_every = Some(3);
    c.training.gradient_clip_norm = Some(0.5);
    c.optimizer.lr = 0.02;
    c.optimizer.scheduler.name = ScheduleName::Cosine;
    c.optimizer.scheduler.warmup_steps = 4;
    c.optimizer.scheduler.min_lr = 0.001;
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c
}

/// Raises an interrupt while the toy task computes micro-batch number `at` (0-based,
/// counted over the whole run segment), as a signal arriving mid-step would.
struct InterruptAt {
    at: Option<usize>,
    seen: Cell<usize>,
    interrupts: Interrupts,
}

impl support::ToyHooks for InterruptAt {
    fn train_step(&self, _: &mut StepOutput<B>) {
        if Some(self.seen.get()) == self.at {
            self.interrupts.request(Signal::Interrupt);
        }
        self.seen.set(self.seen.get() + 1);
    }
}

/// Counts validations and asks to stop at the `limit`-th: its count must survive resumes.
struct StopAfterValidations {
    seen: u64,
    limit: u64,
}

impl StopPolicy for StopAfterValidations {
    fn name(&self) -> &str {
        "stop_after_validations"
    }
    fn after_validation(&mut self, _: &Validation<'_>) -> Decision {
        self.seen += 1;
        Decision {
            stop: (self.seen >= self.limit).then(|| format!("{} validations", self.seen)),
            ..Decision::default()
        }
    }
    fn state(&self) -> Value {
        serde_json::json!({"seen": self.seen})
    }
    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.seen = state["seen"].as_u64().ok_or("no count")?;
        Ok(())
    }
}

fn weights<M: AutodiffModule<B>>(model: &M) -> Vec<u32> {
    support::weights::<B, M>(model).iter().map(|v| v.to_bits()).collect()
}

/// Per-step (step, loss bits, lr bits) as finally logged: a resumed run logs each step once.
fn step_log(dir: &Path) -> Vec<(u64, u64, u64)> {
    let mut by_step = std::collections::BTreeMap::new();
    for e in support::events(dir, Some("train_step")) {
        by_step.insert(
            e["step"].as_u64().unwrap(),
            (e["loss"].as_f64().unwrap().to_bits(), e["lr"].as_f64().unwrap().to_bits()),
        );
    }
    by_step.into_iter().map(|(s, (l, r))| (s, l, r)).collect()
}

struct Segment {
    stopped_at: u64,
    reason: StopReason,
}

fn run_segment(c: &ToyConfig, interrupt_at_micro: Option<usize>, policy_limit: u64) -> (Segment, Vec<u32>) {
    let interrupts = Interrupts::none();
    let task = support::HookedToy {
        inner: ToyTask::new(c),
        hooks: InterruptAt { at: interrupt_at_micro, seen: Cell::new(0), interrupts: interrupts.clone() },
    };
    let summary = Trainer::new(c.loop_config())
        .interrupts(interrupts)
        .policy(StopAfterValidations { seen: 0, limit: policy_limit })
        .run::<B, _>(&task, &Default::default())
        .unwrap();
    (Segment { stopped_at: summary.state.step, reason: summary.reason }, weights(&summary.model))
}

/// Runs `total` steps straight, then again interrupted at micro-batch `at` and resumed; both
/// must agree exactly. Returns the step the interruption landed on.
fn compare(total: u64, at: usize) -> u64 {
    compare_with(total, at, |_| {}).0
}

/// [`compare`] with a changed config; also returns the straight run's directory.
fn compare_with(total: u64, at: usize, tweak: impl Fn(&mut ToyConfig)) -> (u64, tempfile::TempDir) {
    let cfg = |dir: &Path| {
        let mut c = config(dir, total);
        tweak(&mut c);
        c
    };
    let straight = tempfile::tempdir().unwrap();
    let (s, w_straight) = run_segment(&cfg(straight.path()), None, u64::MAX);
    assert_eq!((s.stopped_at, &s.reason), (total, &StopReason::Budget));

    let split = tempfile::tempdir().unwrap();
    let (first, _) = run_segment(&cfg(split.path()), Some(at), u64::MAX);
    assert_eq!(first.reason, StopReason::Interrupted(Signal::Interrupt));
    assert!(first.stopped_at < total);
    let mut resumed = cfg(split.path());
    resumed.resume.auto = true;
    let (second, w_resumed) = run_segment(&resumed, None, u64::MAX);
    assert_eq!((second.stopped_at, &second.reason), (total, &StopReason::Budget));

    assert_eq!(step_log(split.path()), step_log(straight.path()), "per-step loss and lr");
    assert!(w_resumed == w_straight, "final weights differ after resuming at step {}", first.stopped_at);
    (first.stopped_at, straight)
}

fn lrs(dir: &Path) -> Vec<f64> {
    step_log(dir).iter().map(|(_, _, lr)| f64::from_bits(*lr)).collect()
}

#[test]
fn resume_at_an_accumulation_boundary_is_bit_exact() {
    // Micro-batch 8 is the last of step 3's window (0-2, 3-5, 6-8): the stop lands exactly on
    // the boundary after step 3.
    assert_eq!(compare(14, 8), 3);
}

#[test]
fn a_stop_inside_an_accumulation_window_finishes_the_step_then_resumes_exactly() {
    // Micro-batch 12 is the middle of step 5's window (11-13): the signal arrives mid-window, the loop
    // completes step 5, saves, and the resumed run continues from there.
    assert_eq!(compare(14, 12), 5);
}

#[test]
fn resume_across_an_epoch_boundary_is_bit_exact() {
    // Step 4 closes epoch 0 with its ragged 2-micro-batch window (micro-batches 9-10); the
    // resumed run starts epoch 1 with a fresh shuffle. And step 7, just before epoch 1's end.
    assert_eq!(compare(14, 10), 4);
    assert_eq!(compare(14, 19), 7);
}

#[test]
fn policy_state_survives_a_resume() {
    // Validations every 3 steps: 3, 6, 9, 12 — the 4th (step 12) triggers the stop.
    let straight = tempfile::tempdir().unwrap();
    let (s, _) = run_segment(&config(straight.path(), 30), None, 4);
    assert_eq!(s.stopped_at, 12);

    // Interrupted after step 7 (2 validations seen), resumed: it must stop at step 12 too,
    // not at step 21 as a policy that forgot its count would.
    let split = tempfile::tempdir().unwrap();
    let (first, _) = run_segment(&config(split.path(), 30), Some(19), 4);
    assert_eq!(first.stopped_at, 7);
    let mut resumed = config(split.path(), 30);
    resumed.resume.auto = true;
    let (second, _) = run_segment(&resumed, None, 4);
    assert_eq!(second.stopped_at, 12);
    assert!(matches!(second.reason, StopReason::Requested { .. }));

    // Interrupted right after the validation of step 6: the checkpoint of step 6 must already
    // count that validation (a policy saved before its update would stop at step 15).
    let split = tempfile::tempdir().unwrap();
    let (first, _) = run_segment(&config(split.path(), 30), Some(16), 4);
    assert_eq!(first.stopped_at, 6);
    let mut resumed = config(split.path(), 30);
    resumed.resume.auto = true;
    let (second, _) = run_segment(&resumed, None, 4);
    assert_eq!(second.stopped_at, 12);
}

#[test]
fn plateau_state_survives_a_resume() {
    // threshold 10 (absolute): no validation after the first improves, so with patience 1
    // every second validation halves the rate: validations at 3, 6, 9, 12, 15 → cuts at 9, 15.
    let plateau = |c: &mut ToyConfig| {
        c.optimizer.scheduler =
            serde_yaml::from_str("{name: plateau, factor: 0.5, patience: 1, threshold: 10.0, threshold_mode: abs}")
                .unwrap();
    };
    // Interrupted right after the validation of step 6 (one bad validation counted): a
    // resumed plateau that forgot its state would take step 9 as its first (best) metric
    // and cut only at step 15.
    let (stopped, straight) = compare_with(17, 16, plateau);
    assert_eq!(stopped, 6);
    let lr = lrs(straight.path());
    let expected: Vec<f64> = (1..=17)
        .map(|s| {
            0.02 * if s <= 9 {
                1.0
            } else if s <= 15 {
                0.5
            } else {
                0.25
            }
        })
        .collect();
    assert_eq!(lr, expected, "the rate of each step");
    let cuts: Vec<u64> =
        support::events(straight.path(), Some("lr_reduced")).iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(cuts, [9, 15]);
}

#[test]
fn onecycle_momentum_cycles_and_resumes_exactly() {
    let onecycle = |c: &mut ToyConfig| {
        c.optimizer.scheduler = serde_yaml::from_str("{name: onecycle, pct_start: 0.25}").unwrap();
    };
    let (_, straight) = compare_with(16, 12, onecycle);
    // β1 is torch's: 0.95 → 0.85 over the rise (pct·T − 1 = 3), back to 0.95 at the end.
    let beta1: Vec<f64> =
        support::events(straight.path(), Some("train_step")).iter().map(|e| e["beta1"].as_f64().unwrap()).collect();
    let cos = |a: f64, b: f64, p: f64| b + (a - b) / 2.0 * ((std::f64::consts::PI * p).cos() + 1.0);
    let expected: Vec<f64> = (0..16u32)
        .map(|t| {
            let t = f64::from(t);
            if t <= 3.0 { cos(0.95, 0.85, t / 3.0) } else { cos(0.85, 0.95, (t - 3.0) / 12.0) }
        })
        .collect();
    for (t, (got, want)) in beta1.iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-12, "β1 of step {}: {got} vs {want}", t + 1);
    }
    // And it reaches the optimizer: the same run with β1 held at 0.9 ends elsewhere.
    let fixed = tempfile::tempdir().unwrap();
    let mut c = config(fixed.path(), 16);
    onecycle(&mut c);
    c.optimizer.scheduler.cycle_momentum = Some(false);
    let (_, w_fixed) = run_segment(&c, None, u64::MAX);
    let cycled = tempfile::tempdir().unwrap();
    let mut c = config(cycled.path(), 16);
    onecycle(&mut c);
    let (_, w_cycled) = run_segment(&c, None, u64::MAX);
    assert_ne!(w_fixed, w_cycled);
    assert_eq!(lrs(fixed.path()), lrs(cycled.path()), "only β1 differs");
}
