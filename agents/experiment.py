"""The Introspective Tips experiment (Chen et al. 2023) as one call.

1. Train games, K trials each, under four conditions: no tips, Reflexion (Shinn et al.
   2023), self tips and expert tips (tips written between trials).
2. The final self and expert tips of every training game merge into one general set by
   ADD / EDIT / AGREE / REMOVE operations (ExpeL, Zhao et al. 2023), capped at the
   writer's `max_tips`.
3. Test games (unseen: another split or seed), one trial each, without tips and with the
   general set, zero-shot.
4. With a fine-tuned LLM (a LoRA adapter trained on expert trajectories, `agents.finetune`),
   the baseline the paper argues tips make unnecessary: `finetuned` (no tips) on the same
   train and test games, and `finetuned+self` (self tips between trials) on the train games.

The result holds success rate, normalised score (both means over games with 95% CIs) and
moves to win, per phase, level, condition and trial, and each condition's paired comparison
with no tips on the same games (`agents.report.compare`: McNemar for success, paired t for
the score); it is stored with the experiment run.

    >>> from agents.experiment import introspective_tips
    >>> result = introspective_tips(games.list_games("game-sets/train"),
    ...     games.list_games("game-sets/test"), llm=make_llm(), trials=3, store=Store(),
    ...     name="it-l1")                                                # doctest: +SKIP
    >>> print(result.to_dict()["rows"][0])                               # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from agents.report import Comparison, ReportRow, compare, summarize
from agents.tips import TipSet, TipWriter, build_general, play_tips
from agents.trajectory import Episode
from games import GameInfo
from workbench import distributed
from workbench.errors import WorkbenchError
from workbench.llm import LLM
from workbench.store import Store, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store

TRAIN_CONDITIONS = ("none", "reflexion", "self", "expert")
TEST_CONDITIONS = ("none", "general")
# The fine-tuned agent's conditions: its tip mode under the name the table shows.
FINETUNED_TRAIN = {"none": "finetuned", "self": "finetuned+self"}
FINETUNED_TEST = {"none": "finetuned"}
BASELINE = "none"  # every other condition is compared with it, game by game


@dataclass
class ExperimentRow:
    phase: str  # train or test
    trial: int
    row: ReportRow
    # Against the baseline condition on the same games, level and trial (None for the
    # baseline itself): McNemar's exact test for success, a paired t-test for the score.
    vs_baseline: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        return {
            "phase": self.phase,
            "level": r.level,
            "condition": r.condition,
            "trial": self.trial,
            "games": r.games,
            "episodes": r.episodes,
            "success": r.success.mean,
            "success_low": _none_if_nan(r.success.low),
            "success_high": _none_if_nan(r.success.high),
            "score": r.score.mean,
            "score_low": _none_if_nan(r.score.low),
            "score_high": _none_if_nan(r.score.high),
            "steps_to_win": r.steps_to_win,
            **_paired_columns(self.vs_baseline),
        }


@dataclass
class ExperimentResult:
    run_id: str
    name: str
    train_run: str
    test_run: str
    general: TipSet
    rows: list[ExperimentRow]
    tip_failures: int
    finetuned_runs: list[str] = field(default_factory=list)  # train and test, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": {"id": self.run_id, "name": self.name},
            "train_run": self.train_run,
            "test_run": self.test_run,
            "finetuned_runs": self.finetuned_runs,
            "general_tipset": {
                "id": self.general.id,
                "version": self.general.version,
                "tips": [asdict(t) for t in self.general.tips],
            },
            "tip_failures": self.tip_failures,
            "rows": [r.to_dict() for r in self.rows],
        }


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _paired_columns(paired: Comparison | None) -> dict[str, float | None]:
    if paired is None:
        return {"success_diff": None, "success_p": None, "score_diff": None, "score_p": None}
    return {
        "success_diff": _none_if_nan(paired.success.difference),
        "success_p": _none_if_nan(paired.success.p_value),
        "score_diff": _none_if_nan(paired.score.difference),
        "score_p": _none_if_nan(paired.score.p_value),
    }


def rows_by_trial(phase: str, episodes: list[dict[str, Any]]) -> list[ExperimentRow]:
    """Report rows (level x condition, CIs over games) for each trial separately: the
    paper's question is how success changes from one trial to the next. Each condition
    other than the baseline carries its paired comparison with the baseline."""
    rows = []
    for trial in sorted({e["trial"] for e in episodes}):
        played = [e for e in episodes if e["trial"] == trial]
        for row in summarize(played):
            level = [e for e in played if e["level"] == row.level]
            paired = None
            if row.condition != BASELINE:
                paired = compare(
                    [e for e in level if e["condition"] == BASELINE],
                    [e for e in level if e["condition"] == row.condition],
                )
            rows.append(ExperimentRow(phase, trial, row, paired))
    return rows


def introspective_tips(
    train: Sequence[GameInfo],
    test: Sequence[GameInfo],
    *,
    llm: LLM,
    store: Store | None,
    name: str,
    writer: TipWriter | None = None,
    trials: int = 3,
    parallel: int = 8,
    max_steps: int = 50,
    seed: int = 0,
    workers: int | str = "auto",
    on_episode: Callable[[Episode], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    finetuned: LLM | None = None,
    **agent_options: Any,
) -> ExperimentResult:
    """Run the whole comparison and store it as an experiment run named `name`.

    Re-running an unfinished experiment of the same name resumes it: its play runs
    (`NAME-train`, `NAME-test`) resume, and a general set already merged is reused.
    `writer` writes and merges the tips (by default `TipWriter(llm)`); the other
    arguments are those of `agents.tips.play_tips`.

    Under torchrun (`workbench experiment ... --gpus N`) every rank plays its share of each
    trial's games with its own model replica; rank 0 alone opens `store` (the other ranks
    pass None), writes and merges the tips and builds the table, and hands the tips to
    every rank before the next trial. The stored episodes and tips are those of one process.

    `finetuned` (the same model with a fine-tuning adapter) adds its conditions in the play
    runs `NAME-train-finetuned` and `NAME-test-finetuned`, on the same games and seeds. Its
    self tips are written by the same `writer` as the paper's conditions, so the conditions
    differ in the acting model only.
    """
    if not train:
        raise WorkbenchError("there are no train games")
    if not test:
        raise WorkbenchError("there are no test games")
    if trials < 1:
        raise WorkbenchError(f"trials must be at least 1, not {trials}")
    writer = writer or TipWriter(llm)
    overlap = {g.id for g in train} & {g.id for g in test}
    if overlap:
        raise WorkbenchError(
            f"{len(overlap)} game(s) are in both train and test; "
            "zero-shot evaluation needs unseen games (another split or seed)"
        )
    params = {
        "train": sorted(g.id for g in train),
        "test": sorted(g.id for g in test),
        "trials": trials,
        "max_tips": writer.max_tips,
        "max_steps": max_steps,
        "seed": seed,
        "llm": llm.describe(),
    }
    if finetuned is not None:
        params["finetuned"] = finetuned.describe()
    run_id = distributed.on_main(partial(_open_experiment, store, name, params))
    common = {
        "llm": llm,
        "store": store,
        "writer": writer,
        "parallel": parallel,
        "max_steps": max_steps,
        "seed": seed,
        "workers": workers,
        "on_episode": on_episode,
        **agent_options,
    }
    train_name, test_name = f"{name}-train", f"{name}-test"
    if on_phase:
        on_phase(f"train: {len(train)} games x {trials} trials x {', '.join(TRAIN_CONDITIONS)}")
    trained = _play_or_reuse(store, train_name, train, TRAIN_CONDITIONS, trials, None, common)
    # Rank 0 merges the general set from the store; every rank plays the test games with it.
    general = distributed.on_main(partial(_general_set, store, trained, writer, on_phase))
    if on_phase:
        on_phase(f"test: {len(test)} games, none vs general ({len(general.tips)} tips)")
    tested = _play_or_reuse(store, test_name, test, TEST_CONDITIONS, 1, general, common)
    tuned_runs: list[tuple[str, str | None, dict[str, str]]] = []
    if finetuned is not None:
        tuned = {**common, "llm": finetuned}
        if on_phase:
            on_phase(f"fine-tuned: {', '.join([*FINETUNED_TRAIN.values()])} on the same games")
        for phase, games, names, trial_count in (
            ("train", train, FINETUNED_TRAIN, trials),
            ("test", test, FINETUNED_TEST, 1),
        ):
            run_name = f"{name}-{phase}-finetuned"
            played = _play_or_reuse(store, run_name, games, list(names), trial_count, None, tuned)
            tuned_runs.append((phase, played, names))
    return distributed.on_main(
        partial(_conclude, store, run_id, name, trained, tested, general, tuned_runs)
    )


def _conclude(
    store: Store,
    run_id: str,
    name: str,
    trained: str,
    tested: str,
    general: TipSet,
    tuned_runs: list[tuple[str, str, dict[str, str]]],
) -> ExperimentResult:
    """The table from the stored episodes, stored with the experiment run (rank 0's work)."""
    episodes = {
        "train": play_store.list_episodes(store, trained),
        "test": play_store.list_episodes(store, tested),
    }
    for phase, played, names in tuned_runs:
        episodes[phase].extend(
            {**e, "condition": names[e["condition"]]}
            for e in play_store.list_episodes(store, played)
        )
    rows = rows_by_trial("train", episodes["train"]) + rows_by_trial("test", episodes["test"])
    tips_store.save_experiment_results(store, run_id, [r.to_dict() for r in rows])
    failures = sum(
        t["status"] == "failed"
        for t in tips_store.list_tipsets(store, run_id=trained, limit=100_000)
    )
    runs.finish_run(store, run_id)
    return ExperimentResult(
        run_id,
        name,
        f"{name}-train",
        f"{name}-test",
        general,
        rows,
        failures,
        [f"{name}-{phase}-finetuned" for phase, _, _ in tuned_runs],
    )


def _open_experiment(store: Store, name: str, params: dict[str, Any]) -> str:
    existing = runs.get_run(store, name)
    if existing is None:
        return runs.create_run(store, name, "experiment", params)
    if existing["kind"] != "experiment":
        raise WorkbenchError(f"run name {name!r} is taken by a run of kind {existing['kind']}")
    if existing["status"] == "finished":
        raise WorkbenchError(f"experiment {name!r} has already finished; pick another name")
    return existing["id"]


def _play_or_reuse(
    store: Store,
    run_name: str,
    games: Sequence[GameInfo],
    modes: Sequence[str],
    trials: int,
    tipset: TipSet | None,
    common: dict[str, Any],
) -> str | None:
    """The id of the finished play run `run_name`, playing (or resuming) it first; under
    torchrun every rank plays its share, and rank 0 alone gets the id (None elsewhere)."""
    done = distributed.on_main(partial(_finished_run, store, run_name))
    if done is not None:
        return done
    result = play_tips(games, modes, trials=trials, tipset=tipset, run_name=run_name, **common)
    return result.run_id


def _finished_run(store: Store, run_name: str) -> str | None:
    done = runs.get_run(store, run_name, kind="play")
    return done["id"] if done is not None and done["status"] == "finished" else None


def _general_set(
    store: Store,
    train_run: str,
    writer: TipWriter,
    on_phase: Callable[[str], None] | None,
) -> TipSet:
    """The general set merged from the training run's final self and expert tips (the one
    merged before, when the experiment is resumed)."""
    for row in tips_store.list_tipsets(store, run_id=train_run, kind="general", limit=100_000):
        if (row.get("params") or {}).get("final"):
            return TipSet.load(store, row["id"])
    sources = sorted(
        (
            TipSet.from_row(t)
            for t in tips_store.final_tipsets(store, train_run, ["self", "expert"])
        ),
        key=lambda t: (t.game_id or "", t.condition or ""),  # a stable merge order
    )
    if not sources:
        # Every tip-writing call failed: the general set is empty, and says so.
        general = TipSet(
            kind="general",
            scope="general",
            run_id=train_run,
            status="failed",
            error="no training game produced usable tips",
            params={"final": True, "merged": 0},
        )
        general.save(store)
        return general
    if on_phase:
        on_phase(f"general: merging {len(sources)} tip sets (max {writer.max_tips} tips)")
    return build_general(writer, sources, store, run_id=train_run)
