"""Activation patching: a full residual-stream sweep, the workbench's batched engines against
one patch per forward, in one run.

The work: every (layer, position) of the residual stream, layers 0 (embeddings) .. L (after
the last block), of a prompt of `--tokens` tokens, denoising (clean activations patched into
the corrupted run), scored by log p(target) at the last position. Random-initialised Llama
shapes (the arithmetic does not depend on the weights), bf16 on a GPU.

Anchor: a faithful transformer-lens-style loop, written here. transformer-lens 4.3 (the
current release) resolves beside this project's pins, but it removed `HookedTransformer`;
its `TransformerBridge` boots models by hub name, which the GPU machines cannot reach. The
loop does what `transformer_lens.patching.get_act_patch_resid_pre` does: cache the clean
run's activations once, then per cell one forward of the corrupted input (batch 1, full
logits) with a hook that writes one clean position into the residual stream, and the metric
stored on the device (no synchronisation per cell).

Contenders: `explainers.causal.sweep.exact_patching` with the `suffix` engine (the
default for causal LMs: batched, each batch starts at its block and position over a cached
prefix) and with the `full` engine (batched whole forwards), both including the clean
activation cache. The check: the largest difference between the workbench's patched values
and the loop's, over all cells.

    python benchmarks/patch_bench.py --device cuda --out patch.json          # 1.1B, 256 tokens
    python benchmarks/patch_bench.py --shape tiny --device cpu --tokens 32   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import SHAPES as ALL_SHAPES  # noqa: E402
from shapes import random_llama  # noqa: E402

VOCAB = {"tiny": 1000, "smollm": 49152, "1.1b": 32000}  # each shape's own vocabulary
SHAPES = tuple(VOCAB)


def build(shape: str, device: str, dtype: torch.dtype):
    from workbench.models import from_pretrained_objects

    model = random_llama(shape, VOCAB[shape], device, dtype)

    class Tokenizer:  # patching needs only decode (for token labels) of a tokenizer
        pad_token_id, eos_token_id = 0, 1

        def decode(self, ids):
            return f"<{ids[0]}>"

    return from_pretrained_objects(model, Tokenizer(), name=f"random-{shape}")


def inputs(vocab: int, tokens: int, seed: int = 0) -> tuple[list[int], list[int], int]:
    """A random prompt, the same with a few tokens changed, and a target token."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(vocab, (tokens,), generator=gen).tolist()
    corrupt = list(clean)
    for p in (tokens // 8, tokens // 2, tokens - 3):
        corrupt[p] = (corrupt[p] + 1) % vocab
    return clean, corrupt, int(torch.randint(vocab, (1,), generator=gen))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def one_patch_per_forward(lm, clean: list[int], corrupt: list[int], target: int) -> np.ndarray:
    """The anchor: transformer-lens style, one forward per (layer, position)."""
    model = lm.model
    blocks = model.model.layers
    n_layers, n = len(blocks), len(clean)
    device = lm.device
    clean_ids = torch.tensor([clean], device=device)
    corrupt_ids = torch.tensor([corrupt], device=device)
    cache: dict[int, torch.Tensor] = {}

    def keep(layer):
        def pre(module, args, kwargs):
            cache[layer] = (args[0] if args else kwargs["hidden_states"]).detach()

        return pre

    def keep_last(module, args, kwargs, output):
        cache[n_layers] = (output[0] if isinstance(output, tuple) else output).detach()

    handles = [b.register_forward_pre_hook(keep(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles.append(blocks[-1].register_forward_hook(keep_last, with_kwargs=True))
    with torch.no_grad():
        model(input_ids=clean_ids)
    for h in handles:
        h.remove()

    store = torch.zeros((n_layers + 1, n), device=device)
    with torch.no_grad():
        for layer in range(n_layers + 1):
            for pos in range(n):

                def write(x, layer=layer, pos=pos):
                    x = x.clone()
                    x[:, pos] = cache[layer][:, pos]
                    return x

                def pre(module, args, kwargs, write=write):
                    if args:
                        return (write(args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": write(kwargs["hidden_states"])}

                def post(module, args, out, write=write):
                    return (write(out[0]), *out[1:]) if isinstance(out, tuple) else write(out)

                if layer < n_layers:
                    handle = blocks[layer].register_forward_pre_hook(pre, with_kwargs=True)
                else:
                    handle = blocks[-1].register_forward_hook(post)
                logits = model(input_ids=corrupt_ids).logits  # full logits, as transformer-lens
                store[layer, pos] = torch.log_softmax(logits[0, -1].float(), -1)[target]
                handle.remove()
    return store.double().cpu().numpy()


def workbench(
    lm, clean: list[int], corrupt: list[int], target: int, engine: str, budget: int | None = None
) -> np.ndarray:
    from explainers.causal.engine import Readout
    from explainers.causal.sweep import exact_patching, setup_from_ids

    setup = setup_from_ids(lm, clean, corrupt, Readout(torch.tensor([target])))
    sweep = exact_patching(setup, "resid", "denoise", engine=engine, token_budget=budget)
    return sweep.values


def timed(fn, device: str, repeats: int, warmup=None) -> tuple[float, object]:
    (warmup or fn)()  # kernels, allocator, the suffix engine's first records
    sync(device)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of the workbench.")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    parser.add_argument(
        "--budgets",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[],
        help="Also time the suffix engine at these token budgets, e.g. 8192,32768,65536.",
    )
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    lm = build(args.shape, args.device, dtype)
    clean, corrupt, target = inputs(VOCAB[args.shape], args.tokens)
    n_layers = ALL_SHAPES[args.shape][1]
    cells = (n_layers + 1) * args.tokens

    def forward() -> None:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([corrupt], device=lm.device))

    # The loop is warmed up by one plain forward: running it twice would double the run.
    anchor_s, anchor = timed(
        lambda: one_patch_per_forward(lm, clean, corrupt, target), args.device, 1, forward
    )
    suffix_s, suffix = timed(
        lambda: workbench(lm, clean, corrupt, target, "suffix"), args.device, args.repeats
    )
    full_s, full = timed(
        lambda: workbench(lm, clean, corrupt, target, "full"), args.device, args.repeats
    )
    budgets = {}
    for budget in args.budgets:
        seconds, _ = timed(
            lambda budget=budget: workbench(lm, clean, corrupt, target, "suffix", budget),
            args.device,
            args.repeats,
        )
        budgets[str(budget)] = round(seconds, 3)
    result = {
        "benchmark": "activation patching, full resid sweep",
        "shape": args.shape,
        "tokens": args.tokens,
        "layers": n_layers + 1,
        "cells": cells,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "anchor": "one patch per forward (transformer-lens style loop, written in the benchmark)",
        "anchor_s": round(anchor_s, 3),
        "suffix_engine_s": round(suffix_s, 3),
        "full_engine_s": round(full_s, 3),
        "speedup_suffix": round(anchor_s / suffix_s, 2),
        "speedup_full": round(anchor_s / full_s, 2),
        "anchor_ms_per_cell": round(1000 * anchor_s / cells, 3),
        "max_abs_diff_suffix": float(np.abs(suffix - anchor).max()),
        "max_abs_diff_full": float(np.abs(full - anchor).max()),
        "value_range": [float(anchor.min()), float(anchor.max())],
        "suffix_engine_s_by_token_budget": budgets,
        "peak_memory_gb": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None
        ),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
