"""One anatomy of a Hugging Face transformer: where its parts are, the names of its
activations, and the one way to read and write them.

An `Architecture` describes a family of models once, as attribute paths: where the block
list is, the final norm, and within a block the attention, its output projection, the MLP
and the query/key/value projections. Built-in descriptions cover Llama-style models
(SmolLM2, Mistral, Qwen2), GPT-2 and BERT/RoBERTa; any other model is described from its
modules (`discover`), and where that fails the error says how to describe it:

    >>> from workbench.anatomy import Architecture, register_architecture   # doctest: +SKIP
    >>> register_architecture("my-model", Architecture(blocks="decoder.stack",
    ...     attn_out="attention.out", mlp_out="feed_forward", final_norm="decoder.norm"))

Activations get TransformerLens's names, put on the plain modules with forward hooks:

- `blocks.{l}.hook_resid_pre`: the residual stream entering block l;
  `blocks.{l}.hook_resid_post` the stream leaving it (before any final norm). The `resid`
  component numbers these 0 .. L (0 = the embeddings, L = after the last block), so layer
  L through the final norm and the unembedding gives the model's logits.
- `blocks.{l}.hook_attn_out` / `hook_mlp_out`: what the attention / the MLP adds to the
  residual stream (the output of the attention's output projection; of the MLP module).
- `blocks.{l}.attn.hook_z`: the heads' outputs before the output projection, shaped
  [positions, heads x head_dim]; `attn.hook_q`, `attn.hook_k`, `attn.hook_v`: the
  projections' outputs (where the architecture has separate ones).

All are read and written in eval mode, where dropout is the identity, so an `attn_out`
activation is exactly the attention's contribution to the residual sum (also in post-LN
BERT, where it is added before the layer norm).

Reading: `capture` (stops after the deepest block it needs unless logits are asked for).
Writing: `Hooks`, whose functions may return a replacement for the activation.

    >>> anatomy = model_anatomy(lm)                                   # doctest: +SKIP
    >>> anatomy.names("resid")[:2]
    ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre']
    >>> capture(lm, ["blocks.1.hook_attn_out"], input_ids=ids).activations
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prefix_cache import cache_argument

COMPONENTS = ("resid", "attn", "mlp", "head")


@dataclass(frozen=True)
class Architecture:
    """Where one family of transformers keeps its parts, as dotted attribute paths.

    `blocks` and `final_norm` are read from the model's base model (Hugging Face's
    `base_model`: the `LlamaModel` inside `LlamaForCausalLM` and inside
    `LlamaForSequenceClassification`), the others from one block. A part a family lacks is
    None; the hook points that need it are then unavailable, with a one-line error.
    """

    blocks: str  # the ModuleList of blocks, e.g. "layers", "h", "encoder.layer"
    attn_out: str | None = None  # the attention's output projection: "self_attn.o_proj"
    mlp_out: str | None = None  # the MLP, or its output projection ("output.dense")
    final_norm: str | None = None  # the norm after the last block, e.g. "norm", "ln_f"
    attention: str | None = None  # the self-attention module, e.g. "self_attn"
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    head_counts: tuple[str, ...] = ("num_attention_heads", "n_head", "num_heads")
    kv_head_counts: tuple[str, ...] = ("num_key_value_heads",)


LLAMA = Architecture(
    blocks="layers",
    attn_out="self_attn.o_proj",
    mlp_out="mlp",
    final_norm="norm",
    attention="self_attn",
    q_proj="self_attn.q_proj",
    k_proj="self_attn.k_proj",
    v_proj="self_attn.v_proj",
)
GPT2 = Architecture(  # one fused c_attn: no separate q/k/v projections
    blocks="h", attn_out="attn.c_proj", mlp_out="mlp", final_norm="ln_f", attention="attn"
)
BERT = Architecture(  # post-LN: no final norm; the MLP is intermediate.dense -> output.dense
    blocks="encoder.layer",
    attn_out="attention.output.dense",
    mlp_out="output.dense",
    attention="attention",
    q_proj="attention.self.query",
    k_proj="attention.self.key",
    v_proj="attention.self.value",
)

# Keyed by Hugging Face `model_type` or by class name (a class name wins).
ARCHITECTURES: dict[str, Architecture] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "gpt2": GPT2,
    "bert": BERT,
    "roberta": BERT,
}


def register_architecture(key: str, architecture: Architecture) -> None:
    """Describe a model family once: `key` is its config's `model_type` or a class name."""
    ARCHITECTURES[key] = architecture
    _ANATOMIES.clear()  # a model described before by discovery is described anew


# -- named hook points ----------------------------------------------------------------------

Side = Literal["input", "output"]


@dataclass(frozen=True)
class PointKind:
    """One kind of named activation per block: the part that computes it (an `Architecture`
    field, or "block" for the block itself), the side of that module it is read on, and
    what splits its last dimension into groups (the heads)."""

    part: str
    side: Side
    groups: Literal["heads", "kv_heads"] | None = None


# Adding a hook point is one row here (and, for a new part, one `Architecture` field).
POINT_KINDS: dict[str, PointKind] = {
    "hook_resid_pre": PointKind("block", "input"),
    "hook_resid_post": PointKind("block", "output"),
    "hook_attn_out": PointKind("attn_out", "output"),
    "hook_mlp_out": PointKind("mlp_out", "output"),
    "attn.hook_z": PointKind("attn_out", "input", "heads"),
    "attn.hook_q": PointKind("q_proj", "output", "heads"),
    "attn.hook_k": PointKind("k_proj", "output", "kv_heads"),
    "attn.hook_v": PointKind("v_proj", "output", "kv_heads"),
}
# The shorter spellings some write for the same points.
ALIASES = {"attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "attn.head": "attn.hook_z"}
# The point of each per-layer component ("resid" numbers resid_pre 0 .. L-1, then resid_post).
COMPONENT_POINTS = {"attn": "hook_attn_out", "mlp": "hook_mlp_out", "head": "attn.hook_z"}
_MISSING = {
    "attn_out": "an attention output projection",
    "mlp_out": "an MLP",
    "heads": "attention heads of a known size",
    "q_proj": "a separate query projection",
    "k_proj": "a separate key projection",
    "v_proj": "a separate value projection",
}


@dataclass(frozen=True)
class HookPoint:
    """One named activation: the module that computes it and the side it is read on
    ("input": the module's first input; "output": its output, or a tuple output's first
    element). `block` is the block that computes (or, for resid_pre, receives) it; `groups`
    splits the last dimension for patching: 1, or the number of heads."""

    name: str
    module: torch.nn.Module
    side: Side
    block: int
    groups: int = 1


# -- the anatomy of one model ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Anatomy:
    """The parts of one model, found once (`model_anatomy`). It holds submodules only, never
    the model itself, so a cached anatomy does not keep its model alive."""

    model_name: str  # the model's class, for messages
    architecture: Architecture
    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module | None
    unembed: torch.nn.Module | None  # causal LMs only
    n_heads: int | None
    n_kv_heads: int | None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def part(self, part: str, block: int) -> torch.nn.Module | None:
        """The module `part` (an `Architecture` field) of block `block`, or None. Resolved on
        each call: a LoRA wrapper put in place later is then the module hooked."""
        module: Any = self.blocks[block]
        if part == "block":
            return module
        path = getattr(self.architecture, part)
        return None if path is None else _resolve(module, path)

    @cached_property
    def head_dim(self) -> int | None:
        proj = self.part("attn_out", 0)
        width = None if proj is None else _in_features(proj)
        if not width or not self.n_heads or width % self.n_heads:
            return None
        return width // self.n_heads

    def _lacks(self, kind: PointKind) -> str | None:
        """What this model lacks for points of `kind` (None: nothing)."""
        if kind.part != "block" and any(
            self.part(kind.part, b) is None for b in range(self.n_layers)
        ):
            return kind.part
        if kind.groups == "heads" and self.head_dim is None:
            return "heads"
        if kind.groups == "kv_heads" and not (self.n_kv_heads or self.n_heads):
            return "heads"
        return None

    def has(self, component: str) -> bool:
        if component == "resid":
            return True
        return component in COMPONENT_POINTS and self._lacks(self._kind(component)) is None

    def check(self, component: str) -> None:
        """A one-line error for an unknown component or one this model lacks."""
        if component not in COMPONENTS:
            raise WorkbenchError(
                f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}"
            )
        if component != "resid":
            self._check_kind(f"component {component!r}", self._kind(component))

    def layers(self, component: str) -> list[int]:
        """The layer numbers of a component: 0 .. L for resid, 0 .. L-1 for the others."""
        self.check(component)
        return list(range(self.n_layers + (1 if component == "resid" else 0)))

    def check_layers(self, component: str, layers: Sequence[int] | None) -> list[int]:
        """The asked layers of `component` (all by default), sorted and without repeats;
        negative numbers count from the end."""
        valid = self.layers(component)
        if layers is None:
            return valid
        out = []
        for layer in layers:
            if not -len(valid) <= int(layer) < len(valid):
                hint = " (0 = embeddings, the last = after the last block)"
                raise WorkbenchError(
                    f"layer {layer} is out of range: {component} has layers 0 .. {valid[-1]}"
                    + (hint if component == "resid" else "")
                )
            out.append(int(layer) % len(valid))
        return sorted(set(out))

    def name(self, component: str, layer: int) -> str:
        """The hook name of `component` at `layer` (resid layer L is the last block's output)."""
        if component == "resid":
            if layer == self.n_layers:
                return f"blocks.{layer - 1}.hook_resid_post"
            return f"blocks.{layer}.hook_resid_pre"
        return f"blocks.{layer}.{COMPONENT_POINTS[component]}"

    def names(self, component: str) -> list[str]:
        return [self.name(component, layer) for layer in self.layers(component)]

    def point(self, name: str) -> HookPoint:
        """The hook point for a TransformerLens-style name (short aliases accepted)."""
        for short, full in ALIASES.items():
            if name.endswith("." + short):
                name = name[: -len(short)] + full
        head, _, rest = name.partition(".")
        number, _, suffix = rest.partition(".")
        if head != "blocks" or not number.isdigit() or suffix not in POINT_KINDS:
            raise WorkbenchError(
                f"unknown hook name {name!r}; names look like blocks.3.hook_resid_pre, with "
                f"one of {', '.join(POINT_KINDS)} after the block number"
            )
        block, kind = int(number), POINT_KINDS[suffix]
        if block >= self.n_layers:
            raise WorkbenchError(
                f"hook {name!r}: the model has {self.n_layers} blocks (0 .. {self.n_layers - 1})"
            )
        self._check_kind(f"hook {name!r}", kind)
        groups = {None: 1, "heads": self.n_heads, "kv_heads": self.n_kv_heads or self.n_heads}
        module = self.part(kind.part, block)  # found: _check_kind passed
        return HookPoint(name, module, kind.side, block, int(groups[kind.groups] or 1))  # type: ignore[arg-type]

    def _kind(self, component: str) -> PointKind:
        return POINT_KINDS[COMPONENT_POINTS[component]]

    def _check_kind(self, what: str, kind: PointKind) -> None:
        lacking = self._lacks(kind)
        if lacking is None:
            return
        block = self.blocks[0]
        children = ", ".join(name for name, _ in block.named_children())
        raise WorkbenchError(
            f"{what} is not available for {self.model_name}: cannot find "
            f"{_MISSING[lacking]} in its blocks ({type(block).__name__} has {children})"
        )


_ANATOMIES: weakref.WeakKeyDictionary[torch.nn.Module, Anatomy] = weakref.WeakKeyDictionary()


def model_anatomy(lm: LoadedModel) -> Anatomy:
    """The anatomy of `lm`'s transformer, found once per model: a registered description
    (by class name, then `model_type`), else one read from its modules."""
    model = lm.model
    found = _ANATOMIES.get(model)
    if found is not None:
        return found
    config = getattr(model, "config", None)
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise WorkbenchError(f"encoder-decoder models ({name}) are not supported")
    model_type = getattr(config, "model_type", None)
    keys = [cls.__name__ for cls in type(model).__mro__] + [model_type]
    architecture = next((ARCHITECTURES[k] for k in keys if k in ARCHITECTURES), None)
    if architecture is None:
        architecture = discover(model)
    base = getattr(model, "base_model", model)
    blocks = _resolve(base, architecture.blocks)
    if not isinstance(blocks, torch.nn.ModuleList) or not len(blocks):
        raise WorkbenchError(
            f"{name}'s base model has no block list at {architecture.blocks!r}; fix its "
            "description in workbench.anatomy.register_architecture"
        )

    def count(keys: tuple[str, ...]) -> int | None:
        value = next((getattr(config, k) for k in keys if getattr(config, k, None)), None)
        return int(value) if value else None

    anatomy = Anatomy(
        model_name=name,
        architecture=architecture,
        blocks=blocks,
        final_norm=_resolve(base, architecture.final_norm) if architecture.final_norm else None,
        unembed=model.get_output_embeddings() if lm.kind == "causal" else None,
        n_heads=count(architecture.head_counts),
        n_kv_heads=count(architecture.kv_head_counts),
    )
    _ANATOMIES[model] = anatomy
    return anatomy


def block_linears(lm: LoadedModel, layers: Sequence[int]) -> list[str]:
    """The full names (as `lm.model.named_modules()` gives them) of the linear layers inside
    the blocks `layers`, block by block: what LoRA adapts when it adapts those blocks."""
    anatomy = model_anatomy(lm)
    prefix = next(name for name, module in lm.model.named_modules() if module is anatomy.blocks)
    return [
        f"{prefix}.{layer}.{name}"
        for layer in sorted(layers)
        for name, module in anatomy.blocks[layer].named_modules()
        if isinstance(module, torch.nn.Linear)
    ]


# -- describing an unknown model from its modules -------------------------------------------

BLOCK_LISTS = ("layers", "h", "layer", "blocks")
FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
ATTN_PROJECTIONS = ("o_proj", "c_proj", "out_proj", "dense", "wo")
MLP_MODULES = ("mlp", "feed_forward", "ffn", "mlp_block")
MLP_PROJECTIONS = ("output.dense", "fc2")  # MLPs without a module of their own (BERT, OPT)
QKV_NAMES = {
    "q_proj": ("q_proj", "query"),
    "k_proj": ("k_proj", "key"),
    "v_proj": ("v_proj", "value"),
}


def discover(model: torch.nn.Module) -> Architecture:
    """An `Architecture` read from a model's registered modules (block lists, norms and
    projections under their usual names), or a one-line error saying how to describe it."""
    base = getattr(model, "base_model", model)
    for prefix in ("", "encoder.", "decoder."):
        container = _resolve(base, prefix[:-1]) if prefix else base
        if container is None:
            continue
        children = dict(container.named_children())
        for name in BLOCK_LISTS:
            blocks = children.get(name)
            if isinstance(blocks, torch.nn.ModuleList) and len(blocks):
                width = int(model.get_input_embeddings().weight.shape[1])
                return _describe_block(prefix + name, base, blocks[0], width)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    key = model_type or type(model).__name__
    raise WorkbenchError(
        f"cannot find the transformer blocks of {type(model).__name__} (looked for "
        f"{', '.join(BLOCK_LISTS)}); describe it once with workbench.anatomy."
        f"register_architecture({key!r}, Architecture(blocks=..., attn_out=..., mlp_out=...))"
    )


def _describe_block(
    blocks: str, base: torch.nn.Module, block: torch.nn.Module, width: int
) -> Architecture:
    children = dict(base.named_children())
    final_norm = next((n for n in FINAL_NORMS if n in children), None)
    attention = next(
        (
            name
            for name, _ in block.named_children()
            if ("attn" in name.lower() or "attention" in name.lower())
            and not any(w in name.lower() for w in ("norm", "cross"))
            and not name.lower().startswith("ln")
        ),
        None,
    )
    attn_out = projections = None
    if attention is not None:
        inner = dict(getattr(block, attention).named_modules())
        attn_out = next(
            (
                f"{attention}.{path}"
                for path, sub in inner.items()
                if path.rsplit(".", 1)[-1] in ATTN_PROJECTIONS and _out_features(sub) == width
            ),
            None,
        )
        projections = {
            field: next((f"{attention}.{p}" for p in inner if p.rsplit(".", 1)[-1] in names), None)
            for field, names in QKV_NAMES.items()
        }
    modules = dict(block.named_modules())
    mlp_out = next((n for n in MLP_MODULES if n in dict(block.named_children())), None)
    mlp_out = mlp_out or next((p for p in MLP_PROJECTIONS if p in modules), None)
    return Architecture(
        blocks=blocks,
        attn_out=attn_out,
        mlp_out=mlp_out,
        final_norm=final_norm,
        attention=attention,
        **(projections or {}),
    )


def _resolve(root: Any, path: str) -> Any:
    """`root.a.b` for the path "a.b" (a missing attribute, or an empty path: None)."""
    if not path:
        return None
    for attr in path.split("."):
        root = getattr(root, attr, None)
        if root is None:
            return None
    return root


def _out_features(module: torch.nn.Module) -> int | None:
    return getattr(module, "out_features", None) or getattr(module, "nf", None)


def _in_features(module: torch.nn.Module) -> int | None:
    width = getattr(module, "in_features", None) or getattr(module, "nx", None)
    return int(width) if width else None


# -- writing: hooks that read or replace an activation --------------------------------------

Edit = Callable[[torch.Tensor], "torch.Tensor | None"]


def first_tensor(value: Any) -> torch.Tensor:
    """A module's output tensor (a block returns a tuple: hidden states first)."""
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, tensor: torch.Tensor) -> Any:
    return (tensor, *value[1:]) if isinstance(value, tuple) else tensor


def add_hook(point: HookPoint, fn: Edit) -> torch.utils.hooks.RemovableHandle:
    """Run `fn` on the activation at `point`; a tensor it returns replaces the activation.
    Returns the handle (remove it when done)."""
    if point.side == "input":

        def pre_hook(module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):
        new = fn(first_tensor(output))
        return None if new is None else _replace_first(output, new)

    return point.module.register_forward_hook(hook)


class Hooks:
    """Functions at hook points for the forwards run inside `with`: each may read its
    activation or return a replacement (batched interventions write one per row). The
    hooks are removed on exit."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def add(self, point: HookPoint, fn: Edit) -> None:
        self.handles.append(add_hook(point, fn))

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


# -- reading: activations at named points ---------------------------------------------------


def forward_logits(
    lm: LoadedModel, embeds: torch.Tensor, rows: int, grad: bool = False
) -> torch.Tensor:
    """[B, n, D] input embeddings -> [B, rows, V] logits at the last `rows` positions
    (a classifier: [B, 1, labels])."""
    with torch.enable_grad() if grad else torch.no_grad():
        return _last_logits(lm, {"inputs_embeds": embeds}, rows)


@dataclass
class Captured:
    """What `capture` read: {hook name: [B, n, width]} on the model's input device, and the
    logits of the last rows when they were asked for."""

    activations: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None


class _Done(Exception):
    """Raised once the deepest needed block has run: later blocks need not."""


def capture(
    lm: LoadedModel,
    names: Sequence[str],
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    cache: Any = None,
    logits: int | None = None,
) -> Captured:
    """One no-grad forward that keeps the activations at `names` ([B, n, width] each).

    Without `logits` only the base model runs, and only up to the deepest block a name
    needs. With `logits` (a number of rows) the whole model runs and the logits of its last
    rows come back too ([B, rows, V]; a classifier's [B, 1, labels]). With `cache` (a
    transformers Cache, see workbench.prefix_cache) the input continues the cached prefix,
    and a fresh empty Cache is filled with this pass's keys and values.
    """
    anatomy = model_anatomy(lm)
    points = [anatomy.point(name) for name in names]
    kwargs: dict[str, Any] = {}
    for key, value in (("input_ids", input_ids), ("inputs_embeds", inputs_embeds)):
        if value is not None:
            kwargs[key] = value.to(lm.device)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(lm.device)
    if cache is not None:
        argument = cache_argument(trunk(lm))
        if argument is None:
            raise WorkbenchError(f"{lm.name} takes no key/value cache")
        kwargs.update({argument: cache, "use_cache": True})
    kept: dict[str, torch.Tensor] = {}
    with Hooks() as active, torch.no_grad():
        for point in points:

            def keep(x: torch.Tensor, name: str = point.name) -> None:
                # On the input's device, also for a model split over GPUs (device_map).
                kept[name] = x.detach().to(lm.device)

            active.add(point, keep)
        if logits is not None:
            return Captured(kept, _last_logits(lm, kwargs, logits))
        _stop_after(active, anatomy, points)
        try:
            trunk(lm)(**kwargs)
        except _Done:
            pass
    return Captured(kept)


def _stop_after(active: Hooks, anatomy: Anatomy, points: list[HookPoint]) -> None:
    """A hook that ends the forward once the deepest point is read: before the last block
    where only its input is read, else after it."""
    last = max(p.block for p in points)
    block = anatomy.blocks[last]
    before = all(p.side == "input" and p.module is block for p in points if p.block == last)

    def stop(*_: Any) -> None:
        raise _Done

    hook = block.register_forward_pre_hook if before else block.register_forward_hook
    active.handles.append(hook(stop))


def _last_logits(lm: LoadedModel, kwargs: dict[str, Any], rows: int) -> torch.Tensor:
    if lm.kind == "classifier":
        return lm.model(**kwargs).logits.unsqueeze(1)
    keep = {"logits_to_keep": rows} if lm.keeps_logits else {}
    return lm.model(**kwargs, **keep).logits[:, -rows:]


def residuals(
    lm: LoadedModel, layers: Sequence[int] | None = None, **inputs: Any
) -> dict[int, torch.Tensor]:
    """{layer: [B, n, D]} residual stream at the asked resid layers (all by default:
    0 = embeddings .. L), read by `capture` (`inputs` are its keyword arguments)."""
    anatomy = model_anatomy(lm)
    wanted = anatomy.check_layers("resid", layers)
    names = {layer: anatomy.name("resid", layer) for layer in wanted}
    acts = capture(lm, list(names.values()), **inputs).activations
    return {layer: acts[name] for layer, name in names.items()}


def trunk(lm: LoadedModel) -> torch.nn.Module:
    """The module that maps inputs to hidden states: Hugging Face's base model."""
    return getattr(lm.model, "base_model", lm.model)
