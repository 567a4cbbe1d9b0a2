"""SHAP's Partition explainer with its Text masker (Lundberg & Lee 2017, "A Unified Approach to
Interpreting Model Predictions"; the Partition algorithm computes Owen values over a
hierarchy of tokens, Chen et al. 2023, "Algorithms to estimate Shapley value feature
attributions").

The `shap` library does the masking and the coalition schedule: its Text masker clusters
the prompt's tokens into a tree (neighbours, then phrases), and `max_evals` bounds the
model calls. The model function is ours: each masked prompt (as token ids, special tokens
kept by the masker) is scored as the target rows' log-probabilities through the batched
perturbation engine (perturbation.py). Removed tokens are deleted (`removal="delete"`) or
replaced by the pad/EOS token (`removal="replace"`).

The explainer expands its coalition tree in rounds: each round pops `shap_batch` nodes
(shap's Text-masker default, 5) from its priority queue and asks the model for their
2 x `shap_batch` masked inputs in one call. A larger `shap_batch` means fewer, larger model
calls (a GPU runs them closer to its peak) and a more breadth-first expansion of the tree
when `max_evals` stops it early, so the estimate can change.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="shap")
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.perturbation import evaluate_id_lists
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.params import Int
from explainers.registry import register
from workbench.errors import WorkbenchError

REMOVED = -1  # not a token id: marks a deleted position inside shap's masked arrays
SHAP_BATCH = 5  # tree nodes expanded per model call: shap's Text masker's default


@register
class ShapPartition(AttributionExplainer):
    name = "shap"
    summary = "Owen values over a token hierarchy (shap's Partition explainer, Text masker)"
    reports_progress = True

    param_checks = {"max_evals": Int(min=2), "shap_batch": Int(min=1)}

    def attribute(
        self,
        obj: Objective,
        max_evals: int = 300,
        removal: str = "delete",
        baseline: str = "pad",
        batch_size: int | None = None,
        progress: Progress | None = None,
        shap_batch: int = SHAP_BATCH,
    ) -> Attribution:
        import shap

        tokenizer = obj.lm.tokenizer
        # shap batches masked inputs as one array, so they must keep the prompt's length:
        # deleted tokens travel as the marker REMOVED and are dropped before the model.
        stand_in = REMOVED if removal == "delete" else obj.baseline_token_id(baseline)
        masker = shap.maskers.Text(
            tokenizer, mask_token=stand_in, collapse_mask_token=False, output_type="token_ids"
        )
        shap_ids = list(masker.data_transform(obj.text)[0])
        if len(shap_ids) != len(obj.prompt_ids):
            raise WorkbenchError(
                "shap's Text masker splits this input into different tokens than the model "
                f"({len(shap_ids)} vs {len(obj.prompt_ids)}); use kernel_shap instead"
            )
        calls = 0

        def score(masked: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += len(masked)
            prompts = [[int(i) for i in ids if i != REMOVED] for ids in masked]
            values, _ = evaluate_id_lists(obj, prompts, batch_size)
            if progress is not None:
                progress(min(calls, max_evals), max(calls, max_evals))
            return values.double().numpy()

        explainer = shap.PartitionExplainer(score, masker, output_names=obj.target_tokens)
        result = explainer([obj.text], max_evals=max_evals, batch_size=shap_batch, silent=True)
        if progress is not None:
            progress(calls, calls)
        values = np.asarray(result.values[0], dtype=np.float64)  # [P, rows]
        scores = values.reshape(len(obj.prompt_ids), obj.n_rows).T.copy()
        scores[:, obj.special_mask.numpy()] = 0.0
        params: dict[str, Any] = {"max_evals": max_evals, "removal": removal}
        if shap_batch != SHAP_BATCH:
            params["shap_batch"] = shap_batch
        used = baseline if removal == "replace" else None
        return Attribution(scores, params, used, extras={"model_calls": calls})
