"""IG over a data set: padded batches across inputs vs captum called once per input.

SmolLM2-135M-shaped random model (same arithmetic as the default model), bf16 on GPU,
32 interpolation points, EOS baseline. Inputs: N prompts of 40-200 tokens with 1-4 target
tokens, like recorded agent decisions. Three ways, same inputs, one run:

- captum: `LLMGradientAttribution(LayerIntegratedGradients)` once per input;
- workbench, one input at a time (`explain` in a loop);
- workbench data-set mode (`explain_dataset`: padded batches sized to GPU memory).

    python benchmarks/ig_dataset_bench.py --inputs 128
    python benchmarks/ig_dataset_bench.py --inputs 8 --device cpu --shape tiny
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ig_bench import SHAPES, build  # noqa: E402

STEPS = 32


def make_items(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = " the milk fridge open take kitchen apple knife cook cut red box door key".split()
    items = []
    for _ in range(n):
        prompt = "".join(" " + rng.choice(words) for _ in range(rng.randint(40, 200)))
        target = "".join(" " + rng.choice(words) for _ in range(rng.randint(1, 4)))
        items.append({"text": prompt, "target": target})
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=128)
    parser.add_argument("--shape", choices=SHAPES, default="smollm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--skip", default="", help="comma list: captum, per-input")
    parser.add_argument("--budgets", default="", help="comma list of max_batch_tokens to try")
    args = parser.parse_args()

    from explainers import explain
    from explainers.attribution.ig_batch import explain_dataset

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    lm = build(args.shape, args.device, dtype, args.tokenizer)
    items = make_items(args.inputs)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    results = {}

    def timed(name, fn):
        fn(items[:2])  # warm-up
        sync()
        start = time.perf_counter()
        fn(items)
        sync()
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": round(seconds, 3),
            "inputs_per_s": round(len(items) / seconds, 2),
        }
        print(f"{name:>22}: {seconds:8.2f} s  {len(items) / seconds:8.2f} inputs/s", flush=True)

    timed("workbench dataset", lambda xs: explain_dataset(lm, xs, steps=STEPS - 1, baseline="eos"))
    for budget in filter(None, args.budgets.split(",")):
        timed(
            f"dataset, {budget} tokens",
            lambda xs, b=int(budget): explain_dataset(
                lm, xs, steps=STEPS - 1, baseline="eos", max_batch_tokens=b
            ),
        )
    if "per-input" not in args.skip:
        timed(
            "workbench per input",
            lambda xs: [
                explain(
                    lm, x["text"], target=x["target"], method="ig", steps=STEPS - 1, baseline="eos"
                )
                for x in xs
            ],
        )
    if "captum" not in args.skip:
        from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

        llm_attr = LLMGradientAttribution(
            LayerIntegratedGradients(lm.model, lm.model.get_input_embeddings()), lm.tokenizer
        )

        def captum(xs):
            for x in xs:
                inp = TextTokenInput(x["text"], lm.tokenizer, baselines=lm.tokenizer.eos_token_id)
                llm_attr.attribute(inp, target=x["target"], n_steps=STEPS)

        timed("captum per input", captum)
        ratio = results["captum per input"]["seconds"] / results["workbench dataset"]["seconds"]
        print(f"data-set mode vs captum once per input: {ratio:.1f}x")
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        json.dumps(
            {"inputs": len(items), "shape": args.shape, "device": device, "results": results}
        )
    )


if __name__ == "__main__":
    main()
