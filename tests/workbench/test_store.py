"""The DuckDB store: migrations, explanation round trips, all-or-nothing writes, no file
before the first write, read-only files, and reads that wait for a writer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import workbench.store
from explainers.explanation import Explanation
from workbench.errors import StoreError, WorkbenchError
from workbench.store import Store, explanations, runs
from workbench.store.metrics import save_metrics
from workbench.store.migrations import MIGRATIONS

EVENT_TIMEOUT = 60  # seconds; only reached when the behaviour under test is broken


def sample_explanation() -> Explanation:
    return Explanation(
        method="ig",
        category="attribution",
        model="tiny",
        input_text="a b",
        input_tokens=["a", " b"],
        target_tokens=[" c"],
        scores=np.array([[0.25, -0.5]]),
        baseline="zero",
        params={"steps": 8},
        expected=[-0.2],
        delta=[-0.05],
        word_ids=[0, 1],
    )


def test_migrations_are_recorded_and_run_once(tmp_path):
    path = tmp_path / "wb.duckdb"
    runs.create_run(Store(path), "first", "explain", {})
    assert Store(path).applied_migrations() == sorted(fn.__name__ for fn in MIGRATIONS)
    runs.create_run(Store(path), "second", "explain", {})  # re-running would fail CREATE TABLE
    assert len(Store(path).applied_migrations()) == len(MIGRATIONS)


def test_explanation_round_trip(store):
    exp = sample_explanation()
    exp_id = exp.save(store)
    back = Explanation.load(store, exp_id)
    assert back.id == exp_id and back.input_tokens == exp.input_tokens
    np.testing.assert_allclose(back.scores, exp.scores)
    assert back.delta == exp.delta and back.params == {"steps": 8}
    listed = explanations.list_explanations(store)
    assert listed[0]["id"] == exp_id and listed[0]["max_abs_delta"] == pytest.approx(0.05)
    assert explanations.count_explanations(store) == 1


def test_a_failing_batch_of_explanations_leaves_none(store):
    good = sample_explanation().to_record()
    broken = {k: v for k, v in good.items() if k != "method"}
    with pytest.raises(KeyError):
        explanations.save_explanations(store, [good, broken])
    assert explanations.list_explanations(store) == []


def test_unknown_explanation_id(store):
    with pytest.raises(WorkbenchError, match="no explanation with id 'nope'"):
        Explanation.load(store, "nope")


def test_runs_by_name_kind_and_age(store):
    first = runs.create_run(store, "a", "explain", {"x": 1})
    second = runs.create_run(store, None, "play", {})
    assert runs.get_run(store, "a")["params"] == {"x": 1}
    assert runs.get_run(store, "a", kind="play") is None
    assert runs.get_run(store, second)["name"] == f"play-{second}"
    runs.finish_run(store, first, "failed")
    assert runs.get_run(store, first)["status"] == "failed"
    assert runs.latest_run(store, "play")["id"] == second
    assert [r["name"] for r in runs.list_runs(store, kind="explain")] == ["a"]
    assert runs.count_runs(store) == 2


def test_path_checks(tmp_path):
    with pytest.raises(StoreError, match="folder does not exist"):
        Store(tmp_path / "missing" / "wb.duckdb")
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)
    notes = tmp_path / "notes.duckdb"
    notes.write_text("not a database, but long enough to have a header" * 4)
    with pytest.raises(StoreError, match="is not a DuckDB database"):
        Store(notes)


def test_db_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "env.duckdb"))
    assert Store().path == tmp_path / "env.duckdb"


def test_reading_or_failing_creates_no_file(tmp_path):
    path = tmp_path / "wb.duckdb"
    store = Store(path)
    assert runs.get_run(store, "nosuchrun") is None
    assert explanations.list_explanations(store) == []
    assert store.applied_migrations() == sorted(fn.__name__ for fn in MIGRATIONS)
    with pytest.raises(WorkbenchError, match="no explanation with id 'nope'"):
        save_metrics(store, "nope", [{"name": "m", "value": 1.0}])
    assert not path.exists()
    runs.create_run(store, "r", "explain", {})  # the first write creates it
    assert path.is_file()


def test_read_only_store_needs_the_file_and_never_writes(tmp_path):
    path = tmp_path / "wb.duckdb"
    with pytest.raises(StoreError, match=r"^no database at '.*wb\.duckdb'$"):
        Store(path, read_only=True)
    assert not path.exists()
    runs.create_run(Store(path), "r", "explain", {})
    reader = Store(path, read_only=True)
    assert runs.get_run(reader, "r")["name"] == "r"
    with pytest.raises(StoreError, match="opened read-only"):
        runs.create_run(reader, "s", "explain", {})


def test_a_chmod_444_database_is_readable_and_refuses_writes(tmp_path):
    path = tmp_path / "wb.duckdb"
    exp_id = sample_explanation().save(Store(path))
    path.chmod(0o444)
    try:
        for store in (Store(path, read_only=True), Store(path)):
            assert Explanation.load(store, exp_id).input_text == "a b"
            assert [r["id"] for r in explanations.list_explanations(store)] == [exp_id]
        with pytest.raises(StoreError, match="is read-only"):
            runs.create_run(Store(path), "r", "explain", {})
    finally:
        path.chmod(0o644)


def test_the_database_file_follows_the_umask(tmp_path):
    path = tmp_path / "wb.duckdb"
    old = os.umask(0o002)
    try:
        runs.create_run(Store(path), "r", "explain", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664


def wait_seam(monkeypatch) -> threading.Event:
    """An event set when the store first backs off from a locked file (the real pause
    still follows), so a test can release the lock only once a reader is waiting on it."""
    waiting = threading.Event()
    real = workbench.store._wait

    def wait(seconds: float) -> None:
        waiting.set()
        real(seconds)

    monkeypatch.setattr(workbench.store, "_wait", wait)
    return waiting


def test_read_waits_for_a_write_in_the_same_process(store, monkeypatch):
    """The dashboard writes (explain-step) and reads in one process: reads must not fail."""
    waiting = wait_seam(monkeypatch)
    runs.create_run(store, "before", "x", {})
    inserted, errors = threading.Event(), []

    def write() -> None:
        try:
            with store._transaction() as con:
                con.execute("INSERT INTO runs (id, name, kind, status) VALUES ('w', 'w', 'x', 'y')")
                inserted.set()
                # Commit only once the reader has met this open write connection.
                assert waiting.wait(EVENT_TIMEOUT), "the reader never waited"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            inserted.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert inserted.wait(EVENT_TIMEOUT)
    run = runs.get_run(store, "w")  # waits for the commit instead of raising
    writer.join(EVENT_TIMEOUT)
    assert not errors, errors
    assert waiting.is_set() and run["id"] == "w"


WRITER = """
import sys
from workbench.store import Store
with Store(sys.argv[1])._transaction() as con:
    con.execute("INSERT INTO runs (id, name, kind, status) VALUES ('p', 'p', 'x', 'y')")
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_read_only_reader_waits_while_another_process_writes(tmp_path, monkeypatch):
    path = tmp_path / "wb.duckdb"
    runs.create_run(Store(path), "before", "x", {})
    waiting = wait_seam(monkeypatch)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "locked"
        found: list = []
        reader = threading.Thread(
            target=lambda: found.append(runs.get_run(Store(path, read_only=True), "p"))
        )
        reader.start()
        assert waiting.wait(EVENT_TIMEOUT), "the reader never met the lock"
        writer.stdin.write("\n")
        writer.stdin.flush()
        reader.join(EVENT_TIMEOUT)
        assert writer.wait(EVENT_TIMEOUT) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert found and found[0]["id"] == "p"
