#!/usr/bin/env python3
"""Reference tiler in numpy + rasterio, for throughput comparisons with `trainyard-tile`.

It does the same work per scene as `trainyard-tile` (crates/tiling/src/tiler.rs):

* reads S1 (2 bands VV, VH; linear sigma0, or dB with --s1-db), S2 (4 bands B2, B3, B4, B8 DN)
  and an optional 1-band cloud mask, all on one pixel grid (no reprojection);
* validity per pixel, judged on the input values: finite in all six bands, no band equal to its
  file's nodata value, cloud mask == 0;
* S1 -> dB as 10*log10(max(sigma0, 1e-10)), raised to the floor (-30 dB); S2 -> DN * 1e-4;
* windows of --size with stride size - overlap, the last one shifted to end at the scene's edge;
* windows below --min-valid (or with no valid pixel) are skipped and counted, invalid pixels of
  kept tiles become NaN in every band;
* each tile written with np.savez_compressed (keys s1_vv, s1_vh, s2_b2, s2_b3, s2_b4, s2_b8;
  float32, or float16 with --float16) to a temporary file, fsynced and renamed, plus a JSON
  sidecar <tile_id>.json, and a manifest.json at the end.

Not reproduced (the output is for timing and spot checks, not a drop-in replacement): splits
(a single scene is always `train`), CRC-32C checksums, byte-identical archives (numpy stamps
entries with the current time), and float64 dB arithmetic (numpy computes log10 in float32, so
dB values may differ from trainyard-tile's in the last bit).

Usage (not run in CI; needs `pip install numpy rasterio`):

    python scripts/tile_reference.py --s1 VVVH.tif --s2 S2.tif [--cloud-mask M.tif] \\
        --scene-id ID --out DIR [--size 256] [--overlap 0] [--min-valid 0.5] [--s1-db] \\
        [--s1-db-floor -30] [--s2-scale 0.0001] [--float16]

Timing comparison (single core for both, same inputs, fresh output directories):

    time python scripts/tile_reference.py --s1 vv_vh.tif --s2 s2.tif --scene-id a --out /tmp/ref
    time target/release/trainyard-tile --s1 vv_vh.tif --s2 s2.tif --scene-id a --out /tmp/rs --threads 1

The script prints its own wall time split into reading, preprocessing and cutting+writing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

KEYS_S1 = ("s1_vv", "s1_vh")
KEYS_S2 = ("s2_b2", "s2_b3", "s2_b4", "s2_b8")


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis; the last window is shifted to end at the edge."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def read(path: str, bands: int):
    """Reads a raster as float32 (bands, H, W) with its nodata value and profile."""
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        if src.count != bands:
            sys.exit(f"error: {path}: {src.count} bands, expected {bands}")
        data = src.read().astype(np.float32, copy=False)
        return data, src.nodata, src.transform, src.crs


def atomic_savez(path: str, arrays: dict) -> None:
    import numpy as np

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_json(path: str, obj) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--s1", required=True)
    p.add_argument("--s2", required=True)
    p.add_argument("--cloud-mask")
    p.add_argument("--scene-id", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=0)
    p.add_argument("--min-valid", type=float, default=0.5)
    p.add_argument("--s1-db", action="store_true")
    p.add_argument("--s1-db-floor", type=float, default=-30.0)
    p.add_argument("--s2-scale", type=float, default=1e-4)
    p.add_argument("--float16", action="store_true")
    a = p.parse_args()
    try:
        import numpy as np
        import rasterio  # noqa: F401
    except ImportError as e:
        sys.exit(f"error: {e}; install numpy and rasterio to run the reference tiler")
    if not 0 <= a.overlap < a.size:
        sys.exit(f"error: overlap {a.overlap} must be smaller than size {a.size}")

    t0 = time.perf_counter()
    s1, s1_nodata, transform, crs = read(a.s1, 2)
    s2, s2_nodata, s2_transform, s2_crs = read(a.s2, 4)
    mask = read(a.cloud_mask, 1)[0][0] if a.cloud_mask else None
    if s1.shape[1:] != s2.shape[1:] or (mask is not None and mask.shape != s1.shape[1:]):
        sys.exit(f"error: {a.s1}: S1, S2 and mask shapes differ; the tiler does not reproject")
    if s2_crs is not None:
        transform, crs = s2_transform, s2_crs
    t1 = time.perf_counter()

    invalid = ~np.isfinite(s1).all(axis=0) | ~np.isfinite(s2).all(axis=0)
    if s1_nodata is not None:
        invalid |= (s1 == np.float32(s1_nodata)).any(axis=0)
    if s2_nodata is not None:
        invalid |= (s2 == np.float32(s2_nodata)).any(axis=0)
    cloud = (mask != 0) if mask is not None else np.zeros_like(invalid)
    nodata = invalid.copy()
    invalid |= cloud
    if not a.s1_db:
        s1 = 10.0 * np.log10(np.maximum(s1, np.float32(1e-10)))
    s1 = np.maximum(s1, np.float32(a.s1_db_floor))
    s2 = s2 * np.float32(a.s2_scale)
    t2 = time.perf_counter()

    os.makedirs(a.out, exist_ok=True)
    dtype = np.float16 if a.float16 else np.float32
    height, width = invalid.shape
    size, stride = a.size, a.size - a.overlap
    tiles, skipped = [], {"mostly_cloud": 0, "mostly_nodata": 0}
    for row in window_starts(height, size, stride):
        for col in window_starts(width, size, stride):
            win = np.s_[row : row + size, col : col + size]
            bad = invalid[win]
            valid_fraction = 1.0 - float(bad.mean())
            if valid_fraction == 0.0 or valid_fraction < a.min_valid:
                reason = "mostly_cloud" if cloud[win].sum() >= nodata[win].sum() else "mostly_nodata"
                skipped[reason] += 1
                continue
            tile_id = f"{a.scene_id}_r{row}_c{col}"
            arrays = {}
            for keys, stack in ((KEYS_S1, s1), (KEYS_S2, s2)):
                for k, plane in zip(keys, stack):
                    t = plane[win].astype(dtype)
                    t[bad] = np.nan
                    arrays[k] = t
            atomic_savez(os.path.join(a.out, f"{tile_id}.npz"), arrays)
            gt = transform * (col, row)
            sidecar = {
                "tile_id": tile_id,
                "height": size,
                "width": size,
                "split": "train",
                "scene": a.scene_id,
                "row": row,
                "col": col,
                "geotransform": [gt[0], transform.a, transform.b, gt[1], transform.d, transform.e],
                "crs": str(crs) if crs else None,
                "source_files": [a.s1, a.s2] + ([a.cloud_mask] if a.cloud_mask else []),
                "synthetic": False,
                "valid_fraction": valid_fraction,
            }
            atomic_json(os.path.join(a.out, f"{tile_id}.json"), sidecar)
            tiles.append(sidecar)
    atomic_json(os.path.join(a.out, "manifest.json"), {"tiles": tiles, "skipped": skipped})
    t3 = time.perf_counter()
    print(
        f"{len(tiles)} tiles written, {sum(skipped.values())} skipped {skipped}; "
        f"read {t1 - t0:.2f}s, preprocess {t2 - t1:.2f}s, cut+write {t3 - t2:.2f}s, total {t3 - t0:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
