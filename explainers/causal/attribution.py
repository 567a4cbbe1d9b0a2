"""Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching At
Industrial Scale"; Syed et al. 2023): the first-order Taylor estimate of every patch at
once. Patching activation a of the base run with the source's a' changes the metric by
about (a' - a) . dmetric/da, the gradient taken on the base run. One forward and backward
pass on each of the clean and corrupted inputs serves every layer, position and head.

For denoising the base run is the corrupted one: restoration ~ (a_clean - a_corr) . g_corr
/ (clean - corrupted). For noising it is the clean run: restoration ~ 1 + (a_corr -
a_clean) . g_clean / (clean - corrupted). Both on the same 0 (corrupted) .. 1 (clean)
scale as exact patching.

The estimate is linear; where a patch crosses a nonlinearity (attention patterns, a
saturated softmax) it can be far off. `compare_exact=True` also runs exact patching and
records both the exact scores and the Pearson correlation with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from explainers.causal.engine import Progress
from explainers.causal.patching import CausalExplainer, to_explanation
from explainers.causal.result import PatchingExplanation
from explainers.causal.sweep import DIRECTIONS, PatchingSetup, Sweep, exact_patching
from explainers.params import Bool, choice_param
from explainers.registry import register
from workbench.anatomy import Hooks, forward_logits
from workbench.errors import WorkbenchError


def _activations_and_gradients(
    setup: PatchingSetup, embeds: torch.Tensor, names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """One forward and backward: ({name: [n, width]} activations, their gradients of the
    metric, the metric). Model parameters get no gradients."""
    lm, hooks = setup.lm, setup.hooks
    kept: dict[str, torch.Tensor] = {}
    with Hooks() as active:
        for name in names:

            def keep(x: torch.Tensor, name: str = name) -> torch.Tensor:
                # A copy of our own, so its gradient is that of this use alone.
                kept[name] = x.clone()
                return kept[name]

            active.add(hooks.point(name), keep)
        leaf = embeds.detach().unsqueeze(0).requires_grad_(True)
        logits = forward_logits(lm, leaf, setup.readout.rows, grad=True)
        value = setup.readout.values(logits)[0]
        grads = torch.autograd.grad(value, [kept[n] for n in names], allow_unused=True)
    acts = {n: kept[n][0].detach().float() for n in names}
    out = {
        n: (torch.zeros_like(acts[n]) if g is None else g[0].float()) for n, g in zip(names, grads)
    }
    return acts, out, float(value.detach())


def attribution_patching(
    setup: PatchingSetup,
    component: str = "resid",
    direction: str = "denoise",
    layers: list[int] | None = None,
) -> Sweep:
    """Estimated restoration for every (layer, prompt position), or (layer, head)."""
    hooks = setup.hooks
    hooks.check(component)
    if setup.corrupt_to_clean is not None:
        raise WorkbenchError("attribution patching needs clean and corrupted inputs of one length")
    direction = choice_param("direction", direction, DIRECTIONS)
    layer_list = hooks.check_layers(component, layers)
    names = [hooks.name(component, layer) for layer in layer_list]
    clean_acts, clean_grads, clean_value = _activations_and_gradients(setup, setup.clean, names)
    corr_acts, corr_grads, corrupt_value = _activations_and_gradients(setup, setup.corrupt, names)
    rows = []
    for name in names:
        if direction == "denoise":
            change = (clean_acts[name] - corr_acts[name]) * corr_grads[name]
        else:
            change = (corr_acts[name] - clean_acts[name]) * clean_grads[name]
        if component == "head":
            heads = hooks.n_heads or 1
            rows.append(change.view(change.shape[0], heads, -1).sum(dim=(0, 2)).cpu())
        else:
            rows.append(change.sum(-1)[: setup.n_prompt].cpu())
    estimates = torch.stack(rows).double().numpy()
    base = corrupt_value if direction == "denoise" else clean_value
    values = base + estimates
    positions = [] if component == "head" else list(range(setup.n_prompt))
    return Sweep.measured(setup, values, layer_list, positions, names, clean_value, corrupt_value)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two score maps (1.0 for two constant, equal maps)."""
    x, y = np.ravel(a), np.ravel(b)
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.allclose(x, y) else 0.0
    return float(np.corrcoef(x, y)[0, 1])


@register
class AttributionPatching(CausalExplainer):
    name = "attribution_patching"
    summary = "attribution patching: first-order estimate of every patch from two backward passes"
    param_checks = {"compare_exact": Bool()}

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        checked = super().check_params(params)
        if not checked.get("compare_exact"):
            # Only the exact run that compare_exact adds has batches and an engine.
            for name in ("batch_size", "engine"):
                if name in checked:
                    raise WorkbenchError(
                        f"{name} applies to {self.name} only with compare_exact=true"
                    )
        return checked

    def explain_objective(
        self,
        obj: Any,
        corrupt: str | None = None,
        component: str = "resid",
        direction: str = "denoise",
        layers: list[int] | None = None,
        compare_exact: bool = False,
        batch_size: int | None = None,
        engine: str = "auto",
        progress: Progress | None = None,
    ) -> PatchingExplanation:
        setup = self.corrupted_setup(obj, corrupt)
        sweep = attribution_patching(setup, component, direction, layers)
        extras: dict[str, Any] = {}
        if compare_exact:
            exact = exact_patching(
                setup,
                component,
                direction,
                sweep.layers,
                batch_size=batch_size,
                engine=engine,
                progress=progress,
            )
            extras["exact_scores"] = exact.scores.tolist()
            extras["exact_correlation"] = correlation(sweep.scores, exact.scores)
        params = {"estimate": "attribution", "compare_exact": compare_exact}
        return to_explanation(
            self.name, obj, setup, sweep, component, direction, params, corrupt, extras
        )
