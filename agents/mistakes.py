"""The mistake miner: which recorded commands of an agent were mistakes, judged against
TextWorld's own winning plan, and which kinds of decision it gets wrong.

Why: an explanation of a decision is most useful where the decision was wrong, and a run
records thousands of decisions. Ground truth for each one comes from the game itself, so
finding the mistakes needs no human labels and no second model.

How: from any state TextWorld computes the commands still to do to win
(`GameState.policy_commands`); its first command is the optimal one. With a shortest plan
of n commands before a step and n' after it, the step's regret is n' - (n - 1): 0 when the
command kept a shortest plan, 1 for an invalid command or one that changes nothing, more
for a detour (the moves back count too). A command after which no winning plan is left
(the game is lost: eating an ingredient, burning it) is a mistake with no regret (None) and
`lost` set. A step is a mistake when it loses the game or its regret is above 0.

Two corrections keep correct play from counting as mistakes (without them the expert agent
would make some at every level):

- TextWorld's plan is found greedily and is not always the shortest: at level 10 it would
  cook first and fetch the pepper later, so fetching it first looks like a detour (+2) that
  the next step pays back (-2). n is the shortest plan known instead: TextWorld's, or the
  episode's own path from that state on (to a state with a plan of its own, or the win)
  where that is shorter. The episode's states are the nodes of a small graph, its steps
  the edges; the lengths are relaxed to a fixed point when the episode ends, so a step's
  regret is never negative, and a step's verdict depends on the steps after it.
- TextWorld's plan is computed from the whole game state, so it never reads the cookbook or
  checks the inventory, which a player who does not know the recipe must do. The game's
  walkthrough (what the expert agent follows) takes those moves, and a few more such as
  dropping the knife after a cut; each command of the walkthrough beyond the first plan is
  allowed once per episode: its regret counts as 0. A second look at the cookbook is a
  mistake.

Verdicts are judged while a run plays (`agents.runner`, saved with each episode) and, for a
run recorded before the miner, by replaying its commands in the game files (`mine_run`).
`mistake_report` reads them back: the episodes not won with their first mistake, and
mistake rates by level and by kind of decision (the verb of the optimal command against
the verb chosen, e.g. take -> cook), with Wilson intervals (over decisions, which are not
independent within an episode: read the intervals as a lower bound on the uncertainty).

    >>> from agents.mistakes import mine_run, mistake_report
    >>> mine_run(store, "l3-llm")                                   # doctest: +SKIP
    >>> mistake_report(store, "l3-llm").by_kind[0]                  # doctest: +SKIP
    KindMistakes(optimal_verb='take', chosen_verb='cook', mistakes=12, decisions=80, ...)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from games import BatchEnv, GameState
from workbench import stats
from workbench.errors import WorkbenchError
from workbench.store import Store, runs
from workbench.store import mistakes as mistakes_store
from workbench.store import play as play_store


@dataclass(frozen=True)
class StepVerdict:
    """One command judged against the winning plan of the state it was taken in."""

    optimal: list[str]  # the plan before the step; empty where there was none
    regret: int | None  # moves it added to the plan; None where no plan is left after it
    lost: bool  # it lost the game
    mistake: bool

    @property
    def optimal_command(self) -> str | None:
        return self.optimal[0] if self.optimal else None

    def to_row(self, step_idx: int) -> dict[str, Any]:
        return {"step_idx": step_idx, **asdict(self)}


INFINITE = float("inf")  # the plan length of a state from which the game cannot be won


class EpisodeJudge:
    """Judges the steps of one episode: given each step as it is taken, from the state the
    game started in, it judges them all once the episode has ended (a step's regret depends
    on the path after it)."""

    def __init__(self, start: GameState) -> None:
        allowance = Counter(start.walkthrough)
        allowance.subtract(start.policy_commands)
        self._allowance = +allowance  # the walkthrough's commands beyond the plan
        self._states = [_PlanState.of(start)]
        self._commands: list[str] = []

    def add(self, command: str, after: GameState) -> None:
        """The next step: `command`, taken in the latest state, led to `after`."""
        self._commands.append(command)
        self._states.append(_PlanState.of(after))

    def verdicts(self) -> list[StepVerdict]:
        """The verdict on every step added, in order."""
        states = self._states
        shortest = {}
        for state in states:
            shortest[state.key] = min(shortest.get(state.key, INFINITE), state.length)
        # Bellman-Ford over the episode's own steps: a state is as close to the win as the
        # state one step further on its path, plus that step.
        changed = True
        while changed:
            changed = False
            for here, there in zip(states, states[1:]):
                if shortest[there.key] + 1 < shortest[here.key]:
                    shortest[here.key] = shortest[there.key] + 1
                    changed = True
        allowance = Counter(self._allowance)
        verdicts = []
        for command, before, after in zip(self._commands, states, states[1:]):
            n_before, n_after = shortest[before.key], shortest[after.key]
            if n_after == INFINITE:  # no plan left: lost (or a dead end), unless it already was
                mistake = after.lost or n_before < INFINITE
                verdicts.append(StepVerdict(before.plan, None, after.lost, mistake))
                continue
            regret = int(n_after - (n_before - 1))
            if regret > 0 and allowance[command] > 0:
                allowance[command] -= 1
                regret = 0
            verdicts.append(StepVerdict(before.plan, regret, False, regret > 0))
        return verdicts


@dataclass(frozen=True)
class _PlanState:
    """What judging needs of a game state: its facts (which identify it), TextWorld's plan
    from it and its length (0 once won; infinite once lost or where no plan is found)."""

    key: tuple
    plan: list[str]
    length: float
    lost: bool

    @classmethod
    def of(cls, state: GameState) -> _PlanState:
        plan = list(state.policy_commands)
        if state.won:
            length = 0.0
        elif state.lost or not plan:
            length = INFINITE
        else:
            length = float(len(plan))
        return cls((tuple(state.facts), state.won, state.lost), plan, length, state.lost)


@dataclass(frozen=True)
class MiningResult:
    """What `mine_run` did: the episodes it judged now, and those judged before."""

    run_id: str
    run_name: str
    mined: int  # episodes back-filled by this call
    steps: int  # their steps
    already: int  # episodes that had their verdicts (recorded while the run played)


def mine_run(
    store: Store, run: str, progress: Callable[[int, int], None] | None = None
) -> MiningResult:
    """Back-fill the verdicts of a play run's episodes that have none, by replaying their
    commands in their game files; all of them are written in one transaction at the end.

    Every game file is checked first: a missing one is an error naming it, before anything
    is replayed or written. A replay that does not reproduce a recorded observation or score
    (the game file changed since the run) is an error too, and nothing is written.

    Args:
        store: the database holding the run.
        run: play run name or id.
        progress: called with (episodes replayed, episodes to replay).
    """
    record, n_episodes = _play_run(store, run)
    pending = mistakes_store.unmined_episodes(store, record["id"])
    for episode in pending:
        path = episode["game_path"]
        # TextWorld's plans come from the game's .json companion as well.
        files = [Path(path), Path(path).with_suffix(".json")] if path else []
        gone = [str(f) for f in files if not f.is_file()] if path else ["(none recorded)"]
        if gone:
            raise WorkbenchError(
                f"game file {gone[0]} of episode {episode['id']} is gone;"
                f" make or copy it back to mine run {record['name']!r}"
            )
    verdicts: dict[str, list[dict[str, Any]]] = {}
    if pending:
        with BatchEnv(1, workers=0) as env:
            for i, episode in enumerate(pending):
                steps = play_store.get_steps(store, episode["id"])
                verdicts[episode["id"]] = _replay(env, episode, steps)
                if progress is not None:
                    progress(i + 1, len(pending))
    mistakes_store.save_step_mistakes(store, verdicts)
    return MiningResult(
        record["id"],
        record["name"],
        len(pending),
        sum(len(v) for v in verdicts.values()),
        n_episodes - len(pending),
    )


def _play_run(store: Store, run: str) -> tuple[dict[str, Any], int]:
    """The play run by name or id and its number of episodes; none is an error."""
    record = runs.require_run(store, run, kind="play")
    n_episodes = len(play_store.episode_outcomes(store, record["id"]))
    if not n_episodes:
        raise WorkbenchError(f"run {record['name']!r} has no episodes to judge")
    return record, n_episodes


def _replay(env: BatchEnv, episode: dict[str, Any], steps: list[dict[str, Any]]) -> list[dict]:
    """Judge an episode's recorded steps by playing its commands again."""
    path = episode["game_path"]
    state = env.reset({0: path})[0]
    judge = EpisodeJudge(state)
    for step in steps:
        _agree(episode, step, "observation", state.observation, step["observation"], path)
        state = env.step({0: step["action"]})[0]
        _agree(episode, step, "reply", state.observation, step["feedback"], path)
        _agree(episode, step, "score", state.score, step["score"], path)
        judge.add(step["action"], state)
    return [v.to_row(step["idx"]) for step, v in zip(steps, judge.verdicts())]


def _agree(episode: dict, step: dict, what: str, replayed: Any, recorded: Any, path: str) -> None:
    if replayed != recorded:
        raise WorkbenchError(
            f"replaying episode {episode['id']} in {path} gives another {what} at step"
            f" {step['idx']} than was recorded: the game file changed since the run was played"
        )


def verb(command: str | None) -> str:
    """A command's verb, its first word: "take" for "take red apple from counter"."""
    words = (command or "").split(maxsplit=1)
    return words[0].lower() if words else ""


@dataclass(frozen=True)
class JudgedStep:
    """A recorded step with its verdict, as the report lists it."""

    episode_id: str
    step: int
    game: str
    level: int | None
    chosen: str
    optimal: list[str]
    regret: int | None
    lost: bool
    mistake: bool
    llm: bool  # an LLM chose it: only such a step has a decision to explain
    explanations: int  # stored attributions of this step (`workbench explain-step`)

    @property
    def optimal_command(self) -> str | None:
        return self.optimal[0] if self.optimal else None

    @property
    def kind(self) -> tuple[str, str]:
        """(verb of the optimal command, verb chosen)."""
        return verb(self.optimal_command), verb(self.chosen)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "optimal_command": self.optimal_command}


@dataclass(frozen=True)
class FailedEpisode:
    """An episode the agent did not win, with its first mistake (None if none was flagged,
    e.g. a budget of moves shorter than the plan)."""

    episode_id: str
    game: str
    level: int | None
    trial: int
    condition: str
    outcome: str  # lost (the game said so) or max_steps (out of moves)
    moves: int
    mistakes: int
    first_mistake: JudgedStep | None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_mistake
        return {**asdict(self), "first_mistake": first.to_dict() if first else None}


@dataclass(frozen=True)
class LevelMistakes:
    """Mistakes per decision at one level (rate: Wilson interval)."""

    level: int | None
    decisions: int
    mistakes: int
    rate: stats.Interval


@dataclass(frozen=True)
class KindMistakes:
    """One kind of mistake: the optimal command's verb against the verb chosen. `decisions`
    counts the decisions whose optimal verb was this one, and `rate` is the share of them
    that were this mistake (Wilson interval)."""

    optimal_verb: str
    chosen_verb: str
    mistakes: int
    decisions: int
    rate: stats.Interval


@dataclass
class MistakeReport:
    """The verdicts of a play run: failed episodes with their first mistake, and mistake
    rates by level and by kind of decision. `unjudged` counts episodes without verdicts
    (recorded before the miner; `mine_run` judges them)."""

    run: dict[str, str]  # id and name
    episodes: int
    unjudged: int
    decisions: int
    mistakes: int
    rate: stats.Interval
    failed: list[FailedEpisode]
    by_level: list[LevelMistakes]
    by_kind: list[KindMistakes]
    steps: list[JudgedStep] = field(repr=False)

    def correct_decisions(self, optimal_verb: str) -> list[JudgedStep]:
        """Decisions where `optimal_verb` was the optimal verb and the agent chose it and kept
        a shortest plan (regret 0; an allowed look-up at the cookbook is not one): explained
        ones first, then those an LLM made."""
        found = [
            s
            for s in self.steps
            if s.regret == 0 and not s.mistake and s.kind == (optimal_verb, optimal_verb)
        ]
        return sorted(found, key=lambda s: (s.explanations == 0, not s.llm))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "episodes": self.episodes,
            "unjudged": self.unjudged,
            "decisions": self.decisions,
            "mistakes": self.mistakes,
            "rate": asdict(self.rate) if self.decisions else None,  # NaN is no JSON
            "failed": [f.to_dict() for f in self.failed],
            "by_level": [asdict(r) for r in self.by_level],
            "by_kind": [asdict(r) for r in self.by_kind],
        }


def mistake_report(store: Store, run: str) -> MistakeReport:
    """The stored verdicts of a play run (by name or id), counted; a run without episodes
    is an error. Nothing is replayed here: `mine_run` judges a run's older episodes."""
    record, n_episodes = _play_run(store, run)
    rows = mistakes_store.list_step_mistakes(store, record["id"])
    steps = [
        JudgedStep(
            r["episode_id"],
            int(r["step"]),
            r["game"],
            r["level"],
            r["action"],
            r["optimal"],
            r["regret"],
            bool(r["lost"]),
            bool(r["mistake"]),
            bool(r["llm"]),
            int(r["explanations"]),
        )
        for r in rows
    ]
    judged = {s.episode_id for s in steps}
    return MistakeReport(
        run={"id": record["id"], "name": record["name"]},
        episodes=n_episodes,
        unjudged=n_episodes - len(judged),
        decisions=len(steps),
        mistakes=sum(s.mistake for s in steps),
        rate=stats.wilson_interval(sum(s.mistake for s in steps), len(steps)),
        failed=_failed(rows, steps),
        by_level=_by_level(steps),
        by_kind=_by_kind(steps),
        steps=steps,
    )


def _failed(rows: list[dict[str, Any]], steps: list[JudgedStep]) -> list[FailedEpisode]:
    episodes: dict[str, dict[str, Any]] = {}
    judged: dict[str, list[JudgedStep]] = {}
    for row, step in zip(rows, steps):
        if not row["episode_won"]:
            episodes.setdefault(step.episode_id, row)
            judged.setdefault(step.episode_id, []).append(step)
    out = []
    for episode_id, row in episodes.items():
        mistakes = [s for s in judged[episode_id] if s.mistake]
        out.append(
            FailedEpisode(
                episode_id,
                row["game"],
                row["level"],
                int(row["trial"]),
                row["condition"],
                "lost" if row["episode_lost"] else row["stop_reason"],
                int(row["moves"]),
                len(mistakes),
                mistakes[0] if mistakes else None,
            )
        )
    return out


def _by_level(steps: list[JudgedStep]) -> list[LevelMistakes]:
    decisions: Counter[int | None] = Counter(s.level for s in steps)
    mistakes: Counter[int | None] = Counter(s.level for s in steps if s.mistake)
    levels = sorted(decisions, key=lambda v: (v is None, v or 0))
    return [
        LevelMistakes(
            level,
            decisions[level],
            mistakes[level],
            stats.wilson_interval(mistakes[level], decisions[level]),
        )
        for level in levels
    ]


def _by_kind(steps: list[JudgedStep]) -> list[KindMistakes]:
    decisions = Counter(s.kind[0] for s in steps)
    kinds = Counter(s.kind for s in steps if s.mistake)
    rows = [
        KindMistakes(
            optimal,
            chosen,
            n,
            decisions[optimal],
            stats.wilson_interval(n, decisions[optimal]),
        )
        for (optimal, chosen), n in kinds.items()
    ]
    return sorted(rows, key=lambda r: (-r.mistakes, r.optimal_verb, r.chosen_verb))
