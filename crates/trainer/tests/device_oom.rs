//! GPU out-of-memory as burn 0.21's cubecl runtime reports it — a panic in the backend's
//! device thread — reproduced on the CPU. In a binary of its own: the panic watch is
//! process-wide (one run per process), so other tests must not share the process.

use std::cell::Cell;
use std::path::Path;

#[path = "../../../tests/support/mod.rs"]
mod support;

use trainer::backend::CpuBackend;
use trainer::config::{LoggingConfig, ProgressMode};
use trainer::toy::{ToyConfig, ToyTask};
use trainer::{StepOutput, Trainer};

type B = CpuBackend;

fn config(dir: &Path) -> ToyConfig {
    let mut c = ToyConfig { seed: 9, output_dir: dir.to_path_buf(), ..ToyConfig::default() };
    c.training.max_steps = Some(30);
    c.training.batch_size = 16;
    c.training.val_every = Some(10);
    c.logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
    c
}

/// Fails micro-batch `at` (counted over the run) the way a GPU allocation failure shows up with
/// burn 0.21's cubecl runtime: an `unwrap` panic inside the backend's device thread, caught and
/// only logged there; with `then_panic_here`, the training thread then fails too, as a read-back
/// of the never-allocated buffer would.
struct DeviceThreadOom {
    at: usize,
    then_panic_here: bool,
    seen: Cell<usize>,
}

impl support::ToyHooks for DeviceThreadOom {
    fn train_step(&self, _out: &mut StepOutput<B>) {
        let i = self.seen.get();
        self.seen.set(i + 1);
        if i == self.at {
            let device_thread = std::thread::Builder::new().name("device-runner".into()).spawn(|| {
                // What `command.reserve(size).unwrap()` prints when the allocation fails.
                panic!("called `Result::unwrap()` on an `Err` value: BufferTooBig {{ size: 34359738368 }}");
            });
            assert!(device_thread.unwrap().join().is_err(), "the device thread's panic is swallowed there");
            if self.then_panic_here {
                panic!("called `Result::unwrap()` on an `Err` value: CallError");
            }
        }
    }
}

#[test]
fn a_gpu_allocation_failure_in_the_device_thread_is_caught_as_out_of_memory() {
    let clean = tempfile::tempdir().unwrap();
    let c = config(clean.path());
    let reference = Trainer::new(c.loop_config()).run::<B, _>(&ToyTask::new(&c), &Default::default()).unwrap();
    for then_panic_here in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let task = support::HookedToy {
            inner: ToyTask::new(&c),
            hooks: DeviceThreadOom { at: 2, then_panic_here, seen: Cell::new(0) },
        };
        let s = Trainer::new(c.loop_config()).run::<B, _>(&task, &Default::default()).unwrap();
        assert_eq!(s.state.step, 30, "training continued");
        let oom = &support::events(dir.path(), Some("oom"))[0];
        assert_eq!((oom["step"].as_u64(), oom["split"].as_u64()), (Some(3), Some(2)), "{oom}");
        let reason = oom["reason"].as_str().unwrap();
        assert!(reason.contains("BufferTooBig") && reason.contains("device-runner"), "{reason}");
        let (a, b) = (support::weights::<B, _>(&s.model), support::weights::<B, _>(&reference.model));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "weights differ by {diff}");
    }
}
