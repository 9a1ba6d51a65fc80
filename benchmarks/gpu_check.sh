#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, in under 3 minutes on an H100/H200 with torch,
# transformers and peft installed and no internet (models are built from configs).
# Usage: bash benchmarks/gpu_check.sh   -> prints the tables, appends JSON lines to $OUT
# Smoke test without a GPU (tests/test_bench.py):
#   DEVICE=cpu GPT=tiny BERT=bert-tiny STEPS=1 WARMUP=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-benchmarks/gpu.jsonl}
DEVICE=${DEVICE:-cuda}
GPT=${GPT:-gpt2-medium}
BERT=${BERT:-bert-base}
export TRANSFORMERS_VERBOSITY=error PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi
bench() { "$PY" -m ptune.bench --device "$DEVICE" --dtype bf16 --encoder mlp --steps "${STEPS:-20}" --warmup "${WARMUP:-5}" --json "$OUT" "$@"; }
for batch in 32 128; do
  bench --arch "$GPT" --batch "$batch"
done
bench --arch "$BERT" --batch 32
# PEFT's own layout (every pseudo token before the text)
bench --arch "$GPT" --batch 128 --layout pseudo-first
# pseudo tokens after the text: the frozen causal LM runs the text without autograd
bench --arch "$GPT" --batch 32 --layout text-first
# optional (COMPILE=1, or a torch.compile mode such as COMPILE=reduce-overhead for CUDA graphs;
# compilation takes extra minutes): the LM compiled, both sides
if [ "${COMPILE:-0}" = 1 ]; then
  bench --arch "$GPT" --batch 32 --compile
elif [ "${COMPILE:-0}" != 0 ]; then
  bench --arch "$GPT" --batch 32 --compile "$COMPILE"
fi
