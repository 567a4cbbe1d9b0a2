"""Do explanations predict the fine-tuned agent's mistakes? (issue 28's goal)

1. Trains a LoRA adapter for the default model on the train games with the settings of
   BENCHMARKS.md's run 10 (`workbench finetune --lr 2e-3 --top-layers 10`), unless
   --adapter names one.
2. Plays the held-out games (levels 1-3) with the fine-tuned agent into a store
   (`--select choose`, the valid commands ranked by log-likelihood); every step gets the
   mistake miner's verdict with its episode.
3. Computes the explanation features of every decision (`--method`: occlusion by default,
   the CPU's choice; ig on a GPU gives the token-level masses).
4. Fits the prediction report (`workbench mistakes --predict`'s) where scikit-learn is
   installed; elsewhere the store goes back and the command runs on it:
   `workbench mistakes --run heldout --db WORK/w.duckdb --predict --plot calibration.png`.

    python benchmarks/mistakes_bench.py --train DIR/train --heldout DIR/valid --work /tmp/mb \\
        --model PATH/to/SmolLM2-135M-Instruct.gguf --device cuda --dtype float32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="Train games (omit with --adapter).")
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default=None, help="The default model's .gguf or folder.")
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--method", default="occlusion")
    parser.add_argument("--max-steps", type=int, default=25)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import agents
    import games
    from agents.decision_features import compute_run_features, feature_frame
    from agents.finetune import FinetuneSettings, finetune
    from agents.mistakes import mine_run, mistake_report
    from workbench.llm.local import LocalLLM
    from workbench.models import load_model
    from workbench.store import Store

    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "mistakes", "method": args.method}
    started = time.perf_counter()
    adapter = args.adapter
    if adapter is None:
        train = games.list_games(args.train)
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
        adapter = args.work / "adapter"
        settings = FinetuneSettings(lr=2e-3, top_layers=10, seed=args.seed)
        trained = finetune(lm, train, adapter, settings)
        result["finetune"] = {
            "train_games": len(train),
            "seconds": trained.manifest["seconds"],
            "loss": trained.manifest["loss"],
        }
        print(f"trained in {trained.manifest['seconds']:.0f} s", file=sys.stderr, flush=True)
    tuned = load_model(args.model, device=args.device, dtype=args.dtype, adapter=adapter)
    store = Store(args.work / "w.duckdb")
    heldout = games.list_games(args.heldout)
    play_started = time.perf_counter()
    played = agents.play(
        heldout,
        "llm",
        llm=LocalLLM(tuned),
        select="choose",
        max_steps=args.max_steps,
        parallel=args.parallel,
        seed=args.seed,
        store=store,
        run_name="heldout",
    )
    won = sum(e.won for e in played.episodes)
    result["play"] = {
        "games": len(heldout),
        "won": won,
        "seconds": round(time.perf_counter() - play_started, 1),
        "device": str(tuned.device),
        "dtype": str(tuned.dtype),
    }
    print(f"played: won {won} of {len(heldout)}", file=sys.stderr, flush=True)
    mine_run(store, "heldout")
    report = mistake_report(store, "heldout")
    result["mistakes"] = {
        "decisions": report.decisions,
        "mistakes": report.mistakes,
        "by_kind": [k.__dict__ for k in report.by_kind][:10],
    }
    features_started = time.perf_counter()
    done = compute_run_features(store, "heldout", lm=tuned, method=args.method)
    result["features"] = {
        "decisions": done.computed + done.stored,
        "seconds": round(time.perf_counter() - features_started, 1),
    }
    print(f"features: {result['features']}", file=sys.stderr, flush=True)
    try:
        from agents.mistake_prediction import predict_mistakes

        prediction = predict_mistakes(feature_frame(store, "heldout", args.method))
        result["prediction"] = prediction.to_dict()
    except ImportError as exc:  # no scikit-learn here: run `mistakes --predict` on the store
        result["prediction"] = f"not run here ({exc})"
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
