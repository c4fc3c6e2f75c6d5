#!/usr/bin/env python3
"""Reference vectors for crates/tune's TPE sampler: Optuna's multivariate Parzen estimator and
its below/above split with running (constant liar) and pruned trials.

Regenerate (Optuna 5.0.0 with numpy 2.4.6):

    pip install optuna==5.0.0 numpy==2.4.6
    python scripts/optuna_tpe_multivariate_vectors.py \
        --out crates/tune/tests/fixtures/optuna_tpe/multivariate.json

Two parts:

* `estimators`: Optuna's `_ParzenEstimator` built directly over several parameters at once
  (floats, log floats, stepped floats, stepped and log ints, categoricals, mixed) on recorded
  observations in Optuna's internal representation, with the parameters of a default
  `TPESampler()` (`_parzen_estimator_parameters`), and its joint `log_pdf` at probe points
  (random points of the space plus the all-low and all-high corners).
* `studies`: a study is built from recorded trials (complete with values, ties and infinities;
  pruned with intermediate values reaching different steps, a NaN last value, or none; failed;
  running, the last running one being the trial to sample). A default `TPESampler` (or one with
  `constant_liar=False`) then runs its own `_sample` for that trial over a given search space;
  `_build_parzen_estimator` is wrapped so that the trials it receives (the below and the above
  set, as trial numbers) and the estimators it returns are recorded, and those estimators'
  `log_pdf` is evaluated at probe points. `relative_space` is what
  `infer_relative_search_space` (the multivariate joint space) gives for the trial.

Each numeric dimension's kernel centres and bandwidths are written too (`kernels`): numpy's
`argsort` (in `compute_sigmas`) does not order equal observations stably (its SIMD sorts make
the order depend on the CPU), and which of several equal observations gets which neighbour gap
changes the joint density. The Rust test checks its bandwidths against these up to that order
and evaluates the densities with Optuna's assignment.

Observations and probes are pseudo-random (numpy RandomState with fixed seeds). Non-finite
numbers are written as the strings "nan", "inf" and "-inf".
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.trial import TrialState, create_trial

PARAMS = {
    "k": IntDistribution(0, 3),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "m": IntDistribution(1, 1000, log=True),
    "n": IntDistribution(-3, 17, step=4),
    "opt": CategoricalDistribution(["sgd", "adam", "rmsprop"]),
    "s": FloatDistribution(-1.0, 2.0, step=0.25),
    "x": FloatDistribution(-5.0, 5.0),
}


def num(v: float):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def describe(dist) -> dict:
    if isinstance(dist, CategoricalDistribution):
        return {"kind": "categorical", "choices": list(dist.choices)}
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return {"kind": kind, "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}


def draw(rs: np.random.RandomState, dist) -> float:
    """A random value of `dist` in Optuna's internal representation."""
    if isinstance(dist, CategoricalDistribution):
        return float(rs.randint(len(dist.choices)))
    if isinstance(dist, FloatDistribution) and dist.log:
        return float(math.exp(rs.uniform(math.log(dist.low), math.log(dist.high))))
    if isinstance(dist, IntDistribution) and dist.log:
        v = round(math.exp(rs.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5))))
        return float(min(max(v, dist.low), dist.high))
    if dist.step is None:
        return float(rs.uniform(dist.low, dist.high))
    n = int(round((dist.high - dist.low) / dist.step))
    return float(dist.low + rs.randint(n + 1) * dist.step)


def corner(dist, high: bool) -> float:
    if isinstance(dist, CategoricalDistribution):
        return float(len(dist.choices) - 1 if high else 0)
    return float(dist.high if high else dist.low)


def probes(rs, names, n_random):
    pts = [[corner(PARAMS[k], False) for k in names], [corner(PARAMS[k], True) for k in names]]
    pts += [[draw(rs, PARAMS[k]) for k in names] for _ in range(n_random)]
    return pts


def kernels(pe: _ParzenEstimator, names) -> dict:
    """Each numeric dimension's kernel centres and bandwidths (internal space, prior last)."""
    out = {}
    for k, d in zip(names, pe._mixture_distribution.distributions):
        if hasattr(d, "mu"):
            out[k] = {"mus": [float(v) for v in d.mu], "sigmas": [float(v) for v in d.sigma]}
    return out


def log_pdf(pe: _ParzenEstimator, names, pts) -> list:
    samples = {k: np.asarray([p[i] for p in pts], dtype=float) for i, k in enumerate(names)}
    return [num(v) for v in pe.log_pdf(samples)]


def estimator_case(name, names, n_obs, seed, duplicate=False):
    rs = np.random.RandomState(seed)
    rows = [[draw(rs, PARAMS[k]) for k in names] for _ in range(n_obs)]
    if duplicate and rows:
        # Repeated observations (equal kernels, zero gaps between sorted neighbours).
        rows = rows[: max(1, n_obs // 2)] * 2
    space = {k: PARAMS[k] for k in names}
    observations = {k: np.asarray([r[i] for r in rows], dtype=float) for i, k in enumerate(names)}
    params = TPESampler()._parzen_estimator_parameters
    pe = _ParzenEstimator(observations, space, params)
    pts = probes(rs, names, 8)
    return {
        "name": name,
        "params": [{"name": k, **describe(PARAMS[k])} for k in names],
        "observations": rows,
        "probes": pts,
        "log_pdf": log_pdf(pe, names, pts),
        "kernels": kernels(pe, names),
    }


def external(dist, internal: float):
    return dist.to_external_repr(internal)


def study_case(name, direction, trials, sample_space, constant_liar=True, seed=0):
    """`trials`: dicts with state, params (internal, by name), value / intermediate."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction=direction)
    for t in trials:
        params = {k: external(PARAMS[k], v) for k, v in t["params"].items()}
        dists = {k: PARAMS[k] for k in t["params"]}
        state = {
            "complete": TrialState.COMPLETE,
            "pruned": TrialState.PRUNED,
            "failed": TrialState.FAIL,
            "running": TrialState.RUNNING,
        }[t["state"]]
        inter = {int(s): float(v) for s, v in t.get("intermediate", [])}
        study.add_trial(
            create_trial(
                state=state,
                value=t.get("value") if state == TrialState.COMPLETE else None,
                params=params,
                distributions=dists,
                intermediate_values=inter,
            )
        )
    current = max(i for i, t in enumerate(trials) if t["state"] == "running")
    frozen = study.get_trials(deepcopy=False)[current]
    assert frozen.number == current

    captured = {}
    original = TPESampler._build_parzen_estimator

    def spy(self, study_, search_space, trials_, handle_below):
        pe = original(self, study_, search_space, trials_, handle_below)
        captured["below" if handle_below else "above"] = ([t.number for t in trials_], pe)
        return pe

    sampler = TPESampler(seed=seed, constant_liar=constant_liar)
    relative = sampler.infer_relative_search_space(study, frozen)
    space = {k: PARAMS[k] for k in sample_space}
    TPESampler._build_parzen_estimator = spy
    try:
        sampler._sample(study, frozen, space)
    finally:
        TPESampler._build_parzen_estimator = original

    rs = np.random.RandomState(seed + 1000)
    names = list(space)
    pts = probes(rs, names, 6)
    return {
        "name": name,
        "direction": direction,
        "constant_liar": constant_liar,
        "current": current,
        "trials": [
            {
                "number": i,
                "state": t["state"],
                "params": t["params"],
                "value": num(t["value"]) if "value" in t else None,
                "intermediate": [[int(s), num(v)] for s, v in t.get("intermediate", [])],
            }
            for i, t in enumerate(trials)
        ],
        "relative_space": list(relative),
        "sample_space": names,
        "below": captured["below"][0],
        "above": captured["above"][0],
        "probes": pts,
        "log_pdf_below": log_pdf(captured["below"][1], names, pts),
        "log_pdf_above": log_pdf(captured["above"][1], names, pts),
        "kernels_below": kernels(captured["below"][1], names),
        "kernels_above": kernels(captured["above"][1], names),
    }


def make_trials(seed, n, keys, states, missing=None):
    """`states`: a function from the trial index to (state, extra fields)."""
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        params = {k: draw(rs, PARAMS[k]) for k in keys}
        if missing and i in missing:
            for k in missing[i]:
                params.pop(k)
        state, extra = states(i, rs, params)
        out.append({"state": state, "params": params, **extra})
    return out


def objective(params):
    x = params.get("x", 0.0)
    lr = params.get("lr", 1e-3)
    return round((x - 1.0) ** 2 + (math.log10(lr) + 3.0) ** 2, 2)


def curve(rs, last_step, final, nan_last=False):
    steps = list(range(0, last_step + 1, max(1, last_step // 3) if last_step else 1))
    if steps[-1] != last_step:
        steps.append(last_step)
    vals = [round(final + 0.5 * (last_step - s) + rs.uniform(0, 0.01), 3) for s in steps]
    vals[-1] = final
    if nan_last:
        vals[-1] = math.nan
    return [[s, v] for s, v in zip(steps, vals)]


def mixed_states(i, rs, params, running=(5, 13, 27), failed=(3, 19), pruned_every=4):
    if i in running:
        return "running", {}
    if i in failed:
        return "failed", {}
    if i % pruned_every == 1:
        last = int(rs.choice([0, 2, 5, 9]))
        kind = rs.randint(5)
        if kind == 0:
            return "pruned", {"intermediate": []}
        final = objective(params) - 3.0  # Pruned values below the complete ones.
        return "pruned", {"intermediate": curve(rs, last, final, nan_last=(kind == 1))}
    value = objective(params)
    if i % 7 == 6:
        value = math.inf
    if i % 9 == 8:
        value = 2.0  # Ties.
    return "complete", {"value": value}


def all_pruned(i, rs, params):
    if i == 29:
        return "running", {}
    # The best values come from the trials that stopped earliest: ranking by value alone
    # would pick them, Optuna's (-step, value) does not.
    last = [1, 4, 8, 8, 12][i % 5]
    final = round(10.0 - last + rs.uniform(0, 1), 3) if last < 12 else round(20.0 + rs.uniform(0, 1), 3)
    if i % 11 == 5:
        return "pruned", {"intermediate": []}
    return "pruned", {"intermediate": curve(rs, last, final, nan_last=(i % 13 == 7))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    all7 = list(PARAMS)
    estimators = [
        estimator_case("all_seven_12_obs", all7, 12, 1),
        estimator_case("all_seven_40_obs_ramped_weights", all7, 40, 2),
        estimator_case("x_lr_30_obs", ["lr", "x"], 30, 3),
        estimator_case("prior_only", all7, 0, 4),
        estimator_case("one_obs", ["n", "opt", "x"], 1, 5),
        estimator_case("duplicates", ["k", "opt", "s"], 10, 6, duplicate=True),
        estimator_case("categorical_and_int_log", ["m", "opt"], 7, 7),
    ]

    keys = ["lr", "n", "opt", "x"]
    studies = [
        study_case(
            "minimize_liar_mixed",
            "minimize",
            make_trials(10, 30, keys, mixed_states),
            keys,
        ),
        study_case(
            "maximize_liar_mixed",
            "maximize",
            make_trials(11, 30, keys, mixed_states),
            keys,
        ),
        study_case(
            "minimize_no_liar",
            "minimize",
            make_trials(12, 30, keys, mixed_states),
            keys,
            constant_liar=False,
        ),
        study_case(
            "minimize_liar_60_trials_ramped_above",
            "minimize",
            make_trials(
                13,
                60,
                keys,
                lambda i, rs, p: mixed_states(i, rs, p, running=(7, 22, 41, 50, 59), failed=(9,), pruned_every=5),
            ),
            keys,
        ),
        study_case(
            "all_pruned_ranked_by_step",
            "minimize",
            make_trials(14, 30, keys, all_pruned),
            keys,
        ),
        study_case(
            "all_pruned_ranked_by_step_maximize",
            "maximize",
            make_trials(15, 30, keys, all_pruned),
            keys,
        ),
        # Some trials lack "opt" (a finished one: not in the joint space; a running one: left
        # out of the joint estimator's observations). Sampled: the joint space without "opt",
        # and "opt" alone (the independent sampler's estimator).
        study_case(
            "missing_params_joint",
            "minimize",
            make_trials(16, 30, keys, mixed_states, missing={4: ["opt"], 13: ["opt", "n"]}),
            ["lr", "n", "x"],
        ),
        study_case(
            "missing_params_independent",
            "minimize",
            make_trials(16, 30, keys, mixed_states, missing={4: ["opt"], 13: ["opt", "n"]}),
            ["opt"],
        ),
    ]

    doc = {
        "optuna_version": optuna.__version__,
        "numpy_version": np.__version__,
        "estimators": estimators,
        "studies": studies,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
