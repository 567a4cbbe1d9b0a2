"""torch.distributed on the CPU (gloo), as CI runs it: the work split by `shard`/`run_chunks`,
`explain --dataset` and `probe` under `torchrun --nproc-per-node 2` storing what one process
stores, and a run whose rank 1 is killed mid-way resuming with nothing lost or duplicated.

The kill is deterministic: `torchrun(crash="1:1")` makes rank 1 SIGKILL itself right after
computing chunk 1, before its results reach rank 0, which by then has stored chunk 0.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.conftest import WORDS
from tests.gpu.launch import torchrun
from tests.run_cli import run_inprocess
from workbench import distributed
from workbench.errors import WorkbenchError

GLOO = {"CUDA_VISIBLE_DEVICES": ""}  # the CPU path even on a machine with GPUs


# -- the split ---------------------------------------------------------------------------


def test_shard_bounds_cover_every_item_once_and_balance_weights():
    assert distributed.shard_bounds(10, None, 3) == [(0, 3), (3, 6), (6, 10)]
    assert distributed.shard_bounds(2, None, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    # One heavy item: it gets a block of its own rather than joining the light ones.
    assert distributed.shard_bounds(5, [1, 1, 1, 1, 10], 2) == [(0, 4), (4, 5)]
    rng = random.Random(0)
    for _ in range(200):
        n, size = rng.randint(0, 12), rng.randint(1, 5)
        bounds = distributed.shard_bounds(n, [rng.random() for _ in range(n)], size)
        assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))


def test_one_process_runs_chunk_by_chunk_and_resumes():
    assert distributed.world() == distributed.World(0, 1, 0)
    saved = []
    indices, squares = distributed.run_resumable(
        list(range(7)),
        lambda part: [x * x for x in part],
        stored=lambda: [1, 4],
        save=lambda i, r: saved.append((i, r)),
        chunk_size=2,
    )
    assert indices == [0, 2, 3, 5, 6] and squares == [0, 4, 9, 25, 36]
    assert saved == [([0, 2], [0, 4]), ([3, 5], [9, 25]), ([6], [36])]


def test_a_failing_chunk_stops_before_it_is_saved():
    saved = []

    def compute(part):
        if 3 in part:
            raise WorkbenchError("item 3 is bad")
        return part

    with pytest.raises(WorkbenchError, match="item 3 is bad"):
        distributed.run_chunks(list(range(6)), compute, save=saved.append, chunk_size=2)
    assert saved == [[0, 1]]


def test_each_computed_chunk_is_announced_before_it_is_saved():
    events = []
    distributed.run_chunks(
        list(range(5)),
        lambda part: part,
        save=lambda done: events.append(("saved", done)),
        chunk_size=2,
        on_computed=lambda k: events.append(("computed", k)),
    )
    assert events == [
        ("computed", 0), ("saved", [0, 1]),
        ("computed", 1), ("saved", [2, 3]),
        ("computed", 2), ("saved", [4]),
    ]  # fmt: skip


def test_results_tell_no_save_from_another_rank(tmp_path, monkeypatch):
    from workbench.cli.options import open_results

    db = tmp_path / "results.duckdb"
    off = open_results(db, save=False)
    assert (off.saving, off.writes, off.store) == (False, False, None)
    here = open_results(db, save=True)
    assert here.saving and here.writes and here.store.path == db
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 of a torchrun job: rank 0 writes
    monkeypatch.setenv("RANK", "1")
    other = open_results(db, save=True)
    assert (other.saving, other.writes, other.store) == (True, False, None)


def test_a_collective_in_a_rank_that_has_not_joined_says_so(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(WorkbenchError, match="rank 1 of a torchrun job has not joined it"):
        distributed.gather([1])


def test_loading_a_model_joins_no_job(tiny_model_dir, monkeypatch):
    import torch

    from workbench.models import load_model

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; joining is the caller's
    load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert not torch.distributed.is_initialized()


def test_gpus_and_device_errors_without_cuda(capsys, tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the machine without CUDA")
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"text": "the milk is in the", "target": "fridge"}) + "\n")
    one_text = ["--text", "the milk is in the", "--target", "fridge"]
    for args, message in [
        (["--dataset", str(data), "--gpus", "2"], "--gpus 2 was asked for but no CUDA GPU"),
        ([*one_text, "--gpus", "2"], "--gpus splits a --dataset over GPUs"),
        ([*one_text, "--device", "cuda"], "--device cuda was asked for but no CUDA GPU"),
        ([*one_text, "--device-map", "auto", "--device", "cpu"], "device_map"),
    ]:
        code, _, err = run_inprocess(
            capsys, "explain", "--model", str(tiny_model_dir), "--no-save", *args
        )
        assert code == 1
        assert err.count("\n") == 1 and message in err, err


# -- two ranks on the CPU -----------------------------------------------------------------


@pytest.fixture(scope="module")
def decisions(tmp_path_factory):
    """12 recorded-decision-like lines: a prompt of 4-9 words, a target of 1-2 words."""
    rng = random.Random(7)
    words = [w for w in WORDS if w.isalpha()]
    lines = []
    for _ in range(12):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
        target = " ".join(rng.choice(words) for _ in range(rng.randint(1, 2)))
        lines.append(json.dumps({"text": text, "target": target}))
    path = tmp_path_factory.mktemp("data") / "decisions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def stored_run(db, name):
    from workbench.store import Store, runs
    from workbench.store.explanations import run_explanations

    store = Store(db, read_only=True)
    run = runs.get_run(store, name)
    return {r["extras"]["item"]: r for r in run_explanations(store, run["id"])}


def test_explain_dataset_two_ranks_killed_then_resumed_store_what_one_process_stores(
    capsys, tmp_path, decisions, tiny_model_dir
):
    args = [
        "explain", "--dataset", str(decisions), "--model", str(tiny_model_dir),
        "--device", "cpu", "--dtype", "float32", "--steps", "8", "--format", "json",
    ]  # fmt: skip
    code, out, err = run_inprocess(capsys, *args, "--db", str(tmp_path / "one.duckdb"))
    assert code == 0, err
    one = json.loads(out)
    assert one["count"] == 12 and one["computed"] == 12

    two_db = str(tmp_path / "two.duckdb")
    chunks = {distributed.CHUNK_ENV: "2", **GLOO}  # 4 lines a chunk, 3 chunks
    killed = torchrun(*args, "--db", two_db, env=chunks, crash="1:1")
    assert killed.returncode != 0
    assert sorted(stored_run(two_db, one["run"])) == [0, 1, 2, 3]  # chunk 0, whole

    resumed = torchrun(*args, "--db", two_db, env=chunks)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert (summary["run"], summary["skipped"], summary["computed"]) == (one["run"], 4, 8)

    expected, got = stored_run(tmp_path / "one.duckdb", one["run"]), stored_run(two_db, one["run"])
    assert sorted(got) == list(range(12))  # every line once: nothing lost or duplicated
    for item, record in expected.items():
        assert got[item]["input_tokens"] == record["input_tokens"]
        assert got[item]["target_tokens"] == record["target_tokens"]
        np.testing.assert_allclose(got[item]["scores"], record["scores"], rtol=1e-4, atol=1e-6)


def test_probe_on_two_ranks_stores_what_one_process_stores(capsys, tmp_path, tiny_model_dir):
    from workbench.store import Store
    from workbench.store.probes import get_probe

    rng = random.Random(1)
    lines = []
    for i in range(40):
        words = [rng.choice(WORDS[:20]) for _ in range(5)]
        label = "yes" if "milk" in words else "no"
        lines.append(json.dumps({"text": " ".join(words), "label": label, "group": f"g{i % 5}"}))
    data = tmp_path / "probe.jsonl"
    data.write_text("\n".join(lines) + "\n")
    args = [
        "probe", "--dataset", str(data), "--model", str(tiny_model_dir), "--layers", "0-2",
        "--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--format", "json",
    ]  # fmt: skip
    code, out, err = run_inprocess(capsys, *args, "--db", str(tmp_path / "one.duckdb"))
    assert code == 0, err
    two = torchrun(*args, "--db", str(tmp_path / "two.duckdb"), env=GLOO)
    assert two.returncode == 0, two.stderr
    one_id, two_id = json.loads(out)["id"], json.loads(two.stdout.strip().splitlines()[-1])["id"]
    one_layers = get_probe(Store(tmp_path / "one.duckdb", read_only=True), one_id)["layers"]
    two_layers = get_probe(Store(tmp_path / "two.duckdb", read_only=True), two_id)["layers"]
    assert len(two_layers) == 3
    for a, b in zip(one_layers, two_layers):
        assert a == pytest.approx(b, abs=1e-9)
