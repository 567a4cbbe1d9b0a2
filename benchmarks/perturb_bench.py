"""Perturbation methods: the workbench's batched engine against captum's `LLMAttribution` and
shap's own `Partition` explainer, in one run.

Random-initialised Llama shapes (benchmarks/shapes.py; the arithmetic does not depend on the
weights), bf16 on GPU, as in ../shared/BENCHMARKS-PROTOCOL.md. The prompt is P distinct
one-token words drawn with a fixed seed from the tokenizer's vocabulary (distinct tokens: a
repeated token would let a deleted token's successors match the prompt and flatter prefix
reuse), the target " the" repeated T times.

Workbench, for each removal (replace: a pad token stands in, captum's semantics; delete):

- occlusion: P + 1 evaluations (each token removed, and the full prompt);
- lime, kernel_shap: `--samples` samples (captum draws them; distinct ones are evaluated);
- shap: shap's Partition explainer, `max_evals = --samples`, `--shap-batch` tree nodes
  (2 x that many masked inputs) per model call, shap's default 5;

each with the prompt's key/value cache reused for shared prefixes ("reuse on", the default)
and without ("off": every variant in full).

Anchors (replace semantics, pad token as the baseline, configured at their fastest):

- captum 0.9 `LLMAttribution` around `FeatureAblation` (one token at a time), `Lime` (the
  workbench's ridge model, alpha 1) and `KernelShap`, `forward_in_tokens=False` (one
  forward per evaluation over prompt + target, not one per target token);
- shap's `PartitionExplainer` with the same Text masker (token ids, the pad token as the
  mask, no collapsing), `max_evals` and `--shap-batch`, around a batched model function a
  careful user would write (one forward per shap call, `logits_to_keep=T`).

Lime and KernelShap draw the same samples in both (same seed), and least squares is linear
in the target, so the workbench's per-row scores summed over rows should equal captum's
attribution of the summed log-probability; the run reports the Pearson r of each pair.

Dense-FLOP bound: evaluations * (P + T) * 2N at 800 TFLOP/s (N: matmul parameters, tied
embeddings counted once, as the LM head); efficiency = bound / measured time. Prefix reuse
does less than that work, so it can pass 100%; "hardware" = positions the engine actually
computed * 2N / 800 TFLOP/s / time.

    python benchmarks/perturb_bench.py --shape 1b --prompt 256 --targets 8 --out perturb-1b.json
    python benchmarks/perturb_bench.py --shape tiny --device cpu --prompt 64 --targets 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import random_llama  # noqa: E402

VOCAB = {"tiny": 49152, "smollm": 49152, "1b": 128256}
PEAK_FLOPS = 800e12
METHODS = ("occlusion", "lime", "kernel_shap", "shap")
ANCHORS = {"occlusion": "captum", "lime": "captum", "kernel_shap": "captum", "shap": "shap"}


def build(shape: str, device: str, dtype: torch.dtype, tokenizer_dir: str | None):
    from transformers import AutoTokenizer

    from workbench.model_files import default_model_dir
    from workbench.models import from_pretrained_objects

    model = random_llama(shape, VOCAB[shape], device, dtype, tie_word_embeddings=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or default_model_dir())
    return from_pretrained_objects(model, tokenizer, name=f"random-{shape}")


def distinct_words(tokenizer, n: int, seed: int = 0) -> str:
    """n different words, each one token after a space (" word"), joined: n tokens."""
    vocab = sorted(w for w in tokenizer.get_vocab() if re.fullmatch("\u0120[a-z]{3,9}", w))
    words = random.Random(seed).sample(vocab, n)
    return "".join(" " + w[1:] for w in words)


def matmul_params(model: torch.nn.Module) -> int:
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight
    return total - embed.numel() + (head.numel() if head is embed else 0)


def timed(fn: Callable[[], object], repeats: int, device: str, warm_up: bool = True):
    """Median seconds of `repeats` calls (after one untimed call), and the last result."""
    if warm_up:
        fn()
    times, result = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def workbench_runs(obj, args, methods: list[str], removals: list[str]) -> tuple[list[dict], dict]:
    import dataclasses
    from unittest import mock

    from explainers.attribution import perturbation
    from explainers.attribution.kernel_shap import KernelShapExplainer
    from explainers.attribution.lime import LimeExplainer
    from explainers.attribution.occlusion import Occlusion
    from explainers.attribution.shap_partition import ShapPartition

    explainers = {
        "occlusion": (Occlusion(), {}),
        "lime": (LimeExplainer(), {"n_samples": args.samples}),
        "kernel_shap": (KernelShapExplainer(), {"n_samples": args.samples}),
        "shap": (ShapPartition(), {"max_evals": args.samples, "shap_batch": args.shap_batch}),
    }
    rows, scores = [], {}
    for method in methods:
        explainer, params = explainers[method]
        for removal in removals:
            for reuse in (True, False):

                def run(explainer=explainer, params=params, removal=removal):
                    np.random.seed(0)  # shap's Partition breaks ties with numpy's generator
                    # A new objective: each run computes the prompt's cache anew.
                    fresh = dataclasses.replace(obj)
                    return explainer.attribute(fresh, removal=removal, **params)

                # Reuse off: the engine as if no prompt cache could be reused.
                off = mock.patch.object(perturbation, "_prompt_prefix", lambda obj: None)
                with off if not reuse else contextlib.nullcontext():
                    seconds, result = timed(run, args.repeats, args.device)
                    counted = {"forwards": 0, "positions": 0}

                    def count(module, inputs, kwargs, counted=counted):
                        batch, width = kwargs["inputs_embeds"].shape[:2]
                        counted["forwards"] += 1
                        counted["positions"] += batch * width  # padding in, cache out

                    hook = obj.lm.model.register_forward_pre_hook(count, with_kwargs=True)
                    try:
                        result = run()  # once more, counted
                    finally:
                        hook.remove()
                if method == "occlusion":
                    evaluations = obj.prompt_ids.numel() + 1
                else:
                    evaluations = int(result.extras["model_calls"])
                rows.append(
                    {
                        "method": method,
                        "who": "workbench",
                        "removal": removal,
                        "reuse": "on" if reuse else "off",
                        "evaluations": evaluations,
                        "forwards": counted["forwards"],
                        "positions": counted["positions"],
                        "seconds": seconds,
                    }
                )
                if reuse:
                    scores[method, removal] = np.asarray(result.scores)
                report(rows[-1], args)
    return rows, scores


def captum_runs(lm, prompt: str, target: str, args, methods: list[str]) -> tuple[list[dict], dict]:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import FeatureAblation, KernelShap, Lime, LLMAttribution, TextTokenInput

    pad = lm.tokenizer.pad_token_id
    inp = TextTokenInput(prompt, lm.tokenizer, baselines=pad)
    captum_methods = {
        "occlusion": (FeatureAblation(lm.model), {}),
        "lime": (
            Lime(lm.model, interpretable_model=SkLearnRidge(alpha=1.0)),
            {"n_samples": args.samples},
        ),
        "kernel_shap": (KernelShap(lm.model), {"n_samples": args.samples}),
    }
    rows, scores = [], {}
    for method, (attr_method, kwargs) in captum_methods.items():
        if method not in methods:
            continue
        llm_attr = LLMAttribution(attr_method, lm.tokenizer)
        calls = {"n": 0}
        forward = llm_attr._forward_func

        def counted(*a, forward=forward, calls=calls, **k):
            calls["n"] += 1
            return forward(*a, **k)

        llm_attr.attr_method.forward_func = counted

        def run(llm_attr=llm_attr, kwargs=kwargs, calls=calls):
            calls["n"] = 0
            torch.manual_seed(0)  # the workbench's surrogates draw with seed 0
            with torch.no_grad():
                out = llm_attr.attribute(inp, target=target, forward_in_tokens=False, **kwargs)
            return out.seq_attr.float().cpu().numpy()

        seconds, result = timed(run, args.anchor_repeats, args.device, warm_up=False)
        rows.append(
            {
                "method": method,
                "who": "captum",
                "removal": "replace",
                "reuse": "-",
                "evaluations": calls["n"],
                "forwards": calls["n"],
                "positions": None,
                "seconds": seconds,
            }
        )
        scores[method] = result
        report(rows[-1], args)
    return rows, scores


def shap_run(lm, obj, prompt: str, args) -> tuple[list[dict], dict]:
    import shap

    model, device = lm.model, lm.device
    n_targets = obj.target_ids.numel()
    targets = obj.target_ids.to(device)
    masker = shap.maskers.Text(
        lm.tokenizer,
        mask_token=obj.baseline_token_id("pad"),
        collapse_mask_token=False,
        output_type="token_ids",
    )
    calls = {"n": 0}

    def score(masked: np.ndarray) -> np.ndarray:
        calls["n"] += len(masked)
        ids = torch.as_tensor(np.asarray(masked, dtype=np.int64), device=device)
        ids = torch.cat([ids, targets[:-1].expand(len(ids), -1)], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, logits_to_keep=n_targets).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, targets.view(1, -1, 1).expand(len(ids), -1, 1))
        return picked.squeeze(-1).double().cpu().numpy()

    explainer = shap.PartitionExplainer(score, masker, output_names=obj.target_tokens)

    def run():
        calls["n"] = 0
        np.random.seed(0)
        out = explainer([prompt], max_evals=args.samples, batch_size=args.shap_batch, silent=True)
        return np.asarray(out.values[0]).reshape(len(obj.prompt_ids), n_targets).T

    seconds, result = timed(run, args.anchor_repeats, args.device, warm_up=False)
    row = {
        "method": "shap",
        "who": "shap",
        "removal": "replace",
        "reuse": "-",
        "evaluations": calls["n"],
        "forwards": None,
        "positions": None,
        "seconds": seconds,
    }
    report(row, args)
    return [row], {"shap": result}


def report(row: dict, args) -> None:
    """Adds the bound and efficiencies to `row` and prints one line."""
    work = 2 * args.n_params / PEAK_FLOPS
    row["bound_s"] = row["evaluations"] * (args.prompt + args.targets) * work
    row["efficiency"] = row["bound_s"] / row["seconds"]
    if row["positions"] is not None:
        row["hardware"] = row["positions"] * work / row["seconds"]
    print(
        f"{row['method']:>11} {row['who']:>9} {row['removal']:>7} reuse {row['reuse']:>3}: "
        f"{row['evaluations']:4d} evals {row['seconds']:8.3f} s  "
        f"{pct(row['efficiency']):>7} of the bound",
        flush=True,
    )


def pct(x: float) -> str:
    return f"{x:.1%}" if x >= 0.001 else f"{100 * x:.2g}%"


def table(rows: list[dict]) -> str:
    lines = [
        "| method | run | removal | prefix reuse | evaluations | forwards | time | "
        "bound | efficiency | hardware | speed-up over anchor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    anchor = {r["method"]: r["seconds"] for r in rows if r["who"] != "workbench"}
    for r in rows:
        speed = anchor.get(r["method"])
        speed_up = f"{speed / r['seconds']:.1f}x" if speed and r["who"] == "workbench" else ""
        hardware = pct(r["hardware"]) if r.get("hardware") is not None else ""
        lines.append(
            f"| {r['method']} | {r['who']} | {r['removal']} | {r['reuse']} | "
            f"{r['evaluations']} | {r['forwards'] if r['forwards'] is not None else ''} | "
            f"{r['seconds']:.3f} s | {r['bound_s'] * 1e3:.2f} ms | {pct(r['efficiency'])} | "
            f"{hardware} | {speed_up} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=tuple(VOCAB), default="smollm")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200, help="lime/kernel_shap/shap")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed workbench runs (median)")
    parser.add_argument("--anchor-repeats", type=int, default=1, help="timed anchor runs")
    parser.add_argument("--removals", default="replace,delete")
    parser.add_argument(
        "--shap-batch", type=int, default=5, help="Partition tree nodes per model call (shap: 5)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory")
    parser.add_argument("--skip", default="", help="comma list of anchors to skip: captum,shap")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    args = parser.parse_args()
    if args.device == "cpu":  # shared machines: more threads than free cores run far slower
        torch.set_num_threads(args.threads)

    from explainers.objective import prepare

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    lm = build(args.shape, args.device, dtype, args.tokenizer)
    prompt, target = distinct_words(lm.tokenizer, args.prompt), " the" * args.targets
    obj = prepare(lm, prompt, target)
    assert obj.prompt_ids.numel() == args.prompt and obj.target_ids.numel() == args.targets
    args.n_params = matmul_params(lm.model)
    methods = [m for m in args.methods.split(",") if m]
    skip = set(args.skip.split(","))
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"{device_name}, {args.shape} shape ({args.n_params / 1e6:.0f}M matmul parameters), "
        f"{dtype}, P={args.prompt} T={args.targets} samples={args.samples}",
        flush=True,
    )

    rows, ours = workbench_runs(obj, args, methods, args.removals.split(","))
    from explainers.attribution import perturbation

    reuse_active = perturbation._prompt_prefix(obj) is not None
    print(f"prefix reuse active for this model: {reuse_active}")
    theirs: dict = {}
    if "captum" not in skip and {"occlusion", "lime", "kernel_shap"} & set(methods):
        captum_rows, captum_scores = captum_runs(lm, prompt, target, args, methods)
        rows += captum_rows
        theirs.update(captum_scores)
    if "shap" not in skip and "shap" in methods:
        shap_rows, shap_scores = shap_run(lm, obj, prompt, args)
        rows += shap_rows
        theirs.update(shap_scores)

    agreement = {}
    for method, reference in theirs.items():
        mine = ours.get((method, "replace"))
        if mine is None:
            continue
        # captum attributes the summed log-probability; shap gives every row.
        agreement[method] = pearson(mine.sum(0) if method != "shap" else mine, reference)
    rows.sort(key=lambda r: (METHODS.index(r["method"]), r["who"] != "workbench"))
    print()
    print(table(rows))
    if agreement:
        print()
        print(
            "Agreement with the anchor (Pearson r, replace removal): "
            + ", ".join(f"{m} {r:.4f}" for m, r in agreement.items())
        )
    result = {
        "shape": args.shape,
        "P": args.prompt,
        "T": args.targets,
        "samples": args.samples,
        "shap_batch": args.shap_batch,
        "device": device_name,
        "dtype": str(dtype),
        "matmul_params": args.n_params,
        "peak_flops": PEAK_FLOPS,
        "rows": rows,
        "agreement": agreement,
        "prefix_reuse_active": reuse_active,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
