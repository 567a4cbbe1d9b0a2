"""Is a game fact *used* by the agent? Activation patching on one recorded step.

A probe can find "the fridge is open" in the agent's hidden state; only an intervention
says whether the action depends on it. For a step of a played episode:

1. The step's prompt is rebuilt exactly from the store (`agents.recorded_step`).
2. `patch="OLD=>NEW"` edits what the game told the agent (every occurrence of OLD in the
   step's observation and in the game's replies of its history, e.g. the recipe read a few
   steps earlier), e.g. `the fridge is open=>the fridge is closed`, and the agent chooses
   again on the edited prompt with its own selection method: does the chosen command
   change?
3. The residual stream of the clean prompt is patched into the corrupted run, layer by
   layer (0 = embeddings .. L), at the edited positions and the last one (`positions=
   "changed"`), at the last position only ("last"), or at every position ("all"). A cell is
   the normalised restoration of the recorded action's log-probability (or, when the edit
   changes the choice to a command of as many tokens, of the logit difference between the
   two commands): where it reaches 1, that state carries the information that decided the
   action. Typically the edited tokens carry it in the early layers and the last position
   in the late ones; the layer where the last position takes over is where the
   information has moved.

The result is a `PatchingExplanation`, stored linked to the step like explain-step's.

    >>> from agents.step_patching import patch_step
    >>> result = patch_step(store, "l1", "3f2a9c1b7d10", 2,                  # doctest: +SKIP
    ...                     patch="the fridge is open=>the fridge is closed")
    >>> result.action_changed, result.explanation.best()                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from agents.recorded_step import recorded_step, run_model
from agents.trajectory import Turn
from explainers.causal.engine import Progress, Readout
from explainers.causal.patching import to_explanation
from explainers.causal.result import PatchingExplanation
from explainers.causal.sweep import PatchingSetup, exact_patching, setup_from_ids
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store

POSITION_MODES = ("changed", "last", "all")
METHOD = "activation_patching"


@dataclass
class StepPatching:
    """What editing the observation did to one recorded decision, and where it sits."""

    explanation_id: str
    run: str
    episode_id: str
    step: int
    patch: str
    action: str  # the recorded action (the patching target)
    clean_action: str  # chosen again on the rebuilt prompt
    corrupt_action: str  # chosen on the edited prompt
    explanation: PatchingExplanation

    @property
    def action_changed(self) -> bool:
        return self.corrupt_action != self.clean_action

    def to_dict(self) -> dict[str, Any]:
        """Plain data: every field (the explanation as its record) and `action_changed`."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["action_changed"] = self.action_changed
        data["explanation"] = self.explanation.to_record()
        return data


def parse_patch(text: str) -> tuple[str, str]:
    """`"OLD=>NEW"` -> (OLD, NEW); NEW may be empty (OLD is deleted)."""
    old, sep, new = str(text).partition("=>")
    if not sep:
        raise WorkbenchError(f"patch must look like OLD=>NEW, not {text!r}")
    if not old:
        raise WorkbenchError("patch OLD=>NEW has an empty OLD")
    if old == new:
        raise WorkbenchError(f"patch {text!r} changes nothing (OLD equals NEW)")
    return old, new


def patch_step(
    store: Store,
    run: str,
    episode_id: str,
    step: int,
    patch: str,
    *,
    lm: LoadedModel | None = None,
    positions: str = "changed",
    layers: list[int] | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> StepPatching:
    """Edit what the game told the agent at a recorded step, re-choose, and patch layer by
    layer.

    Args:
        store / run / episode_id / step: the recorded step (0-based).
        patch: "OLD=>NEW"; OLD must occur in the step's observation or in a game reply of
            its history (the history the prompt shows); every occurrence is edited.
        lm: the model (default: the local model the run played with).
        positions: "changed" (the edited tokens and the last), "last" or "all".
        layers: residual layers to patch (0 = embeddings .. L; all by default).
        batch_size: patched runs per forward (default: from a token budget).
    """
    old, new = parse_patch(patch)
    if positions not in POSITION_MODES:
        raise WorkbenchError(
            f"positions must be one of {', '.join(POSITION_MODES)}, not {positions!r}"
        )
    if lm is None:
        lm = run_model(store, run)
    if lm.kind != "causal":
        raise WorkbenchError(f"step patching needs a causal LM; {lm.name} is a classifier")
    recorded = recorded_step(store, run, episode_id, step, lm)
    agent, turn = recorded.agent, recorded.turn
    edited = _edited_turn(turn, recorded.prompt, old, new, step)
    clean_action, corrupt_action = (d.action for d in agent.act([turn, edited]))
    texts = [agent.llm.format_prompt(agent.prompt(t)) for t in (turn, edited)]
    setup, clean_ids, corrupt_ids = _setup(lm, texts, recorded.action, corrupt_action)
    columns = _positions(positions, clean_ids, corrupt_ids, setup.clean_to_corrupt())
    sweep = exact_patching(
        setup, "resid", "denoise", layers, columns, batch_size=batch_size, progress=progress
    )
    choices = {
        "clean_action": clean_action,
        "corrupt_action": corrupt_action,
        "action_changed": corrupt_action != clean_action,
    }
    target_tokens = [lm.tokenizer.decode([i]) for i in setup.readout.target_ids.tolist()]
    exp = to_explanation(
        METHOD,
        _Prompt(texts[0], target_tokens),
        setup,
        sweep,
        "resid",
        "denoise",
        {"estimate": "exact", "positions": positions, "patch": patch},
        texts[1],
        {"patch": patch, **choices},
    )
    recorded.save_explanation(
        store,
        exp,
        total=sweep.clean_value - sweep.corrupt_value,
        params={
            "patch": patch,
            "positions": positions,
            "metric": setup.readout.metric,
            **choices,
            "reproduced": clean_action == recorded.action,
        },
    )
    return StepPatching(
        explanation_id=exp.id,
        **recorded.where,  # run, episode_id, step
        patch=patch,
        action=recorded.action,
        clean_action=clean_action,
        corrupt_action=corrupt_action,
        explanation=exp,
    )


def _setup(
    lm: LoadedModel, texts: list[str], action: str, corrupt_action: str
) -> tuple[PatchingSetup, list[int], list[int]]:
    """The patching setup of the clean and edited model inputs, read out on the recorded
    action (against the edited prompt's choice, where it has as many tokens), and the two
    inputs' token ids: the agent's own tokenization, the command right after the prompt."""
    tok = lm.tokenizer
    clean_ids, corrupt_ids = (tok(t, add_special_tokens=False)["input_ids"] for t in texts)
    target = tok(action, add_special_tokens=False)["input_ids"]
    if not target:
        raise WorkbenchError(f"the recorded action {action!r} tokenizes to nothing")
    contrast = None
    if corrupt_action != action:
        other = tok(corrupt_action, add_special_tokens=False)["input_ids"]
        contrast = torch.tensor(other) if len(other) == len(target) else None
    readout = Readout(torch.tensor(target), contrast)
    setup = setup_from_ids(lm, clean_ids, corrupt_ids, readout, allow_lengths=True)
    return setup, clean_ids, corrupt_ids


@dataclass
class _Prompt:
    """What `to_explanation` reads of a request: the clean text and the target's tokens."""

    text: str
    target_tokens: list[str]


def _edited_turn(turn: Turn, prompt: str, old: str, new: str, step: int) -> Turn:
    """The turn with OLD replaced by NEW in its observation and its history's game replies.

    Only text the prompt shows counts: a reply older than the prompt's history window, or
    an OLD that occurs only in the instructions or the command list, is an error.
    """
    observation = turn.state.observation
    replies = [s.feedback for s in turn.steps]
    shown = [text for text in (observation, *replies) if old in text and text in prompt]
    if not shown:
        text = observation if len(observation) <= 80 else observation[:77] + "..."
        raise WorkbenchError(
            f"{old!r} does not occur in the observation of step {step} ({text!r}) or in the "
            "game's replies of its history"
        )
    steps = [dataclasses.replace(s, feedback=s.feedback.replace(old, new)) for s in turn.steps]
    state = dataclasses.replace(turn.state, observation=observation.replace(old, new))
    return dataclasses.replace(turn, state=state, steps=steps)


def _positions(
    mode: str, clean_ids: list[int], corrupt_ids: list[int], clean_to_corrupt: list[int]
) -> list[int] | None:
    """The clean prompt positions to patch (None: all of them)."""
    last = len(clean_ids) - 1
    if mode == "all":
        return None
    if mode == "last":
        return [last]
    if len(clean_ids) == len(corrupt_ids):
        edited = [i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b]
    else:
        # The edited tokens have no partner; the first token after them does.
        unpaired = [p for p in range(len(clean_ids)) if clean_to_corrupt[p] < 0]
        after = (unpaired[-1] + 1) if unpaired else last
        edited = [min(after, last)]
    return sorted({*edited, last})
