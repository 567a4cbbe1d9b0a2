"""Steering: alpha times a direction added to the residual stream, and what the decision
does as alpha grows.

`added` is the one place a direction is written into the model: a hook at the resid
point of the direction's layer (`workbench.anatomy`: `blocks.{l}.hook_resid_pre`, or the
last block's `hook_resid_post` for layer L) that adds a tensor to the activation. A
decision among candidates runs as one sequence, the prompt then the candidates packed
after it (`explainers.choice`), so where the direction goes is a set of positions of that
sequence:

- ``last``: the decision token, the prompt's last (the state every candidate is read from);
- ``prompt``: every prompt position;
- ``all``: every position, the candidates' too (what CAA and the steering-vectors library
  do: the whole forward, generated tokens included);
- ``front``: a per-position direction (ActAdd) at the prompt's first positions.

`dose_response` runs every (direction, alpha) as one row of a batch: the prompt's forward
is shared by nothing, but a whole curve is one forward. `steered` keeps a direction in the
model for a block of code (a whole played episode): there positions are ``all``, the only
placement that does not depend on how a caller splits its forwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explainers.choice import ChoiceObjective
from explainers.concepts.directions import ConceptDirection
from workbench.anatomy import Hooks, model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

POSITIONS = ("last", "prompt", "all", "front")


def check_positions(positions: str, direction: ConceptDirection | None = None) -> None:
    if positions not in POSITIONS:
        raise WorkbenchError(f"positions must be {', '.join(POSITIONS)}, not {positions!r}")
    if direction is None:
        return
    if direction.per_position and positions != "front":
        raise WorkbenchError(
            f"direction {direction.concept!r} has one vector per position (ActAdd): it goes "
            "at the prompt's front (positions front)"
        )
    if positions == "front" and not direction.per_position:
        raise WorkbenchError("positions front takes a per-position (ActAdd) direction")


def check_alphas(alphas: Sequence[Any]) -> list[float]:
    """Alphas as floats, or one line naming the one that is not a finite number."""
    out = []
    for a in alphas:
        try:
            value = float(a)
        except (TypeError, ValueError):
            raise WorkbenchError(f"alpha {a!r} is not a number") from None
        if not np.isfinite(value):
            raise WorkbenchError(f"alpha {a!r} is not a finite number")
        out.append(value)
    if not out:
        raise WorkbenchError("give at least one alpha")
    return out


def placement(vector: torch.Tensor, positions: str, prompt_length: int, total: int) -> torch.Tensor:
    """[total, D]: `vector` ([D], or [n, D] for front) at the chosen positions, zero elsewhere."""
    out = torch.zeros((total, vector.shape[-1]), dtype=torch.float32)
    v = vector.float()
    if positions == "last":
        out[prompt_length - 1] = v
    elif positions == "prompt":
        out[:prompt_length] = v
    elif positions == "all":
        out[:] = v
    else:  # front
        n = v.shape[0]
        if n > prompt_length:
            raise WorkbenchError(
                f"the ActAdd direction covers {n} positions; the prompt has {prompt_length}"
            )
        out[:n] = v
    return out


def resid_point(lm: LoadedModel, layer: int):
    """The hook point of resid layer `layer` (checked against the model's layers)."""
    anatomy = model_anatomy(lm)
    (layer,) = anatomy.check_layers("resid", [layer])
    return anatomy.point(anatomy.name("resid", layer))


@contextmanager
def added(lm: LoadedModel, additions: dict[int, torch.Tensor]) -> Iterator[None]:
    """Inside `with`, every forward adds `additions[layer]` (broadcast against the
    activation [B, n, D], in its dtype) at each resid layer's point."""
    points = {layer: resid_point(lm, layer) for layer in additions}
    with Hooks() as hooks:
        for layer, delta in additions.items():

            def add(x: torch.Tensor, d: torch.Tensor = delta) -> torch.Tensor:
                return x + d.to(device=x.device, dtype=x.dtype)

            hooks.add(points[layer], add)
        yield


@contextmanager
def steered(lm: LoadedModel, direction: ConceptDirection, alpha: float) -> Iterator[None]:
    """`alpha` times `direction` at every position of every forward inside `with`."""
    if direction.per_position:
        raise WorkbenchError(
            "an ActAdd direction goes at a prompt's front; steering whole episodes takes a "
            "direction of one vector (means, probe or caa)"
        )
    direction.check_model(lm, model_anatomy(lm).n_layers + 1)
    delta = float(alpha) * torch.from_numpy(direction.vector)
    with added(lm, {direction.layer: delta}):
        yield


@dataclass
class DoseResponse:
    """One decision's choice distribution as alpha grows: `probs[d][a][k]` for direction d
    (0 = the concept, then the random controls), alpha a and candidate k."""

    candidates: list[str]
    chosen: int
    alphas: list[float]
    directions: list[str]
    probs: np.ndarray  # [directions, alphas, K]
    params: dict[str, Any] = field(default_factory=dict)

    def of(self, candidate: str | int | None = None) -> np.ndarray:
        """[directions, alphas]: the probability of one candidate (default: the chosen)."""
        k = self.chosen if candidate is None else candidate
        if isinstance(k, str):
            k = self.candidates.index(k)
        return self.probs[:, :, int(k)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "chosen": self.chosen,
            "alphas": self.alphas,
            "directions": self.directions,
            "probs": self.probs.tolist(),
            "params": self.params,
        }


def dose_response(
    obj: ChoiceObjective,
    directions: Sequence[ConceptDirection],
    alphas: Sequence[float],
    positions: str = "all",
    batch_size: int = 16,
) -> DoseResponse:
    """The candidates' probabilities for every direction (all at one layer) and alpha."""
    lm = obj.lm
    alphas = check_alphas(alphas)
    if not directions:
        raise WorkbenchError("give at least one direction")
    layer = directions[0].layer
    anatomy = model_anatomy(lm)
    for d in directions:
        check_positions(positions, d)
        d.check_model(lm, anatomy.n_layers + 1)
        if d.layer != layer:
            raise WorkbenchError("the directions of one dose-response share a layer")
    prompt = int(obj.prompt_ids.numel())
    total = prompt + obj.packed.width
    rows = [
        alpha * placement(torch.from_numpy(d.vector), positions, prompt, total)
        for d in directions
        for alpha in alphas
    ]
    probs = []
    embeds = obj.input_embeddings.unsqueeze(0)
    for start in range(0, len(rows), max(1, batch_size)):
        batch = torch.stack(rows[start : start + batch_size])
        with added(lm, {layer: batch}), torch.no_grad():
            logp = obj.row_log_probs(embeds.expand(batch.shape[0], -1, -1))
        probs.append(logp[:, 0].float().exp().cpu())
    table = torch.cat(probs).view(len(directions), len(alphas), -1).numpy()
    return DoseResponse(
        candidates=list(obj.candidates),
        chosen=obj.chosen,
        alphas=alphas,
        directions=[d.concept for d in directions],
        probs=table,
        params={"layer": layer, "positions": positions, "objective": obj.kind},
    )
