#!/usr/bin/env python3
"""Training throughput of upstream HOSER (github.com/caoji2001/HOSER, MIT) on CPU, for comparison
with `hoser-vanilla` (see ARCHITECTURE.md, "HOSER training throughput vs upstream (CPU)").

Upstream's train.py only runs on CUDA (`device = f'cuda:{args.cuda}'`, autocast, GradScaler), so
this driver runs its training step on the CPU in float32: upstream's model (`models.hoser.HOSER`,
imported from a checkout given on the command line; nothing is vendored) with train.py's recipe —
`setup_road_network_features()` every step, masked next-road cross-entropy plus the log1p relative
time loss, AdamW (lr 1e-3, weight decay 0.1) with linear warm-up then cosine, gradient-norm clip 1.0.
Upstream's preprocessing (pandas, shapely, haversine) is restated here with numpy so that only
torch, torch_geometric and numpy are needed; the tensor shapes (trace lengths, candidate sets) are
the dataset's, and preprocessing is not timed anyway.

Zones: the driver writes a `road_network_partition` file (roads sorted by centroid longitude, cut
into `--num-zones` strips) into `--stage DIR` next to copies of the LibCity files, and trains from
there; point `hoser-vanilla --data-dir DIR` at the same directory so both sides use the same zones.

Throughput = trajectory steps (valid next-step targets, Σ trace_len) per second of training steps.
A step's time is measured as hoser-vanilla's `step_time`: collating the batch, forward, backward,
clipping and the optimiser update; data loading, preprocessing, validation and checkpoints are
outside it. Whole epochs are timed, the first `--warmup-epochs` are left out. The upstream line
also reports the process CPU time of the timed steps (`cpu_seconds`), which shows how much of
the wall time a busy machine took away.

Usage:
  hoser_upstream_throughput.py upstream <checkout> <libcity dir> --stage DIR [--batch-size 64]
      [--epochs 6] [--warmup-epochs 1] [--threads 2] [--num-zones 20] [--seed 0]
  hoser_upstream_throughput.py ours <training.jsonl> <libcity dir> [--warmup-epochs 1]
      (the same numbers for a hoser-vanilla run, from its per-step `step_time`)
Each prints one JSON line.
"""

import argparse
import csv
import json
import math
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np

LIBCITY_FILES = ["roadmap.geo", "roadmap.rel", "train.csv", "val.csv", "test.csv"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rid_list(row):
    return [int(x) for x in row["rid_list"].strip("[]() ").split(",")]


def steps_per_epoch(data_dir):
    """Σ trace_len over the training split: the next-step targets of one epoch."""
    return sum(len(rid_list(r)) - 1 for r in rows(Path(data_dir) / "train.csv"))


def summary(side, epoch_times, steps_per_epoch_, batches, extra):
    total = sum(epoch_times)
    out = {
        "side": side,
        "timed_epochs": len(epoch_times),
        "optimizer_steps": batches,
        "trajectory_steps": steps_per_epoch_ * len(epoch_times),
        "train_seconds": round(total, 4),
        "traj_steps_per_s": round(steps_per_epoch_ * len(epoch_times) / total, 1),
        "s_per_optimizer_step": round(total / batches, 4),
    }
    out.update(extra)
    return out


# --- hoser-vanilla side: read its telemetry ------------------------------------------------------


def ours(args):
    steps = [json.loads(line) for line in open(args.jsonl)]
    steps = [e for e in steps if e.get("event") == "train_step"]
    epochs = sorted({e["epoch"] for e in steps})
    timed = [ep for ep in epochs if ep >= args.warmup_epochs]
    if not timed:
        sys.exit("no epoch left after the warm-up epochs")
    times = [sum(e["step_time"] for e in steps if e["epoch"] == ep) for ep in timed]
    n = sum(1 for e in steps if e["epoch"] in timed)
    print(json.dumps(summary("hoser-vanilla", times, steps_per_epoch(args.data_dir), n, {})))


# --- upstream side --------------------------------------------------------------------------------


def haversine_m(a, b):
    """Great-circle metres between [.., 2] arrays of (lat, lon) degrees (haversine's 'm')."""
    a, b = np.radians(a), np.radians(b)
    dlat, dlon = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(a[..., 0]) * np.cos(b[..., 0]) * np.sin(dlon / 2) ** 2
    return 2 * 6371008.8 * np.arcsin(np.sqrt(h))


def centroid(coords):
    """Centroid of a line string (length-weighted segment midpoints, as shapely)."""
    p = np.asarray(coords, dtype=np.float64)
    if len(p) == 1:
        return p[0]
    seg = np.linalg.norm(p[1:] - p[:-1], axis=1)
    if seg.sum() == 0:
        return p[0]
    return ((p[1:] + p[:-1]) / 2 * seg[:, None]).sum(0) / seg.sum()


def standardize(x):
    return ((x - x.mean()) / x.std()).astype(np.float32)


def stage(src, dst, num_zones):
    """Copies the LibCity files and writes a `road_network_partition` into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in LIBCITY_FILES:
        shutil.copyfile(src / name, dst / name)
    geo = rows(src / "roadmap.geo")
    lon = np.array([centroid(json.loads(r["coordinates"]))[0] for r in geo])
    zone = np.empty(len(geo), dtype=np.int64)
    zone[np.argsort(lon, kind="stable")] = np.arange(len(geo)) * num_zones // len(geo)
    (dst / "road_network_partition").write_text("".join(f"{z}\n" for z in zone))


def upstream(args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(args.checkout).resolve()))
    from models.hoser import HOSER  # noqa: E402  (upstream code, imported from the checkout)
    from utils import get_angle  # noqa: E402

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    stage(Path(args.data_dir), Path(args.stage), args.num_zones)
    d = Path(args.stage)

    # Road features (train.py's preprocessing).
    geo = rows(d / "roadmap.geo")
    n = len(geo)
    coords = [json.loads(r["coordinates"]) for r in geo]
    coord_keys = [json.loads(r["coordinates"], parse_float=str) for r in geo]
    cent = np.array([centroid(c) for c in coords])  # (lon, lat)
    center_gps = cent[:, ::-1].copy()  # (lat, lon)
    highway = [r["highway"] for r in geo]
    for i, h in enumerate(highway):
        if h.startswith("[") and h.endswith("]"):
            info = [s.strip(" '\"") for s in h[1:-1].split(",")]
            highway[i] = info[0] if info[0] != "unclassified" else info[1]
    _, road_type = np.unique(highway, return_inverse=True)
    reach = {i: [] for i in range(n)}
    for r in rows(d / "roadmap.rel"):
        reach[int(r["origin_id"])].append(int(r["destination_id"]))
    by_end = {}
    for i, c in enumerate(coord_keys):
        for end in {tuple(c[0]), tuple(c[-1])}:
            by_end.setdefault(end, []).append(i)
    adj = np.zeros((n, n), dtype=bool)
    for ids in by_end.values():
        for a in ids:
            for b in ids:
                adj[a, b] |= a != b
    heading = [get_angle(c[0][1], c[0][0], c[-1][1], c[-1][0]) for c in coords]
    src, dst = np.nonzero(adj)
    angle = np.abs(np.array(heading)[src] - np.array(heading)[dst])
    angle = np.where(angle > math.pi, 2 * math.pi - angle, angle) / math.pi
    reachable = np.array([float(b in reach[a]) for a, b in zip(src, dst)])

    zone = np.array([int(x) for x in (d / "road_network_partition").read_text().split()])
    num_zones = int(zone.max()) + 1

    # Trajectories (dataset.py's per-trip tensors).
    def load(split):
        out = []
        for r in rows(d / f"{split}.csv"):
            rid = rid_list(r)
            ts = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t in r["time_list"].split(",")]
            trace = np.array(rid[:-1])
            tinfo = np.array([(t.hour * 60 + t.minute + t.second / 60) / 1440 for t in ts[:-1]], np.float32)
            if ts[0].weekday() >= 5:
                tinfo *= -1.0
            g = center_gps[trace]
            dist = np.clip(haversine_m(g[:, None], g[None, :]), 0, 1000).astype(np.float32) / 1000
            tint = np.clip(np.abs(tinfo[:, None] * 1440 - tinfo * 1440), 0, 5) / 5
            dest = rid[-1]
            cands, mdis, mang = [], [], []
            for road in trace:
                c = np.array(reach[road])
                dm = haversine_m(center_gps[c], center_gps[dest][None]).astype(np.float32)
                a1 = np.array([get_angle(*coords[road][-1], *coords[x][-1]) for x in c])
                a2 = get_angle(*coords[road][-1], *coords[dest][-1])
                ang = np.abs(a1 - a2).astype(np.float32)
                cands.append(c)
                mdis.append(np.log1p((dm - dm.min()) / 100))
                mang.append(np.where(ang > math.pi, 2 * math.pi - ang, ang) / math.pi)
            label = np.array([reach[rid[i]].index(rid[i + 1]) for i in range(len(trace))])
            secs = np.array([(ts[i + 1] - ts[i]).total_seconds() for i in range(len(trace))], np.float32)
            out.append((trace, tinfo, dist, tint, dest, cands, mdis, mang, label, secs))
        return out

    train = load("train")
    trans = np.zeros((num_zones, num_zones), np.float32)
    for t in train:
        z = zone[np.append(t[0], t[4])]
        for a, b in zip(z[:-1], z[1:]):
            if a != b:
                trans[a, b] += 1
    zsrc, zdst = np.nonzero(trans)
    dinv = 1.0 / np.sqrt(np.maximum(trans.sum(1), 1.0))
    zweight = (trans * dinv[:, None] * dinv[None, :])[zsrc, zdst].astype(np.float32)
    log_secs = np.log1p(np.concatenate([t[9] for t in train]))
    t_mean, t_std = float(log_secs.mean()), float(log_secs.std())

    def collate(items):
        b, tt = len(items), max(len(x[0]) for x in items)
        cc = max(len(c) for x in items for c in x[5])
        road = np.zeros((b, tt), np.int64)
        tinfo = np.zeros((b, tt), np.float32)
        dist = np.zeros((b, tt, tt), np.float32)
        tint = np.zeros((b, tt, tt), np.float32)
        tlen = np.array([len(x[0]) for x in items])
        dest = np.array([x[4] for x in items])
        cand = np.zeros((b, tt, cc), np.int64)
        mdis = np.zeros((b, tt, cc), np.float32)
        mang = np.zeros((b, tt, cc), np.float32)
        clen = np.zeros((b, tt), np.int64)
        label = np.zeros((b, tt), np.int64)
        secs = np.zeros((b, tt), np.float32)
        for i, (tr, ti, di, tv, _, cs, md, ma, la, se) in enumerate(items):
            k = len(tr)
            road[i, :k], tinfo[i, :k], dist[i, :k, :k], tint[i, :k, :k] = tr, ti, di, tv
            label[i, :k], secs[i, :k] = la, se
            for j, c in enumerate(cs):
                cand[i, j, : len(c)], mdis[i, j, : len(c)], mang[i, j, : len(c)] = c, md[j], ma[j]
                clen[i, j] = len(c)
        secs = ((np.log1p(secs) - t_mean) / t_std).astype(np.float32)
        return [torch.from_numpy(x) for x in (road, tinfo, dist, tint, tlen, dest, cand, mdis, mang, clen, label, secs)]

    # Upstream's model at its config/*.yaml dimensions.
    rne = NS(road_id_emb_dim=64, len_emb_dim=16, type_emb_dim=16, lon_emb_dim=16, lat_emb_dim=16,
             intersection_emb_dim=128, zone_id_emb_dim=128, zone_id_num_embeddings=num_zones,
             road_id_num_embeddings=n, type_num_embeddings=int(road_type.max()) + 1)
    length = np.array([float(r["length"]) for r in geo])
    feature = NS(
        road_attr=NS(len=standardize(np.log1p(length)), type=road_type.astype(np.int64), lon=standardize(cent[:, 0]),
                     lat=standardize(cent[:, 1])),
        road_edge_index=np.stack([src, dst]).astype(np.int64),
        intersection_attr=np.stack([angle, reachable], axis=1).astype(np.float32),
        zone_edge_index=np.stack([zsrc, zdst]).astype(np.int64),
        zone_edge_weight=zweight,
    )
    traj = NS(hidden_dim=128, num_heads=2, num_layers=2, dropout=0.0, max_len=2000)
    model = HOSER(rne, feature, traj, NS(hidden_dim=128), zone.astype(np.int64))
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    per_epoch = math.ceil(len(train) / args.batch_size)
    total, warm = args.epochs * per_epoch, args.epochs * per_epoch * 0.1

    def lr_at(it):
        if it < warm:
            return 1e-3 * it / warm
        return 0.5 * (1.0 + math.cos(math.pi * (it - warm) / (total - warm))) * 1e-3

    epoch_times, collate_s, cpu_s, it = [], 0.0, 0.0, 0
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train)).tolist()
        spent = 0.0
        for start in range(0, len(train), args.batch_size):
            t0, c0 = time.perf_counter(), time.process_time()
            batch = collate([train[i] for i in order[start : start + args.batch_size]])
            t1 = time.perf_counter()
            road, tinfo, dist, tint, tlen, dest, cand, mdis, mang, clen, label, secs = batch
            model.setup_road_network_features()
            it += 1
            for group in optimizer.param_groups:
                group["lr"] = lr_at(it)
            optimizer.zero_grad()
            logits, time_pred = model(road, tinfo, dist, tint, tlen, dest, cand, mdis, mang)
            mask = torch.arange(logits.size(1)).unsqueeze(0) < tlen.unsqueeze(1)
            sel = logits[mask]
            cmask = torch.arange(sel.size(1)).unsqueeze(0) < clen[mask].unsqueeze(1)
            sel_label = label[mask]
            loss_next = F.cross_entropy(sel.masked_fill(~cmask, float("-inf")), sel_label)
            tp = time_pred[mask][torch.arange(sel_label.size(0)), sel_label] * t_std + t_mean
            tl = secs[mask] * t_std + t_mean
            loss_time = torch.mean(torch.abs(tp - tl) / torch.clamp(tl, min=1.0))
            loss = loss_next + loss_time
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()
            t2 = time.perf_counter()
            spent += t2 - t0
            if epoch >= args.warmup_epochs:
                collate_s += t1 - t0
                cpu_s += time.process_time() - c0
        if epoch >= args.warmup_epochs:
            epoch_times.append(spent)
        print(f"epoch {epoch + 1}: {spent:.3f} s, loss {loss.item():.4f}", file=sys.stderr)
    batches = per_epoch * len(epoch_times)
    print(json.dumps(summary("upstream", epoch_times, steps_per_epoch(d), batches, {
        "collate_seconds": round(collate_s, 4), "cpu_seconds": round(cpu_s, 4), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "parameters": params, "batch_size": args.batch_size, "num_zones": num_zones})))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upstream", help="time upstream HOSER's training step")
    u.add_argument("checkout", help="upstream HOSER checkout (models/, utils.py)")
    u.add_argument("data_dir", help="LibCity dataset directory")
    u.add_argument("--stage", required=True, help="directory for the staged dataset and its zone partition")
    u.add_argument("--batch-size", type=int, default=64)
    u.add_argument("--epochs", type=int, default=6)
    u.add_argument("--warmup-epochs", type=int, default=1)
    u.add_argument("--threads", type=int, default=2)
    u.add_argument("--num-zones", type=int, default=20)
    u.add_argument("--seed", type=int, default=0)
    o = sub.add_parser("ours", help="the same numbers from a hoser-vanilla training.jsonl")
    o.add_argument("jsonl")
    o.add_argument("data_dir")
    o.add_argument("--warmup-epochs", type=int, default=1)
    args = p.parse_args()
    upstream(args) if args.cmd == "upstream" else ours(args)


if __name__ == "__main__":
    main()
