#!/usr/bin/env python3
"""Reference vectors for `losses::grounding` (the stage-3 SAR-grounding loss terms and metrics).

Regenerate (numpy only, pinned in scripts/requirements-vectors.txt):

    pip install numpy==2.4.6
    python scripts/grounding_loss_vectors.py \
        --out crates/losses/tests/fixtures/grounding_vectors.json

Everything below is written from the formulas documented in `crates/losses/src/grounding.rs`
(the Axion-Sat `Stage3Loss` / GAC-Score formulas with the per-sample normalisation, replicate
padding and dB-safe weights of this project), in float64, with explicit slicing: its own Sobel,
its own 5x5 box variance, numpy's quantile (linear interpolation). It shares no code with the Rust
implementation. The inputs are written into the JSON too, so the Rust test reads the very same
numbers.

Inputs (fixed seed): two samples of optical reflectance `[2, 4, 12, 12]` in [0, 0.5] (B2, B3, B4,
B8) and SAR `[2, 2, 12, 12]` in dB (about -25..-5, VV and VH), each with a bright square and a
stripe; `opt_v2` (the stage-2 input) = `opt_v3` plus noise; a truth image; a valid mask
`[2, 1, 12, 12]` with some zeros.
"""

import argparse
import json

import numpy as np

SEED = 15
B, H, W = 2, 12, 12
SOBEL_EPS = 1e-8
NORMALIZE_EPS = 1e-8
STANDARDIZE_EPS = 1e-8
MINMAX_EPS = 1e-8
WEIGHT_EPS = 1e-8
TEXTURE_EPS = 1e-8
COSINE_EPS = 1e-8
URBAN_QUANTILE = 0.7
URBAN_SHARPNESS = 10.0
CONFIDENCE_SHARPNESS = 10.0
CONFIDENCE_THRESHOLD = 0.1

SX = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SY = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


def pad_edge(plane, p):
    """Replicate padding of a 2-D plane by p pixels, written out with slicing."""
    h, w = plane.shape
    out = np.empty((h + 2 * p, w + 2 * p))
    out[p : p + h, p : p + w] = plane
    out[:p, p : p + w] = plane[0:1, :]
    out[p + h :, p : p + w] = plane[h - 1 : h, :]
    out[:, :p] = out[:, p : p + 1]
    out[:, p + w :] = out[:, p + w - 1 : p + w]
    return out


def sobel_mag(plane):
    """sqrt(gx^2 + gy^2 + eps) of a 2-D plane, cross-correlation, replicate padding."""
    h, w = plane.shape
    p = pad_edge(plane, 1)
    gx = np.zeros((h, w))
    gy = np.zeros((h, w))
    for i in range(3):
        for j in range(3):
            window = p[i : i + h, j : j + w]
            gx += SX[i, j] * window
            gy += SY[i, j] * window
    return np.sqrt(gx * gx + gy * gy + SOBEL_EPS)


def box5(plane):
    """5x5 mean with replicate padding (every window holds 25 real-or-replicated pixels)."""
    h, w = plane.shape
    p = pad_edge(plane, 2)
    acc = np.zeros((h, w))
    for i in range(5):
        for j in range(5):
            acc += p[i : i + h, j : j + w]
    return acc / 25.0


def local_var(plane):
    m = box5(plane)
    return np.maximum(box5(plane * plane) - m * m, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def standardize(plane):
    c = plane - plane.mean()
    return c / np.sqrt((c * c).mean() + STANDARDIZE_EPS)


def minmax(plane):
    return (plane - plane.min()) / (plane.max() - plane.min() + MINMAX_EPS)


def edge_term(opt, sar, adaptive, urban_weight):
    num = 0.0
    den = 0.0
    for b in range(opt.shape[0]):
        e_o = np.mean([sobel_mag(opt[b, c]) for c in range(opt.shape[1])], axis=0)
        e_o = e_o / (e_o.max() + NORMALIZE_EPS)
        e_s = np.mean([sobel_mag(sar[b, c]) for c in range(sar.shape[1])], axis=0)
        e_s = e_s / (e_s.max() + NORMALIZE_EPS)
        d = np.abs(e_o - e_s)
        bs = sar[b].mean(axis=0)
        w = sigmoid(standardize(bs)) if adaptive else np.ones_like(bs)
        if urban_weight > 1.0:
            bsn = minmax(bs)
            q = np.quantile(bsn.ravel(), URBAN_QUANTILE)
            m = sigmoid(URBAN_SHARPNESS * (bsn - q))
            w = w * (1.0 + (urban_weight - 1.0) * m)
        num += (d * w).sum()
        den += w.sum()
    return num / (den + WEIGHT_EPS)


def texture_term(opt, sar):
    sq = []
    for b in range(opt.shape[0]):
        t_o = np.mean([local_var(opt[b, c]) for c in range(opt.shape[1])], axis=0)
        t_o = t_o / (t_o.mean() + TEXTURE_EPS)
        t_s = np.mean([local_var(sar[b, c]) for c in range(sar.shape[1])], axis=0)
        t_s = t_s / (t_s.mean() + TEXTURE_EPS)
        sq.append((t_o - t_s) ** 2)
    return float(np.mean(sq))


def confidence(sar):
    out = np.empty((sar.shape[0], 1, H, W))
    for b in range(sar.shape[0]):
        bsn = minmax(sar[b].mean(axis=0))
        out[b, 0] = sigmoid(CONFIDENCE_SHARPNESS * (bsn - CONFIDENCE_THRESHOLD))
    return out


def identity_term(v3, v2, sar):
    return float(np.mean(np.abs(v3 - v2) * (1.0 - confidence(sar))))


def cycle_term(v3, v2):
    return float(np.mean((v3 - v2) ** 2))


def spectral_term(opt, truth, valid):
    m = np.broadcast_to(valid, opt.shape)
    s = m.sum()
    return float((np.abs(opt - truth) * m).sum() / s) if s > 0 else 0.0


def thresholded(g):
    return (g > 0.3) * 1.0 + 0.5 * ((g >= 0.1) & (g <= 0.3))


def sar_edge_parts(opt, sar):
    """Per sample: (cosine, F1, score) of the thresholded luminance / SAR-mean edge maps."""
    rows = []
    for b in range(opt.shape[0]):
        y = 0.299 * opt[b, 2] + 0.587 * opt[b, 1] + 0.114 * opt[b, 0]
        g_o = sobel_mag(y)
        g_o = g_o / (g_o.max() + NORMALIZE_EPS)
        g_s = sobel_mag(sar[b].mean(axis=0))
        g_s = g_s / (g_s.max() + NORMALIZE_EPS)
        t_o, t_s = thresholded(g_o).ravel(), thresholded(g_s).ravel()
        no, ns = np.sqrt((t_o**2).sum()), np.sqrt((t_s**2).sum())
        cos = 1.0 if no == 0 and ns == 0 else float(t_o @ t_s / (no * ns + COSINE_EPS))
        a, s = t_o > 0.5, t_s > 0.5
        tp = float((a & s).sum())
        n = float(a.sum() + s.sum())
        f1 = 1.0 if n == 0 else 2.0 * tp / n
        rows.append((cos, f1, (cos + f1) / 2.0))
    return rows


def psnr_per_image(pred, target, valid, data_range=1.0):
    out = []
    for b in range(pred.shape[0]):
        m = np.broadcast_to(valid[b], pred[b].shape)
        n = m.sum()
        if n == 0:
            out.append(None)
            continue
        mse = ((pred[b] - target[b]) ** 2 * m).sum() / n
        out.append(None if mse == 0 else float(10.0 * np.log10(data_range**2 / mse)))
    return out


def gac(psnr, ssim, sar_edge):
    return 0.33 * np.clip((psnr - 20.0) / 20.0, 0, 1) + 0.33 * (ssim + 1.0) / 2.0 + 0.34 * np.clip(sar_edge, 0, 1)


def gac_lpips(psnr, ssim, sar_edge, lpips):
    return 0.25 * (
        np.clip((psnr - 20.0) / 20.0, 0, 1)
        + (ssim + 1.0) / 2.0
        + np.clip(sar_edge, 0, 1)
        + (1.0 - np.clip(lpips, 0, 1))
    )


def make_inputs(rng):
    opt = 0.04 + 0.06 * rng.random((B, 4, H, W))
    band_gain = np.array([0.6, 0.8, 1.0, 1.4])[:, None, None]
    # sample 0: a bright square and a vertical stripe; sample 1: a square elsewhere and a
    # horizontal stripe.
    opt[0, :, 3:7, 4:8] += 0.25 * band_gain
    opt[0, :, :, 10] += 0.1 * band_gain[:, :, 0]
    opt[1, :, 6:10, 1:5] += 0.2 * band_gain
    opt[1, :, 2, :] += 0.12 * band_gain[:, 0, :]
    opt = np.clip(opt, 0.0, 0.5)

    sar = -18.0 + 1.5 * rng.standard_normal((B, 2, H, W))
    sar[:, 1] -= 4.0  # VH is darker than VV
    sar[0, :, 2:7, 3:8] += 9.0  # overlaps the optical square, shifted by one pixel
    sar[0, :, :, 10] += 5.0
    sar[1, :, 6:10, 1:5] += 8.0
    sar[1, :, 9, :] += 4.0  # a stripe the optical image does not have
    sar = np.clip(sar, -25.0, -5.0)

    v2 = np.clip(opt + 0.03 * rng.standard_normal(opt.shape), 0.0, 0.5)
    truth = np.clip(opt + 0.02 * rng.standard_normal(opt.shape), 0.0, 0.5)
    valid = np.ones((B, 1, H, W))
    valid[0, 0, :2, :] = 0.0
    valid[1, 0, 5:9, 7:11] = 0.0
    return opt, sar, v2, truth, valid


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="crates/losses/tests/fixtures/grounding_vectors.json")
    args = ap.parse_args()

    rng = np.random.default_rng(SEED)
    opt, sar, v2, truth, valid = make_inputs(rng)

    edge = {
        f"adaptive_{str(a).lower()}_urban_{u:g}": edge_term(opt, sar, a, u)
        for a in (True, False)
        for u in (1.0, 3.0)
    }
    texture = texture_term(opt, sar)
    parts = sar_edge_parts(opt, sar)
    gac_cases = [
        {"psnr": 27.5, "ssim": 0.8, "sar_edge": 0.6, "lpips": 0.12},
        {"psnr": 45.0, "ssim": -0.2, "sar_edge": 1.3, "lpips": 1.5},
        {"psnr": 12.0, "ssim": 0.1, "sar_edge": -0.1, "lpips": -0.2},
    ]
    for c in gac_cases:
        c["gac"] = float(gac(c["psnr"], c["ssim"], c["sar_edge"]))
        c["gac_with_lpips"] = float(gac_lpips(c["psnr"], c["ssim"], c["sar_edge"], c["lpips"]))

    out = {
        "generator": "scripts/grounding_loss_vectors.py",
        "seed": SEED,
        "shapes": {"optical": list(opt.shape), "sar": list(sar.shape), "valid": list(valid.shape)},
        "inputs": {
            "opt_v3": opt.ravel().tolist(),
            "opt_v2": v2.ravel().tolist(),
            "truth": truth.ravel().tolist(),
            "sar": sar.ravel().tolist(),
            "valid": valid.ravel().tolist(),
        },
        "edge": edge,
        "texture": texture,
        # SarConsistency defaults: 1.0 * edge(adaptive, urban 1) + 0.5 * texture
        "sar_consistency_default": edge["adaptive_true_urban_1"] + 0.5 * texture,
        # edge_weight 0.7, texture_weight 2.0, adaptive off, urban_weight 3
        "sar_consistency_custom": 0.7 * edge["adaptive_false_urban_3"] + 2.0 * texture,
        "identity": identity_term(opt, v2, sar),
        "cycle": cycle_term(opt, v2),
        "spectral": spectral_term(opt, truth, valid),
        "mean_confidence": float(confidence(sar).mean()),
        "sar_edge_cosine": [p[0] for p in parts],
        "sar_edge_f1": [p[1] for p in parts],
        "sar_edge_score": [p[2] for p in parts],
        "psnr_v2": psnr_per_image(v2, truth, valid),
        "psnr_v3": psnr_per_image(opt, truth, valid),
        "gac": gac_cases,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")
    print({k: out[k] for k in ("edge", "texture", "identity", "cycle", "spectral", "mean_confidence")})
    print("sar_edge", parts, "psnr", out["psnr_v2"], out["psnr_v3"])


if __name__ == "__main__":
    main()
