//! The checkpoint directory of a run: writes each save once, copies it under every other name
//! a retention policy wants, deletes what no policy holds, and finds the newest valid
//! checkpoint to resume from.
//!
//! Layout in the checkpoint directory ([`RetentionConfig::checkpoint_dir`], `<run>/checkpoints/`
//! by default): `checkpoint_latest.safetensors`, `checkpoint_step_<N>.safetensors`,
//! `epoch_<N>.safetensors` (N = epochs completed, from 1), `top_k/best_<metric>_<value>_step_<N>.safetensors`,
//! `<export_best>.safetensors` (weights only).
//!
//! The directory may be shared with other files (it may be the run directory itself, holding
//! `config.yaml`, telemetry and other stages' outputs): the store only reads, replaces or
//! deletes files with the names above whose header says they are trainyard resume bundles,
//! and cleans only temporaries of `.safetensors` files. It never descends into other
//! subdirectories (`archived/`, `tensorboard/`).
//!
//! Every name of a save is an independent file (the first written from memory, the others
//! copied from it in the kernel, each atomically), not a hard link: with links, one damaged
//! file (an in-place edit, a truncation, a bad block) would be every name of that save at once,
//! typically both `epoch_N` and its top-K entry. See `benches/retention_copies.rs` for the cost.

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
        /// How many epochs are complete, counting the one that just ended: 1 after the first
        /// epoch (the 1-based number of the epoch that ended). The save is named
        /// `epoch_<epoch>`, as seed 002 and upstream name theirs (`epoch_1` … `epoch_25` for
        /// 25 epochs), and equals the checkpoint's `Meta::epoch` (epochs completed).
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

/// `N` when `path`'s file name is exactly `<prefix><N>.safetensors` as the store writes it
/// (`epoch_3`, not `epoch_03` or `epoch_3.bak`).
fn stem_number(path: &Path, prefix: &str) -> Option<u64> {
    if path.extension()? != EXT {
        return None;
    }
    let digits = path.file_stem()?.to_str()?.strip_prefix(prefix)?;
    let n: u64 = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

/// Whether `path` names a finished file (not a temporary) with the checkpoint extension.
fn is_checkpoint_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == EXT)
        && path.file_name().is_some_and(|n| !atomic::is_temp_name(&n.to_string_lossy()))
}

/// Whether `path`'s file name is one the store writes as a resume bundle in its directory:
/// `checkpoint_latest`, `checkpoint_step_<N>`, `epoch_<N>`, or a top-K stem
/// `best_<metric>_<value>_step_<N>` (in the top-K directory).
fn is_store_name(path: &Path) -> bool {
    if !is_checkpoint_file(path) {
        return false;
    }
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { return false };
    stem == LATEST
        || stem_number(path, "checkpoint_step_").is_some()
        || stem_number(path, "epoch_").is_some()
        || stem
            .strip_prefix("best_")
            .and_then(|r| r.rsplit_once("_step_"))
            .is_some_and(|(_, n)| n.parse::<u64>().is_ok_and(|v| v.to_string() == n))
}

/// Whether `path` holds a trainyard resume bundle, by its header alone (cheap; the checksum is
/// verified when a file is loaded). Files that fail are someone else's, or damaged: the store
/// leaves them alone.
fn is_resume_bundle(path: &Path) -> bool {
    read_meta(path).is_ok_and(|m| m.kind == Kind::Resume)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Makes sure `dir` is a directory this process can create files in (creating it), so a bad
/// checkpoint directory fails when the run starts, not at its first save.
fn prepare_dir(dir: &Path) -> Result<(), CheckpointError> {
    let problem = |reason: String| CheckpointError::Directory { path: dir.to_path_buf(), reason };
    if dir.exists() && !dir.is_dir() {
        return Err(problem("exists and is not a directory".into()));
    }
    fs::create_dir_all(dir).map_err(|e| problem(format!("cannot be created: {e}")))?;
    let probe = atomic::temp_path(&dir.join(format!("write-probe.{EXT}")));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| problem(format!("no file can be created in it: {e}")))?;
    fs::remove_file(&probe).map_err(|e| problem(format!("cannot remove {}: {e}", probe.display())))?;
    let removed = atomic::remove_stale_temps_where(dir, |target| target.ends_with(&format!(".{EXT}")))
        .map_err(|e| CheckpointError::io(dir, e))?;
    if removed > 0 {
        tracing::warn!(
            "removed {removed} unfinished temporary file(s) in {} left by an interrupted save",
            dir.display()
        );
    }
    Ok(())
}

/// Every entry directly in `dir` (not in subdirectories), sorted by name, with whether it is a
/// regular file (following symlinks: a link to a checkpoint counts as one).
fn entries_in(dir: &Path) -> Result<Vec<(PathBuf, bool)>, CheckpointError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| CheckpointError::io(dir, e))? {
        let path = entry.map_err(|e| CheckpointError::io(dir, e))?.path();
        let is_file = path.metadata().is_ok_and(|m| m.is_file());
        entries.push((path, is_file));
    }
    entries.sort();
    Ok(entries)
}

/// Every regular file directly in `dir`, sorted by name.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    Ok(entries_in(dir)?.into_iter().filter_map(|(p, is_file)| is_file.then_some(p)).collect())
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
            prepare_dir(d)?;
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
        // A name the store will replace at every save must be replaceable by a file.
        let fixed = [Some(store.path(LATEST)), store.best_export_path()];
        for path in fixed.into_iter().flatten() {
            if path.exists() && !path.is_file() {
                return Err(CheckpointError::Directory {
                    path,
                    reason: "is in the way of a checkpoint: it is not a regular file".into(),
                });
            }
        }
        // Rebuild the bookkeeping from the files this store wrote: canonical names with a
        // resume-bundle header. Anything else is left alone, and so never deleted.
        for path in files_in(&top_dir)? {
            if !is_checkpoint_file(&path) {
                continue;
            }
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            if let Some(r) = parse_top_k_stem(&store.monitor, &stem)
                && top_k_stem(&store.monitor, r.value, r.step) == stem
                && is_resume_bundle(&path)
            {
                store.top_k.restore(r);
            }
        }
        for path in files_in(dir)? {
            if let Some(n) = stem_number(&path, "checkpoint_step_") {
                if is_resume_bundle(&path) {
                    store.steps.push(n);
                }
            } else if let Some(n) = stem_number(&path, "epoch_")
                && is_resume_bundle(&path)
            {
                store.epochs.push(n);
            }
        }
        store.steps.sort_unstable();
        store.epochs.sort_unstable();
        Ok(store)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Saves one resume bundle for `triggers` (built lazily, written once, then copied to each
    /// further name as an independent file), writes the weights-only export on a new best, then
    /// applies retention. On an error nothing was deleted and the store's bookkeeping is as
    /// before the call; names already written hold this complete, verified-format save.
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
                    atomic::copy_atomic(first, name).map_err(|e| CheckpointError::io(name, e))?;
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

/// Every resume bundle the store writes in `dir` and its `top_k/` subdirectory, newest step
/// first; damaged headers are returned first, as errors, so the caller can name them.
///
/// Only the store's own names are considered (`checkpoint_latest`, `checkpoint_step_<N>`,
/// `epoch_<N>`, `best_…_step_<N>`): other files (weights-only exports, another stage's
/// safetensors, `config.yaml`) and other subdirectories (`archived/` earlier runs,
/// `tensorboard/`) are ignored, so `dir` may be the run directory itself.
pub fn resume_candidates(dir: &Path) -> Vec<Result<(PathBuf, Meta), CheckpointError>> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join(TOP_K_DIR)] {
        let entries = match entries_in(&d) {
            Ok(entries) => entries,
            // A missing directory has no candidates; an unreadable one is reported.
            Err(CheckpointError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                found.push(Err(e));
                continue;
            }
        };
        for (path, is_file) in entries.into_iter().filter(|(p, _)| is_store_name(p)) {
            if is_file {
                found.push(read_meta(&path).map(|m| (path, m)));
            } else {
                found.push(Err(CheckpointError::NotACheckpoint {
                    path,
                    reason: "a directory (or something else that is not a file) has a checkpoint's name".into(),
                }));
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
