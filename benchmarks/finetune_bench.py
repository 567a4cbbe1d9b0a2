"""Fine-tuning benchmark: does a LoRA adapter trained on expert trajectories win unseen games?

1. Makes level 1-3 games of the train split (`--train-count` a level) and 20 held-out
   games of the valid split (other seeds, unseen foods), once, into --work.
2. Trains an adapter for the default model (SmolLM2-135M-Instruct) on the train games,
   exactly as `workbench finetune` does, and times it.
3. Plays the held-out games with the fine-tuned agent (`--select choose`: the valid
   commands ranked by log-likelihood) within --max-steps, and with the random agent; win
   rates with Wilson 95% intervals. Also the agent's choices along the held-out games'
   walkthroughs, step by step (`imitation_accuracy`), by level and decision.

    python benchmarks/finetune_bench.py --work /tmp/finetune-bench

The same adapter from the command line:

    workbench games make --level 1 --count 10 --seed 1 --split train --out DIR/train  # and
    #   --level 2 --count 25, --level 3 --count 40 (the defaults, run 10 in BENCHMARKS.md)
    workbench games make --level 1 --count 7 --seed 2 --split valid --out DIR/valid  # and
    #   --level 2 --count 7, --level 3 --count 6: the same 20 held-out games
    workbench finetune --games DIR/train --out DIR/adapter --lr 2e-3 --top-layers 10
    workbench play --games DIR/valid --adapter DIR/adapter --select choose --max-steps 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import agents
import games
from agents.finetune import FinetuneSettings, demonstrations, finetune, imitation_accuracy
from workbench.llm.local import LocalLLM
from workbench.models import load_model
from workbench.stats import wilson_interval

TRAIN_SEED = 1  # the tests use 11 and 3-5; play_bench uses 90210
HELDOUT_SEED = 2
HELDOUT_COUNTS = {1: 7, 2: 7, 3: 6}  # 20 held-out games


def game_sets(
    work: Path, train_counts: list[int]
) -> tuple[list[games.GameInfo], list[games.GameInfo]]:
    # A game's seed depends on its level and index only, so 30 games of a level are the
    # 15 of a smaller set and 15 more.
    train: list[games.GameInfo] = []
    for level, count in zip((1, 2, 3), train_counts):
        made = games.make(
            level=level, count=count, seed=TRAIN_SEED, split="train", out=work / "train"
        )
        train += made.added + made.existing
    heldout: list[games.GameInfo] = []
    for level, count in HELDOUT_COUNTS.items():
        made = games.make(
            level=level, count=count, seed=HELDOUT_SEED, split="valid", out=work / "valid"
        )
        heldout += made.added + made.existing
    return train, heldout


def win_rate(episodes: list[agents.Episode]) -> dict:
    won = sum(e.won for e in episodes)
    interval = wilson_interval(won, len(episodes))
    moves = [e.moves for e in episodes if e.won]
    return {
        "won": won,
        "games": len(episodes),
        "rate": round(interval.mean, 3),
        "wilson95": [round(interval.low, 3), round(interval.high, 3)],
        "moves_to_win": round(statistics.mean(moves), 2) if moves else None,
        "by_level": {
            level: f"{sum(e.won for e in episodes if e.spec.game.level == level)}"
            f"/{sum(e.spec.game.level == level for e in episodes)}"
            for level in sorted({e.spec.game.level for e in episodes})
        },
        "stop_reasons": {
            r: sum(e.stop_reason == r for e in episodes)
            for r in sorted({e.stop_reason for e in episodes})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/finetune-bench"))
    parser.add_argument(
        "--train-count",
        default="10,25,40",
        help="Train games per level: one number, or three for levels 1, 2, 3.",
    )
    parser.add_argument("--epochs", type=int, default=FinetuneSettings.epochs)
    parser.add_argument("--top-layers", type=int, default=10, help="Adapt the last N blocks.")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--recoveries", type=int, default=FinetuneSettings.recoveries, help="Detours a game."
    )
    parser.add_argument("--rank", type=int, default=FinetuneSettings.rank)
    parser.add_argument("--dropout", type=float, default=FinetuneSettings.dropout)
    parser.add_argument("--batch-size", type=int, default=FinetuneSettings.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=25)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--rename-ingredients",
        action=argparse.BooleanOptionalAction,
        default=FinetuneSettings.rename_ingredients,
    )
    parser.add_argument(
        "--precision", default=FinetuneSettings.precision, help="auto, float32 or bfloat16."
    )
    parser.add_argument("--out", type=Path, help="Also write the result JSON here.")
    args = parser.parse_args()

    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.train_count.split(",")]
    train, heldout = game_sets(args.work, counts * 3 if len(counts) == 1 else counts)
    made_s = time.perf_counter() - started
    print(f"games: {len(train)} train, {len(heldout)} held out ({made_s:.0f} s)", file=sys.stderr)

    lm = load_model(device=args.device, dtype=args.dtype, progress=False)
    adapter = args.work / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    settings = FinetuneSettings(
        epochs=args.epochs,
        lr=args.lr,
        rank=args.rank,
        dropout=args.dropout,
        batch_size=args.batch_size,
        seed=args.seed,
        top_layers=args.top_layers,
        recoveries=args.recoveries,
        rename_ingredients=args.rename_ingredients,
        precision=args.precision,
    )

    def progress(done: int, total: int | None = None, description: str | None = None) -> None:
        if done % 10 == 0 or done == total:
            print(f"  step {done}/{total} {description or ''}", file=sys.stderr, flush=True)

    trained = finetune(
        lm,
        train,
        adapter,
        settings,
        progress=progress,
        on_phase=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print(
        f"trained in {trained.manifest['seconds']:.0f} s: loss {trained.manifest['loss']}",
        file=sys.stderr,
    )

    tuned = LocalLLM(load_model(device=args.device, dtype=args.dtype, adapter=adapter))
    play_started = time.perf_counter()
    played = agents.play(
        heldout,
        "llm",
        llm=tuned,
        select="choose",
        max_steps=args.max_steps,
        parallel=args.parallel,
        seed=args.seed,
    )
    play_s = time.perf_counter() - play_started
    # Step by step: the held-out walkthroughs' decisions the agent gets right.
    choices = imitation_accuracy(tuned, demonstrations(heldout, parallel=args.parallel))
    rand = agents.play(
        heldout, "random", max_steps=args.max_steps, parallel=args.parallel, seed=args.seed
    )
    result = {
        "benchmark": "finetune",
        "model": lm.name,
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "autocast": trained.manifest["autocast"],
        "threads": {"train": trained.manifest["threads"], "play": torch.get_num_threads()},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "train_games": len(train),
        "heldout_games": len(heldout),
        "examples": trained.manifest["examples"],
        "hyperparameters": trained.manifest["hyperparameters"],
        "loss": trained.manifest["loss"],
        # The torch loop with its held-out losses (the goal's figure), and everything
        # `finetune` does: replays, encoding, held-out choices.
        "train_seconds": trained.manifest["train_seconds"],
        "finetune_seconds": trained.manifest["seconds"],
        "finetuned": {
            **win_rate(played.episodes),
            "seconds": round(play_s, 1),
            "steps": played.steps,
        },
        "walkthrough_choices": {k: v for k, v in choices.to_dict().items() if k != "wrong"},
        "random": win_rate(rand.episodes),
        "max_steps": args.max_steps,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
