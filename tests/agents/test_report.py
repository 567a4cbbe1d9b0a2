"""Reports over played runs: per-game averaging, honest intervals (Wilson for success, a t
interval that cannot collapse for scores) and paired comparisons, from episodes written
through the store."""

from __future__ import annotations

import pytest

from agents.report import aggregate, compare, report, summarize
from workbench.errors import WorkbenchError
from workbench.store import Store
from workbench.store import play as play_store


def record(store: Store, run: str, outcomes: dict[tuple[str, int, str], tuple[bool, int]]):
    """Write episodes {(game, trial, condition): (won, score of 4)} of a play run."""
    for (game, trial, condition), (won, score) in sorted(outcomes.items()):
        play_store.save_episode(
            store,
            {"id": run, "name": run, "params": {}},
            {"id": game, "path": f"/{game}.z8", "level": 1, "max_score": 4},
            {
                "id": f"{run}-{game}-{trial}-{condition}",
                "trial": trial,
                "condition": condition,
                "agent": "llm",
                "tips": [],
                "won": won,
                "lost": False,
                "score": score,
                "max_score": 4,
                "moves": 3,
                "stop_reason": "won" if won else "max_steps",
                "invalid_actions": 1,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "seconds": 0.1,
            },
            [],
            [],
        )


def test_no_wins_in_two_games_gets_a_wilson_interval(store):
    record(store, "lost", {("g1", 0, "none"): (False, 0), ("g2", 0, "none"): (False, 2)})
    [row] = report(store, "lost").rows
    assert row.games == 2 and row.success.text() == "0% [0%, 66%]"
    assert row.score.mean == pytest.approx(0.25)
    assert report(store).run["name"] == "lost"  # the latest play run by default
    with pytest.raises(WorkbenchError, match="no play run named 'nosuchrun'"):
        report(store, "nosuchrun")


def test_two_games_with_equal_scores_get_an_interval_not_a_point(store):
    # The newcomer's report: 2 games, both scoring 0, read "0% [0%, 0%]".
    record(store, "zero", {("g1", 0, "none"): (False, 0), ("g2", 0, "none"): (False, 0)})
    [row] = report(store, "zero").rows
    assert row.score.mean == 0.0 and row.score.low == 0.0 and row.score.high > 0.5
    assert row.score.text() != "0% [0%, 0%]"


def test_trials_are_averaged_per_game_before_games():
    episodes = [
        {"game": g, "level": 1, "condition": "c", "trial": t, "won": w, "score": 0}
        | {"max_score": 4, "moves": 2, "invalid_actions": 0}
        for g, t, w in [("a", 0, True), ("a", 1, True), ("a", 2, False), ("b", 0, False)]
    ]
    [row] = summarize(episodes)
    assert (row.games, row.episodes) == (2, 4)
    assert row.success.mean == pytest.approx((2 / 3 + 0) / 2)
    by_trial = aggregate(episodes, ("trial",))
    assert [(r["trial"], r["games"], r["success"]) for r in by_trial] == [
        (0, 2, 0.5),
        (1, 1, 1.0),
        (2, 1, 0.0),
    ]


def test_compare_pairs_the_same_games_and_trials(store):
    games = [f"g{i}" for i in range(8)]
    record(store, "r", {(g, 0, "none"): (i == 0, i % 3) for i, g in enumerate(games)})
    record(store, "r", {(g, 0, "tips"): (i < 6, min(4, i % 3 + 1)) for i, g in enumerate(games)})
    episodes = play_store.list_episodes(store, "r")
    result = compare(
        [e for e in episodes if e["condition"] == "none"],
        [e for e in episodes if e["condition"] == "tips"],
    )
    assert (result.success.a_only, result.success.b_only, result.success.n) == (0, 5, 8)
    assert result.success.p_value == pytest.approx(2 / 32)  # exact: 2 * 0.5^5
    assert result.score.n == 8 and result.score.difference == pytest.approx(0.25)
    assert result.to_dict()["success"]["test"] == "mcnemar"
