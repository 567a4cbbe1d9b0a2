"""Choice objectives: what explaining "why this command rather than the others" costs.

Two measurements, each against its anchor in the same run:

- `cost`: integrated gradients with fixed steps on an agent-sized prompt, under the
  `choice` objective over K candidate commands (the candidates packed after the prompt, one
  forward and backward per interpolation point) against `logprob` of the chosen command
  alone (today's objective). Goal: choice within 2x of logprob at K = 20.
- `step`: `workbench explain-step` on a recorded step with its defaults (segment Shapley
  values of the choice on a CPU) against integrated gradients until complete
  (`--method ig --param steps=auto`, the default before), as subprocesses with a time
  limit, wall clock including the model's load. Goal: under 60 s on a 400-token step on 2
  cores.

    python benchmarks/choice_bench.py cost --device cpu --candidates 20
    python benchmarks/choice_bench.py cost --device cuda --dtype float32 --candidates 20
    python benchmarks/choice_bench.py step --db /tmp/bench.duckdb --run bench \\
        --episode bb299b570f67 --step 5 --ig-limit 900
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBSERVATION = (
    "-= Kitchen =-\nYou are in a kitchen. An usual one. You can see a fridge. The fridge "
    "contains a yellow potato, a red apple and a carrot. You can make out an oven. You see "
    "a table. On the table you can see a cookbook and a knife. You can see a counter. The "
    "counter is vast. On the counter you make out a red hot pepper. You can see a stove. "
    "There is an open plain door leading south. There is an exit to the east.\n"
)
RECIPE = (
    "Recipe #1\n---------\nGather all following ingredients and follow the directions to "
    "prepare this tasty meal.\n\nIngredients:\n  red apple\n  carrot\n\nDirections:\n  "
    "slice the red apple\n  roast the carrot\n  prepare meal\n"
)
COMMANDS = [
    "close fridge", "cook carrot with oven", "cook carrot with stove", "drop carrot",
    "eat carrot", "examine cookbook", "examine knife", "go east", "go south",
    "insert carrot into fridge", "inventory", "look", "open fridge", "put carrot on table",
    "read cookbook", "take cookbook", "take knife", "take red apple",
    "take red hot pepper", "take yellow potato", "eat red apple", "drop knife",
    "slice carrot with knife", "chop red apple with knife",
]  # fmt: skip


def agent_prompt(lm, n_candidates: int) -> tuple[str, list[str]]:
    """An agent prompt of about 400 tokens (the default template, a kitchen, the recipe in
    the history) in the chat template, and its first `n_candidates` commands."""
    from agents.prompt import PromptTemplate

    commands = sorted(COMMANDS[:n_candidates])
    history = [
        ("look", OBSERVATION),
        ("examine cookbook", RECIPE[:290]),
        ("take carrot", "You take the carrot from the fridge."),
    ]
    prompt = PromptTemplate().render(
        objective="Gather the ingredients, follow the recipe and eat the meal.",
        observation=OBSERVATION,
        commands=commands,
        inventory="You are carrying: a carrot.",
        tips=["Read the cookbook first.", "Take the knife before you slice anything."],
        history=history,
    )
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    ), commands


def cost(args: argparse.Namespace) -> dict:
    from explainers import explain
    from workbench.models import load_model

    lm = load_model(None, device=args.device, dtype=args.dtype)
    text, commands = agent_prompt(lm, args.candidates)
    chosen = "slice carrot with knife" if "slice carrot with knife" in commands else commands[0]
    tokens = len(lm.tokenizer(text)["input_ids"])
    out: dict = {"device": str(lm.device), "dtype": str(lm.dtype), "prompt_tokens": tokens,
                 "candidates": len(commands), "steps": args.steps}  # fmt: skip
    if lm.device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(lm.device)
    runs = {
        "logprob": {"target": chosen},
        "choice": {"target": chosen, "candidates": commands, "objective": "choice"},
        "margin": {"target": chosen, "candidates": commands, "objective": "margin"},
    }
    for name, request in runs.items():
        times, exp = [], None
        for _ in range(args.repeats + 1):  # the first is a warm-up
            if lm.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            exp = explain(lm, text, "ig", steps=args.steps, **request)
            if lm.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out[name] = {
            "seconds": statistics.median(times[1:]),
            "all": [round(t, 3) for t in times[1:]],
            "target_tokens": exp.target_tokens,
            "delta": exp.delta,
            "expected": exp.expected,
        }
    out["choice_over_logprob"] = out["choice"]["seconds"] / out["logprob"]["seconds"]
    return out


def step(args: argparse.Namespace) -> dict:
    base = [
        sys.executable, "-m", "workbench.cli", "explain-step", "--run", args.run,
        "--episode", args.episode, "--step", str(args.step), "--db", args.db,
        "--device", args.device, "--dtype", args.dtype, "--format", "json",
    ]  # fmt: skip
    out: dict = {"step": [args.run, args.episode, args.step]}
    for name, extra, limit in [
        ("default", [], args.default_limit),
        ("ig_auto", ["--method", "ig", "--objective", "logprob", "--param", "steps=auto"],
         args.ig_limit),
    ]:  # fmt: skip
        start = time.perf_counter()
        try:
            done = subprocess.run(base + extra, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            out[name] = {"seconds": None, "timed_out_after": limit}
            continue
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            out[name] = {"seconds": seconds, "error": done.stderr.strip().splitlines()[-1:]}
            continue
        result = json.loads(done.stdout)
        out[name] = {
            "seconds": round(seconds, 2),
            "method": result["method"],
            "objective": result["objective"],
            "check": result["check"],
            "segments": result["segments"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--device", default="cpu")
    c.add_argument("--dtype", default="float32")
    c.add_argument("--candidates", type=int, default=20)
    c.add_argument("--steps", type=int, default=16)
    c.add_argument("--repeats", type=int, default=3)
    s = sub.add_parser("step")
    for name in ("--db", "--run", "--episode"):
        s.add_argument(name, required=True)
    s.add_argument("--step", type=int, required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--default-limit", type=int, default=600)
    s.add_argument("--ig-limit", type=int, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = cost(args) if args.what == "cost" else step(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
