#!/usr/bin/env python3
"""Generate learning-rate-schedule reference vectors with PyTorch's own
`torch.optim.lr_scheduler` classes, for the tests of the `schedulers` crate.

Usage:
    pip install -r scripts/requirements-vectors.txt
    python scripts/scheduler_vectors.py crates/schedulers/tests/fixtures/torch_schedules.json

With no argument the JSON goes to stdout. The output is deterministic (no timestamps; the
torch version is written without its local "+cpu"/"+cuXXX" suffix), so regenerating it with
the same torch release gives a byte-identical file. The Rust tests only read the committed
JSON: running them needs no Python.

Recording convention, per case: one dummy parameter, `AdamW([p], lr=LR, betas=(0.9, 0.999))`,
then for t in range(N): record param_groups[0]["lr"] (and betas[0] where the case cycles
momentum) as lrs[t] / momentum[t], call opt.step(), then sched.step() (or
sched.step(metrics[t]) for ReduceLROnPlateau). So lrs[t] is the LR used by optimizer step t.

Each case's "schedule" object is our own config (crates/schedulers); keys left out take our
defaults, which mirror torch's. A linear warm-up (warmup_steps w, warmup_start_factor f0) is
SequentialLR([LinearLR(f0, 1.0, w), INNER], milestones=[w]) in torch.

Torch quirks worth knowing when reading the vectors:
  * CosineAnnealingLR is periodic past T_max: its (recursive) formula climbs back up from
    eta_min instead of staying there. The sequential StepLR -> CosineAnnealingLR(T_max=100)
    case runs the cosine child for 160 steps, so its last 60 values rise again.
  * PolynomialLR stays at exactly 0 after total_iters.
  * SequentialLR restarts a child at the milestone with `_update_lr(0)` (the closed form where
    the class has one), i.e. the child starts from the optimizer's initial lr, not where the
    previous child left off.
"""
import json
import math
import sys
import warnings

import torch
from torch.optim import lr_scheduler as S

warnings.filterwarnings("ignore")  # e.g. deprecation notices from SequentialLR / LinearLR

CASES = []


def case(id, desc, lr, n, schedule, build, momentum=False, metrics=None):
    """Run one schedule for n optimizer steps and append its record to CASES."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999))
    sched = build(opt)
    lrs, moms = [], []
    for t in range(n):
        group = opt.param_groups[0]
        lrs.append(float(group["lr"]))
        moms.append(float(group["betas"][0]))
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[t])
    assert not any(c["id"] == id for c in CASES), id
    CASES.append({
        "id": id, "torch": desc, "lr": lr, "run_steps": n, "schedule": schedule,
        "lrs": lrs, "momentum": moms if momentum else None, "metrics": metrics,
    })


def with_warmup(opt, steps, f0, inner):
    """Linear warm-up from f0*lr to lr over `steps`, then `inner(opt)` re-indexed from 0."""
    first = S.LinearLR(opt, start_factor=f0, end_factor=1.0, total_iters=steps)
    return S.SequentialLR(opt, [first, inner(opt)], milestones=[steps])


def const(opt):
    return S.LambdaLR(opt, lambda _: 1.0)


def constant_cases():
    case("constant", "LambdaLR(lambda _: 1.0)", 1e-3, 200, {"name": "constant"}, const)
    case("constant_warmup25_0.1",
         "SequentialLR([LinearLR(0.1, 1.0, total_iters=25), LambdaLR(lambda _: 1.0)], [25])",
         0.01, 200, {"name": "constant", "warmup_steps": 25, "warmup_start_factor": 0.1},
         lambda o: with_warmup(o, 25, 0.1, const))


def step_cases():
    for size, gamma, lr, n in [(30, 0.1, 0.1, 250), (7, 0.5, 0.01, 200)]:
        case(f"step_{size}_{gamma}", f"StepLR(step_size={size}, gamma={gamma})", lr, n,
             {"name": "step", "step_size": size, "gamma": gamma},
             lambda o: S.StepLR(o, step_size=size, gamma=gamma))
    for ms, gamma, lr, n in [([50, 120, 180], 0.1, 0.1, 250), ([10, 11, 150], 0.5, 0.05, 200)]:
        case("multistep_" + "_".join(map(str, ms)) + f"_{gamma}",
             f"MultiStepLR(milestones={ms}, gamma={gamma})", lr, n,
             {"name": "multistep", "milestones": ms, "gamma": gamma},
             lambda o: S.MultiStepLR(o, milestones=ms, gamma=gamma))


def exponential_cases():
    for gamma, lr, n in [(0.99, 0.1, 300), (0.95, 0.1, 200)]:
        case(f"exponential_{gamma}", f"ExponentialLR(gamma={gamma})", lr, n,
             {"name": "exponential", "gamma": gamma}, lambda o: S.ExponentialLR(o, gamma=gamma))
    case("exponential_0.98_warmup15_0.05",
         "SequentialLR([LinearLR(0.05, 1.0, total_iters=15), ExponentialLR(gamma=0.98)], [15])",
         0.1, 200,
         {"name": "exponential", "gamma": 0.98, "warmup_steps": 15, "warmup_start_factor": 0.05},
         lambda o: with_warmup(o, 15, 0.05, lambda o: S.ExponentialLR(o, gamma=0.98)))


def polynomial_cases():
    # run past total_iters: torch keeps the lr at 0 from step total_iters on.
    for total, power, lr, n in [(200, 1.0, 0.1, 200), (150, 2.0, 0.05, 220)]:
        sched = {"name": "polynomial", "power": power}
        if total != n:
            sched["total_steps"] = total
        case(f"polynomial_{total}_p{power}", f"PolynomialLR(total_iters={total}, power={power})",
             lr, n, sched, lambda o: S.PolynomialLR(o, total_iters=total, power=power))


def cosine_cases():
    for t_max, eta_min, lr in [(200, 0.0, 0.1), (300, 1e-5, 3e-4)]:
        sched = {"name": "cosine"}
        if eta_min:
            sched["min_lr"] = eta_min
        case(f"cosine_{t_max}_min{eta_min}", f"CosineAnnealingLR(T_max={t_max}, eta_min={eta_min})",
             lr, t_max, sched, lambda o: S.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min))
    case("cosine_180_min1e-4_warmup20_0.01",
         "SequentialLR([LinearLR(0.01, 1.0, total_iters=20), "
         "CosineAnnealingLR(T_max=180, eta_min=1e-4)], [20])",
         0.1, 200,
         {"name": "cosine", "min_lr": 1e-4, "warmup_steps": 20, "warmup_start_factor": 0.01},
         lambda o: with_warmup(o, 20, 0.01, lambda o: S.CosineAnnealingLR(o, 180, 1e-4)))


def onecycle_cases():
    # (id, lr, total, our non-default keys, torch kwargs); torch defaults: pct_start 0.3, cos,
    # div_factor 25, final_div_factor 1e4, three_phase False, momentum 0.85 -> 0.95 cycled.
    runs = [
        ("onecycle_default", 0.01, 200, {}, {}),
        ("onecycle_three_phase_linear", 0.05, 240,
         {"pct_start": 0.25, "anneal_strategy": "linear", "three_phase": True,
          "div_factor": 10.0, "final_div_factor": 100.0},
         dict(pct_start=0.25, anneal_strategy="linear", three_phase=True,
              div_factor=10.0, final_div_factor=100.0)),
        ("onecycle_pct0.4_mom0.8_0.9", 0.003, 250,
         {"pct_start": 0.4, "base_momentum": 0.8, "max_momentum": 0.9},
         dict(pct_start=0.4, base_momentum=0.8, max_momentum=0.9)),
        ("onecycle_no_momentum", 0.02, 200,
         {"pct_start": 0.2, "anneal_strategy": "linear", "div_factor": 5.0,
          "final_div_factor": 1000.0, "cycle_momentum": False},
         dict(pct_start=0.2, anneal_strategy="linear", div_factor=5.0,
              final_div_factor=1000.0, cycle_momentum=False)),
    ]
    for id, lr, total, ours, kw in runs:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        case(id, f"OneCycleLR(max_lr={lr}, total_steps={total}" + (f", {args})" if args else ")"),
             lr, total, {"name": "onecycle", **ours},
             lambda o: S.OneCycleLR(o, max_lr=lr, total_steps=total, **kw),
             momentum=kw.get("cycle_momentum", True))


def cyclical_cases():
    # Our "lr" is torch's max_lr; base_lr is the lower bound. 250 steps each.
    runs = [
        ("cyclical_triangular_up20", 1e-3,
         dict(base_lr=1e-4, mode="triangular", step_size_up=20,
              cycle_momentum=True, base_momentum=0.8, max_momentum=0.9)),
        ("cyclical_triangular2_up15_down25", 1e-2,
         dict(base_lr=1e-3, mode="triangular2", step_size_up=15, step_size_down=25,
              cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)),
        ("cyclical_exp_range_0.99_up10", 1e-3,
         dict(base_lr=1e-4, mode="exp_range", gamma=0.99, step_size_up=10,
              cycle_momentum=True, base_momentum=0.8, max_momentum=0.9)),
        ("cyclical_triangular_no_momentum", 5e-3,
         dict(base_lr=5e-4, mode="triangular", step_size_up=25, step_size_down=40,
              cycle_momentum=False)),
    ]
    for id, lr, kw in runs:
        ours = {("cyclical_mode" if k == "mode" else k): v for k, v in kw.items()}
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        case(id, f"CyclicLR(max_lr={lr}, {args})", lr, 250, {"name": "cyclical", **ours},
             lambda o: S.CyclicLR(o, max_lr=lr, **kw), momentum=kw["cycle_momentum"])


def sgdr_cases():
    for t0, mult, eta_min, lr, n in [(50, 1, 0.0, 0.1, 200), (10, 2, 1e-5, 0.01, 310),
                                     (30, 3, 1e-6, 0.05, 300)]:
        sched = {"name": "sgdr", "t_0": t0, "t_mult": mult}
        if eta_min:
            sched["min_lr"] = eta_min
        case(f"sgdr_{t0}_{mult}_min{eta_min}",
             f"CosineAnnealingWarmRestarts(T_0={t0}, T_mult={mult}, eta_min={eta_min})", lr, n,
             sched, lambda o: S.CosineAnnealingWarmRestarts(o, t0, T_mult=mult, eta_min=eta_min))
    case("sgdr_20_2_warmup10_0.1",
         "SequentialLR([LinearLR(0.1, 1.0, total_iters=10), "
         "CosineAnnealingWarmRestarts(T_0=20, T_mult=2)], [10])",
         0.1, 250,
         {"name": "sgdr", "t_0": 20, "t_mult": 2, "warmup_steps": 10, "warmup_start_factor": 0.1},
         lambda o: with_warmup(o, 10, 0.1, lambda o: S.CosineAnnealingWarmRestarts(o, 20, 2)))


def wiggle(center, amp, n, phase=0):
    """n deterministic values within center +- amp (pattern, no randomness)."""
    pattern = [0.3, -0.8, 0.9, -0.2, 0.6, -1.0, 0.1, 0.8, -0.5, 1.0, -0.6, 0.4]
    return [center + amp * pattern[(phase + k) % len(pattern)] for k in range(n)]


def tidy(values):
    return [round(v, 10) for v in values]


def plateau_metrics_min_rel():
    m = [1.0 * 0.97 ** t for t in range(30)]             # improving 3%/step
    m += wiggle(m[-1], 0.4e-4 * m[-1], 30)                # flat: |change| < 1e-4 rel -> 7 cuts
    m += [m[29] * 0.99 ** k for k in range(1, 21)]        # improving again
    m += [m[-1] * (1 - 4e-5) ** k for k in range(1, 31)]  # creeping: counts every 3rd step only
    m += wiggle(m[-1] * 1.05, 0.02 * m[-1], 40, phase=3)  # worse and noisy
    m += [m[-1] * 0.9 ** k for k in range(1, 11)]         # one real improvement burst
    m += wiggle(m[-1], 0.3e-4 * m[-1], 40, phase=7)       # final plateau
    return tidy(m)


def plateau_metrics_max_abs():
    m = [0.1 + 0.02 * t for t in range(30)]               # accuracy rising by 0.02 > 0.01
    m += [m[-1] + 0.004 * k for k in range(1, 31)]        # +0.004: better every 3rd step only
    m += wiggle(m[-1] + 0.002, 0.006, 40)                 # flat: cuts 0.1 -> ... -> 1e-5 floor
    m += [m[-1] + 0.011 * k for k in range(1, 11)]        # clearly better again
    m += wiggle(m[-1], 0.005, 50, phase=5)                # flat at the floor: no further change
    m += [m[-1] - 0.003 * k for k in range(1, 41)]        # getting worse
    return tidy(m)


def plateau_metrics_min_abs():
    m = [2.0 - 0.01 * t for t in range(40)]               # loss falling by 0.01 > 0.001
    m += [m[-1] - 0.0004 * k for k in range(1, 41)]       # -0.0004: better every 3rd step only
    m += wiggle(m[-1], 0.0008, 40)                        # flat: cut every 4 steps, floor 1e-4
    m += [m[-1] - 0.05 * k for k in range(1, 11)]         # better again
    m += wiggle(m[-1] + 0.01, 0.004, 70, phase=2)         # slightly worse, noisy
    return tidy(m)


def plateau_metrics_eps():
    m = [1.0 - 0.02 * t for t in range(20)]
    m += wiggle(m[-1], 1e-5, 180)                         # long plateau: eps stops the cuts
    return tidy(m)


def plateau_cases():
    # The first case halves 23 times: the default eps (1e-8) then stops the cuts at
    # 1.19e-8. The max/abs case ends on 0.1*0.1**4 = 1.0000000000000004e-05, just above
    # min_lr, so later cuts change nothing; the min/abs case is clamped to min_lr exactly.
    runs = [
        ("plateau_min_rel_f0.5_p3", 0.1, plateau_metrics_min_rel(),
         dict(mode="min", factor=0.5, patience=3, threshold=1e-4, threshold_mode="rel",
              cooldown=0)),
        ("plateau_max_abs_f0.1_p5_cd2_min1e-5", 0.1, plateau_metrics_max_abs(),
         dict(mode="max", factor=0.1, patience=5, threshold=0.01, threshold_mode="abs",
              cooldown=2, min_lr=1e-5)),
        ("plateau_min_abs_f0.3_p2_cd1_min1e-4", 0.01, plateau_metrics_min_abs(),
         dict(mode="min", factor=0.3, patience=2, threshold=1e-3, threshold_mode="abs",
              cooldown=1, min_lr=1e-4)),
        ("plateau_min_rel_f0.5_p4_eps1e-3", 0.01, plateau_metrics_eps(),
         dict(mode="min", factor=0.5, patience=4, threshold=1e-4, threshold_mode="rel",
              eps=1e-3)),
    ]
    for id, lr, metrics, kw in runs:
        assert len(metrics) == 200, (id, len(metrics))
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        case(id, f"ReduceLROnPlateau({args})", lr, 200, {"name": "plateau", **kw},
             lambda o: S.ReduceLROnPlateau(o, **kw), metrics=metrics)


def sequential_cases():
    case("sequential_constant_exponential_0.98_at50",
         "SequentialLR([LambdaLR(lambda _: 1.0), ExponentialLR(gamma=0.98)], milestones=[50])",
         0.1, 200,
         {"name": "sequential", "milestones": [50],
          "schedules": [{"name": "constant"}, {"name": "exponential", "gamma": 0.98}]},
         lambda o: S.SequentialLR(o, [const(o), S.ExponentialLR(o, 0.98)], milestones=[50]))
    # The cosine child runs 160 steps with T_max=100: torch's cosine climbs back up after 100.
    case("sequential_step_cosine_at60",
         "SequentialLR([StepLR(step_size=20, gamma=0.5), "
         "CosineAnnealingLR(T_max=100, eta_min=1e-4)], milestones=[60])",
         0.1, 220,
         {"name": "sequential", "milestones": [60],
          "schedules": [{"name": "step", "step_size": 20, "gamma": 0.5},
                        {"name": "cosine", "total_steps": 100, "min_lr": 1e-4}]},
         lambda o: S.SequentialLR(o, [S.StepLR(o, 20, 0.5), S.CosineAnnealingLR(o, 100, 1e-4)],
                                  milestones=[60]))


def dump(out):
    """JSON with one line per case field (long lists stay on one line)."""
    out.write("{\n")
    out.write('  "generator": "scripts/scheduler_vectors.py",\n')
    out.write(f'  "torch": {json.dumps(torch.__version__.split("+")[0])},\n')
    out.write('  "cases": [\n')
    for i, c in enumerate(CASES):
        fields = [f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in c.items()]
        out.write("    {\n" + ",\n".join(fields) + "\n    }" + ("," if i + 1 < len(CASES) else "") + "\n")
    out.write("  ]\n}\n")


def main():
    for family in [constant_cases, step_cases, exponential_cases, polynomial_cases, cosine_cases,
                   onecycle_cases, cyclical_cases, sgdr_cases, plateau_cases, sequential_cases]:
        family()
    for c in CASES:
        assert all(math.isfinite(v) for v in c["lrs"]), c["id"]
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    if len(sys.argv) == 2:
        with open(sys.argv[1], "w") as f:
            dump(f)
    else:
        dump(sys.stdout)


if __name__ == "__main__":
    main()
