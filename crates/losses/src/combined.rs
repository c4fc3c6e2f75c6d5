//! A weighted sum of named loss terms, built from config weights, that reports every term.
//!
//! `total = Σ_i w_i · term_i` over the terms whose weight is non-zero. A stage declares the
//! terms it can compute; the config gives a weight per name. The builder refuses unknown
//! names and negative or non-finite weights, and [`CombinedLoss::combine`] refuses to return
//! a total when a term with a non-zero weight was not computed — a configured term can never
//! silently become zero (the reference trainer dropped LPIPS to zero when its package was
//! missing, and let a config weight be overridden by a CLI default).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// Problems building or evaluating a [`CombinedLoss`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CombinedError {
    /// A weight names a term the stage cannot compute.
    #[error("unknown loss term `{name}` (weight {weight}); this stage computes: {known}")]
    UnknownTerm {
        /// The name in the config.
        name: String,
        /// Its weight.
        weight: f64,
        /// The names the stage offers, comma-separated.
        known: String,
    },
    /// A weight is negative, NaN or infinite.
    #[error("loss weight `{name}` must be a finite number >= 0, got {weight}")]
    BadWeight {
        /// The term.
        name: String,
        /// Its weight.
        weight: f64,
    },
    /// Every weight is zero: nothing would be trained.
    #[error("every loss weight is zero; set at least one of: {known}")]
    NothingToTrain {
        /// The names the stage offers.
        known: String,
    },
    /// A term with a non-zero weight was not computed.
    #[error("loss term `{name}` has weight {weight} but was not computed; refusing to treat it as zero")]
    MissingTerm {
        /// The term.
        name: String,
        /// Its weight.
        weight: f64,
    },
    /// A term was computed twice.
    #[error("loss term `{name}` was given twice")]
    DuplicateTerm {
        /// The term.
        name: String,
    },
}

/// Weights per named term, validated against the terms a stage can compute.
#[derive(Debug, Clone, PartialEq)]
pub struct CombinedLoss {
    weights: BTreeMap<String, f64>,
}

/// The total and each term, unweighted and weighted, still on the device.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// `Σ w_i · term_i`, the scalar to differentiate.
    pub total: Tensor<B, 1>,
    /// `(name, unweighted value, weight)` of every active term, in name order.
    pub terms: Vec<(String, Tensor<B, 1>, f64)>,
}

impl<B: Backend> LossOutput<B> {
    /// Host values for logging: `loss_<name>` (unweighted) for each term and `loss` (the
    /// total). Reads every value from the device once.
    pub fn components(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .terms
            .iter()
            .map(|(name, value, _)| (format!("loss_{name}"), value.clone().into_scalar().elem::<f64>()))
            .collect();
        out.insert("loss".into(), self.total.clone().into_scalar().elem::<f64>());
        out
    }
}

impl CombinedLoss {
    /// Validates `weights` against the term names a stage can compute (`known`).
    pub fn new(weights: &BTreeMap<String, f64>, known: &[&str]) -> Result<Self, Vec<CombinedError>> {
        let list = known.join(", ");
        let mut errors = Vec::new();
        for (name, &weight) in weights {
            if !known.contains(&name.as_str()) {
                errors.push(CombinedError::UnknownTerm { name: name.clone(), weight, known: list.clone() });
            } else if !(weight.is_finite() && weight >= 0.0) {
                errors.push(CombinedError::BadWeight { name: name.clone(), weight });
            }
        }
        if errors.is_empty() && weights.values().all(|w| *w == 0.0) {
            errors.push(CombinedError::NothingToTrain { known: list });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self { weights: weights.iter().filter(|(_, w)| **w > 0.0).map(|(k, w)| (k.clone(), *w)).collect() })
    }

    /// The weight of `name` (0 when inactive).
    pub fn weight(&self, name: &str) -> f64 {
        self.weights.get(name).copied().unwrap_or(0.0)
    }

    /// Whether `name` has a non-zero weight (callers compute only active terms).
    pub fn is_active(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    /// Names of the active terms, in order.
    pub fn active(&self) -> impl Iterator<Item = &str> {
        self.weights.keys().map(String::as_str)
    }

    /// Sums the computed terms with their weights. Terms with weight 0 are ignored; a
    /// computed term that is not configured is ignored too (it may be a metric).
    pub fn combine<B: Backend>(&self, computed: Vec<(&str, Tensor<B, 1>)>) -> Result<LossOutput<B>, CombinedError> {
        let mut by_name: BTreeMap<&str, Tensor<B, 1>> = BTreeMap::new();
        for (name, value) in computed {
            if by_name.insert(name, value).is_some() {
                return Err(CombinedError::DuplicateTerm { name: name.to_string() });
            }
        }
        let mut total: Option<Tensor<B, 1>> = None;
        let mut terms = Vec::new();
        for (name, &weight) in &self.weights {
            let value = by_name
                .remove(name.as_str())
                .ok_or_else(|| CombinedError::MissingTerm { name: name.clone(), weight })?;
            let weighted = value.clone().mul_scalar(weight);
            total = Some(match total {
                Some(t) => t + weighted,
                None => weighted,
            });
            terms.push((name.clone(), value, weight));
        }
        let total = total.expect("validated: at least one active term");
        Ok(LossOutput { total, terms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn weights(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn scalar(v: f32) -> Tensor<B, 1> {
        Tensor::from_floats([v], &Default::default())
    }

    #[test]
    fn total_is_the_weighted_sum_and_every_term_is_reported() {
        let c =
            CombinedLoss::new(&weights(&[("l1", 1.0), ("ms_ssim", 0.5), ("lpips", 0.0)]), &["l1", "ms_ssim", "lpips"])
                .unwrap();
        assert!(!c.is_active("lpips"));
        let out = c.combine(vec![("l1", scalar(0.2)), ("ms_ssim", scalar(0.4))]).unwrap();
        let m = out.components();
        assert!((m["loss"] - (0.2 + 0.5 * 0.4)).abs() < 1e-6);
        assert!((m["loss_l1"] - 0.2).abs() < 1e-7 && (m["loss_ms_ssim"] - 0.4).abs() < 1e-7);
        assert!(!m.contains_key("loss_lpips"));
    }

    #[test]
    fn a_configured_term_that_was_not_computed_is_an_error_not_a_zero() {
        let c = CombinedLoss::new(&weights(&[("l1", 1.0), ("lpips", 0.1)]), &["l1", "lpips"]).unwrap();
        let e = c.combine(vec![("l1", scalar(0.2))]).unwrap_err();
        assert_eq!(e, CombinedError::MissingTerm { name: "lpips".into(), weight: 0.1 });
        assert!(e.to_string().contains("refusing to treat it as zero"));
    }

    #[test]
    fn bad_weights_and_unknown_names_are_all_reported() {
        let e =
            CombinedLoss::new(&weights(&[("l2", 1.0), ("l1", -1.0), ("ssim", f64::NAN)]), &["l1", "ssim"]).unwrap_err();
        assert_eq!(e.len(), 3);
        assert!(e.iter().any(|e| e.to_string().contains("unknown loss term `l2`")));
        let e = CombinedLoss::new(&weights(&[("l1", 0.0)]), &["l1"]).unwrap_err();
        assert!(matches!(e[0], CombinedError::NothingToTrain { .. }));
    }
}
