//! `checkpoints::weights` through its public API: a module filled from PyTorch-keyed files, and
//! every kind of bad file as one error that names the file and the key.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use checkpoints::weights::{FileKey, WeightError, WeightFile, load_module, module_tensors, save_tensors};
use safetensors::Dtype;

type B = Flex;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    fc: Linear<B>,
    norm: LayerNorm<B>,
    blocks: Vec<Linear<B>>,
}

fn net<B: Backend>() -> Net<B> {
    let device = Default::default();
    Net {
        fc: LinearConfig::new(3, 2).init(&device),
        norm: LayerNormConfig::new(2).init(&device),
        blocks: vec![LinearConfig::new(2, 2).init(&device)],
    }
}

/// PyTorch's names and layouts: `gamma`/`beta` are `weight`/`bias`, 2-D weights are `[out, in]`.
fn torch_key(path: &[String], rank: usize) -> Option<FileKey> {
    let key = path
        .iter()
        .map(|p| match p.as_str() {
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".");
    Some(if rank == 2 { FileKey::transposed(key) } else { FileKey::same(key) })
}

/// The tensors of a PyTorch `state_dict` for [`Net`], with values `0, 1, 2, ...` per tensor.
fn torch_state() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    [
        ("fc.weight", vec![2, 3]),
        ("fc.bias", vec![2]),
        ("norm.weight", vec![2]),
        ("norm.bias", vec![2]),
        ("blocks.0.weight", vec![2, 2]),
        ("blocks.0.bias", vec![2]),
    ]
    .into_iter()
    .map(|(k, s)| {
        let n = s.iter().product::<usize>();
        (k.to_owned(), s, (0..n).map(|i| i as f32).collect())
    })
    .collect()
}

/// Writes tensors of any dtype (raw little-endian bytes) with safetensors' own serializer.
fn write_raw(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The state dict as raw F32 entries, for editing one entry's dtype or bytes.
fn raw_state() -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    let keys = ["fc.weight", "fc.bias", "norm.weight", "norm.bias", "blocks.0.weight", "blocks.0.bias"];
    torch_state().into_iter().zip(keys).map(|((_, s, v), k)| (k, Dtype::F32, s, f32_bytes(&v))).collect()
}

fn load(path: &Path) -> Result<Net<B>, WeightError> {
    let mut file = WeightFile::open(path)?;
    let model = load_module(net::<B>(), &mut file, torch_key)?;
    file.finish(|_| false)?;
    Ok(model)
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn dir_and(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn a_torch_state_dict_fills_the_module_transposed_and_renamed_and_writes_back_identically() {
    let (_dir, path) = dir_and("torch.safetensors");
    save_tensors(&path, torch_state()).unwrap();
    let model = load(&path).unwrap();
    // PyTorch's fc.weight [[0, 1, 2], [3, 4, 5]] is burn's [in, out] = [[0, 3], [1, 4], [2, 5]].
    assert_eq!(values(model.fc.weight.val()), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(values(model.norm.gamma.val()), [0.0, 1.0]);
    assert_eq!(values(model.norm.beta.as_ref().unwrap().val()), [0.0, 1.0]);
    assert_eq!(module_tensors(&model, torch_key), torch_state());

    let (_dir2, again) = dir_and("again.safetensors");
    save_tensors(&again, module_tensors(&model, torch_key)).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn loaded_parameters_keep_their_ids_and_trainability() {
    type A = Autodiff<Flex>;
    let (_dir, path) = dir_and("torch.safetensors");
    save_tensors(&path, torch_state()).unwrap();
    let fresh = net::<A>();
    let id = fresh.fc.weight.id;
    let mut file = WeightFile::open(&path).unwrap();
    let frozen = load_module(fresh.clone().no_grad(), &mut file, torch_key).unwrap();
    assert!(!frozen.fc.weight.is_require_grad());
    let model = load_module(fresh, &mut file, torch_key).unwrap();
    assert_eq!(model.fc.weight.id, id);
    let x = Tensor::<A, 2>::ones([1, 3], &Default::default());
    let grads = model.fc.forward(x).sum().backward();
    assert!(model.fc.weight.grad(&grads).is_some());
}

#[test]
fn a_truncated_file_is_a_format_error_naming_the_file() {
    let (_dir, path) = dir_and("cut.safetensors");
    save_tensors(&path, torch_state()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 3, 20, 5, 0] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, WeightError::Format { .. }), "{keep} bytes: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("cut.safetensors") && msg.contains("truncated"), "{keep} bytes: {msg}");
    }
}

#[test]
fn a_file_that_is_not_safetensors_is_a_format_error_naming_the_file() {
    let (_dir, path) = dir_and("weights.pth");
    std::fs::write(&path, b"PK\x03\x04 a PyTorch zip archive, not safetensors").unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, WeightError::Format { .. }), "{err:?}");
    assert!(
        err.to_string().contains("weights.pth") && err.to_string().contains("not a valid safetensors file"),
        "{err}"
    );
    assert_eq!(err.path(), path);
}

#[test]
fn an_absent_file_is_an_io_error_naming_the_file() {
    let (_dir, path) = dir_and("absent.safetensors");
    let err = load(&path).unwrap_err();
    assert!(matches!(&err, WeightError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
}

#[test]
fn missing_keys_are_named_with_their_expected_shape_and_all_listed() {
    let (_dir, path) = dir_and("partial.safetensors");
    let partial: Vec<_> = torch_state().into_iter().filter(|(k, _, _)| k != "fc.weight" && k != "norm.bias").collect();
    save_tensors(&path, partial).unwrap();
    let err = load(&path).unwrap_err();
    match &err {
        WeightError::Missing { key, expected, others, .. } => {
            assert_eq!(key, "fc.weight");
            assert_eq!(expected, &[2, 3], "in the file's layout");
            assert_eq!(others, &["norm.bias"]);
        }
        other => panic!("expected a missing key, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("partial.safetensors") && msg.contains("fc.weight") && msg.contains("[2, 3]"), "{msg}");
    assert!(msg.contains("norm.bias"), "{msg}");
}

#[test]
fn extra_keys_are_all_named_unless_ignored() {
    let (_dir, path) = dir_and("deeper.safetensors");
    let mut state = torch_state();
    state.push(("blocks.1.weight".into(), vec![2, 2], vec![0.0; 4]));
    state.push(("attn.bias".into(), vec![1], vec![0.0]));
    save_tensors(&path, state).unwrap();
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, WeightError::Unexpected { keys, .. } if keys == &["attn.bias", "blocks.1.weight"]),
        "{err:?}"
    );
    assert!(err.to_string().contains("deeper.safetensors") && err.to_string().contains("blocks.1.weight"), "{err}");

    let mut file = WeightFile::open(&path).unwrap();
    load_module(net::<B>(), &mut file, torch_key).unwrap();
    assert_eq!(file.unread(), ["attn.bias", "blocks.1.weight"]);
    let err = file.finish(|k| k == "attn.bias").unwrap_err();
    assert!(matches!(&err, WeightError::Unexpected { keys, .. } if keys == &["blocks.1.weight"]), "{err:?}");
    file.finish(|k| k.ends_with(".bias") || k.starts_with("blocks.1.")).unwrap();
}

#[test]
fn a_mis_shaped_key_names_both_shapes() {
    let (_dir, path) = dir_and("wrong.safetensors");
    // An [in, out] weight written without the transpose PyTorch's layout needs.
    let state =
        torch_state().into_iter().map(|(k, s, v)| if k == "fc.weight" { (k, vec![3, 2], v) } else { (k, s, v) });
    save_tensors(&path, state.collect()).unwrap();
    let err = load(&path).unwrap_err();
    match &err {
        WeightError::Mismatch { key, found, expected, .. } => {
            assert_eq!(
                (key.as_str(), found.as_slice(), expected.as_slice()),
                ("fc.weight", [3, 2].as_slice(), [2, 3].as_slice())
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("wrong.safetensors") && msg.contains("[3, 2]") && msg.contains("[2, 3]"), "{msg}");
}

#[test]
fn an_i32_tensor_where_f32_is_expected_is_a_dtype_error() {
    let (_dir, path) = dir_and("ints.safetensors");
    let mut raw = raw_state();
    raw[1] = ("fc.bias", Dtype::I32, vec![2], [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect());
    write_raw(&path, &raw);
    let err = load(&path).unwrap_err();
    assert!(matches!(&err, WeightError::Dtype { key, found, .. } if key == "fc.bias" && found == "I32"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ints.safetensors") && msg.contains("fc.bias") && msg.contains("F32"), "{msg}");
}

#[test]
fn f64_is_refused_and_half_precision_is_widened_exactly() {
    let (_dir, path) = dir_and("mixed.safetensors");
    let mut raw = raw_state();
    raw[2] = ("norm.weight", Dtype::F64, vec![2], [0.5f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect());
    write_raw(&path, &raw);
    let err = load(&path).unwrap_err();
    assert!(matches!(&err, WeightError::Dtype { key, found, .. } if key == "norm.weight" && found == "F64"), "{err}");

    let half: Vec<u8> = [0.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let brain: Vec<u8> = [1.5f32, 3.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    raw[2] = ("norm.weight", Dtype::F16, vec![2], half);
    raw[3] = ("norm.bias", Dtype::BF16, vec![2], brain);
    write_raw(&path, &raw);
    let model = load(&path).unwrap();
    assert_eq!(values(model.norm.gamma.val()), [0.5, -2.0]);
    assert_eq!(values(model.norm.beta.unwrap().val()), [1.5, 3.0]);
}

#[test]
fn tensors_are_read_by_key_with_their_shape_checked() {
    let (_dir, path) = dir_and("plain.safetensors");
    save_tensors(&path, torch_state()).unwrap();
    let mut file = WeightFile::open(&path).unwrap();
    assert_eq!(file.path(), path);
    assert_eq!(file.keys(), ["blocks.0.bias", "blocks.0.weight", "fc.bias", "fc.weight", "norm.bias", "norm.weight"]);
    assert_eq!(file.shape("fc.weight"), Some([2, 3].as_slice()));
    assert_eq!(file.shape("nope"), None);
    assert_eq!(file.read("fc.weight", &[2, 3]).unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(matches!(file.read("fc.weight", &[6]), Err(WeightError::Mismatch { .. })));
    assert!(matches!(file.read("nope", &[1]), Err(WeightError::Missing { .. })));
    assert_eq!(file.unread().len(), 5);
}

#[test]
fn a_failed_save_names_the_file() {
    let (_dir, path) = dir_and("no/such/dir/out.safetensors");
    let err = save_tensors(&path, torch_state()).unwrap_err();
    assert!(matches!(err, WeightError::Io { .. }) && err.to_string().contains("out.safetensors"), "{err}");
}
