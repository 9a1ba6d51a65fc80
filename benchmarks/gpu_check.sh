#!/usr/bin/env bash
# The GPU check: ptune vs PEFT P-tuning (as documented and as a careful user runs it), side by
# side on one GPU, bf16: gpt2-medium and bert-base built from configs (no download), batch 32 and
# 128, eager and torch.compile with CUDA graphs (reduce-overhead). Prints one table with useful
# training TFLOP/s and its share of the bf16 matmul peak; appends the rows to $OUT.
# Usage: bash benchmarks/gpu_check.sh        (one GPU; a few minutes, most of it compiling)
#        PEAK_TFLOPS=989 bash ...            (the datasheet's dense bf16 peak; default: measured)
#        TINY=1 bash benchmarks/gpu_check.sh (the eager rows with tiny models on the CPU: a smoke test;
#                                             MODES="no reduce-overhead" adds the compiled rows, slowly)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export TRANSFORMERS_VERBOSITY=error PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ "${TINY:-0}" = 1 ]; then
  DEVICE=cpu GPT=tiny BERT=bert-tiny STEPS=${STEPS:-1} WARMUP=${WARMUP:-1} OUT=${OUT:-/dev/null} MODES=${MODES:-no}
fi
DEVICE=${DEVICE:-cuda}
GPT=${GPT:-gpt2-medium}
BERT=${BERT:-bert-base}
OUT=${OUT:-benchmarks/gpu.jsonl}
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; fi
PEAK=${PEAK_TFLOPS:-$("$PY" -c "from ptune.bench import matmul_tflops as m; print(round(m('$DEVICE', 'bf16', $([ "$DEVICE" = cuda ] && echo 8192 || echo 512)), 4))")}
echo "bf16 matmul peak: $PEAK TFLOP/s (${PEAK_TFLOPS:+datasheet}${PEAK_TFLOPS:-measured})"
RUN=$(mktemp)
trap 'rm -f "$RUN"' EXIT
for arch in "$GPT" "$BERT"; do
  for batch in 32 128; do
    for compile in ${MODES:-no reduce-overhead}; do
      extra=()
      if [ "$compile" != no ]; then extra=(--compile "$compile"); fi
      "$PY" -m ptune.bench --arch "$arch" --batch "$batch" --device "$DEVICE" --dtype bf16 --encoder mlp \
        --steps "${STEPS:-10}" --warmup "${WARMUP:-3}" --peak-tflops "$PEAK" --json "$RUN" "${extra[@]}" > /dev/null
    done
  done
done
cat "$RUN" >> "$OUT"
"$PY" benchmarks/gpu_table.py "$RUN"
