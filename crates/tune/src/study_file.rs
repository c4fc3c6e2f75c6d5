//! The file `tune --space` reads: the search space alone, or the space with the study's
//! settings (sampler, pruner, objective, trial count), so that one file describes a study.
//!
//! ```yaml
//! study:                       # optional; every field optional, flags override them
//!   name: hoser-distill        # Hyperband hashes it into brackets (default: the study dir's name)
//!   sampler: cmaes             # tpe | cmaes | random | grid (default tpe, as Optuna)
//!   seed: 43                   # the sampler's seed (default: the run config's `seed`)
//!   n_trials: 12
//!   metric: val_next_step_acc  # default: the stage's selection metric
//!   direction: maximize        # default: the selection metric's mode
//!   pruner: {kind: hyperband, min_resource: 5, max_resource: auto, reduction_factor: 3}
//! space:
//!   distill.lambda: {float: [1.0e-3, 1.0e-1], log: true}
//! ```
//!
//! A file without a top-level `space` key is a space file as [`crate::space`] describes it
//! (a dotted configuration key is never the bare word `space` or `study`). `pruner` takes
//! [`PrunerSpec`]'s fields with Optuna's constructor names and defaults: `kind: median`,
//! `percentile`, `successive_halving`, `hyperband` or `nop`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pruners::{Direction, PrunerSpec};
use crate::space::{Entries, Problem, ProblemKind, SearchSpace, SpaceError, read_space_file};

/// Which sampler a study uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Tpe,
    Cmaes,
    Random,
    Grid,
}

impl SamplerKind {
    pub const NAMES: &'static str = "tpe, cmaes, random or grid";

    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Tpe => "tpe",
            SamplerKind::Cmaes => "cmaes",
            SamplerKind::Random => "random",
            SamplerKind::Grid => "grid",
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "tpe" => SamplerKind::Tpe,
            "cmaes" | "cma-es" => SamplerKind::Cmaes,
            "random" => SamplerKind::Random,
            "grid" => SamplerKind::Grid,
            other => return Err(format!("expected {}, got `{other}`", Self::NAMES)),
        })
    }
}

/// The pruner a `--pruner NAME` flag names, with Optuna's defaults: `hyperband`, `sha`
/// (successive halving), `median`, `percentile` (25th, Optuna's example value) or `none`.
pub fn pruner_from_flag(name: &str) -> Result<PrunerSpec, String> {
    let text = match name {
        "hyperband" => "kind: hyperband",
        "sha" | "successive_halving" | "successive-halving" => "kind: successive_halving",
        "median" => "kind: median",
        "percentile" => "{kind: percentile, percentile: 25.0}",
        "none" | "nop" => "kind: nop",
        other => return Err(format!("expected hyperband, sha, median, percentile or none, got `{other}`")),
    };
    Ok(serde_yaml::from_str(text).expect("built-in pruner specs parse"))
}

/// Whether two pruner specs are of the same kind (a `--pruner` flag naming the file's kind
/// keeps the file's parameters).
pub fn same_kind(a: &PrunerSpec, b: &PrunerSpec) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The `study:` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySettings {
    pub name: Option<String>,
    pub sampler: Option<SamplerKind>,
    pub seed: Option<u64>,
    pub n_trials: Option<u64>,
    pub metric: Option<String>,
    pub direction: Option<Direction>,
    pub pruner: Option<PrunerSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sectioned {
    #[serde(default)]
    study: Option<serde_yaml::Value>,
    space: Entries,
}

/// A study file: its space and settings.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyFile {
    pub space: SearchSpace,
    pub settings: StudySettings,
}

impl StudyFile {
    /// Reads a space or study file (see the module docs); every problem names the file and key.
    pub fn load(path: &Path) -> Result<Self, SpaceError> {
        let (text, file) = read_space_file(path)?;
        Self::from_yaml_str(&text, &file)
    }

    pub fn from_yaml_str(text: &str, file: &str) -> Result<Self, SpaceError> {
        let fail = |key: &str, kind| SpaceError { file: file.to_string(), problems: vec![Problem::new(key, kind)] };
        let top: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| fail("", ProblemKind::Yaml(e.to_string())))?;
        let sectioned = top.as_mapping().is_some_and(|m| m.contains_key("space") || m.contains_key("study"));
        if !sectioned {
            return Ok(StudyFile {
                space: SearchSpace::from_yaml_str(text, file)?,
                settings: StudySettings::default(),
            });
        }
        let parts: Sectioned = serde_yaml::from_str(text).map_err(|e| {
            fail("", ProblemKind::Yaml(format!("{e} (a study file has the sections `study:` and `space:`)")))
        })?;
        let settings = match parts.study {
            None | Some(serde_yaml::Value::Null) => StudySettings::default(),
            Some(v) => serde_yaml::from_value::<StudySettings>(v)
                .map_err(|e| fail("study", ProblemKind::Study(e.to_string())))?,
        };
        let mut problems = Vec::new();
        if let Some(pruner) = &settings.pruner
            && let Err(e) = pruner.build()
        {
            problems.push(Problem::new("study.pruner", ProblemKind::Study(e.to_string())));
        }
        if settings.n_trials == Some(0) {
            problems.push(Problem::new("study.n_trials", ProblemKind::Study("expected at least 1 trial".into())));
        }
        if settings.metric.as_deref() == Some("") {
            problems.push(Problem::new("study.metric", ProblemKind::Study("expected a metric name".into())));
        }
        let space = SearchSpace::from_entries(parts.space.0, file);
        match space {
            Ok(space) if problems.is_empty() => Ok(StudyFile { space, settings }),
            Ok(_) => Err(SpaceError { file: file.into(), problems }),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(SpaceError { file: file.into(), problems })
            }
        }
    }
}
