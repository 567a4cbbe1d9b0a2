#!/usr/bin/env bash
# The SAE goals of issue 30 (BENCHMARKS.md, "SAE features on the fine-tuned agent"):
# fine-tune the default model on the train games, play the held-out and the train games
# with it, then train a TopK SAE at a middle layer over the runs' prompts and the
# fine-tuning demonstrations, label its features by the runs' facts, explain a decision in
# features, and ablate each decision's labelled feature against a random control.
#
#   bash benchmarks/sae_bridge.sh GAMES_DIR OUT_DIR [LAYER] [K] [extra options]
#
# GAMES_DIR holds train/ and valid/ (`workbench games make`); LAYER defaults to 15 (of 30),
# K to 32. Extra options (e.g. --device cuda) go to every model command. The LoRA adapter
# trains the last 10 blocks only (--top-layers 10), so below layer 20 the fine-tuned agent's
# stream is the base model's and one SAE serves both.
set -euo pipefail
GAMES=$1
OUT=$2
LAYER=${3:-15}
K=${4:-32}
shift $(( $# < 4 ? $# : 4 ))
EXTRA=("$@")
mkdir -p "$OUT"
DB="$OUT/bridge.duckdb"
ADAPTER="$OUT/adapter"
stamp() { echo "[$(date +%H:%M:%S)] $*" >&2; }
has_run() { workbench runs list --db "$DB" --format json 2>/dev/null | grep -q "\"name\": \"$1\""; }

if [ ! -f "$ADAPTER/finetune.json" ]; then
  stamp finetune
  workbench finetune --games "$GAMES/train" --out "$ADAPTER" --lr 2e-3 --top-layers 10 \
    --json "${EXTRA[@]}" > "$OUT/finetune.json"
fi
for split in valid train; do
  if ! has_run "$split-ft"; then
    stamp "play $split"
    workbench play --games "$GAMES/$split" --adapter "$ADAPTER" --parallel 24 \
      --run-name "$split-ft" --db "$DB" "${EXTRA[@]}" > "$OUT/play-$split.txt"
  fi
done
SAE="$OUT/sae-l$LAYER-k$K"
if [ ! -f "$SAE/cfg.json" ]; then
  stamp "sae train (layer $LAYER, k $K)"
  workbench sae train --layer "$LAYER" --k "$K" --runs valid-ft,train-ft \
    --dataset "$ADAPTER/demonstrations.jsonl" --adapter "$ADAPTER" --out "$SAE" --db "$DB" \
    --format json "${EXTRA[@]}" > "$OUT/sae-train-l$LAYER-k$K.json"
fi
stamp "sae features"
workbench sae features --sae "$SAE" --labelled --limit 40 > "$OUT/sae-features.txt"
stamp "sae ablate"
workbench sae ablate --sae "$SAE" --run valid-ft --adapter "$ADAPTER" --db "$DB" \
  --format json "${EXTRA[@]}" > "$OUT/sae-ablate.json"
stamp done
