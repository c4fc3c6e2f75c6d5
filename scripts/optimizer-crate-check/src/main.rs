//! Replays the project's recorded Optuna 5.0.0 pruning decisions
//! (`crates/tune/tests/fixtures/optuna_pruners/vectors.json`) through the `optimizer` crate's
//! pruners, with the crate's own ask / report / should_prune / tell API.
//!
//! The replay follows Optuna's recorded trajectory exactly: every trial reports the steps and
//! values Optuna's trial reported (up to the step where Optuna pruned it) and is then told the
//! state Optuna gave it (pruned, complete with its last value, or failed for a NaN last value).
//! Every decision of the crate is therefore made on the same history Optuna decided on, and a
//! disagreement does not change what comes after it.
//!
//! A configuration is "expressible" when every argument of Optuna's pruner (the defaults in
//! effect included) has an equivalent in the crate. The others are still replayed with the
//! nearest mapping (the argument dropped, the crate's default in its place) and counted apart.
//!
//! Usage: optimizer-crate-check [VECTORS_JSON]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use optimizer::parameter::{FloatParam, Parameter};
use optimizer::pruner::{HyperbandPruner, MedianPruner, NopPruner, PercentilePruner, Pruner, SuccessiveHalvingPruner};
use optimizer::sampler::{CompletedTrial, TpeSampler};
use optimizer::{Direction, Study};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Vectors {
    optuna_version: String,
    configs: Vec<Config>,
}

#[derive(Deserialize)]
struct Config {
    name: String,
    study_name: String,
    direction: String,
    pruner: Map<String, Value>,
    trials: Vec<Trial>,
}

#[derive(Deserialize)]
struct Trial {
    number: u64,
    steps: Vec<u64>,
    /// NaN is written as null.
    values: Vec<Option<f64>>,
    decisions: Vec<bool>,
    pruned_at: Option<u64>,
    final_state: String,
}

/// `Study::builder().pruner(..)` takes a concrete pruner; this forwards to a boxed one.
struct Boxed(Box<dyn Pruner>);

impl Pruner for Boxed {
    fn should_prune(
        &self,
        trial_id: u64,
        step: u64,
        intermediate_values: &[(u64, f64)],
        completed_trials: &[CompletedTrial],
    ) -> bool {
        self.0.should_prune(trial_id, step, intermediate_values, completed_trials)
    }
}

/// The crate's nearest pruner for an Optuna spec, the mapping used, and every argument of
/// Optuna's pruner that the crate cannot express (empty: expressible).
struct Mapped {
    pruner: Box<dyn Pruner>,
    mapping: String,
    missing: Vec<String>,
}

fn int(spec: &Map<String, Value>, key: &str) -> Option<i64> {
    spec.get(key).and_then(Value::as_i64)
}

fn is_auto(spec: &Map<String, Value>, key: &str) -> bool {
    spec.get(key).and_then(Value::as_str) == Some("auto")
}

fn to_u64(v: i64, what: &str) -> u64 {
    u64::try_from(v).unwrap_or_else(|_| panic!("{what} must be >= 0, got {v}"))
}

/// Optuna 5's `PercentilePruner` / `MedianPruner` -> the crate's. Optuna's defaults:
/// `n_startup_trials=5, n_warmup_steps=0, interval_steps=1, n_min_trials=1`.
fn map_percentile(spec: &Map<String, Value>, percentile: Option<f64>, direction: Direction) -> Mapped {
    let n_startup = int(spec, "n_startup_trials").unwrap_or(5);
    let n_warmup = to_u64(int(spec, "n_warmup_steps").unwrap_or(0), "n_warmup_steps");
    let interval = int(spec, "interval_steps").unwrap_or(1);
    let n_min = usize::try_from(int(spec, "n_min_trials").unwrap_or(1)).expect("n_min_trials");
    let mut missing = Vec::new();
    if n_startup != 0 {
        missing.push(format!(
            "n_startup_trials={n_startup}{} (no equivalent: the crate prunes from the first \
             complete trial on)",
            if spec.contains_key("n_startup_trials") { "" } else { " (Optuna's default)" }
        ));
    }
    if interval != 1 {
        missing.push(format!("interval_steps={interval} (no equivalent)"));
    }
    let (pruner, mapping): (Box<dyn Pruner>, String) = match percentile {
        None => (
            Box::new(MedianPruner::new(direction).n_warmup_steps(n_warmup).n_min_trials(n_min)),
            format!("MedianPruner::new({direction:?}).n_warmup_steps({n_warmup}).n_min_trials({n_min})"),
        ),
        Some(p) => {
            // Optuna's threshold is `nanpercentile(values, p)` when minimising and
            // `nanpercentile(values, 100 - p)` when maximising; the crate takes its percentile
            // as given in both directions, so a maximised study passes it `100 - p`.
            let q = match direction {
                Direction::Minimize => p,
                Direction::Maximize => 100.0 - p,
            };
            (
                Box::new(PercentilePruner::new(q, direction).n_warmup_steps(n_warmup).n_min_trials(n_min)),
                format!(
                    "PercentilePruner::new({q}, {direction:?}).n_warmup_steps({n_warmup})\
                     .n_min_trials({n_min})"
                ),
            )
        }
    };
    Mapped { pruner, mapping, missing }
}

/// Optuna 5's `SuccessiveHalvingPruner(min_resource="auto", reduction_factor=4,
/// min_early_stopping_rate=0, bootstrap_count=0)` -> the crate's. Optuna's SHA has no maximum
/// resource; the crate's never prunes at its `max_resource` rung, so that is set to `u64::MAX`.
fn map_sha(spec: &Map<String, Value>, direction: Direction) -> Mapped {
    let mut missing = Vec::new();
    let min_resource = if is_auto(spec, "min_resource") || !spec.contains_key("min_resource") {
        missing.push("min_resource=\"auto\" (no equivalent; replayed with the crate's default 1)".into());
        1
    } else {
        to_u64(int(spec, "min_resource").expect("min_resource"), "min_resource")
    };
    let eta = to_u64(int(spec, "reduction_factor").unwrap_or(4), "reduction_factor");
    let mesr = to_u64(int(spec, "min_early_stopping_rate").unwrap_or(0), "min_early_stopping_rate");
    let bootstrap = int(spec, "bootstrap_count").unwrap_or(0);
    if bootstrap != 0 {
        missing.push(format!("bootstrap_count={bootstrap} (no equivalent)"));
    }
    let pruner = SuccessiveHalvingPruner::new()
        .min_resource(min_resource)
        .max_resource(u64::MAX)
        .reduction_factor(eta)
        .min_early_stopping_rate(mesr)
        .direction(direction);
    Mapped {
        pruner: Box::new(pruner),
        mapping: format!(
            "SuccessiveHalvingPruner::new().min_resource({min_resource}).max_resource(u64::MAX)\
             .reduction_factor({eta}).min_early_stopping_rate({mesr}).direction({direction:?})"
        ),
        missing,
    }
}

/// Optuna 5's `HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3,
/// bootstrap_count=0)` -> the crate's. Optuna assigns a trial to a bracket by
/// `crc32(f"{study_name}_{number}")` weighted by the brackets' budgets; the crate assigns
/// round-robin in the order of the trials' first `should_prune` call. With a single bracket the
/// two agree trivially.
fn map_hyperband(spec: &Map<String, Value>, direction: Direction) -> Mapped {
    let mut missing = Vec::new();
    let min_resource = to_u64(int(spec, "min_resource").unwrap_or(1), "min_resource");
    let eta = to_u64(int(spec, "reduction_factor").unwrap_or(3), "reduction_factor");
    let max_resource = if is_auto(spec, "max_resource") || !spec.contains_key("max_resource") {
        missing.push("max_resource=\"auto\" (no equivalent; replayed with the crate's default 81)".into());
        None
    } else {
        Some(to_u64(int(spec, "max_resource").expect("max_resource"), "max_resource"))
    };
    let bootstrap = int(spec, "bootstrap_count").unwrap_or(0);
    if bootstrap != 0 {
        missing.push(format!("bootstrap_count={bootstrap} (no equivalent)"));
    }
    // Optuna's number of brackets: floor(log_eta(max / min)) + 1.
    let n_brackets = max_resource.map(|max| {
        let mut n = 1u32;
        let mut r = min_resource;
        while let Some(next) = r.checked_mul(eta) {
            if next > max {
                break;
            }
            r = next;
            n += 1;
        }
        n
    });
    if n_brackets != Some(1) {
        missing.push(
            "bracket assignment by the study-name hash crc32(\"{study_name}_{number}\") \
             (no equivalent: the crate assigns round-robin)"
                .into(),
        );
    }
    let max = max_resource.unwrap_or(81);
    let pruner =
        HyperbandPruner::new().min_resource(min_resource).max_resource(max).reduction_factor(eta).direction(direction);
    Mapped {
        pruner: Box::new(pruner),
        mapping: format!(
            "HyperbandPruner::new().min_resource({min_resource}).max_resource({max})\
             .reduction_factor({eta}).direction({direction:?})"
        ),
        missing,
    }
}

fn map(spec: &Map<String, Value>, direction: Direction) -> Mapped {
    let kind = spec.get("kind").and_then(Value::as_str).expect("pruner kind");
    match kind {
        "median" => map_percentile(spec, None, direction),
        "percentile" => {
            let p = spec.get("percentile").and_then(Value::as_f64).expect("percentile");
            map_percentile(spec, Some(p), direction)
        }
        "successive_halving" => map_sha(spec, direction),
        "hyperband" => map_hyperband(spec, direction),
        "nop" => Mapped { pruner: Box::new(NopPruner), mapping: "NopPruner".into(), missing: vec![] },
        other => Mapped {
            pruner: Box::new(NopPruner),
            mapping: "none".into(),
            missing: vec![format!("pruner kind {other:?} (no equivalent)")],
        },
    }
}

#[derive(Default, Clone, Copy)]
struct Count {
    configs: usize,
    decisions: usize,
    equal: usize,
    panics: usize,
    optuna_prunes: usize,
    prunes_matched: usize,
}

impl Count {
    fn add(&mut self, out: &Outcome) {
        self.configs += 1;
        self.decisions += out.decisions;
        self.equal += out.equal;
        self.panics += out.panics;
        self.optuna_prunes += out.optuna_prunes;
        self.prunes_matched += out.prunes_matched;
    }
}

/// Equal decisions over compared decisions, e.g. `812/1000 (81.2%)`.
fn ratio(c: Count) -> String {
    if c.decisions == 0 {
        return "-".into();
    }
    #[allow(clippy::cast_precision_loss)]
    let pct = 100.0 * c.equal as f64 / c.decisions as f64;
    format!("{}/{} ({pct:.1}%)", c.equal, c.decisions)
}

/// A decision where the crate and Optuna differ.
struct Mismatch {
    trial: u64,
    step: u64,
    /// `None`: NaN.
    value: Option<f64>,
    optuna: bool,
    /// `None`: the crate's `should_prune` panicked.
    ours: Option<bool>,
}

struct Outcome {
    decisions: usize,
    equal: usize,
    /// Optuna pruned / the crate would have pruned (on Optuna's trajectory).
    optuna_prunes: usize,
    crate_prunes: usize,
    /// Optuna's prune decisions the crate also made.
    prunes_matched: usize,
    /// Calls of `should_prune` that panicked (counted as unequal decisions).
    panics: usize,
    first_mismatch: Option<Mismatch>,
    /// The first panic: (trial, step, message).
    first_panic: Option<(u64, u64, String)>,
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn replay(config: &Config, pruner: Box<dyn Pruner>, direction: Direction) -> Outcome {
    let study: Study<f64> = Study::builder().direction(direction).pruner(Boxed(pruner)).build();
    let mut out = Outcome {
        decisions: 0,
        equal: 0,
        optuna_prunes: 0,
        crate_prunes: 0,
        prunes_matched: 0,
        panics: 0,
        first_mismatch: None,
        first_panic: None,
    };
    for t in &config.trials {
        assert_eq!(t.steps.len(), t.decisions.len(), "{} trial {}", config.name, t.number);
        assert_eq!(t.values.len(), t.decisions.len(), "{} trial {}", config.name, t.number);
        let mut trial = study.ask();
        assert_eq!(trial.id(), t.number, "{}: the crate's trial id differs from Optuna's number", config.name);
        let mut pruned_at = None;
        for ((&step, &value), &expected) in t.steps.iter().zip(&t.values).zip(&t.decisions) {
            trial.report(step, value.unwrap_or(f64::NAN));
            // The crate's pruners can panic (e.g. sorting values with NaN among them): such a
            // call is recorded, counted as a mismatch, and the replay goes on.
            let got = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trial.should_prune())) {
                Ok(got) => Some(got),
                Err(payload) => {
                    out.panics += 1;
                    if out.first_panic.is_none() {
                        out.first_panic = Some((t.number, step, panic_message(payload.as_ref())));
                    }
                    None
                }
            };
            out.decisions += 1;
            out.optuna_prunes += usize::from(expected);
            out.crate_prunes += usize::from(got == Some(true));
            out.prunes_matched += usize::from(expected && got == Some(true));
            if got == Some(expected) {
                out.equal += 1;
            } else if out.first_mismatch.is_none() {
                out.first_mismatch = Some(Mismatch { trial: t.number, step, value, optuna: expected, ours: got });
            }
            if expected {
                // Optuna's trial stopped here: so does the replay.
                pruned_at = Some(step);
                break;
            }
        }
        assert_eq!(pruned_at, t.pruned_at, "{} trial {}", config.name, t.number);
        // Optuna tells a trial that ran to its end its last value (NaN -> FAIL).
        let last = t.values.last().copied().flatten();
        match (pruned_at, t.final_state.as_str()) {
            (Some(_), "PRUNED") => study.prune_trial(trial),
            (None, "COMPLETE") => study.tell(trial, Ok::<f64, &str>(last.expect("a complete trial's last value"))),
            // A NaN last value: Optuna marks the trial FAIL; the crate's failed trial.
            (None, "FAIL") => study.tell(trial, Err::<f64, &str>("NaN objective value")),
            (p, s) => panic!("{} trial {}: pruned at {p:?} but final state {s}", config.name, t.number),
        }
    }
    out
}

/// Not a vector check: the crate's single-objective samplers are not given the study's
/// direction (the `Sampler` trait receives the history's raw values). Maximising and minimising
/// `f(x) = x` on `[0, 1]` with the same seeded `TpeSampler` therefore suggest the same points;
/// a sampler that follows the direction would drift towards 1 when maximising.
fn tpe_direction_check() {
    println!("TPE direction check (f(x) = x on [0, 1], TpeSampler seed 1, 60 trials):");
    for direction in [Direction::Minimize, Direction::Maximize] {
        let sampler = TpeSampler::builder().seed(1).build().expect("TPE sampler");
        let study: Study<f64> = Study::builder().direction(direction).sampler(sampler).build();
        let x = FloatParam::new(0.0, 1.0).name("x");
        let mut late = Vec::new();
        for i in 0..60 {
            let mut trial = study.ask();
            let v = x.suggest(&mut trial).expect("suggest x");
            if i >= 40 {
                late.push(v);
            }
            study.tell(trial, Ok::<f64, &str>(v));
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        println!("  {direction:?}: mean x of trials 40..59 = {mean:.3}");
    }
    println!();
}

fn default_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crates/tune/tests/fixtures/optuna_pruners/vectors.json")
}

fn main() -> ExitCode {
    let path = std::env::args_os().nth(1).map_or_else(default_path, PathBuf::from);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let vectors: Vectors = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot parse {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // Panics inside the crate are caught and reported per configuration, not printed.
    std::panic::set_hook(Box::new(|_| {}));
    println!("optimizer crate 1.0.1 vs Optuna {} ({})", vectors.optuna_version, path.display());
    println!();

    // kind -> (expressible, all configs with the nearest mapping)
    let mut per_kind: BTreeMap<String, (Count, Count)> = BTreeMap::new();
    let mut total_expr = Count::default();
    let mut total_all = Count::default();
    for config in &vectors.configs {
        let direction = match config.direction.as_str() {
            "minimize" => Direction::Minimize,
            "maximize" => Direction::Maximize,
            other => panic!("{}: direction {other}", config.name),
        };
        let kind = config.pruner.get("kind").and_then(Value::as_str).unwrap_or("?").to_string();
        let Mapped { pruner, mapping, missing } = map(&config.pruner, direction);
        let out = replay(config, pruner, direction);
        let expressible = missing.is_empty();
        println!("{} ({}, study {:?})", config.name, config.direction, config.study_name);
        println!("  Optuna: {}", Value::Object(config.pruner.clone()));
        println!("  crate:  {mapping}");
        if expressible {
            println!("  expressible");
        } else {
            println!("  NOT EXPRESSIBLE:");
            for m in &missing {
                println!("    - {m}");
            }
        }
        println!(
            "  decisions equal {}/{}; prunes: Optuna {}, crate {}, both {}; crate panics {}",
            out.equal, out.decisions, out.optuna_prunes, out.crate_prunes, out.prunes_matched, out.panics
        );
        match out.first_mismatch {
            None => println!("  no mismatch"),
            Some(Mismatch { trial, step, value, optuna: expected, ours: got }) => println!(
                "  first mismatch: trial {trial}, step {step} (value {}): Optuna {expected}, crate {}",
                value.map_or("NaN".to_string(), |v| v.to_string()),
                got.map_or("panicked".to_string(), |g| g.to_string())
            ),
        }
        if let Some((trial, step, message)) = &out.first_panic {
            println!("  first panic: trial {trial}, step {step}: {message}");
        }
        println!();
        let entry = per_kind.entry(kind).or_default();
        entry.1.add(&out);
        total_all.add(&out);
        if expressible {
            entry.0.add(&out);
            total_expr.add(&out);
        }
    }

    // "never prune": what a pruner that always answers false would score (Optuna's keep
    // decisions), the baseline the equal counts are to be read against.
    let table = |title: &str, pick: &dyn Fn(&(Count, Count)) -> Count, total: Count| {
        println!("{title}");
        println!();
        println!(
            "| pruner kind | configs | decisions equal / compared | \"never prune\" would score | \
             Optuna's prunes also made by the crate | crate panics |"
        );
        println!("|---|---|---|---|---|---|");
        let row = |kind: &str, c: Count| {
            let never = Count { equal: c.decisions - c.optuna_prunes, ..c };
            println!(
                "| {kind} | {} | {} | {} | {}/{} | {} |",
                c.configs,
                ratio(c),
                ratio(never),
                c.prunes_matched,
                c.optuna_prunes,
                c.panics
            );
        };
        for (kind, counts) in &per_kind {
            row(kind, pick(counts));
        }
        row("all", total);
        println!();
    };
    table("Expressible configurations:", &|c| c.0, total_expr);
    table("All configurations (the others with the nearest mapping):", &|c| c.1, total_all);
    tpe_direction_check();
    ExitCode::SUCCESS
}
