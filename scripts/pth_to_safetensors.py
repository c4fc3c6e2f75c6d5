#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (`.pth` / `.pt`) into a safetensors file trainyard can load.

    python scripts/pth_to_safetensors.py MODEL.pth MODEL.safetensors [--key model_state_dict]
    python scripts/pth_to_safetensors.py ckpt_best.pt teacher/weights.safetensors \\
        [--model-config-out teacher/model_config.json] [--overwrite]

The state dict keeps its keys (e.g. upstream HOSER's `road_network_encoder.road_id_emb.weight`),
so `hoser::model::Hoser::load_safetensors` finds every parameter by name. Floating tensors are
written as float32 (what the importers read), integer buffers keep their type. A checkpoint that
wraps the state dict (`{"model_state_dict": ..., "optimizer_state_dict": ...}`) is unwrapped with
`--key` (default: `model_state_dict`, `state_dict` or `model` if present).

Upstream LM-TAD checkpoints (`ckpt_best.pt`, `ckpt*.pt` from `code/train_LMTAD.py`:
`{model, optimizer, model_config, iter_num, best_val_loss, dataset_config, args}`) are converted
too:

- Loading. `torch.load(weights_only=True)` is tried first; it refuses LM-TAD's checkpoints because
  they pickle the `LMTADConfig` and dataset-config dataclasses. The file is then read with a
  restricted unpickler: only torch's tensor-rebuild functions, storage types, dtypes and
  `torch.Size`, `collections.OrderedDict` / `defaultdict`, `argparse.Namespace`, numpy scalars /
  arrays / dtypes and plain builtin containers are resolved to the real objects. Every other
  global the pickle names (a class, or a function such as `os.system`) becomes an inert stub
  class that only records the arguments and attributes it is given, so no code from the
  checkpoint runs and the checkpoint's own modules need not be importable.
- `_orig_mod.` (the prefix `torch.compile` puts on every key; upstream's train script compiles by
  default) is stripped from every key.
- Shared storage is written as separate contiguous copies (safetensors refuses shared tensors):
  LM-TAD ties `transformer.wte.weight` to `lm_head.weight`, and both keys are written, after
  checking that they are equal, because PyTorch's strict `load_state_dict` expects both.
- Registered buffers that are not parameters are dropped, and listed: the causal mask
  `transformer.h.N.attn.bias` (PyTorch without flash attention) and `transformer.wpe.pe`
  (the sinusoidal table of `integer_poe`); both are recomputed from the config.
- The checkpoint's `model_config` is written as JSON with upstream's field names (`block_size,
  vocab_size, n_layer, n_head, n_embd, dropout, bias, pad_token, integer_poe`, plus any others it
  has, e.g. `log_file`) to `--model-config-out`, or, when the flag is not given, to
  `model_config.json` next to the safetensors output.

Neither output is overwritten unless `--overwrite` is given. Every error (no such file, not a
PyTorch checkpoint, a missing entry, an existing output) names the file and exits with status 2.

Needs torch and safetensors (scripts/requirements-vectors.txt).
"""

import argparse
import collections
import json
import math
import pickle
import re
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

#: Prefix `torch.compile` (an `OptimizedModule`) puts on every state-dict key.
COMPILE_PREFIX = "_orig_mod."
#: LM-TAD's weight tie: the token embedding and the LM head are one tensor.
TIED = ("transformer.wte.weight", "lm_head.weight")
#: Buffers of upstream LM-TAD that are not parameters (recomputed from the config).
DROPPED_BUFFERS = (
    re.compile(r"^transformer\.h\.\d+\.attn\.bias$"),  # causal mask, [1, 1, block, block]
    re.compile(r"^transformer\.wpe\.pe$"),  # integer_poe's sinusoidal table, [max_len, 1, n_embd]
)
#: `LMTADConfig` fields every LM-TAD model config must carry.
REQUIRED_CONFIG = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "pad_token")


class ConvertError(Exception):
    """A problem with the input or output files; printed as `FILE: message`, exit status 2."""


# --- restricted unpickling -------------------------------------------------------------------

_TORCH_REBUILD = {
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_numpy",
}
_ALLOWED = {
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("argparse", "Namespace"),
    ("_codecs", "encode"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"),
}
_BUILTIN_TYPES = {"list", "dict", "tuple", "set", "frozenset", "int", "float", "bool", "complex",
                  "str", "bytes", "bytearray", "object", "slice", "range"}
_STUBS: dict = {}


class Stub:
    """Inert stand-in for a class or function a checkpoint names but the converter does not trust.

    It records what unpickling gives it (constructor arguments, attribute state, items) and
    nothing else; `Stub.__stub_of__` is the `module.name` it replaces.
    """

    __stub_of__ = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        if args:
            self.__dict__["_args"] = args
        if kwargs:
            self.__dict__["_kwargs"] = kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):
        """Records an item (pickle's APPEND on a list subclass)."""
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        """Records items (pickle's APPENDS on a list subclass)."""
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self):
        return f"<stub of {self.__stub_of__} {self.__dict__}>"


def _stub(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _STUBS:
        _STUBS[key] = type(name, (Stub,), {"__stub_of__": key, "__module__": "stub." + module})
    return _STUBS[key]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor / container / numpy globals; anything else is a `Stub`."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch._utils" and name in _TORCH_REBUILD:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _BUILTIN_TYPES:
            return super().find_class(module, name)
        return _stub(module, name)


def _restricted_load(f, **kwargs):
    return RestrictedUnpickler(f, **kwargs).load()


#: A `pickle_module` for `torch.load` that unpickles with `RestrictedUnpickler`.
restricted_pickle = types.ModuleType("restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.UnpicklingError = pickle.UnpicklingError


def load_checkpoint(path: Path):
    """Loads `path` with torch's weights-only loader, else with the restricted unpickler."""
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # e.g. a pickled dataclass (LM-TAD's LMTADConfig)
        g = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it pickles {g.group(1)}" if g else "it pickles something torch does not allow"
        print(f"{path}: weights-only load refused ({why}); reading it with the restricted unpickler")
    except Exception as e:  # noqa: BLE001  (torch raises RuntimeError, EOFError, ... on a non-checkpoint)
        raise ConvertError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if _STUBS:
        print(f"{path}: read as inert stubs (nothing run): {', '.join(sorted(_STUBS))}")
    return obj


# --- state dict ------------------------------------------------------------------------------

def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def pick_state_dict(obj, key, src: Path):
    """The state dict inside a (possibly wrapped) checkpoint; `key` names the entry if given."""
    if key:
        if not isinstance(obj, dict):
            raise ConvertError(f"{src}: no entry {key!r}; the checkpoint is a {type(obj).__name__}, not a dict")
        if key not in obj:
            raise ConvertError(f"{src}: no entry {key!r}; it has {sorted(map(str, obj))}")
        obj = obj[key]
    elif isinstance(obj, dict) and not _is_state_dict(obj):
        for k in ("model_state_dict", "state_dict", "model"):
            if k in obj:
                obj = obj[k]
                break
    if not _is_state_dict(obj):
        raise ConvertError(f"{src}: not a state dict of tensors (use --key to pick the entry)")
    return obj


def clean_state_dict(sd, src: Path):
    """Strips `_orig_mod.`, drops LM-TAD's non-parameter buffers, checks the weight tie.

    Returns (tensors to write, names dropped).
    """
    out, dropped = {}, []
    for name, t in sd.items():
        name = str(name)
        clean = name[len(COMPILE_PREFIX):] if name.startswith(COMPILE_PREFIX) else name
        if clean in out:
            raise ConvertError(f"{src}: keys {name!r} and {clean!r} are the same parameter after stripping "
                               f"{COMPILE_PREFIX!r}")
        if any(p.match(clean) for p in DROPPED_BUFFERS):
            dropped.append(f"{clean} {list(t.shape)}")
            continue
        out[clean] = t
    a, b = TIED
    if a in out and b in out:
        if out[a].shape != out[b].shape or not torch.equal(out[a], out[b]):
            raise ConvertError(f"{src}: {a} and {b} differ; LM-TAD ties them (one tensor), "
                               f"so this is not an LM-TAD checkpoint as trained")
    written = {}
    for name, t in out.items():
        t = t.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        # clone: a separate contiguous copy per key (tied or otherwise shared storage)
        written[name] = t.contiguous().clone()
    return written, dropped


# --- model config ----------------------------------------------------------------------------

def _jsonable(v, where: str):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConvertError(f"{where}: not a finite number: {v}")
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, where) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x, where) for k, x in v.items()}
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalar
        return _jsonable(v.item(), where)
    return str(v)


def model_config_dict(cfg, src: Path) -> dict:
    """`model_config` (a stubbed `LMTADConfig`, a dict or a namespace) as a JSON-ready dict."""
    if isinstance(cfg, dict):
        fields = dict(cfg)
    elif hasattr(cfg, "__dict__"):
        fields = {k: v for k, v in vars(cfg).items() if not k.startswith("_")}
    else:
        raise ConvertError(f"{src}: entry 'model_config' is a {type(cfg).__name__}, not a config")
    missing = [k for k in REQUIRED_CONFIG if k not in fields]
    if missing:
        raise ConvertError(f"{src}: entry 'model_config' lacks {', '.join(missing)} (it has {sorted(fields)})")
    if "integer_poe" not in fields:
        print(f"{src}: model_config has no integer_poe; upstream's default False is written")
        fields["integer_poe"] = False
    order = list(REQUIRED_CONFIG) + ["integer_poe"]
    ordered = {k: fields[k] for k in order}
    ordered.update({k: v for k, v in sorted(fields.items()) if k not in ordered})
    return {k: _jsonable(v, f"{src}: model_config.{k}") for k, v in ordered.items()}


# --- main ------------------------------------------------------------------------------------

def convert(args) -> None:
    """Runs the conversion; raises `ConvertError` for any problem with the files."""
    src, dst = Path(args.src), Path(args.dst)
    obj = load_checkpoint(src)
    has_config = isinstance(obj, dict) and "model_config" in obj
    cfg_out = Path(args.model_config_out) if args.model_config_out else None
    if cfg_out is not None and not has_config:
        have = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ConvertError(f"{src}: no entry 'model_config' for --model-config-out (it has {have})")
    if cfg_out is None and has_config:
        cfg_out = dst.parent / "model_config.json"
    cfg = model_config_dict(obj["model_config"], src) if has_config else None
    tensors, dropped = clean_state_dict(pick_state_dict(obj, args.key, src), src)
    for out in [dst] + ([cfg_out] if cfg_out is not None else []):  # nothing is written before this
        if out.exists() and not args.overwrite:
            raise ConvertError(f"{out}: already exists (pass --overwrite to replace it)")
        if not out.parent.is_dir():
            raise ConvertError(f"{out}: directory {out.parent} does not exist")

    for d in dropped:
        print(f"dropped buffer {d} (not a parameter)")
    try:
        save_file(tensors, str(dst))
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"{dst}: cannot write ({e})") from e
    print(f"{dst}: {len(tensors)} tensors")
    if cfg is not None:
        try:
            cfg_out.write_text(json.dumps(cfg, indent=2) + "\n")
        except OSError as e:
            raise ConvertError(f"{cfg_out}: cannot write ({e})") from e
        print(f"{cfg_out}: model_config ({', '.join(f'{k}={cfg[k]}' for k in REQUIRED_CONFIG)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="PyTorch checkpoint (.pth / .pt)")
    ap.add_argument("dst", help="safetensors file to write")
    ap.add_argument("--key", help="entry holding the state dict in a wrapped checkpoint")
    ap.add_argument("--model-config-out", metavar="FILE",
                    help="write the checkpoint's model_config as JSON here "
                         "(default when it has one: model_config.json next to DST)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = ap.parse_args()
    try:
        convert(args)
    except ConvertError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
