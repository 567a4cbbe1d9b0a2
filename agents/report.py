"""Reports over played runs: success rate and normalised score per level and condition,
as means over games with 95% confidence intervals, and the moves winning took.

Each game counts once per (level, condition): its trials are averaged first, so a level
with many trials of few games does not look more certain than it is.

    >>> from agents.report import report
    >>> report(Store(), run="random-l1").to_dict()       # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from workbench.errors import WorkbenchError
from workbench.store import Store
from workbench.store import play as play_store


@dataclass
class Estimate:
    """A mean over games with its 95% confidence interval (t distribution)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Estimate:
        n = len(values)
        mean = statistics.fmean(values)
        if n < 2:
            return cls(mean, math.nan, math.nan, n)
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
        return cls(mean, max(0.0, mean - half), min(1.0, mean + half), n)

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
        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        episodes = [
            {
                **e,
                "created_at": str(e["created_at"]),
                "normalized_score": e["score"] / e["max_score"] if e["max_score"] else 0.0,
            }
            for e in self.episodes
        ]
        return clean(
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


def report(store: Store, run: str | None = None) -> Report:
    """The report of a play run by name or id (default: the latest play run)."""
    record = play_store.get_play_run(store, run) if run else play_store.latest_play_run(store)
    if record is None:
        if run:
            raise WorkbenchError(f"no play run named {run!r} in {store.path}")
        raise WorkbenchError(f"no play runs in {store.path}; start one with `workbench play`")
    episodes = play_store.list_episodes(store, record["id"])
    return Report(record, summarize(episodes), episodes)


def summarize(episodes: list[dict[str, Any]]) -> list[ReportRow]:
    """Rows per (level, condition) from episode dicts (level, condition, game, won, ...)."""
    groups: dict[tuple[Any, str], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for e in episodes:
        groups[(e["level"], e["condition"])][e["game"]].append(e)
    rows = []
    for (level, condition), by_game in sorted(
        groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1])
    ):
        success = [statistics.fmean(float(e["won"]) for e in eps) for eps in by_game.values()]
        score = [
            statistics.fmean(e["score"] / e["max_score"] if e["max_score"] else 0.0 for e in eps)
            for eps in by_game.values()
        ]
        won_moves = [e["moves"] for eps in by_game.values() for e in eps if e["won"]]
        rows.append(
            ReportRow(
                level=level,
                condition=condition,
                games=len(by_game),
                episodes=sum(len(v) for v in by_game.values()),
                success=Estimate.of(success),
                score=Estimate.of(score),
                steps_to_win=statistics.fmean(won_moves) if won_moves else None,
            )
        )
    return rows
