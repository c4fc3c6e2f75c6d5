//! `hoser-distill teacher`: LM-TAD trained on a LibCity dataset's trajectories through the shared
//! trainer (upstream `code/train_LMTAD.py`), validated by perplexity against a unigram baseline.
//!
//! Each trajectory becomes `[SOT] + cells + [EOT]` (one token per road: the grid cell of its
//! centroid, see [`hoser::lmtad::tokens`]); the objective is next-token cross-entropy ignoring
//! PAD. A sequence longer than `block_size + 1` tokens is cut into windows of `block_size + 1`
//! tokens that overlap by one, so every target is predicted exactly once (the context restarts
//! at each window).
//!
//! At the end of a run (also an interrupted one) the run directory receives the teacher's
//! files — `teacher.safetensors` (the best weights by validation perplexity, upstream keys),
//! `model_config.json` and `token_map.json` — which `teacher-score` and the distillation read.

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion as _, Int, Tensor};
use hoser::data::{DataError, DatasetFiles, RoadNetwork, file_crc32c, read_trajectories};
use hoser::lmtad::model::{InputError, LmTad, LmTadConfig, ModelSize, Positions, right_padded, target_mask};
use hoser::lmtad::teacher::{MODEL_CONFIG_FILE, TOKEN_MAP_FILE, WEIGHTS_FILE};
use hoser::lmtad::tokens::{DEFAULT_CELL_DEG, TokenError, TokenMap};
use hoser::lmtad::weights::{LmTadWeightError, UpstreamModelConfig};
use serde::{Deserialize, Serialize};
use trainer::config::{ConfigProblem, NoSection, RunConfig, Validate};
use trainer::task::{Metrics, Mode, Selection, StepOutput, Task, TaskResult};

/// Stage name of the teacher run (telemetry, default output directory).
pub const NAME: &str = "lmtad-teacher";

/// `model:` — the decoder's size. `size` picks a preset; `n_layer`, `n_head`, `n_embd` override it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherModel {
    /// `test` (2 layers, 2 heads, 32 wide), `small` (4, 4, 128) or `teacher` (8, 12, 768: the fork's).
    pub size: ModelSize,
    /// Blocks (overrides the preset).
    pub n_layer: Option<usize>,
    /// Heads (overrides the preset).
    pub n_head: Option<usize>,
    /// Width (overrides the preset).
    pub n_embd: Option<usize>,
    /// Longest context; longer trajectories are cut into windows (upstream default 1024).
    pub block_size: usize,
    /// Dropout (upstream's training script: 0.2).
    pub dropout: f64,
    /// `learned` (upstream `integer_poe: false`) or `sinusoidal`.
    pub positions: Positions,
}

impl Default for TeacherModel {
    fn default() -> Self {
        Self {
            size: ModelSize::Test,
            n_layer: None,
            n_head: None,
            n_embd: None,
            block_size: 1024,
            dropout: 0.2,
            positions: Positions::Learned,
        }
    }
}

impl TeacherModel {
    /// The decoder over `vocab_size` tokens.
    pub fn config(&self, vocab_size: usize) -> LmTadConfig {
        let (l, h, c) = self.size.dims();
        LmTadConfig {
            vocab_size,
            block_size: self.block_size,
            n_layer: self.n_layer.unwrap_or(l),
            n_head: self.n_head.unwrap_or(h),
            n_embd: self.n_embd.unwrap_or(c),
            dropout: self.dropout,
            positions: self.positions,
        }
    }
}

impl Validate for TeacherModel {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        // The vocabulary comes from the data; any positive size shows the other problems.
        for (key, message) in self.config(1).problems() {
            p.push(ConfigProblem::new(&format!("model.{key}"), message));
        }
    }
}

/// `data:` — the LibCity dataset and its grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherData {
    /// Dataset name; names the default `data_dir` and is recorded in the token map.
    pub dataset: String,
    /// Directory of `roadmap.geo`, `roadmap.rel`, `train.csv`, `val.csv` (default `data/<dataset>`).
    pub data_dir: Option<PathBuf>,
    /// Grid cell size in degrees (the fork: 0.001).
    pub cell_deg: f64,
    /// Skip (and count) trajectories that contradict the road network instead of failing.
    pub skip_invalid: bool,
}

impl Default for TeacherData {
    fn default() -> Self {
        Self { dataset: "Beijing".into(), data_dir: None, cell_deg: DEFAULT_CELL_DEG, skip_invalid: false }
    }
}

impl TeacherData {
    /// `data_dir`, or `data/<dataset>`.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("data").join(&self.dataset))
    }
}

impl Validate for TeacherData {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if self.dataset.is_empty() {
            p.push(ConfigProblem::new("data.dataset", "expected a dataset name"));
        }
        if !(self.cell_deg.is_finite() && self.cell_deg > 0.0) {
            p.push(ConfigProblem::new(
                "data.cell_deg",
                format!("expected a positive cell size in degrees, got {}", self.cell_deg),
            ));
        }
    }
}

/// Full config of the teacher run (no `loss:` section: the loss is next-token cross-entropy).
pub type TeacherConfig = RunConfig<TeacherModel, TeacherData, NoSection>;

/// Why the teacher task could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// The dataset could not be read.
    #[error("loading the dataset in {}: {source}", dir.display())]
    Data {
        /// The dataset directory.
        dir: PathBuf,
        /// What went wrong, naming the file.
        #[source]
        source: DataError,
    },
    /// The token map could not be built.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// A split has no trajectory.
    #[error("{}: the {split} split has no trajectory ({summary}): there is nothing to {purpose}", path.display())]
    EmptySplit {
        /// The split's file.
        path: PathBuf,
        /// `training` or `validation`.
        split: &'static str,
        /// What reading it found.
        summary: String,
        /// What the split is for.
        purpose: &'static str,
    },
    /// The model config cannot work.
    #[error("model.{key}: {message}")]
    Model {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// Cuts `seq` into windows of at most `block_size + 1` tokens overlapping by one token, so the
/// targets of all windows are the targets of `seq`, each once.
pub fn windows(seq: &[u32], block_size: usize) -> Vec<Vec<u32>> {
    if seq.len() <= block_size + 1 {
        return vec![seq.to_vec()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < seq.len() {
        let end = (start + block_size + 1).min(seq.len());
        out.push(seq[start..end].to_vec());
        start = end - 1;
    }
    out
}

/// Token-frequency baseline: `p(v) = (count(v) + 1) / (N + K)` over the K tokens that can be a
/// target (grid cells and EOT), counted on the training targets; returns the perplexity of
/// `val`'s targets under it. Add-one smoothing keeps a cell never seen in training finite.
pub fn unigram_perplexity(train: &[Vec<u32>], val: &[Vec<u32>], map: &TokenMap) -> f64 {
    let k = map.grid().num_cells() + 1;
    let index = |t: u32| if t == map.eot() { k - 1 } else { t as usize };
    let mut counts = vec![0u64; k];
    let mut n = 0u64;
    for s in train {
        for &t in &s[1..] {
            counts[index(t)] += 1;
            n += 1;
        }
    }
    let (mut nll, mut m) = (0f64, 0u64);
    for s in val {
        for &t in &s[1..] {
            nll -= ((counts[index(t)] + 1) as f64 / (n + k as u64) as f64).ln();
            m += 1;
        }
    }
    (nll / m.max(1) as f64).exp()
}

/// Next-token negative log-likelihood summed over the non-PAD targets of `seqs`, and their count,
/// in batches of `batch_size` (the model in eval form: no dropout).
pub fn total_nll<B: Backend>(
    model: &LmTad<B>,
    seqs: &[Vec<u32>],
    map: &TokenMap,
    batch_size: usize,
    device: &B::Device,
) -> Result<(f64, u64), InputError> {
    let (mut sum, mut count) = (0f64, 0u64);
    for chunk in seqs.chunks(batch_size.max(1)) {
        let (tokens, _) = right_padded::<B>(chunk, map.pad(), map.vocab_size(), model.block_size + 1, device)?;
        let mask = target_mask(tokens.clone(), map.pad());
        let logp = model.target_log_probs(tokens);
        sum -= (logp * mask.clone()).sum().into_scalar().elem::<f64>();
        count += mask.sum().into_scalar().elem::<f64>() as u64;
    }
    Ok((sum, count))
}

/// The road network of the dataset the config names and its token map.
pub fn token_map(config: &TeacherConfig) -> Result<(RoadNetwork, TokenMap), TeacherError> {
    let dir = config.data.dir();
    let files = DatasetFiles::in_dir(&dir);
    let network = RoadNetwork::read(&files.geo, &files.rel).map_err(|source| TeacherError::Data { dir, source })?;
    let map = TokenMap::build(&config.data.dataset, &files.geo, &network, config.data.cell_deg)?;
    Ok((network, map))
}

/// One training micro-batch: right-padded token ids and the number of real targets in it.
pub struct TeacherBatch<B: Backend> {
    /// `[B, T]` token ids, PAD after each row's EOT.
    pub tokens: Tensor<B, 2, Int>,
    /// Non-PAD targets (`Σ (len − 1)`).
    pub targets: usize,
}

/// The teacher task over a tokenised dataset.
pub struct TeacherTask {
    map: TokenMap,
    model: LmTadConfig,
    train: Vec<Vec<u32>>,
    val: Vec<Vec<u32>>,
    unigram: f64,
    val_batch_size: usize,
    dataset_id: String,
}

impl TeacherTask {
    /// Reads the dataset the config names, builds its token map and tokenises both splits.
    pub fn new(config: &TeacherConfig) -> Result<Self, TeacherError> {
        let dir = config.data.dir();
        let files = DatasetFiles::in_dir(&dir);
        let data_error = |source| TeacherError::Data { dir: dir.clone(), source };
        let (network, map) = token_map(config)?;
        let occupancy = map.occupancy();
        tracing::info!(
            "token map: {} roads on a {}x{} grid of {}° cells, {} occupied ({occupancy}); vocabulary {} (PAD {}, EOT {}, SOT {})",
            map.num_roads(),
            map.grid().rows,
            map.grid().cols,
            config.data.cell_deg,
            map.occupied_cells(),
            map.vocab_size(),
            map.pad(),
            map.eot(),
            map.sot()
        );
        let model = config.model.config(map.vocab_size());
        if let Some((key, message)) = model.problems().into_iter().next() {
            return Err(TeacherError::Model { key, message });
        }
        let mut splits = Vec::new();
        for (path, split, purpose) in
            [(&files.train, "training", "train on"), (&files.val, "validation", "validate on")]
        {
            let file = read_trajectories(path, &network, config.data.skip_invalid).map_err(data_error)?;
            if file.trajectories.is_empty() {
                return Err(TeacherError::EmptySplit {
                    path: path.clone(),
                    split,
                    summary: file.summary.describe(),
                    purpose,
                });
            }
            let mut seqs = Vec::new();
            for t in &file.trajectories {
                seqs.extend(windows(&map.encode(&t.roads)?, model.block_size));
            }
            let targets: usize = seqs.iter().map(|s| s.len() - 1).sum();
            // Single-road trips are kept: `[SOT, cell, EOT]` has two targets.
            let s = &file.summary;
            tracing::info!(
                "{split}: {}: {} rows, {} trajectories kept ({} single-road), {} skipped as invalid → {} sequences, \
                 {targets} target tokens",
                s.file.display(),
                s.rows,
                file.trajectories.len(),
                s.single_road,
                s.skipped.total(),
                seqs.len()
            );
            splits.push(seqs);
        }
        let val = splits.pop().unwrap_or_default();
        let train = splits.pop().unwrap_or_default();
        let unigram = unigram_perplexity(&train, &val, &map);
        tracing::info!("unigram (token-frequency) baseline: validation perplexity {unigram:.3}");
        tracing::info!("LM-TAD: {} parameters (tied embedding and head counted once)", model.num_params());
        let mut key = Vec::new();
        for path in [&files.geo, &files.rel, &files.train, &files.val] {
            key.extend_from_slice(&file_crc32c(path).map_err(data_error)?.to_le_bytes());
        }
        key.extend_from_slice(
            format!("{} {} {}", config.data.cell_deg, config.data.skip_invalid, model.block_size).as_bytes(),
        );
        let dataset_id = format!("lmtad-{}-{:08x}", config.data.dataset, crc32c::crc32c(&key));
        Ok(Self { map, model, train, val, unigram, val_batch_size: config.training.batch_size.max(1), dataset_id })
    }

    /// The token map.
    pub fn map(&self) -> &TokenMap {
        &self.map
    }

    /// The decoder's config (vocabulary from the map).
    pub fn model_config(&self) -> &LmTadConfig {
        &self.model
    }

    /// The training sequences.
    pub fn train_sequences(&self) -> &[Vec<u32>] {
        &self.train
    }

    /// The validation sequences.
    pub fn val_sequences(&self) -> &[Vec<u32>] {
        &self.val
    }

    /// The unigram baseline's validation perplexity.
    pub fn unigram_perplexity(&self) -> f64 {
        self.unigram
    }
}

impl<B: AutodiffBackend> Task<B> for TeacherTask {
    type Model = LmTad<B>;
    type Batch = TeacherBatch<B>;

    fn build_model(&self, device: &B::Device) -> LmTad<B> {
        self.model.init(device)
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<TeacherBatch<B>> {
        let rows: Vec<Vec<u32>> = indices.iter().map(|&i| self.train[i].clone()).collect();
        let (tokens, lengths) =
            right_padded::<B>(&rows, self.map.pad(), self.map.vocab_size(), self.model.block_size + 1, device)?;
        Ok(TeacherBatch { tokens, targets: lengths.iter().map(|l| l - 1).sum() })
    }

    fn train_step(&self, model: &LmTad<B>, batch: &TeacherBatch<B>) -> TaskResult<StepOutput<B>> {
        let loss = model.loss(batch.tokens.clone(), self.map.pad());
        let mut metrics = Metrics::new();
        // Counted on the host: no device round trip per step.
        metrics.insert("target_tokens".into(), batch.targets as f64);
        Ok(StepOutput { loss, metrics })
    }

    fn validate(&self, model: &LmTad<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        let (sum, count) = total_nll(model, &self.val, &self.map, self.val_batch_size, device)?;
        let loss = sum / count.max(1) as f64;
        let mut m = Metrics::new();
        m.insert("val_loss".into(), loss);
        m.insert("val_perplexity".into(), loss.exp());
        // A constant column, so metrics.csv and TensorBoard show the model against the baseline.
        m.insert("val_unigram_perplexity".into(), self.unigram);
        Ok(m)
    }

    fn selection(&self) -> Selection {
        Selection { metric: "val_perplexity".into(), mode: Mode::Min }
    }

    fn dataset_id(&self) -> String {
        self.dataset_id.clone()
    }

    fn mode(&self) -> String {
        "teacher".into()
    }
}

/// A teacher directory's files in a run directory that no run wrote.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} holds a teacher ({}) but no run of its own ({} does not exist): training there would replace those files at \
     the end; choose another --output-dir, or move them",
    dir.display(),
    files.join(", "),
    jsonl.display()
)]
pub struct ForeignTeacher {
    /// The run directory.
    pub dir: PathBuf,
    /// The teacher files found.
    pub files: Vec<&'static str>,
    /// The event log a run there would have.
    pub jsonl: PathBuf,
}

/// Refuses to train into a directory that holds teacher files (e.g. an imported upstream
/// teacher) without the event log of the run that wrote them: the end of the run would write
/// its own teacher over them. A directory with a run of its own is the trainer's business (it
/// refuses a fresh start without `--auto-resume`, and `--on-mismatch fresh` archives the whole
/// run, teacher files included).
pub fn check_no_foreign_teacher(config: &TeacherConfig) -> Result<(), ForeignTeacher> {
    let jsonl = config.logging.paths(&config.output_dir).jsonl;
    let files: Vec<&'static str> = [WEIGHTS_FILE, MODEL_CONFIG_FILE, TOKEN_MAP_FILE]
        .into_iter()
        .filter(|f| config.output_dir.join(f).exists())
        .collect();
    if files.is_empty() || jsonl.exists() {
        return Ok(());
    }
    Err(ForeignTeacher { dir: config.output_dir.clone(), files, jsonl })
}

/// Training throughput recorded in a run's event log: `(target tokens, seconds)` summed over its
/// `train_step` events (`metrics.target_tokens`, `step_time`: forward, backward and optimizer
/// step, data assembly included, validation and saves not), resumed segments included.
pub fn throughput(jsonl: &Path) -> Option<(f64, f64)> {
    let log = trainer::telemetry::read_events(jsonl).ok()?;
    let (mut tokens, mut secs) = (0f64, 0f64);
    for e in log.of_kind("train_step") {
        tokens += e["metrics"]["target_tokens"].as_f64()?;
        secs += e["step_time"].as_f64()?;
    }
    (secs > 0.0).then_some((tokens, secs))
}

/// Why the teacher's files could not be written at the end of a run.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The best-model export could not be read.
    #[error("reading the best weights {}: {message}", path.display())]
    Best {
        /// The export.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Writing the weights failed.
    #[error(transparent)]
    Weights(#[from] LmTadWeightError),
    /// Writing the token map failed.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// Writing the model config failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The best-model export of a run (`checkpoint.export_best` in `checkpoint.export_best_dir`, or in
/// the checkpoint directory), if the config asks for one.
pub fn best_export_path(config: &TeacherConfig) -> Option<PathBuf> {
    let stem = config.checkpoint.export_best.as_ref()?;
    let dir = match &config.checkpoint.export_best_dir {
        Some(d) => config.output_dir.join(d),
        None => config.checkpoint.checkpoint_dir(&config.output_dir),
    };
    Some(dir.join(format!("{stem}.safetensors")))
}

/// Writes the teacher's files into `dir`: `model` as `teacher.safetensors`, its config and the
/// token map. Each file is written atomically.
pub fn write_teacher_dir<B: Backend>(
    dir: &Path,
    model: &LmTad<B>,
    config: &LmTadConfig,
    map: &TokenMap,
) -> Result<(), ExportError> {
    model.save_safetensors(&dir.join(WEIGHTS_FILE))?;
    let path = dir.join(MODEL_CONFIG_FILE);
    let json = serde_json::to_vec_pretty(&UpstreamModelConfig::of(config, map.pad()))
        .map_err(|e| ExportError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
    checkpoints::atomic::write_atomic(&path, |f| std::io::Write::write_all(f, &json), || {})
        .map_err(|source| ExportError::Io { path: path.clone(), source })?;
    map.save(&dir.join(TOKEN_MAP_FILE))?;
    Ok(())
}

/// Loads the run's best weights (or keeps `last` when the run exported none yet) and writes the
/// teacher directory into the run directory.
pub fn export_teacher<B: Backend>(
    config: &TeacherConfig,
    map: &TokenMap,
    last: LmTad<B>,
) -> Result<PathBuf, ExportError> {
    let model = match best_export_path(config).filter(|p| p.is_file()) {
        Some(path) => {
            let file = checkpoints::CheckpointFile::read(&path)
                .map_err(|e| ExportError::Best { path: path.clone(), message: e.to_string() })?;
            checkpoints::module::load_weights(last, file.tensors, None, &path)
                .map_err(|e| ExportError::Best { path: path.clone(), message: e.to_string() })?
        }
        None => last,
    };
    write_teacher_dir(&config.output_dir, &model, &config.model.config(map.vocab_size()), map)?;
    Ok(config.output_dir.join(WEIGHTS_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_target_once() {
        let seq: Vec<u32> = (0..10).collect();
        let w = windows(&seq, 3);
        assert_eq!(w, vec![vec![0, 1, 2, 3], vec![3, 4, 5, 6], vec![6, 7, 8, 9]]);
        let targets: Vec<u32> = w.iter().flat_map(|w| w[1..].to_vec()).collect();
        assert_eq!(targets, (1..10).collect::<Vec<_>>());
        assert_eq!(windows(&seq, 9), vec![seq.clone()]);
        assert_eq!(windows(&seq, 8), vec![(0..9).collect::<Vec<_>>(), vec![8, 9]]);
        assert_eq!(windows(&[5], 4), vec![vec![5]]);
    }

    #[test]
    fn model_presets_take_overrides() {
        let m = TeacherModel { size: ModelSize::Teacher, n_head: Some(8), ..TeacherModel::default() };
        let c = m.config(100);
        assert_eq!((c.n_layer, c.n_head, c.n_embd, c.vocab_size), (8, 8, 768, 100));
        let mut p = Vec::new();
        TeacherModel { n_embd: Some(30), n_head: Some(4), ..TeacherModel::default() }.validate(&mut p);
        assert_eq!(p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec!["model.n_embd"]);
    }
}
