"""Concept sensitivity (TCAV, Kim et al. 2018): does a decision move along a concept?

For a decision with choice objective f (log p(chosen | candidates), `explainers.choice`)
and a concept direction v at resid layer l, the sensitivity is the directional derivative
S = d f(h_l + eps v) / d eps at eps = 0, with v added at the decision's positions
(`explainers.concepts.steering`: by default the decision token). It is the slope at
alpha = 0 of steering's dose-response. The TCAV score of a set of decisions is the fraction
with S > 0.

One backward per decision gives the gradient at every asked layer (a zero tensor added at
each layer's resid point, differentiated), so any number of directions costs dot products:
the concept's directions from `runs` resamples of its examples, and `n_random` random
directions of the same norm. The score is significant at a layer when the concept's scores
differ from the random directions' in a two-sided Welch t-test, Bonferroni-corrected over
the layers tested (Kim et al. test against random concepts the same way).

    >>> grads = decision_gradients(objectives, layers=[6, 12])          # doctest: +SKIP
    >>> result = tcav_test(grads, layers, concept_vectors, random_vecs)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explainers.choice import ChoiceObjective
from explainers.concepts.steering import check_positions, resid_point
from explainers.explainer import Progress
from explainers.objective import Objective
from workbench.anatomy import Hooks
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.store import Store

MIN_RANDOM = 20  # the floor: fewer random directions make a weak null


def resid_gradients(obj: Objective, layers: Sequence[int]) -> list[torch.Tensor]:
    """Per layer, [rows, T, D]: d f_r / d h_l for each objective row r at every position of
    the forward (the prompt's, then the target's or candidates'); one forward, one backward
    per row. A zero tensor is added at each layer's resid point and differentiated."""
    points = {layer: resid_point(obj.lm, layer) for layer in layers}
    zeros: dict[int, torch.Tensor] = {}
    with Hooks() as hooks, torch.enable_grad():
        for layer, point in points.items():

            def add_zero(x: torch.Tensor, layer: int = layer) -> torch.Tensor:
                z = torch.zeros(x.shape, dtype=torch.float32, device=x.device, requires_grad=True)
                zeros[layer] = z
                return x + z.to(x.dtype)

            hooks.add(point, add_zero)
        values = obj.forward_embeddings(obj.input_embeddings.unsqueeze(0))[0]  # [rows]
        inputs = [zeros[layer] for layer in layers]
        rows = []
        for r in range(values.shape[0]):
            last = r == values.shape[0] - 1
            rows.append(torch.autograd.grad(values[r], inputs, retain_graph=not last))
    return [torch.cat([row[k] for row in rows]).float() for k in range(len(layers))]


def decision_gradient(
    obj: ChoiceObjective, layers: Sequence[int], positions: str = "last"
) -> np.ndarray:
    """[layers, D]: d f / d h_l summed over the chosen positions, for each layer l (so
    S = this . v for a direction v placed at those positions)."""
    check_positions(positions)
    if positions == "front":
        raise WorkbenchError("TCAV takes a direction of one vector (positions last, prompt, all)")
    prompt = int(obj.prompt_ids.numel())
    out = []
    for g in resid_gradients(obj, layers):
        g = g.sum(0)  # [T, D] (a choice objective has one row)
        if positions == "last":
            out.append(g[prompt - 1])
        elif positions == "prompt":
            out.append(g[:prompt].sum(0))
        else:
            out.append(g.sum(0))
    return torch.stack(out).cpu().numpy()


def decision_gradients(
    objectives: Sequence[ChoiceObjective],
    layers: Sequence[int],
    positions: str = "last",
    progress: Progress | None = None,
) -> np.ndarray:
    """[decisions, layers, D] (see `decision_gradient`)."""
    out = []
    for k, obj in enumerate(objectives):
        out.append(decision_gradient(obj, layers, positions))
        if progress is not None:
            progress(k + 1, len(objectives))
    return np.stack(out) if out else np.zeros((0, len(layers), 0), np.float32)


@dataclass
class LayerTCAV:
    """One layer's TCAV figures."""

    layer: int
    score: float  # the mean TCAV score of the concept's directions
    scores: list[float]  # one per resample of the concept's examples
    random_mean: float
    random_std: float
    random_scores: list[float]
    t: float
    p_value: float  # two-sided Welch t-test against the random directions
    p_corrected: float  # Bonferroni over the layers tested
    significant: bool
    mean_sensitivity: float  # mean S of the full-data direction over the decisions


@dataclass
class TCAVResult:
    """TCAV of one concept for a set of decisions, at each layer tested."""

    concept: str
    model: str
    layers: list[LayerTCAV]
    n_decisions: int
    n_positive: int
    n_negative: int
    params: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    sensitivities: list[list[float]] = field(default_factory=list)  # [decisions, layers]
    model_info: dict[str, Any] | None = None
    seconds: float = 0.0
    id: str | None = None

    @property
    def best(self) -> LayerTCAV:
        return min(self.layers, key=lambda r: (r.p_corrected, -abs(r.score - r.random_mean)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, run_id: str | None = None) -> str:
        from workbench.store.concepts import save_concept_result

        self.id = save_concept_result(store, "tcav", self.to_dict(), run_id=run_id)
        return self.id


def tcav_scores(gradients: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """gradients [N, L, D], vectors [R, L, D] -> [R, L] fraction of decisions with S > 0."""
    s = np.einsum("nld,rld->rnl", gradients.astype(np.float64), vectors.astype(np.float64))
    return (s > 0).mean(axis=1)


def welch(concept: np.ndarray, random: np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of concept vs random scores; equal constants give p 1, different
    constants p 0 (a t statistic is undefined without spread)."""
    from scipy.stats import ttest_ind

    if np.ptp(concept) == 0 and np.ptp(random) == 0:
        same = concept[0] == random[0]
        return (0.0, 1.0) if same else (float(np.sign(concept[0] - random[0]) * np.inf), 0.0)
    with warnings.catch_warnings():  # nearly constant scores: scipy warns, the p stands
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(concept, random, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def tcav_test(
    gradients: np.ndarray,
    layers: Sequence[int],
    concept_vectors: np.ndarray,
    random_vectors: np.ndarray,
    alpha: float = 0.05,
) -> list[LayerTCAV]:
    """Per layer: the concept's TCAV scores ([R, L, D] resampled directions, the first
    fitted on all examples) against random directions' ([n, L, D]), Welch two-sided,
    Bonferroni over the layers."""
    if random_vectors.shape[0] < MIN_RANDOM:
        raise WorkbenchError(
            f"TCAV needs at least {MIN_RANDOM} random directions, not {random_vectors.shape[0]}"
        )
    if gradients.shape[0] < 2:
        raise WorkbenchError(f"TCAV needs at least 2 decisions, not {gradients.shape[0]}")
    concept = tcav_scores(gradients, concept_vectors)  # [R, L]
    random = tcav_scores(gradients, random_vectors)  # [n, L]
    sens = np.einsum("nld,ld->nl", gradients, concept_vectors[0])
    out = []
    for k, layer in enumerate(layers):
        t, p = welch(concept[:, k], random[:, k])
        corrected = min(1.0, p * len(layers))
        out.append(
            LayerTCAV(
                layer=int(layer),
                score=float(concept[:, k].mean()),
                scores=concept[:, k].tolist(),
                random_mean=float(random[:, k].mean()),
                random_std=float(random[:, k].std(ddof=1)),
                random_scores=random[:, k].tolist(),
                t=t,
                p_value=p,
                p_corrected=corrected,
                significant=corrected < alpha,
                mean_sensitivity=float(sens[:, k].mean()),
            )
        )
    return out
