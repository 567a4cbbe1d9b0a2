"""The residual stream, layer by layer: what the logit lens reads and the probes train on.

Layer 0 is the token embeddings (the residual before the first block); layer l is the
residual after block l, before any final norm, so layer L (the last) passed through the
model's final norm and unembedding gives exactly the model's logits. (Hugging Face's
`output_hidden_states` does not serve here: its last entry already has the final norm
applied, the others do not.)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

BLOCK_LISTS = ("layers", "h", "layer", "blocks")
FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")


@dataclass
class DecoderParts:
    """Where a model keeps its blocks, its final norm and its unembedding."""

    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module | None
    unembed: torch.nn.Module | None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def decoder_parts(lm: LoadedModel) -> DecoderParts:
    base = lm.model.base_model
    for container in (base, getattr(base, "encoder", None), getattr(base, "decoder", None)):
        if container is None:
            continue
        for name in BLOCK_LISTS:
            blocks = getattr(container, name, None)
            if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
                norm = next((getattr(base, n) for n in FINAL_NORMS if hasattr(base, n)), None)
                unembed = lm.model.get_output_embeddings() if lm.kind == "causal" else None
                return DecoderParts(blocks, norm, unembed)
    raise WorkbenchError(
        f"cannot find the transformer blocks of {type(lm.model).__name__} (looked for "
        f"{', '.join(BLOCK_LISTS)}); the logit lens and probes need a standard HF layout"
    )


def check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """Validate user layer numbers (0 = embeddings .. n_layers; negative from the end)."""
    top = n_layers
    if layers is None:
        return list(range(top + 1))
    out = []
    for layer in layers:
        if not -(top + 1) <= layer <= top:
            raise WorkbenchError(
                f"layer {layer} is out of range: the model has {n_layers} layers, so probe "
                f"layers run 0 (embeddings) .. {top}"
            )
        out.append(layer % (top + 1))
    return sorted(set(out))


class _Done(Exception):
    """Raised by the hook of the deepest asked layer: later blocks need not run."""


def residual_stream(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    layers: list[int] | None = None,
    cache: Any = None,
) -> dict[int, torch.Tensor]:
    """{layer: [B, n, D] residual} for the asked layers (all by default), on the model's device.

    Runs the base model only (no unembedding) and stops after the deepest asked layer. With
    `cache` (a transformers Cache of a shared prefix) the ids continue that prefix; a fresh
    empty Cache passed in is filled with this pass's keys and values.
    """
    parts = decoder_parts(lm)
    wanted = set(check_layers(layers, parts.n_layers))
    deepest = max(wanted)
    captured: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, kwargs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if index in wanted:
                # On the input's device, also for a model split over GPUs (--device-map).
                captured[index] = hidden.detach().to(lm.device)
            if index == deepest:
                raise _Done

        return hook

    def keep_input(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        captured[0] = hidden.detach()
        if deepest == 0:
            raise _Done

    handles = [parts.blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [
        block.register_forward_hook(keep(i + 1), with_kwargs=True)
        for i, block in enumerate(parts.blocks)
        if i + 1 <= deepest
    ]
    kwargs: dict[str, Any] = {}
    if cache is not None:
        kwargs[_cache_argument(lm)] = cache
        kwargs["use_cache"] = True
    try:
        with torch.no_grad():
            mask = None if attention_mask is None else attention_mask.to(lm.device)
            lm.model.base_model(input_ids=input_ids.to(lm.device), attention_mask=mask, **kwargs)
    except _Done:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return {layer: captured[layer] for layer in sorted(wanted)}


def _cache_argument(lm: LoadedModel) -> str:
    # transformers 5 renames `past_key_values` to `cache` model by model.
    params = inspect.signature(lm.model.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
