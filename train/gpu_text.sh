#!/usr/bin/env bash
# Train the words (train.train) on a GPU lent by the `device` tool; the adapter comes back under $OUT.
#
#   here:  bash train/gpu_text.sh prepare [--encoder minilm|mpnet] [--precision fp16|fp32] [--train-args "..."]
#            writes .gpu/ (git-ignored: the MELD CSVs, the base encoder in pieces of <= 40 MiB) and
#            prints the device calls to make, in order (carry + command); each carries one piece
#   there: bash train/gpu_text.sh receive            (every call but the last: keeps its piece)
#   there: bash train/gpu_text.sh train [--tiny] [-- TRAIN.TRAIN OPTIONS]    (the last call)
#            joins the pieces, trains on the GPU, writes $OUT/model/ (card.json, model.safetensors,
#            text_encoder.safetensors) and $OUT/train.log; --tiny: 256 train and 128 dev rows
#   here:  .venv/bin/python -m train.evaluate --checkpoint <files_at>/model --csv ../shared/data/meld/dev_sent_emo.csv
#
# Without a GPU (e.g. to try it here) it trains on the CPU: OUT=/tmp/x bash train/gpu_text.sh train --tiny
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3          # the GPU machine's python3 holds torch
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
verb="${1:-}"; shift || true
case "$verb" in
  prepare) exec "$PY" -m train.gpu_text prepare "$@" ;;
  receive) exec "$PY" -m train.gpu_text receive ;;
  train)
    tiny=()
    if [ "${1:-}" = "--tiny" ]; then tiny=(--limit 256 --dev-limit 128); shift; fi
    if [ "${1:-}" = "--" ]; then shift; fi
    out="${OUT:?set OUT to the folder the model is written to (the device tool sets it)}"
    models=$("$PY" -m train.gpu_text assemble)
    export WORKBENCH_TEXT_MODELS="$models"
    rm -rf /tmp/gpu-text/run
    "$PY" -m train.train --train .gpu/meld/train_sent_emo.csv --dev .gpu/meld/dev_sent_emo.csv \
      --out "$out/model" --tb /tmp/gpu-text/run --quiet "${tiny[@]}" "$@" 2>&1 | tee "$out/train.log"
    ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
