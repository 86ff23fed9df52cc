#!/usr/bin/env bash
# The dates task of docs/seq2seq.md: human-written dates in 9 locales -> ISO 8601.
# Trains for at most 10 minutes of wall time (one CPU thread; the figures in the doc
# came from a machine shared with other jobs), then scores the best checkpoint on the
# held-out 10,000 generated dates and writes report.txt and attention.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/dates}"
PYTHONPATH=src python -m rnnkit train seq2seq \
    --data.dates 60000 --data.batch_size 128 \
    --model.cell gru --model.hidden_size 64 --model.embedding_size 32 \
    --model.attention bahdanau --model.attention_size 64 --model.dropout 0 \
    --optim.lr 0.003 --optim.schedule plateau --optim.patience 0 --optim.decay 0.5 \
    --trainer.epochs 40 --trainer.max_minutes 10 --trainer.threads 1 \
    --trainer.progress false --trainer.out "$out"
