#!/usr/bin/env python3
"""Parity vectors for the burn HOSER model (crates/hoser/src/model.rs).

Builds upstream HOSER (github.com/caoji2001/HOSER, MIT; pass the path of a checkout, nothing is
vendored) with tiny dimensions, seeded random weights, the graph features and one batch written by
`cargo run -p hoser --example parity_inputs -- crates/hoser/tests/fixtures/tiny <batch.json>`, and
writes next to that batch:

  weights.safetensors  the full upstream state dict (parameters and buffers), float32
  expected.json        upstream's logits and time predictions [B, T, C] for the batch

Usage: hoser_reference_vectors.py <upstream checkout> <dir holding batch.json>
Needs torch, torch_geometric, safetensors and numpy.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import torch
from safetensors.torch import save_file

# Tiny dimensions; must match `parity_config()` in crates/hoser/tests/model.rs.
ROAD_ID_EMB, ATTR_EMB, NUM_HEADS, NUM_LAYERS, MAX_LEN, SEED = 8, 2, 2, 2, 64, 0


def main():
    upstream, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(upstream))
    from models.hoser import HOSER  # noqa: E402  (upstream code, imported from the checkout)

    inputs = json.loads((out_dir / "batch.json").read_text())
    f, b = inputs["features"], inputs["batch"]
    n = len(f["road_attr_len"])
    d = ROAD_ID_EMB + 4 * ATTR_EMB
    rne = NS(road_id_emb_dim=ROAD_ID_EMB, len_emb_dim=ATTR_EMB, type_emb_dim=ATTR_EMB, lon_emb_dim=ATTR_EMB,
             lat_emb_dim=ATTR_EMB, intersection_emb_dim=d, zone_id_emb_dim=d, road_id_num_embeddings=n,
             type_num_embeddings=f["num_road_types"], zone_id_num_embeddings=f["num_zones"])
    feature = NS(
        road_attr=NS(len=np.array(f["road_attr_len"], np.float32), type=np.array(f["road_attr_type"], np.int64),
                     lon=np.array(f["road_attr_lon"], np.float32), lat=np.array(f["road_attr_lat"], np.float32)),
        road_edge_index=np.array(f["road_edge_index"], np.int64).reshape(2, -1),
        intersection_attr=np.array(f["intersection_attr"], np.float32).reshape(-1, 2),
        zone_edge_index=np.array(f["zone_edge_index"], np.int64).reshape(2, -1),
        zone_edge_weight=np.array(f["zone_edge_weight"], np.float32),
    )
    traj = NS(hidden_dim=d, num_heads=NUM_HEADS, num_layers=NUM_LAYERS, dropout=0.0, max_len=MAX_LEN)
    nav = NS(hidden_dim=d)
    torch.manual_seed(SEED)
    model = HOSER(rne, feature, traj, nav, np.array(f["road_to_zone"], np.int64))
    # Upstream zero-initialises some biases; perturb every parameter so that each one matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()

    bs, t, c = b["shape"]

    def ft(key, *shape):
        return torch.tensor(b[key], dtype=torch.float32).reshape(*shape)

    def it(key, *shape):
        return torch.tensor(b[key], dtype=torch.int64).reshape(*shape)

    with torch.no_grad():
        model.setup_road_network_features()
        logits, time_pred = model(
            it("trace_road_id", bs, t), ft("temporal_info", bs, t), ft("trace_distance_mat", bs, t, t),
            ft("trace_time_interval_mat", bs, t, t), it("trace_len", bs), it("destination_road_id", bs),
            it("candidate_road_id", bs, t, c), ft("metric_dis", bs, t, c), ft("metric_angle", bs, t, c))

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "weights.safetensors"))
    expected = {"shape": [bs, t, c], "logits": logits.flatten().tolist(), "time": time_pred.flatten().tolist()}
    (out_dir / "expected.json").write_text(json.dumps(expected))
    print(f"{sum(p.numel() for p in model.parameters())} parameters, {len(state)} state-dict keys")


if __name__ == "__main__":
    main()
