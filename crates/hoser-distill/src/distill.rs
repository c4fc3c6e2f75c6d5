//! `hoser-distill`: HOSER trained like hoser-vanilla plus a distillation term from a frozen LM-TAD
//! teacher (seed 002, the fork's `train_with_distill.py`), without the fork's bugs.
//!
//! For each distilled step `t` of a trajectory `r_0 … r_L` (every real step, or only the last with
//! `distill.steps: last`), the teacher reads the ground-truth history `[SOT] + cell(r_0) … cell(r_t)`
//! cut from the left to its last `distill.window` tokens (SOT kept while it fits), and its
//! next-token distribution is read at each candidate road's cell. That is restricted to the real
//! candidates, renormalised and tempered by `τ` on the host ([`TemperedTeacher`], the rules of
//! [`losses::sequence::distillation_kl`]), and [`distillation_kl_tempered`] takes the forward
//! KL(teacher ‖ student) against the student's tempered candidate distribution; `distill.temperature_squared: true` multiplies it by `τ²`
//! (Hinton), `false` (the fork's scaling) does not. The loss is
//! `ce_weight · L_next + time_weight · L_time + distill.lambda · KL`.
//!
//! The teacher is frozen and reads only ground truth, so its candidate probabilities are a function
//! of (teacher, dataset, window): with `distill.cache: true` (the default) they are computed once,
//! batched over the distinct history windows, before training, and kept in the dataset cache
//! directory keyed by the teacher's weights, its token map, the window and the data; with `false` the
//! teacher runs on every batch. Both give the same loss.
//!
//! With `distill.lambda: 0` no teacher is read and a run is hoser-vanilla's, bit for bit.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use hoser::data::{DataError, Sample, file_crc32c};
use hoser::lmtad::model::InputError;
use hoser::lmtad::teacher::{TOKEN_MAP_FILE, Teacher, TeacherError, WEIGHTS_FILE};
use hoser::lmtad::tokens::{TokenError, TokenMap};
use hoser::model::Hoser;
use hoser_vanilla::{DataSection, LossSection, ModelSection, VanillaBatch, VanillaConfig, VanillaError, VanillaTask};
use losses::combined::{CombinedError, CombinedLoss};
use losses::sequence::{TemperedTeacher, distillation_kl_tempered};
use serde::{Deserialize, Serialize};
use trainer::config::{ConfigProblem, RunConfig, Validate};
use trainer::task::{Metrics, ResumeEvent, Selection, StepOutput, Task, TaskResult};

/// Stage name: the binary, telemetry.
pub const NAME: &str = "hoser-distill";

/// Loss term names (`loss_next_step`, `loss_time_pred`, `loss_kl` in the logs, as seed 002).
pub const LOSS_TERMS: [&str; 3] = ["kl", "next_step", "time_pred"];

/// File of the cached teacher probabilities in `data.cache_dir` for a history `window` and the
/// distilled steps (`all` or `last`): one file per setting, so runs (or a study's trials) that
/// differ in them each find their own instead of recomputing a shared one. The file's manifest
/// still checks the teacher, token map, data, window and steps.
pub fn teacher_cache_file(window: usize, steps: DistillSteps) -> String {
    format!("teacher-probs-w{window}-{}.bin", steps.name())
}

/// Which steps of a trajectory are distilled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillSteps {
    /// Every real step (what the fork's config intended).
    #[default]
    All,
    /// Only the last real step of each trajectory (what the fork's code does).
    Last,
}

impl DistillSteps {
    /// `all` or `last`.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Last => "last",
        }
    }
}

/// `distill:` (natively `loss.distill`) — the distillation term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    /// λ, the weight of the KL term (the fork: 0.01). 0 reads no teacher: a vanilla run.
    pub lambda: f64,
    /// τ, the temperature of both distributions (the fork: 2.0).
    pub temperature: f64,
    /// Teacher history length in tokens, SOT included while it fits (the fork: 4).
    pub window: usize,
    /// `all` (default) or `last` (the fork's code: the last real step of each trajectory).
    pub steps: DistillSteps,
    /// Multiply the KL by τ² (Hinton); `false` is the fork's unscaled KL.
    pub temperature_squared: bool,
}

impl Default for DistillSection {
    fn default() -> Self {
        Self { lambda: 0.01, temperature: 2.0, window: 4, steps: DistillSteps::All, temperature_squared: false }
    }
}

impl DistillSection {
    /// The factor the KL is multiplied by before λ: τ² or 1.
    pub fn scale(&self) -> f64 {
        if self.temperature_squared { self.temperature * self.temperature } else { 1.0 }
    }
}

/// `loss:` — `ce_weight · L_next + time_weight · L_time + distill.lambda · KL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillLoss {
    /// Weight of the masked next-road cross-entropy (`loss_next_step`).
    pub ce_weight: f64,
    /// Weight of HOSER's log1p relative time loss (`loss_time_pred`).
    pub time_weight: f64,
    /// The distillation term (written `distill:` at the top level of a config file).
    pub distill: DistillSection,
}

impl Default for DistillLoss {
    fn default() -> Self {
        let v = LossSection::default();
        Self { ce_weight: v.ce_weight, time_weight: v.time_weight, distill: DistillSection::default() }
    }
}

impl DistillLoss {
    /// hoser-vanilla's loss section (the CE and time weights).
    pub fn vanilla(&self) -> LossSection {
        LossSection { ce_weight: self.ce_weight, time_weight: self.time_weight }
    }

    /// The weights by term name.
    pub fn weights(&self) -> std::collections::BTreeMap<String, f64> {
        std::collections::BTreeMap::from([
            ("next_step".to_string(), self.ce_weight),
            ("time_pred".to_string(), self.time_weight),
            ("kl".to_string(), self.distill.lambda),
        ])
    }
}

impl Validate for DistillLoss {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        self.vanilla().validate(p);
        let d = &self.distill;
        if !(d.lambda.is_finite() && d.lambda >= 0.0) {
            p.push(ConfigProblem::new("distill.lambda", format!("expected a weight ≥ 0, got {}", d.lambda)));
        }
        if !(d.temperature.is_finite() && d.temperature > 0.0) {
            p.push(ConfigProblem::new(
                "distill.temperature",
                format!("expected a positive temperature, got {}", d.temperature),
            ));
        }
        if d.window == 0 {
            p.push(ConfigProblem::new("distill.window", "expected at least 1 token of history"));
        }
    }
}

/// `data:` — hoser-vanilla's data keys plus where the teacher is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillData {
    /// Dataset name (`Beijing`, `Porto`, ...); names the default `data_dir` and teacher.
    pub dataset: String,
    /// Directory of `roadmap.geo`, `roadmap.rel`, `train.csv`, `val.csv`, `test.csv`
    /// (default `data/<dataset>`).
    pub data_dir: Option<PathBuf>,
    /// Zones computed with METIS when the dataset has no `road_network_partition` file.
    pub num_zones: usize,
    /// Seed of the zone partitioner.
    pub partition_seed: u64,
    /// Skip (and count) trajectories that contradict the road network instead of failing.
    pub skip_invalid: bool,
    /// Keep only the last `max_len` steps of longer trajectories (`null`: no crop).
    pub max_len: Option<usize>,
    /// Directory of the preprocessing cache and of the teacher-probability cache (`null`: none;
    /// the teacher's probabilities are then computed once per run, in memory).
    pub cache_dir: Option<PathBuf>,
    /// `--teacher`, `distill.teacher`: the teacher directory (`hoser-distill teacher`'s output;
    /// default `save/<dataset>/lmtad`).
    pub teacher: Option<PathBuf>,
    /// `distill.cache`: compute the teacher's probabilities once before training (`true`), or run
    /// the teacher on every batch (`false`).
    pub teacher_cache: bool,
}

impl Default for DistillData {
    fn default() -> Self {
        let v = DataSection::default();
        Self {
            dataset: v.dataset,
            data_dir: v.data_dir,
            num_zones: v.num_zones,
            partition_seed: v.partition_seed,
            skip_invalid: v.skip_invalid,
            max_len: v.max_len,
            cache_dir: v.cache_dir,
            teacher: None,
            teacher_cache: true,
        }
    }
}

impl DistillData {
    /// hoser-vanilla's data section.
    pub fn vanilla(&self) -> DataSection {
        DataSection {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            num_zones: self.num_zones,
            partition_seed: self.partition_seed,
            skip_invalid: self.skip_invalid,
            max_len: self.max_len,
            cache_dir: self.cache_dir.clone(),
        }
    }

    /// `teacher`, or `save/<dataset>/lmtad` (where `hoser-distill teacher` writes).
    pub fn teacher_dir(&self) -> PathBuf {
        self.teacher.clone().unwrap_or_else(|| PathBuf::from("save").join(&self.dataset).join("lmtad"))
    }
}

impl Validate for DistillData {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        self.vanilla().validate(p);
    }
}

/// Full config of the stage.
pub type DistillConfig = RunConfig<ModelSection, DistillData, DistillLoss>;

/// The hoser-vanilla config the distilled run extends (same shared sections, model, data and
/// CE/time weights).
pub fn vanilla_config(config: &DistillConfig) -> VanillaConfig {
    config.with_sections(config.model.clone(), config.data.vanilla(), config.loss.vanilla())
}

/// Config-file key aliases: `distill.*` at the top level, as the fork's YAML writes it.
pub fn aliases() -> Vec<(String, String)> {
    vec![
        ("distill.teacher".into(), "data.teacher".into()),
        ("distill.cache".into(), "data.teacher_cache".into()),
        ("distill".into(), "loss.distill".into()),
    ]
}

/// Why the distillation task could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// The dataset or the vanilla part of the config.
    #[error(transparent)]
    Vanilla(#[from] VanillaError),
    /// The teacher directory could not be loaded (the message names the directory or file).
    #[error("the teacher: {0}")]
    Teacher(#[source] Box<TeacherError>),
    /// The teacher was trained on another dataset, or a road has no token.
    #[error("teacher {}: {source}", dir.display())]
    Tokens {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<TokenError>,
    },
    /// The window does not fit the teacher.
    #[error(
        "distill.window: {window} tokens of history but the teacher in {} reads at most {block} (its block_size)",
        dir.display()
    )]
    Window {
        /// The teacher directory.
        dir: PathBuf,
        /// The configured window.
        window: usize,
        /// The teacher's context.
        block: usize,
    },
    /// Reading a teacher file for its checksum.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The loss weights.
    #[error("loss: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Loss(Vec<CombinedError>),
    /// The teacher's forward pass refused its input.
    #[error("teacher input: {0}")]
    Input(#[from] InputError),
}

/// The teacher's history at step `step` of a trajectory whose road cells are `cells`
/// (`cells[i]` = token of road `r_i`): `[SOT] + cells[0..=step]`, keeping its last `window` tokens
/// (SOT while it fits).
pub fn history_window(sot: u32, cells: &[u32], step: usize, window: usize) -> Vec<u32> {
    let len = step + 2;
    (len.saturating_sub(window)..len).map(|j| if j == 0 { sot } else { cells[j - 1] }).collect()
}

/// The teacher's probability of each candidate road: its next-token probability `next` (over the
/// vocabulary) read at the candidate's cell. Candidates sharing a cell get the same mass; the
/// renormalisation over the candidate set happens in the KL.
pub fn candidate_probs(next: &[f32], candidates: &[u32], map: &TokenMap) -> Vec<f32> {
    candidates.iter().map(|&c| map.token(c).map_or(0.0, |tok| next[tok as usize])).collect()
}

/// The teacher's candidate probabilities of every step of every sample, aligned with each
/// sample's candidates (`probs[s]` holds step 0's candidates, then step 1's, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherProbs {
    /// Per sample, the flattened per-step candidate probabilities.
    pub probs: Vec<Vec<f32>>,
}

/// Distinct history windows per forward pass when computing [`TeacherProbs`].
const TEACHER_CHUNK: usize = 256;

impl TeacherProbs {
    /// Runs `teacher` once per distinct history window of `samples` (in batches) and reads each
    /// step's candidates: every step, or with `only_last` the last of each sample (the others hold 0).
    pub fn compute<B: Backend>(
        teacher: &Teacher<B>,
        samples: &[&Sample],
        window: usize,
        only_last: bool,
        device: &B::Device,
    ) -> Result<Self, DistillError> {
        let map = &teacher.map;
        let dir = &teacher.dir;
        let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut windows: Vec<Vec<u32>> = Vec::new();
        // (sample, step, window id)
        let mut wanted: Vec<(usize, usize, usize)> = Vec::new();
        for (s, sample) in samples.iter().enumerate() {
            let cells = map
                .cells(sample.trace_road_id())
                .map_err(|source| DistillError::Tokens { dir: dir.clone(), source: Box::new(source) })?;
            let t = sample.trace_len();
            let first = if only_last { t.saturating_sub(1) } else { 0 };
            for step in first..t {
                let w = history_window(map.sot(), &cells, step, window);
                let id = *index.entry(w.clone()).or_insert_with(|| {
                    windows.push(w);
                    windows.len() - 1
                });
                wanted.push((s, step, id));
            }
        }
        let vocab = map.vocab_size();
        let mut probs: Vec<Vec<f32>> =
            samples.iter().map(|s| vec![0.0; (0..s.trace_len()).map(|i| s.candidates(i).len()).sum()]).collect();
        // Each step's offset into its sample's candidates.
        let offsets: Vec<Vec<usize>> = samples
            .iter()
            .map(|s| {
                let mut at = 0;
                (0..s.trace_len())
                    .map(|i| {
                        let o = at;
                        at += s.candidates(i).len();
                        o
                    })
                    .collect()
            })
            .collect();
        // One chunk of distinct windows at a time: only `TEACHER_CHUNK × V` probabilities are ever
        // held, whatever the dataset's size.
        wanted.sort_unstable_by_key(|&(_, _, id)| id);
        let mut next_use = 0;
        for (c, chunk) in windows.chunks(TEACHER_CHUNK).enumerate() {
            let logp = teacher.model.next_token_log_probs(chunk, map.pad(), device)?;
            let next = logp.exp().into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
            let end = (c + 1) * TEACHER_CHUNK;
            while next_use < wanted.len() && wanted[next_use].2 < end {
                let (s, step, id) = wanted[next_use];
                let local = id - c * TEACHER_CHUNK;
                let row = &next[local * vocab..(local + 1) * vocab];
                let p = candidate_probs(row, samples[s].candidates(step), map);
                let at = offsets[s][step];
                probs[s][at..at + p.len()].copy_from_slice(&p);
                next_use += 1;
            }
        }
        Ok(Self { probs })
    }
}

/// What identifies a teacher-probability cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherCacheKey {
    /// Format of the file.
    pub format: u32,
    /// The training data (hoser-vanilla's dataset id: input files, options, crop).
    pub dataset_id: String,
    /// CRC-32C of `teacher.safetensors`.
    pub teacher_weights: u32,
    /// CRC-32C of `token_map.json`.
    pub token_map: u32,
    /// History window.
    pub window: usize,
    /// Whether only the last step of each trajectory was computed.
    pub only_last: bool,
    /// Number of samples and of candidate probabilities.
    pub samples: usize,
    /// Total candidate probabilities stored.
    pub values: usize,
}

const CACHE_MAGIC: &[u8; 8] = b"HOSERKD1";

/// Why a cache file was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheRead {
    /// The probabilities.
    Hit(TeacherProbs),
    /// No file.
    Missing,
    /// Written for another teacher, window or data: what differs.
    Stale(String),
    /// Unreadable: why.
    Corrupt(String),
}

/// Reads a teacher-probability cache written for `key`, shaped like `shape` (values per sample).
pub fn read_cache(path: &Path, key: &TeacherCacheKey, shape: &[usize]) -> CacheRead {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheRead::Missing,
        Err(e) => return CacheRead::Corrupt(e.to_string()),
        Ok(mut f) => {
            if let Err(e) = f.read_to_end(&mut bytes) {
                return CacheRead::Corrupt(e.to_string());
            }
        }
    }
    let corrupt = |why: &str| CacheRead::Corrupt(why.to_string());
    if bytes.len() < 12 || &bytes[..8] != CACHE_MAGIC {
        return corrupt("not a teacher-probability cache (bad magic)");
    }
    let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let Some(manifest) = bytes.get(12..12 + n) else { return corrupt("truncated manifest") };
    let Ok(cached) = serde_json::from_slice::<TeacherCacheKey>(manifest) else { return corrupt("bad manifest") };
    if &cached != key {
        let mut why = Vec::new();
        let (a, b) = (&cached, key);
        if a.teacher_weights != b.teacher_weights {
            why.push("teacher weights changed".to_string());
        }
        if a.token_map != b.token_map {
            why.push("token map changed".into());
        }
        if a.window != b.window {
            why.push(format!("window {} → {}", a.window, b.window));
        }
        if a.dataset_id != b.dataset_id || a.samples != b.samples || a.values != b.values {
            why.push("training data changed".into());
        }
        if a.only_last != b.only_last || a.format != b.format {
            why.push("distilled steps or format changed".into());
        }
        return CacheRead::Stale(why.join(", "));
    }
    let rest = &bytes[12 + n..];
    if rest.len() != 4 + 4 * key.values {
        return corrupt("payload length differs from the manifest");
    }
    let crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let payload = &rest[4..];
    if crc32c::crc32c(payload) != crc {
        return corrupt("payload checksum mismatch");
    }
    let mut values = payload.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let probs = shape.iter().map(|&len| values.by_ref().take(len).collect()).collect();
    CacheRead::Hit(TeacherProbs { probs })
}

/// Writes `probs` for `key`, atomically.
pub fn write_cache(path: &Path, key: &TeacherCacheKey, probs: &TeacherProbs) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let manifest = serde_json::to_vec(key).map_err(std::io::Error::other)?;
    let payload: Vec<u8> = probs.probs.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    checkpoints::atomic::write_atomic(
        path,
        |f| {
            f.write_all(CACHE_MAGIC)?;
            f.write_all(&(manifest.len() as u32).to_le_bytes())?;
            f.write_all(&manifest)?;
            f.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
            f.write_all(&payload)
        },
        || {},
    )
}

/// Where the teacher's probabilities come from during training.
enum TeacherSource<B: Backend> {
    /// Computed before training.
    Cached(TeacherProbs),
    /// The teacher, run on each batch.
    Online(Box<Teacher<B>>),
}

/// The distillation settings of a run with `λ > 0`.
struct Distillation<B: Backend> {
    section: DistillSection,
    source: TeacherSource<B>,
    teacher_id: String,
}

/// hoser-vanilla's task plus the distillation term.
pub struct DistillTask<B: AutodiffBackend> {
    vanilla: VanillaTask,
    loss: CombinedLoss,
    distill: Option<Distillation<B::InnerBackend>>,
    mode: String,
}

/// CRC-32C over a teacher's weights and token map: what identifies the teacher in a checkpoint
/// and in the cache.
pub fn teacher_checksums(dir: &Path) -> Result<(u32, u32), DataError> {
    Ok((file_crc32c(&dir.join(WEIGHTS_FILE))?, file_crc32c(&dir.join(TOKEN_MAP_FILE))?))
}

impl<B: AutodiffBackend> DistillTask<B> {
    /// Loads the dataset (as hoser-vanilla does) and, with `λ > 0`, the teacher; checks that
    /// the teacher was trained on this dataset, and computes (or reads from the cache) its
    /// candidate probabilities unless `distill.cache` is off.
    pub fn new(config: &DistillConfig, device: &B::Device) -> Result<Self, DistillError> {
        let vanilla = VanillaTask::new(&vanilla_config(config))?;
        let loss = CombinedLoss::new(&config.loss.weights(), &LOSS_TERMS).map_err(DistillError::Loss)?;
        let section = config.loss.distill.clone();
        if section.lambda == 0.0 {
            tracing::info!("distill.lambda is 0: no teacher is read; this run is hoser-vanilla's");
            return Ok(Self { vanilla, loss, distill: None, mode: "distill lambda=0".into() });
        }
        let dir = config.data.teacher_dir();
        let inner: B::Device = device.clone();
        let teacher = Teacher::<B::InnerBackend>::load(&dir, &inner).map_err(|e| DistillError::Teacher(Box::new(e)))?;
        teacher
            .map
            .check_dataset(&config.data.dataset, &vanilla.data().files.geo)
            .map_err(|source| DistillError::Tokens { dir: dir.clone(), source: Box::new(source) })?;
        if section.window > teacher.config.block_size {
            return Err(DistillError::Window { dir, window: section.window, block: teacher.config.block_size });
        }
        let (weights_crc, map_crc) = teacher_checksums(&dir)?;
        let teacher_id =
            format!("{:08x}", crc32c::crc32c(&[weights_crc.to_le_bytes(), map_crc.to_le_bytes()].concat()));
        tracing::info!(
            "teacher {}: {} parameters, vocabulary {}, {} roads; window {}, τ {}, λ {}, steps {}{}",
            dir.display(),
            teacher.config.num_params(),
            teacher.map.vocab_size(),
            teacher.map.num_roads(),
            section.window,
            section.temperature,
            section.lambda,
            section.steps.name(),
            if section.temperature_squared { ", KL × τ²" } else { "" }
        );
        let mode = format!(
            "distill steps={} lambda={} temperature={} temperature_squared={} window={} teacher={teacher_id}",
            section.steps.name(),
            section.lambda,
            section.temperature,
            section.temperature_squared,
            section.window
        );
        let source = if config.data.teacher_cache {
            let samples: Vec<&Sample> = vanilla.data().train.samples.iter().collect();
            let only_last = section.steps == DistillSteps::Last;
            let shape: Vec<usize> =
                samples.iter().map(|s| (0..s.trace_len()).map(|i| s.candidates(i).len()).sum()).collect();
            let key = TeacherCacheKey {
                format: 1,
                dataset_id: Task::<B>::dataset_id(&vanilla),
                teacher_weights: weights_crc,
                token_map: map_crc,
                window: section.window,
                only_last,
                samples: samples.len(),
                values: shape.iter().sum(),
            };
            let path =
                config.data.cache_dir.as_ref().map(|d| d.join(teacher_cache_file(section.window, section.steps)));
            let cached = match &path {
                None => None,
                Some(p) => match read_cache(p, &key, &shape) {
                    CacheRead::Hit(probs) => {
                        tracing::info!("teacher probabilities: read from {}", p.display());
                        Some(probs)
                    }
                    CacheRead::Missing => None,
                    CacheRead::Stale(why) => {
                        tracing::info!("teacher probabilities in {}: stale ({why}); recomputing", p.display());
                        None
                    }
                    CacheRead::Corrupt(why) => {
                        tracing::warn!("teacher probabilities in {}: corrupt ({why}); recomputing", p.display());
                        None
                    }
                },
            };
            let probs = match cached {
                Some(p) => p,
                None => {
                    let start = std::time::Instant::now();
                    let probs = TeacherProbs::compute(&teacher, &samples, section.window, only_last, &inner)?;
                    tracing::info!(
                        "teacher probabilities of {} training trajectories computed in {:.1} s",
                        samples.len(),
                        start.elapsed().as_secs_f64()
                    );
                    if let Some(p) = &path {
                        match write_cache(p, &key, &probs) {
                            Ok(()) => tracing::info!("teacher probabilities cached in {}", p.display()),
                            Err(e) => tracing::warn!("could not write {}: {e}", p.display()),
                        }
                    }
                    probs
                }
            };
            TeacherSource::Cached(probs)
        } else {
            tracing::info!("distill.cache is off: the teacher runs on every batch");
            TeacherSource::Online(Box::new(teacher))
        };
        Ok(Self { vanilla, loss, distill: Some(Distillation { section, source, teacher_id }), mode })
    }

    /// The vanilla task inside.
    pub fn vanilla(&self) -> &VanillaTask {
        &self.vanilla
    }

    /// The teacher's identity (CRC of weights and token map), `None` when λ is 0.
    pub fn teacher_id(&self) -> Option<&str> {
        self.distill.as_ref().map(|d| d.teacher_id.as_str())
    }

    /// The tempered teacher targets of the collated batch of training samples `indices`
    /// (shape `[B, T, C]`): every distilled step's candidate probabilities, renormalised and
    /// tempered on the host ([`TemperedTeacher`]). `None` when λ is 0.
    pub fn teacher_batch(
        &self,
        indices: &[usize],
        shape: [usize; 3],
        device: &B::Device,
    ) -> Result<Option<(TemperedTeacher, Tensor<B, 3>)>, DistillError> {
        let Some(d) = &self.distill else { return Ok(None) };
        let samples: Vec<&Sample> = indices.iter().map(|&i| &self.vanilla.data().train.samples[i]).collect();
        let only_last = d.section.steps == DistillSteps::Last;
        let online;
        let probs: Vec<&[f32]> = match &d.source {
            TeacherSource::Cached(p) => indices.iter().map(|&i| p.probs[i].as_slice()).collect(),
            TeacherSource::Online(teacher) => {
                online = TeacherProbs::compute(teacher, &samples, d.section.window, only_last, device)?;
                online.probs.iter().map(Vec::as_slice).collect()
            }
        };
        let max_len = self.vanilla.collator().max_len();
        let mut targets = TemperedTeacher::new(shape);
        for (row, sample) in samples.iter().enumerate() {
            let len = max_len.map_or(sample.trace_len(), |m| m.min(sample.trace_len()));
            let start = sample.trace_len() - len;
            let mut offset: usize = (0..start).map(|i| sample.candidates(i).len()).sum();
            for k in 0..len {
                let n = sample.candidates(start + k).len();
                if !only_last || k + 1 == len {
                    targets.push(row, k, &probs[row][offset..offset + n], d.section.temperature);
                }
                offset += n;
            }
        }
        let q = targets.probs(device);
        Ok(Some((targets, q)))
    }
}

/// One training micro-batch: hoser-vanilla's, and the teacher's candidate probabilities.
pub struct DistillBatch<B: Backend> {
    vanilla: VanillaBatch<B>,
    teacher: Option<(TemperedTeacher, Tensor<B, 3>)>,
}

impl<B: AutodiffBackend> Task<B> for DistillTask<B> {
    type Model = Hoser<B>;
    type Batch = DistillBatch<B>;

    fn build_model(&self, device: &B::Device) -> Hoser<B> {
        Task::<B>::build_model(&self.vanilla, device)
    }

    fn train_len(&self) -> usize {
        Task::<B>::train_len(&self.vanilla)
    }

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<DistillBatch<B>> {
        let vanilla = Task::<B>::train_batch(&self.vanilla, indices, device)?;
        let teacher = self.teacher_batch(indices, vanilla.steps().dims(), device)?;
        Ok(DistillBatch { vanilla, teacher })
    }

    fn train_step(&self, model: &Hoser<B>, batch: &DistillBatch<B>) -> TaskResult<StepOutput<B>> {
        let terms = self.vanilla.step_terms(model, &batch.vanilla)?;
        let mut computed = Vec::new();
        if let Some(ce) = terms.next_step {
            computed.push(("next_step", ce));
        }
        if let Some(time) = terms.time {
            computed.push(("time_pred", time));
        }
        if let (Some(d), Some((teacher, q))) = (&self.distill, &batch.teacher) {
            let mask = batch.vanilla.steps().candidate_mask().clone();
            let kl = distillation_kl_tempered(terms.logits, teacher, q.clone(), mask, d.section.temperature)?;
            let scale = d.section.scale();
            computed.push(("kl", if scale == 1.0 { kl } else { kl.mul_scalar(scale) }));
        }
        let out = self.loss.combine(computed)?;
        let mut metrics = out.components();
        metrics.remove("loss");
        Ok(StepOutput { loss: out.total, metrics })
    }

    fn begin_validation(&self, step: u64) -> TaskResult<()> {
        Task::<B>::begin_validation(&self.vanilla, step)
    }

    fn validate(&self, model: &Hoser<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        Task::<B>::validate(&self.vanilla, model, device)
    }

    fn selection(&self) -> Selection {
        Task::<B>::selection(&self.vanilla)
    }

    fn dataset_id(&self) -> String {
        Task::<B>::dataset_id(&self.vanilla)
    }

    fn mode(&self) -> String {
        self.mode.clone()
    }

    fn on_resume(&self, event: ResumeEvent<'_>) {
        match event {
            ResumeEvent::Found { path, step, epoch } => tracing::info!(
                "✅ Valid checkpoint found: will resume from epoch {} (step {step}, {})",
                epoch + 1,
                path.display()
            ),
            ResumeEvent::Restored { state, .. } => {
                let best = state.best.map_or("none yet".to_string(), |(_, v)| format!("{v:.6}"));
                tracing::info!(
                    "✅ Resumed from checkpoint: epoch {}, best_val_acc={best} (step {}, batch {} of the epoch)",
                    state.epoch + 1,
                    state.step,
                    state.position
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_windows_keep_sot_while_it_fits() {
        let sot = 99;
        let cells = [10, 11, 12, 13, 14];
        assert_eq!(history_window(sot, &cells, 0, 4), vec![99, 10]);
        assert_eq!(history_window(sot, &cells, 2, 4), vec![99, 10, 11, 12]);
        assert_eq!(history_window(sot, &cells, 3, 4), vec![10, 11, 12, 13], "SOT dropped once t + 2 > window");
        assert_eq!(history_window(sot, &cells, 4, 4), vec![11, 12, 13, 14]);
        assert_eq!(history_window(sot, &cells, 4, 1), vec![14]);
        assert_eq!(history_window(sot, &cells, 4, 100), vec![99, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn bad_distill_keys_are_reported() {
        let mut l = DistillLoss::default();
        l.distill.lambda = -1.0;
        l.distill.temperature = 0.0;
        l.distill.window = 0;
        let mut p = Vec::new();
        l.validate(&mut p);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["distill.lambda", "distill.temperature", "distill.window"]);
    }
}
