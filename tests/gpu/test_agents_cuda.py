"""The agent side on CUDA: the local backend chooses the same commands in bf16 on the GPU as
in float32 on the CPU, a recorded decision explains the same way (explain-step), and probes
read the same features.

Models: test_ig's copy model (it answers with the one object word of its input, so each
prompt has a clear best command) and, for explain-step, a level-1 TextWorld game
($WORKBENCH_TEST_GAMES, a compiled game-set folder, else compiled here).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.explainers.conftest import copy_inputs
from tests.explainers.test_ig import OBJECTS
from tests.gpu.conftest import on_gpu
from workbench.llm.local import LocalLLM

DEVICE = os.environ.get("WORKBENCH_GPU_TEST_DEVICE", "cuda")


@pytest.fixture(scope="module")
def gpu_lm(copy_lm):
    return on_gpu(copy_lm, torch.bfloat16, "cpu" if DEVICE == "cpu" else "cuda:0")


def test_local_backend_chooses_the_same_commands_on_cuda(copy_lm, gpu_lm):
    inputs = copy_inputs(48, seed=5)
    prompts = [text for text, _ in inputs]
    candidates = [[f"take {o}" for o in OBJECTS] for _ in prompts]
    cpu = LocalLLM(copy_lm).score(prompts, candidates)
    gpu = LocalLLM(gpu_lm).score(prompts, candidates)
    cpu_choice = [int(np.argmax(s.logprobs)) for s in cpu]
    gpu_choice = [int(np.argmax(s.logprobs)) for s in gpu]
    assert gpu_choice == cpu_choice
    # bf16 keeps about 3 significant digits: log-likelihoods of a few tokens within 0.3 nats.
    np.testing.assert_allclose(
        [s.logprobs for s in gpu], [s.logprobs for s in cpu], atol=0.3, rtol=0.02
    )
    # Greedy generation agrees where the model is sure: the object word after Q.
    replies_cpu = LocalLLM(copy_lm).complete(prompts[:16], max_tokens=1)
    replies_gpu = LocalLLM(gpu_lm).complete(prompts[:16], max_tokens=1)
    assert [r.text for r in replies_gpu] == [r.text for r in replies_cpu]


def test_probe_on_cuda_reads_the_cpu_features(copy_lm, gpu_lm):
    from explainers.probing.features import extract_features
    from explainers.probing.probes import ProbeDataset, run_probe

    records = [
        {"text": text, "label": "milk" if answer == "milk" else "other", "group": f"g{i % 4}"}
        for i, (text, answer) in enumerate(copy_inputs(64, seed=9))
    ]
    data = ProbeDataset.from_records("copy:milk", records)
    cpu, _ = extract_features(copy_lm, data.examples, [0, 1, 2], batch_size=8)
    gpu, _ = extract_features(gpu_lm, data.examples, [0, 1, 2], batch_size=8)
    scale = np.abs(cpu).max()
    assert np.abs(gpu - cpu).max() <= 0.02 * scale
    a = run_probe(copy_lm, data, [0, 1, 2], seed=0)
    b = run_probe(gpu_lm, data, [0, 1, 2], seed=0)
    for x, y in zip(a.layers, b.layers):
        assert abs(x.accuracy - y.accuracy) <= 0.1, (x, y)


@pytest.fixture(scope="module")
def game(level1_games):
    return level1_games[0]


def test_explain_step_on_cuda_agrees_with_cpu(copy_lm, gpu_lm, game, tmp_path):
    import agents
    from agents.explain_step import explain_step
    from workbench.store import Store, runs
    from workbench.store import play as play_store

    store = Store(tmp_path / "w.duckdb")
    agents.play(
        [game], "llm", llm=LocalLLM(gpu_lm), select="choose", max_steps=3,
        store=store, run_name="gpu", workers=0,
    )  # fmt: skip
    episode = play_store.list_episodes(store, runs.get_run(store, "gpu", kind="play")["id"])[0]
    on_cpu = explain_step(store, "gpu", episode["id"], 1, lm=copy_lm, method="ig", steps=16)
    # The game's words are mostly unknown to the copy model's vocabulary, so the prompt has
    # no strong signal for bf16 to keep: float32 on CUDA must match the CPU closely, and
    # bf16 must run and explain the same action.
    fp32 = on_gpu(copy_lm, torch.float32, "cpu" if DEVICE == "cpu" else "cuda:0")
    on_cuda = explain_step(store, "gpu", episode["id"], 1, lm=fp32, method="ig", steps=16)
    in_bf16 = explain_step(store, "gpu", episode["id"], 1, lm=gpu_lm, method="ig", steps=16)
    assert on_cuda.action == on_cpu.action == in_bf16.action
    assert set(on_cuda.segments) == set(on_cpu.segments) == set(in_bf16.segments)
    for key, value in on_cpu.segments.items():
        assert on_cuda.segments[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    assert np.isfinite(list(in_bf16.segments.values())).all()
