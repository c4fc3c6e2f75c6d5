//! Sequence losses and metrics against independent plain-f64 loop implementations of the formulas,
//! plus central-difference gradient checks through burn's autodiff.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};
use losses::sequence::{
    CandidateSteps, MASKED_LOG_PROB, NextStepAccuracy, SequenceLossError, TemperedTeacher, TimeErrorSums,
    TimeNormalization, distillation_kl, distillation_kl_tempered, hoser_time_loss, masked_cross_entropy,
    masked_log_softmax, masked_softmax, next_step_accuracy, time_error,
};

type Cpu = Flex;
type Ad = Autodiff<Flex>;

// ---------------------------------------------------------------------------------------------
// A ragged batch, described host-side, and tensors built from it.
// ---------------------------------------------------------------------------------------------

/// Host-side padded batch: `[B, T, C]` scores in row-major order plus masks and targets.
#[derive(Clone)]
struct Batch {
    dims: [usize; 3],
    cand: Vec<bool>,
    step: Vec<bool>,
    target: Vec<i64>,
}

impl Batch {
    /// Builds masks from per-row candidate counts (one entry per real step; the remaining steps are
    /// padded) in HOSER's layout: real candidates first.
    fn ragged(rows: &[&[usize]], t: usize, c: usize, target: &[&[i64]]) -> Self {
        let b = rows.len();
        let mut cand = vec![false; b * t * c];
        let mut step = vec![false; b * t];
        let mut tgt = vec![0i64; b * t];
        for (bi, lens) in rows.iter().enumerate() {
            for (ti, &len) in lens.iter().enumerate() {
                step[bi * t + ti] = true;
                tgt[bi * t + ti] = target[bi][ti];
                for ci in 0..len {
                    cand[(bi * t + ti) * c + ci] = true;
                }
            }
        }
        Self { dims: [b, t, c], cand, step, target: tgt }
    }

    fn steps<B: Backend>(&self) -> CandidateSteps<B> {
        let dev = Default::default();
        let [b, t, c] = self.dims;
        let cand = Tensor::<B, 3, Bool>::from_data(TensorData::new(self.cand.clone(), [b, t, c]), &dev);
        let step = Tensor::<B, 2, Bool>::from_data(TensorData::new(self.step.clone(), [b, t]), &dev);
        CandidateSteps::new(cand, step, ints::<B>(&self.target, [b, t])).unwrap()
    }

    fn idx(&self, b: usize, t: usize, c: usize) -> usize {
        (b * self.dims[1] + t) * self.dims[2] + c
    }

    fn is_step(&self, b: usize, t: usize) -> bool {
        self.step[b * self.dims[1] + t]
    }

    fn real(&self, b: usize, t: usize) -> Vec<usize> {
        (0..self.dims[2]).filter(|&c| self.cand[self.idx(b, t, c)]).collect()
    }

    fn tgt(&self, b: usize, t: usize) -> i64 {
        self.target[b * self.dims[1] + t]
    }

    /// Steps that are real, have a candidate, and whose target is a real candidate.
    fn supervised(&self) -> Vec<(usize, usize)> {
        let mut out = vec![];
        for b in 0..self.dims[0] {
            for t in 0..self.dims[1] {
                let tg = self.tgt(b, t);
                if self.is_step(b, t)
                    && !self.real(b, t).is_empty()
                    && tg >= 0
                    && (tg as usize) < self.dims[2]
                    && self.cand[self.idx(b, t, tg as usize)]
                {
                    out.push((b, t));
                }
            }
        }
        out
    }
}

fn floats<B: Backend, const D: usize>(values: &[f64], dims: [usize; D], dtype: DType) -> Tensor<B, D> {
    let dev = Default::default();
    Tensor::from_data(TensorData::new(values.to_vec(), dims).convert_dtype(dtype), (&dev, dtype))
}

fn ints<B: Backend>(values: &[i64], dims: [usize; 2]) -> Tensor<B, 2, Int> {
    let dev = Default::default();
    let data: Vec<i32> = values.iter().map(|&v| v as i32).collect();
    Tensor::from_data(TensorData::new(data, dims), &dev)
}

fn host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    tensor.into_data().iter::<f64>().collect()
}

fn value<B: Backend>(tensor: Tensor<B, 1>) -> f64 {
    host(tensor)[0]
}

/// Deterministic, irregular values in roughly [-2, 2].
fn noise(n: usize, seed: f64) -> Vec<f64> {
    (0..n).map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43_758.545_3).fract() * 4.0).collect()
}

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

// ---------------------------------------------------------------------------------------------
// Independent reference implementations (plain f64 loops).
// ---------------------------------------------------------------------------------------------

/// log-softmax over the listed candidates of one step.
fn ref_log_softmax(x: &[f64], real: &[usize]) -> Vec<(usize, f64)> {
    let m = real.iter().map(|&c| x[c]).fold(f64::NEG_INFINITY, f64::max);
    let lse = m + real.iter().map(|&c| (x[c] - m).exp()).sum::<f64>().ln();
    real.iter().map(|&c| (c, x[c] - lse)).collect()
}

fn row<'a>(x: &'a [f64], batch: &Batch, b: usize, t: usize) -> &'a [f64] {
    let start = batch.idx(b, t, 0);
    &x[start..start + batch.dims[2]]
}

fn ref_ce(logits: &[f64], batch: &Batch) -> f64 {
    let steps = batch.supervised();
    if steps.is_empty() {
        return 0.0;
    }
    let total: f64 = steps
        .iter()
        .map(|&(b, t)| {
            let lp = ref_log_softmax(row(logits, batch, b, t), &batch.real(b, t));
            -lp.iter().find(|(c, _)| *c as i64 == batch.tgt(b, t)).unwrap().1
        })
        .sum();
    total / steps.len() as f64
}

fn ref_time_loss(pred: &[f64], seconds: &[f64], batch: &Batch, mu: f64, sigma: f64) -> f64 {
    let steps = batch.supervised();
    if steps.is_empty() {
        return 0.0;
    }
    let total: f64 = steps
        .iter()
        .map(|&(b, t)| {
            let y_hat = pred[batch.idx(b, t, batch.tgt(b, t) as usize)] * sigma + mu;
            let y = seconds[b * batch.dims[1] + t].ln_1p();
            (y_hat - y).abs() / y.max(1.0)
        })
        .sum();
    total / steps.len() as f64
}

/// The reference distillation hook, step by step, over the given `(b, t)` steps.
fn ref_kl(student: &[f64], teacher: &[f64], batch: &Batch, steps: &[(usize, usize)], tau: f64) -> f64 {
    let mut terms = vec![];
    for &(b, t) in steps {
        let real = batch.real(b, t);
        if real.is_empty() {
            continue;
        }
        let q: Vec<f64> = real.iter().map(|&c| teacher[batch.idx(b, t, c)]).collect();
        let sum: f64 = q.iter().sum();
        if sum.is_nan() || sum.is_infinite() || sum <= 0.0 {
            continue;
        }
        let q: Vec<f64> = q.iter().map(|v| v / sum.max(1e-9)).collect();
        let q_tau: Vec<f64> = q.iter().map(|v| v.max(1e-9).powf(1.0 / tau)).collect();
        let z: f64 = q_tau.iter().sum();
        let q_tau: Vec<f64> = q_tau.iter().map(|v| v / z).collect();
        let scaled: Vec<f64> = row(student, batch, b, t).iter().map(|v| v / tau).collect();
        let log_p = ref_log_softmax(&scaled, &real);
        let kl: f64 = q_tau.iter().zip(&log_p).map(|(q, (_, lp))| q * (q.max(1e-9).ln() - lp)).sum();
        terms.push(kl);
    }
    if terms.is_empty() { 0.0 } else { terms.iter().sum::<f64>() / terms.len() as f64 }
}

fn all_real_steps(batch: &Batch) -> Vec<(usize, usize)> {
    let mut out = vec![];
    for b in 0..batch.dims[0] {
        for t in 0..batch.dims[1] {
            if batch.is_step(b, t) {
                out.push((b, t));
            }
        }
    }
    out
}

/// Ragged batch: row 0 has 2 real steps (3 candidates, then a single candidate) and a padded step;
/// row 1 has 3 real steps with 4, 2 and 3 candidates.
fn ragged() -> Batch {
    Batch::ragged(&[&[3, 1], &[4, 2, 3]], 3, 4, &[&[2, 0], &[3, 1, 0]])
}

/// `ragged()` plus a third row with no real step at all.
fn ragged_with_empty_row() -> Batch {
    Batch::ragged(&[&[3, 1], &[4, 2, 3], &[]], 3, 4, &[&[2, 0], &[3, 1, 0], &[]])
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------------

#[test]
fn ce_single_step_hand_value() {
    // logits [1, 2, 3 | padded 9], target 2: CE = ln(1 + e^-1 + e^-2).
    let batch = Batch::ragged(&[&[3]], 1, 4, &[&[2]]);
    let logits = floats::<Cpu, 3>(&[1.0, 2.0, 3.0, 9.0], [1, 1, 4], DType::F32);
    let got = value(masked_cross_entropy(logits, &batch.steps()).unwrap());
    let want = (1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln();
    assert_close(got, want, 1e-6, "CE");
    assert_close(want, 0.407_605_964_4, 1e-9, "hand constant");
}

#[test]
fn ce_matches_loop_on_ragged_batch() {
    let batch = ragged();
    let logits = noise(3 * 4 * 2, 1.0);
    let got = value(masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &batch.steps()).unwrap());
    let want = ref_ce(&logits, &batch);
    assert_close(got, want, 1e-5, "ragged CE");
    // A single-candidate step costs nothing, so the mean is over 5 supervised steps, one of them 0.
    assert_eq!(batch.supervised().len(), 5);
}

#[test]
fn ce_is_a_per_step_mean_pooled_over_the_batch() {
    // Row 0: one step, row 1: three steps. A per-sequence mean would weigh row 0's step 3x more.
    let batch = Batch::ragged(&[&[2], &[2, 2, 2]], 3, 2, &[&[0], &[0, 0, 0]]);
    let mut logits = vec![0.0; 2 * 3 * 2];
    logits[batch.idx(0, 0, 1)] = 3.0; // row 0: a confident mistake
    let got = value(masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &batch.steps()).unwrap());
    let bad = (1.0 + 3.0f64.exp()).ln();
    let even = 2.0f64.ln();
    assert_close(got, (bad + 3.0 * even) / 4.0, 1e-6, "pooled per-step mean");
}

#[test]
fn padded_candidates_get_exactly_zero_probability() {
    let batch = ragged();
    let mut logits = noise(24, 2.0);
    // Padded candidates with huge, infinite and NaN scores must still get nothing.
    logits[batch.idx(0, 0, 3)] = 1e30;
    logits[batch.idx(1, 1, 2)] = f64::INFINITY;
    logits[batch.idx(1, 1, 3)] = f64::NAN;
    let steps = batch.steps::<Cpu>();
    let probs = host(masked_softmax(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), steps.candidate_mask().clone()));
    let log_probs =
        host(masked_log_softmax(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), steps.candidate_mask().clone()));
    for b in 0..2 {
        for t in 0..3 {
            let real = batch.real(b, t);
            let mut sum = 0.0;
            for c in 0..4 {
                let i = batch.idx(b, t, c);
                if real.contains(&c) {
                    assert!(probs[i] > 0.0 && probs[i].is_finite());
                    sum += probs[i];
                } else {
                    assert_eq!(probs[i], 0.0, "padded probability at ({b},{t},{c})");
                    assert_eq!(log_probs[i], MASKED_LOG_PROB, "padded log-probability placeholder");
                }
            }
            if real.is_empty() {
                assert_eq!(sum, 0.0);
            } else {
                assert_close(sum, 1.0, 1e-6, "real candidates sum to one");
                for (c, lp) in ref_log_softmax(row(&logits, &batch, b, t), &real) {
                    assert_close(log_probs[batch.idx(b, t, c)], lp, 1e-5, "log-softmax");
                }
            }
        }
    }
}

#[test]
fn a_row_without_real_steps_does_not_change_the_loss() {
    let full = ragged_with_empty_row();
    let short = ragged();
    let mut logits = noise(36, 3.0);
    let mut pred = noise(36, 4.0);
    // Garbage in the empty row, including NaN, must not leak in.
    for i in 24..36 {
        logits[i] = f64::NAN;
        pred[i] = f64::INFINITY;
    }
    let seconds: Vec<f64> = (0..9).map(|i| 10.0 + 7.0 * i as f64).collect();
    let norm = TimeNormalization::new(3.0, 1.2).unwrap();

    let ce_full = masked_cross_entropy(floats::<Cpu, 3>(&logits, full.dims, DType::F32), &full.steps()).unwrap();
    let ce_short =
        masked_cross_entropy(floats::<Cpu, 3>(&logits[..24], short.dims, DType::F32), &short.steps()).unwrap();
    assert_close(value(ce_full), value(ce_short), 1e-6, "CE with and without the empty row");

    let time_full = hoser_time_loss(
        floats::<Cpu, 3>(&pred, full.dims, DType::F32),
        floats::<Cpu, 2>(&seconds, [3, 3], DType::F32),
        &full.steps(),
        norm,
    )
    .unwrap();
    let time_short = hoser_time_loss(
        floats::<Cpu, 3>(&pred[..24], short.dims, DType::F32),
        floats::<Cpu, 2>(&seconds[..6], [2, 3], DType::F32),
        &short.steps(),
        norm,
    )
    .unwrap();
    assert_close(value(time_full), value(time_short), 1e-6, "time loss with and without the empty row");
}

#[test]
fn targets_that_are_not_real_candidates_are_excluded() {
    // Step 0 is fine; step 1 targets a padded slot; step 2 uses the -100 ignore index; step 3 is
    // beyond C; step 4 is real but has no candidate at all.
    let batch = Batch::ragged(&[&[2, 2, 2, 2, 0]], 5, 3, &[&[1, 2, -100, 7, 0]]);
    let logits = noise(15, 5.0);
    let steps = batch.steps::<Cpu>();
    let supervised: Vec<bool> = steps.supervised().clone().into_data().iter::<bool>().collect();
    assert_eq!(supervised, [true, false, false, false, false]);
    let active: Vec<bool> = steps.active().clone().into_data().iter::<bool>().collect();
    assert_eq!(active, [true, true, true, true, false]);
    let got = value(masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &steps).unwrap());
    assert_close(got, ref_ce(&logits, &batch), 1e-6, "CE over the one valid step");
}

#[test]
fn masks_from_lengths_and_float_masks_agree_with_bool_masks() {
    let batch = ragged();
    let dev = Default::default();
    let trace_len = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![2i64, 3], [2]), &dev);
    let cand_len = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(vec![3i64, 1, 0, 4, 2, 3], [2, 3]), &dev);
    let from_lengths =
        CandidateSteps::from_lengths(trace_len, cand_len, ints::<Cpu>(&batch.target, [2, 3]), 4).unwrap();
    let explicit = batch.steps::<Cpu>();
    let as_vec = |m: &Tensor<Cpu, 3, Bool>| m.clone().into_data().iter::<bool>().collect::<Vec<_>>();
    assert_eq!(as_vec(from_lengths.candidate_mask()), as_vec(explicit.candidate_mask()));
    assert_eq!(
        from_lengths.step_mask().clone().into_data().iter::<bool>().collect::<Vec<_>>(),
        explicit.step_mask().clone().into_data().iter::<bool>().collect::<Vec<_>>()
    );

    let to_f = |v: &[bool]| v.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
    let float_steps = CandidateSteps::<Cpu>::new(
        floats::<Cpu, 3>(&to_f(&batch.cand), batch.dims, DType::F32),
        floats::<Cpu, 2>(&to_f(&batch.step), [2, 3], DType::F32),
        ints::<Cpu>(&batch.target, [2, 3]),
    )
    .unwrap();
    let logits = noise(24, 6.0);
    let a = masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &float_steps).unwrap();
    let b = masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &from_lengths).unwrap();
    assert_close(value(a), ref_ce(&logits, &batch), 1e-5, "float masks");
    assert_close(value(b), ref_ce(&logits, &batch), 1e-5, "masks from lengths");
}

#[test]
fn batch_without_real_steps_gives_zero_loss_and_zero_gradient() {
    let batch = Batch::ragged(&[&[], &[]], 2, 3, &[&[], &[]]);
    let logits = floats::<Ad, 3>(&noise(12, 7.0), batch.dims, DType::F32).require_grad();
    let pred = floats::<Ad, 3>(&noise(12, 8.0), batch.dims, DType::F32).require_grad();
    let teacher = floats::<Ad, 3>(&[0.25; 12], batch.dims, DType::F32);
    let seconds = floats::<Ad, 2>(&[30.0; 4], [2, 2], DType::F32);
    let steps = batch.steps::<Ad>();
    let norm = TimeNormalization::new(3.0, 1.0).unwrap();

    let ce = masked_cross_entropy(logits.clone(), &steps).unwrap();
    let kl = distillation_kl(logits.clone(), teacher, &steps, 2.0).unwrap();
    let time = hoser_time_loss(pred.clone(), seconds, &steps, norm).unwrap();
    assert_eq!(value(ce.clone()), 0.0);
    assert_eq!(value(kl.clone()), 0.0);
    assert_eq!(value(time.clone()), 0.0);
    let grads = ce.add(kl).add(time).backward();
    assert!(host(logits.grad(&grads).unwrap()).iter().all(|&g| g == 0.0));
    assert!(host(pred.grad(&grads).unwrap()).iter().all(|&g| g == 0.0));
}

// ---------------------------------------------------------------------------------------------
// Time loss and time metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn time_loss_hand_value() {
    // One row, two steps with targets 1 and 0. μ = 3, σ = 2.
    // Step 0: ŷ = 0.5·2 + 3 = 4, y = ln(1 + 99) = ln 100 ≈ 4.60517, |ŷ − y| / y.
    // Step 1: ŷ = −1·2 + 3 = 1, y = ln(1 + 0) = 0 → denominator max(0, 1) = 1, term = 1.
    let batch = Batch::ragged(&[&[2, 2]], 2, 2, &[&[1, 0]]);
    let pred = [9.0, 0.5, -1.0, 9.0];
    let seconds = [99.0, 0.0];
    let norm = TimeNormalization::new(3.0, 2.0).unwrap();
    let got = value(
        hoser_time_loss(
            floats::<Cpu, 3>(&pred, batch.dims, DType::F32),
            floats::<Cpu, 2>(&seconds, [1, 2], DType::F32),
            &batch.steps(),
            norm,
        )
        .unwrap(),
    );
    let ln100 = 100f64.ln();
    let want = ((ln100 - 4.0) / ln100 + 1.0) / 2.0;
    assert_close(got, want, 1e-6, "time loss");
    assert_close(want, ref_time_loss(&pred, &seconds, &batch, 3.0, 2.0), 1e-12, "loop agrees");
}

#[test]
fn time_loss_matches_loop_on_ragged_batch() {
    let batch = ragged();
    let pred = noise(24, 9.0);
    let seconds: Vec<f64> = noise(6, 10.0).iter().map(|v| (v.abs() * 60.0).round()).collect();
    let norm = TimeNormalization::new(3.4, 0.9).unwrap();
    let got = value(
        hoser_time_loss(
            floats::<Cpu, 3>(&pred, batch.dims, DType::F32),
            floats::<Cpu, 2>(&seconds, [2, 3], DType::F32),
            &batch.steps(),
            norm,
        )
        .unwrap(),
    );
    assert_close(got, ref_time_loss(&pred, &seconds, &batch, 3.4, 0.9), 1e-5, "ragged time loss");
}

#[test]
fn time_error_sums_match_loop() {
    let batch = ragged();
    let pred = noise(24, 11.0);
    let mut seconds: Vec<f64> = noise(6, 12.0).iter().map(|v| (v.abs() * 40.0).round() + 1.0).collect();
    seconds[1] = 0.0; // a zero-second label: MAPE floors the denominator at 1 s
    let (mu, sigma) = (3.0, 0.8);
    let sums = time_error(
        floats::<Cpu, 3>(&pred, batch.dims, DType::F64),
        floats::<Cpu, 2>(&seconds, [2, 3], DType::F64),
        &batch.steps(),
        TimeNormalization::new(mu, sigma).unwrap(),
    )
    .unwrap();

    let (mut abs, mut rel, mut hoser) = (0.0, 0.0, 0.0);
    let steps = batch.supervised();
    for &(b, t) in &steps {
        let y_hat = pred[batch.idx(b, t, batch.tgt(b, t) as usize)] * sigma + mu;
        let s = seconds[b * 3 + t];
        let err = (y_hat.exp() - 1.0 - s).abs();
        abs += err;
        rel += err / s.max(1.0);
        hoser += (y_hat - s.ln_1p()).abs() / s.ln_1p().max(1.0);
    }
    assert_eq!(sums.count, steps.len() as u64);
    assert_close(sums.abs_error_seconds, abs, 1e-10, "abs error");
    assert_close(sums.relative_error_seconds, rel, 1e-10, "relative error");
    assert_close(sums.hoser_log1p_relative_error, hoser, 1e-10, "HOSER relative error");
    assert_close(sums.mae_seconds().unwrap(), abs / steps.len() as f64, 1e-10, "MAE");
    assert_close(sums.mape().unwrap(), rel / steps.len() as f64, 1e-10, "MAPE");
    assert_close(sums.hoser_time_mape().unwrap(), hoser / steps.len() as f64, 1e-10, "HOSER MAPE");

    let mut epoch = TimeErrorSums::default();
    assert_eq!(epoch.mae_seconds(), None);
    epoch += sums;
    epoch += sums;
    assert_eq!(epoch.count, 2 * sums.count);
    assert_close(epoch.mape().unwrap(), sums.mape().unwrap(), 1e-12, "accumulated MAPE");
}

#[test]
fn time_normalization_fit_and_round_trip() {
    let durations = [0.0, 9.0, 99.0, 30.0];
    let norm = TimeNormalization::fit(durations).unwrap();
    let logs: Vec<f64> = durations.iter().map(|d: &f64| d.ln_1p()).collect();
    let mean = logs.iter().sum::<f64>() / 4.0;
    let std = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
    assert_close(norm.mean, mean, 1e-12, "mean");
    assert_close(norm.std, std, 1e-12, "population std");
    assert_close(norm.denormalize(norm.normalize(42.0)), 42.0, 1e-12, "round trip");
    assert_eq!(TimeNormalization::fit([]), Err(SequenceLossError::NoDurations));
    assert!(matches!(TimeNormalization::new(1.0, 0.0), Err(SequenceLossError::TimeNormalization { .. })));
    assert!(matches!(TimeNormalization::new(f64::NAN, 1.0), Err(SequenceLossError::TimeNormalization { .. })));
}

// ---------------------------------------------------------------------------------------------
// Distillation KL
// ---------------------------------------------------------------------------------------------

#[test]
fn kl_hand_value() {
    // One step, candidates 0..3 real, slot 3 padded (with teacher mass 0.4 that must be dropped).
    // τ = 2. Teacher restricted: [0.5, 0.3, 0.2] / 1.0; tempered: sqrt, renormalised.
    let batch = Batch::ragged(&[&[3]], 1, 4, &[&[0]]);
    let student = [1.0, 0.0, -1.0, 5.0];
    let teacher = [0.5, 0.3, 0.2, 0.4];
    let got = value(
        distillation_kl(
            floats::<Cpu, 3>(&student, batch.dims, DType::F32),
            floats::<Cpu, 3>(&teacher, batch.dims, DType::F32),
            &batch.steps(),
            2.0,
        )
        .unwrap(),
    );
    let s: [f64; 3] = [0.5f64.sqrt(), 0.3f64.sqrt(), 0.2f64.sqrt()];
    let z: f64 = s.iter().sum();
    let q: Vec<f64> = s.iter().map(|v| v / z).collect();
    let e: [f64; 3] = [0.5f64.exp(), 1.0, (-0.5f64).exp()];
    let ze: f64 = e.iter().sum();
    let want: f64 = (0..3).map(|i| q[i] * (q[i].ln() - (e[i] / ze).ln())).sum();
    assert_close(got, want, 1e-6, "KL hand value (no τ² factor)");
    assert_close(want, ref_kl(&student, &teacher, &batch, &[(0, 0)], 2.0), 1e-12, "loop agrees");
}

#[test]
fn kl_matches_loop_on_ragged_batch() {
    let batch = ragged();
    let student = noise(24, 13.0);
    let teacher: Vec<f64> = noise(24, 14.0).iter().map(|v| v.abs() + 0.01).collect();
    for tau in [1.0, 2.0, 0.5] {
        let got = value(
            distillation_kl(
                floats::<Cpu, 3>(&student, batch.dims, DType::F32),
                floats::<Cpu, 3>(&teacher, batch.dims, DType::F32),
                &batch.steps(),
                tau,
            )
            .unwrap(),
        );
        let want = ref_kl(&student, &teacher, &batch, &all_real_steps(&batch), tau);
        assert_close(got, want, 1e-5, &format!("KL at τ = {tau}"));
    }
}

/// The host-prepared teacher of `batch` over `steps` (teacher values read at the real slots).
fn tempered(teacher: &[f64], batch: &Batch, steps: &[(usize, usize)], tau: f64) -> TemperedTeacher {
    let mut t = TemperedTeacher::new(batch.dims);
    for &(b, s) in steps {
        let probs: Vec<f32> = batch.real(b, s).iter().map(|&c| teacher[batch.idx(b, s, c)] as f32).collect();
        t.push(b, s, &probs, tau);
    }
    t
}

#[test]
fn host_tempered_kl_equals_the_device_kl_in_value_and_gradient() {
    let batch = ragged_with_empty_row();
    let student = noise(36, 33.0);
    let teacher: Vec<f64> = noise(36, 34.0).iter().map(|v| v.abs() + 0.05).collect();
    let mask = |b: &Batch| b.steps::<Cpu>().candidate_mask().clone();
    for tau in [1.0, 2.0, 0.7] {
        let steps = all_real_steps(&batch);
        let prepared = tempered(&teacher, &batch, &steps, tau);
        assert_eq!(prepared.steps(), steps.len());
        let got = value(
            distillation_kl_tempered(
                floats::<Cpu, 3>(&student, batch.dims, DType::F64),
                &prepared,
                prepared.probs::<Cpu>(&Default::default()),
                mask(&batch),
                tau,
            )
            .unwrap(),
        );
        assert_close(got, ref_kl(&student, &teacher, &batch, &steps, tau), 1e-6, &format!("τ = {tau}"));
        // Only the last real step of each row (the fork's choice) through the same path.
        let last = [(0, 1), (1, 2)];
        let prepared_last = tempered(&teacher, &batch, &last, tau);
        let got_last = value(
            distillation_kl_tempered(
                floats::<Cpu, 3>(&student, batch.dims, DType::F64),
                &prepared_last,
                prepared_last.probs::<Cpu>(&Default::default()),
                mask(&batch),
                tau,
            )
            .unwrap(),
        );
        assert_close(got_last, ref_kl(&student, &teacher, &batch, &last, tau), 1e-6, "last steps");
        check_gradient(
            &student,
            batch.dims,
            |x| {
                let m = batch.steps::<Ad>().candidate_mask().clone();
                distillation_kl_tempered(x, &prepared, prepared.probs::<Ad>(&Default::default()), m, tau).unwrap()
            },
            |x| {
                value(
                    distillation_kl(
                        floats::<Cpu, 3>(x, batch.dims, DType::F64),
                        floats::<Cpu, 3>(&teacher, batch.dims, DType::F64),
                        &batch.steps(),
                        tau,
                    )
                    .unwrap(),
                )
            },
        );
    }
    // Nothing distilled: 0, and a zero-mass or empty step is skipped.
    let mut none = TemperedTeacher::new(batch.dims);
    assert!(!none.push(0, 0, &[0.0, 0.0, 0.0], 2.0));
    assert!(!none.push(0, 2, &[], 2.0));
    let zero = distillation_kl_tempered(
        floats::<Cpu, 3>(&student, batch.dims, DType::F64),
        &none,
        none.probs::<Cpu>(&Default::default()),
        mask(&batch),
        2.0,
    )
    .unwrap();
    assert_eq!(value(zero), 0.0);
}

#[test]
fn kl_is_zero_when_student_equals_teacher() {
    let batch = ragged();
    let logits = noise(24, 15.0);
    let steps = batch.steps::<Cpu>();
    let teacher = masked_softmax(floats::<Cpu, 3>(&logits, batch.dims, DType::F64), steps.candidate_mask().clone());
    for tau in [1.0, 2.0, 3.5] {
        let kl = value(
            distillation_kl(floats::<Cpu, 3>(&logits, batch.dims, DType::F64), teacher.clone(), &steps, tau).unwrap(),
        );
        assert!(kl.abs() < 1e-12, "KL(p ‖ p) at τ = {tau} is {kl}");
    }
}

#[test]
fn kl_drops_teacher_mass_on_padded_candidates_and_renormalises() {
    let batch = Batch::ragged(&[&[2]], 1, 3, &[&[0]]);
    let student = [0.3, -0.7, 2.0];
    let run = |teacher: [f64; 3]| {
        value(
            distillation_kl(
                floats::<Cpu, 3>(&student, batch.dims, DType::F64),
                floats::<Cpu, 3>(&teacher, batch.dims, DType::F64),
                &batch.steps(),
                2.0,
            )
            .unwrap(),
        )
    };
    let leaky = run([0.2, 0.2, 0.6]);
    let clean = run([0.5, 0.5, 0.0]);
    assert_close(leaky, clean, 1e-12, "padded teacher mass is dropped");
    // And it is the KL against the renormalised [0.5, 0.5] teacher.
    let e = [0.15f64.exp(), (-0.35f64).exp()];
    let z = e[0] + e[1];
    let want = 0.5 * (0.5f64.ln() - (e[0] / z).ln()) + 0.5 * (0.5f64.ln() - (e[1] / z).ln());
    assert_close(clean, want, 1e-12, "renormalised value");
}

#[test]
fn kl_skips_steps_where_the_teacher_has_no_usable_mass() {
    let batch = ragged();
    let student = noise(24, 16.0);
    let mut teacher: Vec<f64> = noise(24, 17.0).iter().map(|v| v.abs() + 0.01).collect();
    // (0, 0): all teacher mass on the padded slot; (1, 1): a NaN on a real candidate.
    for c in 0..3 {
        teacher[batch.idx(0, 0, c)] = 0.0;
    }
    teacher[batch.idx(0, 0, 3)] = 1.0;
    teacher[batch.idx(1, 1, 0)] = f64::NAN;
    let got = value(
        distillation_kl(
            floats::<Cpu, 3>(&student, batch.dims, DType::F64),
            floats::<Cpu, 3>(&teacher, batch.dims, DType::F64),
            &batch.steps(),
            2.0,
        )
        .unwrap(),
    );
    let kept = [(0, 1), (1, 0), (1, 2)];
    assert_close(got, ref_kl(&student, &teacher, &batch, &kept, 2.0), 1e-12, "skipped steps");
    assert_close(got, ref_kl(&student, &teacher, &batch, &all_real_steps(&batch), 2.0), 1e-12, "loop skips too");
}

#[test]
fn last_step_only_picks_each_rows_last_real_step() {
    let batch = ragged_with_empty_row();
    let steps = batch.steps::<Cpu>().last_step_only();
    let mask: Vec<bool> = steps.step_mask().clone().into_data().iter::<bool>().collect();
    assert_eq!(mask, [false, true, false, false, false, true, false, false, false]);

    let student = noise(36, 18.0);
    let teacher: Vec<f64> = noise(36, 19.0).iter().map(|v| v.abs() + 0.01).collect();
    let got = value(
        distillation_kl(
            floats::<Cpu, 3>(&student, batch.dims, DType::F64),
            floats::<Cpu, 3>(&teacher, batch.dims, DType::F64),
            &steps,
            2.0,
        )
        .unwrap(),
    );
    assert_close(got, ref_kl(&student, &teacher, &batch, &[(0, 1), (1, 2)], 2.0), 1e-12, "last-step KL");
}

// ---------------------------------------------------------------------------------------------
// Accuracy
// ---------------------------------------------------------------------------------------------

#[test]
fn accuracy_counts() {
    let batch = ragged_with_empty_row();
    let mut logits = vec![0.0; 36];
    let mut set = |b, t, c, v| logits[batch.idx(b, t, c)] = v;
    // (0,0) target 2: correct, even though the padded slot 3 scores higher.
    set(0, 0, 2, 1.0);
    set(0, 0, 3, 50.0);
    // (0,1) target 0, single candidate: correct.
    // (1,0) target 3: wrong (slot 1 wins).
    set(1, 0, 1, 2.0);
    set(1, 0, 3, 1.0);
    // (1,1) target 1: correct.
    set(1, 1, 1, 0.5);
    // (1,2) target 0: ties go to the lowest index, so correct.
    // Padded step (0,2) and the empty row are not counted.
    let acc = next_step_accuracy(floats::<Cpu, 3>(&logits, batch.dims, DType::F32), &batch.steps()).unwrap();
    assert_eq!(acc, NextStepAccuracy { correct: 4, total: 5 });
    assert_eq!(acc.accuracy(), Some(0.8));

    let mut epoch = NextStepAccuracy::default();
    assert_eq!(epoch.accuracy(), None);
    epoch += acc;
    epoch += NextStepAccuracy { correct: 1, total: 5 };
    assert_eq!(epoch.accuracy(), Some(0.5));
}

// ---------------------------------------------------------------------------------------------
// Gradients: central differences against autodiff, in f64.
// ---------------------------------------------------------------------------------------------

/// Checks `d loss / d x` from autodiff against central differences of the same function evaluated
/// on the plain backend, for every element of `x`.
fn check_gradient(
    x: &[f64],
    dims: [usize; 3],
    loss_ad: impl Fn(Tensor<Ad, 3>) -> Tensor<Ad, 1>,
    loss: impl Fn(&[f64]) -> f64,
) {
    let input = floats::<Ad, 3>(x, dims, DType::F64).require_grad();
    let grads = loss_ad(input.clone()).backward();
    let analytic = host(input.grad(&grads).unwrap());
    let h = 1e-6;
    for i in 0..x.len() {
        let mut plus = x.to_vec();
        let mut minus = x.to_vec();
        plus[i] += h;
        minus[i] -= h;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
        assert!(
            (analytic[i] - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "element {i}: autodiff {}, central difference {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn ce_gradient_matches_central_differences() {
    let batch = ragged_with_empty_row();
    let logits = noise(36, 20.0);
    check_gradient(
        &logits,
        batch.dims,
        |x| masked_cross_entropy(x, &batch.steps()).unwrap(),
        |x| value(masked_cross_entropy(floats::<Cpu, 3>(x, batch.dims, DType::F64), &batch.steps()).unwrap()),
    );
}

#[test]
fn time_loss_gradient_matches_central_differences() {
    let batch = ragged_with_empty_row();
    let pred = noise(36, 21.0);
    let seconds: Vec<f64> = noise(9, 22.0).iter().map(|v| (v.abs() * 50.0).round()).collect();
    let norm = TimeNormalization::new(3.2, 1.1).unwrap();
    check_gradient(
        &pred,
        batch.dims,
        |x| hoser_time_loss(x, floats::<Ad, 2>(&seconds, [3, 3], DType::F64), &batch.steps(), norm).unwrap(),
        |x| {
            value(
                hoser_time_loss(
                    floats::<Cpu, 3>(x, batch.dims, DType::F64),
                    floats::<Cpu, 2>(&seconds, [3, 3], DType::F64),
                    &batch.steps(),
                    norm,
                )
                .unwrap(),
            )
        },
    );
}

#[test]
fn kl_gradient_matches_central_differences() {
    let batch = ragged_with_empty_row();
    let student = noise(36, 23.0);
    let teacher: Vec<f64> = noise(36, 24.0).iter().map(|v| v.abs() + 0.05).collect();
    for tau in [1.0, 2.0] {
        check_gradient(
            &student,
            batch.dims,
            |x| distillation_kl(x, floats::<Ad, 3>(&teacher, batch.dims, DType::F64), &batch.steps(), tau).unwrap(),
            |x| {
                value(
                    distillation_kl(
                        floats::<Cpu, 3>(x, batch.dims, DType::F64),
                        floats::<Cpu, 3>(&teacher, batch.dims, DType::F64),
                        &batch.steps(),
                        tau,
                    )
                    .unwrap(),
                )
            },
        );
    }
}

#[test]
fn gradients_stay_finite_and_zero_at_masked_positions_even_for_nan_inputs() {
    let batch = ragged_with_empty_row();
    let mut logits = noise(36, 25.0);
    let mut pred = noise(36, 26.0);
    let mut teacher: Vec<f64> = noise(36, 27.0).iter().map(|v| v.abs() + 0.05).collect();
    let real_slot = |b: usize, t: usize, c: usize| batch.is_step(b, t) && batch.real(b, t).contains(&c);
    for b in 0..3 {
        for t in 0..3 {
            for c in 0..4 {
                if !real_slot(b, t, c) {
                    let i = batch.idx(b, t, c);
                    logits[i] = if (b + c) % 2 == 0 { f64::NAN } else { f64::INFINITY };
                    pred[i] = f64::NAN;
                    teacher[i] = f64::NAN;
                }
            }
        }
    }
    let seconds = vec![f64::NAN; 9]
        .into_iter()
        .enumerate()
        .map(|(i, v)| if batch.step[i] { 20.0 + i as f64 } else { v })
        .collect::<Vec<_>>();
    let norm = TimeNormalization::new(3.0, 1.0).unwrap();
    let steps = batch.steps::<Ad>();

    let x = floats::<Ad, 3>(&logits, batch.dims, DType::F32).require_grad();
    let p = floats::<Ad, 3>(&pred, batch.dims, DType::F32).require_grad();
    let q = floats::<Ad, 3>(&teacher, batch.dims, DType::F32);
    let ce = masked_cross_entropy(x.clone(), &steps).unwrap();
    let kl = distillation_kl(x.clone(), q, &steps, 2.0).unwrap();
    let time = hoser_time_loss(p.clone(), floats::<Ad, 2>(&seconds, [3, 3], DType::F32), &steps, norm).unwrap();
    let total = ce.add(kl).add(time);
    assert!(value(total.clone()).is_finite());
    let grads = total.backward();
    let gx = host(x.grad(&grads).unwrap());
    let gp = host(p.grad(&grads).unwrap());
    for b in 0..3 {
        for t in 0..3 {
            for c in 0..4 {
                let i = batch.idx(b, t, c);
                assert!(gx[i].is_finite() && gp[i].is_finite(), "finite gradient at ({b},{t},{c})");
                if !real_slot(b, t, c) {
                    assert_eq!(gx[i], 0.0, "no logit gradient at masked ({b},{t},{c})");
                    assert_eq!(gp[i], 0.0, "no time gradient at masked ({b},{t},{c})");
                }
            }
        }
    }
    assert!(gx.iter().any(|&g| g != 0.0), "real positions still learn");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_inputs_are_errors() {
    let batch = ragged();
    let steps = batch.steps::<Cpu>();
    let wrong = floats::<Cpu, 3>(&[0.0; 18], [2, 3, 3], DType::F32);
    let err = masked_cross_entropy(wrong, &steps).unwrap_err();
    assert_eq!(err, SequenceLossError::Shape { what: "logits", expected: vec![2, 3, 4], got: vec![2, 3, 3] });
    assert_eq!(err.to_string(), "logits: expected shape [2, 3, 4], got [2, 3, 3]");

    let logits = || floats::<Cpu, 3>(&[0.0; 24], [2, 3, 4], DType::F32);
    for tau in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let is_temperature_error =
            matches!(distillation_kl(logits(), logits(), &steps, tau), Err(SequenceLossError::Temperature(_)));
        assert!(is_temperature_error, "τ = {tau}");
    }

    let dev = Default::default();
    let bad_step = Tensor::<Cpu, 2, Bool>::from_data(TensorData::new(vec![true; 4], [2, 2]), &dev);
    let cand = steps.candidate_mask().clone();
    assert!(matches!(
        CandidateSteps::new(cand, bad_step, ints::<Cpu>(&batch.target, [2, 3])),
        Err(SequenceLossError::Shape { what: "step mask", .. })
    ));

    let bad_norm = TimeNormalization { mean: 0.0, std: -1.0 };
    let seconds = floats::<Cpu, 2>(&[1.0; 6], [2, 3], DType::F32);
    assert!(matches!(
        hoser_time_loss(logits(), seconds, &steps, bad_norm),
        Err(SequenceLossError::TimeNormalization { .. })
    ));
}

#[test]
fn half_precision_keeps_padding_at_zero_and_losses_finite() {
    let batch = ragged();
    let mut logits = noise(24, 28.0);
    logits[batch.idx(0, 0, 3)] = 6.0e4;
    let steps = batch.steps::<Cpu>();
    let probs = host(masked_softmax(floats::<Cpu, 3>(&logits, batch.dims, DType::F16), steps.candidate_mask().clone()));
    for (i, &m) in batch.cand.iter().enumerate() {
        if !m {
            assert_eq!(probs[i], 0.0);
        }
    }
    let ce = value(masked_cross_entropy(floats::<Cpu, 3>(&logits, batch.dims, DType::F16), &steps).unwrap());
    assert_close(ce, ref_ce(&logits, &batch), 1e-2, "f16 CE");
    let teacher: Vec<f64> = noise(24, 29.0).iter().map(|v| v.abs() + 0.01).collect();
    let kl = distillation_kl(
        floats::<Cpu, 3>(&logits, batch.dims, DType::F16),
        floats::<Cpu, 3>(&teacher, batch.dims, DType::F16),
        &steps,
        2.0,
    )
    .unwrap();
    assert_close(value(kl), ref_kl(&logits, &teacher, &batch, &all_real_steps(&batch), 2.0), 2e-2, "f16 KL");
}
