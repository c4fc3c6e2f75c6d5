//! Moving a burn module's weights in and out of checkpoint tensors.
//!
//! Weights are named by module path (`hidden.weight`), so a safetensors reader sees the usual
//! state-dict keys. burn keys optimizer state by parameter id, so the ids are saved too and
//! restored on load: loading weights without their ids silently detaches the optimizer's
//! moments from the parameters.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use safetensors::Dtype;

use crate::format::{CheckpointError, RawTensor};

fn to_safetensors(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 | DType::Flex32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => return None,
    })
}

fn from_safetensors(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        _ => return None,
    })
}

#[derive(Default)]
struct ModulePath {
    parts: Vec<String>,
}

impl ModulePath {
    fn enter(&mut self, name: &str) {
        self.parts.push(name.to_string());
    }
    fn exit(&mut self) {
        self.parts.pop();
    }
    fn name(&self) -> String {
        self.parts.join(".")
    }
}

struct Collect {
    path: ModulePath,
    tensors: Vec<RawTensor>,
    ids: BTreeMap<String, String>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.name();
        let data = param.val().into_data();
        let dtype = to_safetensors(data.dtype)
            .unwrap_or_else(|| panic!("parameter {name} has unsupported dtype {:?}", data.dtype));
        self.ids.insert(name.clone(), param.id.val().to_string());
        let shape = data.shape.to_vec();
        self.tensors.push(RawTensor { name, dtype, shape, data: data.into_bytes() });
    }
}

/// The float parameters of `model` as raw tensors named by module path, and their ids
/// (as decimal strings: u64 ids do not survive JSON numbers).
pub fn weights_of<B: Backend, M: Module<B>>(model: &M) -> (Vec<RawTensor>, BTreeMap<String, String>) {
    let mut c = Collect { path: ModulePath::default(), tensors: Vec::new(), ids: BTreeMap::new() };
    model.visit(&mut c);
    (c.tensors, c.ids)
}

struct Load<'a> {
    path: ModulePath,
    by_name: BTreeMap<String, RawTensor>,
    ids: Option<&'a BTreeMap<String, String>>,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Load<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.name();
        let (id, tensor, mapper) = param.consume();
        let Some(raw) = self.by_name.remove(&name) else {
            self.problems.push(format!("missing tensor {name}"));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let expected: Vec<usize> = tensor.shape().to_vec();
        if raw.shape != expected {
            self.problems.push(format!("{name}: shape {:?} in the file, {:?} in the model", raw.shape, expected));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let Some(dtype) = from_safetensors(raw.dtype) else {
            self.problems.push(format!("{name}: unsupported dtype {:?}", raw.dtype));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let data = TensorData::from_bytes(raw.data, raw.shape, dtype);
        let loaded = Tensor::<B, D>::from_data(data, &tensor.device())
            .cast(tensor.dtype())
            .set_require_grad(tensor.is_require_grad());
        let id = match self.ids.and_then(|ids| ids.get(&name)) {
            Some(saved) => match saved.parse::<u64>() {
                Ok(v) => ParamId::from(v),
                Err(_) => {
                    self.problems.push(format!("{name}: bad parameter id {saved:?}"));
                    id
                }
            },
            None => id,
        };
        Param::from_mapped_value(id, loaded, mapper)
    }
}

/// Loads `tensors` into `model` by module path (their buffers become the parameters' storage
/// where the backend allows, without a copy). With `ids`, the saved parameter ids are
/// restored too (needed for optimizer state to attach). Every missing, unexpected or
/// mis-shaped tensor is reported at once, naming `file`.
pub fn load_weights<B: Backend, M: Module<B>>(
    model: M,
    tensors: Vec<RawTensor>,
    ids: Option<&BTreeMap<String, String>>,
    file: &Path,
) -> Result<M, CheckpointError> {
    let mut load = Load {
        path: ModulePath::default(),
        by_name: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
        ids,
        problems: Vec::new(),
    };
    let model = model.map(&mut load);
    let mut problems = load.problems;
    for name in load.by_name.keys() {
        problems.push(format!("unexpected tensor {name} (not in the model)"));
    }
    if problems.is_empty() {
        Ok(model)
    } else {
        Err(CheckpointError::Incompatible {
            path: file.to_path_buf(),
            reason: format!("weights do not fit the model: {}", problems.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type TB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        a: Linear<B>,
        b: Vec<Linear<B>>,
    }

    fn net(device: &burn::backend::flex::FlexDevice) -> Net<TB> {
        Net {
            a: LinearConfig::new(3, 4).init(device),
            b: vec![LinearConfig::new(4, 2).init(device), LinearConfig::new(2, 2).init(device)],
        }
    }

    #[test]
    fn weights_and_ids_round_trip_into_a_fresh_model() {
        let device = Default::default();
        let source = net(&device);
        let (tensors, ids) = weights_of::<TB, _>(&source);
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "a.bias", "b.0.weight", "b.0.bias", "b.1.weight", "b.1.bias"]);
        let fresh = net(&device);
        let loaded = load_weights(fresh, tensors.clone(), Some(&ids), Path::new("f")).unwrap();
        let (again, again_ids) = weights_of::<TB, _>(&loaded);
        assert_eq!(again, tensors, "same values");
        assert_eq!(again_ids, ids, "same parameter ids");
        let x = Tensor::<TB, 2>::from_floats([[1.0, -2.0, 0.5]], &device);
        let y1 = source.b[1].forward(source.b[0].forward(source.a.forward(x.clone())));
        let y2 = loaded.b[1].forward(loaded.b[0].forward(loaded.a.forward(x)));
        assert_eq!(y1.into_data(), y2.into_data());
        // Gradients still flow to every loaded parameter.
        let loss = loaded.a.forward(Tensor::<TB, 2>::ones([1, 3], &device)).sum();
        let grads = loss.backward();
        assert!(loaded.a.weight.grad(&grads).is_some());
    }

    #[test]
    fn missing_extra_and_misshapen_tensors_are_all_reported() {
        let device = Default::default();
        let (mut tensors, _) = weights_of::<TB, _>(&net(&device));
        tensors.retain(|t| t.name != "a.bias");
        tensors[0].shape = vec![4, 3];
        tensors.push(RawTensor {
            name: "c.weight".into(),
            dtype: Dtype::F32,
            shape: vec![1],
            data: burn::tensor::Bytes::from_bytes_vec(vec![0; 4]),
        });
        let err = load_weights(net(&device), tensors, None, Path::new("ckpt.safetensors")).unwrap_err().to_string();
        assert!(err.contains("ckpt.safetensors"), "{err}");
        assert!(err.contains("missing tensor a.bias"), "{err}");
        assert!(err.contains("a.weight: shape [4, 3]"), "{err}");
        assert!(err.contains("unexpected tensor c.weight"), "{err}");
    }
}
