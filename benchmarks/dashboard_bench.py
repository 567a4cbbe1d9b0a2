"""Dashboard queries on a large store: 1,000,000 recorded steps (goal: < 300 ms per query).

The database is filled by `workbench.store.synthetic` (bulk SQL: seconds, not the hours
real play would take): 4 play runs x 2 conditions x 5 trials over 500 games, 50 steps per
episode, each step with an LLM call holding a ~1.3 kB prompt. Then every query the
overview, episode and comparison pages run is timed, each opening its own read-only
connection as the dashboard does; play statistics include their aggregation by
`agents.report`, as the pages compute them.

    python benchmarks/dashboard_bench.py --steps 1000000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agents.report import aggregate, compare
from workbench.store import Store, dashboard, synthetic
from workbench.store import play as play_store


def paired(store: Store, a: str, b: str):
    episodes = play_store.episode_outcomes(store, [a, b])
    return compare(
        [e for e in episodes if e["run_id"] == a],
        [e for e in episodes if e["run_id"] == b],
        pair_by=("game", "condition", "trial"),
    )


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: the OS page cache, DuckDB's first-open work
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the database here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.duckdb"
        store = Store(path)
        start = time.perf_counter()
        sizes = synthetic.fill_play_runs(store, args.steps)
        print(
            f"filled {sizes['steps']:,} steps, {sizes['episodes']:,} episodes, "
            f"{sizes['games']:,} games in {time.perf_counter() - start:.1f} s "
            f"({path.stat().st_size / 2**20:.0f} MiB)"
        )
        runs = [r["id"] for r in dashboard.play_runs(store)]
        episode = f"ep{sizes['episodes'] // 2}"
        queries = {
            "change_token (cache key)": lambda: dashboard.change_token(store),
            "overview: counts": lambda: dashboard.counts(store),
            "overview: runs_page": lambda: dashboard.runs_page(store, limit=25),
            "overview: play_runs": lambda: dashboard.play_runs(store),
            "overview: by level and condition (3 runs)": lambda: aggregate(
                play_store.episode_outcomes(store, runs[:3]), ("run", "level", "condition")
            ),
            "overview: over trials (3 runs)": lambda: aggregate(
                play_store.episode_outcomes(store, runs[:3]), ("run", "condition", "trial")
            ),
            "episode: episodes_page (page 40)": lambda: dashboard.episodes_page(
                store, runs[0], limit=25, offset=1000
            ),
            "episode: conditions": lambda: dashboard.conditions(store, runs[0]),
            "episode: episode_view (25 steps)": lambda: dashboard.episode_view(
                store, episode, limit=25, offset=25
            ),
            "compare: per game (2 runs)": lambda: aggregate(
                play_store.episode_outcomes(store, runs[:2]), ("level", "game", "run")
            ),
            "compare: paired test (2 runs)": lambda: paired(store, runs[0], runs[1]),
        }
        print(f"\n| query | median of {args.repeats} (ms) |\n| --- | --- |")
        worst = 0.0
        for name, fn in queries.items():
            ms = timed(fn, args.repeats)
            worst = max(worst, ms)
            print(f"| {name} | {ms:.1f} |")
        print(f"\nslowest: {worst:.1f} ms (goal < 300 ms): {'met' if worst < 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
