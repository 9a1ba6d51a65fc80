#!/usr/bin/env bash
# The main job, offline on CPU: `ptune demo`. It builds ptune's synthetic knowledge world
# once (a knowledge base, a corpus that states every fact, a tokenizer and two small LMs
# pretrained here: GPT-2 style and BERT style; cached in .cache/ptune), then probes both
# LMs with LAMA's manual prompts, the best pretraining wording (oracle), P-tuning and a
# random-LM control, and prints the table. On a quiet 2-core CPU the first run takes about
# 7 minutes (mostly the world), later runs under a minute (the probe); docs/lama.md has details.
#
#   bash scripts/demo.sh                      # results in runs/demo
#   bash scripts/demo.sh --output runs/other --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
rm -rf runs/demo  # a fresh probe each time (the world itself stays cached)
exec .venv/bin/ptune demo "$@"
