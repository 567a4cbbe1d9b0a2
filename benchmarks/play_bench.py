"""Play benchmark: steps per second of the local backend, one game at a time vs many.

Plays the same games with the llm agent (choose mode: every admissible command scored)
at `--parallel 1` and at `--parallel N`, and prints steps/s for each and the speed-up.
Games are compiled once into --games (seeds the tests do not use). Runs on CPU or GPU:

    python benchmarks/play_bench.py --games /tmp/bench-games --count 8 --max-steps 4 \
        --parallel 1 8
    python benchmarks/play_bench.py --device cuda --count 64 --parallel 1 64   # GPU

With --agents, it also reports win rate and normalised score by level for the default
model (each --select/--score-mode given) and the random agent.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import agents
import games
from workbench.llm.local import LocalLLM
from workbench.models import load_model

BENCH_SEED = 90210  # the tests use 11 and 3-5


def game_set(folder: Path, levels: list[int], count: int) -> list[games.GameInfo]:
    found: list[games.GameInfo] = []
    for level in levels:
        sub = folder / f"l{level}"
        have = games.list_games(sub) if (sub / "manifest.json").exists() else []
        if len(have) < count:
            games.make(level=level, count=count, seed=BENCH_SEED, split="valid", out=sub, jobs=2)
            have = games.list_games(sub)
        found += have[:count]
    return found


def throughput(llm, found, parallel: int, max_steps: int, workers) -> dict:
    # A full episode per game, all at the same step budget: steps/s over the whole batch.
    started = time.perf_counter()
    result = agents.play(
        found,
        "llm",
        llm=llm,
        select="choose",
        parallel=parallel,
        max_steps=max_steps,
        workers=workers,
    )
    seconds = time.perf_counter() - started
    return {
        "parallel": parallel,
        "steps": result.steps,
        "seconds": round(seconds, 2),
        "steps_per_s": round(result.steps / seconds, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--games", type=Path, default=Path("/tmp/workbench-bench-games"))
    ap.add_argument("--levels", type=int, nargs="+", default=[1])
    ap.add_argument("--count", type=int, default=8, help="games per level")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--agents", action="store_true", help="also win rates by level")
    args = ap.parse_args()
    workers = args.workers if args.workers == "auto" else int(args.workers)

    found = game_set(args.games, args.levels, args.count)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, progress=False)
    llm = LocalLLM(lm)
    agents.play(found[:1], "llm", llm=llm, max_steps=1, workers=0)  # warm-up
    rows = [throughput(llm, found, p, args.max_steps, workers) for p in args.parallel]
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["speedup"] = round(row["steps_per_s"] / base, 2)
    summary = {
        "device": str(lm.device),
        "dtype": str(lm.dtype),
        "model": lm.name,
        "machine": platform.processor() or platform.machine(),
        "games": len(found),
        "levels": args.levels,
        "max_steps": args.max_steps,
        "rows": rows,
    }
    if args.agents:
        summary["agents"] = win_rates(llm, found, max(args.parallel), workers)
    print(json.dumps(summary, indent=1))


def win_rates(llm, found, parallel: int, workers) -> dict:
    out = {}
    setups = {
        "random": dict(agent="random"),
        "llm-choose-sum": dict(agent="llm", llm=llm, select="choose", score_mode="sum"),
        "llm-choose-calibrated": dict(
            agent="llm", llm=llm, select="choose", score_mode="calibrated"
        ),
        "llm-generate": dict(agent="llm", llm=llm, select="generate"),
    }
    for name, setup in setups.items():
        result = agents.play(found, parallel=parallel, max_steps=25, workers=workers, **setup)
        by_level: dict[int, list] = {}
        for e in result.episodes:
            by_level.setdefault(e.spec.game.level, []).append(e)
        out[name] = {
            level: {
                "won": sum(e.won for e in eps),
                "episodes": len(eps),
                "score": round(statistics.fmean(e.normalized_score for e in eps), 3),
            }
            for level, eps in sorted(by_level.items())
        }
    return out


if __name__ == "__main__":
    main()
