//! Tests of `losses::grounding` (stage-3 SAR-grounding terms and metrics). Expected values come
//! from `tests/fixtures/grounding_vectors.json`, written by `scripts/grounding_loss_vectors.py`
//! (an independent numpy implementation of the documented formulas, float64), or are derived by
//! hand. Gradients are checked for finiteness, for being non-zero, and against central finite
//! differences at a few elements.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use losses::grounding::{
    SarConsistency, cycle_term, edge_levels, edge_weights, gac_score, gac_score_with_lpips, grounding_confidence,
    identity_term, mean_confidence, minmax_per_sample, psnr_per_image, quantile_per_sample, sar_edge_score_of_levels,
    sar_edge_score_parts, sar_edge_score_per_sample, sar_edge_term, sar_texture_term, spectral_term,
};
use serde_json::Value;

type F = Flex;
type AD = Autodiff<Flex>;

// ---------------------------------------------------------------------------------------------
// helpers

fn t4<Bk: Backend>(data: &[f64], shape: [usize; 4], dtype: DType) -> Tensor<Bk, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), (&Default::default(), dtype))
}

fn vals<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f64 {
    let v = vals(t);
    assert_eq!(v.len(), 1, "expected a one-element tensor");
    v[0]
}

/// `|got − want| ≤ abs + rel·|want|`.
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: got {g}, want {w} (rel {rel}, abs {abs})");
    }
}

/// The committed numpy vectors.
struct Vectors {
    json: Value,
    opt_shape: [usize; 4],
    sar_shape: [usize; 4],
    valid_shape: [usize; 4],
}

impl Vectors {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grounding_vectors.json");
        let text = std::fs::read_to_string(path).expect("fixture exists");
        let json: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let shape = |k: &str| -> [usize; 4] {
            let v: Vec<usize> =
                json["shapes"][k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
            [v[0], v[1], v[2], v[3]]
        };
        let (opt_shape, sar_shape, valid_shape) = (shape("optical"), shape("sar"), shape("valid"));
        Self { json, opt_shape, sar_shape, valid_shape }
    }

    fn f(&self, key: &str) -> f64 {
        self.json[key].as_f64().unwrap_or_else(|| panic!("fixture key {key}"))
    }

    fn list(&self, key: &str) -> Vec<f64> {
        self.json[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    fn input(&self, key: &str) -> Vec<f64> {
        self.json["inputs"][key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    fn opt<Bk: Backend>(&self, key: &str, dtype: DType) -> Tensor<Bk, 4> {
        t4(&self.input(key), self.opt_shape, dtype)
    }

    fn sar<Bk: Backend>(&self, dtype: DType) -> Tensor<Bk, 4> {
        t4(&self.input("sar"), self.sar_shape, dtype)
    }

    fn valid<Bk: Backend>(&self, dtype: DType) -> Tensor<Bk, 4> {
        t4(&self.input("valid"), self.valid_shape, dtype)
    }
}

/// Sample `b` of a tensor, keeping the batch dimension.
fn sample<Bk: Backend>(x: Tensor<Bk, 4>, b: usize) -> Tensor<Bk, 4> {
    x.narrow(0, b, 1)
}

/// Deterministic uniform numbers in `[lo, hi)`.
fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

const EDGE_CASES: [(&str, bool, f64); 4] = [
    ("adaptive_true_urban_1", true, 1.0),
    ("adaptive_true_urban_3", true, 3.0),
    ("adaptive_false_urban_1", false, 1.0),
    ("adaptive_false_urban_3", false, 3.0),
];

// ---------------------------------------------------------------------------------------------
// against the numpy vectors

/// Every term in f64 against the numpy float64 values (agreement to rounding).
#[test]
fn every_term_matches_the_numpy_vectors_in_f64() {
    let v = Vectors::load();
    let d = DType::F64;
    let (opt, v2, truth, sar, valid) =
        (v.opt::<F>("opt_v3", d), v.opt::<F>("opt_v2", d), v.opt::<F>("truth", d), v.sar::<F>(d), v.valid::<F>(d));
    let (rel, abs) = (1e-9, 1e-12);

    for (key, adaptive, urban) in EDGE_CASES {
        let got = scalar(sar_edge_term(opt.clone(), sar.clone(), adaptive, urban));
        assert_close(&format!("edge {key}"), &[got], &[v.json["edge"][key].as_f64().unwrap()], rel, abs);
    }
    assert_close("texture", &[scalar(sar_texture_term(opt.clone(), sar.clone()))], &[v.f("texture")], rel, abs);

    let terms = SarConsistency::default().terms(opt.clone(), sar.clone());
    assert_close("sar_consistency default", &[scalar(terms.total)], &[v.f("sar_consistency_default")], rel, abs);
    assert_close(
        "sar_consistency edge",
        &[scalar(terms.edge)],
        &[v.json["edge"]["adaptive_true_urban_1"].as_f64().unwrap()],
        rel,
        abs,
    );
    assert_close("sar_consistency texture", &[scalar(terms.texture)], &[v.f("texture")], rel, abs);
    let custom = SarConsistency { edge_weight: 0.7, texture_weight: 2.0, adaptive_weighting: false, urban_weight: 3.0 };
    assert!(custom.validate().is_empty());
    let got = scalar(custom.terms(opt.clone(), sar.clone()).total);
    assert_close("sar_consistency custom", &[got], &[v.f("sar_consistency_custom")], rel, abs);

    assert_close(
        "identity",
        &[scalar(identity_term(opt.clone(), v2.clone(), sar.clone()))],
        &[v.f("identity")],
        rel,
        abs,
    );
    assert_close("cycle", &[scalar(cycle_term(opt.clone(), v2.clone()))], &[v.f("cycle")], rel, abs);
    let got = scalar(spectral_term(opt.clone(), truth.clone(), valid.clone()));
    assert_close("spectral", &[got], &[v.f("spectral")], rel, abs);
    assert_close("mean_confidence", &[scalar(mean_confidence(sar.clone()))], &[v.f("mean_confidence")], rel, abs);

    let parts = sar_edge_score_parts(opt.clone(), sar.clone());
    assert_close("sar_edge cosine", &vals(parts.cosine), &v.list("sar_edge_cosine"), rel, abs);
    assert_close("sar_edge f1", &vals(parts.f1), &v.list("sar_edge_f1"), rel, abs);
    assert_close("sar_edge score", &vals(parts.score), &v.list("sar_edge_score"), rel, abs);
    let per_sample = vals(sar_edge_score_per_sample(opt.clone(), sar));
    assert_close("sar_edge_score_per_sample", &per_sample, &v.list("sar_edge_score"), rel, abs);

    let psnr_v2 = psnr_per_image(v2, truth.clone(), valid.clone(), 1.0);
    assert_close("psnr v2", &psnr_v2, &v.list("psnr_v2"), rel, abs);
    let psnr_v3 = psnr_per_image(opt, truth, valid, 1.0);
    assert_close("psnr v3", &psnr_v3, &v.list("psnr_v3"), rel, abs);
}

/// The continuous terms in f32 (the training dtype) against the same vectors, to f32 accuracy.
/// (The thresholded SARedge score is left out: a pixel on a threshold may flip in f32.)
#[test]
fn continuous_terms_match_the_numpy_vectors_in_f32() {
    let v = Vectors::load();
    let d = DType::F32;
    let (opt, v2, truth, sar, valid) =
        (v.opt::<F>("opt_v3", d), v.opt::<F>("opt_v2", d), v.opt::<F>("truth", d), v.sar::<F>(d), v.valid::<F>(d));
    let (rel, abs) = (1e-4, 1e-5);
    for (key, adaptive, urban) in EDGE_CASES {
        let got = scalar(sar_edge_term(opt.clone(), sar.clone(), adaptive, urban));
        assert_close(&format!("f32 edge {key}"), &[got], &[v.json["edge"][key].as_f64().unwrap()], rel, abs);
    }
    assert_close("f32 texture", &[scalar(sar_texture_term(opt.clone(), sar.clone()))], &[v.f("texture")], rel, abs);
    assert_close(
        "f32 identity",
        &[scalar(identity_term(opt.clone(), v2.clone(), sar.clone()))],
        &[v.f("identity")],
        rel,
        abs,
    );
    assert_close("f32 cycle", &[scalar(cycle_term(opt.clone(), v2))], &[v.f("cycle")], rel, abs);
    assert_close("f32 spectral", &[scalar(spectral_term(opt, truth, valid))], &[v.f("spectral")], rel, abs);
    assert_close("f32 mean_confidence", &[scalar(mean_confidence(sar))], &[v.f("mean_confidence")], rel, abs);
}

#[test]
fn gac_scores_match_the_numpy_vectors_and_hand_values() {
    let v = Vectors::load();
    for case in v.json["gac"].as_array().unwrap() {
        let g = |k: &str| case[k].as_f64().unwrap();
        let (p, s, e, l) = (g("psnr"), g("ssim"), g("sar_edge"), g("lpips"));
        assert_close("gac", &[gac_score(p, s, e)], &[g("gac")], 1e-12, 1e-15);
        assert_close("gac_with_lpips", &[gac_score_with_lpips(p, s, e, l)], &[g("gac_with_lpips")], 1e-12, 1e-15);
    }
    // By hand: PSNR 30 dB → 0.5, SSIM 0.6 → 0.8, SARedge 0.5.
    assert_close("gac 30/0.6/0.5", &[gac_score(30.0, 0.6, 0.5)], &[0.33 * 0.5 + 0.33 * 0.8 + 0.34 * 0.5], 1e-15, 0.0);
    // LPIPS 0.2 → 0.8.
    let want = 0.25 * (0.5 + 0.8 + 0.5 + 0.8);
    assert_close("gac_with_lpips", &[gac_score_with_lpips(30.0, 0.6, 0.5, 0.2)], &[want], 1e-15, 0.0);
    // A perfect image (PSNR +inf, SSIM 1, SARedge 1) scores 1 (up to the weights' sum).
    assert_close("gac perfect", &[gac_score(f64::INFINITY, 1.0, 1.0)], &[1.0], 1e-15, 0.0);
    assert!(gac_score(f64::NAN, 1.0, 1.0).is_nan(), "a NaN PSNR must not read as a score");
}

// ---------------------------------------------------------------------------------------------
// hand-derived cases

/// Optical channels that are positive affine copies of one SAR pattern `P` (and SAR channels
/// that are too) have the same structure: the texture term is 0 and the edge term is 0 up to the
/// Sobel ε floor. With the reference's zero padding both would be clearly non-zero: the fake
/// border edges and border variances scale with each image's offset (0.1..0.25 for the optical,
/// −15..−20 dB for the SAR), not with its pattern (B19).
#[test]
fn identical_optical_and_sar_structure_gives_zero_texture_and_edge() {
    let (h, w) = (10, 9);
    let p = uniform(h * w, 7, -3.0, 3.0);
    let mut opt = Vec::new();
    for (a, b) in [(0.01, 0.1), (0.02, 0.15), (0.03, 0.2), (0.05, 0.25)] {
        opt.extend(p.iter().map(|x| a * x + b));
    }
    let mut sar = Vec::new();
    for (a, b) in [(2.0, -15.0), (3.0, -20.0)] {
        sar.extend(p.iter().map(|x| a * x + b));
    }
    let opt = t4::<F>(&opt, [1, 4, h, w], DType::F64);
    let sar = t4::<F>(&sar, [1, 2, h, w], DType::F64);
    let texture = scalar(sar_texture_term(opt.clone(), sar.clone()));
    assert!(texture.abs() < 1e-8, "texture of identical structure: {texture}");
    for (key, adaptive, urban) in EDGE_CASES {
        let edge = scalar(sar_edge_term(opt.clone(), sar.clone(), adaptive, urban));
        assert!(edge.abs() < 1e-5, "edge {key} of identical structure: {edge}");
    }
    // A different pattern gives clearly non-zero terms (the test is not vacuous).
    let other = t4::<F>(&uniform(2 * h * w, 8, -25.0, -5.0), [1, 2, h, w], DType::F64);
    assert!(scalar(sar_texture_term(opt.clone(), other.clone())) > 1e-2);
    assert!(scalar(sar_edge_term(opt, other, true, 1.0)) > 1e-2);
}

#[test]
fn identity_and_cycle_are_zero_when_v3_equals_v2() {
    let v = Vectors::load();
    let d = DType::F64;
    let (v2, sar) = (v.opt::<F>("opt_v2", d), v.sar::<F>(d));
    assert_eq!(scalar(identity_term(v2.clone(), v2.clone(), sar)), 0.0);
    assert_eq!(scalar(cycle_term(v2.clone(), v2)), 0.0);
}

/// By hand: v3 − v2 = 0.2 everywhere and SAR whose channel mean is min–max 0 on one pixel and 1
/// on the others; identity = mean(0.2·(1 − conf)), cycle = 0.04.
#[test]
fn identity_and_cycle_match_hand_values() {
    let (h, w) = (2, 2);
    let v2 = t4::<F>(&[0.1; 16], [1, 4, h, w], DType::F64);
    let v3 = t4::<F>(&[0.3; 16], [1, 4, h, w], DType::F64);
    // mean_c = [-20, -10, -10, -10] dB → bsn = [0, 1, 1, 1] (up to ε).
    let sar = t4::<F>(&[-22.0, -12.0, -12.0, -12.0, -18.0, -8.0, -8.0, -8.0], [1, 2, h, w], DType::F64);
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let bsn1 = 10.0 / (10.0 + 1e-8);
    let conf = [sig(10.0 * (0.0 - 0.1)), sig(10.0 * (bsn1 - 0.1)), sig(10.0 * (bsn1 - 0.1)), sig(10.0 * (bsn1 - 0.1))];
    assert_close("confidence", &vals(grounding_confidence(sar.clone())), &conf, 1e-12, 1e-15);
    let want = conf.iter().map(|c| 0.2 * (1.0 - c)).sum::<f64>() / 4.0;
    assert_close("identity", &[scalar(identity_term(v3.clone(), v2.clone(), sar))], &[want], 1e-12, 1e-15);
    assert_close("cycle", &[scalar(cycle_term(v3, v2))], &[0.04], 1e-12, 1e-15);
}

/// SAR in other units (`3·dB + 7`) leaves every SAR-dependent term unchanged (up to the ε
/// constants): edge (all weightings), texture, confidence, identity, SARedge.
#[test]
fn sar_offset_and_scale_leave_every_sar_term_unchanged() {
    let v = Vectors::load();
    let d = DType::F64;
    let (opt, v2, sar) = (v.opt::<F>("opt_v3", d), v.opt::<F>("opt_v2", d), v.sar::<F>(d));
    let moved = sar.clone().mul_scalar(3.0).add_scalar(7.0);
    let (rel, abs) = (1e-6, 1e-9);
    for (key, adaptive, urban) in EDGE_CASES {
        let a = scalar(sar_edge_term(opt.clone(), sar.clone(), adaptive, urban));
        let b = scalar(sar_edge_term(opt.clone(), moved.clone(), adaptive, urban));
        assert_close(&format!("edge {key}"), &[b], &[a], rel, abs);
    }
    let a = vals(edge_weights(sar.clone(), true, 3.0));
    assert_close("edge weights", &vals(edge_weights(moved.clone(), true, 3.0)), &a, rel, abs);
    let a = scalar(sar_texture_term(opt.clone(), sar.clone()));
    assert_close("texture", &[scalar(sar_texture_term(opt.clone(), moved.clone()))], &[a], rel, abs);
    let a = vals(grounding_confidence(sar.clone()));
    assert_close("confidence", &vals(grounding_confidence(moved.clone())), &a, rel, abs);
    let a = scalar(identity_term(opt.clone(), v2.clone(), sar.clone()));
    assert_close("identity", &[scalar(identity_term(opt.clone(), v2, moved.clone()))], &[a], rel, abs);
    let a = vals(sar_edge_score_per_sample(opt.clone(), sar));
    assert_close("sar_edge", &vals(sar_edge_score_per_sample(opt, moved)), &a, rel, abs);
}

/// B19: a sample's contribution does not depend on the other samples. Batch [s, s'] where s' is
/// s with the optical image doubled and the SAR in other units: every batch term equals the
/// term of [s] alone (batch-global normalisation would change it), and per-sample metrics of a
/// batch equal those of each sample alone.
#[test]
fn a_sample_does_not_depend_on_the_rest_of_the_batch() {
    let v = Vectors::load();
    let d = DType::F64;
    let (opt, v2, truth, sar, valid) =
        (v.opt::<F>("opt_v3", d), v.opt::<F>("opt_v2", d), v.opt::<F>("truth", d), v.sar::<F>(d), v.valid::<F>(d));
    let (o0, s0, w0) = (sample(opt.clone(), 0), sample(sar.clone(), 0), sample(v2.clone(), 0));
    let o_pair = Tensor::cat(vec![o0.clone(), o0.clone().mul_scalar(2.0)], 0);
    let s_pair = Tensor::cat(vec![s0.clone(), s0.clone().mul_scalar(3.0).add_scalar(7.0)], 0);
    let w_pair = Tensor::cat(vec![w0.clone(), w0.clone()], 0);
    let (rel, abs) = (1e-6, 1e-9);
    for (key, adaptive, urban) in EDGE_CASES {
        let alone = scalar(sar_edge_term(o0.clone(), s0.clone(), adaptive, urban));
        let pair = scalar(sar_edge_term(o_pair.clone(), s_pair.clone(), adaptive, urban));
        assert_close(&format!("edge {key}"), &[pair], &[alone], rel, abs);
    }
    // The texture maps are divided by `mean + 1e-8`; the optical variances average about 5e-3,
    // so doubling the image moves the value by ~2e-6 relative through that ε. (A batch-global
    // mean, as in the reference, gives 0.510 here instead of 0.358.)
    let alone = scalar(sar_texture_term(o0.clone(), s0.clone()));
    assert_close("texture", &[scalar(sar_texture_term(o_pair.clone(), s_pair.clone()))], &[alone], 1e-5, abs);
    let alone = scalar(mean_confidence(s0.clone()));
    assert_close("mean_confidence", &[scalar(mean_confidence(s_pair.clone()))], &[alone], rel, abs);
    let alone = scalar(identity_term(o0.clone(), w0, s0));
    let pair = Tensor::cat(vec![o0.clone(), o0], 0);
    assert_close("identity", &[scalar(identity_term(pair, w_pair, s_pair))], &[alone], rel, abs);

    // Per-sample metrics of the fixture batch equal each sample's value alone.
    let batch = vals(sar_edge_score_per_sample(opt.clone(), sar.clone()));
    let psnr = psnr_per_image(opt.clone(), truth.clone(), valid.clone(), 1.0);
    for b in 0..2 {
        let alone = vals(sar_edge_score_per_sample(sample(opt.clone(), b), sample(sar.clone(), b)));
        assert_close(&format!("sar_edge[{b}]"), &[batch[b]], &alone, 1e-12, 0.0);
        let alone = psnr_per_image(sample(opt.clone(), b), sample(truth.clone(), b), sample(valid.clone(), b), 1.0);
        assert_close(&format!("psnr[{b}]"), &[psnr[b]], &alone, 1e-12, 0.0);
    }
}

#[test]
fn gradients_wrt_the_optical_image_are_finite_and_non_zero() {
    let v = Vectors::load();
    let d = DType::F64;
    let (sar, v2, truth, valid) = (v.sar::<AD>(d), v.opt::<AD>("opt_v2", d), v.opt::<AD>("truth", d), v.valid::<AD>(d));
    type Term = Box<dyn Fn(Tensor<AD, 4>) -> Tensor<AD, 1>>;
    let terms: Vec<(&str, Term)> = vec![
        ("edge adaptive urban 3", {
            let s = sar.clone();
            Box::new(move |o| sar_edge_term(o, s.clone(), true, 3.0))
        }),
        ("edge plain", {
            let s = sar.clone();
            Box::new(move |o| sar_edge_term(o, s.clone(), false, 1.0))
        }),
        ("texture", {
            let s = sar.clone();
            Box::new(move |o| sar_texture_term(o, s.clone()))
        }),
        ("sar_consistency", {
            let s = sar.clone();
            Box::new(move |o| SarConsistency::default().terms(o, s.clone()).total)
        }),
        ("identity", {
            let (s, w) = (sar.clone(), v2.clone());
            Box::new(move |o| identity_term(o, w.clone(), s.clone()))
        }),
        ("cycle", {
            let w = v2.clone();
            Box::new(move |o| cycle_term(o, w.clone()))
        }),
        ("spectral", Box::new(move |o| spectral_term(o, truth.clone(), valid.clone()))),
    ];
    let x = v.input("opt_v3");
    for (what, f) in &terms {
        let o = t4::<AD>(&x, v.opt_shape, d).require_grad();
        let grads = f(o.clone()).backward();
        let g = vals(o.grad(&grads).expect("the optical image gets a gradient"));
        assert!(g.iter().all(|x| x.is_finite()), "{what}: non-finite gradient");
        let largest = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(largest > 1e-8, "{what}: the gradient is zero everywhere ({largest})");
        // Central finite differences at a few elements (the square's corner, a stripe pixel, noise).
        let h = 1e-6;
        for k in [0usize, 3 * 12 + 4, 5 * 12 + 10, 144 + 7 * 12 + 5, 576 + 2 * 144 + 100] {
            let (mut plus, mut minus) = (x.clone(), x.clone());
            plus[k] += h;
            minus[k] -= h;
            let fp = scalar(f(t4::<AD>(&plus, v.opt_shape, d)));
            let fm = scalar(f(t4::<AD>(&minus, v.opt_shape, d)));
            let numeric = (fp - fm) / (2.0 * h);
            assert!(
                (numeric - g[k]).abs() <= 1e-7 + 1e-4 * numeric.abs(),
                "{what}: d/dx[{k}] autodiff {} vs finite difference {numeric}",
                g[k]
            );
        }
    }
}

#[test]
fn edge_weights_are_detached_and_follow_the_formula() {
    // One sample, 1×1×5 values of mean_c SAR: the urban boost by hand.
    let sar =
        t4::<F>(&[-20.0, -18.0, -16.0, -14.0, -10.0, -20.0, -18.0, -16.0, -14.0, -10.0], [1, 2, 1, 5], DType::F64);
    let bs = [-20.0, -18.0, -16.0, -14.0, -10.0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mean = bs.iter().sum::<f64>() / 5.0;
    let sd = (bs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 5.0 + 1e-8).sqrt();
    let bsn: Vec<f64> = bs.iter().map(|x| (x + 20.0) / (10.0 + 1e-8)).collect();
    // numpy linear quantile of 5 sorted values at 0.7: position 2.8 → v2 + 0.8·(v3 − v2).
    let q = bsn[2] + 0.8 * (bsn[3] - bsn[2]);
    let want: Vec<f64> =
        bs.iter().zip(&bsn).map(|(x, n)| sig((x - mean) / sd) * (1.0 + 2.0 * sig(10.0 * (n - q)))).collect();
    assert_close("urban weights", &vals(edge_weights(sar.clone(), true, 3.0)), &want, 1e-12, 1e-15);
    assert_close("plain weights", &vals(edge_weights(sar.clone(), false, 1.0)), &[1.0; 5], 0.0, 0.0);
    // urban_weight ≤ 1 is "no boost", never a negative weight.
    assert_close("urban 0.5", &vals(edge_weights(sar, false, 0.5)), &[1.0; 5], 0.0, 0.0);

    // No gradient reaches the SAR through the weights: with equal optical and SAR maps the only
    // path into `sar` would be the weights.
    let sar = t4::<AD>(&uniform(2 * 36, 3, -25.0, -5.0), [1, 2, 6, 6], DType::F64).require_grad();
    let grads = edge_weights(sar.clone(), true, 3.0).sum().backward();
    assert!(sar.grad(&grads).is_none_or(|g| vals(g).iter().all(|x| *x == 0.0)), "edge weights must be detached");
}

#[test]
fn quantile_and_minmax_are_per_sample_and_match_numpy_semantics() {
    // Two samples of 5 values (unsorted); q = 0.7 → position 2.8; q = 0 → min, q = 1 → max.
    let x = t4::<F>(&[5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 50.0, 30.0, 20.0, 40.0], [2, 1, 1, 5], DType::F64);
    assert_close("q0.7", &vals(quantile_per_sample(x.clone(), 0.7)), &[3.8, 38.0], 1e-12, 0.0);
    assert_close("q0", &vals(quantile_per_sample(x.clone(), 0.0)), &[1.0, 10.0], 0.0, 0.0);
    assert_close("q1", &vals(quantile_per_sample(x.clone(), 1.0)), &[5.0, 50.0], 0.0, 0.0);
    assert_close("q clamped", &vals(quantile_per_sample(x.clone(), 1.5)), &[5.0, 50.0], 0.0, 0.0);
    let mm = vals(minmax_per_sample(x));
    let e = 1e-8;
    let want = [
        4.0 / (4.0 + e),
        0.0,
        3.0 / (4.0 + e),
        1.0 / (4.0 + e),
        2.0 / (4.0 + e),
        0.0,
        40.0 / (40.0 + e),
        20.0 / (40.0 + e),
        10.0 / (40.0 + e),
        30.0 / (40.0 + e),
    ];
    assert_close("minmax", &mm, &want, 1e-12, 0.0);
}

#[test]
fn edge_levels_and_the_empty_map_conventions() {
    let g = t4::<F>(&[0.0, 0.05, 0.1, 0.2, 0.3, 0.31, 1.0, 0.0999], [1, 1, 2, 4], DType::F64);
    assert_close("levels", &vals(edge_levels(g)), &[0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 0.0], 0.0, 0.0);

    let zeros = t4::<F>(&[0.0; 8], [1, 1, 2, 4], DType::F64);
    let some = t4::<F>(&[0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0], [1, 1, 2, 4], DType::F64);
    let weak_only = t4::<F>(&[0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0], [1, 1, 2, 4], DType::F64);
    let both = sar_edge_score_of_levels(zeros.clone(), zeros.clone());
    assert_eq!((vals(both.cosine), vals(both.f1), vals(both.score)), (vec![1.0], vec![1.0], vec![1.0]));
    let one = sar_edge_score_of_levels(some.clone(), zeros.clone());
    assert_eq!((vals(one.cosine), vals(one.f1), vals(one.score)), (vec![0.0], vec![0.0], vec![0.0]));
    let one = sar_edge_score_of_levels(zeros, some.clone());
    assert_eq!(vals(one.score), vec![0.0]);
    let same = sar_edge_score_of_levels(some.clone(), some.clone());
    assert_close("identical maps", &vals(same.score), &[1.0], 1e-8, 0.0);
    // Weak edges only: the cosine sees them, the strong-edge F1 does not → F1 of two empty masks
    // is 1 only if both are empty; here one map has strong edges, so F1 = 0, cosine = ⟨·⟩/‖·‖‖·‖.
    let mixed = sar_edge_score_of_levels(some, weak_only);
    let cos = 0.75 / ((1.0f64 + 0.25 + 1.0).sqrt() * (0.25f64 + 0.25).sqrt());
    assert_close("mixed cosine", &vals(mixed.cosine), &[cos], 1e-7, 0.0);
    assert_close("mixed f1", &vals(mixed.f1), &[0.0], 0.0, 0.0);
}

#[test]
fn spectral_term_with_an_empty_mask_is_zero_with_zero_gradient() {
    let v = Vectors::load();
    let d = DType::F64;
    let opt = v.opt::<AD>("opt_v3", d).require_grad();
    let truth = v.opt::<AD>("truth", d);
    let empty = t4::<AD>(&vec![0.0; 2 * 144], v.valid_shape, d);
    let loss = spectral_term(opt.clone(), truth, empty);
    let grads = loss.clone().backward();
    assert_eq!(scalar(loss), 0.0);
    let g = vals(opt.grad(&grads).expect("gradient"));
    assert!(g.iter().all(|x| *x == 0.0), "empty mask: zero gradient");
}

#[test]
fn psnr_is_infinite_for_a_perfect_image_and_nan_without_valid_pixels() {
    let v = Vectors::load();
    let d = DType::F64;
    let (truth, valid) = (v.opt::<F>("truth", d), v.valid::<F>(d));
    let p = psnr_per_image(truth.clone(), truth.clone(), valid, 1.0);
    assert!(p.iter().all(|x| *x == f64::INFINITY), "{p:?}");
    let mut mask = vec![1.0; 2 * 144];
    mask[..144].fill(0.0);
    let off =
        t4::<F>(&truth.clone().add_scalar(0.1).into_data().convert::<f64>().into_vec::<f64>().unwrap(), v.opt_shape, d);
    let p = psnr_per_image(off.clone(), truth.clone(), t4::<F>(&mask, v.valid_shape, d), 1.0);
    assert!(p[0].is_nan(), "no valid pixel → NaN, got {}", p[0]);
    assert_close("psnr of a 0.1 offset", &[p[1]], &[20.0], 1e-9, 0.0);
    // data_range 2 adds 20·log10(2) dB.
    let p2 = psnr_per_image(off.clone(), truth.clone(), t4::<F>(&mask, v.valid_shape, d), 2.0);
    assert_close("psnr range 2", &[p2[1]], &[20.0 + 20.0 * 2f64.log10()], 1e-9, 0.0);
    assert!(psnr_per_image(off, truth, t4::<F>(&mask, v.valid_shape, d), 0.0)[1].is_nan(), "data_range 0 → NaN");
}

// ---------------------------------------------------------------------------------------------
// config

#[test]
fn sar_consistency_config_defaults_and_unknown_keys() {
    let c: SarConsistency = serde_json::from_str("{}").unwrap();
    assert_eq!(c, SarConsistency::default());
    assert_eq!(
        (c.edge_weight, c.texture_weight, c.adaptive_weighting, c.urban_weight),
        (1.0, 0.5, true, 1.0),
        "the reference's defaults"
    );
    assert!(c.validate().is_empty());
    let c: SarConsistency = serde_json::from_str(r#"{"urban_weight": 2.5}"#).unwrap();
    assert_eq!(c.urban_weight, 2.5);
    assert_eq!(c.edge_weight, 1.0);
    let err = serde_json::from_str::<SarConsistency>(r#"{"edge_wieght": 2.0}"#).unwrap_err().to_string();
    assert!(err.contains("edge_wieght"), "names the unknown key: {err}");
}

#[test]
fn sar_consistency_validate_names_every_bad_key_and_value() {
    let c = SarConsistency { edge_weight: -1.0, texture_weight: f64::NAN, adaptive_weighting: true, urban_weight: 0.5 };
    let problems = c.validate();
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["edge_weight", "texture_weight", "urban_weight"], "{problems:?}");
    assert!(problems[0].1.contains("edge_weight = -1"), "{}", problems[0].1);
    assert!(problems[1].1.contains("texture_weight = NaN"), "{}", problems[1].1);
    assert!(problems[2].1.contains("urban_weight = 0.5") && problems[2].1.contains(">= 1"), "{}", problems[2].1);
    let inf = SarConsistency { edge_weight: f64::INFINITY, ..SarConsistency::default() };
    assert_eq!(inf.validate().len(), 1);
    let zero = SarConsistency { edge_weight: 0.0, texture_weight: 0.0, ..SarConsistency::default() };
    assert!(zero.validate().is_empty(), "zero weights switch a term off");
}

/// B20: for dB SAR (about −15) the reference's `sigmoid(backscatter)` gives weights of about
/// 3e-7; the standardised weights stay in a usable range around 0.5, and the urban boost
/// reaches up to `urban_weight` on the brightest pixels.
#[test]
fn db_sar_gives_usable_edge_weights() {
    let v = Vectors::load();
    let sar = v.sar::<F>(DType::F64);
    let reference_weight = 1.0 / (1.0 + 15f64.exp());
    assert!(reference_weight < 1e-6);
    let w = vals(edge_weights(sar.clone(), true, 1.0));
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let min = w.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!((0.3..0.7).contains(&mean), "mean weight {mean}");
    assert!(min > 1e-3, "smallest weight {min}");
    let boosted = vals(edge_weights(sar, false, 3.0));
    let max = boosted.iter().cloned().fold(0.0, f64::max);
    assert!(boosted.iter().all(|x| (1.0..=3.0).contains(x)), "boosted weights in [1, 3]");
    assert!(max > 2.9, "the brightest pixels get close to the full boost: {max}");
}
