#!/usr/bin/env bash
# The CPU rows of benchmarks/RESULTS.md: ptune vs PEFT P-tuning (as documented and as a careful
# user runs it), side by side, fp32, batch 8, steps timed by the process's CPU time (--clock cpu).
# Usage: bash benchmarks/cpu.sh [extra ptune bench args]   (about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PTUNE=${PTUNE:-.venv/bin/ptune}
OUT=${OUT:-benchmarks/cpu.jsonl}
export TRANSFORMERS_VERBOSITY=error OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for arch in gpt2-small bert-base; do
  "$PTUNE" bench --arch "$arch" --encoder mlp --batch 8 --device cpu --dtype fp32 --steps 6 --warmup 2 --clock cpu --json "$OUT" "$@"
done
"$PTUNE" bench --arch gpt2-small --encoder lstm --batch 8 --device cpu --dtype fp32 --steps 6 --warmup 2 --clock cpu --json "$OUT" "$@"
# PEFT's layout for ptune too: every pseudo token before the text (run once per batch by ptune)
"$PTUNE" bench --arch gpt2-small --encoder mlp --batch 8 --device cpu --dtype fp32 --steps 6 --warmup 2 --clock cpu --layout pseudo-first --json "$OUT" "$@"
# ptune's pseudo tokens all after the text: a frozen causal LM runs the text without autograd
"$PTUNE" bench --arch gpt2-small --encoder mlp --batch 8 --device cpu --dtype fp32 --steps 6 --warmup 2 --clock cpu --layout text-first --json "$OUT" "$@"
