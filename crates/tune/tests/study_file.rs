//! The `--space` file: a bare space, or `study:` settings with a `space:`; problems by key.

use tune::study_file::{pruner_from_flag, same_kind};
use tune::{Direction, PrunerSpec, Resource, SamplerKind, StudyFile};

fn parse(text: &str) -> Result<StudyFile, String> {
    StudyFile::from_yaml_str(text, "s.yaml").map_err(|e| e.to_string())
}

#[test]
fn a_bare_space_has_default_settings() {
    let f = parse("optimizer.lr: {float: [0.001, 0.1], log: true}\n").unwrap();
    assert_eq!(f.space.order(), ["optimizer.lr"]);
    assert_eq!(f.settings, Default::default());
}

#[test]
fn a_study_file_carries_sampler_seed_trials_objective_and_pruner() {
    let f = parse(
        "study:\n  name: s\n  sampler: cmaes\n  seed: 43\n  n_trials: 12\n  metric: val_acc\n  direction: maximize\n  \
         pruner: {kind: hyperband, min_resource: 5, max_resource: auto, reduction_factor: 3}\n\
         space:\n  distill.window: {int: [2, 8]}\n  distill.lambda: {float: [0.001, 0.1], log: true}\n",
    )
    .unwrap();
    assert_eq!(f.space.order(), ["distill.window", "distill.lambda"]);
    let s = f.settings;
    assert_eq!(s.name.as_deref(), Some("s"));
    assert_eq!(s.sampler, Some(SamplerKind::Cmaes));
    assert_eq!((s.seed, s.n_trials), (Some(43), Some(12)));
    assert_eq!((s.metric.as_deref(), s.direction), (Some("val_acc"), Some(Direction::Maximize)));
    assert_eq!(
        s.pruner,
        Some(PrunerSpec::Hyperband {
            min_resource: 5,
            max_resource: Resource::Auto,
            reduction_factor: 3,
            bootstrap_count: 0
        })
    );
}

#[test]
fn problems_name_the_file_and_the_key() {
    let e = parse("study:\n  sampler: annealing\nspace:\n  a.b: {float: [0, 1]}\n").unwrap_err();
    assert!(e.contains("s.yaml") && e.contains("study") && e.contains("annealing"), "{e}");
    let e = parse("study:\n  n_trial: 3\nspace:\n  a.b: {float: [0, 1]}\n").unwrap_err();
    assert!(e.contains("n_trial"), "{e}");
    // Settings and space problems together.
    let e =
        parse("study:\n  pruner: {kind: median, interval_steps: 0}\n  n_trials: 0\nspace:\n  a.b: {float: [1, 0]}\n")
            .unwrap_err();
    assert!(e.contains("study.pruner") && e.contains("interval_steps"), "{e}");
    assert!(e.contains("study.n_trials"), "{e}");
    assert!(e.contains("a.b") && e.contains("empty range"), "{e}");
    let e = parse("study:\n  sampler: tpe\n").unwrap_err();
    assert!(e.contains("space"), "a study without a space: {e}");
    let e = parse("study: {}\nspace: {}\nextra: 1\n").unwrap_err();
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn pruner_flags_use_optunas_defaults_and_keep_the_files_parameters_of_the_same_kind() {
    assert_eq!(
        pruner_from_flag("sha").unwrap(),
        PrunerSpec::SuccessiveHalving {
            min_resource: Resource::Auto,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
            bootstrap_count: 0
        }
    );
    assert_eq!(
        pruner_from_flag("median").unwrap(),
        PrunerSpec::Median { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 }
    );
    assert_eq!(pruner_from_flag("none").unwrap(), PrunerSpec::Nop);
    assert!(pruner_from_flag("asha").unwrap_err().contains("asha"));
    let file: PrunerSpec = serde_yaml::from_str("{kind: hyperband, min_resource: 5}").unwrap();
    assert!(same_kind(&file, &pruner_from_flag("hyperband").unwrap()));
    assert!(!same_kind(&file, &pruner_from_flag("sha").unwrap()));
}
