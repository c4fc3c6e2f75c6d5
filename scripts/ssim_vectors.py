#!/usr/bin/env python3
"""Generate SSIM / MS-SSIM reference vectors for the tests of the `losses` crate
(`crates/losses/tests/pixel_structure.rs`).

Usage:
    pip install -r scripts/requirements-ssim.txt
    python scripts/ssim_vectors.py crates/losses/tests/fixtures/ssim_vectors.json

With no argument the JSON goes to stdout. The output is deterministic (seeded numpy PCG64, no
timestamps, versions written without local "+cpu"-style suffixes), so regenerating with the same
package versions gives a byte-identical file. The Rust tests only read the committed JSON.

Inputs
------
Every input is stored once under "inputs" as flat row-major [B, C, H, W] lists of integers
k in 0..=255 ("pred" and "target"). A case turns them into values with
`value = offset + scale * k` and takes the top-left crop [:, :channels, :height, :width].
The two affine maps used are (offset 0, scale 1/256) -> [0, 1) with data_range 1.0 and
(offset -1, scale 1/128) -> [-1, 1) with data_range 2.0. Both are exact in f32 and f64, so the
Rust tests (f32) and this script (f64) see exactly the same numbers.

Reference values
----------------
All references are computed in float64.

* SSIM: `torchmetrics.functional.image.structural_similarity_index_measure` (defaults: Gaussian
  window, sigma 1.5 -> 11 taps, k1 0.01, k2 0.03), `reduction="none"` for the per-image values and
  "elementwise_mean" for the batch value. The `torchmetrics.image.StructuralSimilarityIndexMeasure`
  module, run in float32 as the reference implementation ran it, is checked against it to 1e-5
  (f32 cancellation in E[x^2] - mu^2 alone costs up to ~2e-6 on the smallest case).
* MS-SSIM, H and W >= 176 (five scales fit): `multiscale_structural_similarity_index_measure`
  with the default betas and normalize="relu". Checked against the explicit rule below.
* MS-SSIM, smaller tiles: torchmetrics raises ValueError (recorded per case as
  "torchmetrics_raises"). The expected value comes from `explicit_ms_ssim`, which implements
  the crate's rule from torchmetrics' own per-scale pieces (`_get_normalized_sim_and_cs` and
  `F.avg_pool2d(2)`): scale i (0-based) is used when floor(H / 2^i) >= kernel_size and
  floor(W / 2^i) >= kernel_size; when every scale is used the betas are taken as given (the
  default ones sum to 1.0001, exactly as torchmetrics uses them), otherwise the first n betas are
  divided by their sum; per image, value = prod_{i<n-1} relu(cs_i)^w_i * relu(sim_{n-1})^w_{n-1}.
* Cross-check with pytorch_msssim: at every scale, torchmetrics' contrast-sensitivity term
  (mean over channels of the cropped cs map) must equal the channel mean of
  `pytorch_msssim.ssim._ssim(...)[1]` (valid convolution). pytorch_msssim's own top-level
  `ssim` / `ms_ssim` values are recorded for information only: they are a different definition
  (valid convolution for the SSIM map instead of reflection padding, product per channel before
  the channel mean, zero-padded pooling of odd sizes), so they do not equal torchmetrics'.
"""
import importlib.metadata
import json
import sys
import warnings

import numpy as np
import pytorch_msssim
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _ssim as pm_ssim_pieces
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure as tm_ms_ssim,
)
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
from torchmetrics.functional.image.ssim import _get_normalized_sim_and_cs
from torchmetrics.image import StructuralSimilarityIndexMeasure

warnings.filterwarnings("ignore")

SEED = 20250611
KERNEL_SIZE = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03
BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
UNIT = (0.0, 1.0 / 256.0)  # value = offset + scale * k, data_range 1.0
PM1 = (-1.0, 1.0 / 128.0)  # data_range 2.0


def _blur(x, sigma):
    """Gaussian blur (reflect padding) of a float64 [N, C, H, W] tensor, per channel."""
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def _quantise(v):
    return np.clip(np.rint(v * 256.0), 0, 255).astype(np.int64)


def make_pair(rng, shape, noise, anti=()):
    """A smooth random image plus white noise, and a target that is the image with extra
    per-image noise levels `noise[b]`; images listed in `anti` get an inverted target."""
    b, c, h, w = shape
    base = torch.from_numpy(rng.standard_normal(shape))
    smooth = _blur(base, 2.5).numpy()
    smooth = smooth / (smooth.std(axis=(2, 3), keepdims=True) + 1e-12)
    pred = 0.5 + 0.18 * smooth + 0.06 * rng.standard_normal(shape)
    target = pred.copy()
    for i in range(b):
        extra = _blur(torch.from_numpy(rng.standard_normal((1, c, h, w))), 1.0).numpy()[0]
        target[i] = pred[i] + noise[i] * (rng.standard_normal((c, h, w)) + extra)
        if i in anti:
            target[i] = 1.0 - target[i]
    return _quantise(pred), _quantise(target)


def values(ints, channels, height, width, affine):
    offset, scale = affine
    x = torch.from_numpy(ints[:, :channels, :height, :width].astype(np.float64))
    return offset + scale * x


def explicit_ms_ssim(x, y, data_range, betas=BETAS, kernel_size=KERNEL_SIZE):
    """The crate's fewer-scales rule built from torchmetrics' per-scale pieces."""
    h, w = x.shape[-2:]
    n = sum(1 for i in range(len(betas)) if h // 2**i >= kernel_size and w // 2**i >= kernel_size)
    assert n >= 1
    used = torch.tensor(betas[:n], dtype=torch.float64)
    # All scales fit: the betas as given (torchmetrics; the default ones sum to 1.0001).
    # Fewer fit: the used ones divided by their sum.
    weights = used if n == len(betas) else used / used.sum()
    result = torch.ones(x.shape[0], dtype=torch.float64)
    cs_per_scale = []
    for i in range(n):
        sim, cs = _get_normalized_sim_and_cs(
            x, y, sigma=SIGMA, kernel_size=kernel_size, data_range=data_range, k1=K1, k2=K2, normalize="relu"
        )
        cs_per_scale.append(cs)
        term = cs if i < n - 1 else sim
        result = result * term ** weights[i]
        x = F.avg_pool2d(x, (2, 2))
        y = F.avg_pool2d(y, (2, 2))
    return result, n, weights.tolist(), cs_per_scale


def pytorch_msssim_cs_check(x, y, data_range, cs_per_scale):
    """Compare torchmetrics' relu'd cs at each scale but the last with pytorch_msssim's pieces."""
    coords = torch.arange(KERNEL_SIZE, dtype=torch.float64) - KERNEL_SIZE // 2
    g = torch.exp(-(coords**2) / (2 * SIGMA**2))
    win = (g / g.sum()).view(1, 1, -1).repeat(x.shape[1], 1, 1).unsqueeze(1)
    worst = 0.0
    for cs_tm in cs_per_scale[:-1]:
        _, cs_pm = pm_ssim_pieces(x, y, data_range=data_range, win=win, size_average=False, K=(K1, K2))
        worst = max(worst, (torch.relu(cs_pm.mean(1)) - cs_tm).abs().max().item())
        x = F.avg_pool2d(x, (2, 2))
        y = F.avg_pool2d(y, (2, 2))
    assert worst < 1e-12, worst
    return worst


def ssim_case(name, inputs, key, channels, height, width, affine, data_range):
    pred_k, target_k = inputs[key]
    x = values(pred_k, channels, height, width, affine)
    y = values(target_k, channels, height, width, affine)
    per_image = tm_ssim(x, y, data_range=data_range, reduction="none")
    mean = tm_ssim(x, y, data_range=data_range)
    module = StructuralSimilarityIndexMeasure(data_range=data_range)
    module.update(x.float(), y.float())
    module_f32 = module.compute().item()
    assert abs(module_f32 - mean.item()) < 1e-5, (name, module_f32, mean.item())
    assert abs(per_image.mean().item() - mean.item()) < 1e-15
    case = {
        "name": name,
        "input": key,
        "channels": channels,
        "height": height,
        "width": width,
        "offset": affine[0],
        "scale": affine[1],
        "data_range": data_range,
        "per_image": per_image.tolist(),
        "mean": mean.item(),
        "torchmetrics_module_f32": module_f32,
    }
    if min(height, width) >= KERNEL_SIZE:
        case["pytorch_msssim_ssim"] = pytorch_msssim.ssim(
            x, y, data_range=data_range, size_average=False, win_size=KERNEL_SIZE, win_sigma=SIGMA
        ).tolist()
    return case


def ms_ssim_case(name, inputs, key, channels, height, width, affine, data_range):
    pred_k, target_k = inputs[key]
    x = values(pred_k, channels, height, width, affine)
    y = values(target_k, channels, height, width, affine)
    explicit, n, weights, cs_per_scale = explicit_ms_ssim(x, y, data_range)
    worst_cs = pytorch_msssim_cs_check(x, y, data_range, cs_per_scale)
    try:
        tm = tm_ms_ssim(x, y, data_range=data_range, reduction="none", normalize="relu")
        raises = False
    except ValueError:
        tm = None
        raises = True
    if tm is not None:
        assert n == len(BETAS), (name, n)
        # torchmetrics builds its betas tensor in float32, hence the 1e-9 and not 1e-15.
        assert (tm - explicit).abs().max().item() < 1e-9, (name, tm, explicit)
        per_image = tm
        source = "torchmetrics"
    else:
        assert n < len(BETAS), (name, n)
        per_image = explicit
        source = "explicit fewer-scales rule from torchmetrics per-scale pieces"
    case = {
        "name": name,
        "input": key,
        "channels": channels,
        "height": height,
        "width": width,
        "offset": affine[0],
        "scale": affine[1],
        "data_range": data_range,
        "scales": n,
        "betas_used": weights,
        "per_image": per_image.tolist(),
        "mean": per_image.mean().item(),
        "source": source,
        "torchmetrics_raises": raises,
        "pytorch_msssim_cs_max_abs_diff": worst_cs,
    }
    if min(height, width) > (KERNEL_SIZE - 1) * 2**4:
        case["pytorch_msssim_ms_ssim"] = pytorch_msssim.ms_ssim(
            x, y, data_range=data_range, size_average=False, win_size=KERNEL_SIZE, win_sigma=SIGMA
        ).tolist()
    # Autograd of 1 - MS-SSIM through the same torch pieces stays finite even where a relu clips
    # a term to 0 (the infinite derivative of 0 ** beta is masked out by relu's backward); the
    # Rust tests check the same property.
    xg = x.clone().requires_grad_(True)
    (1 - explicit_ms_ssim(xg, y, data_range)[0].mean()).backward()
    case["torch_autograd_finite"] = bool(torch.isfinite(xg.grad).all())
    return case


def main():
    rng = np.random.default_rng(SEED)
    inputs = {
        "a32": make_pair(rng, (2, 4, 32, 32), noise=(0.05, 0.12)),
        "anti48": make_pair(rng, (2, 1, 48, 48), noise=(0.05, 0.05), anti=(1,)),
        "m176": make_pair(rng, (2, 2, 176, 176), noise=(0.04, 0.1)),
    }

    ssim_cases = [
        ssim_case("a32 c1", inputs, "a32", 1, 32, 32, UNIT, 1.0),
        ssim_case("a32 c4", inputs, "a32", 4, 32, 32, UNIT, 1.0),
        ssim_case("a32 c4 [-1,1] data_range 2", inputs, "a32", 4, 32, 32, PM1, 2.0),
        ssim_case("a32 c4 20x27", inputs, "a32", 4, 20, 27, UNIT, 1.0),
        ssim_case("a32 c2 8x9 (smaller than the window)", inputs, "a32", 2, 8, 9, UNIT, 1.0),
        ssim_case("anti48 (image 1 anti-correlated)", inputs, "anti48", 1, 48, 48, UNIT, 1.0),
    ]
    ms_cases = [
        ms_ssim_case("m176 c2", inputs, "m176", 2, 176, 176, UNIT, 1.0),
        ms_ssim_case("m176 c2 [-1,1] data_range 2", inputs, "m176", 2, 176, 176, PM1, 2.0),
        ms_ssim_case("m176 c1", inputs, "m176", 1, 176, 176, UNIT, 1.0),
        ms_ssim_case("175 c2", inputs, "m176", 2, 175, 175, UNIT, 1.0),
        ms_ssim_case("128 c2", inputs, "m176", 2, 128, 128, UNIT, 1.0),
        ms_ssim_case("128 c2 [-1,1] data_range 2", inputs, "m176", 2, 128, 128, PM1, 2.0),
        ms_ssim_case("120 c2", inputs, "m176", 2, 120, 120, UNIT, 1.0),
        ms_ssim_case("90x133 c2", inputs, "m176", 2, 90, 133, UNIT, 1.0),
        ms_ssim_case("60 c2", inputs, "m176", 2, 60, 60, UNIT, 1.0),
        ms_ssim_case("22 c2", inputs, "m176", 2, 22, 22, UNIT, 1.0),
        ms_ssim_case("21 c2", inputs, "m176", 2, 21, 21, UNIT, 1.0),
        ms_ssim_case("anti48 (image 1 clipped by relu)", inputs, "anti48", 1, 48, 48, UNIT, 1.0),
    ]

    doc = {
        "generator": "scripts/ssim_vectors.py",
        "versions": {
            "torch": torch.__version__.split("+")[0],
            "torchmetrics": importlib.metadata.version("torchmetrics"),
            "pytorch_msssim": importlib.metadata.version("pytorch_msssim"),
            "numpy": np.__version__,
        },
        "seed": SEED,
        "defaults": {"kernel_size": KERNEL_SIZE, "sigma": SIGMA, "k1": K1, "k2": K2, "betas": list(BETAS)},
        "inputs": {
            key: {"shape": list(p.shape), "pred": p.ravel().tolist(), "target": t.ravel().tolist()}
            for key, (p, t) in inputs.items()
        },
        "ssim": ssim_cases,
        "ms_ssim": ms_cases,
    }
    text = json.dumps(doc, separators=(",", ":"))
    if len(sys.argv) > 2:
        sys.exit("usage: ssim_vectors.py [OUT.json]")
    if len(sys.argv) == 2:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
