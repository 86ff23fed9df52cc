#!/usr/bin/env bash
# Chung et al. 2014, section 4.1, on JSB Chorales: one layer of about 20k parameters
# (tanh 100 units, reset-before GRU 46, LSTM 36), RMSProp, gradient norm rescaled to 1,
# NLL per time step. Prints each cell's best-checkpoint train and validation NLL.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-../shared/data/jsb_chorales/jsb-chorales-quarter.json}"
epochs="${EPOCHS:-100}"
for spec in rnn_tanh:100 gru_reset_before:46 lstm:36; do
    cell="${spec%%:*}" hidden="${spec##*:}"
    PYTHONPATH=src python -m rnnkit train music --data "$data" \
        --model.cell "$cell" --model.hidden_size "$hidden" \
        --trainer.epochs "$epochs" --trainer.progress false --trainer.threads 1 \
        --trainer.out "runs/music-$cell" | tail -n 2
done
