//! Hyper-parameter search building blocks (no tensor library): what the `tune` subcommand of
//! every stage will be built from.
//!
//! - [`pruners`]: Optuna 5's `MedianPruner`, `PercentilePruner`, `SuccessiveHalvingPruner`,
//!   `HyperbandPruner` and `NopPruner`, rule for rule, over a plain record of the study
//!   ([`StudyView`], [`TrialRecord`]). Everything a pruner remembers about a trial lives in its
//!   [`TrialRecord`] (Successive Halving's completed rungs, Optuna's `completed_rung_{k}` system
//!   attributes), so a study rebuilt from the journal gives the same answers; see [`pruners`] for
//!   the one piece of state a pruner itself caches (the "auto" resources). The decisions are
//!   checked against real Optuna 5.0.0 (`tests/optuna_parity.rs`, vectors made by
//!   `scripts/optuna_pruner_vectors.py`).
//! - [`space`]: search-space files (`key: {float|int|categorical: …}`), every problem reported
//!   at once by file and key, and the values as `--set` overrides.
//! - [`samplers`]: random and grid sampling, each trial's parameters a pure function of (seed,
//!   trial number), so a resumed study suggests what an uninterrupted one would.
//! - [`tpe`]: Optuna 5's default TPE sampler: multivariate (one joint Parzen estimator over the
//!   parameters every finished trial has) with the constant liar for running trials, startup
//!   trials drawn by [`RandomSampler`], pruned trials ranked by their last step then value; the
//!   univariate sampler with `multivariate: false`. Densities and below/above splits checked
//!   against Optuna's to 1e-9.
//! - [`cmaes`]: Optuna's `CmaEsSampler` with its defaults for a sequential study (one random
//!   startup trial, the `cmaes` package's CMA-ES over the numeric parameters mapped to `[0, 1]`,
//!   categorical parameters drawn by [`RandomSampler`]), replaying the history on every call so
//!   a resumed study suggests the same values.
//! - [`study_file`]: the file `tune --space` reads: a space, or a space with the study's
//!   settings (sampler, seed, pruner, objective, trial count).
//! - [`journal`]: the study's append-only `journal.jsonl` (one fsynced record per event, an
//!   exclusive lock for appends and trial numbers, a torn last line repaired, per-trial leases
//!   telling an interrupted trial from a live one).
//! - [`report`]: a study's results from its replayed journal: `summary.csv` (written atomically),
//!   the best trial and its parameters as a nested YAML configuration, a console table, and PNG
//!   plots of the optimisation history and the intermediate values.

pub mod cmaes;
pub mod journal;
pub mod pruners;
pub mod report;
pub mod samplers;
pub mod space;
pub mod study_file;
pub mod tpe;

pub use cmaes::CmaEsSampler;
pub use journal::{Journal, JournalError, Record, Started, Study, TornTail, Trial, TrialLease};
pub use pruners::{
    Direction, HyperbandPruner, MaxResource, MedianPruner, MinResource, NopPruner, ParameterError, PercentilePruner,
    PruneError, Pruner, PrunerSpec, Resource, StudyView, SuccessiveHalvingPruner, TrialRecord, TrialState,
};
pub use report::{
    ParamsYamlError, PlotError, ResourceUnit, best_params_yaml, best_trial, plot_history, plot_intermediate,
    summary_csv, table, write_summary_csv,
};
pub use samplers::{GridSampler, History, Params, RandomSampler, SampleError, Sampler, TrialSummary};
pub use space::{Distribution, ParamValue, Problem, ProblemKind, SearchSpace, SpaceError, ValueError};
pub use study_file::{SamplerKind, StudyFile, StudySettings};
pub use tpe::TpeSampler;
