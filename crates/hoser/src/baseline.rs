//! The "most frequent successor" baseline HOSER's next-step accuracy is compared with.

use std::collections::HashMap;

use crate::data::Sample;

/// Validation accuracy of predicting, at every step of `val`, the successor seen most often after
/// the current road in `train` (ties and roads never seen: the lowest candidate index, like an
/// `argmax`). Counts every step of every trajectory, as `val_next_step_acc` does. `NaN` when
/// `val` has no steps.
pub fn most_frequent_successor_accuracy(train: &[Sample], val: &[Sample]) -> f64 {
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    for s in train {
        for (i, (&road, &label)) in s.trace_road_id().iter().zip(s.road_label()).enumerate() {
            *counts.entry((road, s.candidates(i)[label as usize])).or_default() += 1;
        }
    }
    let count = |road: u32, next: u32| counts.get(&(road, next)).copied().unwrap_or(0);
    let (mut correct, mut total) = (0u64, 0u64);
    for s in val {
        for (i, (&road, &label)) in s.trace_road_id().iter().zip(s.road_label()).enumerate() {
            let cands = s.candidates(i);
            let mut best = 0;
            for (k, &c) in cands.iter().enumerate() {
                if count(road, c) > count(road, cands[best]) {
                    best = k;
                }
            }
            correct += u64::from(best == label as usize);
            total += 1;
        }
    }
    if total == 0 { f64::NAN } else { correct as f64 / total as f64 }
}
