#!/usr/bin/env bash
# Penn Treebank, the small non-regularised config of Zaremba, Sutskever & Vinyals 2014
# ("Recurrent Neural Network Regularization", table 1 "non-regularized LSTM"):
# 2 layers x 200 units, unroll 20, batch 20, SGD lr 1 halved each epoch after epoch 4,
# 13 epochs, gradient norm clip 5, every weight U(-0.1, 0.1), no dropout.
#
# The paper's loss is summed over the 20 unrolled steps (and averaged over the batch);
# rnnkit's is the mean per token, whose gradient is 20 times smaller. So the paper's
# lr 1 and clip 5 are lr 20 and clip 0.25 here: the same updates (also the settings of
# PyTorch's word_language_model example).
#
#   scripts/ptb.sh [CELL] [more --section.field VALUE overrides]
#   CELL: lstm (default), gru, gru_reset_before, rnn_tanh, rnn_relu
#
# Data: ../shared/data/ptb (override with RNNKIT_DATA=/path/to/data); the run goes to
# runs/ptb-CELL. RNNKIT="python -m rnnkit" runs a source checkout (with PYTHONPATH=src).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${RNNKIT_DATA:-../shared/data}"
CELL="${1:-lstm}"
shift || true
if [[ ! -f "$DATA/ptb/ptb.train.txt" ]]; then
    echo "error: $DATA/ptb/ptb.train.txt not found; set RNNKIT_DATA to the shared data folder" >&2
    exit 2
fi
read -r -a RNNKIT_CMD <<< "${RNNKIT:-rnnkit}"
exec "${RNNKIT_CMD[@]}" train lm \
    --data.text "$DATA/ptb/ptb.train.txt" --data.valid_text "$DATA/ptb/ptb.valid.txt" \
    --data.tokenizer word --data.batch_size 20 --data.bptt 20 --data.eval_batch_size 20 \
    --model.cell "$CELL" --model.num_layers 2 --model.hidden_size 200 \
    --model.embedding_size 200 --model.init uniform --model.init_scale 0.1 \
    --model.unit_forget_bias false --model.dropout 0 \
    --optim.optimizer sgd --optim.lr 20 --optim.schedule step --optim.decay 0.5 \
    --optim.decay_after 4 \
    --trainer.epochs 13 --trainer.clip_norm 0.25 --trainer.max_minutes none \
    --trainer.out "runs/ptb-$CELL" --sample.prime "in the first" --sample.max_tokens 40 \
    "$@"
