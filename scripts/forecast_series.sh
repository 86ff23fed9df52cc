#!/usr/bin/env bash
# Forecasting on the real series that ship with statsmodels, against naive,
# seasonal-naive and ARIMA baselines on the held-out last 10% (rolling origins).
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--trainer.progress false --trainer.threads 1 --trainer.epochs "${EPOCHS:-60}")
PYTHONPATH=src python -m rnnkit train forecast --data.builtin sunspots --data.season 11 \
    --model.window 22 --model.horizon 5 --trainer.out runs/forecast-sunspots "${common[@]}" \
    | tail -n 7
PYTHONPATH=src python -m rnnkit train forecast --data.builtin co2 --data.season 12 \
    --data.arima_order 2,1,2 --data.difference true --model.window 36 --model.horizon 12 \
    --trainer.out runs/forecast-co2 "${common[@]}" | tail -n 7
