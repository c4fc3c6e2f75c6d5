//! Sequence losses and metrics for next-road prediction over variable-length candidate sets
//! (HOSER-style navigators and LM-TAD distillation).
//!
//! # Batch layout
//!
//! Every function works on padded batches:
//!
//! - scores (`logits`, `time_pred`) of shape `[B, T, C]`: one row of up to `C` candidate next road
//!   segments per step;
//! - a candidate mask `[B, T, C]` (`true` = a real candidate; a bool tensor or a 0/1 float tensor, see
//!   [`IntoMask`]);
//! - a step mask `[B, T]` (`true` = a real prediction step);
//! - the target `[B, T]` (int): the index of the true next road inside that step's candidate set.
//!
//! These three are bundled once per batch in [`CandidateSteps`], which also derives which steps take
//! part in each loss:
//!
//! - an **active** step is a real step with at least one real candidate;
//! - a **supervised** step is an active step whose target lies in `0..C` and points at a real
//!   candidate. The cross-entropy, the time loss and both metrics average over supervised steps only.
//!   With upstream HOSER data every real step is supervised (the true next road is always one of the
//!   successors), so this equals HOSER's selection `t < trace_len`.
//!
//! All means are **per step, pooled over the whole batch** (`Σ_steps / #steps`), exactly like
//! HOSER's `F.cross_entropy` on the flattened real steps: a long trajectory weighs more than a short
//! one, and a row with no real step simply contributes nothing. When a batch has no step that
//! qualifies, a loss is `0` and its gradient is exactly zero everywhere.
//!
//! # Padding never produces NaN
//!
//! Padded candidates get **exactly zero** probability without ever materialising `-inf`: before the
//! softmax the padded scores are replaced by a detached finite value no larger than any real score of
//! the row, the exponentials at padded positions are then masked to `0.0`, and the shift used for a
//! stable log-sum-exp is detached (it cancels analytically). Scores of excluded steps are replaced by
//! `0.0` with `mask_fill`, whose gradient is zero there. So even NaN or infinite scores at padded
//! positions or padded steps cannot leak into the loss or its gradient, on any float precision
//! (f16 included, where a `-1e9` fill would overflow to `-inf`).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Finite placeholder that [`masked_log_softmax`] writes at padded candidates, standing in for
/// `log 0 = -inf`.
///
/// It is a placeholder, not a probability: the matching probability is exactly `0.0`. It is finite in
/// every float precision (f16 included), so `0 · MASKED_LOG_PROB == 0` and no NaN can appear.
pub const MASKED_LOG_PROB: f64 = -1.0e4;

/// Floor the reference distillation hook applies to teacher probabilities before tempering
/// (`clamp(q, min=1e-9)`); also its floor for the renormalising sum and for `log q_τ`.
pub const TEACHER_PROB_FLOOR: f64 = 1.0e-9;

/// Smallest denominator, in seconds, of the seconds-space relative error in [`TimeErrorSums`]:
/// `|t̂ − t| / max(t, 1 s)`. It keeps zero-second labels finite (mirroring HOSER's `max(y, 1)` in
/// log1p space).
pub const MAPE_MIN_SECONDS: f64 = 1.0;

/// Errors from malformed inputs to the sequence losses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequenceLossError {
    /// A tensor's shape does not match the batch layout `[B, T, C]` / `[B, T]`.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which argument was wrong.
        what: &'static str,
        /// The shape implied by the other inputs.
        expected: Vec<usize>,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A distillation temperature that is not finite and strictly positive.
    #[error("distillation temperature must be finite and > 0, got {0}")]
    Temperature(f64),
    /// A time normalisation whose mean is not finite or whose standard deviation is not finite and > 0.
    #[error("time normalisation needs a finite mean and a finite std > 0, got mean {mean}, std {std}")]
    TimeNormalization {
        /// The mean of log1p(seconds) that was given.
        mean: f64,
        /// The standard deviation of log1p(seconds) that was given.
        std: f64,
    },
    /// No durations were given to fit a time normalisation.
    #[error("cannot fit a time normalisation on zero durations")]
    NoDurations,
}

/// A mask given either as a bool tensor or as a 0/1 float tensor.
///
/// Floats are read as `value > 0.5` (robust to f16/bf16 rounding of `1.0`; NaN reads as `false`).
pub trait IntoMask<B: Backend, const D: usize> {
    /// Converts into a bool mask, `true` = real.
    fn into_mask(self) -> Tensor<B, D, Bool>;
}

impl<B: Backend, const D: usize> IntoMask<B, D> for Tensor<B, D, Bool> {
    fn into_mask(self) -> Tensor<B, D, Bool> {
        self
    }
}

impl<B: Backend, const D: usize> IntoMask<B, D> for Tensor<B, D> {
    fn into_mask(self) -> Tensor<B, D, Bool> {
        self.greater_elem(0.5)
    }
}

/// One padded batch of prediction steps over candidate sets: the masks and targets every loss and
/// metric in this module reads, validated once.
#[derive(Debug, Clone)]
pub struct CandidateSteps<B: Backend> {
    candidate_mask: Tensor<B, 3, Bool>,
    step_mask: Tensor<B, 2, Bool>,
    target: Tensor<B, 2, Int>,
    /// `target` clamped into `0..C` so that `gather` is always in bounds, shape `[B, T, 1]`.
    target_index: Tensor<B, 3, Int>,
    active: Tensor<B, 2, Bool>,
    supervised: Tensor<B, 2, Bool>,
}

impl<B: Backend> CandidateSteps<B> {
    /// Bundles a candidate mask `[B, T, C]`, a step mask `[B, T]` and the target index `[B, T]`.
    ///
    /// Targets outside `0..C` (for example PyTorch's `-100` ignore index) or pointing at a padded
    /// candidate make their step unsupervised; they are never read out of bounds.
    pub fn new(
        candidate_mask: impl IntoMask<B, 3>,
        step_mask: impl IntoMask<B, 2>,
        target: Tensor<B, 2, Int>,
    ) -> Result<Self, SequenceLossError> {
        let candidate_mask = candidate_mask.into_mask();
        let step_mask = step_mask.into_mask();
        let [b, t, _] = candidate_mask.dims();
        check_shape("step mask", &[b, t], &step_mask.dims())?;
        check_shape("target", &[b, t], &target.dims())?;
        Ok(Self::from_validated(candidate_mask, step_mask, target))
    }

    /// Derives the step sets from masks whose shapes are already known to agree.
    fn from_validated(
        candidate_mask: Tensor<B, 3, Bool>,
        step_mask: Tensor<B, 2, Bool>,
        target: Tensor<B, 2, Int>,
    ) -> Self {
        let c = candidate_mask.dims()[2];
        let has_candidate = candidate_mask.clone().any_dim(2).squeeze_dim::<2>(2);
        let active = step_mask.clone().bool_and(has_candidate);

        let in_range = target.clone().greater_equal_elem(0).bool_and(target.clone().lower_elem(c as i64));
        let target_index = target.clone().clamp(0, c.saturating_sub(1) as i64).unsqueeze_dim::<3>(2);
        let target_is_real =
            candidate_mask.clone().int().gather(2, target_index.clone()).squeeze_dim::<2>(2).equal_elem(1);
        let supervised = active.clone().bool_and(in_range).bool_and(target_is_real);

        Self { candidate_mask, step_mask, target, target_index, active, supervised }
    }

    /// Builds the masks from HOSER's collated lengths: `trace_len` `[B]` real steps per row and
    /// `candidate_len` `[B, T]` real candidates per step (real candidates come first, as in HOSER's
    /// collation). `num_candidates` is the padded width `C`.
    pub fn from_lengths(
        trace_len: Tensor<B, 1, Int>,
        candidate_len: Tensor<B, 2, Int>,
        target: Tensor<B, 2, Int>,
        num_candidates: usize,
    ) -> Result<Self, SequenceLossError> {
        let [b, t] = candidate_len.dims();
        check_shape("trace_len", &[b], &trace_len.dims())?;
        let device = candidate_len.device();

        let steps = Tensor::<B, 1, Int>::arange(0..t as i64, &device);
        let trace_len = trace_len.cast(steps.dtype());
        let step_mask =
            steps.unsqueeze_dim::<2>(0).expand([b, t]).lower(trace_len.unsqueeze_dim::<2>(1).expand([b, t]));

        let slots = Tensor::<B, 1, Int>::arange(0..num_candidates as i64, &device);
        let candidate_len = candidate_len.cast(slots.dtype());
        let candidate_mask = slots
            .unsqueeze_dims::<3>(&[0, 1])
            .expand([b, t, num_candidates])
            .lower(candidate_len.unsqueeze_dim::<3>(2).expand([b, t, num_candidates]));

        Self::new(candidate_mask, step_mask, target)
    }

    /// The same batch restricted to steps where `keep` `[B, T]` is also true (for example the steps
    /// chosen for distillation).
    pub fn restrict_steps(&self, keep: impl IntoMask<B, 2>) -> Result<Self, SequenceLossError> {
        let keep = keep.into_mask();
        check_shape("step restriction", &self.step_mask.dims(), &keep.dims())?;
        Ok(Self::from_validated(
            self.candidate_mask.clone(),
            self.step_mask.clone().bool_and(keep),
            self.target.clone(),
        ))
    }

    /// The same batch restricted to the last real step of each row: what the reference distillation
    /// hook distils (one step per trajectory, `t = trace_len − 1`). A row whose last real step has no
    /// candidate is skipped, as there.
    pub fn last_step_only(&self) -> Self {
        let [b, t] = self.step_mask.dims();
        let positions =
            Tensor::<B, 1, Int>::arange(0..t as i64, &self.step_mask.device()).unsqueeze_dim::<2>(0).expand([b, t]);
        let last = positions.clone().mask_fill(self.step_mask.clone().bool_not(), -1).max_dim(1).expand([b, t]);
        let keep = positions.equal(last).bool_and(self.step_mask.clone());
        Self::from_validated(self.candidate_mask.clone(), keep, self.target.clone())
    }

    /// `[B, T, C]`, `true` = real candidate.
    pub fn candidate_mask(&self) -> &Tensor<B, 3, Bool> {
        &self.candidate_mask
    }

    /// `[B, T]`, `true` = real step, as given.
    pub fn step_mask(&self) -> &Tensor<B, 2, Bool> {
        &self.step_mask
    }

    /// `[B, T]` target indices, as given.
    pub fn target(&self) -> &Tensor<B, 2, Int> {
        &self.target
    }

    /// `[B, T]`: real steps with at least one real candidate (the steps distillation may use).
    pub fn active(&self) -> &Tensor<B, 2, Bool> {
        &self.active
    }

    /// `[B, T]`: active steps whose target is a real candidate (the steps CE, time loss and metrics
    /// average over).
    pub fn supervised(&self) -> &Tensor<B, 2, Bool> {
        &self.supervised
    }

    /// `[B, T, C]` shape of the scores this batch expects.
    pub fn dims(&self) -> [usize; 3] {
        self.candidate_mask.dims()
    }

    fn check_scores(&self, what: &'static str, scores: &Tensor<B, 3>) -> Result<(), SequenceLossError> {
        check_shape(what, &self.dims(), &scores.dims())
    }
}

/// Log-softmax over the real candidates of each step: `log p_c = x_c − log Σ_{c' real} exp(x_{c'})`.
///
/// Padded candidates receive zero probability; their entry holds the finite placeholder
/// [`MASKED_LOG_PROB`] instead of `-inf`, and no gradient reaches padded scores. A step with no real
/// candidate is all placeholder. Use [`masked_softmax`] for probabilities, which are exactly `0.0` at
/// padded positions.
pub fn masked_log_softmax<B: Backend>(logits: Tensor<B, 3>, candidate_mask: impl IntoMask<B, 3>) -> Tensor<B, 3> {
    let mask = candidate_mask.into_mask();
    let (log_probs, _) = masked_log_softmax_parts(logits, mask.clone());
    log_probs.mask_fill(mask.bool_not(), MASKED_LOG_PROB)
}

/// Softmax over the real candidates of each step: `p_c = exp(x_c) / Σ_{c' real} exp(x_{c'})` for real
/// `c`, exactly `0.0` for padded `c` (all zeros for a step with no real candidate).
pub fn masked_softmax<B: Backend>(logits: Tensor<B, 3>, candidate_mask: impl IntoMask<B, 3>) -> Tensor<B, 3> {
    let mask = candidate_mask.into_mask();
    let (_, probs) = masked_log_softmax_parts(logits, mask.clone());
    probs.mask_fill(mask.bool_not(), 0.0)
}

/// Masked next-step cross-entropy over variable-length candidate sets, HOSER's `L_next`.
///
/// ```text
/// L = (1 / |S|) · Σ_{(b,t) ∈ S} −log softmax_{c ∈ real(b,t)}(logits[b,t,·])[target[b,t]]
/// ```
///
/// with `S` the supervised steps of `steps` (real step, non-empty candidate set, target a real
/// candidate). This is the reference `F.cross_entropy(logits.masked_fill(~candidate_mask, -inf),
/// label)` over the flattened real steps (`t < trace_len`): a mean per step over the whole batch, not
/// per sequence; rows without real steps contribute nothing. Padded candidates get zero probability
/// (see the module docs for how `-inf` is avoided). If `S` is empty the result is `0` with zero
/// gradient. Returns a one-element tensor.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    steps: &CandidateSteps<B>,
) -> Result<Tensor<B, 1>, SequenceLossError> {
    steps.check_scores("logits", &logits)?;
    let logits = logits.mask_fill(expand_steps(steps.supervised.clone().bool_not(), steps.dims()), 0.0);
    let (log_probs, _) = masked_log_softmax_parts(logits, steps.candidate_mask.clone());
    let nll = log_probs.gather(2, steps.target_index.clone()).squeeze_dim::<2>(2).neg();
    Ok(masked_mean(nll, steps.supervised.clone()))
}

/// HOSER's time loss `L_time`: a relative L1 error in log1p-seconds space, for the time predicted at
/// the ground-truth candidate only.
///
/// ```text
/// ŷ = time_pred[b,t,target[b,t]] · σ + μ        (denormalised prediction, log1p seconds)
/// y = log1p(target_seconds[b,t])                (= label_norm · σ + μ in the reference)
/// L = (1 / |S|) · Σ_{(b,t) ∈ S} |ŷ − y| / max(y, 1)
/// ```
///
/// `time_pred` `[B, T, C]` is the network's normalised output `(log1p(Δt) − μ)/σ` per candidate,
/// `target_seconds` `[B, T]` the true duration `t_{i+1} − t_i` in seconds, `S` the supervised steps and
/// `norm` the training-set `μ, σ` of `log1p(Δt)`. This reproduces the reference exactly: it is **not**
/// an MSE/L1 on normalised values and **not** a MAPE in seconds. If `S` is empty the result is `0`
/// with zero gradient. Returns a one-element tensor.
pub fn hoser_time_loss<B: Backend>(
    time_pred: Tensor<B, 3>,
    target_seconds: Tensor<B, 2>,
    steps: &CandidateSteps<B>,
    norm: TimeNormalization,
) -> Result<Tensor<B, 1>, SequenceLossError> {
    let (predicted, label) = log1p_pair(time_pred, target_seconds, steps, norm)?;
    let relative = predicted.sub(label.clone()).abs().div(label.clamp_min(1.0));
    Ok(masked_mean(relative, steps.supervised.clone()))
}

/// Tempered distillation KL(teacher ‖ student) over candidate sets with renormalised teacher mass, as
/// in the reference distillation hook.
///
/// For each active step of `steps` (real step with at least one real candidate), with `R` its real
/// candidates and `τ = temperature`:
///
/// ```text
/// q̃_c = q_c / max(Σ_{c' ∈ R} q_{c'}, 1e-9)                       c ∈ R  (teacher restricted + renormalised)
/// q_τ,c = max(q̃_c, 1e-9)^(1/τ) / Σ_{c' ∈ R} max(q̃_{c'}, 1e-9)^(1/τ)
/// log p_τ,c = log softmax_{c ∈ R}(logits[b,t,·] / τ)_c
/// KL_{b,t} = Σ_{c ∈ R} q_τ,c · (log max(q_τ,c, 1e-9) − log p_τ,c)
/// L = (1 / |K|) · Σ_{(b,t) ∈ K} KL_{b,t}
/// ```
///
/// `teacher_probs` `[B, T, C]` are the teacher's probabilities at each candidate slot (in the
/// reference: its next-token softmax read at each candidate's grid token, so several candidates may
/// share mass). Mass on padded slots is dropped before renormalising. `K` are the active steps whose
/// teacher mass on real candidates is finite and `> 0`; the others are skipped, as the reference skips
/// `q_c.sum() <= 0` or NaN/inf rows. There is **no `τ²` factor**: the reference does not apply one,
/// so fold any scaling into the distillation weight λ. The teacher is detached (no gradient).
///
/// The reference distils only the last real step of each trajectory: pass
/// [`CandidateSteps::last_step_only`] to reproduce that. One deviation, on the student side only: the
/// reference takes `log(clamp(p_τ, 1e-9))`, which flattens the loss and zeroes its gradient where
/// `p_τ < 1e-9`; here `log p_τ` is the exact log-softmax. If `K` is empty the result is `0` with zero
/// gradient. Returns a one-element tensor.
pub fn distillation_kl<B: Backend>(
    student_logits: Tensor<B, 3>,
    teacher_probs: Tensor<B, 3>,
    steps: &CandidateSteps<B>,
    temperature: f64,
) -> Result<Tensor<B, 1>, SequenceLossError> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(SequenceLossError::Temperature(temperature));
    }
    steps.check_scores("student logits", &student_logits)?;
    steps.check_scores("teacher probabilities", &teacher_probs)?;
    let dims = steps.dims();
    let padded = steps.candidate_mask.clone().bool_not();

    // Teacher: restrict to real candidates, decide which steps are usable, then sanitise the rest so
    // no NaN from a skipped step can reach the arithmetic.
    let teacher = teacher_probs.detach().cast(student_logits.dtype()).mask_fill(padded.clone(), 0.0);
    let mass = teacher.clone().sum_dim(2).squeeze_dim::<2>(2);
    let usable = steps.active.clone().bool_and(mass.clone().greater_elem(0.0)).bool_and(mass.clone().is_finite());
    let skipped = expand_steps(usable.clone().bool_not(), dims);
    let teacher = teacher.mask_fill(skipped.clone(), 1.0).mask_fill(padded.clone(), 0.0);
    let mass = mass.mask_fill(usable.clone().bool_not(), 1.0).clamp_min(TEACHER_PROB_FLOOR);
    let renormalised = teacher.div(mass.unsqueeze_dim::<3>(2).expand(dims));
    let tempered =
        renormalised.clamp_min(TEACHER_PROB_FLOOR).powf_scalar(1.0 / temperature).mask_fill(padded.clone(), 0.0);
    let tempered_mass = tempered.clone().sum_dim(2).mask_fill(usable.clone().bool_not().unsqueeze_dim::<3>(2), 1.0);
    let q_tau = tempered.div(tempered_mass.expand(dims));
    let log_q_tau = q_tau.clone().clamp_min(TEACHER_PROB_FLOOR).log();

    // Student: tempered log-softmax over the real candidates.
    let student = student_logits.mask_fill(skipped.clone(), 0.0).div_scalar(temperature);
    let (log_p_tau, _) = masked_log_softmax_parts(student, steps.candidate_mask.clone());

    let terms = q_tau.mul(log_q_tau.sub(log_p_tau)).mask_fill(padded.bool_or(skipped), 0.0);
    let kl = terms.sum_dim(2).squeeze_dim::<2>(2);
    Ok(masked_mean(kl, usable))
}

/// A batch's tempered teacher targets for [`distillation_kl_tempered`], prepared on the host: the
/// teacher is frozen, so its side of [`distillation_kl`] (restriction to the real candidates,
/// renormalisation, temperature, `Σ q_τ log q_τ`) needs no device work and no autodiff graph.
#[derive(Debug, Clone, PartialEq)]
pub struct TemperedTeacher {
    shape: [usize; 3],
    /// `[B, T, C]` `q_τ`, 0 on padded slots and on steps that are not distilled.
    q: Vec<f32>,
    /// `Σ q_τ · log max(q_τ, 1e-9)` over the distilled steps (f64).
    neg_entropy: f64,
    steps: usize,
}

impl TemperedTeacher {
    /// No distilled step yet, for a batch of shape `[B, T, C]`.
    pub fn new(shape: [usize; 3]) -> Self {
        Self { shape, q: vec![0.0; shape.iter().product()], neg_entropy: 0.0, steps: 0 }
    }

    /// Distils step `(row, step)`, whose real candidates (the first `teacher.len()` slots) have
    /// teacher probabilities `teacher`, at temperature `τ`, with exactly [`distillation_kl`]'s
    /// rules: renormalised over the candidates (mass floored at 1e-9), floored at 1e-9, raised to
    /// `1/τ` and renormalised. A step with no candidate, or whose teacher mass is 0 or not finite,
    /// is skipped (returns `false`), as the reference skips such rows. Computed in f64.
    pub fn push(&mut self, row: usize, step: usize, teacher: &[f32], temperature: f64) -> bool {
        let [b, t, c] = self.shape;
        assert!(
            row < b && step < t && teacher.len() <= c,
            "step ({row}, {step}) with {} candidates outside {:?}",
            teacher.len(),
            self.shape
        );
        let mass: f64 = teacher.iter().map(|&p| f64::from(p)).sum();
        if teacher.is_empty() || !(mass.is_finite() && mass > 0.0) {
            return false;
        }
        let mass = mass.max(TEACHER_PROB_FLOOR);
        let tempered: Vec<f64> =
            teacher.iter().map(|&p| (f64::from(p) / mass).max(TEACHER_PROB_FLOOR).powf(1.0 / temperature)).collect();
        let total: f64 = tempered.iter().sum();
        let at = (row * t + step) * c;
        for (slot, q) in tempered.iter().map(|q| q / total).enumerate() {
            self.q[at + slot] = q as f32;
            self.neg_entropy += q * q.max(TEACHER_PROB_FLOOR).ln();
        }
        self.steps += 1;
        true
    }

    /// Number of distilled steps.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// `[B, T, C]` `q_τ` on `device`.
    pub fn probs<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3> {
        Tensor::from_data(burn::tensor::TensorData::new(self.q.clone(), self.shape), device)
    }
}

/// [`distillation_kl`] with the teacher side prepared on the host ([`TemperedTeacher`]):
///
/// ```text
/// L = (1 / |K|) · (Σ_K Σ_c q_τ,c log q_τ,c − Σ_K Σ_c q_τ,c · log softmax_{c ∈ R}(logits / τ)_c)
/// ```
///
/// — the same value (to float rounding) and the same gradient, with a handful of device
/// operations instead of the teacher's whole pipeline. `q` is the teacher's
/// [`TemperedTeacher::probs`] (`[B, T, C]`), `candidate_mask` the real candidates. No `τ²` factor.
/// If no step is distilled the result is `0` with zero gradient. Returns a one-element tensor.
pub fn distillation_kl_tempered<B: Backend>(
    student_logits: Tensor<B, 3>,
    teacher: &TemperedTeacher,
    q: Tensor<B, 3>,
    candidate_mask: impl IntoMask<B, 3>,
    temperature: f64,
) -> Result<Tensor<B, 1>, SequenceLossError> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(SequenceLossError::Temperature(temperature));
    }
    check_shape("student logits", &teacher.shape, &student_logits.dims())?;
    check_shape("teacher probabilities", &teacher.shape, &q.dims())?;
    if teacher.steps == 0 {
        return Ok(student_logits.sum().mul_scalar(0.0));
    }
    let mask = candidate_mask.into_mask();
    check_shape("candidate mask", &teacher.shape, &mask.dims())?;
    // Padded slots hold the finite MASKED_LOG_PROB and q = 0 there: no NaN, no gradient.
    let log_p = masked_log_softmax(student_logits.div_scalar(temperature), mask);
    let dtype = log_p.dtype();
    let cross = log_p.mul(q.cast(dtype)).sum();
    Ok(cross.neg().add_scalar(teacher.neg_entropy).div_scalar(teacher.steps as f64))
}

/// Next-step accuracy counts for one batch: `correct = Σ_{S} [argmax_{c ∈ real} logits = target]`,
/// `total = |S|` over the supervised steps `S`.
///
/// Counts, not a ratio, so an epoch's accuracy is exact: add the batches with `+=` and divide once, as
/// the reference does (`val_next_step_acc = Σ correct / Σ trace_len`; with upstream data every real
/// step is supervised, so `total` is `Σ trace_len`). Ties go to the lowest candidate index, as in
/// `torch.argmax`.
pub fn next_step_accuracy<B: Backend>(
    logits: Tensor<B, 3>,
    steps: &CandidateSteps<B>,
) -> Result<NextStepAccuracy, SequenceLossError> {
    steps.check_scores("logits", &logits)?;
    let masked = logits.mask_fill(steps.candidate_mask.clone().bool_not(), f64::NEG_INFINITY);
    let predicted = masked.argmax(2).cast(steps.target_index.dtype());
    let hit = predicted.equal(steps.target_index.clone()).squeeze_dim::<2>(2).bool_and(steps.supervised.clone());
    Ok(NextStepAccuracy { correct: count(hit), total: count(steps.supervised.clone()) })
}

/// Time-prediction error sums for one batch, over the supervised steps, in seconds and in HOSER's
/// log1p space.
///
/// With `ŷ` and `y` as in [`hoser_time_loss`], `t = target_seconds` and `t̂ = exp(ŷ) − 1` (the
/// prediction in seconds after inverting the normalisation):
///
/// ```text
/// abs_error_seconds          = Σ |t̂ − t|
/// relative_error_seconds     = Σ |t̂ − t| / max(t, 1 s)        (MAPE_MIN_SECONDS guards t = 0)
/// hoser_log1p_relative_error = Σ |ŷ − y| / max(y, 1)          (the reference's `val_time_pred_mape`)
/// count                      = |S|
/// ```
///
/// Sums are accumulated on the device in the input precision, then returned as `f64`; add batches
/// with `+=` and read [`TimeErrorSums::mae_seconds`], [`TimeErrorSums::mape`] and
/// [`TimeErrorSums::hoser_time_mape`] once per epoch.
pub fn time_error<B: Backend>(
    time_pred: Tensor<B, 3>,
    target_seconds: Tensor<B, 2>,
    steps: &CandidateSteps<B>,
    norm: TimeNormalization,
) -> Result<TimeErrorSums, SequenceLossError> {
    let seconds = target_seconds.clone().cast(time_pred.dtype());
    let (predicted, label) = log1p_pair(time_pred, target_seconds, steps, norm)?;
    let supervised = steps.supervised.clone();
    let excluded = supervised.clone().bool_not();

    let seconds = seconds.mask_fill(excluded.clone(), 0.0);
    let abs_seconds =
        predicted.clone().exp().sub_scalar(1.0).sub(seconds.clone()).abs().mask_fill(excluded.clone(), 0.0);
    let relative_seconds = abs_seconds.clone().div(seconds.clamp_min(MAPE_MIN_SECONDS));
    let hoser = predicted.sub(label.clone()).abs().div(label.clamp_min(1.0)).mask_fill(excluded, 0.0);

    Ok(TimeErrorSums {
        abs_error_seconds: scalar(abs_seconds.sum()),
        relative_error_seconds: scalar(relative_seconds.sum()),
        hoser_log1p_relative_error: scalar(hoser.sum()),
        count: count(supervised),
    })
}

/// Correct / total next-step predictions, accumulated exactly over batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextStepAccuracy {
    /// Supervised steps whose arg-max over real candidates is the target.
    pub correct: u64,
    /// Supervised steps.
    pub total: u64,
}

impl NextStepAccuracy {
    /// `correct / total`, or `None` when no step was counted.
    pub fn accuracy(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }
}

impl std::ops::AddAssign for NextStepAccuracy {
    fn add_assign(&mut self, other: Self) {
        self.correct += other.correct;
        self.total += other.total;
    }
}

/// Sums of time-prediction errors (see [`time_error`]), accumulated over batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeErrorSums {
    /// `Σ |t̂ − t|` in seconds.
    pub abs_error_seconds: f64,
    /// `Σ |t̂ − t| / max(t, 1 s)`.
    pub relative_error_seconds: f64,
    /// `Σ |ŷ − y| / max(y, 1)` in log1p-seconds space (HOSER's reported "MAPE").
    pub hoser_log1p_relative_error: f64,
    /// Supervised steps summed over.
    pub count: u64,
}

impl TimeErrorSums {
    /// Mean absolute error in seconds, or `None` when no step was counted.
    pub fn mae_seconds(&self) -> Option<f64> {
        self.mean(self.abs_error_seconds)
    }

    /// Mean absolute percentage error in seconds, as a fraction (`0.25` = 25 %), with the denominator
    /// floored at [`MAPE_MIN_SECONDS`]; `None` when no step was counted.
    pub fn mape(&self) -> Option<f64> {
        self.mean(self.relative_error_seconds)
    }

    /// HOSER's `val_time_pred_mape`: mean `|ŷ − y| / max(y, 1)` in log1p space (not comparable to a
    /// MAPE in seconds); `None` when no step was counted.
    pub fn hoser_time_mape(&self) -> Option<f64> {
        self.mean(self.hoser_log1p_relative_error)
    }

    fn mean(&self, sum: f64) -> Option<f64> {
        (self.count > 0).then(|| sum / self.count as f64)
    }
}

impl std::ops::AddAssign for TimeErrorSums {
    fn add_assign(&mut self, other: Self) {
        self.abs_error_seconds += other.abs_error_seconds;
        self.relative_error_seconds += other.relative_error_seconds;
        self.hoser_log1p_relative_error += other.hoser_log1p_relative_error;
        self.count += other.count;
    }
}

/// The training-set statistics HOSER normalises durations with: the network predicts
/// `(log1p(Δt) − mean) / std` for a step of `Δt` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeNormalization {
    /// Mean of `log1p(Δt)` over all training steps.
    pub mean: f64,
    /// Population standard deviation (numpy's `std`, `ddof = 0`) of `log1p(Δt)` over all training
    /// steps.
    pub std: f64,
}

impl TimeNormalization {
    /// Validated statistics: `mean` finite, `std` finite and `> 0`.
    pub fn new(mean: f64, std: f64) -> Result<Self, SequenceLossError> {
        if mean.is_finite() && std.is_finite() && std > 0.0 {
            Ok(Self { mean, std })
        } else {
            Err(SequenceLossError::TimeNormalization { mean, std })
        }
    }

    /// Fits the statistics on every training step's duration in seconds, as HOSER does (`mean` and
    /// population `std` of `log1p(Δt)`).
    pub fn fit(durations_seconds: impl IntoIterator<Item = f64>) -> Result<Self, SequenceLossError> {
        let logs: Vec<f64> = durations_seconds.into_iter().map(f64::ln_1p).collect();
        if logs.is_empty() {
            return Err(SequenceLossError::NoDurations);
        }
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Self::new(mean, var.sqrt())
    }

    /// The normalised training target for a duration: `(log1p(seconds) − mean) / std`.
    pub fn normalize(&self, seconds: f64) -> f64 {
        (seconds.ln_1p() - self.mean) / self.std
    }

    /// Seconds for a normalised prediction: `exp(value · std + mean) − 1`.
    pub fn denormalize(&self, value: f64) -> f64 {
        (value * self.std + self.mean).exp_m1()
    }
}

fn check_shape(what: &'static str, expected: &[usize], got: &[usize]) -> Result<(), SequenceLossError> {
    if expected == got {
        Ok(())
    } else {
        Err(SequenceLossError::Shape { what, expected: expected.to_vec(), got: got.to_vec() })
    }
}

fn expand_steps<B: Backend>(mask: Tensor<B, 2, Bool>, dims: [usize; 3]) -> Tensor<B, 3, Bool> {
    mask.unsqueeze_dim::<3>(2).expand(dims)
}

/// Log-probabilities and probabilities over the real candidates, with finite junk in the
/// log-probabilities at padded slots and exact zeros in the probabilities there.
///
/// A step with no real candidate is treated as if all its slots were real, so every value stays
/// finite; callers exclude such steps.
fn masked_log_softmax_parts<B: Backend>(
    logits: Tensor<B, 3>,
    candidate_mask: Tensor<B, 3, Bool>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let dims = logits.dims();
    let empty_step = candidate_mask.clone().any_dim(2).bool_not().expand(dims);
    let padded = candidate_mask.bool_or(empty_step).bool_not();

    let real = logits.mask_fill(padded.clone(), 0.0);
    // A detached value ≤ every real score of the step: padded slots never win the max, and nothing
    // flows back to them.
    let floor = real.clone().detach().min_dim(2).expand(dims);
    let filled = real.mask_where(padded.clone(), floor);
    let shift = filled.clone().detach().max_dim(2).expand(dims);
    let shifted = filled.sub(shift);
    let exp = shifted.clone().exp().mask_fill(padded, 0.0);
    // ≥ 1: the arg-max slot contributes exp(0).
    let sum = exp.clone().sum_dim(2).expand(dims);
    let log_probs = shifted.sub(sum.clone().log());
    let probs = exp.div(sum);
    (log_probs, probs)
}

/// `(ŷ, y)` `[B, T]` in log1p-seconds space for the supervised steps (zeros elsewhere, with zero
/// gradient there).
fn log1p_pair<B: Backend>(
    time_pred: Tensor<B, 3>,
    target_seconds: Tensor<B, 2>,
    steps: &CandidateSteps<B>,
    norm: TimeNormalization,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), SequenceLossError> {
    let norm = TimeNormalization::new(norm.mean, norm.std)?;
    steps.check_scores("time predictions", &time_pred)?;
    let [b, t, _] = steps.dims();
    check_shape("target seconds", &[b, t], &target_seconds.dims())?;
    let excluded = steps.supervised.clone().bool_not();

    let predicted = time_pred
        .gather(2, steps.target_index.clone())
        .squeeze_dim::<2>(2)
        .mask_fill(excluded.clone(), 0.0)
        .mul_scalar(norm.std)
        .add_scalar(norm.mean);
    let label = target_seconds.cast(predicted.dtype()).mask_fill(excluded, 0.0).log1p();
    Ok((predicted, label))
}

/// `Σ values[mask] / max(|mask|, 1)` as a one-element tensor; exactly `0` with zero gradient when the
/// mask is empty.
fn masked_mean<B: Backend>(values: Tensor<B, 2>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 1> {
    let count = values.zeros_like().mask_fill(mask.clone(), 1.0).sum().clamp_min(1.0);
    values.mask_fill(mask.bool_not(), 0.0).sum().div(count)
}

fn count<B: Backend, const D: usize>(mask: Tensor<B, D, Bool>) -> u64 {
    mask.int().sum().into_data().iter::<i64>().next().map_or(0, |n| n.max(0) as u64)
}

fn scalar<B: Backend>(value: Tensor<B, 1>) -> f64 {
    let data: TensorData = value.into_data();
    data.iter::<f64>().next().unwrap_or(0.0)
}
