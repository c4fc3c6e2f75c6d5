//! What `validation/epoch_N.png` draws, checked on the bundled Helsinki trips: each trajectory's
//! route is its roads, and a step is green exactly when the top-scoring real candidate is the
//! road taken — also for trajectories cropped by `data.max_len`.

use std::path::Path;

use hoser::data::{DatasetOptions, HoserData};
use hoser_vanilla::map::{Drawn, drawn};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hoser/tests/fixtures/libcity/helsinki_test");

fn data() -> HoserData {
    HoserData::load(Path::new(FIXTURE), &DatasetOptions { num_zones: 20, ..DatasetOptions::default() }, None).unwrap()
}

/// Logits `[B, T, C]` scoring each step's candidate `choose(step, n)` highest (padding highest of all,
/// which must never be picked).
fn logits(batch: &hoser::data::Batch, choose: impl Fn(usize, usize) -> usize) -> Vec<f32> {
    let (t, c) = (batch.max_trace_len, batch.max_candidates);
    let mut v = vec![0.0f32; batch.batch_size * t * c];
    for i in 0..batch.batch_size {
        for j in 0..t {
            let at = i * t + j;
            let n = batch.candidate_len[at] as usize;
            for k in 0..c {
                v[at * c + k] = if k >= n {
                    100.0
                } else if k == choose(j, n) {
                    1.0
                } else {
                    -1.0
                };
            }
        }
    }
    v
}

#[test]
fn routes_are_the_roads_and_right_steps_are_the_labels() {
    let data = data();
    let samples = &data.val.samples[..3];
    let collator = data.collator(None).unwrap();
    let batch = collator.collate(samples);
    let labels = |i: usize, j: usize| batch.road_label[i * batch.max_trace_len + j] as usize;
    // Scores that pick the label: every step right.
    let (t, c) = (batch.max_trace_len, batch.max_candidates);
    let mut perfect = logits(&batch, |_, _| usize::MAX);
    for i in 0..3 {
        for j in 0..batch.trace_len[i] as usize {
            perfect[(i * t + j) * c + labels(i, j)] = 1.0;
        }
    }
    for (i, s) in samples.iter().enumerate() {
        let d: Drawn = drawn(&batch, &perfect, i);
        let mut route = s.trace_road_id().to_vec();
        route.push(s.destination_road_id());
        assert_eq!(d.route, route);
        assert_eq!(d.steps.len(), s.trace_len());
        assert!(d.steps.iter().all(|st| st.correct));
        // The predicted road is the road taken next.
        let next: Vec<u32> = route[1..].to_vec();
        assert_eq!(d.steps.iter().map(|st| st.predicted).collect::<Vec<_>>(), next);
    }
    // Scores that pick another real candidate where there is one: exactly those steps are wrong.
    let other = logits(&batch, |_, n| n - 1);
    for (i, s) in samples.iter().enumerate() {
        let d = drawn(&batch, &other, i);
        for (j, st) in d.steps.iter().enumerate() {
            let n = s.candidates(j).len();
            assert_eq!(st.correct, labels(i, j) == n - 1, "trajectory {i} step {j}");
            assert_eq!(st.predicted, s.candidates(j)[n - 1]);
        }
    }
}

#[test]
fn a_cropped_trajectory_draws_the_steps_the_model_saw() {
    let data = data();
    let long = data.val.samples.iter().find(|s| s.trace_len() > 6).expect("a validation trip of 7+ steps");
    let batch = data.collator(Some(4)).unwrap().collate([long]);
    let d = drawn(&batch, &logits(&batch, |_, _| 0), 0);
    assert_eq!(d.steps.len(), 4);
    let roads = long.trace_road_id();
    assert_eq!(&d.route[..4], &roads[roads.len() - 4..]);
    assert_eq!(*d.route.last().unwrap(), long.destination_road_id());
}
