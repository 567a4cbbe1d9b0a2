"""Integrated gradients: the workbench's batched IG against captum and inseq, in one run.

Random-initialised Llama-shaped models (the arithmetic does not depend on weight values),
bf16 on GPU, 32 interpolation points, as in ../shared/BENCHMARKS-PROTOCOL.md:

- captum: `LLMGradientAttribution(LayerIntegratedGradients)`, its default 32-point rule,
  EOS-token baseline (the all-zero embedding is a singular point of RMSNorm models, which
  would spoil the agreement check; the timing does not depend on the baseline),
  which loops over target tokens (one IG call, S forwards and backwards, per target);
- inseq: `inseq.load_model(..., "integrated_gradients").attribute(...)` if it imports;
- workbench: `explainers.attribution.ig` with 31 intervals (32 knots): one forward over the
  knots and, from it, one backward batched over all target tokens ("workbench"), or one
  backward per target token ("workbench-loop", `gradients.BATCHED_BACKWARD = False`).

"Tight bound" (../shared/BENCHMARKS-PROTOCOL.md) = S*(P+T)*2N*(1+T) FLOPs: S forwards over
P+T tokens plus T input-only backward passes (about a forward each), at 800 TFLOP/s;
efficiency = tight bound / measured time.

    python benchmarks/ig_bench.py --shape smollm --prompt 256 --targets 8
    python benchmarks/ig_bench.py --shape 1b --prompt 512 --targets 16
    python benchmarks/ig_bench.py --shape tiny --device cpu      # a smoke run on CPU
    python benchmarks/ig_bench.py --shape 1b --prompt 512 --targets 16 --skip captum,inseq \\
        --profile profile-1b.txt      # where the workbench's time goes (torch.profiler)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import random_llama  # noqa: E402

# The shapes this benchmark offers, with their vocabularies (SmolLM2's tokenizer encodes the
# prompts; Llama-3.2-1B keeps its own, larger output layer).
VOCAB = {"tiny": 49152, "smollm": 49152, "1b": 128256}
SHAPES = tuple(VOCAB)
PEAK_FLOPS = 800e12
STEPS = 32


def build(shape: str, device: str, dtype: torch.dtype, tokenizer_dir: str | None):
    from transformers import AutoTokenizer

    from workbench.model_files import default_model_dir
    from workbench.models import from_pretrained_objects

    model = random_llama(shape, VOCAB[shape], device, dtype, tie_word_embeddings=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or default_model_dir())
    lm = from_pretrained_objects(model, tokenizer, name=f"random-{shape}")
    return lm


def matmul_params(model: torch.nn.Module) -> int:
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    # Tied embeddings count once in parameters() but are used again as the LM head.
    head = model.get_output_embeddings().weight
    return total - embed.numel() + (head.numel() if head is embed else 0)


def timeit(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Kernel names by kind, first match wins (cuBLAS, cuDNN and flash names vary by card; an
# attention kernel's name may contain "gemm" too, so attention is asked first).
KINDS = {
    "attention": ("flash", "fmha", "sdpa", "attention"),
    "matmul": ("gemm", "nvjet", "cutlass", "cublas", "aten::mm", "aten::bmm", "addmm"),
    "softmax / norms": ("softmax", "norm", "rsqrt", "reduce"),
    "copies": ("copy", "memcpy", "memset", "cat", "fill", "index", "gather", "scatter"),
    "elementwise": ("elementwise", "aten::mul", "aten::add", "silu", "aten::neg", "aten::div"),
}


def profile(fn, device: str) -> str:
    """One call under torch.profiler: device time by kernel kind, the gap between the wall
    time and the device's busy time (launch and Python overhead), and the top kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    kernels = [
        e
        for e in events
        if getattr(e, attr, 0) > 0 and (device != "cuda" or e.device_type.name == "CUDA")
    ]
    busy = sum(getattr(e, attr) for e in kernels) / 1e6
    by_kind: dict[str, float] = {}
    for e in kernels:
        name = e.key.lower()
        kind = next((k for k, words in KINDS.items() if any(w in name for w in words)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + getattr(e, attr) / 1e6
    lines = [f"wall {wall:.4f} s, device busy {busy:.4f} s ({busy / wall:.0%} of the wall)"]
    lines += [
        f"  {k:<16} {v:8.4f} s  {v / busy:6.1%} of busy"
        for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])
    ]
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    lines.append(events.table(sort_by=sort, row_limit=25, max_name_column_width=70))
    print("\n".join(lines[:-1]), flush=True)  # the summary; the table goes to the file
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="smollm")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory")
    parser.add_argument("--skip", default="", help="comma list of anchors to skip")
    parser.add_argument("--backward", default="batched,loop", help="workbench variants to time")
    parser.add_argument("--out", default=None, help="also write the JSON summary here")
    parser.add_argument(
        "--profile", default=None, help="profile one workbench IG call; write the table here"
    )
    args = parser.parse_args()

    from explainers.attribution.ig import IntegratedGradients
    from explainers.objective import prepare

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    lm = build(args.shape, args.device, dtype, args.tokenizer)
    # " the" is one token: P and T are exact, and the content does not change the arithmetic.
    prompt, target = " the" * args.prompt, " the" * args.targets
    P, T = args.prompt, args.targets
    n = matmul_params(lm.model)
    tight_bound = STEPS * (P + T) * 2 * n * (1 + T) / PEAK_FLOPS  # the tight bound
    results: dict[str, dict] = {}

    def record(name: str, seconds: float, scores: np.ndarray | None) -> None:
        results[name] = {
            "seconds": round(seconds, 4),
            "efficiency": round(tight_bound / seconds, 4),
        }
        print(
            f"{name:>14}: {seconds:8.3f} s   {tight_bound / seconds:6.1%} of the tight bound",
            flush=True,
        )
        if scores is not None:
            results[name]["_scores"] = scores

    obj = prepare(lm, prompt, target)
    assert obj.prompt_ids.numel() == P and obj.target_ids.numel() == T
    ig = IntegratedGradients()

    def ours():
        return ig.attribute(obj, steps=STEPS - 1, baseline="eos").scores

    from explainers.attribution import gradients

    for variant in args.backward.split(","):
        gradients.BATCHED_BACKWARD = variant == "batched"
        name = "workbench" if variant == "batched" else f"workbench-{variant}"
        record(name, timeit(ours, args.repeats, args.device), ours())
    gradients.BATCHED_BACKWARD = True
    if args.profile:
        Path(args.profile).write_text(profile(ours, args.device))

    skip = set(args.skip.split(","))
    if "captum" not in skip:
        from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

        llm_attr = LLMGradientAttribution(
            LayerIntegratedGradients(lm.model, lm.model.get_input_embeddings()), lm.tokenizer
        )
        inp = TextTokenInput(prompt, lm.tokenizer, baselines=lm.tokenizer.eos_token_id)

        def captum():
            out = llm_attr.attribute(inp, target=target, n_steps=STEPS)
            return out.token_attr.float().cpu().numpy()

        record("captum", timeit(captum, args.repeats, args.device), captum())

    if "inseq" not in skip:
        try:
            import inseq

            model = inseq.load_model(lm.model, "integrated_gradients", tokenizer=lm.tokenizer)

            def run_inseq():
                model.attribute(prompt, prompt + target, n_steps=STEPS, show_progress=False)

            record("inseq", timeit(run_inseq, args.repeats, args.device), None)
        except Exception as exc:  # the anchor is optional; say why it did not run
            print(f"         inseq: not run ({type(exc).__name__}: {str(exc)[:200]})")

    first = next(k for k in results if k.startswith("workbench"))
    if "captum" in results and "_scores" in results["captum"]:
        ours_s, ref = results[first]["_scores"], results["captum"]["_scores"]
        r = [float(np.corrcoef(ours_s[i], ref[i])[0, 1]) for i in range(T)]
        print(f"Pearson r vs captum per row: min {min(r):.4f} (trapezoid vs captum Gauss-Legendre)")
    for v in results.values():
        v.pop("_scores", None)
    for name in ("captum", "inseq"):
        if name in results:
            ratio = results[name]["seconds"] / results[first]["seconds"]
            print(f"speed-up over {name}: {ratio:.2f}x")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    summary = {
        "shape": args.shape,
        "P": P,
        "T": T,
        "steps": STEPS,
        "device": device_name,
        "dtype": str(dtype),
        "tight_bound_s": round(tight_bound, 4),
        "results": results,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
