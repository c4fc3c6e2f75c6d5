//! Hyper-parameter search building blocks, with no I/O and no tensor library.
//!
//! The first piece is [`pruners`]: Optuna 5's `MedianPruner`, `PercentilePruner`,
//! `SuccessiveHalvingPruner`, `HyperbandPruner` and `NopPruner`, rule for rule, over a plain
//! record of the study ([`StudyView`], [`TrialRecord`]). A driver (the future `tune`
//! subcommand) keeps the study, appends a trial's intermediate values as they are reported,
//! asks [`Pruner::prune`] after each report and marks the trial finished. Everything a pruner
//! remembers about a trial lives in its [`TrialRecord`] (Successive Halving's completed rungs,
//! Optuna's `completed_rung_{k}` system attributes), so a study rebuilt from a journal of
//! reports and decisions gives the same answers; see [`pruners`] for the one piece of state a
//! pruner itself caches (the "auto" resources).
//!
//! The decisions are checked against real Optuna 5.0.0 (`tests/optuna_parity.rs`, vectors
//! made by `scripts/optuna_pruner_vectors.py`).

pub mod journal;
pub mod pruners;
pub mod samplers;
pub mod space;

pub use journal::{Journal, JournalError, Record, Started, Study, TornTail, Trial, TrialLease};
pub use pruners::{
    Direction, HyperbandPruner, MaxResource, MedianPruner, MinResource, NopPruner, ParameterError, PercentilePruner,
    PruneError, Pruner, PrunerSpec, Resource, StudyView, SuccessiveHalvingPruner, TrialRecord, TrialState,
};
pub use samplers::{GridSampler, History, Params, RandomSampler, SampleError, Sampler, TrialSummary};
pub use space::{Distribution, ParamValue, Problem, ProblemKind, SearchSpace, SpaceError, ValueError};
