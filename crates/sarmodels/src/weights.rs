//! Base weights as safetensors (f32): how `model.pretrained` loads a base and how a full-training run
//! exports one.
//!
//! Keys are burn's dotted parameter paths (`encoder.0.attn.qkv.weight`, `encoder_norm.gamma`, …) and
//! tensors keep burn's layouts (a linear weight is `[d_in, d_out]`). Only base parameters are
//! stored: [`Generator::save_base`] folds the adapters in first, [`Generator::load_base`] leaves the
//! adapters as they are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::generator::Generator;

/// Failure to read or write a base-weights file.
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
    /// A base parameter's key is absent from the file.
    #[error("{path}: missing key {key} (expected shape {expected:?})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The parameter's key.
        key: String,
        /// The model's shape for it.
        expected: Vec<usize>,
    },
    /// A tensor's shape differs from the model's.
    #[error("{path}: key {key}: shape {found:?} in the file, the model expects {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The parameter's key.
        key: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape in the model.
        expected: Vec<usize>,
    },
    /// A tensor is not f32.
    #[error("{path}: key {key}: dtype {found}, expected F32")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The parameter's key.
        key: String,
        /// The file's dtype.
        found: String,
    },
    /// The file holds keys that are no base parameter of this model (a different size or model).
    #[error("{path}: {} unexpected key(s), not parameters of this generator: {}", keys.len(), keys.join(", "))]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// The extra keys, sorted.
        keys: Vec<String>,
    },
}

/// Whether a parameter path belongs to a LoRA adapter.
fn in_adapter(path: &[String]) -> bool {
    path.iter().any(|p| p == "adapter")
}

struct Export {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Export {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if in_adapter(&self.path) {
            return;
        }
        let data = param.val().into_data();
        let shape = data.shape.to_vec();
        // Every float parameter converts to f32 (burn's float elements are f32, f16 or bf16).
        let values = data.convert::<f32>().to_vec::<f32>().unwrap_or_default();
        self.tensors.push((self.path.join("."), shape, values));
    }
}

struct Import<'a> {
    path: Vec<String>,
    file: &'a Path,
    tensors: &'a SafeTensors<'a>,
    used: BTreeSet<String>,
    error: Option<WeightError>,
}

impl Import<'_> {
    fn read(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        let path = || self.file.to_path_buf();
        let view = self.tensors.tensor(key).map_err(|_| WeightError::Missing {
            path: path(),
            key: key.into(),
            expected: expected.to_vec(),
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(WeightError::Dtype { path: path(), key: key.into(), found: format!("{:?}", view.dtype()) });
        }
        if view.shape() != expected {
            return Err(WeightError::Shape {
                path: path(),
                key: key.into(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

impl<B: Backend> ModuleMapper<B> for Import<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if in_adapter(&self.path) || self.error.is_some() {
            return param;
        }
        let key = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.dims().to_vec();
        let value = match self.read(&key, &shape) {
            Ok(values) => Tensor::<B, D>::from_data(TensorData::new(values, shape), &tensor.device()),
            Err(e) => {
                self.error = Some(e);
                tensor
            }
        };
        self.used.insert(key);
        Param::from_mapped_value(id, value, mapper)
    }
}

impl<B: Backend> Generator<B> {
    /// The base parameters with the adapters folded in: `(key, shape, row-major f32 values)` in module
    /// order, keys as in the file written by [`Generator::save_base`].
    pub fn base_state(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let merged = self.clone().merge_lora();
        let mut e = Export { path: Vec::new(), tensors: Vec::new() };
        merged.visit(&mut e);
        e.tensors
    }

    /// Writes the base weights (adapters folded in, see [`Generator::merge_lora`]) to a safetensors file (f32).
    pub fn save_base(&self, path: &Path) -> Result<(), WeightError> {
        checkpoints::atomic::write_f32_safetensors(path, self.base_state())
            .map_err(|source| WeightError::Io { path: path.into(), source })
    }

    /// Loads every base parameter from a safetensors file written by [`Generator::save_base`] (or
    /// converted to its keys and layouts). The adapters stay as they are; trainability follows the
    /// model's LoRA setting as before. A missing key, a wrong shape or dtype, or a key that is no base
    /// parameter of this model is an error naming the key(s).
    pub fn load_base(self, path: &Path) -> Result<Self, WeightError> {
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io { path: path.into(), source })?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| WeightError::Format { path: path.into(), message: e.to_string() })?;
        let mut import = Import { path: Vec::new(), file: path, tensors: &tensors, used: BTreeSet::new(), error: None };
        let model = self.map(&mut import);
        if let Some(e) = import.error {
            return Err(e);
        }
        let extra: Vec<String> =
            tensors.names().into_iter().filter(|k| !import.used.contains(*k)).map(String::from).collect();
        if !extra.is_empty() {
            let mut keys = extra;
            keys.sort();
            return Err(WeightError::Unexpected { path: path.into(), keys });
        }
        Ok(model.apply_trainability())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generator::tests::{config, host, max_abs_diff, param_shapes, randomize_adapters};
    use crate::report::lora_adapter_names;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    type B = Flex;
    type AB = Autodiff<Flex>;

    /// Rewrites a safetensors file through `edit` on `(key → (shape, f32 values))`.
    fn rewrite(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
        let bytes = std::fs::read(path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut map: BTreeMap<String, (Vec<usize>, Vec<f32>)> = st
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let vals = v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                (k, (v.shape().to_vec(), vals))
            })
            .collect();
        edit(&mut map);
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
            map.into_iter().map(|(k, (s, v))| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        let views: Vec<_> = raw
            .iter()
            .map(|(k, s, d)| (k.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_reproduces_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.safetensors");
        let device = Default::default();
        let a = config(false).init::<B>(&device);
        a.save_base(&file).unwrap();
        let b = config(false).init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 2, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        assert!(max_abs_diff(&host(a.forward(x.clone())), &host(b.forward(x.clone()))) > 1e-3);
        let b = b.load_base(&file).unwrap();
        assert_eq!(host(a.forward(x.clone())), host(b.forward(x)));

        let keys: Vec<String> = a.base_state().into_iter().map(|(k, _, _)| k).collect();
        let expected: Vec<String> = param_shapes(&a).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, expected);
        for k in
            ["encoder.0.attn.qkv.weight", "encoder.0.norm1.gamma", "patch_embed.proj.weight", "mask_token", "head.bias"]
        {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.contains("patch_embed.proj.bias") || k.contains("beta")));
    }

    /// A LoRA model saves its merged base; a full model loads it and reproduces the LoRA model's output.
    /// A LoRA model loading a base keeps its own (fresh) adapters and its frozen base.
    #[test]
    fn lora_model_exports_its_merged_base() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.safetensors");
        let device = Default::default();
        let tuned = randomize_adapters(config(true).init::<AB>(&device));
        tuned.save_base(&file).unwrap();
        let keys: Vec<String> = tuned.base_state().into_iter().map(|(k, _, _)| k).collect();
        assert!(!keys.iter().any(|k| k.contains("adapter")));

        let x = Tensor::<AB, 4>::random([1, 2, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        let full = config(false).init::<AB>(&device).load_base(&file).unwrap();
        let want = host(tuned.forward(x.clone()));
        // Relative to the output's scale: random adapters give outputs of order 10-100 in f32.
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&want, &host(full.forward(x.clone()))) < 1e-5 * scale);
        assert!(full.encoder[0].attn.proj.weight.is_require_grad(), "full training stays trainable");

        let fresh = config(true).init::<AB>(&device).load_base(&file).unwrap();
        assert_eq!(lora_adapter_names(&fresh).len(), 8);
        assert!(!fresh.encoder[0].attn.proj.weight.is_require_grad(), "base stays frozen");
        assert!(!fresh.encoder_norm.gamma.is_require_grad());
        assert!(fresh.encoder[0].attn.proj.adapter.as_ref().unwrap().lora_a.is_require_grad());
        assert_eq!(host(full.forward(x.clone())), host(fresh.forward(x)), "fresh adapters are a no-op");
    }

    #[test]
    fn wrong_shape_names_the_key_and_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.safetensors");
        let device = Default::default();
        let g = config(false).init::<B>(&device);
        g.save_base(&file).unwrap();
        rewrite(&file, |m| {
            m.insert("encoder.1.mlp.fc1.weight".into(), (vec![32, 65], vec![0.0; 32 * 65]));
        });
        let e = config(false).init::<B>(&device).load_base(&file).unwrap_err();
        match &e {
            WeightError::Shape { key, found, expected, .. } => {
                assert_eq!(key, "encoder.1.mlp.fc1.weight");
                assert_eq!((found.as_slice(), expected.as_slice()), ([32, 65].as_slice(), [32, 64].as_slice()));
            }
            other => panic!("expected a shape error, got {other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("encoder.1.mlp.fc1.weight") && msg.contains("[32, 65]") && msg.contains("[32, 64]"),
            "{msg}"
        );
    }

    #[test]
    fn missing_and_extra_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.safetensors");
        let device = Default::default();
        config(false).init::<B>(&device).save_base(&file).unwrap();
        rewrite(&file, |m| {
            m.remove("decoder.0.cross_attn.kv.bias");
        });
        let e = config(false).init::<B>(&device).load_base(&file).unwrap_err();
        assert!(
            matches!(&e, WeightError::Missing { key, expected, .. } if key == "decoder.0.cross_attn.kv.bias" && expected == &[64]),
            "{e}"
        );

        config(false).init::<B>(&device).save_base(&file).unwrap();
        rewrite(&file, |m| {
            m.insert("encoder.2.norm1.gamma".into(), (vec![32], vec![1.0; 32]));
            m.insert("extra".into(), (vec![1], vec![0.0]));
        });
        let e = config(false).init::<B>(&device).load_base(&file).unwrap_err();
        match &e {
            WeightError::Unexpected { keys, .. } => assert_eq!(keys, &["encoder.2.norm1.gamma", "extra"]),
            other => panic!("expected unexpected keys, got {other}"),
        }

        std::fs::write(&file, b"not safetensors").unwrap();
        assert!(matches!(config(false).init::<B>(&device).load_base(&file), Err(WeightError::Format { .. })));
        let absent = dir.path().join("absent.safetensors");
        assert!(matches!(config(false).init::<B>(&device).load_base(&absent), Err(WeightError::Io { .. })));
    }
}
