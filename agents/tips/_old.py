"""Introspective tips: the LLM reads trajectories and writes short tips for its own prompt.

The method of Chen et al. 2023, "Introspective Tips: Large Language Model for In-Context
Decision Making", with no fine-tuning:

- `self`: after each episode the LLM reads its trajectory and the tips it had, and writes
  a few general tips; the next trial of the same game plays with them.
- `expert`: the same, comparing its trajectory with the expert's (the walkthrough replayed
  in the environment, so with the game's real replies).
- `general`: tips from many training games merged into one capped set by ADD / EDIT /
  AGREE / REMOVE operations with importance scores, as in ExpeL (Zhao et al. 2023,
  "ExpeL: LLM Agents Are Experiential Learners"), then used zero-shot on other games.
- Baselines: `none`, and `reflexion` (Shinn et al. 2023, "Reflexion: Language Agents with
  Verbal Reinforcement Learning"): after a failed episode, a reflection specific to that
  game; the last few are kept.

Every version of a tip set is stored with its parent, scope and provenance (the episodes
it read and every LLM call that wrote it). An LLM reply that yields no usable tips is
retried; when the retries run out the failure is recorded as a version with status
"failed" that keeps its parent's tips, and the run goes on.

    >>> import agents, games
    >>> from workbench.llm import make_llm
    >>> result = agents.play_tips(games.list_games("games/l1"), ["self"], llm=make_llm(),
    ...                           trials=3, store=Store(), run_name="self-l1")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.policies import Agent, make_agent
from agents.runner import PlayResult, run_episodes, worked_example
from agents.tip_prompts import DEFAULT_TIP_PROMPTS, TipPrompts
from agents.trajectory import Episode, EpisodeSpec
from games import GameInfo
from workbench.errors import WorkbenchError
from workbench.llm import LLM, Completion
from workbench.store import Store, new_id
from workbench.store import play as play_store
from workbench.store import tips as tips_store

TIP_MODES = ("none", "self", "expert", "reflexion", "general")
LEARNING_MODES = ("self", "expert", "reflexion")  # modes that write tips between trials
OPS = ("ADD", "EDIT", "AGREE", "REMOVE")

# ExpeL's votes: a new insight starts at 2, agreeing or editing adds 1, and an insight whose
# importance falls to 0 leaves the list.
ADD_SCORE = 2
MAX_TIP_CHARS = 300
MAX_REFLECTION_CHARS = 600


class TipParseError(ValueError):
    """An LLM reply from which no usable tips (or operations) could be read."""


@dataclass
class Tip:
    text: str
    score: int = 1


@dataclass
class TipOp:
    """One merge operation as the LLM wrote it; `target` is a 1-based tip number."""

    op: str
    target: int | None = None
    text: str | None = None
    old_text: str | None = None
    applied: bool = False
    note: str | None = None
    llm_call_id: str | None = None


@dataclass
class TipSet:
    """One version of a set of tips, with where it came from.

    `scope` is "game:<id>" for tips learned on one game's trials and "general" for a
    merged set; `parent_id` is the version it revises; `episodes` and `llm_call_ids` are
    its provenance (for a general set, every episode that fed it).
    """

    kind: str
    scope: str
    tips: list[Tip] = field(default_factory=list)
    id: str = field(default_factory=new_id)
    parent_id: str | None = None
    version: int = 1
    status: str = "ok"
    error: str | None = None
    run_id: str | None = None
    condition: str | None = None
    game_id: str | None = None
    trial: int | None = None
    episodes: list[str] = field(default_factory=list)
    llm_call_ids: list[str] = field(default_factory=list)
    ops: list[TipOp] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.tips]

    def child(self, **changes: Any) -> TipSet:
        """A new version revising this one (same kind, scope and place in a run)."""
        base = {
            "kind": self.kind,
            "scope": self.scope,
            "tips": [Tip(t.text, t.score) for t in self.tips],
            "parent_id": self.id,
            "version": self.version + 1,
            "run_id": self.run_id,
            "condition": self.condition,
            "game_id": self.game_id,
            "trial": self.trial,
        }
        base.update(changes)
        return TipSet(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, calls: Sequence[dict[str, Any]] = ()) -> str:
        """Write this version, its tips and operations, and the LLM calls that made it."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("tips", "ops")}
        tips_store.save_tipset(
            store,
            row,
            [asdict(t) for t in self.tips],
            [asdict(o) for o in self.ops],
            list(calls),
        )
        return self.id

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TipSet:
        names = cls.__dataclass_fields__.keys()
        data = {k: v for k, v in row.items() if k in names and k not in ("tips", "ops")}
        data["tips"] = [Tip(t["text"], int(t["score"])) for t in row.get("tips", [])]
        data["ops"] = [TipOp(**o) for o in row.get("ops", [])]
        return cls(**data)

    @classmethod
    def load(cls, store: Store, tipset_id: str) -> TipSet:
        row = tips_store.get_tipset(store, tipset_id)
        if row is None:
            raise WorkbenchError(
                f"no tip set with id {tipset_id!r} in {store.path}; see `workbench tips list`"
            )
        return cls.from_row(row)


# -- parsing ---------------------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|tip\s*\d*\s*[:.)-])\s*", re.IGNORECASE)
_OP_LINE = re.compile(
    r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s*)?\**(ADD|EDIT|AGREE|REMOVE)\b\**"
    r"\s*(?:(?:tip\s*)?#?\s*(\d+))?\s*[:.)-]?\s*(.*)$",
    re.IGNORECASE,
)


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().strip("\"'`*").strip()
    return text[:MAX_TIP_CHARS].rstrip()


def parse_tips(text: str, max_tips: int) -> list[str]:
    """The tips of a reply: its bulleted or numbered lines (plain lines if it has none),
    without headers, duplicates or empty lines, at most `max_tips`.

    Raises `TipParseError` when nothing usable is left.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    bulleted = [line for line in lines if _BULLET.match(line)]
    chosen = bulleted or lines
    tips: list[str] = []
    seen: set[str] = set()
    for line in chosen:
        tip = _clean(_BULLET.sub("", line, count=1))
        # A line ending in a colon introduces the list ("Here are my tips:"), and a tip
        # needs a few words to say anything ("= Kitchen =" is the game's header, not a tip).
        if len(re.findall(r"[a-zA-Z]{2,}", tip)) < 3 or tip.endswith(":"):
            continue
        key = tip.lower().rstrip(".")
        if key in seen:
            continue
        seen.add(key)
        tips.append(tip)
    if not tips:
        raise TipParseError("the reply has no tips" if not text.strip() else "no tip lines")
    return tips[:max_tips]


def parse_reflection(text: str) -> str:
    """The reflection of a reply (its "Reflection:" label dropped), clipped."""
    body = re.sub(r"^\s*\**reflection\**\s*:\s*", "", text or "", flags=re.IGNORECASE)
    body = re.sub(r"\s+", " ", body).strip()
    if len(body) < 10 or not re.search(r"[a-zA-Z]{3}", body):
        raise TipParseError("the reply has no reflection")
    return body[:MAX_REFLECTION_CHARS].rstrip()


def parse_ops(text: str) -> list[TipOp]:
    """ADD / EDIT / AGREE / REMOVE lines of a merge reply, in order.

    Lines that are not operations are ignored; an operation missing what it needs (ADD
    without text, EDIT without a number or text, AGREE/REMOVE without a number) is ignored
    too. Raises `TipParseError` when no operation is left.
    """
    ops: list[TipOp] = []
    for line in (text or "").splitlines():
        m = _OP_LINE.match(line)
        if not m:
            continue
        op, number, rest = m.group(1).upper(), m.group(2), _clean(m.group(3) or "")
        target = int(number) if number else None
        if op == "ADD" and len(rest) >= 4:
            ops.append(TipOp("ADD", None, rest))
        elif op == "EDIT" and target is not None and len(rest) >= 4:
            ops.append(TipOp("EDIT", target, rest))
        elif op in ("AGREE", "REMOVE") and target is not None:
            ops.append(TipOp(op, target))
    if not ops:
        raise TipParseError("no ADD/EDIT/AGREE/REMOVE operations")
    return ops


def apply_ops(tips: list[Tip], ops: list[TipOp], max_tips: int) -> list[Tip]:
    """The list after the operations, ExpeL-style: ADD enters at score 2 (an ADD of a
    listed tip counts as AGREE), AGREE and EDIT add 1, REMOVE takes the tip out; then at
    most `max_tips` stay, the lowest scores leaving first (earlier tips win ties).

    Targets are 1-based numbers in `tips` as shown to the LLM. Each op's `applied`,
    `old_text` and `note` are filled in.
    """
    work = [Tip(t.text, t.score) for t in tips]
    removed: set[int] = set()
    for op in ops:
        if op.op == "ADD":
            assert op.text is not None
            same = [
                i
                for i, t in enumerate(work)
                if t.text.lower().rstrip(".") == op.text.lower().rstrip(".")
            ]
            if same and same[0] not in removed:
                work[same[0]].score += 1
                op.applied, op.note = True, "already listed: counted as AGREE"
            else:
                work.append(Tip(op.text, ADD_SCORE))
                op.applied = True
            continue
        i = (op.target or 0) - 1
        if not 0 <= i < len(tips) or i in removed:
            op.note = f"there is no tip {op.target}" if i not in removed else "tip was removed"
            continue
        op.old_text = work[i].text
        op.applied = True
        if op.op == "EDIT":
            work[i].text = op.text or work[i].text
            work[i].score += 1
        elif op.op == "AGREE":
            work[i].score += 1
        else:
            removed.add(i)
    kept = [(i, t) for i, t in enumerate(work) if i not in removed and t.score > 0]
    if len(kept) > max_tips:
        best = sorted(kept, key=lambda it: (-it[1].score, it[0]))[:max_tips]
        keep = {i for i, _ in best}
        kept = [(i, t) for i, t in kept if i in keep]
    return [t for _, t in kept]


# -- trajectories as text --------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\n{2,}", "\n", (text or "").strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_trajectory(
    episode: dict[str, Any], steps: list[dict[str, Any]], max_chars: int = 3000
) -> str:
    """An episode as the tip prompts show it: the start, each command with the game's reply,
    and the outcome. Long episodes keep their start and their last steps."""
    # The first observation opens with an ASCII-art banner; the story starts after it.
    start = steps[0]["observation"] if steps else ""
    start = _clip(start[-600:], 600)
    moves = [f"> {s['action']}\n{_clip(s['feedback'], 200)}" for s in steps]
    if episode["won"]:
        outcome = f"You won in {episode['moves']} commands"
    elif episode["lost"]:
        outcome = f"You lost after {episode['moves']} commands"
    else:
        outcome = f"You did not win within {episode['moves']} commands"
    outcome += f", scoring {episode['score']} of {episode['max_score']} points."
    budget = max_chars - len(start) - len(outcome)
    shown: list[str] = []
    for move in reversed(moves):
        if sum(len(m) + 1 for m in shown) + len(move) > budget and shown:
            break
        shown.insert(0, move)
    left_out = len(moves) - len(shown)
    middle = [f"... ({left_out} earlier commands left out)"] if left_out else []
    return "\n".join([start, *middle, *shown, outcome])


def _tips_block(tips: Sequence[str], label: str) -> str:
    if not tips:
        return f"You had no {label} yet.\n"
    return f"The {label} you had:\n" + "\n".join(f"- {t}" for t in tips) + "\n"


def _numbered(tips: Sequence[Tip]) -> str:
    if not tips:
        return "(empty)"
    return "\n".join(f"{i}. {t.text} (score {t.score})" for i, t in enumerate(tips, 1))


# -- the writer ------------------------------------------------------------------------------


@dataclass
class TipRequest:
    """One episode to write tips from, with the tip set it was played with."""

    mode: str
    episode: dict[str, Any]  # as `workbench.store.play.list_episodes` returns it
    steps: list[dict[str, Any]]
    game: GameInfo
    previous: TipSet | None
    run_id: str | None = None


class TipWriter:
    """Asks an LLM for tips, parses its replies, retries unusable ones and builds versions.

    Args:
        llm: the LLM that writes tips (it may differ from the acting one).
        max_tips: tips per set (and the general set's cap).
        retries: further attempts after an unusable reply; retries sample at
            `retry_temperature`, since a greedy model repeats its unusable reply.
        keep_reflections: reflexion keeps this many most recent reflections.
        prompts: the templates (`TipPrompts.from_dir` to override them).
        max_tokens: the length of a tip-writing reply.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        max_tips: int = 5,
        retries: int = 2,
        keep_reflections: int = 3,
        prompts: TipPrompts = DEFAULT_TIP_PROMPTS,
        max_tokens: int = 200,
        temperature: float = 0.0,
        retry_temperature: float = 0.7,
        max_trajectory_chars: int = 3000,
    ):
        if max_tips < 1:
            raise WorkbenchError(f"--max-tips must be at least 1, not {max_tips}")
        if retries < 0:
            raise WorkbenchError(f"retries must be 0 or more, not {retries}")
        if keep_reflections < 1:
            raise WorkbenchError(f"keep_reflections must be at least 1, not {keep_reflections}")
        self.llm = llm
        self.max_tips = max_tips
        self.retries = retries
        self.keep_reflections = keep_reflections
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retry_temperature = retry_temperature
        self.max_trajectory_chars = max_trajectory_chars
        self._expert_text: dict[str, str] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "llm": self.llm.describe(),
            "max_tips": self.max_tips,
            "retries": self.retries,
            "keep_reflections": self.keep_reflections,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    # -- asking, with retries ----------------------------------------------------------------

    def _ask(
        self,
        prompts: list[str],
        parse: Callable[[str], Any],
        purpose: str,
        meta: list[dict[str, Any]],
    ) -> list[tuple[Any | None, list[dict[str, Any]], str | None]]:
        """Send all prompts in one batch, re-send the unusable ones, and return per prompt
        (parsed reply or None, every call made as an `llm_calls` row, last error)."""
        results: list[Any | None] = [None] * len(prompts)
        calls: list[list[dict[str, Any]]] = [[] for _ in prompts]
        errors: list[str | None] = [None] * len(prompts)
        pending = list(range(len(prompts)))
        for attempt in range(self.retries + 1):
            if not pending:
                break
            temperature = self.temperature if attempt == 0 else self.retry_temperature
            answers = self.llm.complete(
                [prompts[i] for i in pending], max_tokens=self.max_tokens, temperature=temperature
            )
            still: list[int] = []
            for i, answer in zip(pending, answers):
                error = answer.error
                if error is None:
                    try:
                        results[i] = parse(answer.text)
                    except TipParseError as exc:
                        error = f"unusable reply: {exc}"
                calls[i].append(self._call_row(answer, purpose, meta[i], attempt, error))
                if error is not None:
                    errors[i] = error
                    still.append(i)
            pending = still
        return [
            (results[i], calls[i], errors[i] if results[i] is None else None)
            for i in range(len(prompts))
        ]

    def _call_row(
        self,
        answer: Completion,
        purpose: str,
        meta: dict[str, Any],
        attempt: int,
        error: str | None,
    ) -> dict[str, Any]:
        return {
            "id": new_id(),
            "run_id": meta.get("run_id"),
            "episode_id": meta.get("episode_id"),
            "step_idx": None,
            "purpose": purpose,
            "backend": self.llm.backend,
            "model": self.llm.model,
            "prompt": answer.prompt,
            "completion": answer.text,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "latency_s": answer.latency_s,
            "error": error,
            "params": {**answer.params, "attempt": attempt},
        }

    # -- self, expert, reflexion -------------------------------------------------------------

    def expert_text(self, game: GameInfo) -> str:
        """The expert's game: its walkthrough replayed in the environment (real replies)."""
        if game.id not in self._expert_text:
            self._expert_text[game.id] = worked_example(game, self.max_trajectory_chars)
        return self._expert_text[game.id]

    def prompt(self, request: TipRequest) -> str | None:
        """The tip-writing prompt for an episode; None where the mode writes nothing (a
        won episode gives Reflexion nothing to reflect on)."""
        held = request.previous.texts if request.previous else []
        trajectory = render_trajectory(request.episode, request.steps, self.max_trajectory_chars)
        if request.mode == "self":
            return self.prompts.self.format(
                tips=_tips_block(held, "tips"), trajectory=trajectory, max_tips=self.max_tips
            )
        if request.mode == "expert":
            return self.prompts.expert.format(
                tips=_tips_block(held, "tips"),
                trajectory=trajectory,
                expert=self.expert_text(request.game),
                max_tips=self.max_tips,
            )
        if request.mode == "reflexion":
            if request.episode["won"]:
                return None
            return self.prompts.reflexion.format(
                reflections=_tips_block(held, "reflections on this game"), trajectory=trajectory
            )
        raise WorkbenchError(f"mode {request.mode!r} writes no tips from an episode")

    def write(self, requests: Sequence[TipRequest]) -> list[tuple[TipSet, list[dict]] | None]:
        """A new version per request (None where nothing is written), with its LLM calls.

        All prompts go to the LLM in one batch, so parallel games write tips together.
        """
        prompts = [self.prompt(r) for r in requests]
        asked = [i for i, p in enumerate(prompts) if p is not None]
        parsers = {
            "self": lambda text: parse_tips(text, self.max_tips),
            "expert": lambda text: parse_tips(text, self.max_tips),
            "reflexion": parse_reflection,
        }
        out: list[tuple[TipSet, list[dict]] | None] = [None] * len(requests)
        by_mode: dict[str, list[int]] = {}
        for i in asked:
            by_mode.setdefault(requests[i].mode, []).append(i)
        for mode, indices in by_mode.items():
            meta = [
                {"run_id": requests[i].run_id, "episode_id": requests[i].episode["id"]}
                for i in indices
            ]
            answers = self._ask([prompts[i] for i in indices], parsers[mode], f"tips:{mode}", meta)
            for i, (parsed, calls, error) in zip(indices, answers):
                out[i] = (self._version(requests[i], parsed, calls, error), calls)
        return out

    def _version(
        self, request: TipRequest, parsed: Any, calls: list[dict], error: str | None
    ) -> TipSet:
        episode = request.episode
        base = request.previous or TipSet(
            kind=request.mode,
            scope=f"game:{episode['game']}",
            version=0,
            id="",
        )
        tipset = base.child(
            kind=request.mode,
            scope=f"game:{episode['game']}",
            parent_id=request.previous.id if request.previous else None,
            run_id=request.run_id,
            condition=episode["condition"],
            game_id=episode["game"],
            trial=episode["trial"],
            episodes=[episode["id"]],
            llm_call_ids=[c["id"] for c in calls],
            params=self.describe(),
        )
        if parsed is None:
            tipset.status, tipset.error = "failed", error
        elif request.mode == "reflexion":
            memory = [*tipset.tips, Tip(parsed)]
            tipset.tips = memory[-self.keep_reflections :]
        else:
            tipset.tips = [Tip(t) for t in parsed]
        return tipset

    # -- general ----------------------------------------------------------------------------

    def merge(
        self,
        current: TipSet,
        source: TipSet,
        *,
        final: bool = False,
        merged: int = 0,
    ) -> tuple[TipSet, list[dict]]:
        """Fold one game's tips into the general set: one LLM call (with retries) for
        ADD / EDIT / AGREE / REMOVE operations, applied with scores and capped."""
        prompt = self.prompts.merge.format(
            current=_numbered(current.tips),
            new_tips="\n".join(f"- {t}" for t in source.texts) or "(none)",
            max_tips=self.max_tips,
        )
        meta = {"run_id": source.run_id, "episode_id": None}
        [(ops, calls, error)] = self._ask([prompt], parse_ops, "tips:merge", [meta])
        version = current.child(
            episodes=sorted({*current.episodes, *source.episodes}),
            llm_call_ids=[c["id"] for c in calls],
            run_id=source.run_id,
            params={
                **self.describe(),
                "source_tipset": source.id,
                "merged": merged,
                "final": final,
            },
        )
        if ops is None:
            version.status, version.error = "failed", error
            return version, calls
        for op in ops:
            op.llm_call_id = calls[-1]["id"]
        version.tips = apply_ops(current.tips, ops, self.max_tips)
        version.ops = ops
        return version, calls


def build_general(
    writer: TipWriter,
    sources: Sequence[TipSet],
    store: Store | None = None,
    *,
    run_id: str | None = None,
    on_version: Callable[[TipSet], None] | None = None,
) -> TipSet:
    """Merge the tips of many games (their final self/expert sets) into one general set.

    Every intermediate version is stored (when a store is given) with its parent, the
    operations that made it and, cumulatively, the episodes behind it. A merge whose reply
    stays unusable is recorded as a failed version and the set goes on unchanged.
    """
    if not sources:
        raise WorkbenchError("there are no tips to merge into a general set")
    current = TipSet(
        kind="general", scope="general", version=1, run_id=run_id, params=writer.describe()
    )
    if store is not None:
        current.save(store)
    for n, source in enumerate(sources, 1):
        current_next, calls = writer.merge(current, source, final=n == len(sources), merged=n)
        current_next.condition = "general"
        if store is not None:
            current_next.save(store, calls)
        if on_version is not None:
            on_version(current_next)
        current = current_next
    return current


# -- playing with tips -----------------------------------------------------------------------


@dataclass
class TipPlayResult:
    """A play run whose conditions are tip modes, with the tip sets written between trials."""

    run_id: str | None
    run_name: str | None
    episodes: list[Episode]
    tipsets: list[TipSet]  # written by this call (reused ones from a resumed run excluded)
    failures: int  # tip sets recorded as failed
    skipped: int
    seconds: float = 0.0
    steps: int = 0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def play_tips(
    games: Sequence[GameInfo],
    modes: Sequence[str],
    *,
    llm: LLM,
    store: Store,
    trials: int = 1,
    tipset: TipSet | None = None,
    tip_llm: LLM | None = None,
    max_tips: int = 5,
    retries: int = 2,
    keep_reflections: int = 3,
    prompts: TipPrompts = DEFAULT_TIP_PROMPTS,
    tip_max_tokens: int = 200,
    parallel: int = 1,
    max_steps: int = 50,
    seed: int = 0,
    run_name: str | None = None,
    workers: int | str = "auto",
    write_after_last: bool = True,
    on_episode: Callable[[Episode], None] | None = None,
    on_tips: Callable[[TipSet], None] | None = None,
    agent: Agent | None = None,
    **agent_options: Any,
) -> TipPlayResult:
    """Play every game `trials` times under each tip mode (one condition per mode).

    Trial t+1 of a game plays with the tips written after trial t of that game (self,
    expert, reflexion); `general` plays every trial with `tipset`, and `none` without tips.
    With `tipset` the learning modes start from its tips. A run of the same name resumes:
    finished episodes and tip sets already written are reused, so it costs no LLM call twice.

    Args:
        games / trials / parallel / max_steps / seed / workers: as for `agents.play`.
        modes: any of none, self, expert, reflexion, general.
        llm: the acting LLM; `tip_llm` writes tips (default: the same).
        store / run_name: where everything is recorded (tips need a store: provenance).
        max_tips / retries / keep_reflections / prompts: see `TipWriter`;
            `tip_max_tokens` is its `max_tokens`.
        write_after_last: also write tips after the last trial (what a general set is
            merged from); False saves those LLM calls.
        on_episode / on_tips: progress hooks.
        agent_options: for the llm agent (select, template, score_mode, ...).
    """
    modes = list(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in TIP_MODES]
    if unknown or not modes:
        raise WorkbenchError(
            f"unknown tips mode {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(TIP_MODES)}"
        )
    if "general" in modes and tipset is None:
        raise WorkbenchError(
            "--tips general plays with a general tip set: give --tipset ID "
            "(build one with `workbench tips merge` or `workbench experiment introspective-tips`)"
        )
    if store is None:
        raise WorkbenchError("playing with tips needs a store (tips are recorded with provenance)")
    if not games:
        raise WorkbenchError("no games to play")
    writer = TipWriter(
        tip_llm or llm,
        max_tips=max_tips,
        retries=retries,
        keep_reflections=keep_reflections,
        prompts=prompts,
        max_tokens=tip_max_tokens,
    )
    player = agent or make_agent("llm", llm, **agent_options)
    run_name = run_name or f"tips-{new_id()}"
    params = {
        "games": sorted({g.id for g in games}),
        "game_paths": {g.id: str(g.path) for g in games},
        "trials": trials,
        "conditions": [{"name": m, "tips": []} for m in modes],
        "max_steps": max_steps,
        "seed": seed,
        "parallel": parallel,
        "tips": {"modes": modes, "tipset": tipset.id if tipset else None, **writer.describe()},
        **player.describe(),
    }
    held: dict[tuple[str, str], TipSet | None] = {
        (m, g.id): tipset if m != "none" else None for m in modes for g in games
    }
    by_id = {g.id: g for g in games}
    result = TipPlayResult(None, run_name, [], [], 0, 0)
    for trial in range(trials):
        specs = [
            EpisodeSpec(g, trial, m, list(held[(m, g.id)].texts) if held[(m, g.id)] else [])
            for m in modes
            for g in games
        ]
        played: PlayResult = run_episodes(
            specs,
            player,
            params=params,
            parallel=parallel,
            max_steps=max_steps,
            seed=seed,
            store=store,
            run_name=run_name,
            workers=workers,
            on_episode=on_episode,
            finish=False,
        )
        result.run_id = played.run_id or result.run_id
        result.episodes.extend(played.episodes)
        result.skipped += played.skipped
        result.seconds += played.seconds
        result.steps += played.steps
        learning = [m for m in modes if m in LEARNING_MODES]
        if not learning or (trial == trials - 1 and not write_after_last):
            continue
        requests: list[TipRequest] = []
        for row in play_store.list_episodes(store, result.run_id):
            if row["trial"] != trial or row["condition"] not in learning:
                continue
            key = (row["condition"], row["game"])
            found = tips_store.find_tipset(
                store, result.run_id, row["condition"], row["game"], trial
            )
            if found is not None:  # written before this run was interrupted
                held[key] = TipSet.from_row(found)
                continue
            requests.append(
                TipRequest(
                    row["condition"],
                    row,
                    play_store.get_steps(store, row["id"]),
                    by_id[row["game"]],
                    held[key],
                    result.run_id,
                )
            )
        for request, written in zip(requests, writer.write(requests)):
            if written is None:
                continue
            version, calls = written
            version.save(store, calls)
            result.tipsets.append(version)
            result.failures += version.status == "failed"
            held[(request.mode, request.game.id)] = version
            if on_tips is not None:
                on_tips(version)
    if result.run_id is not None:
        play_store.finish_play_run(store, result.run_id)
    return result


def diff_tipsets(a: TipSet, b: TipSet) -> list[tuple[str, str, str]]:
    """What changed from `a` to `b`, as (sign, tip, note): "-" removed, "+" added, "~"
    kept with another score. Tips are matched by text (case and final full stop ignored)."""

    def key(text: str) -> str:
        return text.lower().rstrip(".").strip()

    old = {key(t.text): t for t in a.tips}
    new = {key(t.text): t for t in b.tips}
    out = [("-", t.text, f"score {t.score}") for k, t in old.items() if k not in new]
    for k, t in new.items():
        if k not in old:
            out.append(("+", t.text, f"score {t.score}"))
        elif old[k].score != t.score:
            out.append(("~", t.text, f"score {old[k].score} -> {t.score}"))
    return out
