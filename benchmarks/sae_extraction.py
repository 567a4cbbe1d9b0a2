"""SAE activation extraction against the forward pass's FLOP bound, and against a plain
Hugging Face forward, in one run.

The work: the residual stream entering layer `--layer` at every token of `--prompts`
prompts made like an agent's (groups of `--group` prompts share a `--prefix`-token
beginning, then `--suffix` tokens of their own), as `workbench sae train` reads it
(`explainers.sae.activations.collect_activations`: each shared prefix runs once with its
keys and values cached, every suffix runs over them in batches, the forward stops after the
layer). Random-initialised Llama shapes (the arithmetic does not depend on the weights).

The bound: the forward FLOPs the rows need (2 x the parameters of the blocks below the
layer per token, plus attention's 4 x context x width per token and layer), at the peak of
an 8192-cube matrix product measured in the same run at the same dtype. The anchor: the
same prompts in full through `model(..., output_hidden_states=True)`, batched, no cache.

    python benchmarks/sae_extraction.py --device cuda --shape 1.1b --out sae_extraction.json
    python benchmarks/sae_extraction.py --device cpu --shape tiny --prompts 16   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import SHAPES, random_llama  # noqa: E402

VOCAB = 32000


class WordTokenizer:
    """Texts of words "t<id>" to those ids: what the extraction needs of a tokenizer."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [int(w[1:]) for w in text.split()]}

    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def prompts(n: int, group: int, prefix: int, suffix: int, seed: int = 0) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for g in range((n + group - 1) // group):
        head = torch.randint(2, VOCAB, (prefix,), generator=gen).tolist()
        for _ in range(min(group, n - g * group)):
            tail = torch.randint(2, VOCAB, (suffix,), generator=gen).tolist()
            out.append(" ".join(f"t{i}" for i in head + tail))
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int = 8192) -> float:
    """FLOP/s of an n-cube matrix product (mean of 10 after 3 warm-ups)."""
    if device != "cuda":
        n = 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - start)


def forward_flops(model, layer: int, rows: int, context: float) -> float:
    """FLOPs of the blocks below `layer` for `rows` tokens at mean attention context."""
    blocks = model.model.layers[:layer]
    params = sum(p.numel() for b in blocks for p in b.parameters() if p.dim() == 2)
    width = model.config.hidden_size
    return rows * (2 * params + 4 * context * width * layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--layer", type=int, default=None, help="default: the middle block")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--suffix", type=int, default=256)
    parser.add_argument("--read-batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from explainers.sae.activations import collect_activations
    from workbench.models import from_pretrained_objects

    dtype = getattr(torch, args.dtype)
    if args.dtype == "float32" and args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    model = random_llama(args.shape, VOCAB, args.device, dtype).eval()
    lm = from_pretrained_objects(model, WordTokenizer(), name=f"random-{args.shape}")
    layer = args.layer if args.layer is not None else model.config.num_hidden_layers // 2
    texts = prompts(args.prompts, args.group, args.prefix, args.suffix)
    peak = matmul_peak(args.device, dtype)

    collect_activations(lm, texts[: args.group], layer, args.read_batch)  # warm-up
    sync(args.device)
    start = time.perf_counter()
    acts = collect_activations(lm, texts, layer, args.read_batch)
    sync(args.device)
    seconds = time.perf_counter() - start
    rows = len(acts)
    # Mean attention context: a suffix token at j sees prefix + j; a prefix token its index.
    groups = (args.prompts + args.group - 1) // args.group
    context = (
        args.prompts * args.suffix * (args.prefix + args.suffix / 2)
        + groups * args.prefix * args.prefix / 2
    ) / max(rows, 1)
    flops = forward_flops(model, layer, rows, context)

    ids = torch.tensor([[int(w[1:]) for w in t.split()] for t in texts], device=args.device)
    batch = max(1, args.read_batch // 2)
    with torch.no_grad():
        model(input_ids=ids[:batch], output_hidden_states=True)
        sync(args.device)
        start = time.perf_counter()
        for k in range(0, len(ids), batch):
            model(input_ids=ids[k : k + batch], output_hidden_states=True).hidden_states[layer]
        sync(args.device)
    anchor = time.perf_counter() - start

    result = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        "dtype": args.dtype,
        "layer": layer,
        "prompts": args.prompts,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "tflops": flops / seconds / 1e12,
        "peak_tflops": peak / 1e12,
        "fraction_of_bound": flops / peak / seconds,
        "anchor_seconds": anchor,
        "speedup_vs_anchor": anchor / seconds,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
