//! The distillation term (teacher candidate probabilities read through the token map, the KL,
//! `distill.steps`, `distill.temperature_squared`) against numpy reference vectors computed from the
//! formula alone (`scripts/distill_kl_vectors.py` → `tests/fixtures/distill_kl/vectors.json`).
//!
//! The batches are adversarial about padding: padded candidate slots hold road 0, a real road whose
//! cell has teacher mass, and student logit 50; padded steps may hold candidates too. Several
//! candidates of a step share one cell (they get the same teacher mass before renormalising).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Int, Tensor, TensorData};
use hoser::lmtad::tokens::TokenMap;
use hoser_distill::distill::{DistillSection, candidate_probs};
use losses::sequence::{CandidateSteps, TemperedTeacher, distillation_kl, distillation_kl_tempered};
use serde::Deserialize;

type Cpu = Flex;

#[derive(Deserialize)]
struct Fixture {
    token_map: TokenMap,
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    temperature: f64,
    trace_len: Vec<i64>,
    /// `[B][T]`.
    candidate_len: Vec<Vec<i64>>,
    /// `[B][T][C]` road ids, padding slots hold road 0.
    candidate_roads: Vec<Vec<Vec<u32>>>,
    /// `[B][T][C]`, padding slots hold 50.
    logits: Vec<Vec<Vec<f64>>>,
    /// `[B][T][V]`, float32 values.
    next_probs: Vec<Vec<Vec<f64>>>,
    expected_kl: Expected,
}

#[derive(Deserialize, Clone)]
struct Expected {
    all: ByScaling,
    last: ByScaling,
}

#[derive(Deserialize, Clone)]
struct ByScaling {
    temperature_squared_false: f64,
    temperature_squared_true: f64,
}

impl Case {
    fn dims(&self) -> [usize; 3] {
        [self.logits.len(), self.logits[0].len(), self.logits[0][0].len()]
    }

    /// The `[B, T, C]` teacher tensor: each step's next-token probabilities read at every slot's
    /// road, padding slots included (their mass must be dropped by the KL).
    fn teacher(&self, map: &TokenMap) -> Vec<f64> {
        let mut out = Vec::new();
        for (probs_row, roads_row) in self.next_probs.iter().zip(&self.candidate_roads) {
            for (probs, roads) in probs_row.iter().zip(roads_row) {
                let next: Vec<f32> = probs.iter().map(|&p| p as f32).collect();
                out.extend(candidate_probs(&next, roads, map).into_iter().map(f64::from));
            }
        }
        out
    }
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distill_kl/vectors.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn floats<const D: usize>(values: Vec<f64>, dims: [usize; D], dtype: DType) -> Tensor<Cpu, D> {
    let dev = Default::default();
    Tensor::from_data(TensorData::new(values, dims).convert_dtype(dtype), (&dev, dtype))
}

fn ints<const D: usize>(values: Vec<i64>, dims: [usize; D]) -> Tensor<Cpu, D, Int> {
    let dev = Default::default();
    let data: Vec<i32> = values.into_iter().map(|v| v as i32).collect();
    Tensor::from_data(TensorData::new(data, dims), &dev)
}

/// hoser-distill's distillation term for a case: the KL on the chosen steps times
/// [`DistillSection::scale`].
fn distill_term(case: &Case, map: &TokenMap, last: bool, temperature_squared: bool, dtype: DType) -> f64 {
    let [b, t, c] = case.dims();
    let steps = CandidateSteps::<Cpu>::from_lengths(
        ints(case.trace_len.clone(), [b]),
        ints(case.candidate_len.concat(), [b, t]),
        ints(vec![0; b * t], [b, t]),
        c,
    )
    .unwrap();
    let steps = if last { steps.last_step_only() } else { steps };
    let logits = floats(case.logits.concat().concat(), [b, t, c], dtype);
    let teacher = floats(case.teacher(map), [b, t, c], dtype);
    let kl = distillation_kl(logits, teacher, &steps, case.temperature).unwrap();
    let kl = kl.into_data().iter::<f64>().next().unwrap();
    let section = DistillSection { temperature: case.temperature, temperature_squared, ..DistillSection::default() };
    kl * section.scale()
}

fn expected(case: &Case, last: bool, temperature_squared: bool) -> f64 {
    let by = if last { &case.expected_kl.last } else { &case.expected_kl.all };
    if temperature_squared { by.temperature_squared_true } else { by.temperature_squared_false }
}

const VARIANTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

fn variant(last: bool, temperature_squared: bool) -> String {
    format!("steps={} temperature_squared={temperature_squared}", if last { "last" } else { "all" })
}

#[test]
fn distillation_term_matches_the_numpy_reference() {
    let f = fixture();
    assert_eq!(f.token_map.vocab_size(), f.cases[0].next_probs[0][0].len());
    for case in &f.cases {
        for (last, squared) in VARIANTS {
            let want = expected(case, last, squared);
            let got = distill_term(case, &f.token_map, last, squared, DType::F64);
            assert!((got - want).abs() <= 1e-6, "{} {}: got {got}, numpy {want}", case.name, variant(last, squared));
            // The f32 path (teacher and logits in single precision) agrees to f32 accuracy.
            let got32 = distill_term(case, &f.token_map, last, squared, DType::F32);
            assert!(
                (got32 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{} {} (f32): got {got32}, numpy {want}",
                case.name,
                variant(last, squared)
            );
        }
    }
}

#[test]
fn candidates_sharing_a_cell_get_the_same_teacher_mass() {
    let f = fixture();
    let map = &f.token_map;
    let case = &f.cases[0];
    let mut shared = 0;
    for (b, row) in case.candidate_roads.iter().enumerate() {
        for (t, roads) in row.iter().enumerate() {
            let next: Vec<f32> = case.next_probs[b][t].iter().map(|&p| p as f32).collect();
            let probs = candidate_probs(&next, roads, map);
            for (i, &r) in roads.iter().enumerate() {
                let cell = map.token(r).unwrap();
                assert_eq!(probs[i], next[cell as usize], "road {r} reads its cell {cell}");
                for (j, &s) in roads.iter().enumerate().skip(i + 1) {
                    if map.token(s) == Some(cell) && r != s {
                        assert_eq!(probs[i], probs[j]);
                        shared += 1;
                    }
                }
            }
        }
    }
    assert!(shared > 0, "the fixture has steps whose distinct candidates share a cell");
    // A road outside the map gets no mass rather than a panic.
    assert_eq!(candidate_probs(&[0.5; 12], &[map.num_roads() as u32], map), vec![0.0]);
}

/// Every padding position of a case: `(b, t, c)` with `t` a padded step or `c` a padded slot.
fn padding(case: &Case) -> Vec<(usize, usize, usize)> {
    let [b, t, c] = case.dims();
    let mut out = Vec::new();
    for bi in 0..b {
        for ti in 0..t {
            for ci in 0..c {
                let real = (ti as i64) < case.trace_len[bi] && (ci as i64) < case.candidate_len[bi][ti];
                if !real {
                    out.push((bi, ti, ci));
                }
            }
        }
    }
    out
}

#[test]
fn padding_never_enters_a_distribution() {
    let f = fixture();
    let map = &f.token_map;
    for case in &f.cases {
        let pads = padding(case);
        assert!(!pads.is_empty(), "{}: the case has padding", case.name);
        // The padding holds teacher mass (road 0 is a real road), so dropping it is not vacuous.
        let teacher = case.teacher(map);
        let [_, t, c] = case.dims();
        assert!(pads.iter().any(|&(b, s, k)| teacher[(b * t + s) * c + k] > 0.0), "{}", case.name);

        // Every padding slot gets another logit and another road (in another cell).
        let mut moved = case.clone();
        for &(b, s, k) in &pads {
            moved.logits[b][s][k] = -30.0 + k as f64;
            moved.candidate_roads[b][s][k] = 9;
        }
        for (last, squared) in VARIANTS {
            let base = distill_term(case, map, last, squared, DType::F64);
            let other = distill_term(&moved, map, last, squared, DType::F64);
            assert!(
                (base - other).abs() <= 1e-12,
                "{} {}: padding changed the KL from {base} to {other}",
                case.name,
                variant(last, squared)
            );
        }

        // While a real slot's logit or road does change it (the check above is not vacuous).
        let (b, s) = (0..case.trace_len.len())
            .filter(|&b| case.trace_len[b] > 0)
            .map(|b| (b, (case.trace_len[b] - 1) as usize))
            .find(|&(b, s)| case.candidate_len[b][s] >= 2)
            .expect("a row whose last step has two candidates");
        let mut logit = case.clone();
        logit.logits[b][s][0] += 1.0;
        let mut road = case.clone();
        let r = road.candidate_roads[b][s][0];
        road.candidate_roads[b][s][0] = if map.token(r) == map.token(2) { 8 } else { 2 };
        for changed in [&logit, &road] {
            let base = distill_term(case, map, true, false, DType::F64);
            let other = distill_term(changed, map, true, false, DType::F64);
            assert!((base - other).abs() > 1e-6, "{}: a real slot did not change the KL", case.name);
        }
    }
}

/// What a training step computes: each distilled step's real candidates read through the token
/// map and tempered on the host ([`TemperedTeacher`]), then [`distillation_kl_tempered`] against
/// the student logits (padded slots hold logit 50 and road 0), times [`DistillSection::scale`].
fn stage_term(case: &Case, map: &TokenMap, last: bool, temperature_squared: bool) -> f64 {
    let [b, t, c] = case.dims();
    let mut teacher = TemperedTeacher::new([b, t, c]);
    for row in 0..b {
        let len = case.trace_len[row] as usize;
        for step in 0..len {
            if last && step + 1 != len {
                continue;
            }
            let k = case.candidate_len[row][step] as usize;
            let next: Vec<f32> = case.next_probs[row][step].iter().map(|&p| p as f32).collect();
            teacher.push(
                row,
                step,
                &candidate_probs(&next, &case.candidate_roads[row][step][..k], map),
                case.temperature,
            );
        }
    }
    let steps = CandidateSteps::<Cpu>::from_lengths(
        ints(case.trace_len.clone(), [b]),
        ints(case.candidate_len.concat(), [b, t]),
        ints(vec![0; b * t], [b, t]),
        c,
    )
    .unwrap();
    let logits = floats(case.logits.concat().concat(), [b, t, c], DType::F64);
    let q = teacher.probs::<Cpu>(&Default::default());
    let kl = distillation_kl_tempered(logits, &teacher, q, steps.candidate_mask().clone(), case.temperature).unwrap();
    let kl = kl.into_data().iter::<f64>().next().unwrap();
    kl * DistillSection { temperature: case.temperature, temperature_squared, ..DistillSection::default() }.scale()
}

#[test]
fn the_training_steps_host_prepared_kl_matches_the_numpy_reference() {
    let f = fixture();
    for case in &f.cases {
        for (last, squared) in VARIANTS {
            let want = expected(case, last, squared);
            let got = stage_term(case, &f.token_map, last, squared);
            assert!((got - want).abs() <= 1e-6, "{} {}: got {got}, numpy {want}", case.name, variant(last, squared));
        }
    }
}
