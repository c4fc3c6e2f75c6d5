//! Resuming: which checkpoint a run continues from (`resume.path`, `resume.auto`), whether it
//! belongs to this run, restoring every piece of loop state from it, and setting an earlier
//! run aside (`archived/`) when this one starts fresh. Nothing of an earlier run is deleted or
//! overwritten here: it is either resumed or moved whole into an archive of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use checkpoints::format::RawTensor;
use checkpoints::store::newest_valid;
use checkpoints::{CheckpointError, CheckpointFile, Kind, Metric, RunIdentity};
use schedulers::{Scheduler, SchedulerState};
use serde::{Deserialize, Serialize};

use super::checkpointing::{EMA_PREFIX, OPTIMIZER_BLOB, PARAM_IDS, Recorder as BundleRecorder, STATE_BLOB, SWA_PREFIX};
use super::{LoopConfig, LoopState, TrainError};
use crate::config::{LoggingConfig, OnMismatch};
use crate::oom::OomRung;
use crate::policy::StopPolicy;
use crate::task::Task;
use crate::telemetry::{self, TelemetryCounters};

/// Everything besides weights and optimizer moments that a resumed run needs (the
/// `trainer` blob of a checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SavedState {
    pub(super) step: u64,
    pub(super) epoch: u64,
    pub(super) position: usize,
    pub(super) best: Option<(u64, Metric)>,
    pub(super) first_loss: Metric,
    pub(super) last_loss: Metric,
    pub(super) validated_at: Option<u64>,
    pub(super) telemetry: TelemetryCounters,
    pub(super) policies: BTreeMap<String, serde_json::Value>,
    /// How randomness is reproduced: data order is a function of (seed, epoch) and the
    /// backend is reseeded from (seed, step) before every optimizer step.
    pub(super) rng: serde_json::Value,
    /// The schedule is a pure function of its index; recorded for inspection.
    pub(super) schedule: serde_json::Value,
    /// What the scheduler keeps besides its index (ReduceLROnPlateau's counters).
    #[serde(default)]
    pub(super) scheduler: Option<SchedulerState>,
    /// No loss scaling in f32 runs.
    pub(super) loss_scaler: Option<serde_json::Value>,
    /// Updates folded into the EMA (its weights are the `ema.*` tensors).
    #[serde(default)]
    pub(super) ema_updates: Option<u64>,
    /// Weights averaged by SWA (its average is the `swa.*` tensors).
    #[serde(default)]
    pub(super) swa_updates: Option<u64>,
    /// Where the out-of-memory ladder stands.
    #[serde(default)]
    pub(super) oom: Option<SavedOom>,
}

/// The OOM ladder's rung and the stage knob's setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SavedOom {
    pub(super) rung: OomRung,
    pub(super) knob: serde_json::Value,
}

/// Finds the checkpoint to resume from, per `resume.path` / `resume.auto`, after checking
/// that it can resume training and belongs to this run. With `on_mismatch: fresh` a foreign
/// checkpoint's run is archived and the run starts fresh (`None`).
pub(super) fn find_source(
    cfg: &LoopConfig<'_>,
    identity: &RunIdentity,
) -> Result<Option<(PathBuf, CheckpointFile)>, TrainError> {
    let ckpt_dir = cfg.checkpoint_dir();
    let found = if let Some(path) = &cfg.resume.path {
        Some((path.clone(), CheckpointFile::read(path)?))
    } else if cfg.resume.auto {
        let found = newest_valid(&ckpt_dir, |e| tracing::warn!("skipping checkpoint: {e}"));
        if found.is_none() {
            tracing::info!("auto-resume: no valid checkpoint in {}, starting fresh", ckpt_dir.display());
        }
        found
    } else {
        None
    };
    let Some((path, file)) = found else { return Ok(None) };
    if file.meta.kind != Kind::Resume {
        return Err(CheckpointError::Incompatible {
            path,
            reason: "a weights-only export cannot resume training (it has no optimizer or loop state)".into(),
        }
        .into());
    }
    let differences = file.meta.identity.differences(identity);
    if differences.is_empty() {
        return Ok(Some((path, file)));
    }
    match cfg.resume.on_mismatch {
        OnMismatch::Refuse => Err(CheckpointError::Mismatch { path, differences }.into()),
        OnMismatch::Fresh => {
            let archived = archive_previous_run(cfg)?;
            tracing::warn!(
                "{} belongs to a different run ({}); archived the previous run to {} and starting fresh",
                path.display(),
                differences.join("; "),
                archived.map(|p| p.display().to_string()).unwrap_or_default()
            );
            Ok(None)
        }
    }
}

/// The loop's optimizer for task `T`.
type Adam<B, T> = crate::optim::LoopOptimizer<B, <T as Task<B>>::Model>;

/// The model and optimizer with a checkpoint's weights and moments, and the rest it restored.
pub(super) struct Loaded<B: AutodiffBackend, T: Task<B>> {
    pub(super) model: T::Model,
    pub(super) optim: Adam<B, T>,
    pub(super) restored: Restored,
}

/// What a checkpoint restored, besides what it wrote into the model, optimizer, policies,
/// scheduler and task directly.
pub(super) struct Restored {
    pub(super) saved: SavedState,
    /// The EMA's weights (`ema.*` tensors, prefix stripped).
    pub(super) ema: Vec<RawTensor>,
    /// The SWA average's weights (`swa.*` tensors, prefix stripped).
    pub(super) swa: Vec<RawTensor>,
}

/// Loads the checkpoint `file` (read from `path`) into the model and optimizer, restores the
/// stop policies' and scheduler's state and the task's memory knob, and returns the rest.
/// Any part that does not fit is an error naming the checkpoint.
#[allow(clippy::too_many_arguments)]
pub(super) fn restore<B, T>(
    path: &Path,
    file: &mut CheckpointFile,
    model: T::Model,
    optim: Adam<B, T>,
    policies: &mut [Box<dyn StopPolicy + '_>],
    scheduler: &mut Scheduler,
    task: &T,
    device: &B::Device,
) -> Result<Loaded<B, T>, TrainError>
where
    B: AutodiffBackend,
    T: Task<B>,
{
    let bad = |reason: String| CheckpointError::Incompatible { path: path.to_path_buf(), reason };
    let ids: BTreeMap<String, String> = file
        .extra
        .get(PARAM_IDS)
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| bad(format!("bad parameter ids: {e}")))?
        .ok_or_else(|| bad("no parameter ids".into()))?;
    let (mut weights, mut ema, mut swa) = (Vec::new(), Vec::new(), Vec::new());
    for mut t in std::mem::take(&mut file.tensors) {
        if let Some(name) = t.name.strip_prefix(EMA_PREFIX) {
            t.name = name.to_string();
            ema.push(t);
        } else if let Some(name) = t.name.strip_prefix(SWA_PREFIX) {
            t.name = name.to_string();
            swa.push(t);
        } else {
            weights.push(t);
        }
    }
    let model = checkpoints::module::load_weights(model, std::mem::take(&mut weights), Some(&ids), path)?;
    let blob = |name: &str| file.blobs.get(name).ok_or_else(|| bad(format!("no {name} state in the checkpoint")));
    let record = BundleRecorder::default()
        .load(blob(OPTIMIZER_BLOB)?.clone(), device)
        .map_err(|e| bad(format!("optimizer state does not load: {e}")))?;
    let optim = optim.load_record(record);
    let saved: SavedState =
        serde_json::from_slice(blob(STATE_BLOB)?).map_err(|e| bad(format!("bad loop state: {e}")))?;
    for policy in policies.iter_mut() {
        if let Some(state) = saved.policies.get(policy.name()) {
            policy.restore(state).map_err(|e| bad(format!("policy {} state: {e}", policy.name())))?;
        }
    }
    scheduler
        .restore(saved.scheduler.clone().unwrap_or(SchedulerState { plateau: None }))
        .map_err(|e| bad(format!("scheduler state: {e}")))?;
    if let Some(oom) = &saved.oom {
        task.restore_degrade(&oom.knob).map_err(|e| bad(format!("stage knob state: {e}")))?;
    }
    Ok(Loaded { model, optim, restored: Restored { saved, ema, swa } })
}

impl Restored {
    /// Where the loop stands in the checkpoint.
    pub(super) fn loop_state(&self) -> LoopState {
        let s = &self.saved;
        LoopState { step: s.step, epoch: s.epoch, position: s.position, best: s.best.map(|(s, v)| (s, v.0)) }
    }
}

/// The unique name of a new archive under `archived/`: `run_<unix seconds>`, with `_2`, `_3`,
/// ... appended when an archive of that second exists. The directory is created here (with
/// `create_dir`, which fails on an existing one), so two archives never share a directory.
fn claim_archive_dir(run_dir: &Path) -> Result<PathBuf, TrainError> {
    let root = run_dir.join("archived");
    std::fs::create_dir_all(&root).map_err(|e| CheckpointError::io(&root, e))?;
    let base = format!("run_{}", super::now_unix() as u64);
    for n in 1u32.. {
        let target = if n == 1 { root.join(&base) } else { root.join(format!("{base}_{n}")) };
        match std::fs::create_dir(&target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CheckpointError::io(&target, e).into()),
        }
    }
    unreachable!("u32 archive suffixes exhausted")
}

/// What an earlier run left in `run_dir` and the telemetry directories: every entry of the
/// run directory but `archived/`, plus the telemetry files and TensorBoard directory where
/// `logging` puts them outside it, as `(from, name in the archive)`.
fn earlier_run(run_dir: &Path, logging: &LoggingConfig) -> Result<Vec<(PathBuf, PathBuf)>, TrainError> {
    let mut entries = Vec::new();
    match std::fs::read_dir(run_dir) {
        Ok(dir) => {
            for entry in dir {
                let entry = entry.map_err(|e| CheckpointError::io(run_dir, e))?;
                let name = PathBuf::from(entry.file_name());
                if name != Path::new("archived") {
                    entries.push((entry.path(), name));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CheckpointError::io(run_dir, e).into()),
    }
    let paths = logging.paths(run_dir);
    for (from, name) in [
        (paths.jsonl, telemetry::JSONL),
        (paths.csv, telemetry::CSV),
        (paths.tensorboard, telemetry::TENSORBOARD_DIR),
        (paths.curves, crate::curves::CURVES_FILE),
    ] {
        if from.exists() && !from.starts_with(run_dir) {
            entries.push((from, PathBuf::from(name)));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Moves the whole earlier run — its telemetry (wherever `logging` puts it), `config.yaml`,
/// checkpoints, exports and any other file in the run directory — into a new
/// `run_dir/archived/<label>/`. Returns `None` when there is nothing to archive (no telemetry,
/// no checkpoints). Nothing is deleted; the archive name is never reused.
pub(super) fn archive_previous_run(cfg: &LoopConfig<'_>) -> Result<Option<PathBuf>, TrainError> {
    let paths = cfg.logging.paths(cfg.run_dir);
    let has_telemetry = [&paths.jsonl, &paths.csv, &paths.tensorboard].iter().any(|p| p.exists());
    let ckpt_dir = cfg.checkpoint_dir();
    // The store's own files only: the checkpoint directory may be the run directory itself.
    let has_checkpoints = !checkpoints::store::resume_candidates(&ckpt_dir).is_empty();
    if !has_telemetry && !has_checkpoints {
        return Ok(None);
    }
    let entries = earlier_run(cfg.run_dir, cfg.logging)?;
    let target = claim_archive_dir(cfg.run_dir)?;
    for (from, name) in entries {
        let to = target.join(&name);
        std::fs::rename(&from, &to).map_err(|e| {
            CheckpointError::io(
                &from,
                std::io::Error::new(e.kind(), format!("archiving into {} failed: {e}", target.display())),
            )
        })?;
    }
    Ok(Some(target))
}
