//! `<stage> tune`: hyper-parameter search over a stage's normal training runs.
//!
//! # Processes
//!
//! The `tune` process is the study's driver. It never trains: each trial is a child process,
//! the same binary's hidden `tune-trial` subcommand, which is the stage's normal run with the
//! trial's values as `--set` overrides, in `STUDY/trials/trial_NNN/`, seed = the config's
//! `seed` + trial number (as the reference tuner). The driver
//!
//! 1. resolves the base config once (flags, file, environment) and writes it to
//!    `STUDY/base_config.yaml`, which every trial reads (a changed base config, space, sampler
//!    or pruner is refused on re-run: the journal's `study` record must match);
//! 2. allocates trial numbers and samples parameters under the journal's lock
//!    ([`tune::Journal::start_trial_with`]), holding each running trial's lease;
//! 3. starts up to `--n-jobs` children, their output appended to `STUDY/logs/trial_NNN.log`,
//!    their stdin a pipe it never writes: when the driver dies, however it dies, the pipe closes
//!    and the child stops as on SIGTERM (checkpoint, exit), so no trial outlives its lease;
//! 4. records a child that died without saying why as `failed` with its exit status.
//!
//! The child reports every validation's objective value to the journal and asks the pruner in
//! one locked transaction ([`TrialReporter`]), so the rung tables are always the journal's: a
//! pruned trial stops like any policy stop (checkpoint kept) and its directory moves to
//! `STUDY/pruned/`, a finished one to `STUDY/complete/`. Its objective is the best reported
//! value (the reference tuner's `best_val_acc`).
//!
//! # Resume
//!
//! Re-running the same command marks `failed: interrupted` every RUNNING trial whose lease is
//! free (its processes died), retries each with the same number and parameters — resuming
//! from its own `checkpoint_latest` — and then samples new trials until the study holds
//! `--n-trials`. Samplers are pure functions of (seed, trial number, finished trials), so a
//! sequential study (`--n-jobs 1`) suggests the same values with or without a crash. Several
//! drivers may share one study directory (`flock` on the journal; local file systems only).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tune::journal::INTERRUPTED;
use tune::report::{self, ResourceUnit};
use tune::study_file::{pruner_from_flag, same_kind};
use tune::{
    CmaEsSampler, Direction, GridSampler, History, Journal, ParamValue, Params, Pruner, PrunerSpec, RandomSampler,
    Record, Resource, SampleError, Sampler, SamplerKind, SearchSpace, Study, StudyFile, TpeSampler, TrialState,
    TrialSummary,
};

use crate::backend::{BackendRun, DeviceSpec, run_on};
use crate::cli::{CommonArgs, Stage, StageConfig, load_config};
use crate::config::{self, ConfigSources};
use crate::interrupt::{Interrupts, Signal};
use crate::policy::{Decision, StopPolicy, Validation};
use crate::task::{Mode, Selection, Task};
use crate::train::{LoopState, StopReason, TrainError};

/// The base config every trial reads, inside the study directory.
pub const BASE_CONFIG: &str = "base_config.yaml";
/// The name of the policy that reports to the study (and prunes).
const POLICY: &str = "tune";

/// Flags of `tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// The search space: a YAML file of `config.key: {float|int|categorical: …}`, or a study
    /// file with `study:` (sampler, pruner, objective, n_trials) and `space:` sections.
    #[arg(long, value_name = "FILE")]
    pub space: PathBuf,
    /// The study directory (journal, trials, results). Re-running the same command resumes it.
    #[arg(long, value_name = "DIR")]
    pub study: PathBuf,
    /// Trials the study should hold in total (counting pruned and failed ones; a re-run with a
    /// larger number extends it). Default: the study file's `study.n_trials`, or the grid's size.
    #[arg(long, value_name = "N")]
    pub n_trials: Option<u64>,
    /// tpe (default), cmaes, random or grid.
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<String>,
    /// hyperband, sha, median (default), percentile or none.
    #[arg(long, value_name = "NAME")]
    pub pruner: Option<String>,
    /// The sampler's seed (default: the study file's `study.seed`, else the config's `seed`).
    /// Trial N trains with the config's `seed` + N.
    #[arg(long, value_name = "S")]
    pub sampler_seed: Option<u64>,
    /// Trials run at once on this machine.
    #[arg(long, value_name = "J", default_value_t = 1)]
    pub n_jobs: usize,
    /// The objective: a validation metric (default: the stage's selection metric).
    #[arg(long, value_name = "NAME")]
    pub metric: Option<String>,
    /// maximize or minimize (default: the selection metric's mode, or the study file's).
    #[arg(long, value_name = "DIR")]
    pub direction: Option<String>,
}

/// Flags of the hidden `tune-trial` subcommand (one trial, started by the driver).
#[derive(Debug, Clone, Args)]
pub struct TrialArgs {
    #[arg(long, value_name = "DIR")]
    pub study: PathBuf,
    #[arg(long)]
    pub trial: u64,
    #[arg(long)]
    pub attempt: u32,
    /// The trial's values, `KEY=VALUE`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// What a study is, as its journal's `study` record holds it: a re-run with anything else is
/// refused, so one study never mixes two searches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    pub stage: String,
    /// CRC-32C of `base_config.yaml`.
    pub base_config_crc32c: String,
    pub space: Json,
    pub sampler: SamplerKind,
    pub sampler_seed: u64,
    /// The pruner with any "auto" resource fixed from the config (so every process, and every
    /// re-run, prunes by the same rungs).
    pub pruner: PrunerSpec,
    pub metric: String,
    /// `epoch` (0-based epoch index, validation at each epoch end) or `step` (optimizer step).
    pub unit: String,
    /// The config's `seed`; trial N trains with `base_seed + N`.
    pub base_seed: u64,
}

impl StudyConfig {
    fn unit(&self) -> ResourceUnit {
        if self.unit == "step" { ResourceUnit::Step } else { ResourceUnit::Epoch }
    }
}

fn unit_name(unit: ResourceUnit) -> &'static str {
    match unit {
        ResourceUnit::Epoch => "epoch",
        ResourceUnit::Step => "step",
    }
}

/// A usage or configuration problem (exit 2) or a failure (exit 1).
enum Failure {
    Usage(String),
    Run(String),
}

impl Failure {
    fn exit(self, stage: &str) -> ExitCode {
        match self {
            Failure::Usage(m) => {
                eprintln!("{stage} tune: {m}");
                ExitCode::from(2)
            }
            Failure::Run(m) => {
                eprintln!("{stage} tune: error: {m}");
                ExitCode::from(1)
            }
        }
    }
}

fn run_err(e: impl std::fmt::Display) -> Failure {
    Failure::Run(e.to_string())
}

/// `<stage> tune`.
pub fn tune_main<S: Stage>(common: &CommonArgs, stage: &S::Args, args: &TuneArgs) -> ExitCode {
    match drive::<S>(common, stage, args) {
        Ok(code) => code,
        Err(f) => f.exit(S::NAME),
    }
}

struct Resolved {
    study: StudyConfig,
    direction: Direction,
    name: String,
    n_trials: u64,
    space: SearchSpace,
}

fn drive<S: Stage>(common: &CommonArgs, stage: &S::Args, args: &TuneArgs) -> Result<ExitCode, Failure> {
    for (given, flag) in [
        (common.output_dir.is_some(), "--output-dir"),
        (common.resume.is_some(), "--resume"),
        (common.auto_resume, "--auto-resume"),
        (common.print_config, "--print-config"),
        (common.validate_config, "--validate-config"),
    ] {
        if given {
            return Err(Failure::Usage(format!(
                "{flag} does not apply to `tune`: trials run in --study DIR/trials/trial_NNN and a re-run resumes them"
            )));
        }
    }
    if args.n_jobs == 0 {
        return Err(Failure::Usage("--n-jobs: expected at least 1".into()));
    }
    let base = load_config::<S>(common, stage).map_err(|e| Failure::Usage(e.to_string().trim_end().to_string()))?;
    let file = StudyFile::load(&args.space).map_err(|e| Failure::Usage(e.to_string()))?;
    for w in file.space.warnings() {
        eprintln!("{} tune: warning: {w}", S::NAME);
    }
    let dir = &args.study;
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::Usage(format!("--study {}: not a directory", dir.display())));
    }
    let base_yaml = config::to_yaml(&base);
    // Checked before anything is written: a bad space leaves no study directory behind.
    let scratch = std::env::temp_dir().join(format!("trainyard-tune-{}-base.yaml", std::process::id()));
    fs::write(&scratch, &base_yaml).map_err(|e| Failure::Run(format!("{}: {e}", scratch.display())))?;
    let checked = check_space_keys::<S>(&scratch, &file.space);
    let _ = fs::remove_file(&scratch);
    checked?;
    let resolved = resolve::<S>(&base, &base_yaml, &file, args, dir)?;
    fs::create_dir_all(dir).map_err(|e| Failure::Run(format!("{}: {e}", dir.display())))?;
    write_base_config(&dir.join(BASE_CONFIG), &base_yaml)?;
    let config_json = serde_json::to_value(&resolved.study).expect("study config serialises");
    let (journal, study) = match Journal::open(dir) {
        Ok((journal, study)) => {
            // An existing study keeps its name (it may have been moved); the rest must match.
            if study.config != config_json || study.direction != resolved.direction {
                return Err(Failure::Usage(format!(
                    "{} holds another study (its journal records {} {:?}); this command asks for {} {:?}: \
                     use a new --study DIR, or the same config, space, sampler, pruner and objective",
                    dir.display(),
                    study.config,
                    study.direction,
                    config_json,
                    resolved.direction
                )));
            }
            (journal, study)
        }
        Err(tune::JournalError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Journal::create(dir, resolved.name.clone(), resolved.direction, config_json).map_err(run_err)?
        }
        Err(e) => return Err(run_err(e)),
    };
    if let Some(torn) = &study.torn_tail {
        eprintln!("{} tune: warning: {torn} (left out; the next record replaces it)", S::NAME);
    }
    Driver::<S> {
        journal,
        dir: dir.clone(),
        space: resolved.space,
        config: resolved.study,
        n_trials: resolved.n_trials,
        n_jobs: args.n_jobs,
        running: Vec::new(),
        started: Instant::now(),
        _stage: std::marker::PhantomData,
    }
    .run()
}

/// Writes the resolved base config, or checks that the one there is the same.
fn write_base_config(path: &Path, yaml: &str) -> Result<(), Failure> {
    match fs::read_to_string(path) {
        Ok(existing) if existing == yaml => Ok(()),
        Ok(_) => Err(Failure::Usage(format!(
            "{} differs from the config this command resolves: the study was made with another base config \
             (use a new --study DIR, or the same --config, flags and environment)",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_file(path, yaml.as_bytes()),
        Err(e) => Err(Failure::Run(format!("{}: {e}", path.display()))),
    }
}

/// Loads the base config with each parameter at its extreme values, so an unknown key or a
/// value the config refuses is reported now, naming the key, rather than by every trial.
fn check_space_keys<S: Stage>(base: &Path, space: &SearchSpace) -> Result<(), Failure> {
    let mut problems = Vec::new();
    for key in space.order() {
        let dist = space.get(key).expect("ordered keys are parameters");
        for value in extremes(dist) {
            let flag = space.to_override(key, &value).expect("extremes lie in the space");
            let set = config::parse_set_flag(&flag).map_err(Failure::Usage)?;
            let sources = ConfigSources {
                file: Some(base.to_path_buf()),
                env: false,
                defaults: Vec::new(),
                overrides: vec![set],
                aliases: S::aliases(),
            };
            if let Err(e) = sources.load::<StageConfig<S>>() {
                problems.push(format!("{key} = {value}: {}", e.to_string().trim_end().replace('\n', "\n    ")));
                break;
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Usage(format!("the search space does not fit the config:\n  {}", problems.join("\n  "))))
    }
}

fn extremes(dist: &tune::Distribution) -> Vec<ParamValue> {
    match dist {
        tune::Distribution::Float { low, high, .. } => vec![ParamValue::Float(*low), ParamValue::Float(*high)],
        tune::Distribution::Int { low, high, .. } => vec![ParamValue::Int(*low), ParamValue::Int(*high)],
        tune::Distribution::Categorical { choices } => choices
            .iter()
            .enumerate()
            .map(|(index, value)| ParamValue::Categorical { index, value: value.clone() })
            .collect(),
    }
}

/// What the driver learns from the stage's task before any trial: its selection metric and
/// the training set's size (for an "auto" pruner resource). Building it also checks the data.
struct Probe<'a, S: Stage> {
    config: &'a StageConfig<S>,
}

impl<S: Stage> BackendRun for Probe<'_, S> {
    type Output = Result<(Selection, usize), TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _name: &str) -> Self::Output {
        let task = S::task::<B>(self.config, &device)?;
        let selection = crate::train::run_selection(Task::<B>::selection(&task), &self.config.checkpoint)?;
        Ok((selection, Task::<B>::train_len(&task)))
    }
}

fn resolve<S: Stage>(
    base: &StageConfig<S>,
    base_yaml: &str,
    file: &StudyFile,
    args: &TuneArgs,
    dir: &Path,
) -> Result<Resolved, Failure> {
    let settings = &file.settings;
    let sampler = match &args.sampler {
        Some(s) => s.parse::<SamplerKind>().map_err(|e| Failure::Usage(format!("--sampler: {e}")))?,
        None => settings.sampler.unwrap_or(SamplerKind::Tpe),
    };
    let mut pruner = match (&args.pruner, &settings.pruner) {
        (Some(flag), from_file) => {
            let spec = pruner_from_flag(flag).map_err(|e| Failure::Usage(format!("--pruner: {e}")))?;
            match from_file {
                Some(f) if same_kind(f, &spec) => f.clone(),
                _ => spec,
            }
        }
        (None, Some(f)) => f.clone(),
        (None, None) => pruner_from_flag("median").expect("built in"),
    };
    let device: DeviceSpec = base.device.parse().expect("validated");
    let (selection, train_len) = run_on(device, Probe::<S> { config: base })
        .map_err(run_err)?
        .map_err(|e| Failure::Run(format!("building the task: {e}")))?;
    let metric = args.metric.clone().or_else(|| settings.metric.clone()).unwrap_or(selection.metric.clone());
    let direction = match args.direction.as_deref() {
        Some("maximize" | "max") => Direction::Maximize,
        Some("minimize" | "min") => Direction::Minimize,
        Some(other) => {
            return Err(Failure::Usage(format!("--direction: expected maximize or minimize, got `{other}`")));
        }
        None => match settings.direction {
            Some(d) => d,
            None if metric == selection.metric => match selection.mode {
                Mode::Max => Direction::Maximize,
                Mode::Min => Direction::Minimize,
            },
            None => {
                return Err(Failure::Usage(format!(
                    "the objective `{metric}` is not the stage's selection metric `{}`: give --direction maximize|minimize",
                    selection.metric
                )));
            }
        },
    };
    let unit = if base.training.val_every.is_none() { ResourceUnit::Epoch } else { ResourceUnit::Step };
    let last_step = last_report_step::<S>(base, train_len, unit)?;
    let pinned = pin_auto_resources(&mut pruner, last_step);
    pruner.build().map_err(|e| {
        let origin = pinned.map(|p| format!(" ({p}, from the base config's budget)")).unwrap_or_default();
        Failure::Usage(format!("pruner: {e}{origin}"))
    })?;
    let n_trials = match (args.n_trials, settings.n_trials, sampler) {
        (Some(0), ..) => return Err(Failure::Usage("--n-trials: expected at least 1".into())),
        (Some(n), ..) | (None, Some(n), _) => n,
        (None, None, SamplerKind::Grid) => {
            GridSampler::grid_len(&file.space).map_err(|e| Failure::Usage(e.to_string()))?
        }
        (None, None, _) => {
            return Err(Failure::Usage("give --n-trials N (or `study.n_trials` in the space file)".into()));
        }
    };
    let name = settings.name.clone().unwrap_or_else(|| {
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        absolute
            .components()
            .next_back()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_else(|| "study".into())
    });
    let study = StudyConfig {
        stage: S::NAME.into(),
        base_config_crc32c: format!("{:08x}", crc32c::crc32c(base_yaml.as_bytes())),
        space: serde_json::to_value(&file.space).expect("spaces serialise"),
        sampler,
        sampler_seed: args.sampler_seed.or(settings.seed).unwrap_or(base.seed),
        pruner,
        metric,
        unit: unit_name(unit).into(),
        base_seed: base.seed,
    };
    Ok(Resolved { study, direction, name, n_trials, space: file.space.clone() })
}

/// The step of a full trial's last report: the last 0-based epoch, or the last validated
/// optimizer step.
fn last_report_step<S: Stage>(base: &StageConfig<S>, train_len: usize, unit: ResourceUnit) -> Result<u64, Failure> {
    let t = &base.training;
    let steps_per_epoch = t.steps_per_epoch(train_len, base.debug.overfit_single_batch).max(1);
    let total = match (t.max_steps, t.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * steps_per_epoch,
        (None, None) => {
            return Err(Failure::Usage("the base config sets neither training.epochs nor training.max_steps".into()));
        }
    };
    Ok(match unit {
        ResourceUnit::Epoch => t.epochs.unwrap_or(total.div_ceil(steps_per_epoch)).saturating_sub(1),
        ResourceUnit::Step => {
            let every = t.val_every.unwrap_or(1).max(1);
            (total / every) * every
        }
    })
}

/// Fixes Optuna's "auto" resources to what Optuna would find from a full-length trial: Hyperband's
/// `max_resource` = last step + 1, Successive Halving's `min_resource` = max(last step / 100, 1).
/// Returns what it fixed, for messages.
fn pin_auto_resources(pruner: &mut PrunerSpec, last_step: u64) -> Option<String> {
    match pruner {
        PrunerSpec::Hyperband { max_resource, .. } if *max_resource == Resource::Auto => {
            *max_resource = Resource::Steps(last_step as i64 + 1);
            Some(format!("max_resource auto = last report step {last_step} + 1"))
        }
        PrunerSpec::SuccessiveHalving { min_resource, .. } if *min_resource == Resource::Auto => {
            *min_resource = Resource::Steps((last_step as i64 / 100).max(1));
            Some(format!("min_resource auto = max(last report step {last_step} / 100, 1)"))
        }
        _ => None,
    }
}

fn sampler(kind: SamplerKind, seed: u64) -> Box<dyn Sampler> {
    match kind {
        SamplerKind::Tpe => Box::new(TpeSampler::new(seed)),
        SamplerKind::Cmaes => Box::new(CmaEsSampler::new(seed)),
        SamplerKind::Random => Box::new(RandomSampler::new(seed)),
        SamplerKind::Grid => Box::new(GridSampler::new(seed)),
    }
}

/// A trial's parameters as the space's values (journal values are checked against it).
fn params_of(space: &SearchSpace, params: &Map<String, Json>) -> Result<Params, String> {
    let mut out = Params::new();
    for (key, json) in params {
        let dist = space.get(key).ok_or_else(|| format!("parameter {key} is not in the space"))?;
        let yaml: serde_yaml::Value = serde_yaml::to_value(json).map_err(|e| e.to_string())?;
        let value = dist.value_from_yaml(&yaml).ok_or_else(|| format!("{key} = {json} is outside the space"))?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// The samplers' view of the study (a pruned trial's value is its last report, as Optuna's TPE).
fn history(space: &SearchSpace, study: &Study) -> Vec<TrialSummary> {
    study
        .trials
        .iter()
        .map(|t| TrialSummary {
            number: t.number,
            state: t.state,
            params: params_of(space, &t.params).unwrap_or_default(),
            value: match t.state {
                TrialState::Complete => t.value,
                TrialState::Pruned => t.intermediate.values().next_back().copied(),
                _ => None,
            },
            last_step: match t.state {
                TrialState::Pruned => t.intermediate.keys().next_back().copied(),
                _ => None,
            },
        })
        .collect()
}

fn trial_dir(dir: &Path, number: u64) -> PathBuf {
    dir.join("trials").join(trial_name(number))
}

fn trial_name(number: u64) -> String {
    format!("trial_{number:03}")
}

/// `key=value` of each parameter, in the space file's order.
fn describe(space: &SearchSpace, params: &Params) -> String {
    space.order().iter().filter_map(|k| params.get(k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
}

/// Moves a finished trial's directory to `complete/` or `pruned/` (idempotent: a directory
/// already moved, by the trial itself or an earlier driver, is left where it is).
fn tidy(dir: &Path, study: &Study) {
    for t in &study.trials {
        let to = match t.state {
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            _ => continue,
        };
        let _ = move_trial(dir, t.number, to);
    }
}

fn move_trial(dir: &Path, number: u64, to: &str) -> io::Result<()> {
    let from = trial_dir(dir, number);
    let target = dir.join(to).join(trial_name(number));
    if !from.exists() || target.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir.join(to))?;
    fs::rename(&from, &target)
}

struct Running {
    number: u64,
    attempt: u32,
    child: Child,
    /// Closing it tells the child to stop (its EOF watcher).
    stdin: Option<ChildStdin>,
    _lease: tune::TrialLease,
    reported: usize,
    log: PathBuf,
}

struct Driver<S: Stage> {
    journal: Journal,
    dir: PathBuf,
    space: SearchSpace,
    config: StudyConfig,
    n_trials: u64,
    n_jobs: usize,
    running: Vec<Running>,
    started: Instant,
    _stage: std::marker::PhantomData<S>,
}

impl<S: Stage> Driver<S> {
    fn say(&self, line: impl AsRef<str>) {
        println!("{} tune: {}", S::NAME, line.as_ref());
    }

    fn run(mut self) -> Result<ExitCode, Failure> {
        let interrupts = Interrupts::install().map_err(|e| Failure::Run(format!("installing signal handlers: {e}")))?;
        let marked = self.journal.mark_interrupted().map_err(run_err)?;
        let study = self.journal.study().clone();
        tidy(&self.dir, &study);
        let done = study.trials.iter().filter(|t| t.state != TrialState::Running).count();
        if !study.trials.is_empty() {
            self.say(format!(
                "resuming study {} ({} trials recorded, {done} finished{})",
                self.dir.display(),
                study.trials.len(),
                if marked.is_empty() { String::new() } else { format!("; interrupted: {marked:?}") }
            ));
        }
        self.say(format!(
            "{} trials, sampler {} (seed {}), pruner {}, objective {} ({:?}) per {}",
            self.n_trials,
            self.config.sampler,
            self.config.sampler_seed,
            serde_json::to_string(&self.config.pruner).unwrap_or_default(),
            self.config.metric,
            study.direction,
            self.config.unit
        ));
        let mut sampler = sampler(self.config.sampler, self.config.sampler_seed);
        let mut exhausted = false;
        let mut interrupted: Option<Signal> = None;
        loop {
            if interrupted.is_none()
                && let Some(signal) = interrupts.received()
            {
                interrupted = Some(signal);
                self.say(format!("{}: stopping the running trials (they save a checkpoint)", signal.name()));
                for r in &mut self.running {
                    r.stdin = None;
                }
            }
            while interrupted.is_none() && self.running.len() < self.n_jobs {
                match self.next_trial(sampler.as_mut(), &mut exhausted)? {
                    Some(r) => self.running.push(r),
                    None => break,
                }
            }
            if self.running.is_empty() {
                break;
            }
            self.poll()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let study = self.journal.refresh().map_err(run_err)?.clone();
        tidy(&self.dir, &study);
        self.write_results(&study, true)?;
        if let Some(signal) = interrupted {
            self.say("interrupted: re-run the same command to resume the study");
            return Ok(ExitCode::from(signal.exit_code()));
        }
        let elsewhere = study.trials.iter().filter(|t| t.state == TrialState::Running).count();
        if elsewhere > 0 {
            self.say(format!("{elsewhere} trial(s) still running in other processes"));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Starts the next piece of work: an interrupted trial's retry, else a new trial.
    fn next_trial(&mut self, sampler: &mut dyn Sampler, exhausted: &mut bool) -> Result<Option<Running>, Failure> {
        let study = self.journal.refresh().map_err(run_err)?.clone();
        let mine: Vec<u64> = self.running.iter().map(|r| r.number).collect();
        for t in &study.trials {
            if t.state == TrialState::Failed
                && t.fail_reason.as_deref() == Some(INTERRUPTED)
                && !mine.contains(&t.number)
            {
                match self.journal.retry_trial(t.number) {
                    Ok(started) => {
                        let params = params_of(&self.space, &t.params).map_err(Failure::Run)?;
                        self.say(format!(
                            "trial {} retried (attempt {}, from its checkpoint): {}",
                            t.number,
                            started.attempt,
                            describe(&self.space, &params)
                        ));
                        return self.spawn(started, &params).map(Some);
                    }
                    // Another driver took it first.
                    Err(tune::JournalError::Refused { .. }) => continue,
                    Err(e) => return Err(run_err(e)),
                }
            }
        }
        if *exhausted {
            return Ok(None);
        }
        let (space, n_trials, direction) = (&self.space, self.n_trials, study.direction);
        let started = self
            .journal
            .start_trial_with(|number, study| {
                if number >= n_trials {
                    return Ok(None);
                }
                let trials = history(space, study);
                let params = sampler.sample(space, number, &History::new(direction, &trials))?;
                let json: Map<String, Json> = params
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::to_value(v.to_yaml()).expect("YAML scalars are JSON")))
                    .collect();
                Ok::<_, SampleError>(Some(json))
            })
            .map_err(run_err)?;
        let started = match started {
            Ok(Some(s)) => s,
            Ok(None) => {
                *exhausted = true;
                return Ok(None);
            }
            Err(SampleError::GridExhausted { points }) => {
                self.say(format!("the grid's {points} points are all taken: no more trials"));
                *exhausted = true;
                return Ok(None);
            }
            Err(e) => return Err(Failure::Run(e.to_string())),
        };
        let t = &self.journal.study().trials[started.number as usize];
        let params = params_of(&self.space, &t.params).map_err(Failure::Run)?;
        self.say(format!("trial {} started: {}", started.number, describe(&self.space, &params)));
        self.spawn(started, &params).map(Some)
    }

    fn spawn(&self, started: tune::Started, params: &Params) -> Result<Running, Failure> {
        let logs = self.dir.join("logs");
        fs::create_dir_all(&logs).map_err(|e| Failure::Run(format!("{}: {e}", logs.display())))?;
        let log = logs.join(format!("{}.log", trial_name(started.number)));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Failure::Run(format!("{}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| Failure::Run(format!("{}: {e}", log.display())))?;
        let exe = std::env::current_exe().map_err(|e| Failure::Run(format!("finding this program: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.arg("tune-trial")
            .arg("--study")
            .arg(&self.dir)
            .arg("--trial")
            .arg(started.number.to_string())
            .arg("--attempt")
            .arg(started.attempt.to_string());
        for (key, value) in params {
            cmd.arg("--set").arg(self.space.to_override(key, value).map_err(run_err)?);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Failure::Run(format!("starting trial {}: {e}", started.number)))?;
        let stdin = child.stdin.take();
        Ok(Running {
            number: started.number,
            attempt: started.attempt,
            child,
            stdin,
            _lease: started.lease,
            reported: 0,
            log,
        })
    }

    /// Prints new reports of the running trials and settles the ones that ended.
    fn poll(&mut self) -> Result<(), Failure> {
        let study = self.journal.refresh().map_err(run_err)?.clone();
        let mut ended = Vec::new();
        for (i, r) in self.running.iter_mut().enumerate() {
            let t = &study.trials[r.number as usize];
            for (step, value) in t.intermediate.iter().skip(r.reported) {
                println!(
                    "{} tune: trial {} {} {step}: {} = {value}",
                    S::NAME,
                    r.number,
                    self.config.unit,
                    self.config.metric
                );
            }
            r.reported = t.intermediate.len();
            if let Some(status) = r.child.try_wait().map_err(|e| Failure::Run(format!("trial {}: {e}", r.number)))? {
                ended.push((i, status));
            }
        }
        for (i, status) in ended.into_iter().rev() {
            let r = self.running.remove(i);
            self.settle(r, status)?;
        }
        Ok(())
    }

    fn settle(&mut self, r: Running, status: ExitStatus) -> Result<(), Failure> {
        let (number, attempt) = (r.number, r.attempt);
        let log = r.log.clone();
        let reason =
            format!("the trial process ended with {status} without recording an outcome; see {}", log.display());
        let outcome = self
            .journal
            .transact(|study| {
                let t = &study.trials[number as usize];
                if t.state == TrialState::Running && t.attempt == attempt {
                    (vec![Record::Failed { number, reason: reason.clone() }], true)
                } else {
                    (Vec::new(), false)
                }
            })
            .map_err(run_err)?;
        drop(r);
        let study = self.journal.study().clone();
        tidy(&self.dir, &study);
        let t = &study.trials[number as usize];
        let metric = &self.config.metric;
        let best = report::best_trial(&study).map(|b| format!("best so far: trial {}, {}", b.number, fmt_opt(b.value)));
        let line = match t.state {
            TrialState::Complete => {
                format!("trial {number} complete: {metric} = {} ({})", fmt_opt(t.value), best.unwrap_or_default())
            }
            TrialState::Pruned => format!(
                "trial {number} pruned at {} {}: {metric} = {}",
                self.config.unit,
                t.pruned_at.unwrap_or(0),
                fmt_opt(t.pruned_at.and_then(|s| t.intermediate.get(&s).copied()))
            ),
            TrialState::Failed if t.fail_reason.as_deref() == Some(INTERRUPTED) => {
                format!("trial {number} interrupted (resumable from its checkpoint)")
            }
            TrialState::Failed => {
                let tail = last_line(&log);
                format!(
                    "trial {number} failed: {}{}",
                    t.fail_reason.as_deref().unwrap_or("?"),
                    if outcome && !tail.is_empty() { format!(" (last line: {tail})") } else { String::new() }
                )
            }
            TrialState::Running => format!("trial {number} is running again elsewhere"),
        };
        self.say(line);
        self.write_results(&study, false)
    }

    fn write_results(&self, study: &Study, print: bool) -> Result<(), Failure> {
        let unit = self.config.unit();
        let dir = &self.dir;
        report::write_summary_csv(dir.join("summary.csv"), study, &self.space, unit)
            .map_err(|e| Failure::Run(format!("{}: {e}", dir.join("summary.csv").display())))?;
        if let Some(best) = report::best_trial(study) {
            let yaml = report::best_params_yaml(best, &self.space).map_err(|e| Failure::Run(e.to_string()))?;
            write_file(&dir.join("best_params.yaml"), yaml.as_bytes())?;
            self.write_best_config(best)?;
        }
        if let Err(e) = report::plot_history(study, dir.join("history.png")) {
            eprintln!("{} tune: warning: {e}", S::NAME);
        }
        if let Err(e) = report::plot_intermediate(study, dir.join("intermediate.png"), unit) {
            eprintln!("{} tune: warning: {e}", S::NAME);
        }
        if print {
            print!("{}", report::table(study, &self.space, unit));
            println!(
                "{} tune: wrote {}/{{summary.csv, best_params.yaml, best_config.yaml, history.png, intermediate.png}} \
                 ({:.1} s)",
                S::NAME,
                dir.display(),
                self.started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// `best_config.yaml`: the base config with the best trial's values (seed and output
    /// directory the base config's), ready for `--config`.
    fn write_best_config(&self, best: &tune::Trial) -> Result<(), Failure> {
        let params = params_of(&self.space, &best.params).map_err(Failure::Run)?;
        let mut overrides = Vec::new();
        for (key, value) in &params {
            let flag = self.space.to_override(key, value).map_err(run_err)?;
            overrides.push(config::parse_set_flag(&flag).map_err(Failure::Run)?);
        }
        let sources = ConfigSources {
            file: Some(self.dir.join(BASE_CONFIG)),
            env: false,
            defaults: Vec::new(),
            overrides,
            aliases: S::aliases(),
        };
        let config: StageConfig<S> = sources.load().map_err(|e| Failure::Run(e.to_string()))?;
        let text = format!(
            "# the base config of study {} with trial {}'s values ({} = {})\n{}",
            self.dir.display(),
            best.number,
            self.config.metric,
            fmt_opt(best.value),
            config::to_yaml(&config)
        );
        write_file(&self.dir.join("best_config.yaml"), text.as_bytes())
    }
}

/// Writes a whole file through a synced temporary file renamed over it (never a torn file).
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    checkpoints::atomic::write_atomic(path, |f| f.write_all(bytes), || {})
        .map_err(|e| Failure::Run(format!("{}: {e}", path.display())))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into())
}

fn last_line(path: &Path) -> String {
    let mut text = String::new();
    if File::open(path).and_then(|mut f| f.read_to_string(&mut text)).is_err() {
        return String::new();
    }
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().chars().take(300).collect()
}

// ---------------------------------------------------------------------------------------------
// The trial process.

/// Reports every validation's objective value to the study and asks its pruner, in one locked
/// journal transaction; stops the run when the trial is pruned (or was taken over by another
/// process after this one lost its driver).
pub struct TrialReporter {
    journal: Journal,
    number: u64,
    attempt: u32,
    metric: String,
    unit: ResourceUnit,
    pruner: Box<dyn Pruner>,
    pruner_name: String,
    min_steps: u64,
}

enum Verdict {
    Continue,
    Pruned,
    NotOurs(String),
}

impl StopPolicy for TrialReporter {
    fn name(&self) -> &str {
        POLICY
    }

    fn after_validation(&mut self, v: &Validation<'_>) -> Decision {
        let Some(&value) = v.metrics.get(&self.metric) else {
            return Decision {
                stop: Some(format!(
                    "the study's objective `{}` is not among the validation metrics ({})",
                    self.metric,
                    v.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                abort: true,
                ..Decision::default()
            };
        };
        let step = match self.unit {
            ResourceUnit::Epoch => v.epoch,
            ResourceUnit::Step => v.step,
        };
        let (number, attempt, ask) = (self.number, self.attempt, v.step >= self.min_steps);
        let pruner = &mut self.pruner;
        let verdict = self.journal.transact(|study| {
            let Some(t) = study.trials.get(number as usize) else {
                return (Vec::new(), Verdict::NotOurs(format!("trial {number} is not in the journal")));
            };
            if t.state != TrialState::Running || t.attempt != attempt {
                return (
                    Vec::new(),
                    Verdict::NotOurs(format!("trial {number} is now {:?} at attempt {}", t.state, t.attempt)),
                );
            }
            let mut records = Vec::new();
            if !t.intermediate.contains_key(&step) {
                records.push(Record::Intermediate { number, step, value });
            }
            if !ask {
                return (records, Verdict::Continue);
            }
            let mut view = study.view();
            let index = number as usize;
            let _ = view.report(index, step, value);
            let before = view.trials[index].completed_rungs.len();
            let prune = pruner.prune(&mut view, index).unwrap_or(false);
            for (rung, value) in view.trials[index].completed_rungs.iter().enumerate().skip(before) {
                records.push(Record::Rung { number, rung, value: *value });
            }
            if prune {
                records.push(Record::Pruned { number, step });
                (records, Verdict::Pruned)
            } else {
                (records, Verdict::Continue)
            }
        });
        let unit = unit_name(self.unit);
        match verdict {
            Ok(Verdict::Continue) => Decision {
                event: Some(("tune_report".into(), serde_json::json!({"trial": number, unit: step, "value": value}))),
                ..Decision::default()
            },
            Ok(Verdict::Pruned) => Decision {
                stop: Some(format!(
                    "trial {number} pruned by {} at {unit} {step} ({} = {value})",
                    self.pruner_name, self.metric
                )),
                notes: vec![format!("✂ trial {number} pruned at {unit} {step}")],
                event: Some((
                    "tune_pruned".into(),
                    serde_json::json!({"trial": number, unit: step, "value": value, "pruner": self.pruner_name}),
                )),
                ..Decision::default()
            },
            Ok(Verdict::NotOurs(why)) => {
                Decision { stop: Some(format!("{why}: this attempt stops")), abort: true, ..Decision::default() }
            }
            Err(e) => {
                Decision { stop: Some(format!("recording to the study: {e}")), abort: true, ..Decision::default() }
            }
        }
    }
}

/// Runs one trial: the stage's task with the study's reporter among its stop policies.
struct TrialWork<'a, S: Stage> {
    config: &'a StageConfig<S>,
    interrupts: Interrupts,
    reporter: TrialReporter,
}

impl<S: Stage> BackendRun for TrialWork<'_, S> {
    type Output = Result<(StopReason, LoopState), TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output {
        tracing::info!("backend: {name}");
        let dir = &self.config.output_dir;
        fs::create_dir_all(dir)
            .map_err(|e| TrainError::Io(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))))?;
        crate::cli::train_with::<S, B>(self.config, &device, self.interrupts, Some(self.reporter))
    }
}

/// `<stage> tune-trial` (hidden; started by `tune`): one attempt of one trial.
pub fn trial_main<S: Stage>(args: &TrialArgs) -> ExitCode {
    match run_trial::<S>(args) {
        Ok(code) => code,
        Err(f) => f.exit(S::NAME),
    }
}

fn run_trial<S: Stage>(args: &TrialArgs) -> Result<ExitCode, Failure> {
    let dir = &args.study;
    let (mut journal, study) = Journal::open(dir).map_err(run_err)?;
    let cfg: StudyConfig = serde_json::from_value(study.config.clone())
        .map_err(|e| Failure::Run(format!("{}: the study record is not a tune study: {e}", dir.display())))?;
    let (number, attempt) = (args.trial, args.attempt);
    // Another attempt of this trial may still be saving its checkpoint (its driver died):
    // wait for it, so that two processes never train in one directory.
    let locks = dir.join(tune::journal::LOCKS_DIR);
    fs::create_dir_all(&locks).map_err(|e| Failure::Run(format!("{}: {e}", locks.display())))?;
    let run_lock_path = locks.join(format!("run-{number}.lock"));
    let run_lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&run_lock_path)
        .map_err(|e| Failure::Run(format!("{}: {e}", run_lock_path.display())))?;
    run_lock.lock().map_err(|e| Failure::Run(format!("{}: {e}", run_lock_path.display())))?;

    let out = trial_dir(dir, number);
    let mut overrides = Vec::new();
    for flag in &args.set {
        overrides.push(config::parse_set_flag(flag).map_err(Failure::Usage)?);
    }
    let put = |o: &mut Vec<(String, Value)>, k: &str, v: Value| o.push((k.to_string(), v));
    put(&mut overrides, "seed", Value::from(cfg.base_seed + number));
    put(&mut overrides, "output_dir", Value::from(out.display().to_string()));
    put(&mut overrides, "resume.auto", Value::from(true));
    put(&mut overrides, "resume.path", config::null());
    put(&mut overrides, "logging.log_dir", config::null());
    put(&mut overrides, "logging.tensorboard_dir", config::null());
    put(&mut overrides, "logging.progress", Value::from("plain"));
    let sources = ConfigSources {
        file: Some(dir.join(BASE_CONFIG)),
        env: false,
        defaults: Vec::new(),
        overrides,
        aliases: S::aliases(),
    };
    let config: StageConfig<S> = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            let reason = format!("config: {}", e.to_string().trim_end());
            record_end(&mut journal, number, attempt, Record::Failed { number, reason: reason.clone() })?;
            return Err(Failure::Usage(reason));
        }
    };
    let pruner = cfg.pruner.build().map_err(|e| Failure::Run(format!("pruner: {e}")))?;
    let pruner_name = serde_json::to_value(&cfg.pruner)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_else(|| "the pruner".into());
    let reporter = TrialReporter {
        journal: Journal::open(dir).map_err(run_err)?.0,
        number,
        attempt,
        metric: cfg.metric.clone(),
        unit: cfg.unit(),
        pruner,
        pruner_name,
        min_steps: config.training.min_steps,
    };
    let interrupts = Interrupts::install().map_err(|e| Failure::Run(format!("installing signal handlers: {e}")))?;
    watch_driver(interrupts.clone());
    let device: DeviceSpec = config.device.parse().map_err(|e| Failure::Usage(format!("{e}")))?;
    let outcome = run_on(device, TrialWork::<S> { config: &config, interrupts, reporter })
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let study = journal.refresh().map_err(run_err)?.clone();
    let direction = study.direction;
    let reported = study.trials.get(number as usize).map(|t| t.intermediate.clone()).unwrap_or_default();
    let (record, code, to) = match outcome {
        Ok((StopReason::Requested { policy, .. }, _)) if policy == POLICY => (None, ExitCode::SUCCESS, Some("pruned")),
        Ok((StopReason::Budget | StopReason::Requested { .. }, _)) => {
            match report::best_of(direction, reported.values().copied()) {
                Some(value) => (Some(Record::Completed { number, value }), ExitCode::SUCCESS, Some("complete")),
                None => (
                    Some(Record::Failed {
                        number,
                        reason: format!("the run ended without a validation reporting `{}`", cfg.metric),
                    }),
                    ExitCode::from(1),
                    None,
                ),
            }
        }
        Ok((StopReason::Interrupted(signal), _)) => {
            (Some(Record::Failed { number, reason: INTERRUPTED.into() }), ExitCode::from(signal.exit_code()), None)
        }
        Ok((StopReason::Aborted { policy, reason }, state)) => (
            Some(Record::Failed {
                number,
                reason: format!("aborted by {policy} after optimizer step {}: {reason}", state.step),
            }),
            ExitCode::from(1),
            None,
        ),
        Err(message) => (Some(Record::Failed { number, reason: message }), ExitCode::from(1), None),
    };
    if let Some(record) = record {
        if let Record::Failed { reason, .. } = &record {
            eprintln!("{} tune-trial: trial {number}: {reason}", S::NAME);
        }
        record_end(&mut journal, number, attempt, record)?;
    }
    if let Some(to) = to {
        let _ = move_trial(dir, number, to);
    }
    drop(run_lock);
    Ok(code)
}

/// Appends a trial's final record if the trial is still this attempt's.
fn record_end(journal: &mut Journal, number: u64, attempt: u32, record: Record) -> Result<(), Failure> {
    journal
        .transact(|study| match study.trials.get(number as usize) {
            Some(t) if t.state == TrialState::Running && t.attempt == attempt => (vec![record], ()),
            _ => (Vec::new(), ()),
        })
        .map_err(run_err)
}

/// Stops the run (as SIGTERM does) when stdin closes: the driver died or asked it to stop.
fn watch_driver(interrupts: Interrupts) {
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = io::stdin();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        interrupts.request(Signal::Terminate);
    });
}
