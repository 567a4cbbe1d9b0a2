"""A decision explained in SAE features: attribution of its objective, and exact ablation.

At the SAE's layer, each prompt position's residual x is split into the SAE's features and
its error: x = sum_j f_j W_dec[j] + b_dec + e. Scaling every feature and the error by alpha
from 0 to 1 moves the stream from b_dec (the SAE's "nothing") to x. Integrated gradients
along that path (Gauss-Legendre nodes) give each feature a mass, summed over the prompt's
positions, and the error one mass; together they equal the objective's change between the
two ends (completeness, reported as the relative gap; it shrinks with `steps`). With one
node at alpha = 1 this is gradient x activation.

Ablation is exact: feature j is removed at every position (x - f_j W_dec[j], the error
kept), and the objective and the decision (which candidate wins) are read again.

Edits go through the one hook layer (`workbench.anatomy.Hooks` at the resid point), so any
feature can also be clamped (`feature_edit`) or steered along its decoder row
(`explainers.concepts.steering.added`). Each prompt's first position keeps its own state,
as in training.

    >>> result = feature_attribution(obj, sae, layer=15, steps=16)     # doctest: +SKIP
    >>> result.top[:3], result.completeness_error
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from explainers.choice import ChoiceObjective
from explainers.concepts.steering import resid_point
from explainers.objective import Objective
from explainers.sae.model import SparseAutoencoder
from workbench.anatomy import Hooks
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel


@dataclass
class Ablation:
    """The decision with one feature removed: the objective's change, and whether another
    candidate then wins."""

    feature: int
    activation: float  # the feature's summed activation over the prompt
    delta: float
    choice: str | None  # the candidate that wins without it (a choice among candidates)
    flipped: bool


@dataclass
class FeatureAttribution:
    """Masses of the features that fired in the prompt (`features`, `masses`, `activations`:
    summed over positions), the error's mass, each prompt position's mass (its features'
    and its error's; the first position's is 0), and the objective at both ends."""

    features: list[int]
    masses: list[float]
    activations: list[float]
    error_mass: float
    value: float  # the objective on the model's own stream
    baseline: float  # with every feature and the error at zero (the stream at b_dec)
    steps: int
    positions: list[float] = field(default_factory=list)
    ablations: list[Ablation] = field(default_factory=list)

    @property
    def change(self) -> float:
        return self.value - self.baseline

    @property
    def completeness_error(self) -> float:
        """|sum of masses + error mass - change| / |change|."""
        gap = sum(self.masses) + self.error_mass - self.change
        return abs(gap) / max(abs(self.change), 1e-12)

    def top(self, n: int = 10) -> list[tuple[int, float]]:
        """The `n` features of largest |mass|: [(feature, mass)]."""
        order = np.argsort(-np.abs(self.masses), kind="stable")[:n]
        return [(self.features[i], self.masses[i]) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "change": self.change,
            "completeness_error": self.completeness_error,
        }


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the `steps`-point Gauss-Legendre rule on [0, 1]; one step is the
    point alpha = 1 with weight 1 (gradient x activation)."""
    if steps < 1:
        raise WorkbenchError(f"steps must be at least 1, not {steps}")
    if steps == 1:
        return np.ones(1), np.ones(1)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def prompt_stream(obj: Objective, layer: int) -> torch.Tensor:
    """[P, D] the residual stream entering resid layer `layer` at the prompt's positions
    (float32), read in one forward of the decision."""
    kept: list[torch.Tensor] = []
    prompt = int(obj.prompt_ids.numel())
    with Hooks() as hooks, torch.no_grad():
        hooks.add(resid_point(obj.lm, layer), lambda x: kept.append(x[0, :prompt].float()))
        obj.forward_embeddings(obj.input_embeddings.unsqueeze(0))
    return kept[0]


def check_objective(obj: Objective) -> None:
    if obj.n_rows != 1:
        raise WorkbenchError(
            f"feature attribution explains one value: a choice among candidates or one "
            f"target token, not {obj.n_rows} target rows"
        )


def feature_attribution(
    obj: Objective,
    sae: SparseAutoencoder,
    layer: int,
    steps: int = 16,
    ablate: int = 10,
) -> FeatureAttribution:
    """The decision's objective attributed to the SAE's features at `layer` and to its
    error (see the module); the `ablate` features of largest |mass| are also removed one
    at a time."""
    check_objective(obj)
    lm = obj.lm
    sae = sae.to(lm.device)
    x = prompt_stream(obj, layer)[1:]  # [P-1, D]; the first position keeps its state
    with torch.no_grad():
        f = sae.encode(x)
        error = x - sae.decode(f)
    active = torch.nonzero(f.abs().sum(0) > 0).flatten()  # the features that fired
    f_active = f[:, active]  # [P-1, A]
    w_active = sae.W_dec[active].detach()  # [A, D]
    nodes, weights = gauss_legendre(steps)
    alphas = torch.tensor(nodes, dtype=torch.float32, device=lm.device)
    z = (alphas[:, None, None] * f_active).requires_grad_(True)  # [S, P-1, A]
    e = (alphas[:, None, None] * error).requires_grad_(True)  # [S, P-1, D]
    b_dec = sae.b_dec.detach()

    def rebuilt(stream: torch.Tensor) -> torch.Tensor:
        inside = z @ w_active + b_dec + e
        return torch.cat([stream[:, :1], inside.to(stream.dtype), stream[:, 1 + len(x) :]], 1)

    embeds = obj.input_embeddings.unsqueeze(0).expand(steps, -1, -1)
    with Hooks() as hooks, torch.enable_grad():
        hooks.add(resid_point(lm, layer), rebuilt)
        values = obj.forward_embeddings(embeds)[:, 0]  # [S]
        total = (values * torch.tensor(weights, dtype=values.dtype, device=values.device)).sum()
        grad_z, grad_e = torch.autograd.grad(total, [z, e])
    per_feature = f_active * grad_z.sum(0)  # [P-1, A]
    per_error = (error * grad_e.sum(0)).sum(1)  # [P-1]
    masses = per_feature.sum(0)
    error_mass = float(per_error.sum())
    ends = _values(obj, sae, layer, len(x), [("all", 0.0), ("none", 0.0)])
    result = FeatureAttribution(
        features=active.tolist(),
        masses=masses.tolist(),
        activations=f_active.sum(0).tolist(),
        error_mass=error_mass,
        value=ends[0][0],
        baseline=ends[1][0],
        steps=steps,
        positions=[0.0, *(per_feature.sum(1) + per_error).tolist()],
    )
    result.ablations = ablate_features(obj, sae, layer, [j for j, _ in result.top(ablate)], f)
    return result


def ablate_features(
    obj: Objective,
    sae: SparseAutoencoder,
    layer: int,
    features: Sequence[int],
    f: torch.Tensor | None = None,
) -> list[Ablation]:
    """The decision with each of `features` removed in turn (one batched forward)."""
    if not features:
        return []
    if f is None:
        with torch.no_grad():
            f = sae.encode(prompt_stream(obj, layer)[1:].to(obj.lm.device))
    clean, *rows = _values(
        obj, sae, layer, len(f), [("all", 0.0), *(("without", j) for j in features)], f
    )
    out = []
    for j, (value, winner) in zip(features, rows):
        out.append(
            Ablation(
                feature=int(j),
                activation=float(f[:, j].sum()),
                delta=value - clean[0],
                choice=None if winner < 0 else obj.candidates[winner],  # type: ignore[attr-defined]
                flipped=winner >= 0 and winner != obj.chosen,  # type: ignore[attr-defined]
            )
        )
    return out


def _values(
    obj: Objective,
    sae: SparseAutoencoder,
    layer: int,
    length: int,
    edits: Sequence[tuple[str, float]],
    f: torch.Tensor | None = None,
) -> list[tuple[float, int]]:
    """(objective, winning candidate or -1) for each edit of the prompt's stream at
    `layer`: ("all", _) the model's own, ("none", _) b_dec, ("without", j) feature j
    removed. The winner is read where the objective is a choice among candidates."""
    w_dec = sae.W_dec.detach()

    def edit(stream: torch.Tensor) -> torch.Tensor:
        out = stream.clone()
        for row, (kind, j) in enumerate(edits):
            if kind == "none":
                out[row, 1 : 1 + length] = sae.b_dec.to(out.dtype)
            elif kind == "without":
                assert f is not None
                removed = f[:, int(j), None] * w_dec[int(j)]
                out[row, 1 : 1 + length] -= removed.to(out.dtype)
        return out

    embeds = obj.input_embeddings.unsqueeze(0).expand(len(edits), -1, -1)
    with Hooks() as hooks, torch.no_grad():
        hooks.add(resid_point(obj.lm, layer), edit)
        if not isinstance(obj, ChoiceObjective):
            return [(float(v), -1) for v in obj.forward_embeddings(embeds)[:, 0]]
        scores = obj.candidate_scores(embeds)  # [E, K]
    logp = torch.log_softmax(scores.float(), dim=-1).unsqueeze(1)
    values = obj.values_from_log_probs(logp)[:, 0]
    return [(float(v), int(s.argmax())) for v, s in zip(values, scores)]


@contextmanager
def feature_edit(
    lm: LoadedModel, sae: SparseAutoencoder, layer: int, values: dict[int, float]
) -> Iterator[None]:
    """Inside `with`, every forward sets feature j to `values[j]` at every position but the
    first (0 ablates it), changing the stream by (new - old) W_dec[j] and keeping the rest
    of the SAE's reading, its error included."""
    features = torch.tensor(list(values), dtype=torch.long)
    targets = torch.tensor(list(values.values()), dtype=torch.float32)

    def edit(stream: torch.Tensor) -> torch.Tensor:
        x = stream[:, 1:].float()
        old = sae.encode(x)[..., features.to(x.device)]
        w = sae.W_dec[features.to(x.device)].detach()
        delta = (targets.to(x.device) - old) @ w
        return torch.cat([stream[:, :1], (x + delta).to(stream.dtype)], 1)

    with Hooks() as hooks, torch.no_grad():
        hooks.add(resid_point(lm, layer), edit)
        yield
