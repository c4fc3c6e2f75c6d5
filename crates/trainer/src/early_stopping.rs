//! Early stopping on a validation metric, with the semantics of PyTorch Lightning's
//! `EarlyStopping` (strict improvement by `min_delta`, patience counted in validations, checks
//! in the order non-finite → divergence → improvement), plus a relative `min_delta_percent`
//! (PyTorch's `threshold_mode="rel"` test), a warm-up, an LR floor and a divergence factor
//! (seed 003's `--early-stop-divergence-threshold`: stop when the metric is k× worse than the best).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::policy::{Decision, StopPolicy, Validation};
use crate::problems::ConfigProblem;
use crate::task::{Mode, Selection};

/// `early_stopping:` — when to stop because validation stopped improving or went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    /// Turn early stopping on (`--early-stopping`; any other early-stopping flag also does).
    pub enabled: bool,
    /// Metric to watch; `null` uses the metric that selects the best model.
    pub monitor: Option<String>,
    /// `min` or `max`; `null` uses the selection metric's direction (required for another metric).
    pub mode: Option<Mode>,
    /// Validations without improvement before stopping.
    pub patience: u64,
    /// An improvement must beat the best by more than this (absolute).
    pub min_delta: f64,
    /// Or by more than this percentage of the best (`0.1` = 0.1 %); exclusive with `min_delta`.
    pub min_delta_percent: Option<f64>,
    /// Validations at the start during which no patience stop happens (the best is still tracked).
    pub warmup: u64,
    /// Stop once the learning rate falls below this.
    pub lr_threshold: Option<f64>,
    /// Stop when the metric is this many times worse than the best (`> k·best` in min mode,
    /// `< best/k` in max mode).
    pub divergence_factor: Option<f64>,
    /// Stop when the metric is worse than this fixed value.
    pub divergence_threshold: Option<f64>,
    /// Stop when the metric is NaN or infinite.
    pub stop_on_non_finite: bool,
    /// At the end of the run, load the best weights (the `checkpoint.export_best` file) into
    /// the returned model — whether or not early stopping fired.
    pub restore_best_weights: bool,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            monitor: None,
            mode: None,
            patience: 5,
            min_delta: 0.0,
            min_delta_percent: None,
            warmup: 0,
            lr_threshold: None,
            divergence_factor: None,
            divergence_threshold: None,
            stop_on_non_finite: true,
            restore_best_weights: false,
        }
    }
}

impl EarlyStoppingConfig {
    /// Range and combination checks.
    pub fn validate(&self, p: &mut Vec<ConfigProblem>) {
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem { key: format!("early_stopping.{key}"), message, origin: None })
        };
        if self.patience == 0 {
            bad("patience", "expected at least 1 validation".into());
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            bad("min_delta", format!("expected a non-negative number, got {}", self.min_delta));
        }
        if let Some(pct) = self.min_delta_percent {
            if !(pct > 0.0 && pct < 100.0) {
                bad("min_delta_percent", format!("expected a percentage in (0, 100), got {pct}"));
            }
            if self.min_delta > 0.0 {
                bad("min_delta_percent", "min_delta and min_delta_percent are exclusive: set one".into());
            }
        }
        if self.lr_threshold.is_some_and(|t| t.is_nan() || t <= 0.0) {
            bad("lr_threshold", "expected a positive learning rate".into());
        }
        if self.divergence_factor.is_some_and(|k| k.is_nan() || k <= 1.0) {
            bad("divergence_factor", "expected a factor greater than 1".into());
        }
        if self.monitor.is_some() && self.mode.is_none() {
            bad("mode", "set min or max for early_stopping.monitor".into());
        }
    }
}

/// The early-stopping policy. Its state (best, wait, validations seen) goes into checkpoints.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    config: EarlyStoppingConfig,
    metric: String,
    mode: Mode,
    best: Option<(u64, f64)>,
    wait: u64,
    seen: u64,
}

impl EarlyStopping {
    /// Watches `config.monitor`, or the run's selection metric.
    pub fn new(config: EarlyStoppingConfig, selection: &Selection) -> Self {
        let metric = config.monitor.clone().unwrap_or_else(|| selection.metric.clone());
        let mode = config.mode.unwrap_or(selection.mode);
        Self { config, metric, mode, best: None, wait: 0, seen: 0 }
    }

    fn improves(&self, current: f64, best: f64) -> bool {
        let c = &self.config;
        match (self.mode, c.min_delta_percent) {
            (Mode::Min, Some(pct)) => current < best * (1.0 - pct / 100.0),
            (Mode::Max, Some(pct)) => current > best * (1.0 + pct / 100.0),
            (Mode::Min, None) => current < best - c.min_delta,
            (Mode::Max, None) => current > best + c.min_delta,
        }
    }

    fn worse_than(&self, current: f64, limit: f64) -> bool {
        match self.mode {
            Mode::Min => current > limit,
            Mode::Max => current < limit,
        }
    }

    fn stop(&self, step: u64, reason: String, notes: &mut Vec<String>) -> Decision {
        notes.push(format!("🛑 Early stopping triggered! {reason}"));
        if let Some((s, b)) = self.best {
            notes.push(format!("   Best score: {b:.6} at step {s}"));
        }
        Decision {
            stop: Some(reason.clone()),
            abort: false,
            notes: std::mem::take(notes),
            event: Some((
                "early_stop".into(),
                json!({"step": step, "reason": reason, "metric": self.metric, "wait": self.wait,
                       "best": self.best.map(|(s, v)| json!({"step": s, "value": v}))}),
            )),
        }
    }
}

impl StopPolicy for EarlyStopping {
    fn name(&self) -> &str {
        "early_stopping"
    }

    fn after_validation(&mut self, v: &Validation<'_>) -> Decision {
        self.seen += 1;
        let c = self.config.clone();
        let mut notes = Vec::new();
        let Some(&current) = v.metrics.get(&self.metric) else {
            let names: Vec<&str> = v.metrics.keys().map(String::as_str).collect();
            return self.stop(
                v.step,
                format!(
                    "early_stopping.monitor `{}` is not among the validation metrics ({})",
                    self.metric,
                    names.join(", ")
                ),
                &mut notes,
            );
        };
        if !current.is_finite() && c.stop_on_non_finite {
            return self.stop(v.step, format!("{} is {current} at step {}.", self.metric, v.step), &mut notes);
        }
        if let Some(limit) = c.divergence_threshold
            && self.worse_than(current, limit)
        {
            return self.stop(
                v.step,
                format!("{} = {current:.6} crossed the divergence threshold {limit}.", self.metric),
                &mut notes,
            );
        }
        if let (Some(k), Some((_, best))) = (c.divergence_factor, self.best) {
            let limit = match self.mode {
                Mode::Min => best * k,
                Mode::Max => best / k,
            };
            if self.worse_than(current, limit) {
                return self.stop(
                    v.step,
                    format!(
                        "{} = {current:.6} is more than {k}x worse than the best {best:.6}: diverging.",
                        self.metric
                    ),
                    &mut notes,
                );
            }
        }
        let improved = current.is_finite() && self.best.is_none_or(|(_, best)| self.improves(current, best));
        if improved {
            self.best = Some((v.step, current));
            self.wait = 0;
            notes.push(format!("✓ Metric improved to {current:.6}"));
        } else {
            self.wait += 1;
            let (s, b) = self.best.unwrap_or((0, f64::NAN));
            notes.push(format!(
                "⚠ No improvement for {}/{} validations (best: {b:.6} at step {s})",
                self.wait, c.patience
            ));
        }
        if let Some(t) = c.lr_threshold
            && v.lr < t
        {
            return self.stop(v.step, format!("Learning rate {:.3e} fell below {t:.3e}.", v.lr), &mut notes);
        }
        if self.wait >= c.patience && self.seen > c.warmup {
            return self.stop(v.step, format!("No improvement for {} validations.", c.patience), &mut notes);
        }
        Decision { notes, ..Decision::default() }
    }

    fn state(&self) -> Value {
        json!({"best": self.best.map(|(s, v)| json!([s, v])), "wait": self.wait, "seen": self.seen})
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        self.best = match &state["best"] {
            Value::Null => None,
            b => Some((b[0].as_u64().ok_or("bad best step")?, b[1].as_f64().ok_or("bad best value")?)),
        };
        self.wait = state["wait"].as_u64().ok_or("no wait count")?;
        self.seen = state["seen"].as_u64().ok_or("no validation count")?;
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        self.best.map(|(s, b)| format!("Best {}: {b:.6} at step {s}", self.metric))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Metrics;

    fn run(config: EarlyStoppingConfig, mode: Mode, values: &[f64]) -> (Option<usize>, EarlyStopping) {
        let mut es = EarlyStopping::new(config, &Selection { metric: "m".into(), mode });
        for (i, &v) in values.iter().enumerate() {
            let metrics = Metrics::from([("m".to_string(), v)]);
            let d =
                es.after_validation(&Validation { step: (i as u64 + 1) * 10, epoch: 0, lr: 0.1, metrics: &metrics });
            if d.stop.is_some() {
                return (Some(i), es);
            }
        }
        (None, es)
    }

    fn cfg() -> EarlyStoppingConfig {
        EarlyStoppingConfig { enabled: true, patience: 3, ..EarlyStoppingConfig::default() }
    }

    #[test]
    fn stops_after_patience_validations_without_strict_improvement() {
        // Best at index 1; indices 2, 3, 4 do not improve (a tie is no improvement).
        let (stop, es) = run(cfg(), Mode::Min, &[1.0, 0.5, 0.6, 0.5, 0.7, 0.1]);
        assert_eq!(stop, Some(4));
        assert_eq!(es.best, Some((20, 0.5)));
        let (stop, _) = run(cfg(), Mode::Max, &[0.1, 0.5, 0.4, 0.6, 0.6, 0.6, 0.6]);
        assert_eq!(stop, Some(6), "max mode: improvement at index 3, then 3 without");
    }

    #[test]
    fn min_delta_absolute_and_percent() {
        let c = EarlyStoppingConfig { min_delta: 0.1, ..cfg() };
        // 0.95 and 0.91 are within 0.1 of 1.0: not improvements.
        assert_eq!(run(c, Mode::Min, &[1.0, 0.95, 0.91, 0.901]).0, Some(3));
        let c = EarlyStoppingConfig { min_delta_percent: Some(10.0), ..cfg() };
        // 10 % of 1.0: 0.89 improves (< 0.9), then 0.85 does not (needs < 0.801).
        let (stop, es) = run(c, Mode::Min, &[1.0, 0.89, 0.85, 0.81, 0.802]);
        assert_eq!(stop, Some(4));
        assert_eq!(es.best, Some((20, 0.89)));
    }

    #[test]
    fn warmup_delays_only_the_patience_stop() {
        let c = EarlyStoppingConfig { warmup: 5, patience: 1, ..cfg() };
        assert_eq!(run(c, Mode::Min, &[1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]).0, Some(5));
    }

    #[test]
    fn non_finite_divergence_and_lr_floor_stop_at_once() {
        assert_eq!(run(cfg(), Mode::Min, &[1.0, f64::NAN]).0, Some(1));
        let c = EarlyStoppingConfig { divergence_factor: Some(10.0), ..cfg() };
        assert_eq!(run(c, Mode::Min, &[1.0, 0.5, 4.0, 5.1]).0, Some(3), "5.1 > 10 x 0.5");
        let c = EarlyStoppingConfig { divergence_threshold: Some(3.0), ..cfg() };
        assert_eq!(run(c, Mode::Min, &[1.0, 2.9, 3.1]).0, Some(2));
        let c = EarlyStoppingConfig { lr_threshold: Some(0.5), ..cfg() };
        assert_eq!(run(c, Mode::Min, &[1.0]).0, Some(0), "lr 0.1 < 0.5");
    }

    #[test]
    fn state_round_trips() {
        let (_, es) = run(cfg(), Mode::Min, &[1.0, 0.5, 0.7]);
        let mut fresh = EarlyStopping::new(cfg(), &Selection { metric: "m".into(), mode: Mode::Min });
        fresh.restore(&es.state()).unwrap();
        assert_eq!((fresh.best, fresh.wait, fresh.seen), (Some((20, 0.5)), 1, 3));
    }
}
