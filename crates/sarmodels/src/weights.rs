//! Base weights as safetensors (f32): how `model.pretrained` loads a base and how a full-training run
//! exports one.
//!
//! Keys are burn's dotted parameter paths (`encoder.0.attn.qkv.weight`, `encoder_norm.gamma`, …) and
//! tensors keep burn's layouts (a linear weight is `[d_in, d_out]`). Only base parameters are
//! stored: [`Generator::save_base`] folds the adapters in first, [`Generator::load_base`] leaves the
//! adapters as they are. [`ParamSnapshot`] keeps such a base in memory, to put into every
//! freshly initialised model of a run.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use checkpoints::weights::{FileKey, WeightFile, load_module, module_tensors, save_tensors};

use crate::generator::Generator;

/// Failure to read or write a base-weights file: the shared [`checkpoints::weights::WeightError`].
pub use checkpoints::weights::WeightError;

/// The file key of the parameter at `path`: its dotted burn path, or `None` for a LoRA adapter
/// (adapters are never stored in a base file).
fn base_key(path: &[String], _rank: usize) -> Option<FileKey> {
    (!path.iter().any(|p| p == "adapter")).then(|| FileKey::same(path.join(".")))
}

impl<B: Backend> Generator<B> {
    /// The base parameters with the adapters folded in: `(key, shape, row-major f32 values)` in module
    /// order, keys as in the file written by [`Generator::save_base`].
    pub fn base_state(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        module_tensors(&self.clone().merge_lora(), base_key)
    }

    /// Writes the base weights (adapters folded in, see [`Generator::merge_lora`]) to a safetensors file (f32).
    pub fn save_base(&self, path: &Path) -> Result<(), WeightError> {
        save_tensors(path, self.base_state())
    }

    /// Loads every base parameter from a safetensors file written by [`Generator::save_base`] (or
    /// converted to its keys and layouts; f16 and bf16 are widened to f32). The adapters stay as
    /// they are; trainability follows the model's LoRA setting as before. A missing key, a wrong
    /// shape or dtype, or a key that is no base parameter of this model is an error naming the key(s).
    pub fn load_base(self, path: &Path) -> Result<Self, WeightError> {
        let mut file = WeightFile::open(path)?;
        let model = load_module(self, &mut file, base_key)?;
        file.finish(|_| false)?;
        Ok(model.apply_trainability())
    }
}

/// The values of a module's float parameters by dotted path, read from one module and applied onto
/// another of the same architecture: how a stage keeps the `model.pretrained` base it read (and
/// checked) when its task was built and puts it into every freshly initialised model, so that the
/// run's seed decides what the file does not hold (adapters, ...) and the file decides the rest.
#[derive(Debug, Clone, Default)]
pub struct ParamSnapshot {
    tensors: BTreeMap<String, TensorData>,
}

impl ParamSnapshot {
    /// The float parameters of `module` whose module path (`["encoder", "0", "attn", "qkv",
    /// "weight"]`, ...) `skip` does not reject, by dotted path.
    pub fn of<B: Backend, M: Module<B>>(module: &M, skip: impl Fn(&[String]) -> bool) -> ParamSnapshot {
        struct Collect<F> {
            path: Vec<String>,
            skip: F,
            tensors: BTreeMap<String, TensorData>,
        }
        impl<B: Backend, F: Fn(&[String]) -> bool> ModuleVisitor<B> for Collect<F> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_owned());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if !(self.skip)(&self.path) {
                    self.tensors.insert(self.path.join("."), param.val().into_data());
                }
            }
        }
        let mut collect = Collect { path: Vec::new(), skip, tensors: BTreeMap::new() };
        module.visit(&mut collect);
        ParamSnapshot { tensors: collect.tensors }
    }

    /// Number of parameters held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no parameter is held.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The dotted paths held, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `module` with every held parameter's value in place of its own, keeping each parameter's
    /// id, device and trainability; parameters not held (skipped when read) stay as they are.
    /// Meant for a module of the architecture the snapshot was read from (same paths and shapes).
    pub fn apply<B: Backend, M: Module<B>>(&self, module: M) -> M {
        struct Apply<'a> {
            path: Vec<String>,
            tensors: &'a BTreeMap<String, TensorData>,
        }
        impl<B: Backend> ModuleMapper<B> for Apply<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_owned());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                let Some(data) = self.tensors.get(&self.path.join(".")) else { return param };
                let (id, tensor, _mapper) = param.consume();
                let (device, shape, trainable) = (tensor.device(), tensor.shape(), tensor.is_require_grad());
                let value = Tensor::<B, D>::from_data(data.clone(), &device);
                Param::uninitialized(id, move |_, grad| value.clone().set_require_grad(grad), device, trainable, shape)
            }
        }
        module.map(&mut Apply { path: Vec::new(), tensors: &self.tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::tests::{config, host, max_abs_diff, param_shapes, randomize_adapters};
    use crate::report::lora_adapter_names;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    type B = Flex;
    type AB = Autodiff<Flex>;

    /// Rewrites a safetensors file through `edit` on `(key → (shape, f32 values))`.
    fn rewrite(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
        let mut file = WeightFile::open(path).unwrap();
        let mut map = BTreeMap::new();
        for key in file.keys() {
            let shape = file.shape(&key).unwrap().to_vec();
            let values = file.read(&key, &shape).unwrap();
            map.insert(key, (shape, values));
        }
        edit(&mut map);
        save_tensors(path, map.into_iter().map(|(k, (s, v))| (k, s, v)).collect()).unwrap();
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
            WeightError::Mismatch { key, found, expected, .. } => {
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

    #[test]
    fn snapshot_applies_the_base_and_keeps_skipped_params_ids_and_trainability() {
        let device = Default::default();
        let in_adapter = |p: &[String]| p.iter().any(|x| x == "adapter");
        let source = randomize_adapters(config(true).init::<AB>(&device));
        let snapshot = ParamSnapshot::of(&source, in_adapter);
        assert!(!snapshot.is_empty());
        assert_eq!(snapshot.len(), snapshot.paths().count());
        assert!(snapshot.paths().all(|p| !p.contains("adapter")), "skipped paths are not held");
        assert!(snapshot.paths().any(|p| p == "head.bias"));

        let fresh = randomize_adapters(config(true).init::<AB>(&device));
        let ids = |m: &Generator<AB>| {
            struct Ids(Vec<(String, bool)>);
            impl<BK: Backend> ModuleVisitor<BK> for Ids {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<BK, D>>) {
                    self.0.push((p.id.to_string(), p.val().is_require_grad()));
                }
            }
            let mut v = Ids(Vec::new());
            m.visit(&mut v);
            v.0
        };
        let before = ids(&fresh);
        let fresh_adapter = ParamSnapshot::of(&fresh, |p| !in_adapter(p));
        let applied = snapshot.apply(fresh);
        assert_eq!(ids(&applied), before, "ids and trainability are kept");
        let base_after = ParamSnapshot::of(&applied, in_adapter);
        for (k, v) in &snapshot.tensors {
            assert_eq!(&base_after.tensors[k], v, "{k} comes from the snapshot");
        }
        let adapter_after = ParamSnapshot::of(&applied, |p| !in_adapter(p));
        assert_eq!(adapter_after.tensors, fresh_adapter.tensors, "skipped params stay the fresh model's");
        assert!(!adapter_after.is_empty());
    }
}
