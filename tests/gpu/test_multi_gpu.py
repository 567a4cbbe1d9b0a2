"""Two GPUs: work sharded over ranks (torchrun, NCCL) stores what one GPU stores, and one
model split over both GPUs (--device-map) explains exactly as it does on one.

float32 throughout, so "the same" can be tight (rtol 1e-3): sharding changes which inputs
share a padded batch, and in bf16 another batch shape may round differently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers.registry import known_methods
from tests.explainers.conftest import copy_inputs
from tests.gpu.launch import torchrun, workbench
from tests.gpu.test_methods_cuda import TARGET, TEXT, outcome

SPLIT = {  # the copy model's two blocks on two GPUs: embeddings on one, logits on the other
    "model.embed_tokens": 0,
    "model.rotary_emb": 0,
    "model.layers.0": 0,
    "model.layers.1": 1,
    "model.norm": 1,
    "lm_head": 1,
}


@pytest.fixture(scope="module")
def decisions(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "copy.jsonl"
    lines = [json.dumps({"text": t, "target": a}) for t, a in copy_inputs(40, seed=21)]
    path.write_text("\n".join(lines) + "\n")
    return path


def stored_run(db, name):
    from workbench.store import Store, runs
    from workbench.store.explanations import run_explanations

    store = Store(db, read_only=True)
    return {
        r["extras"]["item"]: r for r in run_explanations(store, runs.get_run(store, name)["id"])
    }


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_explain_dataset_on_two_gpus_stores_what_one_gpu_stores(
    two_gpus, tmp_path, decisions, copy_lm_dir
):
    args = [
        "explain", "--dataset", str(decisions), "--model", str(copy_lm_dir), "--device", "cuda",
        "--dtype", "float32", "--steps", "16", "--format", "json",
    ]  # fmt: skip
    one = workbench(*args, "--db", str(tmp_path / "one.duckdb"))
    assert one.returncode == 0, one.stderr
    two = workbench(*args, "--db", str(tmp_path / "two.duckdb"), "--gpus", "2")
    assert two.returncode == 0, two.stderr
    name = last_json(one.stdout)["run"]
    assert last_json(two.stdout)["run"] == name
    a, b = stored_run(tmp_path / "one.duckdb", name), stored_run(tmp_path / "two.duckdb", name)
    assert sorted(b) == sorted(a) == list(range(40))
    for item, record in a.items():
        np.testing.assert_allclose(b[item]["scores"], record["scores"], rtol=1e-3, atol=1e-5)


def test_probe_on_two_gpus_stores_what_one_gpu_stores(two_gpus, tmp_path, copy_lm_dir):
    from workbench.store import Store
    from workbench.store.probes import get_probe, list_probes

    records = [
        {"text": t, "label": "milk" if a == "milk" else "other", "group": f"g{i % 4}"}
        for i, (t, a) in enumerate(copy_inputs(64, seed=9))
    ]
    data = tmp_path / "probe.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    args = [
        "probe", "--dataset", str(data), "--model", str(copy_lm_dir), "--layers", "0-2",
        "--device", "cuda", "--dtype", "float32", "--format", "json",
    ]  # fmt: skip
    one = workbench(*args, "--db", str(tmp_path / "one.duckdb"))
    assert one.returncode == 0, one.stderr
    two = torchrun(*args, "--db", str(tmp_path / "two.duckdb"), nproc=2)
    assert two.returncode == 0, two.stderr
    a = get_probe(Store(tmp_path / "one.duckdb", read_only=True), last_json(one.stdout)["id"])
    store = Store(tmp_path / "two.duckdb", read_only=True)
    b = get_probe(store, last_json(two.stdout)["id"])
    assert len(list_probes(store)) == 1  # rank 0 alone wrote
    for x, y in zip(a["layers"], b["layers"]):
        assert x == pytest.approx(y, abs=1e-9)


def test_more_gpus_than_the_machine_has_is_one_line(tmp_path, decisions, copy_lm_dir):
    # (--gpus splits a data set; with one --text it is refused before GPUs are counted.)
    n = torch.cuda.device_count() + 1
    db = tmp_path / "none.duckdb"
    done = workbench(
        "explain", "--dataset", str(decisions), "--model", str(copy_lm_dir),
        "--db", str(db), "--gpus", str(n),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: --gpus {n} was asked for but this machine has {n - 1} GPU(s)"
    )
    assert not db.exists()  # nothing half-written


@pytest.fixture(scope="module")
def split_and_whole(two_gpus, copy_lm_dir):
    from workbench.models import load_model

    split = load_model(copy_lm_dir, device="cuda", dtype="float32", device_map=SPLIT)
    whole = load_model(copy_lm_dir, device="cuda", dtype="float32")
    return split, whole


@pytest.mark.parametrize("name", sorted(known_methods()))
def test_every_method_through_a_model_split_over_two_gpus(two_gpus, split_and_whole, name):
    split, whole = split_and_whole
    assert split.model.lm_head.weight.device.index == 1
    assert split.device == torch.device("cuda", 0)
    a, b = outcome(whole, name), outcome(split, name)
    if isinstance(a, Exception):  # the method refuses this input: the same way when split
        assert str(b) == str(a)
        return
    assert b.scores.shape == a.scores.shape
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-3, atol=1e-4)


def test_dataset_ig_and_probe_features_through_the_split_model(two_gpus, split_and_whole):
    from explainers.attribution.ig_batch import explain_dataset
    from explainers.probing.features import extract_features
    from explainers.probing.probes import ProbeExample

    split, whole = split_and_whole
    items = [{"text": t, "target": a} for t, a in copy_inputs(12, seed=4)]
    expected, got = explain_dataset(whole, items, steps=16), explain_dataset(split, items, steps=16)
    for x, y in zip(expected, got):
        np.testing.assert_allclose(y.scores, x.scores, rtol=1e-3, atol=1e-5)
    examples = [ProbeExample(t, a) for t, a in copy_inputs(16, seed=6)]
    fa, _ = extract_features(whole, examples, [0, 1, 2], batch_size=4)
    fb, _ = extract_features(split, examples, [0, 1, 2], batch_size=4)
    np.testing.assert_allclose(fb, fa, rtol=1e-4, atol=1e-5)


def test_cli_device_map_auto_explains(tmp_path, copy_lm_dir):
    done = workbench(
        "explain", "--text", TEXT, "--target", TARGET, "--model", str(copy_lm_dir),
        "--device-map", "auto", "--steps", "16", "--no-save", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["method"] == "ig"


def test_play_on_two_gpus_plays_what_one_gpu_plays(two_gpus, tmp_path, copy_lm_dir):
    import os
    from pathlib import Path

    import games
    from workbench.store import Store
    from workbench.store import play as play_store
    from workbench.store import runs as runs_store

    folder = os.environ.get("WORKBENCH_TEST_GAMES")
    if not folder:
        pytest.skip("needs $WORKBENCH_TEST_GAMES (a compiled game-set folder)")
    found = games.list_games(Path(folder))[:4]
    args = ["play", *[a for g in found for a in ("--games", str(g.path))]]
    args += ["--agent", "llm", "--model", str(copy_lm_dir), "--device", "cuda"]
    args += ["--dtype", "float32", "--max-steps", "4", "--run-name", "p", "--workers", "0"]
    one = workbench(*args, "--db", str(tmp_path / "one.duckdb"))
    assert one.returncode == 0, one.stderr
    two = workbench(*args, "--db", str(tmp_path / "two.duckdb"), "--gpus", "2")
    assert two.returncode == 0, two.stderr

    def actions(db):
        store = Store(db, read_only=True)
        run = runs_store.get_run(store, "p", kind="play")
        out = {}
        for ep in play_store.list_episodes(store, run["id"]):
            steps = play_store.get_steps(store, ep["id"])
            out[ep["game"]] = [s["action"] for s in steps]
        return out

    assert actions(tmp_path / "two.duckdb") == actions(tmp_path / "one.duckdb")
    assert len(actions(tmp_path / "one.duckdb")) == len(found)


def test_experiment_on_two_gpus_stores_what_one_gpu_stores(two_gpus, tmp_path, copy_lm_dir):
    """`experiment --gpus 2`: each trial's games split over two GPUs (a model replica on
    each, NCCL), tips written on rank 0 between trials: the same episodes, actions, tip
    sets and table as one GPU."""
    import os
    from pathlib import Path

    import games
    from tests.agents.test_distributed_agents import stored

    folder = os.environ.get("WORKBENCH_TEST_GAMES")
    if not folder:
        pytest.skip("needs $WORKBENCH_TEST_GAMES (a compiled game-set folder)")
    found = games.list_games(Path(folder))
    if len(found) < 3:
        pytest.skip("needs three compiled games")
    args = [
        "experiment", "introspective-tips", "--train", str(found[0].path),
        "--test", str(found[1].path), "--trials", "2", "--max-steps", "4",
        "--parallel", "2", "--name", "it", "--model", str(copy_lm_dir), "--device", "cuda",
        "--dtype", "float32", "--format", "json",
    ]  # fmt: skip
    one = workbench(*args, "--db", str(tmp_path / "one.duckdb"))
    assert one.returncode == 0, one.stderr
    two = workbench(*args, "--db", str(tmp_path / "two.duckdb"), "--gpus", "2")
    assert two.returncode == 0, two.stderr
    first, second = stored(tmp_path / "one.duckdb", "it"), stored(tmp_path / "two.duckdb", "it")
    assert len(first["train"]["episodes"]) == 8 and len(first["test"]["episodes"]) == 2
    assert second == first
