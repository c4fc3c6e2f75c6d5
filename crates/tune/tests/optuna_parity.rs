//! Every pruning decision of real Optuna 5 (vectors from `scripts/optuna_pruner_vectors.py`)
//! replayed through our pruners: same study name, same order of asks, reports and tells.

use serde::Deserialize;
use tune::{Direction, PrunerSpec, StudyView, TrialState};

#[derive(Deserialize)]
struct Vectors {
    optuna_version: String,
    configs: Vec<Config>,
}

#[derive(Deserialize)]
struct Config {
    name: String,
    study_name: String,
    direction: Direction,
    pruner: PrunerSpec,
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

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optuna_pruners/vectors.json");
    let text = std::fs::read_to_string(path).expect("read the Optuna vectors");
    serde_json::from_str(&text).expect("parse the Optuna vectors")
}

#[test]
fn every_decision_equals_optunas() {
    let vectors = vectors();
    assert!(vectors.optuna_version.starts_with("5."));
    let mut compared = 0usize;
    let mut pruned_decisions = 0usize;
    let mut kinds = std::collections::BTreeSet::new();
    for config in &vectors.configs {
        let mut pruner = config.pruner.build().unwrap_or_else(|e| panic!("{}: {e}", config.name));
        kinds.insert(format!("{:?}", config.pruner).split([' ', '{']).next().unwrap().to_string());
        let mut study = StudyView::new(&config.study_name, config.direction);
        for trial in &config.trials {
            let index = study.ask();
            assert_eq!(study.trials[index].number, trial.number, "{}", config.name);
            assert_eq!(trial.steps.len(), trial.decisions.len());
            assert_eq!(trial.values.len(), trial.decisions.len());
            let mut pruned = None;
            for ((&step, value), &expected) in trial.steps.iter().zip(&trial.values).zip(&trial.decisions) {
                let value = value.unwrap_or(f64::NAN);
                assert!(study.report(index, step, value).unwrap());
                let got = pruner.prune(&mut study, index).unwrap();
                assert_eq!(
                    got, expected,
                    "config {}, trial {}, step {step} (value {value}): ours {got}, Optuna {expected}",
                    config.name, trial.number
                );
                compared += 1;
                if got {
                    pruned_decisions += 1;
                    pruned = Some(step);
                    break;
                }
            }
            assert_eq!(pruned, trial.pruned_at, "{} trial {}", config.name, trial.number);
            // The script tells Optuna PRUNED, or the last value (NaN -> FAIL).
            let last = trial.values.last().copied().flatten();
            let state = match (pruned, last) {
                (Some(_), _) => TrialState::Pruned,
                (None, Some(_)) => TrialState::Complete,
                (None, None) => TrialState::Failed,
            };
            let optuna_state = match trial.final_state.as_str() {
                "COMPLETE" => TrialState::Complete,
                "PRUNED" => TrialState::Pruned,
                "FAIL" => TrialState::Failed,
                other => panic!("unexpected state {other}"),
            };
            assert_eq!(state, optuna_state, "{} trial {}", config.name, trial.number);
            study.finish(index, state).unwrap();
        }
    }
    // The fixture exercises every pruner, with real prunes, not only "keep going".
    assert!(compared > 2000, "{compared} decisions compared");
    assert!(pruned_decisions > 200, "{pruned_decisions} prunes");
    for kind in ["Median", "Percentile", "SuccessiveHalving", "Hyperband", "Nop"] {
        assert!(kinds.contains(kind), "no {kind} configuration in the fixture");
    }
}

/// Hyperband "auto" never prunes before a trial completes, then fixes R from it.
#[test]
fn hyperband_auto_waits_for_a_complete_trial() {
    let mut pruner = tune::HyperbandPruner::new(1, tune::Resource::Auto, 3, 0).unwrap();
    let mut study = StudyView::new("auto", Direction::Minimize);
    let first = study.ask();
    for step in 0..27 {
        study.report(first, step, 100.0 + step as f64).unwrap();
        assert!(!tune::Pruner::prune(&mut pruner, &mut study, first).unwrap());
    }
    assert_eq!(pruner.n_brackets(), None);
    study.finish(first, TrialState::Complete).unwrap();
    let second = study.ask();
    study.report(second, 0, 1.0).unwrap();
    tune::Pruner::prune(&mut pruner, &mut study, second).unwrap();
    // R = 26 + 1 = 27, log_3(27) = 3: four brackets.
    assert_eq!(pruner.n_brackets(), Some(4));
}
