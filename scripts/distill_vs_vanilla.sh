#!/usr/bin/env bash
# Vanilla vs distilled HOSER on the bundled simulated Helsinki trips, same config, seeds and budget:
# best validation next-step accuracy (mean ± std over the seeds) and the training time per epoch
# (sum of the optimizer steps' `step_time` in training.jsonl: forward, backward, optimizer step and
# batch assembly, teacher lookups included; validation and checkpoint writes excluded).
#
#   scripts/distill_vs_vanilla.sh [OUT_DIR] [EPOCHS] [SEEDS...]
#
# Defaults: OUT_DIR=target/distill-vs-vanilla, EPOCHS=25 (configs/hoser/helsinki_test.yaml's budget),
# seeds 42 43 44. Binaries: $HOSER_VANILLA / $HOSER_DISTILL, else target/debug/{hoser-vanilla,hoser-distill}
# under $CARGO_TARGET_DIR (build them first: cargo build -p hoser-vanilla -p hoser-distill).
# Extra student flags (e.g. --set distill.cache=false) go in $DISTILL_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/distill-vs-vanilla}
epochs=${2:-25}
shift $(( $# > 2 ? 2 : $# ))
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(42 43 44)
bin_dir=${CARGO_TARGET_DIR:-target}/debug
vanilla=${HOSER_VANILLA:-$bin_dir/hoser-vanilla}
distill=${HOSER_DISTILL:-$bin_dir/hoser-distill}
for b in "$vanilla" "$distill"; do
  [ -x "$b" ] || { echo "missing $b: cargo build -p hoser-vanilla -p hoser-distill" >&2; exit 2; }
done
mkdir -p "$out"
common=(--config configs/hoser/helsinki_test.yaml --epochs "$epochs" --set logging.progress=off
        --set logging.log_dir=null --set logging.tensorboard_dir=null)
teacher=$out/teacher
if [ ! -f "$teacher/teacher.safetensors" ]; then
  "$distill" teacher --config configs/lmtad/helsinki_test.yaml --output-dir "$teacher" \
    --set logging.progress=off 2> "$out/teacher.log"
fi
for seed in "${seeds[@]}"; do
  v=$out/vanilla_seed$seed; d=$out/distill_seed$seed
  rm -rf "$v" "$d"
  "$vanilla" "${common[@]}" --seed "$seed" --output-dir "$v" 2> "$out/vanilla_seed$seed.log"
  # shellcheck disable=SC2086
  "$distill" "${common[@]}" --seed "$seed" --output-dir "$d" --teacher "$teacher" ${DISTILL_FLAGS:-} \
    2> "$out/distill_seed$seed.log"
done
python3 - "$out" "${seeds[@]}" <<'PY'
import json, statistics as st, sys
out, seeds = sys.argv[1], sys.argv[2:]
def read(d):
    acc, epoch_time = [], {}
    for line in open(f"{d}/training.jsonl"):
        e = json.loads(line)
        if e.get("event") == "validation":
            acc.append(e["metrics"]["val_next_step_acc"])
        elif e.get("event") == "train_step":
            epoch_time[e["epoch"]] = epoch_time.get(e["epoch"], 0.0) + e["step_time"]
    return max(acc), st.mean(epoch_time.values())
rows = {k: [read(f"{out}/{k}_seed{s}") for s in seeds] for k in ("vanilla", "distill")}
def ms(xs):
    return f"{st.mean(xs):.4f} ± {st.stdev(xs) if len(xs) > 1 else 0.0:.4f}"
for k, r in rows.items():
    print(f"{k:8s} best val_next_step_acc {ms([a for a, _ in r])}  (per seed: {', '.join(f'{a:.4f}' for a, _ in r)})"
          f"  training time per epoch {st.mean(t for _, t in r):.3f} s")
ratio = st.mean(t for _, t in rows["distill"]) / st.mean(t for _, t in rows["vanilla"])
print(f"epoch-time ratio distilled/vanilla: {ratio:.3f}")
PY
