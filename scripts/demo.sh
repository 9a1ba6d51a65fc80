#!/usr/bin/env bash
# The main job, offline on CPU: `ptune demo`. It probes the two small LMs of ptune's
# synthetic knowledge world (a knowledge base, a corpus that states every fact, a tokenizer,
# a GPT-2-style and a BERT-style LM pretrained on it) with LAMA's manual prompts, the best
# pretraining wording (oracle), AutoPrompt, mined templates, P-tuning, hybrid prompts and a
# random-LM control, and prints the report with the paper's claims checked. Two studies are
# opt-in: how much manual and hybrid prompts depend on the wording, and how the prompt
# encoders compare.
# Seed 0 uses the world shipped with ptune (checked against its sha256 manifest; `ptune world
# build --output DIR --check` rebuilds it and compares); other seeds build a world first
# (minutes each) and cache it in .cache/ptune. docs/lama.md has the numbers and timings.
#
#   bash scripts/demo.sh                      # results in runs/demo
#   bash scripts/demo.sh --seeds 0,1,2        # three worlds: every cell as mean ± std
#   bash scripts/demo.sh --wordings 5 --encoders lstm,mlp,none   # the full report, both studies
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
rm -rf runs/demo  # a fresh probe each time (the world itself stays cached)
exec .venv/bin/ptune demo "$@"
