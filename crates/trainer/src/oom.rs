//! The out-of-memory degrade ladder (seed 000): when a step runs out of memory, release cached
//! memory, lower the stage's declared knob (e.g. diffusion timesteps) one rung, and once that
//! is at its floor, split every micro-batch in two while keeping the samples of the step — so
//! the effective batch, and the gradient, stay the same. The same step is retried; the rung is
//! saved in checkpoints and logged as an `oom` event.
//!
//! Where an out-of-memory is seen: a backend execution error whose message says so (cubecl
//! reports `OutOfMemory` launch errors through `Backend::sync`; this path is written from the
//! source and not yet exercised on a GPU), a resident-memory budget (`oom.memory_budget_bytes`,
//! the CPU stand-in), or fault injection (`oom.inject_at_steps`) for tests.

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

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

/// Whether a backend error message reports an out-of-memory.
pub fn is_oom_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("out-of-memory") || m.contains("outofmemory")
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
    }
}
