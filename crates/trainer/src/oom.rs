//! The out-of-memory degrade ladder (seed 000): when a step runs out of memory, release cached
//! memory, lower the stage's declared knob (e.g. diffusion timesteps) one rung, and once that
//! is at its floor, split every micro-batch in two while keeping the samples of the step — so
//! the effective batch, and the gradient, stay the same. The same step is retried; the rung is
//! saved in checkpoints and logged as an `oom` event.
//!
//! Where an out-of-memory is seen:
//! - **A failed device allocation.** In cubecl 0.10 (burn 0.21's GPU runtime) allocations are
//!   lazy: the device thread reserves memory when a task first needs it, and a failed
//!   reservation (`IoError::BufferTooBig`, "can't allocate buffer of size …", which is how
//!   cubecl-cuda reports `CUDA_ERROR_OUT_OF_MEMORY`) is an `unwrap` panic *in the device
//!   thread*, which cubecl catches and only logs. The caller sees nothing, or a later failure.
//!   [`watch_device_panics`] installs a panic hook that records such panics from any thread;
//!   the loop checks [`device_oom_since`] after each attempt (and converts a panic on the
//!   training thread that follows one into the same out-of-memory).
//! - A backend execution error whose message says so (`LaunchError::OutOfMemory` through
//!   `Backend::sync`).
//! - A resident-memory budget (`oom.memory_budget_bytes`, the CPU stand-in), or fault
//!   injection (`oom.inject_at_steps`) for tests.
//!
//! The detection is written from cubecl's source and exercised on the CPU by a test that
//! panics a helper thread the way cubecl's device thread does; it has not yet run on a GPU.

use serde::{Deserialize, Serialize};

use crate::problems::ConfigProblem;

/// `oom:` — recovering from out-of-memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OomConfig {
    /// Retry out-of-memory steps down the ladder instead of failing at once.
    pub enabled: bool,
    /// Micro-batches are never split below this many samples.
    pub min_micro_batch: usize,
    /// Treat process RSS above this many bytes after a micro-batch as out of memory (CPU).
    pub memory_budget_bytes: Option<u64>,
    /// Fault injection: the first attempt of each of these optimizer steps runs out of memory.
    pub inject_at_steps: Vec<u64>,
}

impl Default for OomConfig {
    fn default() -> Self {
        Self { enabled: true, min_micro_batch: 1, memory_budget_bytes: None, inject_at_steps: Vec::new() }
    }
}

impl OomConfig {
    /// Range checks.
    pub fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if self.min_micro_batch == 0 {
            p.push(ConfigProblem {
                key: "oom.min_micro_batch".into(),
                message: "expected at least 1 sample".into(),
                origin: None,
            });
        }
    }
}

/// Whether a backend error or panic message reports an out-of-memory.
pub fn is_oom_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("out-of-memory")
        || m.contains("outofmemory")
        || m.contains("out_of_memory")
        || m.contains("buffertoobig")
        || m.contains("can't allocate buffer")
}

/// Out-of-memory panics seen so far, and the last one's text.
static DEVICE_OOM: std::sync::Mutex<(u64, Option<String>)> = std::sync::Mutex::new((0, None));
static WATCH: std::sync::Once = std::sync::Once::new();

/// Installs (once per process) a panic hook that records out-of-memory panics from any thread
/// — cubecl's device thread included — before chaining to the previous hook.
pub fn watch_device_panics() {
    WATCH.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload_as_str().map(str::to_string).unwrap_or_else(|| info.to_string());
            if is_oom_message(&message) {
                let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
                let mut seen = DEVICE_OOM.lock().unwrap_or_else(|p| p.into_inner());
                seen.0 += 1;
                seen.1 = Some(format!("{message} (panic in thread {thread})"));
            }
            previous(info);
        }));
    });
}

/// A mark to pass to [`device_oom_since`].
pub fn device_oom_mark() -> u64 {
    DEVICE_OOM.lock().unwrap_or_else(|p| p.into_inner()).0
}

/// The last out-of-memory panic recorded after `mark`, if any. (Process-wide: one training
/// run per process is assumed, as the stage binaries do.)
pub fn device_oom_since(mark: u64) -> Option<String> {
    let seen = DEVICE_OOM.lock().unwrap_or_else(|p| p.into_inner());
    if seen.0 > mark { seen.1.clone() } else { None }
}

/// The text of a panic payload (`&str` or `String`; other payloads are unnamed).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".into())
}

/// Where a run stands on the ladder. Saved in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OomRung {
    /// Each configured micro-batch is split into this many parts.
    pub split: usize,
    /// Out-of-memory events so far.
    pub events: u64,
}

impl OomRung {
    /// The first rung: no split.
    pub fn start() -> Self {
        Self { split: 1, events: 0 }
    }

    /// The micro-batches of `batches` at this rung: each split into `split` near-equal parts.
    pub fn micro_batches<'a>(&self, batches: &[&'a [usize]]) -> Vec<&'a [usize]> {
        batches.iter().flat_map(|b| b.chunks(b.len().div_ceil(self.split).max(1))).collect()
    }

    /// Whether another halving keeps every micro-batch at `min` samples or more.
    pub fn can_split(&self, batches: &[&[usize]], min: usize) -> bool {
        batches.iter().all(|b| b.len() / (self.split * 2) >= min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_keeps_every_sample_once() {
        let a: Vec<usize> = (0..16).collect();
        let b: Vec<usize> = (16..26).collect();
        let batches = [&a[..], &b[..]];
        let rung = OomRung { split: 4, events: 1 };
        let micro = rung.micro_batches(&batches);
        assert_eq!(micro.iter().map(|m| m.len()).collect::<Vec<_>>(), [4, 4, 4, 4, 3, 3, 3, 1]);
        assert_eq!(micro.concat(), (0..26).collect::<Vec<_>>());
        assert!(rung.can_split(&batches, 1));
        assert!(!rung.can_split(&batches, 2), "10 / 8 < 2");
    }

    #[test]
    fn recognises_backend_messages() {
        assert!(is_oom_message("An out-of-memory error happened during launch"));
        assert!(is_oom_message("CUDA_ERROR_OUT_OF_MEMORY: out of memory"));
        assert!(!is_oom_message("device lost"));
        assert!(is_oom_message(
            "called `Result::unwrap()` on an `Err` value: BufferTooBig { size: 34359738368, backtrace: .. }"
        ));
        assert!(is_oom_message("can't allocate buffer of size: 34359738368"));
    }
}

/// A stage's degrade knob (stage 1's DDIM steps, stage 3's grounding passes): an integer lowered
/// by `reduction` per out-of-memory, never below `floor`, saved in checkpoints. A task keeps one
/// and forwards [`Task::degrade`](crate::Task::degrade), `degrade_state` and `restore_degrade` to it.
#[derive(Debug)]
pub struct DegradeKnob {
    name: &'static str,
    value: std::sync::atomic::AtomicUsize,
    floor: usize,
    reduction: usize,
}

impl DegradeKnob {
    /// A knob called `name` (its key in checkpoints and the `oom` event) at `start`.
    pub fn new(name: &'static str, start: usize, floor: usize, reduction: usize) -> Self {
        Self { name, value: std::sync::atomic::AtomicUsize::new(start), floor, reduction }
    }

    /// The value in use now.
    pub fn get(&self) -> usize {
        self.value.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// One rung down (`value − reduction`, at least `floor`) and what changed, or `None` at the floor.
    pub fn degrade(&self) -> Option<String> {
        let now = self.get();
        if now <= self.floor {
            return None;
        }
        let next = now.saturating_sub(self.reduction).max(self.floor);
        self.value.store(next, std::sync::atomic::Ordering::SeqCst);
        Some(format!("{} {now} -> {next}", self.name))
    }

    /// `{"<name>": value}`, for checkpoints.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({ self.name: self.get() })
    }

    /// Restores a value saved by [`DegradeKnob::state`]; a state without it is an error saying what was expected.
    pub fn restore(&self, state: &serde_json::Value) -> Result<(), String> {
        let v = state[self.name].as_u64().ok_or_else(|| format!("expected {{\"{}\": N}}, got {state}", self.name))?;
        self.value.store(v as usize, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod knob_tests {
    use super::DegradeKnob;

    #[test]
    fn a_knob_steps_down_to_its_floor_and_round_trips() {
        let k = DegradeKnob::new("timesteps", 10, 4, 4);
        assert_eq!(k.degrade().as_deref(), Some("timesteps 10 -> 6"));
        assert_eq!(k.degrade().as_deref(), Some("timesteps 6 -> 4"));
        assert_eq!(k.degrade(), None);
        assert_eq!(k.state(), serde_json::json!({"timesteps": 4}));
        let other = DegradeKnob::new("timesteps", 10, 1, 1);
        other.restore(&k.state()).unwrap();
        assert_eq!(other.get(), 4);
        let e = other.restore(&serde_json::json!({"passes": 3})).unwrap_err();
        assert!(e.contains("timesteps"), "{e}");
    }
}
