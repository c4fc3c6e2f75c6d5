//! Weights files: named f32 tensors in safetensors, read by key and checked against a model.
//!
//! One reader for every weights-only file the project exchanges with the outside world (HOSER's
//! upstream `state_dict`, the stage-1 base generator, LPIPS trunks): [`WeightFile`] reads a tensor
//! by key and checks its shape, [`load_module`] walks a burn module and fills each float parameter
//! from the key a caller-supplied [`FileKey`] mapping names (PyTorch names and layouts included),
//! [`module_tensors`] and [`save_tensors`] write the same keys back. Every problem is one
//! [`WeightError`] that names the file and the key(s): a file that is not safetensors or is
//! truncated, a missing key, a mis-shaped or non-float tensor, keys the model has no use for.
//!
//! File dtypes: F32 is read as stored; F16 and BF16 are widened to f32 (exact). Every other dtype
//! (F64, integers, bool, 8-bit floats) is refused with [`WeightError::Dtype`]: narrowing F64 would
//! silently round, and an integer tensor is not a weight.
//!
//! Why not burn's own `burn-store` (`burn::store::SafetensorsStore`, enabled by the workspace's
//! `store` feature): it maps keys (regex remapping, `PyTorchToBurnAdapter` transposes `Linear`
//! weights and renames norm `weight`/`bias`) and reports missing keys, but in 0.21 an I32 tensor
//! loaded into a float parameter panics (and corrupted the heap in our test), an F16 tensor is
//! loaded as an F16 parameter into an f32 model, shape errors are `Debug` text without the file
//! name, and its list of unused keys includes keys it did use under their PyTorch norm names, so
//! it cannot reject a file with extra keys. Its transposition is tied to burn's `Linear`
//! container, while HOSER's embeddings and LPIPS' convs need their own rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

/// Bytes of the little-endian header length that starts every safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// Why a weights file could not be read, written or matched to a model. Every variant names the
/// file; the tensor variants name the key as it is spelled in the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// Reading or writing the file failed (it does not exist, permissions, disk full, ...).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a safetensors file, or it is truncated.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A key the model needs is absent from the file.
    #[error("{path}: missing key {key} (expected shape {expected:?}){}", and_more(.others))]
    Missing {
        /// The file.
        path: PathBuf,
        /// The first missing key (in model order).
        key: String,
        /// The shape the model expects for it, in the file's layout.
        expected: Vec<usize>,
        /// The other missing keys, in model order.
        others: Vec<String>,
    },
    /// A tensor's shape differs from the one the model expects.
    #[error("{path}: key {key}: shape {found:?} in the file, the model expects {expected:?}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the model expects, in the file's layout.
        expected: Vec<usize>,
    },
    /// A tensor's dtype cannot be read as f32 without loss.
    #[error(
        "{path}: key {key}: dtype {found}, expected F32 (F16 and BF16 are also read; convert other dtypes to float32)"
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The file's dtype, as safetensors names it (`F64`, `I32`, ...).
        found: String,
    },
    /// The file holds keys that are not parameters of the model (another size or another model).
    #[error("{path}: {} unexpected key(s), not parameters of this model: {}", keys.len(), keys.join(", "))]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// The extra keys, sorted.
        keys: Vec<String>,
    },
}

/// `", and N more: a, b"` for a non-empty list of further missing keys.
fn and_more(others: &[String]) -> String {
    if others.is_empty() { String::new() } else { format!(", and {} more: {}", others.len(), others.join(", ")) }
}

impl WeightError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            WeightError::Io { path, .. }
            | WeightError::Format { path, .. }
            | WeightError::Missing { path, .. }
            | WeightError::Mismatch { path, .. }
            | WeightError::Dtype { path, .. }
            | WeightError::Unexpected { path, .. } => path,
        }
    }
}

/// A safetensors file opened for reading f32 tensors by key. It remembers which keys were read,
/// so [`WeightFile::finish`] can reject the ones nobody asked for.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the tensor data starts in `bytes` (after the length and the JSON header).
    data_start: usize,
    metadata: Metadata,
    read: BTreeSet<String>,
}

impl WeightFile {
    /// Reads and parses the file at `path` (the header is checked against the file size, so a
    /// truncated file is a [`WeightError::Format`] here, not later).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
        Self::from_bytes(path, bytes)
    }

    /// Parses `bytes` as the content of the file `path` (named in errors only).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, WeightError> {
        let path = path.into();
        match SafeTensors::read_metadata(&bytes) {
            Ok((header, metadata)) => {
                Ok(Self { path, data_start: HEADER_LEN_BYTES + header, metadata, bytes, read: BTreeSet::new() })
            }
            Err(e) => Err(WeightError::Format { message: format_problem(&e, &bytes), path }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key in the file, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.metadata.tensors().into_keys().collect();
        keys.sort();
        keys
    }

    /// The shape of `key` as stored, or `None` if the file has no such key.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.metadata.info(key).map(|info| info.shape.as_slice())
    }

    /// Reads `key` as row-major f32 values, checking that it has shape `expected` (in the file's
    /// layout). Marks the key as read.
    pub fn read(&mut self, key: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        let Some(info) = self.metadata.info(key) else {
            return Err(WeightError::Missing {
                path: self.path.clone(),
                key: key.into(),
                expected: expected.to_vec(),
                others: Vec::new(),
            });
        };
        if info.shape != expected {
            return Err(WeightError::Mismatch {
                path: self.path.clone(),
                key: key.into(),
                found: info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let (start, end) = info.data_offsets;
        let dtype = info.dtype;
        // `read_metadata` checked the offsets against the shape, the dtype and the file size.
        let data = self.bytes.get(self.data_start + start..self.data_start + end).unwrap_or_default();
        let values = f32_values(dtype, data).ok_or_else(|| WeightError::Dtype {
            path: self.path.clone(),
            key: key.into(),
            found: format!("{dtype:?}"),
        })?;
        if values.len() != expected.iter().product::<usize>() {
            return Err(WeightError::Format {
                path: self.path.clone(),
                message: format!("key {key}: {} values for shape {expected:?}", values.len()),
            });
        }
        self.read.insert(key.to_owned());
        Ok(values)
    }

    /// Keys not read so far, sorted.
    pub fn unread(&self) -> Vec<String> {
        self.keys().into_iter().filter(|k| !self.read.contains(k)).collect()
    }

    /// Checks that every key was read, except those `ignore` accepts (e.g. upstream buffers that
    /// are not parameters here); the rest are one [`WeightError::Unexpected`] naming them all.
    pub fn finish(&self, ignore: impl Fn(&str) -> bool) -> Result<(), WeightError> {
        let keys: Vec<String> = self.unread().into_iter().filter(|k| !ignore(k)).collect();
        if keys.is_empty() { Ok(()) } else { Err(WeightError::Unexpected { path: self.path.clone(), keys }) }
    }
}

/// A readable message for a file safetensors refuses; a truncated or padded file says so.
fn format_problem(e: &SafeTensorError, bytes: &[u8]) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            format!("truncated or padded: its header does not describe its {} bytes ({e})", bytes.len())
        }
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            format!(
                "truncated or not safetensors: {} bytes cannot hold the header its first 8 bytes announce ({e})",
                bytes.len()
            )
        }
        other => other.to_string(),
    }
}

/// Little-endian `data` of `dtype` as f32 values, or `None` for a dtype that is not read
/// (anything but F32, F16 and BF16).
fn f32_values(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Where one module parameter lives in a weights file: its key, and whether the file stores it
/// with its first two axes swapped (a PyTorch `nn.Linear` weight is `[out, in]`, burn's `[in, out]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// The key in the file.
    pub key: String,
    /// The file's tensor is the parameter with axes 0 and 1 swapped (ignored for 1-D parameters).
    pub transposed: bool,
}

impl FileKey {
    /// A parameter stored as it is in burn, under `key`.
    pub fn same(key: impl Into<String>) -> Self {
        Self { key: key.into(), transposed: false }
    }

    /// A parameter stored under `key` with its first two axes swapped.
    pub fn transposed(key: impl Into<String>) -> Self {
        Self { key: key.into(), transposed: true }
    }
}

/// The file layout of a parameter of burn shape `dims` stored as `key` says.
fn file_shape(dims: &[usize], key: &FileKey) -> Vec<usize> {
    let mut shape = dims.to_vec();
    if key.transposed && shape.len() >= 2 {
        shape.swap(0, 1);
    }
    shape
}

/// Swaps axes 0 and 1 where `key` says the file stores them swapped.
fn orient<B: Backend, const D: usize>(t: Tensor<B, D>, key: &FileKey) -> Tensor<B, D> {
    if key.transposed && D >= 2 { t.swap_dims(0, 1) } else { t }
}

/// One problem met while filling a module, in module order.
enum Problem {
    Missing(String, Vec<usize>),
    Other(WeightError),
}

struct Loader<'a, K> {
    path: Vec<String>,
    file: &'a mut WeightFile,
    key_of: K,
    problems: Vec<Problem>,
}

impl<B: Backend, K: FnMut(&[String], usize) -> Option<FileKey>> ModuleMapper<B> for Loader<'_, K> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(key) = (self.key_of)(&self.path, D) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let shape = file_shape(&tensor.dims(), &key);
        let value = match self.file.read(&key.key, &shape) {
            Ok(values) => {
                let loaded = Tensor::<B, D>::from_data(TensorData::new(values, shape), &tensor.device());
                orient(loaded, &key).cast(tensor.dtype()).set_require_grad(tensor.is_require_grad())
            }
            Err(e) => {
                self.problems.push(match e {
                    WeightError::Missing { key, expected, .. } => Problem::Missing(key, expected),
                    other => Problem::Other(other),
                });
                tensor
            }
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Fills every float parameter of `module` that `key_of` maps from `file`, keeping parameter ids
/// and trainability. `key_of` gets a parameter's module path (field names and `Vec` indices,
/// outermost first) and rank, and returns its [`FileKey`], or `None` to leave it as it is. Keys the module does not ask for are left for [`WeightFile::finish`].
///
/// The first problem in module order is the error; if it is a missing key, the error also lists
/// every other missing key, so a file with another naming scheme is recognised at once.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    file: &mut WeightFile,
    key_of: impl FnMut(&[String], usize) -> Option<FileKey>,
) -> Result<M, WeightError> {
    let mut loader = Loader { path: Vec::new(), file, key_of, problems: Vec::new() };
    let module = module.map(&mut loader);
    let path = loader.file.path.clone();
    let mut problems = loader.problems.into_iter();
    match problems.next() {
        None => Ok(module),
        Some(Problem::Other(e)) => Err(e),
        Some(Problem::Missing(key, expected)) => {
            let others = problems
                .filter_map(|p| match p {
                    Problem::Missing(k, _) => Some(k),
                    Problem::Other(_) => None,
                })
                .collect();
            Err(WeightError::Missing { path, key, expected, others })
        }
    }
}

struct Collector<K> {
    path: Vec<String>,
    key_of: K,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend, K: FnMut(&[String], usize) -> Option<FileKey>> ModuleVisitor<B> for Collector<K> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(key) = (self.key_of)(&self.path, D) else {
            return;
        };
        let data = orient(param.val(), &key).into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        // The bytes rather than `into_vec`, which refuses storage with another alignment.
        let values = data.as_bytes().chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])).collect();
        self.tensors.push((key.key, shape, values));
    }
}

/// The float parameters of `module` that `key_of` maps (as in [`load_module`]), as `(key, file shape, row-major f32
/// values)` in module order: what [`save_tensors`] writes and [`load_module`] reads back.
pub fn module_tensors<B: Backend, M: Module<B>>(
    module: &M,
    key_of: impl FnMut(&[String], usize) -> Option<FileKey>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collector = Collector { path: Vec::new(), key_of, tensors: Vec::new() };
    module.visit(&mut collector);
    collector.tensors
}

/// Writes `(key, shape, row-major f32 values)` to the safetensors file `path`, atomically (see
/// [`crate::atomic::write_f32_safetensors`]).
pub fn save_tensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<(), WeightError> {
    crate::atomic::write_f32_safetensors(path, tensors).map_err(|source| WeightError::Io { path: path.into(), source })
}
