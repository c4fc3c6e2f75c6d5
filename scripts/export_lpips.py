#!/usr/bin/env python3
"""Export LPIPS weights (Zhang et al. 2018, the `lpips` PyPI package, v0.1 heads) to the
safetensors file that `losses::lpips` loads, and generate that module's test fixture.

Usage:
    pip install -r scripts/requirements-lpips.txt

    # Real LPIPS: the ImageNet trunk comes from torchvision (downloaded on first use), the
    # calibrated linear heads ship inside the lpips wheel.
    python scripts/export_lpips.py --net alex --out lpips_alex.safetensors
    python scripts/export_lpips.py --net vgg --out lpips_vgg.safetensors

    # The same key layout filled with deterministic synthetic weights (no download). Not LPIPS:
    # only for tests and for checking a loader.
    python scripts/export_lpips.py --net alex --random --seed 1 --out synthetic_alex.safetensors

    # Regenerate the Rust test fixture (expected values computed by the lpips package itself).
    python scripts/export_lpips.py --fixture crates/losses/tests/fixtures/lpips_reference.json

Key layout: exactly the trunk (`net.*`) and head (`lin*`) entries of the state dict of
`lpips.LPIPS(net=...)`, float32, in state-dict order. The `scaling_layer.*` buffers (fixed
constants) and the `lins.*` aliases of the `lin*` heads are left out. For `alex`:

    net.slice1.0.weight  [64, 3, 11, 11]    net.slice1.0.bias  [64]
    net.slice2.3.weight  [192, 64, 5, 5]    net.slice2.3.bias  [192]
    net.slice3.6.weight  [384, 192, 3, 3]   net.slice3.6.bias  [384]
    net.slice4.8.weight  [256, 384, 3, 3]   net.slice4.8.bias  [256]
    net.slice5.10.weight [256, 256, 3, 3]   net.slice5.10.bias [256]
    lin0.model.1.weight [1, 64, 1, 1] ... lin4.model.1.weight [1, 256, 1, 1]

For `vgg` the trunk keys are net.slice1.{0,2}, net.slice2.{5,7}, net.slice3.{10,12,14},
net.slice4.{17,19,21}, net.slice5.{24,26,28} (.weight [out, in, 3, 3] and .bias [out]), and
the heads have 64, 128, 256, 512, 512 input channels.

Synthetic weights (`--random`, and the fixture), reproduced bit for bit by the Rust tests:
    splitmix64(z): z += 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9;
                   z = (z ^ z>>27) * 0x94D049BB133111EB; return z ^ z>>31   (all mod 2^64)
    u(seed, stream, i) = (splitmix64(seed<<40 | stream<<32 | i) >> 40) / 2^24     in [0, 1)
For the tensor at position t of the key list (0-based) and flat row-major index i, with
u = u(seed, t, i), computed in float64 and rounded once to float32:
    conv weight: (2u - 1) * sqrt(6 / fan_in),  fan_in = in_channels * kh * kw
    conv bias:   (2u - 1) * 0.1
    head weight: u                               (non-negative, as trained LPIPS heads are)
Fixture inputs use the same generator with stream 200 (first image) and 201 (second image):
2u - 1 for inputs in [-1, 1], u for inputs in [0, 1].

The fixture is deterministic: no timestamps, torch version without its local suffix.
"""
import argparse
import json
import math
import re
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")  # torchvision's `pretrained=` deprecation notices

import lpips  # noqa: E402  (after the warnings filter)
from safetensors.torch import save_file  # noqa: E402

INPUT_STREAMS = (200, 201)


def build(net, pretrained):
    """lpips.LPIPS with (pretrained=True) ImageNet trunk + calibrated heads, or random init."""
    return lpips.LPIPS(net=net, pretrained=pretrained, pnet_rand=not pretrained, verbose=False).eval()


def exported_keys(model):
    """The documented keys, in state-dict order: trunk convs then heads lin0..lin4."""
    return [k for k in model.state_dict() if k.startswith("net.") or re.match(r"lin\d+\.", k)]


def splitmix64(z):
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed, stream, n):
    """n float64 values u(seed, stream, i), i = 0..n-1, each a multiple of 2^-24 in [0, 1)."""
    assert 0 <= seed < (1 << 24) and 0 <= stream < 256 and n < (1 << 32)
    base = np.uint64((seed << 40) | (stream << 32))
    z = splitmix64(base + np.arange(n, dtype=np.uint64))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def synthetic_state(model, seed):
    """Deterministic float32 weights for every exported key (see the module docstring)."""
    sd = model.state_dict()
    out = {}
    for t, key in enumerate(exported_keys(model)):
        shape = tuple(sd[key].shape)
        u = uniform(seed, t, int(np.prod(shape)))
        if key.startswith("lin"):  # lin0..lin4 only: exported_keys leaves out the lins.* aliases
            v = u
        elif key.endswith(".bias"):
            v = (2.0 * u - 1.0) * 0.1
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            v = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)
        out[key] = torch.from_numpy(v.astype(np.float32).reshape(shape))
    return out


def load_synthetic(model, seed):
    """Loads synthetic weights; only the left-out scaling buffers and lins.* aliases may be absent."""
    missing, unexpected = model.load_state_dict(synthetic_state(model, seed), strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("scaling_layer.", "lins.")) for k in missing), missing
    return model


def export(net, out, random_seed=None):
    if random_seed is None:
        model = build(net, pretrained=True)
        sd = model.state_dict()
        tensors = {k: sd[k].detach().to(torch.float32).contiguous() for k in exported_keys(model)}
        kind = "pretrained"
    else:
        model = build(net, pretrained=False)
        tensors = synthetic_state(model, random_seed)
        kind = f"synthetic seed {random_seed} (not LPIPS)"
    save_file(tensors, out, metadata={"lpips_net": net, "lpips_version": "0.1", "weights": kind})
    print(f"wrote {out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} parameters ({kind})")


def run_case(net, weight_seed, input_seed, shape, input_range):
    """Expected LPIPS (float64 evaluation of the lpips package) for one synthetic case."""
    model = load_synthetic(build(net, pretrained=False), weight_seed)
    n = int(np.prod(shape))
    images = []
    for stream in INPUT_STREAMS:
        u = uniform(input_seed, stream, n)
        v = 2.0 * u - 1.0 if input_range == "minus_one_to_one" else u
        images.append(torch.from_numpy(v.astype(np.float32).reshape(shape)))
    normalize = input_range == "zero_to_one"
    with torch.no_grad():
        m64 = model.double()
        total, layers = m64(images[0].double(), images[1].double(), retPerLayer=True, normalize=normalize)
        m32 = load_synthetic(build(net, pretrained=False), weight_seed)
        total32 = m32(images[0], images[1], normalize=normalize)
    b = shape[0]
    return {
        "net": net,
        "weight_seed": weight_seed,
        "input_seed": input_seed,
        "shape": list(shape),
        "input_range": input_range,
        "expected": [float(v) for v in total.reshape(b)],
        "expected_per_layer": [[float(layer.reshape(b)[i]) for layer in layers] for i in range(b)],
        "expected_float32_torch": [float(v) for v in total32.reshape(b)],
        "first_input_values": [float(v) for v in images[0].reshape(-1)[:4]],
    }


def fixture():
    cases = [
        run_case("alex", 1, 2, (2, 3, 64, 48), "minus_one_to_one"),
        run_case("alex", 3, 4, (1, 3, 40, 56), "zero_to_one"),
        run_case("vgg", 5, 6, (2, 3, 24, 16), "minus_one_to_one"),
    ]
    samples = {}
    for net, seed in (("alex", 1), ("vgg", 5)):
        model = build(net, pretrained=False)
        state = synthetic_state(model, seed)
        samples[net] = [
            {"key": k, "shape": list(state[k].shape), "first_values": [float(v) for v in state[k].reshape(-1)[:3]]}
            for k in exported_keys(model)
        ]
    torch_version = torch.__version__.split("+")[0]
    return {
        "generator": "scripts/export_lpips.py --fixture",
        "lpips_package": f"lpips 0.1.4 (LPIPS v0.1), torch {torch_version}, evaluated in float64",
        "weights": "synthetic (splitmix64 formula in scripts/export_lpips.py), not LPIPS",
        "tensors": samples,
        "cases": cases,
    }


def dump_json(obj):
    """Indented JSON with every list of plain numbers kept on one line."""
    text = json.dumps(obj, indent=1)
    def one_line(m):
        return "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]"

    return re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", one_line, text) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", choices=["alex", "vgg"], default="alex")
    p.add_argument("--out", help="safetensors file to write")
    p.add_argument("--random", action="store_true", help="deterministic synthetic weights, no download")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (0 <= seed < 2^24)")
    p.add_argument("--fixture", metavar="JSON", help="write the Rust test fixture instead")
    a = p.parse_args()
    if a.fixture:
        with open(a.fixture, "w") as f:
            f.write(dump_json(fixture()))
        print(f"wrote {a.fixture}")
        return
    if not a.out:
        p.error("--out is required (or --fixture)")
    export(a.net, a.out, a.seed if a.random else None)


if __name__ == "__main__":
    sys.exit(main())
