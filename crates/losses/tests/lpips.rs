//! LPIPS against the `lpips` Python package, its invariants, and its error messages.
//!
//! The numeric check runs the real AlexNet / VGG16 layer structure with synthetic weights that
//! `scripts/export_lpips.py` and this file both derive from one integer formula (splitmix64),
//! so no weights are committed: `tests/fixtures/lpips_reference.json` holds only the expected
//! values, computed by `lpips.LPIPS` itself in float64.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use losses::lpips::{
    Lpips, LpipsConfig, LpipsError, LpipsInputRange, LpipsNet, LpipsWeights, rgb_from_s2, unit_to_signed_range,
};
use safetensors::Dtype;
use serde_json::Value;

type B = Flex;

fn device() -> burn::tensor::Device<B> {
    Default::default()
}

// ---- the synthetic-weight formula shared with scripts/export_lpips.py ----

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// u(seed, stream, i) in [0, 1), a multiple of 2^-24.
fn uniform(seed: u64, stream: u64, i: u64) -> f64 {
    let z = splitmix64((seed << 40) | (stream << 32) | i);
    (z >> 40) as f64 / (1u64 << 24) as f64
}

/// The tensor at position `t` of the key list, as `export_lpips.py --random --seed SEED` writes it.
fn synthetic_tensor(seed: u64, t: usize, key: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product::<usize>() as u64;
    let scale = if key.starts_with("lin") || key.ends_with(".bias") {
        0.0
    } else {
        (6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt()
    };
    (0..n)
        .map(|i| {
            let u = uniform(seed, t as u64, i);
            let v = if key.starts_with("lin") {
                u
            } else if key.ends_with(".bias") {
                (2.0 * u - 1.0) * 0.1
            } else {
                (2.0 * u - 1.0) * scale
            };
            v as f32
        })
        .collect()
}

fn synthetic_weights(net: LpipsNet, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    LpipsWeights::expected_tensors(net)
        .into_iter()
        .enumerate()
        .map(|(t, (key, shape))| {
            let values = synthetic_tensor(seed, t, &key, &shape);
            (key, shape, values)
        })
        .collect()
}

fn synthetic_image(seed: u64, stream: u64, shape: [usize; 4], range: LpipsInputRange) -> Tensor<B, 4> {
    let n = shape.iter().product::<usize>() as u64;
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let u = uniform(seed, stream, i);
            (match range {
                LpipsInputRange::MinusOneToOne => 2.0 * u - 1.0,
                LpipsInputRange::ZeroToOne => u,
            }) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &device())
}

// ---- safetensors files ----

enum Stored {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Stored)]) {
    let bytes: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(_, _, stored)| match stored {
            Stored::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Stored::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((key, shape, _), (dtype, data))| {
            (key.as_str(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn write_weights(path: &Path, weights: Vec<(String, Vec<usize>, Vec<f32>)>) {
    let stored: Vec<_> = weights.into_iter().map(|(k, s, v)| (k, s, Stored::F32(v))).collect();
    write_safetensors(path, &stored);
}

fn synthetic_model(net: LpipsNet, seed: u64, dir: &Path) -> Lpips<B> {
    let path = dir.join(format!("synthetic_{net}_{seed}.safetensors"));
    write_weights(&path, synthetic_weights(net, seed));
    LpipsWeights::load::<B>(&path, net, &device()).unwrap()
}

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lpips_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn values(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn parse_net(s: &str) -> LpipsNet {
    serde_json::from_value(Value::String(s.to_string())).unwrap()
}

fn assert_close(actual: f32, expected: f64, what: &str) {
    let rel = ((actual as f64 - expected) / expected.abs().max(1e-12)).abs();
    assert!(rel < 1e-4, "{what}: got {actual}, lpips package gives {expected} (relative error {rel:.2e})");
}

// ---- numeric check against the lpips package ----

#[test]
fn key_list_and_synthetic_weights_match_the_lpips_state_dict() {
    let fixture = fixture();
    for net in [LpipsNet::Alex, LpipsNet::Vgg] {
        let seed = if net == LpipsNet::Alex { 1 } else { 5 };
        let reference = fixture["tensors"][net.to_string()].as_array().unwrap();
        let ours = synthetic_weights(net, seed);
        assert_eq!(ours.len(), reference.len(), "{net}: number of tensors");
        for ((key, shape, values), r) in ours.iter().zip(reference) {
            assert_eq!(key, r["key"].as_str().unwrap(), "{net}: key order");
            let r_shape: Vec<usize> = serde_json::from_value(r["shape"].clone()).unwrap();
            assert_eq!(shape, &r_shape, "{net}: shape of {key}");
            for (i, v) in r["first_values"].as_array().unwrap().iter().enumerate() {
                assert_eq!(values[i], v.as_f64().unwrap() as f32, "{net}: {key}[{i}] (formula mismatch)");
            }
        }
    }
}

#[test]
fn matches_the_lpips_package_on_synthetic_weights() {
    let dir = tempfile::tempdir().unwrap();
    for case in fixture()["cases"].as_array().unwrap() {
        let net = parse_net(case["net"].as_str().unwrap());
        let range: LpipsInputRange = serde_json::from_value(case["input_range"].clone()).unwrap();
        let shape: [usize; 4] = serde_json::from_value(case["shape"].clone()).unwrap();
        let (wseed, iseed) = (case["weight_seed"].as_u64().unwrap(), case["input_seed"].as_u64().unwrap());
        let model = synthetic_model(net, wseed, dir.path()).with_input_range(range);
        let x = synthetic_image(iseed, 200, shape, range);
        let y = synthetic_image(iseed, 201, shape, range);
        let first: Vec<f32> = x.clone().flatten::<1>(0, 3).narrow(0, 0, 4).into_data().to_vec().unwrap();
        for (a, e) in first.iter().zip(case["first_input_values"].as_array().unwrap()) {
            assert_eq!(*a, e.as_f64().unwrap() as f32, "input formula mismatch");
        }

        let what = format!("{net} {shape:?} {range:?}");
        let total = values(model.forward(x.clone(), y.clone()));
        for (b, e) in case["expected"].as_array().unwrap().iter().enumerate() {
            assert_close(total[b], e.as_f64().unwrap(), &format!("{what}, sample {b}"));
        }
        let layers: Vec<Vec<f32>> = model.forward_per_layer(x, y).into_iter().map(values).collect();
        for (b, per_layer) in case["expected_per_layer"].as_array().unwrap().iter().enumerate() {
            for (l, e) in per_layer.as_array().unwrap().iter().enumerate() {
                assert_close(layers[l][b], e.as_f64().unwrap(), &format!("{what}, sample {b}, layer {l}"));
            }
        }
    }
}

// ---- invariants ----

#[test]
fn identical_images_are_at_distance_zero_and_distance_is_symmetric() {
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(LpipsNet::Alex, 11, dir.path());
    let shape = [2, 3, 40, 36];
    let x = synthetic_image(12, 200, shape, LpipsInputRange::MinusOneToOne);
    let y = synthetic_image(12, 201, shape, LpipsInputRange::MinusOneToOne);

    for d in values(model.forward(x.clone(), x.clone())) {
        assert!(d.abs() < 1e-7, "LPIPS(x, x) = {d}");
    }
    let xy = values(model.forward(x.clone(), y.clone()));
    let yx = values(model.forward(y, x));
    for (a, b) in xy.iter().zip(&yx) {
        assert!(*a > 0.0);
        assert!((a - b).abs() <= 1e-6 * a.abs(), "LPIPS(x, y) = {a} but LPIPS(y, x) = {b}");
    }
}

#[test]
fn zero_to_one_range_equals_mapping_to_minus_one_to_one_first() {
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(LpipsNet::Alex, 13, dir.path());
    let shape = [1, 3, 32, 32];
    let x = synthetic_image(14, 200, shape, LpipsInputRange::ZeroToOne);
    let y = synthetic_image(14, 201, shape, LpipsInputRange::ZeroToOne);
    let mapped = values(model.forward(unit_to_signed_range(x.clone()), unit_to_signed_range(y.clone())));
    let model = model.with_input_range(LpipsInputRange::ZeroToOne);
    assert_eq!(model.input_range(), LpipsInputRange::ZeroToOne);
    assert_eq!(values(model.forward(x, y)), mapped);
}

#[test]
fn loss_is_the_batch_mean() {
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(LpipsNet::Vgg, 15, dir.path());
    let shape = [3, 3, 16, 20];
    let x = synthetic_image(16, 200, shape, LpipsInputRange::MinusOneToOne);
    let y = synthetic_image(16, 201, shape, LpipsInputRange::MinusOneToOne);
    let per_sample = values(model.forward(x.clone(), y.clone()));
    let loss = values(model.loss(x, y));
    assert_eq!(loss.len(), 1);
    let mean = per_sample.iter().sum::<f32>() / 3.0;
    assert!((loss[0] - mean).abs() <= 1e-6 * mean);
}

#[test]
fn gradients_reach_the_prediction_and_never_the_frozen_weights() {
    type AD = Autodiff<Flex>;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    write_weights(&path, synthetic_weights(LpipsNet::Alex, 17));
    let model = LpipsWeights::load::<AD>(&path, LpipsNet::Alex, &device()).unwrap();
    let shape = [2, 3, 32, 32];
    let pred =
        Tensor::<AD, 4>::from_inner(synthetic_image(18, 200, shape, LpipsInputRange::MinusOneToOne)).require_grad();
    let target = Tensor::<AD, 4>::from_inner(synthetic_image(18, 201, shape, LpipsInputRange::MinusOneToOne));
    let grads = model.loss(pred.clone(), target).backward();
    let g: Vec<f32> = pred.grad(&grads).expect("gradient for the prediction").into_data().to_vec().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    assert!(g.iter().any(|v| *v != 0.0));

    let mut params = 0;
    let mut trainable = 0;
    burn::module::Module::visit(&model, &mut CountTrainable { params: &mut params, trainable: &mut trainable });
    assert_eq!(params, 15, "5 conv weights + 5 biases + 5 heads");
    assert_eq!(trainable, 0, "LPIPS weights must be frozen");
}

struct CountTrainable<'a> {
    params: &'a mut usize,
    trainable: &'a mut usize,
}

impl<Bk: Backend> burn::module::ModuleVisitor<Bk> for CountTrainable<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Bk, D>>) {
        *self.params += 1;
        if param.val().is_require_grad() {
            *self.trainable += 1;
        }
    }
}

#[test]
fn gradients_stay_finite_where_every_feature_is_zero() {
    type AD = Autodiff<Flex>;
    // Biases of -100 switch every ReLU off: all features are zero, so LPIPS is 0 and the norm
    // in the unit-normalisation is 0 (where a bare sqrt would give 0 * inf = NaN gradients).
    let weights = synthetic_weights(LpipsNet::Alex, 19)
        .into_iter()
        .map(|(k, s, v)| {
            let v = if k.ends_with(".bias") { vec![-100.0; v.len()] } else { v };
            (k, s, v)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.safetensors");
    write_weights(&path, weights);
    let model = LpipsWeights::load::<AD>(&path, LpipsNet::Alex, &device()).unwrap();
    let shape = [1, 3, 32, 32];
    let pred =
        Tensor::<AD, 4>::from_inner(synthetic_image(20, 200, shape, LpipsInputRange::MinusOneToOne)).require_grad();
    let target = Tensor::<AD, 4>::from_inner(synthetic_image(20, 201, shape, LpipsInputRange::MinusOneToOne));
    let loss = model.loss(pred.clone(), target);
    assert_eq!(loss.clone().into_data().to_vec::<f32>().unwrap(), vec![0.0]);
    let grads = loss.backward();
    let g: Vec<f32> = pred.grad(&grads).unwrap().into_data().to_vec().unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "NaN/inf gradient where features vanish");
}

#[test]
fn smallest_inputs_the_trunks_accept() {
    let dir = tempfile::tempdir().unwrap();
    for net in [LpipsNet::Alex, LpipsNet::Vgg] {
        let model = synthetic_model(net, 21, dir.path());
        let s = net.min_input_size();
        let x = synthetic_image(22, 200, [1, 3, s, s], LpipsInputRange::MinusOneToOne);
        let y = synthetic_image(22, 201, [1, 3, s, s], LpipsInputRange::MinusOneToOne);
        let d = values(model.forward(x, y));
        assert!(d[0].is_finite() && d[0] > 0.0, "{net} at {s}×{s}: {d:?}");
    }
}

#[test]
#[should_panic(expected = "at least 31×31 px")]
fn too_small_inputs_panic_with_the_minimum_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(LpipsNet::Alex, 23, dir.path());
    let x = Tensor::<B, 4>::zeros([1, 3, 30, 64], &device());
    model.forward(x.clone(), x);
}

// ---- channel helpers ----

#[test]
fn rgb_from_s2_orders_b4_b3_b2_and_drops_nir() {
    // Channel c of pixel p holds 10 * c + p, so the output order is visible in the values.
    let values: Vec<f32> = (0..4).flat_map(|c| (0..4).map(move |p| (10 * c + p) as f32)).collect();
    let s2 = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 4, 2, 2]), &device());
    let rgb = rgb_from_s2(s2);
    assert_eq!(rgb.dims(), [1, 3, 2, 2]);
    let got: Vec<f32> = rgb.into_data().to_vec().unwrap();
    let expected = [20.0, 21.0, 22.0, 23.0, 10.0, 11.0, 12.0, 13.0, 0.0, 1.0, 2.0, 3.0];
    assert_eq!(got, expected);
}

#[test]
fn unit_to_signed_range_maps_0_1_to_minus_1_1() {
    let x = Tensor::<B, 1>::from_data([0.0f32, 0.25, 1.0], &device());
    assert_eq!(values(unit_to_signed_range(x)), vec![-1.0, -0.5, 1.0]);
}

// ---- errors ----

fn load_err(path: &Path, net: LpipsNet) -> (LpipsError, String) {
    let err = LpipsWeights::load::<B>(path, net, &device()).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn missing_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere").join("lpips_alex.safetensors");
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::NotFound { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("export_lpips.py"), "{msg}");
}

#[test]
fn a_file_that_is_not_safetensors_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::Format { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn missing_key_is_an_error_naming_file_key_and_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    let weights = synthetic_weights(LpipsNet::Alex, 1).into_iter().filter(|(k, _, _)| k != "lin3.model.1.weight");
    write_weights(&path, weights.collect());
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::MissingKey { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("`lin3.model.1.weight`"), "{msg}");
    assert!(msg.contains("[1, 256, 1, 1]"), "{msg}");
}

#[test]
fn wrong_shape_is_an_error_naming_file_key_and_both_shapes() {
    // A VGG file loaded as AlexNet: the first conv is 3×3 instead of 11×11.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg.safetensors");
    let weights = synthetic_weights(LpipsNet::Vgg, 1).into_iter().take(2).collect();
    write_weights(&path, weights);
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::Shape { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("`net.slice1.0.weight`"), "{msg}");
    assert!(msg.contains("[64, 3, 3, 3]") && msg.contains("[64, 3, 11, 11]"), "{msg}");
}

#[test]
fn wrong_dtype_is_an_error_naming_file_key_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.safetensors");
    let stored: Vec<_> = synthetic_weights(LpipsNet::Alex, 1)
        .into_iter()
        .map(|(k, s, v)| {
            let v = if k == "net.slice2.3.bias" {
                Stored::F64(v.iter().map(|x| *x as f64).collect())
            } else {
                Stored::F32(v)
            };
            (k, s, v)
        })
        .collect();
    write_safetensors(&path, &stored);
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::Dtype { .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("`net.slice2.3.bias`") && msg.contains("F64") && msg.contains("F32"), "{msg}");
}

#[test]
fn negative_or_non_finite_weights_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut weights = synthetic_weights(LpipsNet::Alex, 1);
    let head = weights.iter_mut().find(|(k, _, _)| k == "lin1.model.1.weight").unwrap();
    head.2[7] = -0.5;
    write_weights(&path, weights.clone());
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::NegativeHead { index: 7, .. }), "{err:?}");
    assert!(msg.contains("`lin1.model.1.weight`") && msg.contains(&path.display().to_string()), "{msg}");

    let head = weights.iter_mut().find(|(k, _, _)| k == "lin1.model.1.weight").unwrap();
    head.2[7] = 0.5;
    weights[0].2[3] = f32::NAN;
    write_weights(&path, weights);
    let (err, msg) = load_err(&path, LpipsNet::Alex);
    assert!(matches!(err, LpipsError::NonFinite { index: 3, .. }), "{err:?}");
    assert!(msg.contains("`net.slice1.0.weight`"), "{msg}");
}

#[test]
fn extra_keys_such_as_the_scaling_buffers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full_state_dict.safetensors");
    let mut weights = synthetic_weights(LpipsNet::Alex, 1);
    weights.push(("scaling_layer.shift".into(), vec![1, 3, 1, 1], vec![-0.030, -0.088, -0.188]));
    weights.push(("lins.0.model.1.weight".into(), vec![1, 64, 1, 1], vec![0.5; 64]));
    write_weights(&path, weights);
    let model = LpipsWeights::load::<B>(&path, LpipsNet::Alex, &device()).unwrap();
    assert_eq!(model.net(), LpipsNet::Alex);
}

// ---- config ----

#[test]
fn positive_weight_without_weights_file_is_a_config_error() {
    let config = LpipsConfig::default();
    let msg = config.validate(0.1).unwrap_err();
    assert!(msg.contains("no LPIPS weights file"), "{msg}");
    assert!(msg.contains("never silently"), "{msg}");
    assert!(msg.contains("export_lpips.py"), "{msg}");
    assert_eq!(config.validate(0.0), Ok(()));
    assert!(config.validate(-1.0).is_err());
    assert!(config.validate(f64::NAN).is_err());

    let err = config.load::<B>(&device()).unwrap_err();
    assert!(matches!(err, LpipsError::NoWeightsFile { net: LpipsNet::Alex }), "{err:?}");
}

#[test]
fn configured_weights_file_must_exist_when_the_weight_is_positive() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("lpips_vgg.safetensors");
    let config = LpipsConfig { net: LpipsNet::Vgg, weights: Some(missing.clone()), ..Default::default() };
    let msg = config.validate(0.5).unwrap_err();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert_eq!(config.validate(0.0), Ok(()));

    write_weights(&missing, synthetic_weights(LpipsNet::Vgg, 2));
    assert_eq!(config.validate(0.5), Ok(()));
    let model = config.load::<B>(&device()).unwrap();
    assert_eq!(model.net(), LpipsNet::Vgg);
}

#[test]
fn config_parses_from_json_and_rejects_unknown_keys() {
    let config: LpipsConfig =
        serde_json::from_str(r#"{"net": "vgg", "weights": "w.safetensors", "input_range": "zero_to_one"}"#).unwrap();
    assert_eq!(config.net, LpipsNet::Vgg);
    assert_eq!(config.weights.as_deref(), Some(Path::new("w.safetensors")));
    assert_eq!(config.input_range, LpipsInputRange::ZeroToOne);

    let defaults: LpipsConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, LpipsConfig::default());
    assert_eq!(defaults.net, LpipsNet::Alex);
    assert_eq!(defaults.input_range, LpipsInputRange::MinusOneToOne);

    let err = serde_json::from_str::<LpipsConfig>(r#"{"net": "alex", "weight": "w"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `weight`"), "{err}");
    assert!(serde_json::from_str::<LpipsConfig>(r#"{"net": "squeeze"}"#).is_err());
}

#[test]
fn expected_tensors_list_the_documented_keys() {
    let alex = LpipsWeights::expected_tensors(LpipsNet::Alex);
    assert_eq!(alex.len(), 15);
    assert_eq!(alex[0], ("net.slice1.0.weight".to_string(), vec![64, 3, 11, 11]));
    assert_eq!(alex[9], ("net.slice5.10.bias".to_string(), vec![256]));
    assert_eq!(alex[14], ("lin4.model.1.weight".to_string(), vec![1, 256, 1, 1]));
    let params: usize = alex.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(params, 2_469_696 + 1_152);

    let vgg = LpipsWeights::expected_tensors(LpipsNet::Vgg);
    assert_eq!(vgg.len(), 31);
    assert_eq!(vgg[24], ("net.slice5.28.weight".to_string(), vec![512, 512, 3, 3]));
    let params: usize = vgg.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(params, 14_714_688 + 1_472);
}
