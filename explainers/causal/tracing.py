"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT",
ROME): corrupt some input tokens with Gaussian noise, then restore one clean state at a
time and see which states carry the answer past the corruption.

The corrupted run adds noise of `noise` x the standard deviation of the embedding matrix
(3 in the paper) to the embeddings of `noise_tokens`, drawn from a seeded generator; the
result averages `samples` draws. Each cell restores the clean run's `component` at one
prompt position and a window of `window` layers centred on the row's layer (the paper uses
1 for the residual stream and 10 for MLP and attention), and reports the normalised
restoration (mean patched value - mean corrupted) / (clean - mean corrupted).

    >>> exp = explain(lm, "The Eiffel Tower is in the city of", target=" Paris",   # doctest: +SKIP
    ...               method="causal_tracing", noise_tokens=[1, 2, 3], samples=10)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explainers.causal.engine import Patch, Patcher, Progress
from explainers.causal.patching import CausalExplainer, to_explanation
from explainers.causal.result import PatchingExplanation
from explainers.causal.sweep import PatchingSetup, Sweep, readout_for, setup_from_ids
from explainers.params import Float, Int, IntList
from explainers.registry import register
from workbench.anatomy import capture
from workbench.errors import WorkbenchError

TRACE_COMPONENTS = ("resid", "attn", "mlp")


def check_noise_tokens(tokens: list[int] | None, n_prompt: int) -> list[int]:
    if not tokens:
        raise WorkbenchError("causal tracing needs noise_tokens: the positions to corrupt")
    out = []
    for t in tokens:
        if not -n_prompt <= t < n_prompt:
            raise WorkbenchError(
                f"noise token {t} is out of range: the input has {n_prompt} tokens "
                f"(0 .. {n_prompt - 1})"
            )
        out.append(t % n_prompt)
    return sorted(set(out))


def noised_embeddings(
    setup: PatchingSetup, tokens: list[int], scale: float, samples: int, seed: int
) -> list[torch.Tensor]:
    """`samples` copies of the clean embeddings with seeded noise on `tokens`."""
    std = float(setup.lm.embeddings.weight.detach().float().std())
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        noise = torch.randn((len(tokens), setup.clean.shape[1]), generator=gen) * (scale * std)
        embeds = setup.clean.clone()
        embeds[tokens] += noise.to(embeds.device, embeds.dtype)
        out.append(embeds)
    return out


def window_layers(layer: int, window: int, valid: list[int]) -> list[int]:
    """The `window` layers centred on `layer` (clipped to the component's layers)."""
    low = layer - window // 2
    return [x for x in range(low, low + window) if x in valid]


def causal_trace(
    setup: PatchingSetup,
    noise_tokens: list[int],
    *,
    component: str = "resid",
    samples: int = 10,
    window: int = 1,
    noise: float = 3.0,
    seed: int = 0,
    layers: list[int] | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    progress: Progress | None = None,
) -> Sweep:
    """Restoration of the clean state per (layer, prompt position), averaged over noise."""
    hooks = setup.hooks
    if component not in TRACE_COMPONENTS:
        raise WorkbenchError(
            f"causal tracing restores resid, attn or mlp states, not {component!r}"
        )
    tokens = check_noise_tokens(noise_tokens, setup.n_prompt)
    valid = hooks.layers(component)
    layer_list = hooks.check_layers(component, layers)
    needed = sorted({x for layer in layer_list for x in window_layers(layer, window, valid)})
    names = {x: hooks.name(component, x) for x in needed}
    captured = capture(setup.lm, list(names.values()), inputs_embeds=setup.clean.unsqueeze(0))
    clean_acts = {name: act[0] for name, act in captured.activations.items()}
    clean_value = setup.value(setup.clean)
    positions = list(range(setup.n_prompt))
    rows = [
        [Patch(names[x], p) for x in window_layers(layer, window, valid)]
        for layer in layer_list
        for p in positions
    ]
    runs = noised_embeddings(setup, tokens, noise, samples, seed)
    total = np.zeros(len(rows))
    corrupted = []
    for k, embeds in enumerate(runs):
        corrupted.append(setup.value(embeds))
        patcher = Patcher(setup.lm, hooks, setup.readout, embeds, clean_acts, engine, batch_size)

        def step(done: int, count: int, k: int = k) -> None:
            if progress is not None:
                progress(k * count + done, samples * count)

        total += patcher.values(rows, step)
    values = (total / samples).reshape(len(layer_list), len(positions))
    corrupt_value = float(np.mean(corrupted))
    hook_names = [names[layer] for layer in layer_list]
    return Sweep.measured(
        setup, values, layer_list, positions, hook_names, clean_value, corrupt_value
    )


@register
class CausalTracing(CausalExplainer):
    name = "causal_tracing"
    summary = "causal tracing (ROME): restore clean states into a run with noised tokens"

    param_checks = {
        "noise_tokens": IntList(),
        "samples": Int(min=1),
        "window": Int(min=1),
        "noise": Float(low=0.0),
        "seed": Int(min=None),
    }

    def explain_objective(
        self,
        obj: Any,
        noise_tokens: list[int] | None = None,
        component: str = "resid",
        samples: int = 10,
        window: int = 1,
        noise: float = 3.0,
        seed: int = 0,
        layers: list[int] | None = None,
        batch_size: int | None = None,
        engine: str = "auto",
        progress: Progress | None = None,
    ) -> PatchingExplanation:
        ids = obj.prompt_ids.tolist()
        setup = setup_from_ids(obj.lm, ids, ids, readout_for(obj))
        tokens = check_noise_tokens(noise_tokens, setup.n_prompt)
        sweep = causal_trace(
            setup,
            tokens,
            component=component,
            samples=samples,
            window=window,
            noise=noise,
            seed=seed,
            layers=layers,
            batch_size=batch_size,
            engine=engine,
            progress=progress,
        )
        params = {
            "estimate": "exact",
            "noise_tokens": tokens,
            "samples": samples,
            "window": window,
            "noise": noise,
            "seed": seed,
        }
        exp = to_explanation(self.name, obj, setup, sweep, component, "denoise", params, None)
        exp.corrupt_tokens = [
            f"{t}+noise" if i in tokens else t for i, t in enumerate(setup.input_tokens)
        ]
        return exp
