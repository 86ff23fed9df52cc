#!/usr/bin/env bash
# Scaling on one machine: tokens per second of 1 process x 2 threads against 2 processes x
# 1 thread (torchrun, gloo) for the main job (`rnnkit train lm` with its defaults) and the
# PTB recipe (scripts/ptb.sh), and the share of a step rank 0 spends in the gradient
# all-reduce (metrics.jsonl's allreduce_s, the wait for the slower rank included). Rates
# are taken over steps 6..STEPS, after the kernels are built and the caches warm. Figures
# and the machine they came from: docs/distributed.md.
#
#   scripts/distributed_scaling.sh [STEPS]      (default 60)
#
# Data for PTB: ../shared/data/ptb (RNNKIT_DATA overrides); runs go to a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-60}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
ONE="python -m rnnkit"
TWO="python -m torch.distributed.run --standalone --nproc_per_node 2 -m rnnkit"
LIMITS=(--trainer.max_steps "$STEPS" --trainer.progress false --samples 0)

summary() {  # summary NAME: tokens/s and the all-reduce's share over steps 6..STEPS
    python - "$OUT/$1" "$1" <<'PY'
import json, sys
records = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [r for r in records if r["kind"] == "train"]
first, last = train[4], train[-1]
tokens = last["tokens_per_s"] * last["elapsed_s"] - first["tokens_per_s"] * first["elapsed_s"]
seconds = last["elapsed_s"] - first["elapsed_s"]
comm = sum(r.get("allreduce_s", 0.0) for r in train[5:])
print(f"{sys.argv[2]:<24} {tokens / seconds:>10,.0f} tok/s   all-reduce {100 * comm / seconds:5.1f}% "
      f"of the step time ({1000 * comm / len(train[5:]):.1f} ms a step)")
PY
}

$ONE train lm --trainer.threads 2 "${LIMITS[@]}" --trainer.out "$OUT/main-1x2" > /dev/null
summary main-1x2
$TWO train lm --trainer.threads 1 "${LIMITS[@]}" --trainer.out "$OUT/main-2x1" > /dev/null
summary main-2x1
RNNKIT="$ONE" scripts/ptb.sh lstm --trainer.threads 2 "${LIMITS[@]}" \
    --trainer.out "$OUT/ptb-1x2" > /dev/null
summary ptb-1x2
RNNKIT="$TWO" scripts/ptb.sh lstm --trainer.threads 1 "${LIMITS[@]}" \
    --trainer.out "$OUT/ptb-2x1" > /dev/null
summary ptb-2x1
