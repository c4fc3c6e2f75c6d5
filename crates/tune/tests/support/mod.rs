//! Helpers shared by the sampler tests (TPE, CMA-ES): a space from YAML, numeric parameter
//! values, a sequential study driven by a sampler, its best value and a median.

#![allow(dead_code)]

use tune::{Direction, History, ParamValue, Params, Sampler, SearchSpace, TrialState, TrialSummary};

pub fn space(text: &str) -> SearchSpace {
    SearchSpace::from_yaml_str(text, "test").unwrap()
}

/// A float or int parameter's value as f64.
pub fn num(p: &Params, k: &str) -> f64 {
    match &p[k] {
        ParamValue::Float(v) => *v,
        ParamValue::Int(v) => *v as f64,
        other => panic!("{k}: {other:?}"),
    }
}

pub fn complete(number: u64, params: Params, value: f64) -> TrialSummary {
    TrialSummary { number, state: TrialState::Complete, params, value: Some(value), last_step: None }
}

/// Runs `n` trials sequentially (minimising `f`); returns the history.
pub fn run(sampler: &mut dyn Sampler, space: &SearchSpace, n: u64, f: impl Fn(&Params) -> f64) -> Vec<TrialSummary> {
    let mut trials = Vec::new();
    for t in 0..n {
        let params = sampler.sample(space, t, &History::new(Direction::Minimize, &trials)).unwrap();
        let value = f(&params);
        trials.push(complete(t, params, value));
    }
    trials
}

pub fn best(trials: &[TrialSummary]) -> f64 {
    trials.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
}
