#!/usr/bin/env bash
# Every reproduction in docs/results.md, one after another (hours on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
for cell in lstm gru gru_reset_before rnn_tanh; do
    ./ptb.sh "$cell"
done
./tinyshakespeare.sh 12
./tinyshakespeare.sh 30
