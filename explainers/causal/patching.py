"""Exact activation patching (Vig et al. 2020; Meng et al. 2022; the TransformerLens
`patching` module): run the model on a corrupted input, put back one activation from the
clean run, and see how much of the clean behaviour returns.

Components: `resid` (the residual stream entering each block, layer 0 = the embeddings,
L = after the last block), `attn` and `mlp` (what each block's attention or MLP adds to the
stream), per prompt position; `head` (one attention head's output at every position).
Directions: `denoise` patches clean activations into the corrupted run (which activations
suffice to restore the behaviour?), `noise` patches corrupted ones into the clean run (which
are necessary?). Either way a cell is the normalised restoration
(value - corrupted) / (clean - corrupted): 0 = the corrupted run's value, 1 = the clean's.

The value is log p(target) summed over the target's tokens, or with a contrast the logit
difference target - contrast (for a classifier: the label's log-probability, or the
difference of two labels' logits).

All patched runs of one request go through `engine.Patcher` in batches; the clean and
corrupted activations are cached once.

    >>> from explainers import explain                                   # doctest: +SKIP
    >>> exp = explain(lm, "The key is under the mat. The key is under the", target=" mat",
    ...               method="activation_patching",
    ...               corrupt="The key is under the rug. The key is under the")
    >>> exp.scores.shape            # (layers 0 .. L, prompt positions)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from explainers.causal.engine import ENGINES, Progress
from explainers.causal.result import PatchingExplanation
from explainers.causal.sweep import (
    DIRECTIONS,
    PatchingSetup,
    Sweep,
    exact_patching,
    readout_for,
    setup_from_ids,
)
from explainers.explainer import Explainer
from explainers.params import Choice, Int, IntList
from explainers.registry import register
from workbench.anatomy import COMPONENTS
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class CausalMethod:
    """The method an explanation records (`explanation.Method`), named by its caller."""

    name: str
    category: str = "causal"


@dataclass
class PatchedInput:
    """What a patching result explains (an `explanation.ExplainedInput`): the clean prompt,
    one column per token as the setup tokenized it, and what its readout scores."""

    setup: PatchingSetup
    text: str
    target_tokens: list[str]
    aggregation: ClassVar[str] = "token"  # a layer's restoration is not summed into words

    @property
    def model_name(self) -> str:
        return self.setup.lm.name

    @property
    def model_info(self) -> dict[str, Any]:
        return self.setup.lm.identity.to_dict()

    @property
    def input_tokens(self) -> list[str]:
        return self.setup.input_tokens

    @property
    def word_ids(self) -> list[int]:
        return list(range(len(self.setup.input_tokens)))

    def record_extras(self) -> dict[str, Any]:
        """The readout's ids (and the contrast's tokens), to score the patch again later."""
        lm, readout = self.setup.lm, self.setup.readout
        extras: dict[str, Any] = {}
        if lm.kind == "causal":
            extras["target_ids"] = readout.target_ids.tolist()
        if readout.contrast_ids is not None:
            ids = readout.contrast_ids.tolist()
            extras["contrast_ids"] = ids
            extras["contrast_tokens"] = (
                [lm.labels[i] for i in ids]
                if lm.kind == "classifier"
                else [lm.tokenizer.decode([i]) for i in ids]
            )
        return extras


def to_explanation(
    method: str,
    obj: Any,
    setup: PatchingSetup,
    sweep: Sweep,
    component: str,
    direction: str,
    params: dict[str, Any],
    corrupt_text: str | None,
    extras: dict[str, Any] | None = None,
) -> PatchingExplanation:
    """The explanation of a sweep (shared by the causal methods and step patching), built by
    the shared builder `Explanation.from_objective`; `obj` gives the clean text and the
    target's tokens."""
    exp = PatchingExplanation.from_objective(
        CausalMethod(method),
        PatchedInput(setup, obj.text, list(obj.target_tokens)),
        sweep.scores,
        params={"component": component, "direction": direction, **params},
        extras={"values": sweep.values.tolist(), **(extras or {})},
        component=component,
        layers=sweep.layers,
        hook_names=sweep.hook_names,
        positions=sweep.positions,
        clean_value=sweep.clean_value,
        corrupt_value=sweep.corrupt_value,
        metric=setup.readout.metric,
        direction=direction,
        corrupt_text=corrupt_text,
        corrupt_tokens=setup.corrupt_tokens,
    )
    for warning in sweep.warnings:
        exp.warn(warning)
    return exp


class CausalExplainer(Explainer):
    """What the causal methods share: a contrast is a second target (or label), and their
    parameters are checked here without a model."""

    category = "causal"
    takes_contrast = True
    reports_progress = True

    def resolve_target(self, model, text, target=None, *, generate=None, contrast=None):
        if model.kind == "classifier" and contrast is not None:
            from explainers.objective import _resolve_label

            obj = super().resolve_target(model, text, target, generate=generate)
            obj.contrast_ids = torch.tensor([_resolve_label(model, contrast, obj)])
            return obj
        return super().resolve_target(model, text, target, generate=generate, contrast=contrast)

    param_checks = {
        "component": Choice(*COMPONENTS),
        "direction": Choice(*DIRECTIONS),
        "engine": Choice(*ENGINES),
        "layers": IntList(),
        "batch_size": Int(min=1, optional=True),
    }

    def corrupted_setup(self, obj: Any, corrupt: str | None) -> PatchingSetup:
        if corrupt is None or not str(corrupt).strip():
            raise WorkbenchError(f"{self.name} needs corrupt: the corrupted input text")
        ids = obj.lm.tokenizer(str(corrupt), add_special_tokens=True)["input_ids"]
        return setup_from_ids(obj.lm, obj.prompt_ids.tolist(), ids, readout_for(obj))


@register
class ActivationPatching(CausalExplainer):
    name = "activation_patching"
    summary = "exact activation patching: restoration per layer and position (or head)"

    def explain_objective(
        self,
        obj: Any,
        corrupt: str | None = None,
        component: str = "resid",
        direction: str = "denoise",
        layers: list[int] | None = None,
        batch_size: int | None = None,
        engine: str = "auto",
        progress: Progress | None = None,
    ) -> PatchingExplanation:
        setup = self.corrupted_setup(obj, corrupt)
        sweep = exact_patching(
            setup,
            component,
            direction,
            layers,
            batch_size=batch_size,
            engine=engine,
            progress=progress,
        )
        params = {"estimate": "exact", "engine": engine}
        return to_explanation(self.name, obj, setup, sweep, component, direction, params, corrupt)
