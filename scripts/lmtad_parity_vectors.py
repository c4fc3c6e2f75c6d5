#!/usr/bin/env python3
"""Parity vectors for the burn LM-TAD teacher (crates/hoser/src/lmtad/).

Builds upstream LM-TAD's `LMTAD(LMTADConfig(...))` (github.com/jonathankabala/LMTAD, MIT; pass the
path of a checkout or of an extracted copy, nothing is vendored) with a tiny config and seeded,
deliberately non-trivial weights, saves it as a checkpoint in upstream's `code/train_LMTAD.py`
format (keys with torch.compile's `_orig_mod.` prefix, the pickled `LMTADConfig` and dataset
config, `argparse.Namespace` args, an AdamW state), converts that checkpoint with
`scripts/pth_to_safetensors.py` (run as a subprocess, so the fixture also proves the converter),
and writes into OUT:

  weights.safetensors  the converted state dict (float32, `wte` and `lm_head` as two equal copies)
  model_config.json    the checkpoint's `model_config`, upstream field names
  expected.json        upstream's outputs on one right-padded batch (see README.md in OUT)

Usage:
  lmtad_parity_vectors.py --lmtad-repo DIR --out crates/hoser/tests/fixtures/lmtad_parity \\
      [--upstream-commit SHA] [--overwrite]
  lmtad_parity_vectors.py --lmtad-repo DIR --check-converter

`DIR/code` is put on sys.path and `models.LMTAD` imported from it. `--upstream-commit` is needed
when DIR is not a git checkout (e.g. a `git archive` extract). `--check-converter` writes nothing
into the project: it converts upstream-format checkpoints of several model variants (flash and
non-flash attention, `integer_poe`) in a temporary directory and checks the converter's output
and its error exits.

Needs torch, safetensors and numpy (scripts/requirements-vectors.txt); CPU only.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

CONVERTER = Path(__file__).resolve().parent / "pth_to_safetensors.py"
SEED = 0
# Tiny config: 26 grid cells 0..25, then PAD, EOT, SOT (upstream's order: PAD = cells, SOT = vocab - 1).
N_CELLS = 26
PAD, EOT, SOT = 26, 27, 28
CONFIG = dict(block_size=16, vocab_size=29, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False,
              pad_token=PAD, integer_poe=False)
# Rows of the batch: [SOT] + cells + [EOT], right-padded with PAD to the longest (12 tokens).
CELLS = [
    [0, 5, 12, 25, 7, 19, 3, 22, 14, 8],  # 10 cells: a full row
    [1, 20, 11, 24, 6],  # 5 cells
    [9, 9, 4],  # 3 cells, one repeated
]
WEIGHT_STD, LN_STD = 0.3, 0.2


def import_upstream(repo: Path):
    """Imports upstream's `models` package (and `datasets.PortoConfig`) from `repo/code`."""
    code = repo / "code"
    if not (code / "models" / "LMTAD.py").is_file():
        sys.exit(f"{repo}: no code/models/LMTAD.py (pass an LM-TAD checkout with --lmtad-repo)")
    sys.path.insert(0, str(code))
    try:
        import utils  # noqa: F401  (upstream's; needs only numpy and torch)
    except ImportError:
        stub = types.ModuleType("utils")
        stub.log = lambda s, path="", print_=True: print(s)
        sys.modules["utils"] = stub
    from models import LMTAD, LMTADConfig  # noqa: E402  (upstream code, imported from the checkout)

    # upstream's datasets.py imports tqdm and pandas at module level (and names pandas types in
    # annotations) but PortoConfig needs neither; when they are not installed, inert stand-ins let
    # the real dataclass be pickled as upstream pickles it (`datasets.PortoConfig`).
    class _Anything:
        def __getattr__(self, name):
            return self

        def __call__(self, *args, **kwargs):
            return self

    def _anything(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything()

    stood_in = []
    for name in ("tqdm", "pandas"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__getattr__ = _anything
            sys.modules[name] = mod
            stood_in.append(name)
    from datasets import PortoConfig  # noqa: E402

    for name in stood_in:  # only datasets.py saw them
        del sys.modules[name]

    return LMTAD, LMTADConfig, PortoConfig


def build_model(LMTAD, LMTADConfig, flash=True, **overrides):
    """Upstream model with seeded non-trivial weights; `flash=False` builds the masked-attention path."""
    cfg = LMTADConfig(**{**CONFIG, **overrides})
    torch.manual_seed(SEED)
    sdpa = F.scaled_dot_product_attention
    if not flash:
        del F.scaled_dot_product_attention  # upstream checks hasattr(F, ...) in its constructor
    try:
        model = LMTAD(cfg)
    finally:
        F.scaled_dot_product_attention = sdpa
    # upstream's N(0, 0.02) init gives near-uniform logits; use larger values so every weight matters
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied wte/lm_head tensor appears once
            if p.dim() == 1 and name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + LN_STD * torch.randn_like(p))
            else:
                p.copy_(WEIGHT_STD * torch.randn_like(p))
    assert model.lm_head.weight is model.transformer.wte.weight
    model.eval()
    return model


def save_upstream_checkpoint(model, PortoConfig, path: Path):
    """`torch.save` of the dict `code/train_LMTAD.py` writes, keys prefixed as by `torch.compile`."""
    cfg = model.config
    shadow = copy.deepcopy(model)  # one AdamW step on a copy, so the optimizer has real state
    shadow.train()
    opt = shadow.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
    x = torch.tensor([[SOT] + CELLS[0] + [EOT]])
    shadow(x[:, :-1], targets=x[:, 1:])[1].backward()
    opt.step()
    args = argparse.Namespace(dataset="porto", n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                              block_size=cfg.block_size, dropout=cfg.dropout, lr=3e-4, beta1=0.9, beta2=0.95,
                              weight_decay=0.1, integer_poe=cfg.integer_poe, compile=False, out_dir=str(path.parent))
    dataset_config = PortoConfig()
    checkpoint = {
        "model": type(model.state_dict())((f"_orig_mod.{k}", v) for k, v in model.state_dict().items()),
        "optimizer": opt.state_dict(),
        "model_config": cfg,
        "iter_num": 1,
        "best_val_loss": 3.25,
        "dataset_config": dataset_config,
        "args": args,
    }
    torch.save(checkpoint, path)


def convert(ckpt: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    """Runs the converter on `ckpt`, writing `out/weights.safetensors` (and its model_config.json)."""
    cmd = [sys.executable, str(CONVERTER), str(ckpt), str(out / "weights.safetensors"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def f64(t: torch.Tensor):
    """Nested lists of Python floats (float64, printed by json with full precision)."""
    return t.detach().double().tolist()


def expected_outputs(model) -> dict:
    """Upstream's forward, loss, perplexity and last-position outputs on the fixture batch."""
    rows = [[SOT] + c + [EOT] for c in CELLS]
    lengths = [len(r) for r in rows]
    t = max(lengths)
    idx = torch.tensor([r + [PAD] * (t - len(r)) for r in rows])
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()  # real tokens
    with torch.no_grad():
        logits = model(idx)[0]
        loss = model(idx[:, :-1].contiguous(), targets=idx[:, 1:].contiguous())[1]
        # eval_porto.py:get_perplexity_fast, re-implemented (same formula, float32 as upstream)
        lg = model(idx[:, :-1])[0]
        probs = torch.gather(F.softmax(lg, dim=-1), -1, idx[:, 1:].unsqueeze(-1)).squeeze(-1)
        log_ppl = -torch.log(probs.masked_fill(mask[:, 1:] == 0, 1)).sum(-1) / mask[:, 1:].sum(-1)
        surprisal = [f64(-torch.log(probs[i, : lengths[i] - 1])) for i in range(len(rows))]
        # histories = rows without EOT; each row's next-token distribution at its last real position,
        # from a forward of the row alone (no padding at all)
        hist = [r[:-1] for r in rows]
        h_len = [len(h) for h in hist]
        last = torch.stack([F.log_softmax(model(torch.tensor([h]))[0][0, -1], dim=-1) for h in hist])
        h_t = max(h_len)
        h_idx = torch.tensor([h + [PAD] * (h_t - len(h)) for h in hist])
        batched = F.log_softmax(model(h_idx)[0], dim=-1)[torch.arange(len(hist)), torch.tensor(h_len) - 1]
        gap = (batched - last).abs().max().item()
        assert gap < 1e-5, f"upstream right-padded batch differs from the rows alone by {gap}"
        # independent check of upstream's loss (mean CE over non-PAD targets)
        lp = F.log_softmax(lg, dim=-1)
        nll = -torch.gather(lp, -1, idx[:, 1:].unsqueeze(-1)).squeeze(-1)
        keep = idx[:, 1:] != PAD
        assert abs(nll[keep].mean().item() - loss.item()) < 1e-5
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "tokens": idx.tolist(),
        "lengths": lengths,
        "logits": f64(logits),
        "loss": loss.double().item(),
        "log_perplexity": f64(log_ppl),
        "surprisal": surprisal,
        "histories": h_idx.tolist(),
        "history_lengths": h_len,
        "last_log_probs": f64(last),
        "num_params": n_params,
        "num_params_upstream_get_num_params": model.get_num_params(),
        "padded_vs_alone_max_abs_diff": gap,
    }


def upstream_commit(repo: Path, flag):
    if flag:
        return flag
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{repo}: not a git checkout; pass --upstream-commit SHA")
    return r.stdout.strip()


def generate(args, LMTAD, LMTADConfig, PortoConfig) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = upstream_commit(Path(args.lmtad_repo), args.upstream_commit)
    model = build_model(LMTAD, LMTADConfig)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt_best.pt"
        save_upstream_checkpoint(model, PortoConfig, ckpt)
        r = convert(ckpt, out, *(["--overwrite"] if args.overwrite else []))
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            sys.exit(f"converter failed ({r.returncode}): {r.stderr}")
    expected = {
        "about": "upstream LM-TAD outputs for weights.safetensors + model_config.json; see README.md",
        "upstream_commit": commit,
        "torch_version": torch.__version__,
        "seed": SEED,
        "config": CONFIG,
        "pad": PAD,
        "eot": EOT,
        "sot": SOT,
        **expected_outputs(model),
    }
    # the written files alone must reproduce the outputs: a fresh upstream model from them
    from safetensors.torch import load_file

    cfg = json.loads((out / "model_config.json").read_text())
    again = LMTAD(LMTADConfig(**{k: cfg[k] for k in CONFIG}))
    again.load_state_dict(load_file(str(out / "weights.safetensors")), strict=True)
    again.eval()
    with torch.no_grad():
        gap = (again(torch.tensor(expected["tokens"]))[0].double() - torch.tensor(expected["logits"])).abs().max()
    assert gap == 0.0, f"weights.safetensors + model_config.json give logits {gap} away from expected.json"
    path = out / "expected.json"
    if path.exists() and not args.overwrite:
        sys.exit(f"{path}: already exists (pass --overwrite)")
    path.write_text(json.dumps(expected) + "\n")
    print(f"{path}: {path.stat().st_size} bytes")


def check_converter(LMTAD, LMTADConfig, PortoConfig) -> None:
    """Converts upstream-format checkpoints of several variants and checks the results."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, flash, over in (("flash", True, {}), ("no-flash", False, {}),
                                   ("integer_poe", True, {"integer_poe": True})):
            d = tmp / label
            d.mkdir()
            model = build_model(LMTAD, LMTADConfig, flash=flash, **over)
            ckpt = d / "ckpt_best.pt"
            save_upstream_checkpoint(model, PortoConfig, ckpt)
            r = convert(ckpt, d)
            assert r.returncode == 0, r.stderr
            got = load_file(str(d / "weights.safetensors"))
            sd = model.state_dict()
            want = {k for k in sd if not k.endswith("attn.bias") and k != "transformer.wpe.pe"}
            assert set(got) == want, (label, sorted(set(got) ^ want))
            for k in want:
                assert torch.equal(got[k], sd[k]), k
            assert torch.equal(got["lm_head.weight"], got["transformer.wte.weight"])
            dropped = [line for line in r.stdout.splitlines() if line.startswith("dropped buffer")]
            n_drop = {"flash": 0, "no-flash": CONFIG["n_layer"], "integer_poe": 1}[label]
            assert len(dropped) == n_drop, (label, r.stdout)
            cfg = json.loads((d / "model_config.json").read_text())
            for k, v in {**CONFIG, **over}.items():
                assert cfg[k] == v, (label, k, cfg[k], v)
            assert "log_file" in cfg
            # the restored model must load strictly into upstream's class and agree on a forward
            again = LMTAD(LMTADConfig(**{k: cfg[k] for k in CONFIG}))
            missing, unexpected = again.load_state_dict(got, strict=False)
            assert not unexpected and all(k.endswith("attn.bias") or k == "transformer.wpe.pe"
                                          for k in missing), (missing, unexpected)
            again.eval()
            x = torch.tensor([[SOT] + CELLS[1] + [EOT]])
            with torch.no_grad():
                assert torch.allclose(again(x)[0], model(x)[0], atol=1e-6)
            # refuses to overwrite either output without --overwrite; replaces both with it
            r = convert(ckpt, d)
            assert r.returncode == 2 and "already exists" in r.stderr and "weights.safetensors" in r.stderr, r
            (d / "weights.safetensors").unlink()
            r = convert(ckpt, d)
            assert r.returncode == 2 and "model_config.json: already exists" in r.stderr, r
            assert not (d / "weights.safetensors").exists(), "wrote weights before refusing"
            assert convert(ckpt, d, "--overwrite").returncode == 0
            print(f"converter ok: {label} ({len(got)} tensors, {n_drop} buffers dropped)")

        d = tmp / "errors"
        d.mkdir()
        bad = d / "notes.pt"
        bad.write_text("not a checkpoint\n")
        r = convert(bad, d)
        assert r.returncode == 2 and f"{bad}: not a PyTorch checkpoint" in r.stderr, r
        r = convert(d / "missing.pt", d)
        assert r.returncode == 2 and "missing.pt: no such file" in r.stderr, r
        ckpt = tmp / "flash" / "ckpt_best.pt"
        r = convert(ckpt, d, "--key", "weights")
        assert r.returncode == 2 and "no entry 'weights'" in r.stderr and str(ckpt) in r.stderr, r
        plain = d / "plain.pt"
        torch.save({"w": torch.ones(2)}, plain)
        r = convert(plain, d, "--model-config-out", str(d / "cfg.json"))
        assert r.returncode == 2 and "no entry 'model_config'" in r.stderr and "plain.pt" in r.stderr, r
        no_sd = d / "no_state_dict.pt"
        torch.save({"model_config": {"block_size": 4}, "iter_num": 3}, no_sd)
        r = convert(no_sd, d)
        assert r.returncode == 2 and "model_config' lacks" in r.stderr, r
        untied = d / "untied.pt"
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["lm_head.weight"][0, 0] += 1.0
        torch.save({"model": sd}, untied)
        r = convert(untied, d)
        assert r.returncode == 2 and "lm_head.weight differ" in r.stderr and "untied.pt" in r.stderr, r
        # a pickled call of os.system and an unlisted class: both become inert stubs
        marker = d / "pwned"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        evil = d / "evil.pt"
        torch.save({"model": model.state_dict(), "x": Evil(), "y": types.SimpleNamespace(a=1)}, evil)
        r = convert(evil, d, "--overwrite")
        assert r.returncode == 0, r.stderr
        assert not marker.exists(), "the checkpoint ran code"
        print("converter ok: error exits and stubbed unknown classes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmtad-repo", required=True, help="LM-TAD checkout (holds code/models/LMTAD.py)")
    ap.add_argument("--out", help="fixture directory to write")
    ap.add_argument("--upstream-commit", help="upstream commit, when --lmtad-repo is not a git checkout")
    ap.add_argument("--overwrite", action="store_true", help="replace existing fixture files")
    ap.add_argument("--check-converter", action="store_true", help="check the converter only; write nothing")
    args = ap.parse_args()
    LMTAD, LMTADConfig, PortoConfig = import_upstream(Path(args.lmtad_repo))
    if args.check_converter:
        check_converter(LMTAD, LMTADConfig, PortoConfig)
    elif args.out:
        generate(args, LMTAD, LMTADConfig, PortoConfig)
    else:
        ap.error("give --out DIR or --check-converter")


if __name__ == "__main__":
    main()
