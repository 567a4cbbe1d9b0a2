"""Reading while a run writes: a `workbench play` subprocess records episodes into the
database while the dashboard's queries (and a page, through AppTest) read it. DuckDB lets
one process write at a time; the runner's short per-episode transactions and the
dashboard's per-query read-only connections, both retried on the lock, keep both going.
The run is shown as running from its start, with the episodes it plans."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from agents.report import aggregate
from workbench.store import Store, dashboard, runs
from workbench.store import play as play_store

APP = str(Path(__file__).parents[2] / "streamlit_app" / "app.py")


def test_dashboard_reads_whole_episodes_while_a_run_writes(level1_games, tmp_path, monkeypatch):
    db = tmp_path / "live.duckdb"
    store = Store(db)
    trials = 12
    planned = trials * len(level1_games)
    writer = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "play", "--games", str(level1_games[0].path.parent)]
        + ["--agent", "random", "--trials", str(trials), "--parallel", "2", "--max-steps", "8"]
        + ["--run-name", "live", "--workers", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    seen: list[int] = []
    live_seen: list[dict] = []  # the run as the overview's "running now" showed it
    page_runs = 0
    deadline = time.monotonic() + 300  # a writer that hangs fails the test, not the suite
    try:
        while writer.poll() is None:
            assert time.monotonic() < deadline, "the play run did not finish within 300 s"
            counts = dashboard.counts(store)
            seen.append(counts["episodes"])
            live_seen += [r for r in dashboard.live_runs(store) if r["name"] == "live"]
            for run in dashboard.play_runs(store):
                page = dashboard.episodes_page(store, run["id"], limit=100)
                for episode in page.rows[-3:]:
                    view = dashboard.episode_view(store, episode["id"], limit=100)
                    # Only whole episodes are ever visible: every step is there.
                    assert [s["idx"] for s in view["steps"].rows] == list(range(episode["moves"]))
                assert aggregate(play_store.list_episodes(store, run["id"]), ("level",))
            if 0 < counts["episodes"] and page_runs < 2:
                at = AppTest.from_file(APP, default_timeout=60)
                at.run()
                assert not at.exception, [e.message for e in at.exception]
                running = [p.proto.text for p in at.get("progress")]
                if running:
                    assert running[0].startswith("live (play) is running: ")
                    assert f" of {planned} episodes" in running[0]
                page_runs += 1
            time.sleep(0.05)
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    # Shown as running from its start, with the episodes it plans, until it ends; then it
    # has its true duration.
    assert live_seen and all(r["planned"] == planned for r in live_seen)
    assert any(r["episodes"] < planned for r in live_seen)
    finished = runs.get_run(store, "live", kind="play")
    assert finished["status"] == "finished" and finished["planned"] == planned
    (listed,) = runs.list_runs(store, kind="play")
    assert listed["seconds"] >= max(r["seconds"] for r in live_seen)
    final = dashboard.counts(store)
    assert final["episodes"] == trials * len(level1_games)
    assert seen == sorted(seen)  # never goes backwards
    assert any(0 < n < final["episodes"] for n in seen), seen  # read mid-run
    assert page_runs >= 1
