#!/usr/bin/env bash
# The bridge test of issue 31 on the fine-tuned agent (BENCHMARKS.md, "Concepts, steering
# and RSA"): fine-tune the default model on the train games, play the held-out games with
# it, find the best probe layer for "carried", then
#   1. steer along "the knife is carried" at that layer: does p(take knife) fall when the
#      knife is not carried, against random directions of the same norm?
#   2. TCAV of the "take knife" decisions for that concept, layer by layer;
#   3. RSA of the residual stream against the facts, layer by layer;
# and play 8 held-out games steered (win rate and score).
#
#   bash benchmarks/concepts_bridge.sh GAMES_DIR OUT_DIR [MODEL] [extra options]
#
# GAMES_DIR holds train/ and valid/ (`workbench games make`); MODEL defaults to the
# default model; extra options (e.g. --device cuda) go to every model command. Every
# result is JSON in OUT_DIR, and stored in OUT_DIR/bridge.duckdb (the Concepts page).
set -euo pipefail
GAMES=$1
OUT=$2
MODEL=${3:-}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
mkdir -p "$OUT"
DB="$OUT/bridge.duckdb"
M=()
[ -n "$MODEL" ] && M=(--model "$MODEL")
ADAPTER="$OUT/adapter"
CONCEPT="in(knife, I)"
stamp() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ ! -f "$ADAPTER/finetune.json" ]; then
  stamp finetune
  workbench finetune --games "$GAMES/train" "${M[@]}" --out "$ADAPTER" --lr 2e-3 \
    --top-layers 10 --json "${EXTRA[@]}" > "$OUT/finetune.json"
fi
if ! workbench runs list --db "$DB" --format json 2>/dev/null | grep -q '"name": "valid-ft"'; then
  stamp play
  workbench play --games "$GAMES/valid" "${M[@]}" --adapter "$ADAPTER" --parallel 24 \
    --run-name valid-ft --db "$DB" "${EXTRA[@]}" > "$OUT/play.txt"
fi
stamp probe
workbench probe --task textworld-state:carried --games "$GAMES/valid" "${M[@]}" \
  --adapter "$ADAPTER" --db "$DB" --format json "${EXTRA[@]}" > "$OUT/probe.json"
LAYER=$(python -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(max(r['layers'], key=lambda l: l['selectivity'])['layer'])" "$OUT/probe.json")
stamp "best probe layer: $LAYER"
stamp steer
workbench steer --run valid-ft --concept "$CONCEPT" --layer "$LAYER" \
  --candidate "take knife*" --where false --alphas=-8,-4,-2,2,4,8 --random 5 \
  --save-direction "$OUT/knife.npz" --db "$DB" --format json "${EXTRA[@]}" > "$OUT/steer.json"
stamp tcav
workbench tcav --run valid-ft --concept "$CONCEPT" --candidate "take knife*" \
  --db "$DB" --format json "${EXTRA[@]}" > "$OUT/tcav.json"
stamp rsa
workbench rsa --runs valid-ft --db "$DB" --format json "${EXTRA[@]}" > "$OUT/rsa.json"
stamp "steered episodes"
workbench steer --run valid-ft --direction "$OUT/knife.npz" --alphas=-4,4 --random 1 \
  --max-decisions 1 --games 8 --episode-alphas=-4,0,4 --db "$DB" --format json \
  "${EXTRA[@]}" > "$OUT/steer_episodes.json"
stamp done
