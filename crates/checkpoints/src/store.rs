//! The checkpoint directory of a run: writes each save once, links it under every name a
//! retention policy wants, deletes what no policy holds, and finds the newest valid
//! checkpoint to resume from.
//!
//! Layout under `<run>/checkpoints/`:
//! `checkpoint_latest.safetensors`, `checkpoint_step_<N>.safetensors`, `epoch_<N>.safetensors`,
//! `top_k/best_<metric>_<value>_step_<N>.safetensors`, `<export_best>.safetensors` (weights only).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::atomic;
use crate::format::{CheckpointError, CheckpointFile, Kind, Meta, read_meta};
use crate::retention::{Mode, RetentionConfig, TopK, parse_top_k_stem, top_k_stem};

/// File extension of every checkpoint.
pub const EXT: &str = "safetensors";
/// Name of the rolling checkpoint.
pub const LATEST: &str = "checkpoint_latest";
/// Subdirectory of the top-K checkpoints.
pub const TOP_K_DIR: &str = "top_k";

/// Why a save happens. Several can coincide in one save.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Validation ran at this step; `value` is the monitored metric, `is_best` says whether it
    /// is the best so far.
    Validation {
        /// The monitored metric's value.
        value: f64,
        /// Whether it beats every earlier validation.
        is_best: bool,
    },
    /// `every_n_steps` divides the step.
    StepInterval,
    /// An epoch ended.
    EpochEnd {
        /// The epoch that ended (0-based).
        epoch: u64,
    },
    /// The run was interrupted, aborted or ended: `checkpoint_latest` is written, even
    /// with `latest: false`, so the run can always be resumed.
    Final,
}

/// What one save wrote and removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SaveReport {
    /// Every name written (the resume bundle under each name, then the best export).
    pub written: Vec<PathBuf>,
    /// Names removed because no policy holds them any more.
    pub removed: Vec<PathBuf>,
}

/// A run's checkpoint directory under a retention configuration.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    top_dir: PathBuf,
    config: RetentionConfig,
    monitor: String,
    top_k: TopK,
    steps: Vec<u64>,
    epochs: Vec<u64>,
    protected: Option<PathBuf>,
    save_delay: Duration,
}

fn stem_number(path: &Path, prefix: &str) -> Option<u64> {
    path.file_stem()?.to_str()?.strip_prefix(prefix)?.parse().ok()
}

fn is_checkpoint_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == EXT)
        && path.file_name().is_some_and(|n| !atomic::is_temp_name(&n.to_string_lossy()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl CheckpointStore {
    /// Opens (creating) `dir` and rebuilds the retention state from the files present.
    /// `monitor` and `mode` rank top-K unless the config names its own; `protected` (the resume
    /// source) is never deleted. Temporaries left by a crash are removed.
    pub fn open(
        dir: &Path,
        config: RetentionConfig,
        monitor: &str,
        mode: Mode,
        protected: Option<PathBuf>,
    ) -> Result<Self, CheckpointError> {
        // A configured `top_k_dir` is used as given (the trainer has joined it to the output directory).
        let top_dir = config.top_k_dir.clone().unwrap_or_else(|| dir.join(TOP_K_DIR));
        let export_dir = config.export_best_dir.clone().unwrap_or_else(|| dir.to_path_buf());
        for d in [dir, &top_dir, &export_dir] {
            fs::create_dir_all(d).map_err(|e| CheckpointError::io(d, e))?;
            let removed = atomic::remove_stale_temps(d).map_err(|e| CheckpointError::io(d, e))?;
            if removed > 0 {
                tracing::warn!(
                    "removed {removed} unfinished temporary file(s) in {} left by an interrupted save",
                    d.display()
                );
            }
        }
        let (monitor, mode) = match &config.top_k_monitor {
            Some(m) => (m.clone(), config.top_k_mode.or(config.mode).unwrap_or(mode)),
            None => (config.monitor.clone().unwrap_or_else(|| monitor.to_string()), config.mode.unwrap_or(mode)),
        };
        let mut store = Self {
            dir: dir.to_path_buf(),
            top_dir: top_dir.clone(),
            top_k: TopK::new(config.keep_top_k, mode),
            config,
            monitor,
            steps: Vec::new(),
            epochs: Vec::new(),
            protected,
            save_delay: Duration::ZERO,
        };
        for entry in fs::read_dir(&top_dir).map_err(|e| CheckpointError::io(&top_dir, e))? {
            let path = entry.map_err(|e| CheckpointError::io(&top_dir, e))?.path();
            if !is_checkpoint_file(&path) {
                continue;
            }
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            if let Some(r) = parse_top_k_stem(&store.monitor, &stem) {
                store.top_k.restore(r);
            }
        }
        for entry in fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))? {
            let path = entry.map_err(|e| CheckpointError::io(dir, e))?.path();
            if !is_checkpoint_file(&path) {
                continue;
            }
            if let Some(n) = stem_number(&path, "checkpoint_step_") {
                store.steps.push(n);
            } else if let Some(n) = stem_number(&path, "epoch_") {
                store.epochs.push(n);
            }
        }
        store.steps.sort_unstable();
        store.epochs.sort_unstable();
        Ok(store)
    }

    /// Sleeps this long between writing a save and making it visible (fault-injection tests
    /// use it to widen the window a crash can hit).
    pub fn with_save_delay(mut self, delay: Duration) -> Self {
        self.save_delay = delay;
        self
    }

    /// Path of a checkpoint name (without extension) in the store.
    pub fn path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.{EXT}"))
    }

    /// Path of the weights-only best export, if enabled.
    pub fn best_export_path(&self) -> Option<PathBuf> {
        let dir = self.config.export_best_dir.as_ref().unwrap_or(&self.dir);
        self.config.export_best.as_ref().map(|s| dir.join(format!("{s}.{EXT}")))
    }

    /// Whether `triggers` need a resume bundle written at all.
    pub fn wants(&self, triggers: &[Trigger]) -> bool {
        triggers.iter().any(|t| match t {
            Trigger::Validation { .. } => self.config.latest || self.config.keep_top_k > 0,
            Trigger::StepInterval => true,
            Trigger::EpochEnd { .. } => self.config.latest || self.config.per_epoch,
            Trigger::Final => true,
        })
    }

    /// Whether `step` is on the `every_n_steps` grid.
    pub fn is_step_interval(&self, step: u64) -> bool {
        self.config.every_n_steps.is_some_and(|n| n > 0 && step.is_multiple_of(n))
    }

    fn remove(&self, path: PathBuf, report: &mut SaveReport) {
        if self.protected.as_deref().is_some_and(|p| same_file(p, &path)) {
            tracing::info!("keeping {}: it is this run's resume source", path.display());
            return;
        }
        match fs::remove_file(&path) {
            Ok(()) => report.removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove old checkpoint {}: {e}", path.display()),
        }
    }

    /// Saves one resume bundle for `triggers` (built lazily, written once, linked under each
    /// name), writes the weights-only export on a new best, then applies retention.
    pub fn save(
        &mut self,
        step: u64,
        triggers: &[Trigger],
        bundle: impl FnOnce() -> CheckpointFile,
        weights_only: impl FnOnce() -> CheckpointFile,
    ) -> Result<SaveReport, CheckpointError> {
        let before = (self.top_k.clone(), self.steps.clone(), self.epochs.clone());
        let mut report = SaveReport::default();
        let mut names: Vec<PathBuf> = Vec::new();
        let mut top_k_offer = None;
        // `Final` (interrupt, end, anomaly) always leaves a resumable checkpoint_latest.
        if self.config.latest || triggers.contains(&Trigger::Final) {
            names.push(self.path(LATEST));
        }
        let mut new_best = false;
        for t in triggers {
            match t {
                Trigger::Validation { value, is_best } => {
                    new_best |= *is_best;
                    if self.config.keep_top_k > 0 {
                        let offer = self.top_k.offer(step, *value);
                        if offer.kept {
                            let stem = top_k_stem(&self.monitor, *value, step);
                            names.push(self.top_dir.join(format!("{stem}.{EXT}")));
                        }
                        top_k_offer = Some(offer);
                    }
                }
                Trigger::StepInterval => {
                    names.push(self.path(&format!("checkpoint_step_{step}")));
                    self.steps.retain(|s| *s != step);
                    self.steps.push(step);
                }
                Trigger::EpochEnd { epoch } if self.config.per_epoch => {
                    names.push(self.path(&format!("epoch_{epoch}")));
                    self.epochs.retain(|e| e != epoch);
                    self.epochs.push(*epoch);
                }
                Trigger::EpochEnd { .. } | Trigger::Final => {}
            }
        }
        let written = (|| {
            let mut written = Vec::new();
            if let Some((first, rest)) = names.split_first() {
                bundle().write(first, || std::thread::sleep(self.save_delay))?;
                written.push(first.clone());
                for name in rest {
                    atomic::link_atomic(first, name).map_err(|e| CheckpointError::io(name, e))?;
                    written.push(name.clone());
                }
            }
            if new_best && let Some(export) = self.best_export_path() {
                weights_only().write(&export, || {})?;
                written.push(export);
            }
            Ok::<_, CheckpointError>(written)
        })();
        match written {
            Ok(w) => report.written = w,
            Err(e) => {
                // Nothing was deleted; forget the bookkeeping of this failed save.
                (self.top_k, self.steps, self.epochs) = before;
                return Err(e);
            }
        }

        // Retention: only now that the new files are durable.
        if let Some(evicted) = top_k_offer.and_then(|o| o.evicted) {
            let stem = top_k_stem(&self.monitor, evicted.value, evicted.step);
            self.remove(self.top_dir.join(format!("{stem}.{EXT}")), &mut report);
        }
        if let Some(n) = self.config.keep_last_n_steps {
            while self.steps.len() > n {
                let old = self.steps.remove(0);
                self.remove(self.path(&format!("checkpoint_step_{old}")), &mut report);
            }
        }
        if let Some(n) = self.config.keep_last_n_epochs {
            while self.epochs.len() > n {
                let old = self.epochs.remove(0);
                self.remove(self.path(&format!("epoch_{old}")), &mut report);
            }
        }
        Ok(report)
    }
}

/// Every resume bundle under `dir` (recursively), newest step first;
/// unreadable headers are returned as errors so the caller can name them.
pub fn resume_candidates(dir: &Path) -> Vec<Result<(PathBuf, Meta), CheckpointError>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_checkpoint_file(&path) {
                found.push(read_meta(&path).map(|m| (path.clone(), m)));
            }
        }
    }
    let mut ok: Vec<(PathBuf, Meta)> = Vec::new();
    let mut bad = Vec::new();
    for r in found {
        match r {
            Ok((p, m)) if m.kind == Kind::Resume => ok.push((p, m)),
            Ok(_) => {}
            Err(e) => bad.push(Err(e)),
        }
    }
    // Newest first; at equal steps prefer the rolling latest (it is refreshed last).
    ok.sort_by(|(pa, a), (pb, b)| {
        b.step.cmp(&a.step).then_with(|| {
            let la = pa.file_stem().is_some_and(|s| s == LATEST);
            let lb = pb.file_stem().is_some_and(|s| s == LATEST);
            lb.cmp(&la)
        })
    });
    bad.into_iter().chain(ok.into_iter().map(Ok)).collect()
}

/// Loads the newest checkpoint under `dir` that verifies; each one skipped is reported
/// through `skipped` with the reason.
pub fn newest_valid(dir: &Path, mut skipped: impl FnMut(&CheckpointError)) -> Option<(PathBuf, CheckpointFile)> {
    for candidate in resume_candidates(dir) {
        match candidate {
            Err(e) => skipped(&e),
            Ok((path, _)) => match CheckpointFile::read(&path) {
                Ok(file) => return Some((path, file)),
                Err(e) => skipped(&e),
            },
        }
    }
    None
}

/// Metric values by name, as stored in checkpoint metadata.
pub fn metric_map(metrics: &BTreeMap<String, f64>) -> BTreeMap<String, crate::format::Metric> {
    metrics.iter().map(|(k, v)| (k.clone(), crate::format::Metric(*v))).collect()
}
