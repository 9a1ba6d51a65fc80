#!/usr/bin/env bash
# The sentiment example, offline on CPU: P-tune two tiny random-init LMs, a GPT-2-style causal LM
# and a BERT-style masked LM (both frozen), on a small synthetic sentiment task; then
# evaluate each prompt on the dev set, predict three new sentences and print a summary.
#
#   bash examples/sentiment/run.sh                 # one to two minutes on a 2-core CPU
#   STEPS=200 LR=1e-2 ENCODER=mlp SEED=1 bash examples/sentiment/run.sh   # other settings
#   FORMAT=parquet bash examples/sentiment/run.sh  # the same data as parquet files (or FORMAT=datasets:
#                                                  # folders written by Dataset.save_to_disk)
#
# Writes .cache/demo/tiny-{gpt2,bert} (built once, rebuilt when the data or the builder
# changes) and runs/demo-{gpt2,bert}. The summary prints what does not depend on the
# machine (dev accuracy, predicted labels) and the training wall time, which does.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash scripts/setup.sh
PY=.venv/bin/python
PTUNE=.venv/bin/ptune
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # models this small run fastest on one thread

DATA=examples/sentiment
CACHE=.cache/demo
VERBALIZER='{"pos": "good", "neg": "bad"}'
STEPS=${STEPS:-500}
LR=${LR:-3e-3}
ENCODER=${ENCODER:-lstm}
SEED=${SEED:-42}
FAMILIES=(gpt2 bert)
FORMAT=${FORMAT:-jsonl}

# the data as --train/--dev/--data take it: the jsonl files, or them converted (same rows, same order)
case "$FORMAT" in
    jsonl) TRAIN=$DATA/train.jsonl DEV=$DATA/dev.jsonl NEW=$DATA/new.jsonl ;;
    parquet|datasets)
        conv=$CACHE/sentiment-$FORMAT
        "$PY" - "$DATA" "$conv" "$FORMAT" <<'EOF'
import sys
import datasets
datasets.disable_progress_bars()
src, out, fmt = sys.argv[1:]
for split in ("train", "dev", "new"):
    ds = datasets.Dataset.from_json(f"{src}/{split}.jsonl", cache_dir=f"{out}/.hf-cache")
    ds.to_parquet(f"{out}/{split}.parquet") if fmt == "parquet" else ds.save_to_disk(f"{out}/{split}")
EOF
        ext=$([ "$FORMAT" = parquet ] && echo .parquet || true)
        TRAIN=$conv/train$ext DEV=$conv/dev$ext NEW=$conv/new$ext ;;
    *) echo "FORMAT must be jsonl, parquet or datasets" >&2; exit 2 ;;
esac

now() { "$PY" -c 'import time; print(f"{time.time():.3f}")'; }

rm -rf runs/demo-gpt2 runs/demo-bert  # train refuses a folder that already holds a run

for family in "${FAMILIES[@]}"; do
    model=$CACHE/tiny-$family
    run=runs/demo-$family
    if [ "$family" = gpt2 ]; then
        template='[P*3] {text} [P*3] [MASK]'        # causal: the answer is the continuation
    else
        template='[P*3] {text} [P*3] [MASK] [P*3]'  # masked: pseudo tokens on both sides
    fi

    echo
    echo "== $family =="
    # rebuilt when the data or the builder changes
    stamp=$(cat "$DATA/train.jsonl" "$DATA/dev.jsonl" examples/make_tiny_model.py | sha256sum | cut -d' ' -f1)
    if [ ! -f "$model/config.json" ] || [ "$(cat "$model/example-stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "-- building $model (random init, tokenizer trained on the example texts)"
        rm -rf "$model"
        "$PY" examples/make_tiny_model.py --family "$family" \
            --corpus "$DATA/train.jsonl" "$DATA/dev.jsonl" --words good bad --output "$model"
        echo "$stamp" > "$model/example-stamp"
    fi

    echo "-- ptune train ($STEPS steps, $ENCODER encoder, lr $LR, LM frozen)"
    t0=$(now)
    summary=$("$PTUNE" train --model "$model" --train "$TRAIN" --dev "$DEV" \
        --template "$template" --verbalizer "$VERBALIZER" --encoder "$ENCODER" \
        --steps "$STEPS" --lr "$LR" --batch-size 16 --eval-every 50 --seed "$SEED" \
        --output "$run")
    t1=$(now)
    echo "$summary" | tee "$run/train_summary.json"

    echo "-- ptune eval"
    "$PTUNE" eval --checkpoint "$run" --data "$DEV" --output "$run/dev_eval.json"

    echo "-- ptune predict"
    "$PTUNE" predict --checkpoint "$run" --data "$NEW" --output "$run/predictions.jsonl"
    cat "$run/predictions.jsonl"
    t2=$(now)
    printf '{"train_s": %s, "eval_predict_s": %s, "template": %s}\n' \
        "$("$PY" -c "print(round($t1 - $t0, 1))")" "$("$PY" -c "print(round($t2 - $t1, 1))")" \
        "$("$PY" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$template")" > "$run/timing.json"
done

echo
"$PY" - "$DATA/new.jsonl" "${FAMILIES[@]}" <<'EOF'
import json, sys
from pathlib import Path

new = [json.loads(line)["text"] for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
rows = []
for family in sys.argv[2:]:
    run = Path("runs") / f"demo-{family}"
    train = json.loads((run / "train_summary.json").read_text())
    dev = json.loads((run / "dev_eval.json").read_text())
    timing = json.loads((run / "timing.json").read_text())
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    kind = json.loads((run / "best" / "ptune_config.json").read_text())["prompt"]["kind"]
    rows.append((family, kind, timing["template"], f"{dev['accuracy']:.3f}", f"{timing['train_s']:.1f}",
                 " ".join(p["label"] for p in preds)))
head = ("model", "kind", "template", "dev acc", "train s", "predictions")
widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
print("Summary (tiny random-init LMs, frozen; dev accuracy of the best checkpoint; chance = 0.5)")
for r in [head] + rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
print("predicted sentences: " + " | ".join(new))
EOF
