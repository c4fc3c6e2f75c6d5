//! The checkpoint file: one safetensors file that PyTorch users can open, holding
//!
//! - the model weights as ordinary tensors under their module paths (`encoder.0.weight`),
//! - opaque state blobs (optimizer record, trainer state) as `U8` tensors named `__trainyard__.<name>`,
//! - header metadata: `trainyard.meta` (JSON [`Meta`]), extra string entries, and
//!   `trainyard.checksum`, a CRC-32C over the whole file computed with that field zeroed.
//!
//! Any flipped byte, in header or data, fails the checksum; a truncated file fails to parse.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burn::tensor::Bytes;
use safetensors::Dtype;
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
    /// A checkpoint directory (or a name in it) cannot be used: it is a file, read-only, or
    /// something other than a file is where a checkpoint must go.
    #[error("{}: checkpoint directory problem: {reason}", path.display())]
    Directory {
        /// The directory or the path in the way.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
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
            d.extend(mode_differences(&self.mode, &run.mode));
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

/// A mode string's name and its `key=value` settings: `distill lambda=0.01 window=4` is
/// `("distill", [("lambda", "0.01"), ("window", "4")])`; a word without `=` is part of the name.
fn mode_parts(mode: &str) -> (String, BTreeMap<&str, &str>) {
    let mut name = Vec::new();
    let mut settings = BTreeMap::new();
    for word in mode.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) => {
                settings.insert(k, v);
            }
            None => name.push(word),
        }
    }
    (name.join(" "), settings)
}

/// How two modes differ: the name, then each setting that differs, one line each
/// (`mode lambda: checkpoint 0.01, this run 0.02`), so a refused resume lists every change.
fn mode_differences(checkpoint: &str, run: &str) -> Vec<String> {
    let (ckpt_name, ckpt) = mode_parts(checkpoint);
    let (run_name, now) = mode_parts(run);
    if ckpt_name != run_name {
        return vec![format!("mode: checkpoint {checkpoint}, this run {run}")];
    }
    let mut d = Vec::new();
    for key in ckpt.keys().chain(now.keys().filter(|k| !ckpt.contains_key(*k))) {
        let (a, b) = (ckpt.get(key), now.get(key));
        if a != b {
            let show = |v: Option<&&str>| v.map_or("(unset)".to_string(), |v| v.to_string());
            d.push(format!("mode {key}: checkpoint {}, this run {}", show(a), show(b)));
        }
    }
    if d.is_empty() {
        d.push(format!("mode: checkpoint {checkpoint}, this run {run}"));
    }
    d
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
    /// Epochs completed when it was written (the 0-based index of the epoch in progress): 0
    /// during the first epoch; an `epoch_<N>` checkpoint, written as epoch N ends, holds N.
    pub epoch: u64,
    /// Validation metrics at this step, if any.
    pub metrics: BTreeMap<String, Metric>,
    /// Which run wrote it.
    pub identity: RunIdentity,
    /// Seconds since the Unix epoch at writing.
    pub created_unix: f64,
}

/// One tensor's raw little-endian bytes. `data` is burn's byte buffer, so weights move
/// between a tensor and a file without an extra copy.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: Bytes,
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
        let s = if self.epoch == 1 { "" } else { "s" };
        write!(f, "step {} ({} epoch{s} completed)", self.step, self.epoch)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Largest header accepted (safetensors' own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

fn dtype_name(dtype: Dtype) -> String {
    serde_json::to_value(dtype)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{dtype:?}"))
}

/// Writes a safetensors file streaming: header (checksum zeroed), then every buffer as is,
/// computing the CRC on the way, then the CRC patched into the header. Nothing is copied.
fn write_streaming<W: Write + Seek>(
    w: &mut W,
    entries: &[(&str, Dtype, &[usize], &[u8])],
    metadata: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, data) in entries {
        header.insert(
            (*name).to_string(),
            serde_json::json!({"dtype": dtype_name(*dtype), "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut meta = metadata.clone();
    meta.insert(CHECKSUM_KEY.into(), CHECKSUM_PLACEHOLDER.into());
    header.insert("__metadata__".into(), serde_json::to_value(&meta)?);
    let mut json = serde_json::to_vec(&header)?;
    // safetensors pads the header with spaces so the data starts 8-byte aligned.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut head = Vec::with_capacity(8 + json.len());
    head.extend_from_slice(&(json.len() as u64).to_le_bytes());
    head.extend_from_slice(&json);
    let field = checksum_range(&head).expect("checksum field was just written");

    let mut crc = crc32c::crc32c(&head);
    w.write_all(&head)?;
    for (_, _, _, data) in entries {
        crc = crc32c::crc32c_append(crc, data);
        w.write_all(data)?;
    }
    w.seek(SeekFrom::Start(field.start as u64))?;
    w.write_all(format!("{crc:08x}").as_bytes())?;
    w.seek(SeekFrom::End(0))?;
    Ok(())
}

/// Byte range of the checksum's hex digits inside the first bytes of a file (length + header).
fn checksum_range(head: &[u8]) -> Option<std::ops::Range<usize>> {
    let needle = format!("\"{CHECKSUM_KEY}\":\"");
    let at = find(head, needle.as_bytes())? + needle.len();
    (head.len() >= at + CHECKSUM_PLACEHOLDER.len()).then(|| at..at + CHECKSUM_PLACEHOLDER.len())
}

/// Reads `len` bytes into a buffer allocated for elements of `elem` bytes, so burn can use it
/// as tensor storage as is (`Bytes::from_bytes_vec` would copy a `Vec<u8>` to realign it).
fn read_aligned<R: Read>(r: &mut R, len: usize, elem: usize) -> io::Result<Bytes> {
    fn read<E: bytemuck::Pod + Send + Sync, R: Read>(r: &mut R, len: usize) -> io::Result<Bytes> {
        let mut v: Vec<E> = vec![E::zeroed(); len / std::mem::size_of::<E>()];
        r.read_exact(bytemuck::cast_slice_mut(&mut v))?;
        Ok(Bytes::from_elems(v))
    }
    match elem {
        8 if len.is_multiple_of(8) => read::<u64, R>(r, len),
        4 if len.is_multiple_of(4) => read::<u32, R>(r, len),
        2 if len.is_multiple_of(2) => read::<u16, R>(r, len),
        _ => read::<u8, R>(r, len),
    }
}

/// A reader that counts the bytes it has delivered, for error messages.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl CheckpointFile {
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut meta = self.extra.clone();
        meta.insert(META_KEY.into(), serde_json::to_string(&self.meta).expect("meta serialises"));
        meta
    }

    /// Writes the file to `w` (which must start empty).
    pub fn write_to<W: Write + Seek>(&self, w: &mut W) -> io::Result<()> {
        let blob_names: Vec<String> = self.blobs.keys().map(|k| format!("{BLOB_PREFIX}{k}")).collect();
        let blob_shapes: Vec<[usize; 1]> = self.blobs.values().map(|b| [b.len()]).collect();
        let mut entries: Vec<(&str, Dtype, &[usize], &[u8])> =
            self.tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), &*t.data)).collect();
        for ((name, blob), shape) in blob_names.iter().zip(self.blobs.values()).zip(&blob_shapes) {
            entries.push((name, Dtype::U8, shape, blob));
        }
        write_streaming(w, &entries, &self.metadata())
    }

    /// Serialises to bytes (the same bytes [`CheckpointFile::write`] puts on disk).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut cursor = io::Cursor::new(Vec::new());
        self.write_to(&mut cursor).expect("writing to memory cannot fail");
        cursor.into_inner()
    }

    /// Reads and verifies a checkpoint from `r`; `path` names it in errors. Each tensor is read
    /// straight into its own buffer, and the CRC is computed on the way.
    pub fn read_from<R: Read>(r: R, path: &Path) -> Result<Self, CheckpointError> {
        let p = || path.to_path_buf();
        let not_ckpt = |reason: String| CheckpointError::NotACheckpoint { path: p(), reason };
        let corrupt = |reason: String| CheckpointError::Corrupt { path: p(), reason };
        let mut r = Counting { inner: r, read: 0 };
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(|_| not_ckpt("shorter than a safetensors header".into()))?;
        let n = u64::from_le_bytes(len);
        if n == 0 || n > MAX_HEADER {
            return Err(not_ckpt(format!("not a safetensors file (header length {n})")));
        }
        let mut head = len.to_vec();
        head.resize(8 + n as usize, 0);
        r.read_exact(&mut head[8..]).map_err(|e| corrupt(format!("header cut short after {} bytes: {e}", r.read)))?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&head[8..]).map_err(|e| {
            if head[8] == b'{' {
                corrupt(format!("header is not valid JSON: {e}"))
            } else {
                not_ckpt(format!("not a safetensors file: {e}"))
            }
        })?;
        let meta_map: BTreeMap<String, String> = header
            .get("__metadata__")
            .map(|m| serde_json::from_value(m.clone()))
            .transpose()
            .map_err(|e| corrupt(format!("bad __metadata__: {e}")))?
            .unwrap_or_default();
        let meta_json = meta_map
            .get(META_KEY)
            .ok_or_else(|| not_ckpt(format!("a safetensors file without the {META_KEY} header entry")))?;
        let stored = meta_map.get(CHECKSUM_KEY).ok_or_else(|| corrupt("checksum entry missing".into()))?.clone();
        let field = checksum_range(&head).ok_or_else(|| corrupt("checksum entry not found in header".into()))?;
        head[field].copy_from_slice(CHECKSUM_PLACEHOLDER.as_bytes());
        let mut crc = crc32c::crc32c(&head);

        struct Entry {
            name: String,
            dtype: Dtype,
            shape: Vec<usize>,
            start: usize,
            end: usize,
        }
        let mut entries = Vec::new();
        for (name, info) in &header {
            if name == "__metadata__" {
                continue;
            }
            let dtype: Dtype =
                serde_json::from_value(info["dtype"].clone()).map_err(|e| corrupt(format!("{name}: dtype: {e}")))?;
            let shape: Vec<usize> =
                serde_json::from_value(info["shape"].clone()).map_err(|e| corrupt(format!("{name}: shape: {e}")))?;
            let [start, end]: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())
                .map_err(|e| corrupt(format!("{name}: offsets: {e}")))?;
            let expected = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            if end < start || end - start != expected {
                return Err(corrupt(format!(
                    "{name}: {} bytes for shape {shape:?} of {dtype:?}",
                    end.saturating_sub(start)
                )));
            }
            entries.push(Entry { name: name.clone(), dtype, shape, start, end });
        }
        entries.sort_by_key(|e| e.start);
        let mut offset = 0;
        let mut tensors = Vec::new();
        let mut blobs = BTreeMap::new();
        for e in entries {
            if e.start != offset {
                return Err(corrupt(format!("{}: data does not follow the previous tensor", e.name)));
            }
            let len = e.end - e.start;
            let read_so_far = r.read;
            let truncated = |_| corrupt(format!("truncated: data of {} cut short after {read_so_far} bytes", e.name));
            offset = e.end;
            match e.name.strip_prefix(BLOB_PREFIX) {
                Some(blob) => {
                    let mut buf = vec![0u8; len];
                    r.read_exact(&mut buf).map_err(truncated)?;
                    crc = crc32c::crc32c_append(crc, &buf);
                    blobs.insert(blob.to_string(), buf);
                }
                None => {
                    let data = read_aligned(&mut r, len, e.dtype.bitsize() / 8).map_err(truncated)?;
                    crc = crc32c::crc32c_append(crc, &data);
                    tensors.push(RawTensor { name: e.name, dtype: e.dtype, shape: e.shape, data });
                }
            }
        }
        let mut rest = [0u8; 1];
        if r.read(&mut rest).map_err(|e| CheckpointError::io(path, e))? != 0 {
            return Err(corrupt("trailing bytes after the last tensor".into()));
        }
        let actual = format!("{crc:08x}");
        if stored != actual {
            return Err(corrupt(format!("checksum mismatch: stored {stored}, content {actual}")));
        }
        let meta: Meta = serde_json::from_str(meta_json).map_err(|e| corrupt(format!("bad {META_KEY}: {e}")))?;
        if meta.schema_version != SCHEMA_VERSION {
            return Err(CheckpointError::Incompatible {
                path: p(),
                reason: format!(
                    "checkpoint schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                    meta.schema_version
                ),
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let extra = meta_map.into_iter().filter(|(k, _)| k != META_KEY && k != CHECKSUM_KEY).collect();
        Ok(Self { meta, tensors, blobs, extra })
    }

    /// Parses and verifies checkpoint bytes read from `path` (used in messages).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        Self::read_from(bytes, path)
    }

    /// Reads and verifies the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        Self::read_from(io::BufReader::with_capacity(1 << 20, file), path)
    }

    /// Writes the checkpoint to `path` atomically; the previous file survives any failure.
    pub fn write(&self, path: &Path, before_rename: impl FnOnce()) -> Result<(), CheckpointError> {
        crate::atomic::write_atomic(
            path,
            |f| {
                let mut w = io::BufWriter::with_capacity(1 << 20, f);
                self.write_to(&mut w)?;
                w.flush()
            },
            before_rename,
        )
        .map_err(|e| CheckpointError::io(path, e))
    }
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
    if n > MAX_HEADER {
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
    use safetensors::SafeTensors;

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
                data: Bytes::from_bytes_vec([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
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

    #[test]
    fn mode_settings_are_compared_one_by_one() {
        let id =
            |mode: &str| RunIdentity { seed: 1, dataset_id: "d".into(), mode: mode.into(), config_hash: "c".into() };
        let ckpt = id("distill steps=all lambda=0.01 temperature=2 window=4 teacher=ab12");
        let run = id("distill steps=all lambda=0.02 temperature=2 window=6 teacher=cd34");
        assert_eq!(
            ckpt.differences(&run),
            vec![
                "mode lambda: checkpoint 0.01, this run 0.02",
                "mode teacher: checkpoint ab12, this run cd34",
                "mode window: checkpoint 4, this run 6",
            ]
        );
        assert_eq!(
            id("train").differences(&id("distill lambda=0.01")),
            vec!["mode: checkpoint train, this run distill lambda=0.01"]
        );
        assert_eq!(
            id("distill window=4").differences(&id("distill window=4 steps=last")),
            vec!["mode steps: checkpoint (unset), this run last"]
        );
        assert!(ckpt.differences(&ckpt.clone()).is_empty());
    }
}
