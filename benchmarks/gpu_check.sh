#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, in under 3 minutes on an H100/H200 with torch,
# transformers and peft installed and no internet (models are built from configs).
# Usage: bash benchmarks/gpu_check.sh   -> prints the tables, appends JSON lines to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-benchmarks/gpu.jsonl}
export TRANSFORMERS_VERBOSITY=error PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for batch in 32 128; do
  "$PY" -m ptune.bench --arch gpt2-medium --encoder mlp --batch "$batch" --device cuda --dtype bf16 --steps 20 --warmup 5 --json "$OUT"
done
"$PY" -m ptune.bench --arch bert-base --encoder mlp --batch 32 --device cuda --dtype bf16 --steps 20 --warmup 5 --json "$OUT"
# PEFT's own layout (every pseudo token before the text)
"$PY" -m ptune.bench --arch gpt2-medium --encoder mlp --batch 128 --device cuda --dtype bf16 --steps 20 --warmup 5 --layout pseudo-first --json "$OUT"
# pseudo tokens after the text: the frozen causal LM runs the text without autograd
"$PY" -m ptune.bench --arch gpt2-medium --encoder mlp --batch 32 --device cuda --dtype bf16 --steps 20 --warmup 5 --layout text-first --json "$OUT"
# optional (COMPILE=1; compilation takes extra minutes): the LM compiled, both sides
if [ "${COMPILE:-0}" = 1 ]; then
  "$PY" -m ptune.bench --arch gpt2-medium --encoder mlp --batch 32 --device cuda --dtype bf16 --steps 20 --warmup 5 --compile --json "$OUT"
fi
