//! Which checkpoints to keep: top-K by a metric, rolling latest, every N steps, per epoch,
//! and the weights-only best export. Policies compose: each holds its own file names (each an
//! independent copy of the one bundle a save writes), and a name is deleted only when its own
//! policy releases it and it is not the run's resume source.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Whether a larger or a smaller metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better (losses, errors).
    Min,
    /// Larger is better (accuracies, agreements).
    Max,
}

impl Mode {
    /// Whether `candidate` is strictly better than `incumbent`. NaN is never better, and
    /// anything that is not NaN beats NaN.
    pub fn is_better(self, candidate: f64, incumbent: f64) -> bool {
        match (candidate.is_nan(), incumbent.is_nan()) {
            (true, _) => false,
            (false, true) => true,
            _ => match self {
                Mode::Min => candidate < incumbent,
                Mode::Max => candidate > incumbent,
            },
        }
    }
}

/// `checkpoint:` — what is saved and kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Directory of the checkpoints, relative to the run directory (see
    /// [`RetentionConfig::checkpoint_dir`]): `checkpoints` by default; `.` puts them in the run
    /// directory itself (seed 002's `save/{dataset}/seed{seed}/epoch_10…`), next to the run's
    /// other files, which the store never touches; an absolute path is used as is. A relative
    /// path may not contain `..` (use an absolute path to put checkpoints outside the run).
    pub dir: PathBuf,
    /// Keep the K best checkpoints (by `top_k_monitor`, else `monitor`) in `top_k_dir` (0 disables).
    pub keep_top_k: usize,
    /// Metric ranking top-K and the best export; `null` uses the stage's selection metric.
    pub monitor: Option<String>,
    /// `min` or `max`; `null` uses the stage's direction for its selection metric.
    pub mode: Option<Mode>,
    /// Metric ranking the top-K only, when it differs from the one selecting the best export
    /// (stage 1: top-K by `sar_edge_agreement`, `best_model` by `val_loss`); `null` uses `monitor`.
    pub top_k_monitor: Option<String>,
    /// `min` or `max` for `top_k_monitor` (required with it).
    pub top_k_mode: Option<Mode>,
    /// Directory of the top-K checkpoints, relative to the output directory (the trainer joins
    /// it to the output directory before opening the store); `null` is `top_k` in the
    /// checkpoint directory (`checkpoints/top_k`).
    pub top_k_dir: Option<PathBuf>,
    /// Keep a rolling `checkpoint_latest`, refreshed at every save.
    pub latest: bool,
    /// Save `checkpoint_step_<N>` every N optimizer steps (`null` disables).
    pub every_n_steps: Option<u64>,
    /// Keep only the newest N step checkpoints (`null` keeps all).
    pub keep_last_n_steps: Option<usize>,
    /// Save `epoch_<N>` at the end of every epoch, N counting from 1 (`epoch_1` after the
    /// first epoch, `epoch_25` after the 25th).
    pub per_epoch: bool,
    /// Keep only the newest N epoch checkpoints (`null` keeps all).
    pub keep_last_n_epochs: Option<usize>,
    /// File stem of the weights-only export of the best model (`best` → `best.safetensors`;
    /// `null` disables).
    pub export_best: Option<String>,
    /// Directory of the best export, relative to the output directory (joined by the trainer
    /// like `top_k_dir`); `null` is the checkpoint directory. Stage 1 uses `.` for seed 000's
    /// `<output_dir>/best_model`.
    pub export_best_dir: Option<PathBuf>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            keep_top_k: 3,
            monitor: None,
            mode: None,
            top_k_monitor: None,
            top_k_mode: None,
            top_k_dir: None,
            latest: true,
            every_n_steps: None,
            keep_last_n_steps: None,
            per_epoch: false,
            keep_last_n_epochs: None,
            export_best: Some("best".into()),
            export_best_dir: None,
        }
    }
}

/// [`RetentionConfig::dir`]'s default: `<run>/checkpoints`.
pub const DEFAULT_DIR: &str = "checkpoints";

/// A problem with a `checkpoint:` setting: the key (relative to the section, e.g. `dir`) and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key relative to `checkpoint`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// `path` joined to `run_dir` (unless absolute), with `.` components dropped so `.` is the run
/// directory itself and logged paths read cleanly.
fn in_run(run_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    run_dir.join(path).components().filter(|c| *c != Component::CurDir).collect()
}

impl RetentionConfig {
    /// The checkpoint directory of a run in `run_dir`: [`RetentionConfig::dir`] joined to it
    /// (`.` is `run_dir` itself), or `dir` as is when absolute.
    pub fn checkpoint_dir(&self, run_dir: &Path) -> PathBuf {
        in_run(run_dir, &self.dir)
    }

    /// Every problem with these settings at once (empty when they are usable).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut push = |key: &str, message: String| p.push(Problem { key: key.into(), message });
        let dirs = [
            ("dir", Some(&self.dir)),
            ("top_k_dir", self.top_k_dir.as_ref()),
            ("export_best_dir", self.export_best_dir.as_ref()),
        ];
        for (key, dir) in dirs {
            let Some(dir) = dir else { continue };
            if dir.as_os_str().is_empty() {
                push(
                    key,
                    "expected a directory relative to the run directory (`.` is the run directory itself) \
                     or an absolute path, got an empty path"
                        .into(),
                );
            } else if !dir.is_absolute() && dir.components().any(|c| c == Component::ParentDir) {
                push(
                    key,
                    format!(
                        "`{}` leaves the run directory through `..`, where another run's checkpoints could \
                         replace or delete this run's; use an absolute path to put them elsewhere",
                        dir.display()
                    ),
                );
            }
        }
        if self.every_n_steps == Some(0) {
            push("every_n_steps", "expected a positive step count or null".into());
        }
        for (key, n) in [("keep_last_n_steps", self.keep_last_n_steps), ("keep_last_n_epochs", self.keep_last_n_epochs)]
        {
            if n == Some(0) {
                push(
                    key,
                    "expected a positive count, or null to keep all (0 would delete each save as it is written)".into(),
                );
            }
        }
        if self.export_best.as_deref().is_some_and(|s| s.is_empty() || s.contains(['/', '\\'])) {
            push("export_best", "expected a plain file stem such as `best`, or null".into());
        }
        if self.top_k_monitor.is_some() && self.top_k_mode.is_none() {
            push("top_k_mode", "required with checkpoint.top_k_monitor: min or max".into());
        }
        if self.top_k_monitor.as_deref().is_some_and(str::is_empty) {
            push("top_k_monitor", "expected a metric name, or null".into());
        }
        p
    }
}

/// One ranked checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Optimizer step it was taken at.
    pub step: u64,
    /// Its metric value.
    pub value: f64,
}

/// What happened to an offered score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// The new score entered the top-K.
    pub kept: bool,
    /// The entry it pushed out, if any.
    pub evicted: Option<Ranked>,
}

/// The K best scores, PyTorch Lightning `ModelCheckpoint(save_top_k=K)` semantics: while
/// fewer than K are held anything enters; then only a strictly better score enters and the
/// worst leaves. NaN ranks worst, so it can never enter a full top-K. Ties keep the earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    k: usize,
    mode: Mode,
    entries: Vec<Ranked>,
}

impl TopK {
    /// An empty top-K.
    pub fn new(k: usize, mode: Mode) -> Self {
        Self { k, mode, entries: Vec::new() }
    }

    /// Held entries, best first.
    pub fn entries(&self) -> &[Ranked] {
        &self.entries
    }

    fn sort(&mut self) {
        let mode = self.mode;
        self.entries.sort_by(|a, b| {
            if mode.is_better(a.value, b.value) {
                std::cmp::Ordering::Less
            } else if mode.is_better(b.value, a.value) {
                std::cmp::Ordering::Greater
            } else {
                a.step.cmp(&b.step)
            }
        });
    }

    /// Adds an entry without eviction (rebuilding from files on disk).
    pub fn restore(&mut self, entry: Ranked) {
        self.entries.retain(|e| e.step != entry.step);
        self.entries.push(entry);
        self.sort();
    }

    /// Removes an entry (its file was removed or cannot be).
    pub fn forget(&mut self, step: u64) {
        self.entries.retain(|e| e.step != step);
    }

    /// Offers the score of step `step`. A step offered again (a resumed run recomputing it)
    /// replaces its earlier entry.
    pub fn offer(&mut self, step: u64, value: f64) -> Offer {
        if self.k == 0 {
            return Offer { kept: false, evicted: None };
        }
        self.entries.retain(|e| e.step != step);
        let new = Ranked { step, value };
        if self.entries.len() < self.k {
            self.entries.push(new);
            self.sort();
            return Offer { kept: true, evicted: None };
        }
        let worst = *self.entries.last().expect("k > 0 and full");
        if !self.mode.is_better(value, worst.value) {
            return Offer { kept: false, evicted: None };
        }
        self.entries.pop();
        self.entries.push(new);
        self.sort();
        Offer { kept: true, evicted: Some(worst) }
    }
}

/// `best_<metric>_<value:.6f>_step_<step>`: the top-K file stem users know from the seed scripts.
pub fn top_k_stem(metric: &str, value: f64, step: u64) -> String {
    let v = if value.is_nan() { "nan".to_string() } else { format!("{value:.6}") };
    format!("best_{metric}_{v}_step_{step}")
}

/// Parses a [`top_k_stem`] for `metric` back into its entry.
pub fn parse_top_k_stem(metric: &str, stem: &str) -> Option<Ranked> {
    let rest = stem.strip_prefix("best_")?.strip_prefix(metric)?.strip_prefix('_')?;
    let (value, step) = rest.rsplit_once("_step_")?;
    Some(Ranked { step: step.parse().ok()?, value: value.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stems_round_trip() {
        let s = top_k_stem("sar_edge_agreement", 0.0872, 3000);
        assert_eq!(s, "best_sar_edge_agreement_0.087200_step_3000");
        assert_eq!(parse_top_k_stem("sar_edge_agreement", &s), Some(Ranked { step: 3000, value: 0.0872 }));
        let n = top_k_stem("val_loss", f64::NAN, 5);
        assert!(parse_top_k_stem("val_loss", &n).unwrap().value.is_nan());
        assert_eq!(parse_top_k_stem("val_acc", &s), None);
    }

    #[test]
    fn checkpoint_dir_resolves_against_the_run_directory() {
        let run = Path::new("save/Beijing/seed42");
        let at = |dir: &str| RetentionConfig { dir: dir.into(), ..RetentionConfig::default() }.checkpoint_dir(run);
        assert_eq!(RetentionConfig::default().checkpoint_dir(run), run.join("checkpoints"));
        assert_eq!(at("."), run, "`.` is the run directory itself");
        assert_eq!(at("./ckpt/."), run.join("ckpt"));
        assert_eq!(at("/scratch/ckpt"), Path::new("/scratch/ckpt"), "absolute paths are used as is");
    }

    #[test]
    fn problems_name_the_key_and_the_value() {
        assert_eq!(RetentionConfig::default().problems(), vec![]);
        assert_eq!(RetentionConfig { dir: ".".into(), ..RetentionConfig::default() }.problems(), vec![]);
        assert_eq!(RetentionConfig { dir: "/abs/../x".into(), ..RetentionConfig::default() }.problems(), vec![]);
        let bad = RetentionConfig {
            dir: "".into(),
            top_k_dir: Some("../seed43/top_k".into()),
            keep_last_n_epochs: Some(0),
            ..RetentionConfig::default()
        };
        let p = bad.problems();
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["dir", "top_k_dir", "keep_last_n_epochs"], "{p:?}");
        assert!(p[0].message.contains("empty path"), "{p:?}");
        assert!(p[1].message.contains("`../seed43/top_k`") && p[1].message.contains("absolute path"), "{p:?}");
    }

    #[test]
    fn dir_is_read_from_the_config_and_defaults_to_checkpoints() {
        let c: RetentionConfig = serde_json::from_str(r#"{"dir": "."}"#).unwrap();
        assert_eq!(c.dir, Path::new("."));
        let c: RetentionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.dir, Path::new("checkpoints"));
    }

    #[test]
    fn nan_first_then_finite_scores_end_with_only_finite_ones() {
        let mut t = TopK::new(2, Mode::Min);
        assert!(t.offer(1, f64::NAN).kept, "a NaN enters while there is room");
        t.offer(2, f64::NAN);
        t.offer(3, 0.5);
        t.offer(4, 0.7);
        assert!(t.entries().iter().all(|e| e.value.is_finite()), "{:?}", t.entries());
        assert!(!t.offer(5, f64::NAN).kept);
        assert_eq!(t.entries()[0], Ranked { step: 3, value: 0.5 });
    }

    #[test]
    fn max_mode_keeps_the_largest_and_ties_keep_the_earlier() {
        let mut t = TopK::new(2, Mode::Max);
        t.offer(1, 0.6);
        t.offer(2, 0.8);
        let o = t.offer(3, 0.6);
        assert!(!o.kept, "a tie with the worst does not displace it");
        let o = t.offer(4, 0.9);
        assert_eq!(o.evicted, Some(Ranked { step: 1, value: 0.6 }));
        assert_eq!(t.entries().iter().map(|e| e.step).collect::<Vec<_>>(), vec![4, 2]);
    }

    fn score() -> impl Strategy<Value = f64> {
        prop_oneof![8 => -10.0f64..10.0, 1 => Just(f64::NAN), 1 => (-3i32..3).prop_map(f64::from)]
    }

    proptest! {
        /// Against an independent model: the held set is exactly the K best by (value, step),
        /// NaN worst; nothing evicted is better than anything kept; NaN never displaces a finite score.
        #[test]
        fn top_k_holds_exactly_the_k_best(k in 1usize..5, max in any::<bool>(), scores in prop::collection::vec(score(), 0..40)) {
            let mode = if max { Mode::Max } else { Mode::Min };
            let mut t = TopK::new(k, mode);
            let mut evicted: Vec<Ranked> = Vec::new();
            let bits = |t: &TopK| t.entries().iter().map(|e| (e.step, e.value.to_bits())).collect::<Vec<_>>();
            for (step, &v) in scores.iter().enumerate() {
                let before = bits(&t);
                let o = t.offer(step as u64, v);
                if let Some(e) = o.evicted {
                    prop_assert!(!(v.is_nan() && e.value.is_finite()), "NaN displaced a finite score");
                    evicted.push(e);
                }
                if !o.kept {
                    prop_assert_eq!(bits(&t), before, "a rejected score changed the set");
                }
            }
            let key = |r: &Ranked| {
                let v = if r.value.is_nan() { f64::INFINITY } else if max { -r.value } else { r.value };
                (r.value.is_nan(), v, r.step)
            };
            let mut all: Vec<Ranked> = scores.iter().enumerate().map(|(s, &v)| Ranked { step: s as u64, value: v }).collect();
            all.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap());
            all.truncate(k);
            let held: Vec<u64> = t.entries().iter().map(|e| e.step).collect();
            let expected: Vec<u64> = all.iter().map(|e| e.step).collect();
            prop_assert_eq!(held, expected);
            for e in &evicted {
                for kept in t.entries() {
                    prop_assert!(!mode.is_better(e.value, kept.value), "evicted {:?} is better than kept {:?}", e, kept);
                }
            }
        }
    }
}
