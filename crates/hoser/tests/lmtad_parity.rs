//! Numerical parity with upstream LM-TAD (PyTorch): the weights and outputs in
//! `fixtures/lmtad_parity/` come from upstream's `LMTAD` model, converted with
//! `scripts/pth_to_safetensors.py` (see the fixture's README for the command). The model here
//! loads them by state-dict key and must give the same logits, loss, log-perplexities and
//! last-position distributions within 1e-4.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use hoser::lmtad::model::{LmTad, target_mask};
use hoser::lmtad::weights::UpstreamModelConfig;
use serde_json::Value;

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lmtad_parity").join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn model() -> LmTad<B> {
    let text = std::fs::read_to_string(fixture("model_config.json")).unwrap();
    let config: UpstreamModelConfig = serde_json::from_str(&text).unwrap();
    config.model().unwrap().init::<B>(&Default::default()).load_safetensors(&fixture("weights.safetensors")).unwrap()
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

fn tokens(v: &Value) -> (Tensor<B, 2, Int>, Vec<Vec<u32>>) {
    let rows: Vec<Vec<u32>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect();
    let t = rows[0].len();
    let ids: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    (Tensor::from_data(TensorData::new(ids, [rows.len(), t]), &Default::default()), rows)
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < tol, "{name}: max |diff| {worst:e} >= {tol:e}");
}

#[test]
fn logits_match_upstream() {
    let e = expected();
    let (ids, _) = tokens(&e["tokens"]);
    assert_close("logits", &values(model().forward(ids)), &flat(&e["logits"]), 1e-4);
}

#[test]
fn loss_log_perplexity_and_surprisal_match_upstream() {
    let e = expected();
    let m = model();
    let pad = e["pad"].as_u64().unwrap() as u32;
    let (ids, rows) = tokens(&e["tokens"]);
    let loss = values(m.loss(ids.clone(), pad))[0];
    assert!((loss - e["loss"].as_f64().unwrap()).abs() < 1e-4, "loss {loss} vs {}", e["loss"]);
    let logp = values(m.target_log_probs(ids.clone()));
    let mask = values(target_mask(ids, pad));
    let t = rows[0].len() - 1;
    for (r, want) in e["log_perplexity"].as_array().unwrap().iter().enumerate() {
        let s: Vec<f64> = (0..t).filter(|&k| mask[r * t + k] > 0.0).map(|k| -logp[r * t + k]).collect();
        assert_close(&format!("surprisal row {r}"), &s, &flat(&e["surprisal"][r]), 1e-4);
        let lp = s.iter().sum::<f64>() / s.len() as f64;
        assert!((lp - want.as_f64().unwrap()).abs() < 1e-4, "row {r}: {lp} vs {want}");
    }
}

/// The batched API on right-padded histories against upstream run on each history alone.
#[test]
fn last_position_distributions_match_upstream_alone() {
    let e = expected();
    let m = model();
    let pad = e["pad"].as_u64().unwrap() as u32;
    let lengths: Vec<usize> =
        e["history_lengths"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let (_, rows) = tokens(&e["histories"]);
    let histories: Vec<Vec<u32>> = rows.iter().zip(&lengths).map(|(r, &l)| r[..l].to_vec()).collect();
    let got = values(m.next_token_log_probs(&histories, pad, &Default::default()).unwrap());
    assert_close("last_log_probs", &got, &flat(&e["last_log_probs"]), 1e-4);
    // And the same through `last_log_probs` on upstream's own padded batch.
    let (ids, _) = tokens(&e["histories"]);
    assert_close("last_log_probs (padded)", &values(m.last_log_probs(ids, &lengths)), &got, 1e-5);
    // The full forward's log-softmax at each last real position agrees too.
    let (ids, _) = tokens(&e["histories"]);
    let full = values(log_softmax(m.forward(ids), 2));
    let (t, v) = (rows[0].len(), 29);
    for (r, &l) in lengths.iter().enumerate() {
        assert_close("full", &full[(r * t + l - 1) * v..(r * t + l) * v], &got[r * v..(r + 1) * v], 1e-5);
    }
}

#[test]
fn parameter_count_matches_upstream() {
    let e = expected();
    let m = model();
    assert_eq!(m.num_params() as u64, e["num_params"].as_u64().unwrap());
    // Upstream's get_num_params() leaves out the position table.
    let positions = 16 * 16;
    assert_eq!((m.num_params() - positions) as u64, e["num_params_upstream_get_num_params"].as_u64().unwrap());
}
