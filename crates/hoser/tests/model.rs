//! Tests of `hoser::model`: parity with upstream HOSER on vectors written by
//! `scripts/hoser_reference_vectors.py` (see `tests/fixtures/parity/README.md`), weight round trips
//! and import errors.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hoser::data::{Batch, DatasetOptions, HoserData};
use hoser::model::{BatchTensors, GraphTensors, Hoser, HoserConfig, WeightError};
use serde_json::Value;

type B = Flex;

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

fn tiny_data() -> HoserData {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    HoserData::load(&dir, &DatasetOptions { num_zones: 3, ..DatasetOptions::default() }, None).expect("tiny fixture")
}

/// The batch the parity vectors were made from (`examples/parity_inputs.rs`).
fn tiny_batch(data: &HoserData) -> Batch {
    data.collator(None).unwrap().collate(data.train.samples.iter().take(4))
}

/// The script's tiny dimensions.
fn parity_config(data: &HoserData) -> HoserConfig {
    HoserConfig {
        road_id_emb_dim: 8,
        len_emb_dim: 2,
        type_emb_dim: 2,
        lon_emb_dim: 2,
        lat_emb_dim: 2,
        ..HoserConfig::upstream(data.network.num_roads(), data.features.num_road_types, data.features.num_zones)
    }
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(parity_dir().join(name)).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn forward<Bk: Backend>(model: &Hoser<Bk>, data: &HoserData, device: &Bk::Device) -> (Vec<f32>, Vec<f32>) {
    let graph = GraphTensors::new(&data.features, device);
    let input = BatchTensors::new(&tiny_batch(data), &data.features.road_to_zone, device);
    let (logits, time) = model.forward(&graph, &input);
    (values(logits), values(time))
}

fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max)
}

#[test]
fn parity_inputs_are_this_crate_s_batch() {
    let data = tiny_data();
    let batch = tiny_batch(&data);
    let json = read_json("batch.json");
    let b = &json["batch"];
    let ints = |v: &Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect() };
    assert_eq!(ints(&b["shape"]), vec![4, batch.max_trace_len as i64, batch.max_candidates as i64]);
    assert_eq!(ints(&b["trace_road_id"]), batch.trace_road_id);
    assert_eq!(ints(&b["candidate_road_id"]), batch.candidate_road_id);
    assert_eq!(ints(&b["trace_len"]), batch.trace_len);
    let same = |key: &str, ours: &[f32]| {
        let theirs = floats(&b[key]);
        assert_eq!(theirs.len(), ours.len(), "{key}");
        assert!(theirs.iter().zip(ours).all(|(&t, &o)| t as f32 == o), "{key} differs");
    };
    same("temporal_info", &batch.temporal_info);
    same("trace_distance_mat", &batch.trace_distance_mat);
    same("trace_time_interval_mat", &batch.trace_time_interval_mat);
    same("metric_dis", &batch.metric_dis);
    same("metric_angle", &batch.metric_angle);
    let f = &json["features"];
    assert_eq!(ints(&f["road_edge_index"]), data.features.road_graph.edge_index());
    assert_eq!(ints(&f["road_to_zone"]), data.features.road_to_zone.iter().map(|&z| i64::from(z)).collect::<Vec<_>>());
}

#[test]
fn forward_matches_upstream() {
    let device = Default::default();
    let data = tiny_data();
    let model: Hoser<B> =
        parity_config(&data).init(&device).load_safetensors(&parity_dir().join("weights.safetensors")).unwrap();
    let (logits, time) = forward(&model, &data, &device);
    let expected = read_json("expected.json");
    let dl = max_abs_diff(&logits, &floats(&expected["logits"]));
    let dt = max_abs_diff(&time, &floats(&expected["time"]));
    println!("max |Δ| logits {dl:e}, time {dt:e}");
    assert!(dl <= 1e-4 && dt <= 1e-4, "logits {dl}, time {dt}");
}

#[test]
fn state_dict_round_trips_upstream_keys() {
    let device = Default::default();
    let data = tiny_data();
    let path = parity_dir().join("weights.safetensors");
    let model: Hoser<B> = parity_config(&data).init(&device).load_safetensors(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ours = model.state_dict();
    // Every exported tensor is the file's, bit for bit, under the same key and PyTorch shape.
    for (key, shape, values) in &ours {
        let view = file.tensor(key).unwrap_or_else(|_| panic!("{key} not upstream"));
        assert_eq!(view.shape(), shape.as_slice(), "{key}");
        let theirs: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(&theirs, values, "{key}");
    }
    // The file's other keys are exactly upstream's buffers.
    let mut rest: Vec<String> =
        file.names().into_iter().filter(|k| !ours.iter().any(|(o, _, _)| o == k)).map(str::to_owned).collect();
    rest.sort();
    let buffers = [
        "road2zone",
        "road_network_encoder.intersection_attr",
        "road_network_encoder.road_attr_lat",
        "road_network_encoder.road_attr_len",
        "road_network_encoder.road_attr_lon",
        "road_network_encoder.road_attr_type",
        "road_network_encoder.road_edge_index",
        "road_network_encoder.zone_edge_index",
        "road_network_encoder.zone_edge_weight",
        "trajectory_encoder.transformer.h.0.attn.bias",
        "trajectory_encoder.transformer.h.1.attn.bias",
    ];
    assert_eq!(rest, buffers);
    // Saved and reloaded into a fresh model, the outputs are identical.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("w.safetensors");
    model.save_safetensors(&saved).unwrap();
    let reloaded: Hoser<B> = parity_config(&data).init(&device).load_safetensors(&saved).unwrap();
    assert_eq!(forward(&model, &data, &device), forward(&reloaded, &data, &device));
}

#[test]
fn import_errors_name_the_key_and_the_file() {
    let device = Default::default();
    let data = tiny_data();
    let model: Hoser<B> = parity_config(&data).init(&device);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, tensors: Vec<(String, Vec<usize>, Vec<f32>)>| {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
            tensors.into_iter().map(|(k, s, v)| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, s, b)| {
                (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            })
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        path
    };
    let key = "navigator.q_proj.weight";
    let missing = write("missing.safetensors", model.state_dict().into_iter().filter(|(k, _, _)| k != key).collect());
    let err = parity_config(&data).init::<B>(&device).load_safetensors(&missing).unwrap_err();
    assert!(matches!(&err, WeightError::Missing { key: k, .. } if k == key), "{err}");
    assert!(err.to_string().contains(key) && err.to_string().contains("missing.safetensors"), "{err}");
    let wrong = write(
        "wrong.safetensors",
        model
            .state_dict()
            .into_iter()
            .map(|(k, s, v)| if k == key { (k, vec![s[1], s[0]], v) } else { (k, s, v) })
            .collect(),
    );
    let err = parity_config(&data).init::<B>(&device).load_safetensors(&wrong).unwrap_err();
    assert!(matches!(&err, WeightError::Mismatch { key: k, .. } if k == key), "{err}");
    assert!(err.to_string().contains("wrong.safetensors"), "{err}");
}

#[test]
fn gradients_reach_the_graph_encoders() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    let data = tiny_data();
    let model: Hoser<A> = parity_config(&data).init(&device);
    let graph = GraphTensors::new(&data.features, &device);
    let input = BatchTensors::new(&tiny_batch(&data), &data.features.road_to_zone, &device);
    let (logits, time) = model.forward(&graph, &input);
    let grads = (logits.sum() + time.sum()).backward();
    let enc = &model.road_network_encoder;
    for (name, g) in [
        ("road_id_emb", enc.road_id_emb.weight.grad(&grads).map(values)),
        ("zone_id_emb", enc.zone_id_emb.weight.grad(&grads).map(values)),
        ("gat att", enc.road_gat.convs[0].att.grad(&grads).map(values)),
    ] {
        let g = g.unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0), "{name}: {g:?}");
    }
}
