//! Import and export of upstream PyTorch `state_dict` tensors (safetensors, f32).
//!
//! burn module paths map onto upstream keys: `gamma`/`beta` of a LayerNorm become `weight`/`bias`,
//! the `l0`/`l2` fields of a two-layer MLP become the `nn.Sequential` indices `0`/`2`, and every
//! 2-D `weight` except an embedding table is transposed (PyTorch `Linear` stores `[out, in]`, burn
//! `[in, out]`). Upstream buffers (`road2zone`, `attn.bias`, the feature and graph buffers) are not
//! parameters here: they are ignored on import and not exported.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::Hoser;

/// Embedding tables: 2-D weights stored the same way in PyTorch and burn.
const EMBEDDINGS: [&str; 3] = ["road_id_emb", "type_emb", "zone_id_emb"];

/// Failure to read or write a weights file.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid safetensors.
    #[error("{path}: not a safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A parameter's key is absent from the file.
    #[error("{path}: missing key {key}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The upstream key.
        key: String,
    },
    /// A tensor has the wrong shape or dtype.
    #[error("{path}: key {key}: {message}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The upstream key.
        key: String,
        /// What differs.
        message: String,
    },
}

#[derive(Default)]
struct KeyPath {
    parts: Vec<String>,
}

impl KeyPath {
    /// The upstream key of the current parameter, and whether it is stored transposed upstream.
    fn key(&self, rank: usize) -> (String, bool) {
        let mut parts: Vec<&str> = self
            .parts
            .iter()
            .map(|p| match p.as_str() {
                "gamma" => "weight",
                "beta" => "bias",
                "l0" => "0",
                "l2" => "2",
                other => other,
            })
            .collect();
        let n = parts.len();
        let transpose = rank == 2 && parts[n - 1] == "weight" && !(n >= 2 && EMBEDDINGS.contains(&parts[n - 2]));
        parts.retain(|p| !p.is_empty());
        (parts.join("."), transpose)
    }
}

struct Export {
    path: KeyPath,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Export {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.parts.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.parts.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, transpose) = self.path.key(D);
        let v = param.val();
        let data = if transpose {
            let d = v.dims();
            v.reshape([d[0], d[1]]).transpose().into_data()
        } else {
            v.into_data()
        };
        let shape = data.shape.to_vec();
        let values = data.convert::<f32>().into_vec::<f32>().expect("f32 parameter");
        self.tensors.push((key, shape, values));
    }
}

struct Import<'a> {
    path: KeyPath,
    file: &'a Path,
    tensors: &'a SafeTensors<'a>,
    error: Option<WeightError>,
}

impl Import<'_> {
    fn read(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, WeightError> {
        let mismatch = |message: String| WeightError::Mismatch { path: self.file.into(), key: key.into(), message };
        let view =
            self.tensors.tensor(key).map_err(|_| WeightError::Missing { path: self.file.into(), key: key.into() })?;
        if view.dtype() != Dtype::F32 {
            return Err(mismatch(format!("dtype {:?}, expected F32", view.dtype())));
        }
        if view.shape() != shape {
            return Err(mismatch(format!("shape {:?} in the file, {shape:?} expected", view.shape())));
        }
        Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

impl<B: Backend> ModuleMapper<B> for Import<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.parts.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.parts.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (key, transpose) = self.path.key(D);
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let mut file_shape = dims.to_vec();
        if transpose {
            file_shape.swap(0, 1);
        }
        let value = match self.read(&key, &file_shape) {
            Ok(values) => {
                let device = tensor.device();
                let t = Tensor::<B, D>::from_data(TensorData::new(values, file_shape.clone()), &device);
                if transpose { t.swap_dims(0, 1) } else { t }
            }
            Err(e) => {
                self.error.get_or_insert(e);
                tensor
            }
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

impl<B: Backend> Hoser<B> {
    /// The parameters under their upstream keys: `(key, PyTorch shape, row-major f32 values)`.
    pub fn state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut e = Export { path: KeyPath::default(), tensors: Vec::new() };
        self.visit(&mut e);
        e.tensors
    }

    /// Writes [`Hoser::state_dict`] to a safetensors file (f32, upstream keys and layouts).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightError> {
        checkpoints::atomic::write_f32_safetensors(path, self.state_dict())
            .map_err(|source| WeightError::Io { path: path.into(), source })
    }

    /// Loads every parameter from an upstream state dict saved as safetensors (f32). Extra keys
    /// (upstream buffers) are ignored; a missing key or a wrong shape is an error naming the key and
    /// the file.
    pub fn load_safetensors(self, path: &Path) -> Result<Self, WeightError> {
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| WeightError::Format { path: path.into(), message: e.to_string() })?;
        let mut import = Import { path: KeyPath::default(), file: path, tensors: &tensors, error: None };
        let model = self.map(&mut import);
        match import.error {
            Some(e) => Err(e),
            None => Ok(model),
        }
    }
}
