"""Multi-GPU benchmarks: the same command on 1, 2, 4 GPUs of one machine, and IG through one
model spread over two GPUs.

- `ig`: `workbench explain --dataset` (512 recorded-decision-like inputs: prompts of 40-200
  tokens, 1-4 target tokens, as in ig_dataset_bench.py) under torchrun with N processes, on a
  random-initialised TinyLlama-1.1B shape (2048 wide, 22 layers, GQA 32/4 heads, 5632 MLP)
  with SmolLM2's 49,152-token vocabulary, bf16, 32 knots, EOS baseline. Throughput is the
  command's own inputs/s (compute and store, after the model loaded); results are compared
  with the 1-GPU run's, input by input.
- `probe`: probe feature extraction (every layer's residual at each example's position) over
  the textworld-state:carried data of a game set, N processes, same model; extraction time
  between barriers, features compared with the 1-GPU run's.
- `play`: `workbench play --agent llm` (choose mode) with a random SmolLM2-135M shape, the
  same --parallel per GPU, steps/s as the command reports it.
- `device-map`: IG through a random Llama shape too large for one GPU in bf16 (its weights
  alone exceed a card), placed over two GPUs by accelerate's `infer_auto_device_map` and
  `dispatch_model` (what `--device-map auto` does inside `from_pretrained`; built in memory
  because writing and reading a 100 GB checkpoint would take longer than the benchmark).

    python benchmarks/multi_gpu_bench.py ig --gpus 1 2 4 --inputs 512
    python benchmarks/multi_gpu_bench.py probe --gpus 1 4 --games game-sets/l3
    python benchmarks/multi_gpu_bench.py play --gpus 1 2 --games game-sets/l1
    python benchmarks/multi_gpu_bench.py device-map --prompt 128 --targets 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from shapes import SHAPES as ALL_SHAPES  # noqa: E402
from shapes import llama_config, random_llama  # noqa: E402

SHAPES = ("1.1b", "smollm", "tiny")  # tiny: a CPU smoke run of this script (--device cpu)
STEPS = 31  # 32 knots


def tokenizer_dir(given: str | None) -> str:
    if given:
        return given
    from workbench.model_files import default_model_dir

    return str(default_model_dir())


def model_dir(shape: str, tokenizer: str, work: Path, device: str = "cuda") -> Path:
    """A random-initialised Llama of `shape` saved in bf16 (once per work folder)."""
    from transformers import AutoTokenizer

    target = work / f"random-{shape}"
    if (target / "config.json").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(tokenizer)
    model = random_llama(
        shape,
        len(tok),
        device,
        torch.bfloat16,
        tie_word_embeddings=shape == "smollm",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(target)
    tok.save_pretrained(target)
    del model
    torch.cuda.empty_cache()
    return target


def torchrun(
    nproc: int, args: list[str], module: bool = True
) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc)]
    cmd += ["-m", "workbench", *args] if module else args
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode})")
    return done, wall


def stored(db: Path, run_name: str) -> dict[int, dict]:
    from workbench.store import Store, runs
    from workbench.store.explanations import run_explanations

    store = Store(db, read_only=True)
    run = runs.get_run(store, run_name)
    return {r["extras"]["item"]: r for r in run_explanations(store, run["id"])}


def compare_scores(base: dict[int, dict], other: dict[int, dict]) -> dict:
    """Per-input agreement: smallest per-row Pearson r, largest |difference| relative to the
    row's largest |score|, and whether every input is there once."""
    rs, rel = [], []
    for item, record in base.items():
        a, b = np.asarray(record["scores"]), np.asarray(other[item]["scores"])
        for x, y in zip(a, b):
            if np.ptp(x) > 0 and np.ptp(y) > 0:
                rs.append(float(np.corrcoef(x, y)[0, 1]))
            rel.append(float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return {
        "same_inputs": sorted(base) == sorted(other),
        "min_r": round(min(rs), 5) if rs else None,
        "median_r": round(float(np.median(rs)), 6) if rs else None,
        "max_rel_diff": round(max(rel), 5) if rel else None,
    }


def bench_ig(args) -> dict:
    from ig_dataset_bench import make_items

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.shape or "1.1b", tokenizer_dir(args.tokenizer), work, args.device)
    data = work / f"decisions-{args.inputs}.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in make_items(args.inputs)))
    results, base = {}, None
    for n in args.gpus:
        db = work / f"ig-{n}.duckdb"
        db.unlink(missing_ok=True)
        command = [
            "explain", "--dataset", str(data), "--model", str(model), "--device", args.device,
            "--steps", str(STEPS), "--baseline", "eos", "--db", str(db), "--format", "json",
        ]  # fmt: skip
        done, wall = torchrun(n, command)
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        row = {
            "gpus": n,
            "seconds": summary["seconds"],
            "inputs_per_s": summary["inputs_per_second"],
            "wall_s": round(wall, 1),
        }
        here = stored(db, summary["run"])
        if base is None:
            base = here
        else:
            row["vs_1_gpu"] = compare_scores(base, here)
        results[n] = row
        print(json.dumps(row), flush=True)
    first = results[args.gpus[0]]["inputs_per_s"]
    for row in results.values():
        row["speedup"] = round(row["inputs_per_s"] / first, 2)
    return {
        "benchmark": "ig",
        "inputs": args.inputs,
        "command": "explain --dataset",
        "runs": results,
    }


def probe_worker(args) -> None:
    """Under torchrun: time `extract_sharded` between barriers; rank 0 writes the result."""
    from explainers.probing.probes import ProbeDataset, extract_sharded
    from workbench import distributed
    from workbench.anatomy import model_anatomy
    from workbench.models import load_model

    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    distributed.init("nccl" if on_gpu else "gloo")  # join the torchrun job: loading does not
    lm = load_model(args.model, device=args.device)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    data = ProbeDataset.from_jsonl(args.data)
    layers = model_anatomy(lm).layers("resid")
    extract_sharded(lm, data.examples[: 2 * distributed.world().size], layers, 4)  # warm-up
    sync()
    distributed.barrier()
    start = time.perf_counter()
    features, _ = extract_sharded(lm, data.examples, layers, args.batch_size)
    sync()
    distributed.barrier()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        np.save(args.features, features.astype(np.float32))
        print(
            json.dumps({"examples": len(data.examples), "layers": len(layers), "seconds": seconds})
        )


def bench_probe(args) -> dict:
    from explainers.probing.probes import ProbeDataset
    from games.probing_data import state_records

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.shape or "1.1b", tokenizer_dir(args.tokenizer), work, args.device)
    if args.data:  # made before (games.probing_data.state_records, written as JSONL)
        data = Path(args.data)
    else:
        data = work / "carried.jsonl"
        records = state_records(
            Path(args.games),
            "textworld-state:carried",
            random_episodes=args.episodes,
            max_steps=args.max_steps,
            history=2,
            seed=0,
        )
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
    ProbeDataset.from_jsonl(data)  # valid before any GPU work
    results, base = {}, None
    for n in args.gpus:
        out = work / f"features-{n}.npy"
        worker = [str(Path(__file__).resolve()), "probe-worker", "--model", str(model)]
        worker += ["--data", str(data), "--features", str(out), "--batch-size", "16"]
        worker += ["--device", args.device]
        done, wall = torchrun(n, worker, module=False)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(gpus=n, wall_s=round(wall, 1))
        row["examples_per_s"] = round(row["examples"] / row["seconds"], 1)
        features = np.load(out)
        if base is None:
            base = features
        else:
            scale = float(np.abs(base).max())
            row["max_abs_diff_vs_1_gpu"] = float(np.abs(features - base).max())
            row["relative_to_max"] = float(np.abs(features - base).max() / scale)
        results[n] = row
        print(json.dumps(row), flush=True)
    first = results[args.gpus[0]]["examples_per_s"]
    for row in results.values():
        row["speedup"] = round(row["examples_per_s"] / first, 2)
    return {"benchmark": "probe", "task": "textworld-state:carried", "runs": results}


def bench_play(args) -> dict:
    from workbench.store import Store, runs
    from workbench.store import play as play_store

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.shape or "smollm", tokenizer_dir(args.tokenizer), work, args.device)
    results, base = {}, None
    for n in args.gpus:
        db = work / f"play-{n}.duckdb"
        db.unlink(missing_ok=True)
        command = [
            "play", "--games", args.games, "--agent", "llm", "--model", str(model),
            "--device", args.device, "--parallel", str(args.parallel), "--max-steps",
            str(args.max_steps), "--run-name", "bench", "--db", str(db),
        ]  # fmt: skip
        done, wall = torchrun(n, command)
        match = re.search(r"([\d.]+) steps/s", done.stderr)
        store = Store(db, read_only=True)
        run = runs.get_run(store, "bench", kind="play")
        episodes = play_store.list_episodes(store, run["id"])
        actions = {
            e["game"]: [s["action"] for s in play_store.get_steps(store, e["id"])] for e in episodes
        }
        row = {
            "gpus": n,
            "episodes": len(episodes),
            "steps": sum(len(a) for a in actions.values()),
            "steps_per_s": float(match.group(1)) if match else None,
            "wall_s": round(wall, 1),
        }
        if base is None:
            base = actions
        else:
            row["episodes_as_on_1_gpu"] = sum(actions.get(g) == a for g, a in base.items())
        results[n] = row
        print(json.dumps(row), flush=True)
    first = results[args.gpus[0]]["steps_per_s"]
    for row in results.values():
        row["speedup"] = round(row["steps_per_s"] / first, 2) if first else None
    return {"benchmark": "play", "parallel_per_gpu": args.parallel, "runs": results}


def bench_device_map(args) -> dict:
    from accelerate import dispatch_model, infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory, set_module_tensor_to_device
    from transformers import AutoTokenizer, LlamaForCausalLM

    from explainers import explain
    from workbench.models import from_pretrained_objects

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(args.tokenizer))
    card = torch.cuda.get_device_properties(0).total_memory
    hidden, _, heads, kv, inter = ALL_SHAPES["34b"]
    per_layer = 2 * hidden * hidden + 2 * hidden * (hidden // heads) * kv + 3 * hidden * inter
    layers = math.ceil(1.15 * card / (2 * per_layer))  # bf16 weights 15% over one card
    config = llama_config("34b", len(tok), num_hidden_layers=layers)
    with init_empty_weights():
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    # What from_pretrained(device_map="auto") does: balance the layers over the GPUs.
    blocks = ["LlamaDecoderLayer"]
    budget = get_balanced_memory(
        model,
        max_memory={i: torch.cuda.mem_get_info(i)[0] for i in (0, 1)},
        no_split_module_classes=blocks,
        dtype=torch.bfloat16,
    )
    device_map = infer_auto_device_map(
        model, max_memory=budget, no_split_module_classes=blocks, dtype=torch.bfloat16
    )
    start = time.perf_counter()
    torch.manual_seed(0)
    for name, param in list(model.named_parameters()):
        owner = next(
            d for key, d in sorted(device_map.items(), key=lambda kv: -len(kv[0]))
            if key == "" or name == key or name.startswith(key + ".")
        )  # fmt: skip
        value = torch.empty(param.shape, dtype=torch.bfloat16, device=f"cuda:{owner}")
        if name.endswith("norm.weight"):
            value.fill_(1.0)
        else:
            value.normal_(0.0, 0.02)
        set_module_tensor_to_device(model, name, f"cuda:{owner}", value=value)
    model = dispatch_model(model, device_map=device_map)  # buffers follow their modules
    build_s = time.perf_counter() - start
    lm = from_pretrained_objects(model, tok, name=f"random-llama-{n_params / 1e9:.0f}b")
    weights = {i: torch.cuda.memory_allocated(i) for i in (0, 1)}
    prompt, target = " the" * args.prompt, " the" * args.targets
    explain(lm, " the" * 16, method="ig", target=" the", steps=3, baseline="eos")  # warm-up
    for i in (0, 1):
        torch.cuda.reset_peak_memory_stats(i)
        torch.cuda.synchronize(i)
    start = time.perf_counter()
    exp = explain(lm, prompt, method="ig", target=target, steps=STEPS, baseline="eos")
    for i in (0, 1):
        torch.cuda.synchronize(i)
    seconds = time.perf_counter() - start
    gib = 2**30
    return {
        "benchmark": "device-map",
        "params_b": round(n_params / 1e9, 1),
        "layers": layers,
        "card_gib": round(card / gib, 1),
        "weights_gib_bf16": round(2 * n_params / gib, 1),
        "placement": {str(k): v for k, v in list(device_map.items())[:3]} | {"...": "..."},
        "layers_per_gpu": {
            i: sum(1 for k, v in device_map.items() if v == i and ".layers." in f".{k}")
            for i in (0, 1)
        },
        "build_s": round(build_s, 1),
        "prompt_tokens": args.prompt,
        "target_tokens": args.targets,
        "knots": STEPS + 1,
        "seconds": round(seconds, 2),
        "weights_gib": {i: round(w / gib, 1) for i, w in weights.items()},
        "peak_gib": {i: round(torch.cuda.max_memory_allocated(i) / gib, 1) for i in (0, 1)},
        "max_abs_delta": float(np.max(np.abs(exp.delta))) if exp.delta else None,
        "device": torch.cuda.get_device_name(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["ig", "probe", "play", "device-map", "probe-worker"])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--games", default=None)
    parser.add_argument("--episodes", type=int, default=2, help="probe: random episodes a game")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=16, help="play: games a GPU")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2)")
    parser.add_argument("--work", default="/tmp/multi-gpu-bench")
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: the benchmark's")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run (gloo, --shape tiny)")
    parser.add_argument("--out", default=None, help="append the result (JSON) to this file")
    parser.add_argument("--model", default=None)  # probe-worker
    parser.add_argument("--data", default=None)  # probe-worker
    parser.add_argument("--features", default=None)  # probe-worker
    parser.add_argument("--batch-size", type=int, default=16)  # probe-worker
    args = parser.parse_args()
    if args.what == "probe-worker":
        probe_worker(args)
        return
    run = {"ig": bench_ig, "probe": bench_probe, "play": bench_play, "device-map": bench_device_map}
    result = run[args.what](args)
    result["card"] = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result["torch"] = torch.__version__
    result["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(result)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
