#!/usr/bin/env python3
"""Parity vectors for crates/tune's pruners: real Optuna decides, the Rust test replays.

Regenerate (Optuna 5.0.0 with numpy 2.4.6):

    pip install optuna==5.0.0 numpy==2.4.6
    python scripts/optuna_pruner_vectors.py \
        --out crates/tune/tests/fixtures/optuna_pruners/vectors.json

For every configuration below a study is created with the named pruner (default in-memory
storage, `RandomSampler(seed)`; no parameters are sampled, so the sampler never matters). The
trials run one after another: `study.ask()`, then the trial's recorded values are reported step
by step, `trial.should_prune()` is called after each report and its answer recorded; a pruned
trial is told `TrialState.PRUNED`, one that ran to its end is told its last value (Optuna marks
a NaN final value FAIL, which is kept: a failed trial still holds its rung attributes).

Values are pseudo-random (numpy RandomState per configuration): a per-trial level plus a
decaying curve plus noise, rounded to 3 decimals so that ties occur (the strict and non-strict
comparisons matter), with a few NaN. NaN is written as null in the JSON file.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import optuna
from optuna.pruners import (
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
)
from optuna.trial import TrialState


def build(spec: dict):
    kind = spec["kind"]
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "median":
        return MedianPruner(**args)
    if kind == "percentile":
        return PercentilePruner(**args)
    if kind == "successive_halving":
        return SuccessiveHalvingPruner(**args)
    if kind == "hyperband":
        return HyperbandPruner(**args)
    if kind == "nop":
        return NopPruner()
    raise ValueError(kind)


def sequences(seed: int, n_trials: int, n_values: int, nan_prob: float, direction: str):
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(n_trials):
        level = rs.uniform(0.0, 1.0)
        rate = rs.uniform(0.05, 0.5)
        seq = []
        for k in range(n_values):
            v = level + math.exp(-rate * k) + rs.normal(0.0, 0.05)
            if direction == "maximize":
                v = -v
            v = round(float(v), 3)
            if rs.uniform() < nan_prob:
                v = math.nan
            seq.append(v)
        # Now and then the final value is NaN: Optuna then marks the trial FAIL.
        if rs.uniform() < 0.15:
            seq[-1] = math.nan
        out.append(seq)
    return out


def steps_dense(n: int):
    return list(range(n))


CONFIGS = [
    # name, direction, pruner spec, steps reported, n_trials, seed, nan probability
    ("median_default_min", "minimize", {"kind": "median"}, steps_dense(12), 20, 1, 0.03),
    ("median_default_max", "maximize", {"kind": "median"}, steps_dense(12), 20, 2, 0.03),
    (
        "percentile25_min",
        "minimize",
        {"kind": "percentile", "percentile": 25.0, "n_startup_trials": 2, "n_warmup_steps": 3,
         "interval_steps": 2, "n_min_trials": 2},
        steps_dense(14), 20, 3, 0.05,
    ),
    (
        "percentile75_max",
        "maximize",
        {"kind": "percentile", "percentile": 75.0, "n_startup_trials": 2, "n_warmup_steps": 3,
         "interval_steps": 2, "n_min_trials": 2},
        steps_dense(14), 20, 4, 0.05,
    ),
    (
        # Sparse, irregular steps: the interval gate postpones a check to the next report.
        "percentile25_sparse_min",
        "minimize",
        {"kind": "percentile", "percentile": 25.0, "n_startup_trials": 2, "n_warmup_steps": 3,
         "interval_steps": 2, "n_min_trials": 2},
        [0, 1, 4, 5, 8, 9, 10, 13, 17, 18], 20, 5, 0.05,
    ),
    ("nop_min", "minimize", {"kind": "nop"}, steps_dense(5), 4, 6, 0.1),
    (
        "sha_r1_eta2_min",
        "minimize",
        {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2},
        steps_dense(17), 24, 7, 0.03,
    ),
    (
        "sha_r2_eta3_mesr1_max",
        "maximize",
        {"kind": "successive_halving", "min_resource": 2, "reduction_factor": 3,
         "min_early_stopping_rate": 1},
        steps_dense(19), 24, 8, 0.03,
    ),
    (
        "sha_r1_eta4_boot1_min",
        "minimize",
        {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 4,
         "bootstrap_count": 1},
        steps_dense(17), 24, 9, 0.03,
    ),
    (
        "sha_r2_eta2_boot1_mesr1_max",
        "maximize",
        {"kind": "successive_halving", "min_resource": 2, "reduction_factor": 2,
         "min_early_stopping_rate": 1, "bootstrap_count": 1},
        steps_dense(17), 24, 10, 0.03,
    ),
    (
        # One report may pass several rungs at once: each is judged in turn.
        "sha_r1_eta2_jumps_min",
        "minimize",
        {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2},
        [0, 3, 9, 10, 40, 41, 100], 24, 11, 0.03,
    ),
    (
        # min_resource "auto": max(last_step // 100, 1) of the complete trials, fixed once found.
        "sha_auto_eta3_min",
        "minimize",
        {"kind": "successive_halving", "min_resource": "auto", "reduction_factor": 3},
        list(range(0, 300, 10)), 16, 12, 0.03,
    ),
    (
        "hyperband_r1_R9_eta3_min",
        "minimize",
        {"kind": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        steps_dense(10), 30, 13, 0.03,
    ),
    (
        "hyperband_r1_R27_eta3_max",
        "maximize",
        {"kind": "hyperband", "min_resource": 1, "max_resource": 27, "reduction_factor": 3},
        steps_dense(28), 30, 14, 0.03,
    ),
    (
        "hyperband_r1_R9_eta3_boot1_min",
        "minimize",
        {"kind": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3,
         "bootstrap_count": 1},
        steps_dense(10), 30, 15, 0.03,
    ),
    (
        "hyperband_auto_eta3_min",
        "minimize",
        {"kind": "hyperband", "min_resource": 1, "max_resource": "auto", "reduction_factor": 3},
        steps_dense(12), 30, 16, 0.03,
    ),
    (
        # The fork's setting: log_3(8 / 5) < 1, so one bracket (a plain SHA with rung step 5).
        "hyperband_fork_r5_R8_eta3_min",
        "minimize",
        {"kind": "hyperband", "min_resource": 5, "max_resource": 8, "reduction_factor": 3},
        steps_dense(8), 12, 17, 0.0,
    ),
]


def run_config(name, direction, spec, steps, n_trials, seed, nan_prob):
    study_name = f"parity-{name}"
    study = optuna.create_study(
        study_name=study_name,
        direction=direction,
        pruner=build(spec),
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    seqs = sequences(seed, n_trials, len(steps), nan_prob, direction)
    trials = []
    for seq in seqs:
        trial = study.ask()
        reported = []
        decisions = []
        pruned_at = None
        for step, value in zip(steps, seq):
            trial.report(value, step)
            reported.append(None if math.isnan(value) else value)
            prune = bool(trial.should_prune())
            decisions.append(prune)
            if prune:
                pruned_at = step
                break
        if pruned_at is not None:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        else:
            frozen = study.tell(trial, seq[len(steps) - 1])
        trials.append(
            {
                "number": trial.number,
                "steps": steps[: len(reported)],
                "values": reported,
                "decisions": decisions,
                "pruned_at": pruned_at,
                "final_state": frozen.state.name,
            }
        )
    return {
        "name": name,
        "study_name": study_name,
        "direction": direction,
        "pruner": spec,
        "trials": trials,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    np.seterr(all="ignore")
    import warnings

    warnings.simplefilter("ignore")
    doc = {
        "optuna_version": optuna.__version__,
        "numpy_version": np.__version__,
        "configs": [run_config(*c) for c in CONFIGS],
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    n = sum(len(t["decisions"]) for c in doc["configs"] for t in c["trials"])
    pruned = sum(t["pruned_at"] is not None for c in doc["configs"] for t in c["trials"])
    print(f"{len(doc['configs'])} configs, {n} decisions, {pruned} trials pruned")


if __name__ == "__main__":
    main()
