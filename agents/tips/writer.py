"""The writer: asks an LLM for tips, parses its replies, retries unusable ones, and builds
the new versions of tip sets (one game's tips, or a general set merged from many games).

An LLM reply that yields nothing usable is retried; when the retries run out the failure is
recorded as a version with status "failed" that keeps its parent's tips, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.prompt import worked_example
from agents.tips.parsing import TipParseError, parse_ops, parse_reflection, parse_tips
from agents.tips.prompts import DEFAULT_TIP_PROMPTS, TipPrompts
from agents.tips.tipset import Tip, TipSet, apply_ops
from agents.tips.trajectory_text import held_tips, numbered_tips, render_trajectory
from games import GameInfo
from workbench.errors import WorkbenchError
from workbench.llm import LLM, Completion
from workbench.store import Store, new_id


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
            raise WorkbenchError(f"max_tips must be at least 1, not {max_tips}")
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
                tips=held_tips(held, "tips"), trajectory=trajectory, max_tips=self.max_tips
            )
        if request.mode == "expert":
            return self.prompts.expert.format(
                tips=held_tips(held, "tips"),
                trajectory=trajectory,
                expert=self.expert_text(request.game),
                max_tips=self.max_tips,
            )
        if request.mode == "reflexion":
            if request.episode["won"]:
                return None
            return self.prompts.reflexion.format(
                reflections=held_tips(held, "reflections on this game"), trajectory=trajectory
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
            tipset.tips = [Tip(t) for t in parsed.tips]
            if parsed.dropped:
                # Not "ok": a reader should see that the reply was partly unusable.
                tipset.status = "partial"
                tipset.error = f"dropped {len(parsed.dropped)}: {'; '.join(parsed.dropped)}"
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
            current=numbered_tips(current.tips),
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
