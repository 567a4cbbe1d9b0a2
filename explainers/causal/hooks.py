"""Named activations of a Hugging Face transformer, found from its modules.

TransformerLens gives every activation a stable name and a patch is a function applied at
a name. Here the same names are put on a plain Hugging Face model with forward hooks on the
modules that compute them, found by looking at the model's blocks rather than by a table
per architecture:

- `blocks.{l}.hook_resid_pre`: the residual stream entering block l (input of the block);
  `blocks.{L-1}.hook_resid_post` the stream leaving the last block, before any final norm.
  The `resid` component numbers these 0 .. L (0 = the embeddings, L = after the last block),
  the numbering of the logit lens and the probes.
- `blocks.{l}.hook_attn_out`: what the attention adds to the residual stream (the output
  of its output projection: `o_proj`, `c_proj`, `dense`, `out_proj`).
- `blocks.{l}.hook_mlp_out`: what the MLP adds (the MLP module's output, or BERT's
  `output.dense`).
- `blocks.{l}.attn.hook_z`: the heads' outputs before the output projection, shaped
  [positions, heads x head_dim]; head h is the slice h*head_dim .. (h+1)*head_dim.

All are read and written in eval mode, where dropout is the identity, so an `attn_out`
activation is exactly the attention's contribution to the residual sum (also in post-LN
BERT, where it is added before the layer norm).

    >>> from explainers.causal.hooks import model_hooks           # doctest: +SKIP
    >>> hooks = model_hooks(lm)
    >>> hooks.names("resid")[:2]
    ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch

from explainers.probing.residual import decoder_parts
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

COMPONENTS = ("resid", "attn", "mlp", "head")
ATTN_PROJECTIONS = ("o_proj", "c_proj", "out_proj", "dense", "wo")
MLP_MODULES = ("mlp", "feed_forward", "ffn", "mlp_block")
MLP_PROJECTIONS = ("output.dense", "fc2")  # MLPs without a module of their own (BERT, OPT)
HEAD_COUNTS = ("num_attention_heads", "n_head", "num_heads")
_NAME = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|attn\.hook_z)$"
)
# The shorter spellings some write for the same points.
ALIASES = {"attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "attn.head": "attn.hook_z"}


@dataclass(frozen=True)
class HookPoint:
    """One named activation: where it lives and how a hook reaches it.

    `kind` is "input" (the module's first input: a block's hidden states, a projection's
    input) or "output" (the module's output, or the first element of a tuple output).
    `groups` splits the last dimension for patching: 1, or the number of heads for z.
    """

    name: str
    module: torch.nn.Module
    kind: str
    block: int  # the block that computes (or, for resid_pre, receives) the activation
    groups: int = 1


@dataclass
class ModelHooks:
    """The hook points of one model, found once from its modules."""

    lm: LoadedModel
    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module | None
    unembed: torch.nn.Module | None
    attn_proj: list[torch.nn.Module | None]
    mlp_out: list[torch.nn.Module | None]
    n_heads: int | None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @cached_property
    def head_dim(self) -> int | None:
        proj = self.attn_proj[0]
        if proj is None or not self.n_heads:
            return None
        width = getattr(proj, "in_features", None) or getattr(proj, "nx", None)
        if not width or width % self.n_heads:
            return None
        return int(width) // self.n_heads

    def has(self, component: str) -> bool:
        if component == "resid":
            return True
        if component == "attn":
            return all(m is not None for m in self.attn_proj)
        if component == "mlp":
            return all(m is not None for m in self.mlp_out)
        if component == "head":
            return self.has("attn") and self.head_dim is not None
        return False

    def check(self, component: str) -> None:
        """A one-line error for an unknown component or one this model lacks."""
        if component not in COMPONENTS:
            raise WorkbenchError(
                f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}"
            )
        if not self.has(component):
            block = self.blocks[0]
            children = ", ".join(name for name, _ in block.named_children())
            what = {
                "attn": "an attention output projection",
                "mlp": "an MLP",
                "head": "attention heads of a known size",
            }[component]
            raise WorkbenchError(
                f"component {component!r} is not available for {type(self.lm.model).__name__}: "
                f"cannot find {what} in its blocks ({type(block).__name__} has {children})"
            )

    def layers(self, component: str) -> list[int]:
        """The layer numbers of a component: 0 .. L for resid, 0 .. L-1 for the others."""
        self.check(component)
        return list(range(self.n_layers + (1 if component == "resid" else 0)))

    def name(self, component: str, layer: int) -> str:
        """The hook name of `component` at `layer` (resid layer L is the last block's output)."""
        if component == "resid":
            if layer == self.n_layers:
                return f"blocks.{layer - 1}.hook_resid_post"
            return f"blocks.{layer}.hook_resid_pre"
        suffix = {"attn": "hook_attn_out", "mlp": "hook_mlp_out", "head": "attn.hook_z"}
        return f"blocks.{layer}.{suffix[component]}"

    def names(self, component: str) -> list[str]:
        return [self.name(component, layer) for layer in self.layers(component)]

    def point(self, name: str) -> HookPoint:
        """The hook point for a TransformerLens-style name (short aliases accepted)."""
        for short, full in ALIASES.items():
            if name.endswith("." + short):
                name = name[: -len(short)] + full
        match = _NAME.match(name)
        if match is None:
            raise WorkbenchError(
                f"unknown hook name {name!r}; names look like blocks.3.hook_resid_pre, "
                "blocks.3.hook_attn_out, blocks.3.hook_mlp_out or blocks.3.attn.hook_z"
            )
        block, what = int(match.group(1)), match.group(2)
        if block >= self.n_layers:
            raise WorkbenchError(
                f"hook {name!r}: the model has {self.n_layers} blocks (0 .. {self.n_layers - 1})"
            )
        if what == "hook_resid_pre":
            return HookPoint(name, self.blocks[block], "input", block)
        if what == "hook_resid_post":
            return HookPoint(name, self.blocks[block], "output", block)
        if what == "hook_attn_out":
            self.check("attn")
            return HookPoint(name, self.attn_proj[block], "output", block)
        if what == "hook_mlp_out":
            self.check("mlp")
            return HookPoint(name, self.mlp_out[block], "output", block)
        self.check("head")
        return HookPoint(name, self.attn_proj[block], "input", block, groups=self.n_heads)


def model_hooks(lm: LoadedModel) -> ModelHooks:
    """Find the blocks, attention output projections and MLPs of `lm`'s transformer."""
    try:
        parts = decoder_parts(lm)
    except WorkbenchError:
        raise WorkbenchError(
            f"activation patching does not support {type(lm.model).__name__}: cannot find "
            "its transformer blocks (Llama-, GPT-2- and BERT-style models are supported)"
        ) from None
    if getattr(lm.model.config, "is_encoder_decoder", False):
        raise WorkbenchError(
            f"activation patching does not support encoder-decoder models "
            f"({type(lm.model).__name__})"
        )
    config = lm.model.config
    n_heads = next((getattr(config, k) for k in HEAD_COUNTS if getattr(config, k, None)), None)
    return ModelHooks(
        lm=lm,
        blocks=parts.blocks,
        final_norm=parts.final_norm,
        unembed=parts.unembed,
        attn_proj=[_attention_projection(b, _width(lm)) for b in parts.blocks],
        mlp_out=[_mlp_output(b) for b in parts.blocks],
        n_heads=int(n_heads) if n_heads else None,
    )


def _width(lm: LoadedModel) -> int:
    return int(lm.embeddings.weight.shape[1])


def _out_features(module: torch.nn.Module) -> int | None:
    return getattr(module, "out_features", None) or getattr(module, "nf", None)


def _attention_projection(block: torch.nn.Module, width: int) -> torch.nn.Module | None:
    """The self-attention's output projection: the first module named like one inside the
    block's attention child (not a norm, not cross-attention) that maps back to `width`."""
    for name, child in block.named_children():
        low = name.lower()
        if ("attn" not in low and "attention" not in low) or "norm" in low or "cross" in low:
            continue
        if low.startswith("ln"):
            continue
        for sub_name, sub in child.named_modules():
            if sub_name.rsplit(".", 1)[-1] in ATTN_PROJECTIONS and _out_features(sub) == width:
                return sub
        return None
    return None


def _mlp_output(block: torch.nn.Module) -> torch.nn.Module | None:
    children = dict(block.named_children())
    for name in MLP_MODULES:
        if name in children:
            return children[name]
    modules = dict(block.named_modules())
    for path in MLP_PROJECTIONS:
        if path in modules:
            return modules[path]
    return None
