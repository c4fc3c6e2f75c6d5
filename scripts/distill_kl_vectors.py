#!/usr/bin/env python3
"""Reference vectors for hoser-distill's distillation term (the teacher's candidate probabilities
read through the road -> token map, then `losses::sequence::distillation_kl`, times tau^2 or 1).

Regenerate (numpy only, pinned in scripts/requirements-vectors.txt):

    pip install numpy==2.4.6
    python scripts/distill_kl_vectors.py \
        --out crates/hoser-distill/tests/fixtures/distill_kl/vectors.json

Written from the distillation hook's formula (the fork's reference, its section 3.5), in float64,
with plain loops; it shares no code with the Rust implementation. Per distilled step (b, t) with
k = candidate_len[b, t] real candidates c_0 .. c_{k-1} (road ids):

    q_i     = next_probs[b, t, token(c_i)]                  several roads may share one cell
    q~_i    = q_i / max(sum_j q_j, 1e-9)                    renormalised over the real candidates
    qt_i    = max(q~_i, 1e-9)^(1/tau) / sum_j max(q~_j, 1e-9)^(1/tau)
    log pt  = log_softmax(logits[b, t, :k] / tau)
    KL_bt   = sum_i qt_i (log max(qt_i, 1e-9) - log pt_i)

and the loss is the mean of KL_bt over the distilled steps of the batch: every real step
(t < trace_len[b], steps=all) or only each row's last real step (t = trace_len[b] - 1,
steps=last); times tau^2 with temperature_squared. A step counts when it has a real candidate
(every case here has positive teacher mass on every real step).

The inputs are written into the JSON too, so the Rust test reads the very same numbers. Teacher
probabilities are rounded to float32 first (the teacher hands f32 to the loss), and the expected
values are computed from those rounded numbers. Padding is adversarial: padded candidate slots hold
road 0 (a real road, whose cell has teacher mass) and student logit 50.0, padded steps hold
candidates and logits too, so an implementation that reads padding gets another answer; the script
checks that it does (by a margin far above the test's tolerance).

Token map: a 3 x 3 grid of 1 degree cells over [0, 2] x [0, 2] (9 cells, PAD 9, EOT 10, SOT 11,
vocabulary 12), 10 roads, in the saved token-map JSON form the Rust TokenMap deserialises.
"""

import argparse
import json

import numpy as np

SEED = 17
FLOOR = 1e-9
PAD_LOGIT = 50.0
PAD_ROAD = 0
# Road -> cell. Roads 0 and 1 share cell 4; roads 3, 4 and 5 share cell 7; road 9 shares cell 1 with
# nothing. Road 0 (the padding road) sits in a cell with mass.
ROAD_TOKENS = [4, 4, 0, 7, 7, 7, 2, 5, 8, 1]
ROWS = COLS = 3
VOCAB = ROWS * COLS + 3


def token_map():
    cells = ROWS * COLS
    return {
        "format": "trainyard-lmtad-token-map",
        "version": 1,
        "dataset": "distill_kl_fixture",
        "geo_crc32c": "00000000",
        "centroid": "line_centroid",
        "grid": {
            "cell_deg": 1.0,
            "min_lat": 0.0,
            "min_lng": 0.0,
            "max_lat": 2.0,
            "max_lng": 2.0,
            "rows": ROWS,
            "cols": COLS,
        },
        "pad": cells,
        "eot": cells + 1,
        "sot": cells + 2,
        "vocab_size": VOCAB,
        "road_tokens": ROAD_TOKENS,
    }


def kl_step(next_probs, roads, logits, tau):
    """KL of one step over its real candidates `roads` (float64)."""
    q = np.array([next_probs[ROAD_TOKENS[r]] for r in roads], dtype=np.float64)
    q = q / max(q.sum(), FLOOR)
    qt = np.maximum(q, FLOOR) ** (1.0 / tau)
    qt = qt / qt.sum()
    z = np.asarray(logits, dtype=np.float64) / tau
    m = z.max()
    log_p = z - (m + np.log(np.exp(z - m).sum()))
    return float(np.sum(qt * (np.log(np.maximum(qt, FLOOR)) - log_p)))


def batch_kl(case, steps, width=None):
    """Mean KL over the distilled steps; `width(b, t)` overrides how many slots are read (to check
    that reading padding changes the answer)."""
    terms = []
    for b, length in enumerate(case["trace_len"]):
        chosen = range(length) if steps == "all" else ([length - 1] if length > 0 else [])
        for t in chosen:
            k = case["candidate_len"][b][t] if width is None else width(b, t)
            if k == 0:
                continue
            terms.append(
                kl_step(
                    case["next_probs"][b][t],
                    case["candidate_roads"][b][t][:k],
                    case["logits"][b][t][:k],
                    case["temperature"],
                )
            )
    return sum(terms) / len(terms) if terms else 0.0


def make_case(rng, name, description, tau, trace_len, candidate_len, t, c, padded_step_len=0, tiny=None):
    """A padded batch. `candidate_len[b]` lists the real steps' candidate counts; padded steps get
    `padded_step_len` candidate slots filled like real ones (they must be ignored)."""
    b = len(trace_len)
    lens = np.zeros((b, t), dtype=np.int64)
    roads = np.full((b, t, c), PAD_ROAD, dtype=np.int64)
    logits = np.full((b, t, c), PAD_LOGIT, dtype=np.float64)
    for bi in range(b):
        for ti in range(t):
            k = candidate_len[bi][ti] if ti < trace_len[bi] else padded_step_len
            lens[bi, ti] = k if ti < trace_len[bi] else 0
            # Distinct roads per step, drawn from all 10 (so shared cells show up together).
            roads[bi, ti, :k] = rng.choice(len(ROAD_TOKENS), size=k, replace=False)
            logits[bi, ti, :k] = np.round(rng.normal(0.0, 2.0, size=k), 6)
    # Teacher next-token distributions over the whole vocabulary (special tokens included), as the
    # teacher's softmax would give them, rounded to float32.
    raw = rng.normal(0.0, 1.5, size=(b, t, VOCAB))
    probs = np.exp(raw - raw.max(axis=2, keepdims=True))
    if tiny is not None:
        # The cell of step `tiny`'s first candidate gets almost no mass, so the 1e-9 floor before
        # tempering matters.
        bi, ti = tiny
        probs[bi, ti, ROAD_TOKENS[roads[bi, ti, 0]]] = 1e-12 * probs[bi, ti].sum()
    probs = probs / probs.sum(axis=2, keepdims=True)
    probs = probs.astype(np.float32).astype(np.float64)
    case = {
        "name": name,
        "description": description,
        "temperature": tau,
        "trace_len": list(trace_len),
        "candidate_len": lens.tolist(),
        "candidate_roads": roads.tolist(),
        "logits": logits.tolist(),
        "next_probs": probs.tolist(),
    }
    return case


def finish(case, require_shared=True, floor_matters=False):
    global FLOOR
    tau = case["temperature"]
    expected = {}
    for steps in ("all", "last"):
        kl = batch_kl(case, steps)
        expected[steps] = {"temperature_squared_false": kl, "temperature_squared_true": kl * tau * tau}
        # Reading every slot (padding included) must give another answer.
        width = len(case["logits"][0][0])
        leaky = batch_kl(case, steps, width=lambda b, t: width)
        assert abs(leaky - kl) > 1e-3, (case["name"], steps, "padding does not change the answer")
    a, l = expected["all"]["temperature_squared_false"], expected["last"]["temperature_squared_false"]
    assert abs(a - l) > 1e-3, (case["name"], "steps=all and steps=last agree")
    if require_shared:
        shared = False
        for b, length in enumerate(case["trace_len"]):
            for t in range(length):
                k = case["candidate_len"][b][t]
                cells = [ROAD_TOKENS[r] for r in case["candidate_roads"][b][t][:k]]
                shared |= len(set(cells)) < len(cells)
        assert shared, (case["name"], "no step has candidates sharing a cell")
    if floor_matters:
        floor, FLOOR = FLOOR, 1e-30
        unfloored = batch_kl(case, "all")
        FLOOR = floor
        assert abs(unfloored - a) > 1e-4, (case["name"], "the 1e-9 floor does not change the answer")
    case["expected_kl"] = expected
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    cases = [
        finish(
            make_case(
                rng,
                "tau2_ragged",
                "tau 2, rows of 4 and 2 real steps, 1-5 candidates, padded steps empty",
                2.0,
                [4, 2],
                [[5, 3, 4, 2], [4, 5]],
                t=4,
                c=5,
            )
        ),
        finish(
            make_case(
                rng,
                "tau1_padded_steps_filled",
                "tau 1, three rows (3, 1, 2 steps); padded steps hold candidate roads and logits",
                1.0,
                [3, 1, 2],
                [[4, 3, 2], [3], [4, 4]],
                t=3,
                c=4,
                padded_step_len=3,
            )
        ),
        finish(
            make_case(
                rng,
                "tau4_tiny_mass",
                "tau 4, one step where a candidate's cell has ~1e-12 teacher mass (the 1e-9 floor matters)",
                4.0,
                [3, 3],
                [[6, 5, 4], [3, 6, 5]],
                t=3,
                c=6,
                tiny=(0, 1),
            ),
            floor_matters=True,
        ),
        finish(
            make_case(
                rng,
                "tau_half_single_candidate_last",
                "tau 0.5, a row whose last real step has one candidate (KL 0, still counted), an empty row",
                0.5,
                [2, 3, 0],
                [[4, 1], [5, 3, 4], []],
                t=4,
                c=5,
            )
        ),
    ]
    out = {
        "description": (
            "hoser-distill KL reference vectors, generated by scripts/distill_kl_vectors.py (numpy, "
            "float64, from the formula in its docstring). Project-made data, same licence as the project."
        ),
        "numpy": np.__version__,
        "seed": SEED,
        "token_map": token_map(),
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
