"""Synthetic play records for benchmarks: many runs, episodes, steps and LLM calls written
by bulk SQL in seconds (real play would take hours), shaped like real ones.

Outcomes are pseudo-random but fixed, and every (run, condition, trial, game) combination
occurs, so per-level, per-trial and per-game aggregations all have data.

    >>> from workbench.store import Store, synthetic
    >>> synthetic.fill_play_runs(Store("bench.duckdb"), steps=100_000)   # doctest: +SKIP
    {'steps': 100000, 'episodes': 2000, 'games': 50}
"""

from __future__ import annotations

from workbench.store import Store


def fill_play_runs(
    store: Store,
    steps: int,
    runs: int = 4,
    conditions: int = 2,
    trials: int = 5,
    steps_per_episode: int = 50,
) -> dict[str, int]:
    """Fill the store with about `steps` recorded steps; returns how many steps, episodes
    and games it wrote. Run `r` is named bench-r (id run<r>), its conditions c0, c1, ..."""
    episodes = steps // steps_per_episode
    games = max(1, episodes // (runs * conditions * trials))
    with store._transaction() as con:
        con.execute(
            "INSERT INTO runs (id, name, kind, status, params)"
            " SELECT 'run' || i, 'bench-' || i, 'play', 'finished', '{}' FROM range(?) t(i)",
            [runs],
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
                runs,
                runs * conditions * trials,
                games,
                runs,
                conditions,
                trials,
                runs,
                conditions,
                runs * conditions * trials,
                games,
                steps_per_episode,
                episodes,
            ],
        )
        con.execute(
            "INSERT INTO llm_calls (id, run_id, episode_id, step_idx, purpose, backend, model,"
            " prompt, completion, prompt_tokens, completion_tokens, latency_s, params)"
            " SELECT 'call' || i, 'run' || (i // ? % ?), 'ep' || (i // ?), (i % ?)::INTEGER,"
            " 'act', 'local', 'bench', repeat(md5(i::VARCHAR), 40), 'take milk', 1200, 4,"
            " 0.3, '{}' FROM range(?) t(i)",
            [steps_per_episode, runs, steps_per_episode, steps_per_episode, steps],
        )
        con.execute(
            "INSERT INTO steps (episode_id, idx, observation, admissible, facts, action,"
            " raw_output, valid, reward, score, feedback, done, llm_call_id)"
            " SELECT 'ep' || (i // ?), (i % ?)::INTEGER,"
            " 'You are in the kitchen. ' || md5(i::VARCHAR) || ' There is a fridge here.',"
            " '[\"open fridge\", \"take milk\", \"look\"]', '[]', 'take milk', 'take milk',"
            " hash(i) % 7 <> 0, 0, 0, 'You take the milk.', false, 'call' || i"
            " FROM range(?) t(i)",
            [steps_per_episode, steps_per_episode, steps],
        )
    return {"steps": steps, "episodes": episodes, "games": games}
