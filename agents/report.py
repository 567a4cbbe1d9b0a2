"""Reports over played runs: success rate and normalised score per level and condition,
as means over games with 95% confidence intervals, the moves winning took, and paired
comparisons of two conditions (or runs) on the same games.

Each game counts once per group: its trials are averaged first, so a level with many
trials of few games does not look more certain than it is. Success rates get a Wilson
interval, normalised scores a t interval that cannot collapse (`workbench.stats` says why).
The CLI's `report` and `experiment` and the dashboard all aggregate through this module.

    >>> from agents.report import report
    >>> report(Store(), run="random-l1").to_dict()       # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench import stats
from workbench.errors import WorkbenchError
from workbench.store import Store, runs
from workbench.store import play as play_store


@dataclass
class Estimate:
    """A mean over games with its 95% confidence interval (NaN bounds where there is none)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def rate(cls, rates: Sequence[float]) -> Estimate:
        """Success rate over games (each game's rate over its trials): Wilson interval."""
        i = stats.wilson_interval(sum(rates), len(rates))
        return cls(i.mean, i.low, i.high, i.n)

    @classmethod
    def score(cls, scores: Sequence[float]) -> Estimate:
        """Normalised score over games: a t interval that cannot collapse, in [0, 1]."""
        i = stats.score_interval(scores)
        return cls(i.mean, i.low, i.high, i.n)

    def text(self, percent: bool = True) -> str:
        fmt = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:.2f}")
        if math.isnan(self.low):
            return fmt(self.mean)
        return f"{fmt(self.mean)} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclass
class ReportRow:
    level: int | None
    condition: str
    games: int
    episodes: int
    success: Estimate
    score: Estimate  # normalised: score / max score
    steps_to_win: float | None  # mean moves of the won episodes


@dataclass
class Report:
    run: dict[str, Any]
    rows: list[ReportRow]
    episodes: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        episodes = [
            {**e, "created_at": str(e["created_at"]), "normalized_score": normalized_score(e)}
            for e in self.episodes
        ]
        return _clean(
            {
                "run": {
                    "id": self.run["id"],
                    "name": self.run["name"],
                    "status": self.run["status"],
                },
                "rows": [asdict(r) for r in self.rows],
                "episodes": episodes,
            }
        )


@dataclass
class Comparison:
    """B against A on the units (game trials) both played: McNemar's exact test for
    success, a paired t-test for the normalised score."""

    success: stats.PairedTest
    score: stats.PairedTest

    def to_dict(self) -> dict[str, Any]:
        return _clean({"success": asdict(self.success), "score": asdict(self.score)})


def paired_text(test: stats.PairedTest, percent: bool = True) -> str:
    """B - A and its p-value as one table cell, e.g. "+25% (p 0.06)"; empty without pairs."""
    if test.n == 0 or math.isnan(test.difference):
        return ""
    diff = f"{100 * test.difference:+.0f}%" if percent else f"{test.difference:+.2f}"
    return diff if math.isnan(test.p_value) else f"{diff} (p {test.p_value:.2g})"


def report(store: Store, run: str | None = None) -> Report:
    """The report of a play run by name or id (default: the latest play run)."""
    record = runs.require_run(store, run) if run else runs.latest_run(store, "play")
    if record is None:
        raise WorkbenchError(f"no play runs in {store.path}; start one with `workbench play`")
    episodes = play_store.list_episodes(store, record["id"])
    return Report(record, summarize(episodes), episodes)


def normalized_score(episode: dict[str, Any]) -> float:
    """Score over the game's maximum (0 for a game without points)."""
    return episode["score"] / episode["max_score"] if episode["max_score"] else 0.0


def summarize(episodes: list[dict[str, Any]]) -> list[ReportRow]:
    """Rows per (level, condition) from episode dicts (level, condition, game, won, ...)."""
    return [
        ReportRow(
            level=key[0],
            condition=key[1],
            games=g["games"],
            episodes=g["episodes"],
            success=g["success"],
            score=g["score"],
            steps_to_win=g["steps_to_win"],
        )
        for key, g in _grouped(episodes, ("level", "condition"))
    ]


def aggregate(episodes: list[dict[str, Any]], by: Sequence[str]) -> list[dict[str, Any]]:
    """Flat rows per group of `by` (episode keys such as run, level, condition, trial,
    game): games, episodes, success and normalised score with their interval bounds,
    moves to win, mean moves and invalid actions. What the dashboard's tables chart."""
    rows = []
    for key, g in _grouped(episodes, by):
        success, score = g.pop("success"), g.pop("score")
        rows.append(
            {
                **dict(zip(by, key)),
                **g,
                "success": success.mean,
                "success_low": success.low,
                "success_high": success.high,
                "score": score.mean,
                "score_low": score.low,
                "score_high": score.high,
            }
        )
    return rows


def compare(
    a: list[dict[str, Any]], b: list[dict[str, Any]], pair_by: Sequence[str] = ("game", "trial")
) -> Comparison:
    """Episodes `b` against episodes `a`, paired on `pair_by` (the same game and trial by
    default; units only one side played are left out)."""
    left = {tuple(e[k] for k in pair_by): e for e in a}
    pairs = [(left[k], e) for e in b if (k := tuple(e[k] for k in pair_by)) in left]
    return Comparison(
        stats.mcnemar([bool(x["won"]) for x, _ in pairs], [bool(y["won"]) for _, y in pairs]),
        stats.paired_t(
            [normalized_score(x) for x, _ in pairs], [normalized_score(y) for _, y in pairs]
        ),
    )


def _grouped(
    episodes: list[dict[str, Any]], by: Sequence[str]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(group key, figures) per group, sorted with missing values (None) last."""
    # One pass: per group and game, [episodes, wins, normalised score, moves, moves of wins,
    # invalid actions]. Sums, not lists: the dashboard aggregates tens of thousands.
    groups: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(dict)
    for e in episodes:
        games = groups[tuple(e[k] for k in by)]
        acc = games.get(e["game"])
        if acc is None:
            acc = games[e["game"]] = [0, 0, 0.0, 0, 0, 0]
        won = bool(e["won"])
        acc[0] += 1
        acc[1] += won
        acc[2] += normalized_score(e)
        acc[3] += e["moves"]
        acc[4] += e["moves"] if won else 0
        acc[5] += e.get("invalid_actions", 0)
    out = []
    for key in sorted(groups, key=_none_last):
        per_game = groups[key].values()
        episodes_, wins, moves, won_moves, invalid = (
            sum(acc[i] for acc in per_game) for i in (0, 1, 3, 4, 5)
        )
        figures = {
            "games": len(per_game),
            "episodes": episodes_,
            "success": Estimate.rate([acc[1] / acc[0] for acc in per_game]),
            "score": Estimate.score([acc[2] / acc[0] for acc in per_game]),
            "steps_to_win": won_moves / wins if wins else None,
            "moves": moves / episodes_,
            "invalid_actions": invalid,
        }
        out.append((key, figures))
    return out


def _none_last(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is None, 0 if v is None else v) for v in key)


def _clean(value: Any) -> Any:
    """NaN (no interval) as None, so that JSON output stays valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
