#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (`.pth` / `.pt`) into a safetensors file trainyard can load.

    python scripts/pth_to_safetensors.py MODEL.pth MODEL.safetensors [--key model_state_dict]

The state dict keeps its keys (e.g. upstream HOSER's `road_network_encoder.road_id_emb.weight`),
so `hoser::model::Hoser::load_safetensors` finds every parameter by name. Floating tensors are
written as float32 (what the importers read), integer buffers keep their type. A checkpoint that
wraps the state dict (`{"model_state_dict": ..., "optimizer_state_dict": ...}`) is unwrapped with
`--key` (default: `model_state_dict`, `state_dict` or `model` if present).

Needs torch and safetensors (scripts/requirements-vectors.txt).
"""

import argparse
import sys

import torch
from safetensors.torch import save_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="PyTorch checkpoint (.pth / .pt)")
    ap.add_argument("dst", help="safetensors file to write")
    ap.add_argument("--key", help="entry holding the state dict in a wrapped checkpoint")
    args = ap.parse_args()

    obj = torch.load(args.src, map_location="cpu", weights_only=True)
    if args.key:
        if args.key not in obj:
            print(f"{args.src}: no entry {args.key!r}; it has {sorted(obj)}", file=sys.stderr)
            return 2
        obj = obj[args.key]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("model_state_dict", "state_dict", "model"):
            if k in obj:
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        print(f"{args.src}: not a state dict of tensors (use --key to pick the entry)", file=sys.stderr)
        return 2
    out = {}
    for name, t in obj.items():
        t = t.detach().cpu()
        out[name] = (t.float() if t.is_floating_point() else t).contiguous()
    save_file(out, args.dst)
    print(f"{args.dst}: {len(out)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
