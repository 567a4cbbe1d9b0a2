"""Dashboard queries on a large store: 1,000,000 recorded steps (goal: < 300 ms per query).

The database is filled with bulk SQL (seconds, not the hours real play would take): 4 play
runs x 2 conditions x 5 trials over 500 games, 50 steps per episode, each step with an LLM
call holding a ~1.3 kB prompt. Then every query the overview and episode pages run is
timed, each opening its own read-only connection as the dashboard does.

    python benchmarks/dashboard_bench.py --steps 1000000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workbench.store import Store, dashboard

STEPS_PER_EPISODE = 50
RUNS, CONDITIONS, TRIALS = 4, 2, 5


def fill(store: Store, steps: int) -> dict[str, int]:
    episodes = steps // STEPS_PER_EPISODE
    games = max(1, episodes // (RUNS * CONDITIONS * TRIALS))
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs (id, name, kind, status, params)"
            " SELECT 'run' || i, 'bench-' || i, 'play', 'finished', '{}' FROM range(?) t(i)",
            [RUNS],
        )
        con.execute(
            "INSERT INTO games (id, path, level, split, seed, max_score, walkthrough_steps)"
            " SELECT 'game' || i, '/games/' || i || '.z8', 1 + i % 10, 'train', i,"
            " 3 + i % 9, 5 FROM range(?) t(i)",
            [games],
        )
        # Episode e: run, condition, trial and game follow from e, so every combination
        # occurs; outcomes are pseudo-random but fixed.
        con.execute(
            "INSERT INTO episodes (id, run_id, game_id, trial, condition, agent, tips, won,"
            " lost, score, max_score, moves, stop_reason, invalid_actions, prompt_tokens,"
            " completion_tokens, seconds)"
            " SELECT 'ep' || e, 'run' || (e % ?), 'game' || (e // ? % ?), e // ? // ? % ?,"
            " 'c' || (e // ? % ?), 'llm', '[\"Read the cookbook first.\"]',"
            " hash(e) % 3 = 0, false, (hash(e) % 4)::INTEGER, 3 + (e // ? % ?) % 9, ?,"
            " 'max_steps', (hash(e) % 5)::INTEGER, 60000, 200, 12.5"
            " FROM range(?) t(e)",
            [
                RUNS,
                RUNS * CONDITIONS * TRIALS,
                games,
                RUNS,
                CONDITIONS,
                TRIALS,
                RUNS,
                CONDITIONS,
                RUNS * CONDITIONS * TRIALS,
                games,
                STEPS_PER_EPISODE,
                episodes,
            ],
        )
        con.execute(
            "INSERT INTO llm_calls (id, run_id, episode_id, step_idx, purpose, backend, model,"
            " prompt, completion, prompt_tokens, completion_tokens, latency_s, params)"
            " SELECT 'call' || i, 'run' || (i // ? % ?), 'ep' || (i // ?), (i % ?)::INTEGER,"
            " 'act', 'local', 'bench', repeat(md5(i::VARCHAR), 40), 'take milk', 1200, 4,"
            " 0.3, '{}' FROM range(?) t(i)",
            [STEPS_PER_EPISODE, RUNS, STEPS_PER_EPISODE, STEPS_PER_EPISODE, steps],
        )
        con.execute(
            "INSERT INTO steps (episode_id, idx, observation, admissible, facts, action,"
            " raw_output, valid, reward, score, feedback, done, llm_call_id)"
            " SELECT 'ep' || (i // ?), (i % ?)::INTEGER,"
            " 'You are in the kitchen. ' || md5(i::VARCHAR) || ' There is a fridge here.',"
            " '[\"open fridge\", \"take milk\", \"look\"]', '[]', 'take milk', 'take milk',"
            " hash(i) % 7 <> 0, 0, 0, 'You take the milk.', false, 'call' || i"
            " FROM range(?) t(i)",
            [STEPS_PER_EPISODE, STEPS_PER_EPISODE, steps],
        )
    return {"steps": steps, "episodes": episodes, "games": games}


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
        sizes = fill(store, args.steps)
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
            "overview: success_by_level (3 runs)": lambda: dashboard.success_by_level(
                store, runs[:3]
            ),
            "overview: success_by_trial (3 runs)": lambda: dashboard.success_by_trial(
                store, runs[:3]
            ),
            "episode: episodes_page (page 40)": lambda: dashboard.episodes_page(
                store, runs[0], limit=25, offset=1000
            ),
            "episode: conditions": lambda: dashboard.conditions(store, runs[0]),
            "episode: episode_view (25 steps)": lambda: dashboard.episode_view(
                store, episode, limit=25, offset=25
            ),
            "compare: compare_runs (2 runs)": lambda: dashboard.compare_runs(store, runs[:2]),
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
