//! What makes a run reproducible: data order as a function of `(seed, epoch)`, the backend RNG
//! reseeded from `(seed, step)` before every optimizer step, and seeded initialisation.
//! Nothing here depends on state the loop carries, so a resumed run recomputes all of it.

use std::sync::Mutex;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::task::Task;

/// Model initialisation seeds a process-global backend RNG; runs in one process (tests)
/// take turns so each gets exactly its seed's weights. Random ops inside training steps of
/// runs sharing a process still share that RNG: bit-exact replay of those needs one run per
/// process, which is how the binaries run.
pub(crate) static INIT_LOCK: Mutex<()> = Mutex::new(());

/// The order in which epoch `epoch` visits `n` samples: a permutation fixed by `(seed, epoch)`,
/// so a resumed run can jump to any position without replaying the data.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Seed of the backend RNG for optimizer step `step` (SplitMix64 of seed and step), so
/// random ops inside a step (dropout, noise) replay exactly after a resume.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reseeds the backend for the optimizer step after `step` completed ones. Under the init
/// lock: a reseed must not land inside another run's model initialisation (the backend RNG is
/// process-global).
pub(crate) fn reseed_for_step<B: AutodiffBackend>(device: &B::Device, seed: u64, step: u64) {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, step_seed(seed, step));
}

/// Builds the task's model with the backend seeded by `seed`: the same seed always gives the
/// same initial weights, also when several runs share a process.
pub fn init_model<B: AutodiffBackend, T: Task<B>>(task: &T, seed: u64, device: &B::Device) -> T::Model {
    /// burn initialises parameters lazily, at first use; touching each one here draws every
    /// initial value while the seeded RNG is ours.
    struct Materialise;
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    let model = task.build_model(device);
    model.visit(&mut Materialise);
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(7, 0, 100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(7, 0, 100), "same seed and epoch, same order");
        assert_ne!(a, epoch_order(7, 1, 100), "each epoch reshuffles");
        assert_ne!(a, epoch_order(8, 0, 100), "the seed drives the order");
    }

    #[test]
    fn step_seeds_differ_per_step_and_seed() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|s| step_seed(42, s)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(step_seed(1, 5), step_seed(2, 5));
    }
}
