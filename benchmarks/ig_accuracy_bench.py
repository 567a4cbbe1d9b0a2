"""IG accuracy for the cost: `steps="auto"` against captum's search for a sufficient n_steps.

A user wants integrated gradients whose completeness error |sum(attributions) - expected|
is within 5% of |expected| = |f(x) - f(x')| (the workbench's DEFAULT_TOLERANCE, with its
1e-3 absolute floor). On the default model (SmolLM2-135M-Instruct, float32, CPU) and ten
prompts of this script's own (recorded-agent-style decisions and plain factual prompts,
12-37 tokens), each explained for the model's greedy next token (the chat-template agent
decisions: the first token of the right command):

- captum: `LayerIntegratedGradients` on the embedding layer, its default Gauss-Legendre
  rule, all steps of one call in batches of the workbench's CPU token budget
  (`internal_batch_size` = 4096 // P), `return_convergence_delta=True`. The objective is the
  workbench's: log p(target | prompt), logits only at the last position (`logits_to_keep`).
  The baseline is the workbench's "pad": the pad token's embedding at every position except
  special tokens (the chat scaffold), which keep their own. n_steps runs through 16, 32, 64,
  ..., --max-steps until the error is within tolerance. captum's cost for a prompt is the
  time of the run at the smallest sufficient n_steps (what a user who already knew it
  would pay); the search's total time is reported too. A prompt that --max-steps does not
  bring within tolerance counts the time at --max-steps ("not reached").
- workbench: `explainers.explain(lm, text, target=..., method="ig")`, i.e. `steps="auto"`
  with the default tolerance and baseline; its knots, time, error and status.

Both run in float32 with the same torch thread count, after one warm-up each; every timed
run runs once (the runs are seconds to minutes long). Times are the process's CPU seconds
(`time.process_time`), single-threaded by default: on a shared machine wall time swings
several-fold with the load (captum's 16 steps on one prompt took 1.1 s and 30 s), while a
single-threaded process's CPU time stays within 5-15%. Wall seconds are kept in the
JSON too.

    python benchmarks/ig_accuracy_bench.py --prompts 2 --max-steps 128     # a quick check
    python benchmarks/ig_accuracy_bench.py --out ig_accuracy.json         # the benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chat(user: str) -> str:
    """The agent's real input: the acting prompt inside SmolLM2's chat template (no system
    turn, to keep prompts short; its special tokens keep their embedding in the baseline)."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


# (name, prompt, target): target None is the model's greedy next token; the chat-template
# decisions explain the first token of the command the agent should choose.
PROMPTS: list[tuple[str, str, str | None]] = [
    ("fridge", "The milk is in the fridge. To get the milk, open the", None),
    ("capital", "Question: What is the capital of France?\nAnswer: The capital of France is", None),
    (
        "agent-kitchen",
        chat("Goal: eat the apple. A closed fridge is here.\nCommands: open fridge, go west"),
        "open",
    ),
    ("boils", "Water freezes at zero degrees Celsius and boils at one hundred degrees", None),
    (
        "agent-key",
        "Goal: open the door. A key is on the table.\nCommands: take key, go north.\nCommand:",
        None,
    ),
    (
        "planet",
        "The Pacific Ocean is the largest ocean on Earth. The largest planet in our solar "
        "system is",
        None,
    ),
    (
        "agent-history",
        chat(
            "Goal: cook the potato.\n> take potato\nTaken. A stove is here.\n"
            "Commands: cook potato, go east"
        ),
        "cook",
    ),
    ("shakespeare", "Shakespeare wrote many plays, including Hamlet, Macbeth and Romeo and", None),
    (
        "agent-cellar",
        "Goal: find the lantern. A lantern hangs on the wall.\nCommands: take lantern, go up.\n"
        "Command:",
        None,
    ),
    ("sun", "Every morning the sun rises in the east and sets in the", None),
]

STEP_GRID_START = 16


def step_grid(max_steps: int) -> list[int]:
    steps, n = [], STEP_GRID_START
    while n <= max_steps:
        steps.append(n)
        n *= 2
    return steps


def greedy_target(lm, text: str) -> str:
    """The model's top next token as text that tokenizes back to that one token."""
    from explainers.objective import prepare

    obj = prepare(lm, text)
    token_id = int(obj.target_ids[0])
    target = lm.tokenizer.decode([token_id])
    ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if ids != [token_id]:
        raise SystemExit(f"greedy token {token_id} of {text[:40]!r} does not round-trip")
    return target


class CaptumIG:
    """captum's LayerIntegratedGradients for one prompt, configured as the workbench's IG."""

    def __init__(self, lm, text: str, target: str, method: str):
        from captum.attr import LayerIntegratedGradients

        from explainers.objective import prepare

        obj = prepare(lm, text, target)
        self.model, self.method = lm.model, method
        self.ids = obj.prompt_ids.unsqueeze(0)
        self.target_id = int(obj.target_ids[0])
        pad = lm.tokenizer.pad_token_id
        # The workbench's "pad" baseline: special tokens keep their real embedding.
        self.baseline = torch.where(obj.special_mask, obj.prompt_ids, pad).unsqueeze(0)
        self.n_special = int(obj.special_mask.sum())
        self.P = int(self.ids.shape[1])
        self.batch = max(1, 4096 // self.P)  # the workbench's CPU_TOKENS_PER_BATCH
        self.lig = LayerIntegratedGradients(self.forward, lm.model.get_input_embeddings())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
        return torch.log_softmax(logits, dim=-1)[:, self.target_id]

    def expected(self) -> float:
        with torch.no_grad():
            return float(self.forward(self.ids)[0] - self.forward(self.baseline)[0])

    def run(self, n_steps: int) -> tuple[float, float, float]:
        """(CPU seconds, wall seconds, sum of attributions)."""
        cpu, wall = time.process_time(), time.perf_counter()
        attr, _ = self.lig.attribute(
            self.ids,
            baselines=self.baseline,
            n_steps=n_steps,
            method=self.method,
            internal_batch_size=self.batch,
            return_convergence_delta=True,  # what tells a user whether n_steps sufficed
        )
        return time.process_time() - cpu, time.perf_counter() - wall, float(attr.sum())


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="first N prompts")
    parser.add_argument("--max-steps", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument(
        "--captum-method",
        default="gausslegendre",
        help="captum's rule (default: its default, gausslegendre)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not 1 <= args.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be 1 to {len(PROMPTS)}")
    grid = step_grid(args.max_steps)
    if not grid:
        raise SystemExit(f"--max-steps must be >= {STEP_GRID_START}")
    torch.set_num_threads(args.threads)

    import captum

    from explainers import explain
    from explainers.explanation import DEFAULT_TOLERANCE, completeness_tolerance
    from workbench.models import load_model

    tolerance = DEFAULT_TOLERANCE
    lm = load_model(device="cpu", dtype="float32", progress=False)
    load_before = os.getloadavg()
    print(
        f"{lm.name}, float32, cpu, {args.threads} threads, captum {captum.__version__} "
        f"({args.captum_method}), tolerance {tolerance:.0%}, n_steps grid {grid}, "
        f"load average {load_before[0]:.1f}",
        flush=True,
    )

    prompts = PROMPTS[: args.prompts]
    targets = [t if t is not None else greedy_target(lm, text) for _, text, t in prompts]

    # Warm-up once each (first prompt, small runs).
    CaptumIG(lm, prompts[0][1], targets[0], args.captum_method).run(STEP_GRID_START)
    explain(lm, prompts[0][1], target=targets[0], method="ig", steps=4)

    rows = []
    for (name, text, _), target in zip(prompts, targets):
        cap = CaptumIG(lm, text, target, args.captum_method)
        expected = cap.expected()
        tol = completeness_tolerance(expected, tolerance)
        search = []
        for n in grid:
            cpu, wall, total = cap.run(n)
            error = abs(total - expected)
            search.append(
                {
                    "n_steps": n,
                    "seconds": round(cpu, 3),
                    "wall_seconds": round(wall, 3),
                    "error": error,
                    "relative_error": error / max(abs(expected), 1e-12),
                }
            )
            print(
                f"  {name}: captum n_steps={n}: {cpu:.2f} s CPU ({wall:.2f} s wall), "
                f"error {error:.4f} ({pct(error / max(abs(expected), 1e-12))})",
                flush=True,
            )
            if error <= tol:
                break
        reached = search[-1]["error"] <= tol
        chosen = search[-1]

        cpu = time.process_time()
        exp = explain(lm, text, target=target, method="ig", steps="auto")
        cpu = time.process_time() - cpu
        wb_error = abs(exp.delta[0])
        wb = {
            "knots": exp.params["knots"],
            "seconds": round(cpu, 3),
            "wall_seconds": round(exp.seconds, 3),
            "error": wb_error,
            "relative_error": wb_error / max(abs(exp.expected[0]), 1e-12),
            "status": exp.status,
        }
        rows.append(
            {
                "name": name,
                "prompt": text,
                "target": target,
                "prompt_tokens": cap.P,
                "special_tokens": cap.n_special,
                "expected_captum": expected,
                "expected_workbench": exp.expected[0],
                "captum": {
                    "reached": reached,
                    "n_steps": chosen["n_steps"],
                    "seconds": chosen["seconds"],
                    "wall_seconds": chosen["wall_seconds"],
                    "error": chosen["error"],
                    "relative_error": chosen["relative_error"],
                    "search_seconds": round(sum(s["seconds"] for s in search), 3),
                    "search_wall_seconds": round(sum(s["wall_seconds"] for s in search), 3),
                    "search": search,
                },
                "workbench": wb,
            }
        )
        print(
            f"{name}: P={cap.P}, target {target!r}, expected {expected:.4f} (workbench "
            f"{exp.expected[0]:.4f}); captum n_steps={chosen['n_steps']}"
            f"{'' if reached else ' (not reached)'} {chosen['seconds']:.2f} s; workbench "
            f"{wb['knots']} knots {cpu:.2f} s, error {pct(wb['relative_error'])}, {wb['status']}",
            flush=True,
        )

    totals = {
        key: round(sum(r[side][field] for r in rows), 3)
        for key, side, field in (
            ("captum_seconds", "captum", "seconds"),
            ("captum_search_seconds", "captum", "search_seconds"),
            ("workbench_seconds", "workbench", "seconds"),
            ("captum_wall_seconds", "captum", "wall_seconds"),
            ("captum_search_wall_seconds", "captum", "search_wall_seconds"),
            ("workbench_wall_seconds", "workbench", "wall_seconds"),
        )
    }
    ratio = totals["captum_seconds"] / totals["workbench_seconds"]
    search_ratio = totals["captum_search_seconds"] / totals["workbench_seconds"]
    print()
    print(
        "| prompt | P | expected (nats) | captum n_steps | captum time | captum error "
        "| captum search time | workbench knots | workbench time | workbench error | status |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c, w = r["captum"], r["workbench"]
        steps = f"{c['n_steps']}" if c["reached"] else f"not reached ({c['n_steps']})"
        print(
            f"| {r['name']} | {r['prompt_tokens']} | {r['expected_captum']:+.3f} | {steps} "
            f"| {c['seconds']:.2f} s | {pct(c['relative_error'])} "
            f"| {c['search_seconds']:.2f} s | {w['knots']} | {w['seconds']:.2f} s "
            f"| {pct(w['relative_error'])} | {w['status']} |"
        )
    print(
        f"| **total** | | | | **{totals['captum_seconds']:.2f} s** | "
        f"| **{totals['captum_search_seconds']:.2f} s** | "
        f"| **{totals['workbench_seconds']:.2f} s** | | |"
    )
    n_reached = sum(r["captum"]["reached"] for r in rows)
    n_ok = sum(r["workbench"]["status"] == "ok" for r in rows)
    print()
    print(f"captum reached {tolerance:.0%} on {n_reached} of {len(rows)} prompts by {grid[-1]}")
    print(f"workbench status ok on {n_ok} of {len(rows)} prompts")
    print(f"captum at its smallest sufficient n_steps / workbench (CPU time): {ratio:.2f}x")
    print(f"captum's whole search / workbench (CPU time): {search_ratio:.2f}x")
    wall_ratio = totals["captum_wall_seconds"] / totals["workbench_wall_seconds"]
    print(f"the same in wall time: {wall_ratio:.2f}x")

    if args.out:
        result = {
            "model": lm.name,
            "dtype": "float32",
            "device": "cpu",
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "captum_version": captum.__version__,
            "captum_method": args.captum_method,
            "tolerance": tolerance,
            "grid": grid,
            **totals,
            "ratio": round(ratio, 3),
            "search_ratio": round(search_ratio, 3),
            "prompts": rows,
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
