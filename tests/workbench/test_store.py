"""The DuckDB store: migrations, explanation round trips, all-or-nothing writes."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.base import Explanation
from workbench.errors import StoreError
from workbench.store import Store
from workbench.store.migrations import MIGRATIONS


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
    first = Store(path)
    assert first.applied_migrations() == sorted(fn.__name__ for fn in MIGRATIONS)
    Store(path)  # reopening must not re-run (CREATE TABLE would fail if it did)
    assert len(Store(path).applied_migrations()) == len(MIGRATIONS)


def test_explanation_round_trip(store):
    exp = sample_explanation()
    exp_id = exp.save(store)
    back = Explanation.load(store, exp_id)
    assert back.id == exp_id and back.input_tokens == exp.input_tokens
    np.testing.assert_allclose(back.scores, exp.scores)
    assert back.delta == exp.delta and back.params == {"steps": 8}
    listed = store.list_explanations()
    assert listed[0]["id"] == exp_id and listed[0]["max_abs_delta"] == pytest.approx(0.05)


def test_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO runs (id, name, kind, status) VALUES ('r1', 'n', 'explain', 'x')")
        raise RuntimeError("crash in the middle of a write")
    assert store.get_run("r1") is None


def test_unknown_explanation_id(store):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="no explanation with id 'nope'"):
        Explanation.load(store, "nope")


def test_path_checks(tmp_path):
    with pytest.raises(StoreError, match="folder does not exist"):
        Store(tmp_path / "missing" / "wb.duckdb")
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_db_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "env.duckdb"))
    assert Store().path == tmp_path / "env.duckdb"


def test_read_waits_for_a_write_in_the_same_process(store):
    """The dashboard writes (explain-step) and reads in one process: reads must not fail."""
    import threading
    import time

    def write() -> None:
        with store.transaction() as con:
            con.execute("INSERT INTO runs (id, name, kind, status) VALUES ('w', 'w', 'x', 'y')")
            time.sleep(0.3)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.05)
    assert store.get_run("w")["id"] == "w"  # waited for the commit instead of raising
    writer.join()
