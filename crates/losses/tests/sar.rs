//! Tests of `losses::sar`. Every expected value comes from an independent computation: numbers
//! written out by hand, or plain `f64` loops in this file that re-implement the documented
//! formulas without burn. Gradients are checked against central finite differences in `f64`.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use losses::sar::{
    self, Padding, colour_ratio_loss, cycle_loss, evi, evi_rmse, identity_loss, local_variance, luminance, ndvi,
    ndvi_rmse, normalize_per_sample_max, sam, sar_agreement, sar_agreement_per_sample, sar_confidence,
    sar_edge_agreement, sar_edge_agreement_per_sample, sar_structure_loss, sobel, sobel_magnitude, spectral_index_loss,
    standardize_per_sample, texture_loss, weighted_l1,
};

type F = Flex;
type AD = Autodiff<Flex>;

// ---------------------------------------------------------------------------------------------
// helpers

/// An `f64` tensor (Flex picks the element type at run time from the dtype).
fn t4<Bk: Backend>(data: &[f64], shape: [usize; 4]) -> Tensor<Bk, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), (&Default::default(), DType::F64))
}

fn vals<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f64 {
    let v = vals(t);
    assert_eq!(v.len(), 1, "expected a one-element tensor");
    v[0]
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w} (tol {tol})");
    }
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

/// Row-major `[B, C, H, W]` index.
fn idx(shape: [usize; 4], b: usize, c: usize, i: usize, j: usize) -> usize {
    ((b * shape[1] + c) * shape[2] + i) * shape[3] + j
}

/// Plane `(b, c)` of a `[B, C, H, W]` buffer.
fn plane(data: &[f64], shape: [usize; 4], b: usize, c: usize) -> Vec<f64> {
    let n = shape[2] * shape[3];
    let start = (b * shape[1] + c) * n;
    data[start..start + n].to_vec()
}

/// Central finite differences (step 1e-6) of `f` at every element of `x`, against burn's autodiff:
/// `|numeric − autodiff| ≤ 1e-9 + 1e-6·|numeric|` (f64 throughout).
fn grad_check(what: &str, x: &[f64], shape: [usize; 4], f: impl Fn(Tensor<AD, 4>) -> Tensor<AD, 1>) {
    let xt = t4::<AD>(x, shape).require_grad();
    let grads = f(xt.clone()).backward();
    let analytic = vals(xt.grad(&grads).expect("input gets a gradient"));
    let h = 1e-6;
    let (mut largest, mut worst) = (0.0f64, 0.0f64);
    for k in 0..x.len() {
        let (mut plus, mut minus) = (x.to_vec(), x.to_vec());
        plus[k] += h;
        minus[k] -= h;
        let numeric = (scalar(f(t4(&plus, shape))) - scalar(f(t4(&minus, shape)))) / (2.0 * h);
        assert!(analytic[k].is_finite(), "{what}: gradient [{k}] is not finite");
        let err = (numeric - analytic[k]).abs();
        assert!(
            err <= 1e-9 + 1e-6 * numeric.abs(),
            "{what}: d/dx[{k}] autodiff {} vs finite difference {numeric}",
            analytic[k]
        );
        largest = largest.max(numeric.abs());
        worst = worst.max(err);
    }
    println!("{what}: {} elements, largest |gradient| {largest:.3e}, worst error {worst:.3e}", x.len());
    assert!(largest > 1e-4, "{what}: the gradient is (almost) zero everywhere, the check proves nothing");
}

// ---------------------------------------------------------------------------------------------
// independent f64 reference implementations of the documented formulas

const SX: [[f64; 3]; 3] = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]];
const SY: [[f64; 3]; 3] = [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]];

fn ref_sobel(img: &[f64], h: usize, w: usize, replicate: bool) -> (Vec<f64>, Vec<f64>) {
    let at = |i: isize, j: isize| -> f64 {
        if replicate {
            img[i.clamp(0, h as isize - 1) as usize * w + j.clamp(0, w as isize - 1) as usize]
        } else if i < 0 || j < 0 || i >= h as isize || j >= w as isize {
            0.0
        } else {
            img[i as usize * w + j as usize]
        }
    };
    let (mut gx, mut gy) = (vec![0.0; h * w], vec![0.0; h * w]);
    for i in 0..h {
        for j in 0..w {
            for u in 0..3 {
                for v in 0..3 {
                    let p = at(i as isize + u as isize - 1, j as isize + v as isize - 1);
                    gx[i * w + j] += SX[u][v] * p;
                    gy[i * w + j] += SY[u][v] * p;
                }
            }
        }
    }
    (gx, gy)
}

fn ref_edge_map(img: &[f64], h: usize, w: usize) -> Vec<f64> {
    let (gx, gy) = ref_sobel(img, h, w, true);
    let m: Vec<f64> = gx.iter().zip(&gy).map(|(a, b)| (a * a + b * b + 1e-8).sqrt()).collect();
    let max = m.iter().cloned().fold(f64::MIN, f64::max);
    m.iter().map(|v| v / (max + 1e-8)).collect()
}

fn ref_luminance(opt: &[f64], shape: [usize; 4], b: usize) -> Vec<f64> {
    let (blue, green, red) = (plane(opt, shape, b, 0), plane(opt, shape, b, 1), plane(opt, shape, b, 2));
    (0..blue.len()).map(|k| 0.299 * red[k] + 0.587 * green[k] + 0.114 * blue[k]).collect()
}

fn ref_sar_mean(sar: &[f64], shape: [usize; 4], b: usize) -> Vec<f64> {
    let (vv, vh) = (plane(sar, shape, b, 0), plane(sar, shape, b, 1));
    vv.iter().zip(&vh).map(|(a, c)| (a + c) / 2.0).collect()
}

/// (optical edge map, SAR edge map) of sample `b`.
fn ref_edge_maps(opt: &[f64], sar: &[f64], opt_shape: [usize; 4], b: usize) -> (Vec<f64>, Vec<f64>) {
    let (h, w) = (opt_shape[2], opt_shape[3]);
    let sar_shape = [opt_shape[0], 2, h, w];
    (ref_edge_map(&ref_luminance(opt, opt_shape, b), h, w), ref_edge_map(&ref_sar_mean(sar, sar_shape, b), h, w))
}

fn ref_l1_per_sample(opt: &[f64], sar: &[f64], shape: [usize; 4]) -> Vec<f64> {
    (0..shape[0])
        .map(|b| {
            let (eo, es) = ref_edge_maps(opt, sar, shape, b);
            eo.iter().zip(&es).map(|(a, c)| (a - c).abs()).sum::<f64>() / eo.len() as f64
        })
        .collect()
}

fn ref_cosine_per_sample(opt: &[f64], sar: &[f64], shape: [usize; 4]) -> Vec<f64> {
    (0..shape[0])
        .map(|b| {
            let (eo, es) = ref_edge_maps(opt, sar, shape, b);
            let dot: f64 = eo.iter().zip(&es).map(|(a, c)| a * c).sum();
            let na = eo.iter().map(|a| a * a).sum::<f64>().sqrt();
            let nc = es.iter().map(|a| a * a).sum::<f64>().sqrt();
            dot / (na * nc + 1e-8)
        })
        .collect()
}

/// Mean over the `k × k` window with replicate padding.
fn ref_box(img: &[f64], h: usize, w: usize, k: usize) -> Vec<f64> {
    let r = (k / 2) as isize;
    let mut out = vec![0.0; h * w];
    for i in 0..h as isize {
        for j in 0..w as isize {
            let mut s = 0.0;
            for di in -r..=r {
                for dj in -r..=r {
                    let (ii, jj) = ((i + di).clamp(0, h as isize - 1), (j + dj).clamp(0, w as isize - 1));
                    s += img[ii as usize * w + jj as usize];
                }
            }
            out[i as usize * w + j as usize] = s / (k * k) as f64;
        }
    }
    out
}

fn ref_local_variance(img: &[f64], h: usize, w: usize) -> Vec<f64> {
    let sq: Vec<f64> = img.iter().map(|v| v * v).collect();
    let (m, m2) = (ref_box(img, h, w, 5), ref_box(&sq, h, w, 5));
    m.iter().zip(&m2).map(|(a, b)| (b - a * a).max(0.0)).collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// SAR confidence of sample `b`: z-score per channel, channel mean, 3×3 box mean, sigmoid.
fn ref_confidence(sar: &[f64], shape: [usize; 4], b: usize) -> Vec<f64> {
    let (h, w) = (shape[2], shape[3]);
    let n = (h * w) as f64;
    let mut zmean = vec![0.0; h * w];
    for c in 0..shape[1] {
        let p = plane(sar, shape, b, c);
        let mu = p.iter().sum::<f64>() / n;
        let var = p.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n;
        for (k, v) in p.iter().enumerate() {
            zmean[k] += (v - mu) / (var + 1e-8).sqrt() / shape[1] as f64;
        }
    }
    ref_box(&zmean, h, w, 3).into_iter().map(sigmoid).collect()
}

/// Σ w·|a − b| / (C·Σ w + 1e-8) with a per-pixel weight per sample.
fn ref_weighted_l1(a: &[f64], b: &[f64], shape: [usize; 4], weight: &dyn Fn(usize) -> Vec<f64>) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for s in 0..shape[0] {
        let w = weight(s);
        den += shape[1] as f64 * w.iter().sum::<f64>();
        for c in 0..shape[1] {
            let (pa, pb) = (plane(a, shape, s, c), plane(b, shape, s, c));
            num += pa.iter().zip(&pb).zip(&w).map(|((x, y), wk)| wk * (x - y).abs()).sum::<f64>();
        }
    }
    num / (den + 1e-8)
}

/// Per-pixel spectra `[blue, green, red, nir]` of a `[B, 4, H, W]` buffer.
fn spectra(x: &[f64], shape: [usize; 4]) -> Vec<[f64; 4]> {
    let mut out = Vec::new();
    for b in 0..shape[0] {
        for i in 0..shape[2] {
            for j in 0..shape[3] {
                out.push([0, 1, 2, 3].map(|c| x[idx(shape, b, c, i, j)]));
            }
        }
    }
    out
}

fn ref_ndvi(p: [f64; 4]) -> f64 {
    let (red, nir) = (p[2], p[3]);
    ((nir - red) / ((nir + red).max(0.0) + 1e-6)).clamp(-1.0, 1.0)
}

fn ref_evi(p: [f64; 4]) -> f64 {
    let (blue, red, nir) = (p[0], p[2], p[3]);
    2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0 + 1e-6).max(0.1)
}

fn ref_rmse(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len() as f64 + 1e-12).sqrt()
}

// ---------------------------------------------------------------------------------------------
// test images

/// 4×4 horizontal ramp `x[i][j] = j`.
fn ramp() -> Vec<f64> {
    (0..16).map(|k| (k % 4) as f64).collect()
}

/// 4×4 horizontal step edge `x[i][j] = 1` for `i ≥ 2`.
fn step() -> Vec<f64> {
    (0..16).map(|k| if k / 4 >= 2 { 1.0 } else { 0.0 }).collect()
}

/// 4×4 vertical step edge `x[i][j] = 1` for `j ≥ 2`.
fn vstep() -> Vec<f64> {
    (0..16).map(|k| if k % 4 >= 2 { 1.0 } else { 0.0 }).collect()
}

/// An optical sample whose B2, B3, B4 all equal `vis` (luminance = `vis`) and B8 = `nir`.
fn optical_from_planes(samples: &[(Vec<f64>, Vec<f64>)]) -> Vec<f64> {
    let mut out = Vec::new();
    for (vis, nir) in samples {
        for _ in 0..3 {
            out.extend_from_slice(vis);
        }
        out.extend_from_slice(nir);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sobel

#[test]
fn sobel_ramp_replicate_and_zero_padding() {
    let x = t4::<F>(&ramp(), [1, 1, 4, 4]);
    let (gx, gy) = sobel(x.clone(), Padding::Replicate);
    #[rustfmt::skip]
    let want_gx = [
        4.0, 8.0, 8.0, 4.0,
        4.0, 8.0, 8.0, 4.0,
        4.0, 8.0, 8.0, 4.0,
        4.0, 8.0, 8.0, 4.0,
    ];
    assert_close("ramp replicate gx", &vals(gx), &want_gx, 1e-12);
    assert_close("ramp replicate gy", &vals(gy), &[0.0; 16], 1e-12);

    let (gx, gy) = sobel(x, Padding::Zero);
    #[rustfmt::skip]
    let want_gx = [
        3.0, 6.0, 6.0, -6.0,
        4.0, 8.0, 8.0, -8.0,
        4.0, 8.0, 8.0, -8.0,
        3.0, 6.0, 6.0, -6.0,
    ];
    #[rustfmt::skip]
    let want_gy = [
        1.0, 4.0, 8.0, 8.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        -1.0, -4.0, -8.0, -8.0,
    ];
    assert_close("ramp zero gx", &vals(gx), &want_gx, 1e-12);
    assert_close("ramp zero gy", &vals(gy), &want_gy, 1e-12);
}

#[test]
fn sobel_step_edge_replicate_and_zero_padding() {
    let x = t4::<F>(&step(), [1, 1, 4, 4]);
    let (gx, gy) = sobel(x.clone(), Padding::Replicate);
    #[rustfmt::skip]
    let want_gy = [
        0.0, 0.0, 0.0, 0.0,
        4.0, 4.0, 4.0, 4.0,
        4.0, 4.0, 4.0, 4.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_close("step replicate gx", &vals(gx), &[0.0; 16], 1e-12);
    assert_close("step replicate gy", &vals(gy), &want_gy, 1e-12);

    let (gx, gy) = sobel(x.clone(), Padding::Zero);
    #[rustfmt::skip]
    let want_gx = [
        0.0, 0.0, 0.0, 0.0,
        1.0, 0.0, 0.0, -1.0,
        3.0, 0.0, 0.0, -3.0,
        3.0, 0.0, 0.0, -3.0,
    ];
    #[rustfmt::skip]
    let want_gy = [
        0.0, 0.0, 0.0, 0.0,
        3.0, 4.0, 4.0, 3.0,
        3.0, 4.0, 4.0, 3.0,
        -3.0, -4.0, -4.0, -3.0,
    ];
    assert_close("step zero gx", &vals(gx), &want_gx, 1e-12);
    assert_close("step zero gy", &vals(gy), &want_gy, 1e-12);

    // Magnitude: sqrt(16 + 1e-8) on the edge rows, sqrt(1e-8) = 1e-4 on flat rows.
    let e = (16.0f64 + 1e-8).sqrt();
    let f = 1e-4;
    #[rustfmt::skip]
    let want = [f, f, f, f, e, e, e, e, e, e, e, e, f, f, f, f];
    assert_close("step replicate magnitude", &vals(sobel_magnitude(x, Padding::Replicate)), &want, 1e-12);
}

#[test]
fn sobel_is_per_channel_and_per_sample_and_matches_loops() {
    let shape = [2, 3, 5, 6];
    let data = uniform(shape.iter().product(), 7, -1.0, 2.0);
    let x = t4::<F>(&data, shape);
    for (padding, replicate) in [(Padding::Replicate, true), (Padding::Zero, false)] {
        let (gx, gy) = sobel(x.clone(), padding);
        let (gx, gy) = (vals(gx), vals(gy));
        let mag = vals(sobel_magnitude(x.clone(), padding));
        for b in 0..2 {
            for c in 0..3 {
                let (rx, ry) = ref_sobel(&plane(&data, shape, b, c), 5, 6, replicate);
                let rm: Vec<f64> = rx.iter().zip(&ry).map(|(a, d)| (a * a + d * d + 1e-8).sqrt()).collect();
                assert_close("gx", &plane(&gx, shape, b, c), &rx, 1e-12);
                assert_close("gy", &plane(&gy, shape, b, c), &ry, 1e-12);
                assert_close("magnitude", &plane(&mag, shape, b, c), &rm, 1e-12);
            }
        }
    }
}

#[test]
fn sobel_of_a_constant_image_is_zero_with_replicate_padding_only() {
    let x = t4::<F>(&[3.0; 16], [1, 1, 4, 4]);
    let (gx, gy) = sobel(x.clone(), Padding::Replicate);
    assert_close("gx", &vals(gx), &[0.0; 16], 1e-12);
    assert_close("gy", &vals(gy), &[0.0; 16], 1e-12);
    let (gx, _) = sobel(x, Padding::Zero);
    assert!(vals(gx).iter().any(|v| v.abs() > 1.0), "zero padding creates border edges");
}

#[test]
fn sobel_runs_in_the_default_f32_dtype() {
    let data: Vec<f32> = ramp().iter().map(|&v| v as f32).collect();
    let x = Tensor::<F, 4>::from_data(TensorData::new(data, [1, 1, 4, 4]), &Default::default());
    let (gx, _) = sobel(x, Padding::Replicate);
    assert_eq!(gx.dtype(), DType::F32);
    assert_close("f32 gx", &vals(gx)[..4], &[4.0, 8.0, 8.0, 4.0], 1e-6);
}

// ---------------------------------------------------------------------------------------------
// luminance, SAR-structure loss and SAR agreement metrics

#[test]
fn luminance_weights_b4_b3_b2() {
    // One pixel, channels [B2, B3, B4, B8] = [1, 10, 100, 1000].
    let x = t4::<F>(&[1.0, 10.0, 100.0, 1000.0], [1, 4, 1, 1]);
    // 0.299·B4 + 0.587·B3 + 0.114·B2 = 29.9 + 5.87 + 0.114 (weights on c0..c2 would give 17.569).
    assert_close("luminance", &vals(luminance(x)), &[35.884], 1e-12);
}

#[test]
fn sar_structure_loss_hand_computed_two_samples() {
    // Sample 0: optical luminance 0.1 + 0.2·(vertical step), SAR a horizontal step.
    // Sample 1: optical luminance 0.1 + 0.2·(horizontal step), same SAR.
    // SAR (dB-like): VV = −15 + 3·step, VH = −22 + step, channel mean −18.5 + 2·step.
    let vis0: Vec<f64> = vstep().iter().map(|v| 0.1 + 0.2 * v).collect();
    let vis1: Vec<f64> = step().iter().map(|v| 0.1 + 0.2 * v).collect();
    let nir = uniform(16, 3, 0.0, 1.0); // NIR must not matter
    let opt = optical_from_planes(&[(vis0, nir.clone()), (vis1, nir)]);
    let vv: Vec<f64> = step().iter().map(|v| -15.0 + 3.0 * v).collect();
    let vh: Vec<f64> = step().iter().map(|v| -22.0 + v).collect();
    let sar_data = [vv.clone(), vh.clone(), vv, vh].concat();
    let (opt_t, sar_t) = (t4::<F>(&opt, [2, 4, 4, 4]), t4::<F>(&sar_data, [2, 2, 4, 4]));

    // Replicate-padded Sobel of a step of height a: 4a on the two rows (columns) next to
    // the step, 0 elsewhere; magnitudes sqrt((4a)² + 1e-8) and 1e-4; then divide by max + 1e-8.
    let mag_o = (0.8f64 * 0.8 + 1e-8).sqrt();
    let mag_s = (8.0f64 * 8.0 + 1e-8).sqrt();
    let (e, phi) = (mag_o / (mag_o + 1e-8), 1e-4 / (mag_o + 1e-8));
    let (es, phis) = (mag_s / (mag_s + 1e-8), 1e-4 / (mag_s + 1e-8));
    // Sample 0: optical edges on columns 1–2, SAR edges on rows 1–2 of the 4×4 grid:
    // 4 pixels both edges, 4 optical-only, 4 SAR-only, 4 neither.
    let d0 = (4.0 * (e - es).abs() + 4.0 * (e - phis).abs() + 4.0 * (es - phi).abs() + 4.0 * (phi - phis).abs()) / 16.0;
    // Sample 1: same rows, only the flat floor differs.
    let d1 = (8.0 * (e - es).abs() + 8.0 * (phi - phis).abs()) / 16.0;
    assert!((d0 - 0.5).abs() < 1e-3 && d1 < 1e-3, "sanity of the hand values: {d0} {d1}");

    let per_sample = vals(sar_edge_agreement_per_sample(opt_t.clone(), sar_t.clone()));
    assert_close("per-sample edge disagreement", &per_sample, &[d0, d1], 1e-9);
    assert_close("loss", &[scalar(sar_structure_loss(opt_t.clone(), sar_t.clone()))], &[(d0 + d1) / 2.0], 1e-9);
    assert_close("metric", &[scalar(sar_edge_agreement(opt_t.clone(), sar_t.clone()))], &[(d0 + d1) / 2.0], 1e-9);

    // Cosine of the same maps: sample 0 ≈ 4/8 = 0.5, sample 1 ≈ 1.
    let dot0 = 4.0 * e * es + 4.0 * e * phis + 4.0 * es * phi + 4.0 * phi * phis;
    let n_o = (8.0 * e * e + 8.0 * phi * phi).sqrt();
    let n_s = (8.0 * es * es + 8.0 * phis * phis).sqrt();
    let a0 = dot0 / (n_o * n_s + 1e-8);
    let a1 = (8.0 * e * es + 8.0 * phi * phis) / (n_o * n_s + 1e-8);
    assert!((a0 - 0.5).abs() < 1e-3 && (a1 - 1.0).abs() < 1e-6, "sanity: {a0} {a1}");
    assert_close("agreement", &vals(sar_agreement_per_sample(opt_t.clone(), sar_t.clone())), &[a0, a1], 1e-9);
    assert_close("agreement mean", &[scalar(sar_agreement(opt_t, sar_t))], &[(a0 + a1) / 2.0], 1e-9);
}

#[test]
fn sar_structure_and_agreement_match_f64_loops_on_random_data() {
    let shape = [3, 4, 6, 5];
    let opt = uniform(shape.iter().product(), 11, 0.0, 0.5);
    let sar_shape = [3, 2, 6, 5];
    let sar_data = uniform(sar_shape.iter().product(), 12, -25.0, -5.0);
    let (o, s) = (t4::<F>(&opt, shape), t4::<F>(&sar_data, sar_shape));
    let l1 = ref_l1_per_sample(&opt, &sar_data, shape);
    let cos = ref_cosine_per_sample(&opt, &sar_data, shape);
    assert_close("edge disagreement", &vals(sar_edge_agreement_per_sample(o.clone(), s.clone())), &l1, 1e-10);
    assert_close("agreement", &vals(sar_agreement_per_sample(o.clone(), s.clone())), &cos, 1e-10);
    let mean = l1.iter().sum::<f64>() / 3.0;
    assert_close("loss", &[scalar(sar_structure_loss(o, s))], &[mean], 1e-10);
}

#[test]
fn sar_structure_loss_is_zero_when_edges_match_up_to_scale() {
    let (h, w) = (6, 7);
    let pattern = uniform(h * w, 21, 0.0, 1.0);
    // Optical luminance 0.05 + 0.3·P; SAR channel mean −17 + 6·P (a different offset and scale).
    let vis: Vec<f64> = pattern.iter().map(|p| 0.05 + 0.3 * p).collect();
    let opt = optical_from_planes(&[(vis, uniform(h * w, 22, 0.0, 1.0))]);
    let vv: Vec<f64> = pattern.iter().map(|p| -14.0 + 8.0 * p).collect();
    let vh: Vec<f64> = pattern.iter().map(|p| -20.0 + 4.0 * p).collect();
    let (o, s) = (t4::<F>(&opt, [1, 4, h, w]), t4::<F>(&[vv, vh].concat(), [1, 2, h, w]));
    // Not exactly 0: the Sobel ε = 1e-8 under the square root does not scale with the image.
    let loss = scalar(sar_structure_loss(o.clone(), s.clone()));
    assert!(loss < 1e-5, "loss {loss}");
    let agreement = scalar(sar_agreement(o.clone(), s));
    assert!((agreement - 1.0).abs() < 1e-6, "agreement {agreement}");

    // A different SAR structure is far from 0.
    let other = uniform(2 * h * w, 23, -20.0, -10.0);
    let loss = scalar(sar_structure_loss(o, t4::<F>(&other, [1, 2, h, w])));
    assert!(loss > 0.05, "loss {loss}");
}

#[test]
fn sar_structure_uses_b4_b3_b2_for_luminance() {
    // Red (B4) carries pattern P, blue (B2) pattern Q, green constant, NIR random.
    // The SAR mean equals the correct luminance 0.299·P + 0.114·Q (+ const), so the loss is 0.
    // Weights applied to channels 0, 1, 2 would see 0.299·Q + 0.114·P: a clearly non-zero loss,
    // which is what the loss reads after swapping B2 and B4.
    let (h, w) = (6, 6);
    let p = uniform(h * w, 31, 0.0, 1.0);
    let q = uniform(h * w, 32, 0.0, 1.0);
    let green = vec![0.3; h * w];
    let nir = uniform(h * w, 33, 0.0, 1.0);
    let opt = [q.clone(), green.clone(), p.clone(), nir.clone()].concat();
    let swapped = [p.clone(), green, q.clone(), nir].concat();
    let y: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 0.299 * a + 0.114 * b + 0.587 * 0.3).collect();
    let sar_t = t4::<F>(&[y.clone(), y].concat(), [1, 2, h, w]);

    let right = scalar(sar_structure_loss(t4::<F>(&opt, [1, 4, h, w]), sar_t.clone()));
    let wrong = scalar(sar_structure_loss(t4::<F>(&swapped, [1, 4, h, w]), sar_t.clone()));
    assert!(right < 1e-9, "correct luminance must match the SAR exactly: {right}");
    assert!(wrong > 0.02, "swapping B2 and B4 must change the loss: {wrong}");
    let agreement_right = scalar(sar_agreement(t4::<F>(&opt, [1, 4, h, w]), sar_t.clone()));
    let agreement_wrong = scalar(sar_agreement(t4::<F>(&swapped, [1, 4, h, w]), sar_t));
    assert!(
        (agreement_right - 1.0).abs() < 1e-8 && agreement_wrong < agreement_right - 1e-3,
        "agreement right {agreement_right}, swapped {agreement_wrong}"
    );
}

#[test]
fn sar_metrics_of_a_sample_do_not_depend_on_the_batch() {
    let (h, w) = (5, 6);
    let opt_a = uniform(4 * h * w, 41, 0.0, 0.3);
    let sar_a = uniform(2 * h * w, 42, -20.0, -10.0);
    // A very different companion: 1000× brighter, other structure, linear-scale SAR.
    let opt_b = uniform(4 * h * w, 43, 0.0, 300.0);
    let sar_b = uniform(2 * h * w, 44, 0.0, 5.0);
    let alone = |f: fn(Tensor<F, 4>, Tensor<F, 4>) -> Tensor<F, 1>| {
        vals(f(t4(&opt_a, [1, 4, h, w]), t4(&sar_a, [1, 2, h, w])))[0]
    };
    let batched = |f: fn(Tensor<F, 4>, Tensor<F, 4>) -> Tensor<F, 1>| {
        let opt = [opt_b.clone(), opt_a.clone()].concat();
        let sar_data = [sar_b.clone(), sar_a.clone()].concat();
        vals(f(t4(&opt, [2, 4, h, w]), t4(&sar_data, [2, 2, h, w])))[1]
    };
    let (a1, a2) = (alone(sar_agreement_per_sample::<F>), batched(sar_agreement_per_sample::<F>));
    assert!((a1 - a2).abs() < 1e-12, "agreement alone {a1} vs in a batch {a2}");
    let (d1, d2) = (alone(sar_edge_agreement_per_sample::<F>), batched(sar_edge_agreement_per_sample::<F>));
    assert!((d1 - d2).abs() < 1e-12, "edge disagreement alone {d1} vs in a batch {d2}");
}

#[test]
fn normalize_per_sample_max_uses_each_samples_own_max() {
    let data = [1.0, 2.0, 4.0, 8.0, 10.0, 20.0, 40.0, 80.0];
    let got = vals(normalize_per_sample_max(t4::<F>(&data, [2, 1, 2, 2])));
    let want0 = [1.0, 2.0, 4.0, 8.0].map(|v| v / (8.0 + 1e-8));
    let want1 = [10.0, 20.0, 40.0, 80.0].map(|v| v / (80.0 + 1e-8));
    assert_close("normalised", &got, &[want0, want1].concat(), 1e-14);
}

// ---------------------------------------------------------------------------------------------
// texture

#[test]
fn texture_loss_of_constant_images_is_zero() {
    let a = t4::<F>(&[3.0; 50], [1, 2, 5, 5]);
    let b = t4::<F>(&[-7.0; 50], [1, 2, 5, 5]);
    // With zero padding the border windows of a constant 3 would report variance.
    assert!(vals(local_variance(a.clone())).iter().all(|v| v.abs() < 1e-12));
    assert!(scalar(texture_loss(a, b)).abs() < 1e-12);
}

#[test]
fn texture_loss_hand_value() {
    // 5×5 image with a single 1 at the centre. The centre is not a border pixel, so every
    // replicate-padded 5×5 window holds it exactly once among 25 pixels:
    // variance = 1/25 − 1/625 = 24/625 at every pixel. The target is constant (variance 0).
    let mut img = vec![0.0; 25];
    img[12] = 1.0;
    let want = 24.0 / 625.0;
    assert_close("local variance", &vals(local_variance(t4::<F>(&img, [1, 1, 5, 5]))), &[want; 25], 1e-12);
    let loss = scalar(texture_loss(t4::<F>(&img, [1, 1, 5, 5]), t4::<F>(&[0.4; 25], [1, 1, 5, 5])));
    assert_close("texture loss", &[loss], &[want], 1e-12);
}

#[test]
fn texture_loss_matches_f64_loops() {
    let shape = [2, 3, 7, 6];
    let n = shape.iter().product();
    let (p, t) = (uniform(n, 51, -1.0, 1.0), uniform(n, 52, 0.0, 2.0));
    let mut sum = 0.0;
    for b in 0..2 {
        for c in 0..3 {
            let vp = ref_local_variance(&plane(&p, shape, b, c), 7, 6);
            let vt = ref_local_variance(&plane(&t, shape, b, c), 7, 6);
            sum += vp.iter().zip(&vt).map(|(x, y)| (x - y).abs()).sum::<f64>();
        }
    }
    let got = scalar(texture_loss(t4::<F>(&p, shape), t4::<F>(&t, shape)));
    assert_close("texture loss", &[got], &[sum / n as f64], 1e-10);
}

// ---------------------------------------------------------------------------------------------
// colour ratio and spectral indices

#[test]
fn colour_ratio_loss_matches_f64_loops() {
    let shape = [2, 4, 3, 5];
    let n = shape.iter().product();
    let (p, t) = (uniform(n, 61, 0.01, 0.6), uniform(n, 62, 0.01, 0.6));
    let (sp, st) = (spectra(&p, shape), spectra(&t, shape));
    let ratio = |s: &[f64; 4], num: usize, den: usize| s[num] / (s[den] + 1e-6);
    let term = |num: usize, den: usize| {
        sp.iter().zip(&st).map(|(a, b)| (ratio(a, num, den) - ratio(b, num, den)).abs()).sum::<f64>() / sp.len() as f64
    };
    // R/G = B4/B3, R/B = B4/B2, NIR/R = B8/B4.
    let want = (term(2, 1) + term(2, 0) + term(3, 2)) / 3.0;
    let got = scalar(colour_ratio_loss(t4::<F>(&p, shape), t4::<F>(&t, shape)));
    assert_close("colour ratio", &[got], &[want], 1e-10);
}

#[test]
fn ndvi_and_evi_read_b8_b4_b2() {
    // Channels [B2, B3, B4, B8]. Pixel 0: vegetation. Pixel 1: bright blue (cloud), where the
    // textbook EVI denominator 0.2 + 0.6 − 3.75 + 1 is negative and the floor 0.1 applies.
    let x = t4::<F>(&[0.05, 0.5, 0.08, 0.3, 0.04, 0.1, 0.4, 0.2], [1, 4, 1, 2]);
    let ndvi_want = [0.36 / (0.44 + 1e-6), 0.1 / (0.3 + 1e-6)];
    let evi_want = [2.5 * 0.36 / (0.4 + 0.24 - 0.375 + 1.0 + 1e-6), 2.5 * 0.1 / 0.1];
    assert_close("ndvi", &vals(ndvi(x.clone())), &ndvi_want, 1e-12);
    assert_close("evi", &vals(evi(x)), &evi_want, 1e-12);
}

#[test]
fn ndvi_is_finite_and_bounded_for_negative_inputs() {
    // NIR + R = −1e-6 (the textbook denominator NIR + R + ε would be exactly 0).
    let x = t4::<F>(&[0.1, 0.1, -0.3, 0.299999], [1, 4, 1, 1]);
    let v = vals(ndvi(x))[0];
    assert!(v.is_finite() && v.abs() <= 1.0, "ndvi {v}");
}

#[test]
fn spectral_errors_match_f64_loops() {
    let shape = [2, 4, 4, 3];
    let n = shape.iter().product();
    let mut p = uniform(n, 71, 0.0, 0.6);
    let t = uniform(n, 72, 0.0, 0.6);
    // Make a few prediction pixels blue-dominant so the EVI floor is exercised.
    for j in 0..3 {
        p[idx(shape, 0, 0, 0, j)] = 0.9;
    }
    let (sp, st) = (spectra(&p, shape), spectra(&t, shape));
    let ndvi_p: Vec<f64> = sp.iter().map(|s| ref_ndvi(*s)).collect();
    let ndvi_t: Vec<f64> = st.iter().map(|s| ref_ndvi(*s)).collect();
    let evi_p: Vec<f64> = sp.iter().map(|s| ref_evi(*s)).collect();
    let evi_t: Vec<f64> = st.iter().map(|s| ref_evi(*s)).collect();
    let sam_want = sp
        .iter()
        .zip(&st)
        .map(|(a, b)| {
            let dot: f64 = (0..4).map(|c| a[c] * b[c]).sum();
            let na = ((0..4).map(|c| a[c] * a[c]).sum::<f64>() + 1e-12).sqrt();
            let nb = ((0..4).map(|c| b[c] * b[c]).sum::<f64>() + 1e-12).sqrt();
            (dot / (na * nb)).clamp(-1.0 + 1e-7, 1.0 - 1e-7).acos()
        })
        .sum::<f64>()
        / sp.len() as f64;
    let (pt, tt) = (t4::<F>(&p, shape), t4::<F>(&t, shape));
    assert_close("ndvi map", &vals(ndvi(pt.clone())), &ndvi_p, 1e-12);
    assert_close("evi map", &vals(evi(pt.clone())), &evi_p, 1e-12);
    let ndvi_err = ref_rmse(&ndvi_p, &ndvi_t);
    let evi_err = ref_rmse(&evi_p, &evi_t);
    assert_close("ndvi rmse", &[scalar(ndvi_rmse(pt.clone(), tt.clone()))], &[ndvi_err], 1e-10);
    assert_close("evi rmse", &[scalar(evi_rmse(pt.clone(), tt.clone()))], &[evi_err], 1e-10);
    assert_close("sam", &[scalar(sam(pt.clone(), tt.clone()))], &[sam_want], 1e-10);
    let total = scalar(spectral_index_loss(pt, tt));
    assert_close("spectral index loss", &[total], &[ndvi_err + evi_err + sam_want], 1e-10);
}

#[test]
fn sam_of_identical_spectra_is_the_clamp_floor() {
    let x = uniform(4 * 9, 81, 0.0, 1.0);
    let got = scalar(sam(t4::<F>(&x, [1, 4, 3, 3]), t4::<F>(&x, [1, 4, 3, 3])));
    assert_close("sam floor", &[got], &[(1.0f64 - 1e-7).acos()], 1e-6);
    // Orthogonal spectra: π/2.
    let a = t4::<F>(&[1.0, 0.0, 0.0, 0.0], [1, 4, 1, 1]);
    let b = t4::<F>(&[0.0, 0.0, 2.0, 0.0], [1, 4, 1, 1]);
    assert_close("sam orthogonal", &[scalar(sam(a, b))], &[std::f64::consts::FRAC_PI_2], 1e-12);
}

// ---------------------------------------------------------------------------------------------
// SAR confidence, cycle and identity

#[test]
fn sar_confidence_matches_f64_loops_and_works_on_db() {
    let shape = [2, 2, 5, 6];
    let data = uniform(shape.iter().product(), 91, -25.0, -5.0); // dB
    let conf = vals(sar_confidence(t4::<F>(&data, shape)));
    for b in 0..2 {
        assert_close("confidence", &plane(&conf, [2, 1, 5, 6], b, 0), &ref_confidence(&data, shape, b), 1e-10);
    }
    // dB input no longer collapses the weights (the reference gave sigmoid(−15) ≈ 3e-7).
    let mean = conf.iter().sum::<f64>() / conf.len() as f64;
    assert!((0.4..0.6).contains(&mean) && conf.iter().all(|&c| c > 0.1 && c < 0.9), "mean {mean}");
    // Invariant to a positive affine change of units.
    let rescaled: Vec<f64> = data.iter().map(|v| 0.23 * v + 4.0).collect();
    assert_close("affine invariance", &vals(sar_confidence(t4::<F>(&rescaled, shape))), &conf, 1e-9);
    // Standardisation: zero mean, unit variance per sample and channel.
    let z = vals(standardize_per_sample(t4::<F>(&data, shape)));
    for b in 0..2 {
        for c in 0..2 {
            let p = plane(&z, shape, b, c);
            let mu = p.iter().sum::<f64>() / 30.0;
            let var = p.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / 30.0;
            assert!(mu.abs() < 1e-12 && (var - 1.0).abs() < 1e-6, "z-score {mu} {var}");
        }
    }
}

#[test]
fn brighter_sar_gets_higher_confidence() {
    // Bright block (−5 dB) in the middle of a dark scene (−20 dB).
    let (h, w) = (7, 7);
    let mut vv = vec![-20.0; h * w];
    for i in 2..5 {
        for j in 2..5 {
            vv[i * w + j] = -5.0;
        }
    }
    let vh: Vec<f64> = vv.iter().map(|v| v - 7.0).collect();
    let conf = vals(sar_confidence(t4::<F>(&[vv, vh].concat(), [1, 2, h, w])));
    assert!(conf[3 * w + 3] > 0.8 && conf[0] < 0.4, "centre {} corner {}", conf[3 * w + 3], conf[0]);
}

#[test]
fn cycle_and_identity_losses_match_f64_loops() {
    let shape = [2, 4, 5, 5];
    let sar_shape = [2, 2, 5, 5];
    let n = shape.iter().product();
    let (a, b) = (uniform(n, 101, 0.0, 1.0), uniform(n, 102, 0.0, 1.0));
    let sar_data = uniform(sar_shape.iter().product(), 103, -22.0, -8.0);
    let (at, bt, st) = (t4::<F>(&a, shape), t4::<F>(&b, shape), t4::<F>(&sar_data, sar_shape));

    let conf = |s: usize| ref_confidence(&sar_data, sar_shape, s);
    let inverse = |s: usize| conf(s).into_iter().map(|c| 1.0 - c).collect::<Vec<f64>>();
    let cycle_want = ref_weighted_l1(&a, &b, shape, &conf);
    let identity_want = ref_weighted_l1(&a, &b, shape, &inverse);
    assert_close("cycle", &[scalar(cycle_loss(at.clone(), bt.clone(), st.clone()))], &[cycle_want], 1e-10);
    assert_close("identity", &[scalar(identity_loss(at.clone(), bt.clone(), st.clone()))], &[identity_want], 1e-10);
    assert!(scalar(identity_loss(at.clone(), at.clone(), st)).abs() < 1e-15, "identity of an unchanged input");

    // Constant weights give the plain mean absolute error.
    let l1 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / n as f64;
    let ones = t4::<F>(&vec![0.7; 50], [2, 1, 5, 5]);
    assert_close("weighted l1", &[scalar(weighted_l1(at, bt, ones))], &[l1], 1e-8);
}

// ---------------------------------------------------------------------------------------------
// gradients: autodiff vs central differences, in f64

#[test]
fn gradient_sar_structure_loss() {
    let shape = [2, 4, 5, 5];
    let opt = uniform(shape.iter().product(), 111, 0.0, 1.0);
    let sar_data = uniform(2 * 2 * 25, 112, -20.0, -5.0);
    let sar_t = t4::<AD>(&sar_data, [2, 2, 5, 5]);
    grad_check("sar_structure_loss wrt optical", &opt, shape, |o| sar_structure_loss(o, sar_t.clone()));
    let opt_t = t4::<AD>(&opt, shape);
    grad_check("sar_structure_loss wrt sar", &sar_data, [2, 2, 5, 5], |s| sar_structure_loss(opt_t.clone(), s));
}

#[test]
fn gradient_texture_loss() {
    let shape = [1, 2, 6, 6];
    let n = shape.iter().product();
    let target = t4::<AD>(&uniform(n, 121, 0.0, 1.0), shape);
    grad_check("texture_loss", &uniform(n, 122, 0.0, 1.0), shape, |p| texture_loss(p, target.clone()));
}

#[test]
fn gradient_colour_ratio_loss() {
    let shape = [2, 4, 3, 3];
    let n = shape.iter().product();
    let target = t4::<AD>(&uniform(n, 131, 0.05, 0.6), shape);
    grad_check("colour_ratio_loss", &uniform(n, 132, 0.05, 0.6), shape, |p| colour_ratio_loss(p, target.clone()));
}

#[test]
fn gradient_ndvi_and_evi_rmse() {
    let shape = [2, 4, 3, 3];
    let n = shape.iter().product();
    let mut pred = uniform(n, 141, 0.02, 0.6);
    pred[idx(shape, 1, 0, 1, 1)] = 0.9; // one pixel on the EVI denominator floor
    let target = t4::<AD>(&uniform(n, 142, 0.02, 0.6), shape);
    grad_check("ndvi_rmse", &pred, shape, |p| ndvi_rmse(p, target.clone()));
    grad_check("evi_rmse", &pred, shape, |p| evi_rmse(p, target.clone()));
}

#[test]
fn gradient_sam() {
    let shape = [2, 4, 3, 3];
    let n = shape.iter().product();
    let target = t4::<AD>(&uniform(n, 151, 0.0, 1.0), shape);
    grad_check("sam", &uniform(n, 152, 0.0, 1.0), shape, |p| sam(p, target.clone()));
}

#[test]
fn gradient_cycle_and_identity_losses() {
    let shape = [2, 4, 4, 4];
    let n = shape.iter().product();
    let source = t4::<AD>(&uniform(n, 161, 0.0, 1.0), shape);
    let sar_t = t4::<AD>(&uniform(2 * 2 * 16, 162, -22.0, -8.0), [2, 2, 4, 4]);
    let x = uniform(n, 163, 0.0, 1.0);
    grad_check("cycle_loss", &x, shape, |r| cycle_loss(r, source.clone(), sar_t.clone()));
    grad_check("identity_loss", &x, shape, |o| identity_loss(o, source.clone(), sar_t.clone()));
}

#[test]
fn channel_constants() {
    assert_eq!((sar::BLUE, sar::GREEN, sar::RED, sar::NIR), (0, 1, 2, 3));
    assert_eq!((sar::VV, sar::VH), (0, 1));
}
