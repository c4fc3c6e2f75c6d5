//! The checkpoint file: one safetensors file that PyTorch users can open, holding
//!
//! - the model weights as ordinary tensors under their module paths (`encoder.0.weight`),
//! - opaque state blobs (optimizer record, trainer state) as `U8` tensors named `__trainyard__.<name>`,
//! - header metadata: `trainyard.meta` (JSON [`Meta`]), extra string entries, and
//!   `trainyard.checksum`, a CRC-32C over the whole file computed with that field zeroed.
//!
//! Any flipped byte, in header or data, fails the checksum; a truncated file fails to parse.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

/// Version of the layout below; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;
/// Prefix of blob tensor names.
pub const BLOB_PREFIX: &str = "__trainyard__.";
const META_KEY: &str = "trainyard.meta";
const CHECKSUM_KEY: &str = "trainyard.checksum";
const CHECKSUM_PLACEHOLDER: &str = "00000000";

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed (disk full, permissions, missing file).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The file is not a trainyard checkpoint at all.
    #[error("{}: not a trainyard checkpoint ({reason})", path.display())]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The file is damaged: truncated or its content does not match its checksum.
    #[error("{}: corrupt checkpoint ({reason})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// The file belongs to another run (seed, dataset, mode or config differ).
    #[error("{}: checkpoint belongs to a different run:\n{}", path.display(), differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per differing field: `seed: checkpoint 1, this run 2`.
        differences: Vec<String>,
    },
    /// The weights or state do not fit the model being trained.
    #[error("{}: {reason}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

impl CheckpointError {
    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// What a checkpoint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A full resume bundle.
    Resume,
    /// Weights only (exports such as `best`).
    Weights,
}

/// A metric value that survives JSON even when it is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric(pub f64);

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() { s.serialize_f64(self.0) } else { s.serialize_str(&self.0.to_string()) }
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(v) => Ok(Metric(v)),
            Raw::Text(t) => t.parse().map(Metric).map_err(serde::de::Error::custom),
        }
    }
}

/// Identity of the run that wrote a checkpoint, compared on resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The run's seed.
    pub seed: u64,
    /// Identifies the training data (a hash of the data config or manifest).
    pub dataset_id: String,
    /// Training mode, e.g. `train` or `distill`.
    pub mode: String,
    /// Hash of the config sections that make checkpoints incompatible (model, data, loss, optimizer).
    pub config_hash: String,
}

impl RunIdentity {
    /// Human-readable differences between the checkpoint's identity (`self`) and this run's.
    pub fn differences(&self, run: &RunIdentity) -> Vec<String> {
        let mut d = Vec::new();
        if self.seed != run.seed {
            d.push(format!("seed: checkpoint {}, this run {}", self.seed, run.seed));
        }
        if self.dataset_id != run.dataset_id {
            d.push(format!("dataset: checkpoint {}, this run {}", self.dataset_id, run.dataset_id));
        }
        if self.mode != run.mode {
            d.push(format!("mode: checkpoint {}, this run {}", self.mode, run.mode));
        }
        if self.config_hash != run.config_hash {
            d.push(format!(
                "config (model/data/loss/optimizer sections): checkpoint hash {}, this run {}",
                self.config_hash, run.config_hash
            ));
        }
        d
    }
}

/// Self-description of a checkpoint, stored in the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Resume bundle or weights only.
    pub kind: Kind,
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch (0-based) the run was in.
    pub epoch: u64,
    /// Validation metrics at this step, if any.
    pub metrics: BTreeMap<String, Metric>,
    /// Which run wrote it.
    pub identity: RunIdentity,
    /// Seconds since the Unix epoch at writing.
    pub created_unix: f64,
}

/// One tensor's raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: Vec<u8>,
}

/// The content of one checkpoint file.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFile {
    /// Self-description.
    pub meta: Meta,
    /// Model weights.
    pub tensors: Vec<RawTensor>,
    /// Named opaque state (optimizer record, trainer state JSON, ...).
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// Extra header strings (e.g. parameter ids).
    pub extra: BTreeMap<String, String>,
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} (epoch {})", self.step, self.epoch)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Byte range of the checksum's hex digits inside `bytes`' header, if present.
fn checksum_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let needle = format!("\"{CHECKSUM_KEY}\":\"");
    let at = find(header, needle.as_bytes())? + 8 + needle.len();
    Some(at..at + CHECKSUM_PLACEHOLDER.len())
}

fn crc_with_zeroed_field(bytes: &[u8], range: &std::ops::Range<usize>) -> u32 {
    let crc = crc32c::crc32c(&bytes[..range.start]);
    let crc = crc32c::crc32c_append(crc, CHECKSUM_PLACEHOLDER.as_bytes());
    crc32c::crc32c_append(crc, &bytes[range.end..])
}

impl CheckpointFile {
    /// Serialises to safetensors bytes with the checksum filled in.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut views: Vec<(String, TensorView<'_>)> = Vec::with_capacity(self.tensors.len() + self.blobs.len());
        for t in &self.tensors {
            views.push((
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.data).expect("shape matches data"),
            ));
        }
        for (name, blob) in &self.blobs {
            views.push((
                format!("{BLOB_PREFIX}{name}"),
                TensorView::new(Dtype::U8, vec![blob.len()], blob).expect("1-D u8 view"),
            ));
        }
        let mut header: HashMap<String, String> = self.extra.clone().into_iter().collect();
        header.insert(META_KEY.into(), serde_json::to_string(&self.meta).expect("meta serialises"));
        header.insert(CHECKSUM_KEY.into(), CHECKSUM_PLACEHOLDER.into());
        let mut bytes = safetensors::serialize(views, Some(header)).expect("valid tensor views serialise");
        let range = checksum_range(&bytes).expect("checksum field was just written");
        let crc = crc_with_zeroed_field(&bytes, &range);
        bytes[range].copy_from_slice(format!("{crc:08x}").as_bytes());
        bytes
    }

    /// Parses and verifies checkpoint bytes read from `path` (used in messages).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            if bytes.len() < 8 || !looks_like_safetensors(bytes) {
                CheckpointError::NotACheckpoint {
                    path: path.to_path_buf(),
                    reason: format!("not a safetensors file: {e}"),
                }
            } else {
                corrupt(format!("unreadable safetensors header or truncated data: {e}"))
            }
        })?;
        let map = header.metadata().clone().unwrap_or_default();
        let meta_json = map.get(META_KEY).ok_or_else(|| CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: format!("a safetensors file without the {META_KEY} header entry"),
        })?;
        let stored = map.get(CHECKSUM_KEY).ok_or_else(|| corrupt("checksum entry missing".into()))?;
        let range = checksum_range(bytes).ok_or_else(|| corrupt("checksum entry not found in header".into()))?;
        let actual = format!("{:08x}", crc_with_zeroed_field(bytes, &range));
        if *stored != actual {
            return Err(corrupt(format!("checksum mismatch: stored {stored}, content {actual}")));
        }
        let meta: Meta = serde_json::from_str(meta_json).map_err(|e| corrupt(format!("bad {META_KEY}: {e}")))?;
        if meta.schema_version != SCHEMA_VERSION {
            return Err(CheckpointError::Incompatible {
                path: path.to_path_buf(),
                reason: format!(
                    "checkpoint schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                    meta.schema_version
                ),
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("tensor data: {e}")))?;
        let mut tensors = Vec::new();
        let mut blobs = BTreeMap::new();
        for (name, view) in st.tensors() {
            if let Some(blob) = name.strip_prefix(BLOB_PREFIX) {
                blobs.insert(blob.to_string(), view.data().to_vec());
            } else {
                tensors.push(RawTensor {
                    name,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                });
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let extra = map.into_iter().filter(|(k, _)| k != META_KEY && k != CHECKSUM_KEY).collect();
        Ok(Self { meta, tensors, blobs, extra })
    }

    /// Reads and verifies the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes the checkpoint to `path` atomically; the previous file survives any failure.
    pub fn write(&self, path: &Path, before_rename: impl FnOnce()) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes();
        crate::atomic::write_atomic(path, |f| std::io::Write::write_all(f, &bytes), before_rename)
            .map_err(|e| CheckpointError::io(path, e))
    }
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let Some(n) = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes) else { return false };
    n > 0 && n < 100_000_000 && bytes.get(8) == Some(&b'{')
}

/// Reads only the header of the checkpoint at `path` (no checksum verification): cheap, for
/// ranking candidates before the full check.
pub fn read_meta(path: &Path) -> Result<Meta, CheckpointError> {
    let mut f = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: format!("too short for a safetensors header: {e}"),
    })?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: "implausible header size".into(),
        });
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: format!("truncated header: {e}") })?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: format!("header is not JSON: {e}"),
    })?;
    let meta = v["__metadata__"][META_KEY].as_str().ok_or_else(|| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: format!("no {META_KEY} header entry"),
    })?;
    serde_json::from_str(meta)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: format!("bad {META_KEY}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> CheckpointFile {
        CheckpointFile {
            meta: Meta {
                schema_version: SCHEMA_VERSION,
                kind: Kind::Resume,
                step: 12,
                epoch: 1,
                metrics: BTreeMap::from([("val_loss".into(), Metric(0.5)), ("odd".into(), Metric(f64::NAN))]),
                identity: RunIdentity {
                    seed: 3,
                    dataset_id: "d".into(),
                    mode: "train".into(),
                    config_hash: "h".into(),
                },
                created_unix: 1.0,
            },
            tensors: vec![RawTensor {
                name: "layer.weight".into(),
                dtype: Dtype::F32,
                shape: vec![2, 2],
                data: [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            }],
            blobs: BTreeMap::from([("state".into(), b"{\"a\":1}".to_vec())]),
            extra: BTreeMap::from([("trainyard.param_ids".into(), "{}".into())]),
        }
    }

    #[test]
    fn round_trips_and_stays_a_plain_safetensors_file() {
        let file = sample();
        let bytes = file.to_bytes();
        let back = CheckpointFile::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(back.tensors, file.tensors);
        assert_eq!(back.blobs, file.blobs);
        assert_eq!(back.extra, file.extra);
        assert_eq!(back.meta.step, 12);
        assert!(back.meta.metrics["odd"].0.is_nan());
        // Any safetensors reader sees the weights under their names.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("layer.weight").unwrap().shape(), &[2, 2]);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(CheckpointFile::from_bytes(&b, Path::new("x")).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected_at_every_length() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            let err = CheckpointFile::from_bytes(&bytes[..n], Path::new("ckpt.safetensors")).unwrap_err();
            assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
        }
    }
}
