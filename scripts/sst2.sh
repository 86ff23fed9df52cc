#!/usr/bin/env bash
# SST-2 sentence polarity (../shared/data/sst2: stsa.binary.train / .dev, sentence level,
# no phrase labels), without pretrained vectors: embeddings 300, a BiLSTM of 150 units
# per direction, max pooling over time, dropout 0.5, Adam 1e-3, batch 32, the best
# epoch by validation loss. The issue's bar: dev accuracy >= 84%.
#
#   scripts/sst2.sh [more --section.field VALUE overrides]
#
# Data: ../shared/data/sst2 (override with RNNKIT_DATA); the run goes to runs/sst2.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${RNNKIT_DATA:-../shared/data}"
if [[ ! -f "$DATA/sst2/stsa.binary.train" ]]; then
    echo "error: $DATA/sst2/stsa.binary.train not found; set RNNKIT_DATA" >&2
    exit 2
fi
read -r -a RNNKIT_CMD <<< "${RNNKIT:-rnnkit}"
exec "${RNNKIT_CMD[@]}" train classify \
    --train "$DATA/sst2/stsa.binary.train" --valid "$DATA/sst2/stsa.binary.dev" \
    --model.cell lstm --model.pooling max --trainer.epochs 10 \
    --trainer.out runs/sst2 "$@"
