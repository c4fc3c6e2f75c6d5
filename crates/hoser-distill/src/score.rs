//! `hoser-distill teacher-score`: LM-TAD's anomaly score of each trajectory of a LibCity CSV.
//!
//! A trajectory `[SOT] + cells + [EOT]` gets the surprisal `−log p(x_{t+1} | x_≤t)` (nats) of each
//! of its targets (every road's cell, then EOT) and its log-perplexity, the mean surprisal
//! (upstream `eval_porto.py:get_perplexity_fast`); a high value is an unusual route. A trajectory
//! longer than the teacher's `block_size + 1` tokens is scored in windows (see
//! [`crate::teacher::windows`]): the context restarts at each window.
//!
//! Outputs: one CSV row per trajectory (`row, roads, targets, log_perplexity, perplexity,
//! max_surprisal`) and, with `--steps-out`, one row per target (`row, step, road, token,
//! surprisal`; the last step of each trajectory is EOT, with an empty road). Existing files are
//! never overwritten unless `--overwrite`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use hoser::data::{DataError, read_rid_lists};
use hoser::lmtad::model::{InputError, right_padded};
use hoser::lmtad::teacher::{Teacher, TeacherError};
use hoser::lmtad::tokens::TokenError;

use crate::teacher::windows;

/// What to score and where to write it.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// The teacher directory.
    pub teacher: PathBuf,
    /// A LibCity trajectory CSV (column `rid_list`).
    pub trajectories: PathBuf,
    /// The per-trajectory CSV.
    pub out: PathBuf,
    /// The per-step CSV, if wanted.
    pub steps_out: Option<PathBuf>,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Replace existing output files.
    pub overwrite: bool,
    /// The dataset the trajectories belong to (checked against the teacher's token map); by
    /// default the map's own, checked against a `roadmap.geo` beside the trajectories if there is one.
    pub dataset: Option<String>,
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The teacher directory (the source names the directory or file).
    #[error("loading the teacher: {source}")]
    Teacher {
        /// The directory.
        dir: PathBuf,
        /// Why (boxed: the error is large and rare).
        #[source]
        source: Box<TeacherError>,
    },
    /// The trajectories file.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A road the token map does not know, or a dataset mismatch.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// A road id beyond the map.
    #[error("{}: data row {row}: road {road} is not in the teacher's road network ({roads} roads, ids 0..{roads})", path.display())]
    UnknownRoad {
        /// The file.
        path: PathBuf,
        /// The 1-based data row.
        row: usize,
        /// The id.
        road: u64,
        /// Roads in the map.
        roads: usize,
    },
    /// `--dataset` names another dataset and there is no roadmap.geo to check it against.
    #[error(
        "--dataset {asked}: the teacher was trained on `{trained}`; give --dataset {trained}, or put the dataset's \
         roadmap.geo beside {} so it can be checked",
        path.display()
    )]
    Dataset {
        /// The asked dataset.
        asked: String,
        /// The teacher's.
        trained: String,
        /// The trajectories file.
        path: PathBuf,
    },
    /// The file holds no trajectory.
    #[error("{}: no trajectory to score", .0.display())]
    Empty(PathBuf),
    /// An output file exists.
    #[error("{}: already exists; pass --overwrite to replace it", .0.display())]
    Exists(PathBuf),
    /// A batch the model refused (cannot happen after the checks above; reported, not a panic).
    #[error(transparent)]
    Input(#[from] InputError),
    /// Writing an output.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One trajectory's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryScore {
    /// 1-based data row of the CSV.
    pub row: usize,
    /// Its roads.
    pub roads: Vec<u64>,
    /// Its tokens `[SOT] + cells + [EOT]`.
    pub tokens: Vec<u32>,
    /// Surprisal of each target (the cells after SOT, then EOT), nats.
    pub surprisal: Vec<f64>,
}

impl TrajectoryScore {
    /// Mean surprisal (upstream's log-perplexity).
    pub fn log_perplexity(&self) -> f64 {
        self.surprisal.iter().sum::<f64>() / self.surprisal.len().max(1) as f64
    }
}

/// Scores `seqs` (token sequences) with the teacher: each sequence's target surprisals.
pub fn surprisals<B: Backend>(
    teacher: &Teacher<B>,
    seqs: &[Vec<u32>],
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<Vec<f64>>, InputError> {
    let block = teacher.config.block_size;
    let map = &teacher.map;
    // Every window of every sequence, then the windows' targets concatenated back per sequence.
    let mut pieces: Vec<(usize, Vec<u32>)> = Vec::new();
    for (i, s) in seqs.iter().enumerate() {
        pieces.extend(windows(s, block).into_iter().map(|w| (i, w)));
    }
    let mut out = vec![Vec::new(); seqs.len()];
    for chunk in pieces.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|(_, w)| w.clone()).collect();
        let (tokens, lengths) = right_padded::<B>(&rows, map.pad(), map.vocab_size(), block + 1, device)?;
        let t = tokens.dims()[1];
        let logp: Vec<f32> =
            teacher.model.target_log_probs(tokens).into_data().convert::<f32>().to_vec().unwrap_or_default();
        for (r, ((seq, _), len)) in chunk.iter().zip(&lengths).enumerate() {
            out[*seq].extend(logp[r * (t - 1)..r * (t - 1) + len - 1].iter().map(|&x| -(x as f64)));
        }
    }
    Ok(out)
}

/// Scores every trajectory of `opts.trajectories` and writes the CSVs. Returns the scores.
pub fn score<B: Backend>(opts: &ScoreOptions, device: &B::Device) -> Result<Vec<TrajectoryScore>, ScoreError> {
    for path in std::iter::once(&opts.out).chain(opts.steps_out.as_ref()) {
        if path.exists() && !opts.overwrite {
            return Err(ScoreError::Exists(path.clone()));
        }
    }
    let teacher = Teacher::<B>::load(&opts.teacher, device)
        .map_err(|e| ScoreError::Teacher { dir: opts.teacher.clone(), source: Box::new(e) })?;
    let map = &teacher.map;
    let geo = opts.trajectories.parent().unwrap_or(Path::new(".")).join("roadmap.geo");
    if geo.is_file() {
        map.check_dataset(opts.dataset.as_deref().unwrap_or(map.dataset()), &geo)?;
    } else if let Some(asked) = &opts.dataset
        && asked != map.dataset()
    {
        return Err(ScoreError::Dataset {
            asked: asked.clone(),
            trained: map.dataset().to_string(),
            path: opts.trajectories.clone(),
        });
    }
    let rows = read_rid_lists(&opts.trajectories)?;
    if rows.is_empty() {
        return Err(ScoreError::Empty(opts.trajectories.clone()));
    }
    let mut seqs = Vec::with_capacity(rows.len());
    for (row, ids) in &rows {
        let mut roads = Vec::with_capacity(ids.len());
        for &id in ids {
            match u32::try_from(id).ok().filter(|&r| (r as usize) < map.num_roads()) {
                Some(r) => roads.push(r),
                None => {
                    return Err(ScoreError::UnknownRoad {
                        path: opts.trajectories.clone(),
                        row: *row,
                        road: id,
                        roads: map.num_roads(),
                    });
                }
            }
        }
        seqs.push(map.encode(&roads)?);
    }
    let surprisal = surprisals(&teacher, &seqs, opts.batch_size, device)?;
    let scores: Vec<TrajectoryScore> = rows
        .into_iter()
        .zip(seqs)
        .zip(surprisal)
        .map(|(((row, roads), tokens), surprisal)| TrajectoryScore { row, roads, tokens, surprisal })
        .collect();
    write_csv(&opts.out, |w| {
        w.write_record(["row", "roads", "targets", "log_perplexity", "perplexity", "max_surprisal"])?;
        for s in &scores {
            let lp = s.log_perplexity();
            let max = s.surprisal.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            w.write_record([
                s.row.to_string(),
                s.roads.len().to_string(),
                s.surprisal.len().to_string(),
                format!("{lp:.6}"),
                format!("{:.6}", lp.exp()),
                format!("{max:.6}"),
            ])?;
        }
        Ok(())
    })?;
    if let Some(path) = &opts.steps_out {
        write_csv(path, |w| {
            w.write_record(["row", "step", "road", "token", "surprisal"])?;
            for s in &scores {
                for (step, value) in s.surprisal.iter().enumerate() {
                    let road = s.roads.get(step).map(ToString::to_string).unwrap_or_default();
                    w.write_record([
                        s.row.to_string(),
                        step.to_string(),
                        road,
                        s.tokens[step + 1].to_string(),
                        format!("{value:.6}"),
                    ])?;
                }
            }
            Ok(())
        })?;
    }
    Ok(scores)
}

/// Writes a CSV atomically (never a half-written file under the final name).
fn write_csv(
    path: &Path,
    fill: impl FnOnce(&mut csv::Writer<&mut Vec<u8>>) -> csv::Result<()>,
) -> Result<(), ScoreError> {
    let io = |source| ScoreError::Io { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    {
        let mut w = csv::Writer::from_writer(&mut bytes);
        fill(&mut w).map_err(|e| io(std::io::Error::other(e)))?;
        w.flush().map_err(io)?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    checkpoints::atomic::write_atomic(path, |f| std::io::Write::write_all(f, &bytes), || {}).map_err(io)
}
