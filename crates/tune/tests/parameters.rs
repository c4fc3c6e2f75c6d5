//! Out-of-range pruner parameters are typed errors naming the parameter, never panics.

use tune::{
    HyperbandPruner, MedianPruner, ParameterError, PercentilePruner, PruneError, Pruner, PrunerSpec, Resource,
    StudyView, SuccessiveHalvingPruner,
};

fn name_of<T: std::fmt::Debug>(r: Result<T, ParameterError>) -> &'static str {
    r.expect_err("should be refused").name
}

#[test]
fn percentile_and_median_refuse_out_of_range() {
    assert_eq!(name_of(PercentilePruner::new(-0.1, 5, 0, 1, 1)), "percentile");
    assert_eq!(name_of(PercentilePruner::new(100.5, 5, 0, 1, 1)), "percentile");
    assert_eq!(name_of(PercentilePruner::new(f64::NAN, 5, 0, 1, 1)), "percentile");
    assert_eq!(name_of(PercentilePruner::new(50.0, -1, 0, 1, 1)), "n_startup_trials");
    assert_eq!(name_of(PercentilePruner::new(50.0, 5, -1, 1, 1)), "n_warmup_steps");
    assert_eq!(name_of(PercentilePruner::new(50.0, 5, 0, 0, 1)), "interval_steps");
    assert_eq!(name_of(PercentilePruner::new(50.0, 5, 0, 1, 0)), "n_min_trials");
    assert_eq!(name_of(MedianPruner::new(-3, 0, 1, 1)), "n_startup_trials");
    // The bounds themselves are allowed.
    assert!(PercentilePruner::new(0.0, 0, 0, 1, 1).is_ok());
    assert!(PercentilePruner::new(100.0, 0, 0, 1, 1).is_ok());
}

#[test]
fn successive_halving_refuses_out_of_range() {
    let sha = SuccessiveHalvingPruner::new;
    assert_eq!(name_of(sha(Resource::Steps(0), 4, 0, 0)), "min_resource");
    assert_eq!(name_of(sha(Resource::Steps(1), 1, 0, 0)), "reduction_factor");
    assert_eq!(name_of(sha(Resource::Steps(1), 4, -1, 0)), "min_early_stopping_rate");
    assert_eq!(name_of(sha(Resource::Steps(1), 4, 0, -1)), "bootstrap_count");
    // Optuna: bootstrap_count > 0 and min_resource == 'auto' are mutually incompatible.
    assert_eq!(name_of(sha(Resource::Auto, 4, 0, 1)), "bootstrap_count");
    assert!(sha(Resource::Auto, 2, 0, 0).is_ok());
}

#[test]
fn hyperband_refuses_out_of_range() {
    let hb = HyperbandPruner::new;
    assert_eq!(name_of(hb(0, Resource::Steps(9), 3, 0)), "min_resource");
    assert_eq!(name_of(hb(1, Resource::Steps(9), 1, 0)), "reduction_factor");
    assert_eq!(name_of(hb(1, Resource::Steps(9), 3, -2)), "bootstrap_count");
    assert_eq!(name_of(hb(5, Resource::Steps(4), 3, 0)), "max_resource");
    assert_eq!(name_of(hb(1, Resource::Auto, 3, 1)), "bootstrap_count");
    assert!(hb(5, Resource::Steps(5), 3, 0).is_ok());
}

#[test]
fn specs_parse_with_optunas_defaults_and_refuse_bad_values() {
    let spec: PrunerSpec = serde_json_from(r#"{"kind": "median"}"#);
    assert_eq!(spec, PrunerSpec::Median { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 });
    let spec: PrunerSpec = serde_json_from(r#"{"kind": "successive_halving"}"#);
    assert_eq!(
        spec,
        PrunerSpec::SuccessiveHalving {
            min_resource: Resource::Auto,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
            bootstrap_count: 0
        }
    );
    let spec: PrunerSpec = serde_json_from(r#"{"kind": "hyperband", "max_resource": 8, "min_resource": 5}"#);
    assert!(spec.build().is_ok());
    let spec: PrunerSpec = serde_json_from(r#"{"kind": "hyperband", "reduction_factor": 1}"#);
    assert_eq!(spec.build().err().unwrap().name, "reduction_factor");
    assert!(serde_json::from_str::<PrunerSpec>(r#"{"kind": "hyperband", "max_resource": "big"}"#).is_err());
    assert!(serde_json::from_str::<PrunerSpec>(r#"{"kind": "median", "percentile": 3}"#).is_err());
}

#[test]
fn an_unknown_trial_index_is_an_error() {
    let mut study = StudyView::new("s", tune::Direction::Minimize);
    let mut pruner = MedianPruner::new(5, 0, 1, 1).unwrap();
    assert_eq!(pruner.prune(&mut study, 0), Err(PruneError::UnknownTrial { index: 0, len: 0 }));
}

fn serde_json_from<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap()
}
